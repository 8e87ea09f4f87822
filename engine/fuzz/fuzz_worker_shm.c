/* Fuzz target: the worker protocol's tensor-set decoder with a shared memory
 * region (worker protocol 3, worker_proto.c berth_wp_tensors_decode_region).
 *
 * The input is a RESULT payload; the region is a fixed 4 KiB buffer of
 * which offsets 1024..4096 are the worker's. Whatever decodes must pass
 * berth_tensor_check, and every tensor's data must lie either inside the
 * input (inline, borrowed), inside the worker's part of the region
 * (fixed-size, borrowed) or in memory of its own (BYTES copied out of the
 * region); anything else traps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REGION 4096
#define LO 1024

static _Alignas(64) uint8_t region[REGION];

static bool inside(const uint8_t *p, size_t n, const uint8_t *lo,
                   const uint8_t *hi) {
  return n == 0 || (p >= lo && p <= hi && n <= (size_t)(hi - p));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* BYTES-shaped content in the region: u32 length prefixes of small
   * values, so that some BYTES records decode */
  for (size_t i = 0; i < REGION; i++)
    region[i] = (i & 3) == 0 ? (uint8_t)(i % 7) : 0;
  berth_wp_region g = {region, LO, REGION};
  berth_tensor *ts;
  size_t n, plen;
  const char *params;
  berth_errmsg err;
  err.msg[0] = '\0';
  if (berth_wp_tensors_decode_region(data, size, &g, &ts, &n, &params, &plen,
                                     &err) != BERTH_OK) {
    if (err.msg[0] == '\0')
      __builtin_trap();
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    const berth_tensor *t = &ts[i];
    if (berth_tensor_check(t, &err) != BERTH_OK)
      __builtin_trap();
    bool in_input = inside(t->data, t->nbytes, data, data + size);
    bool in_region = inside(t->data, t->nbytes, region + LO, region + REGION);
    if (t->data_borrowed ? !(in_input || in_region)
                         : t->dtype != BERTH_DT_BYTES)
      __builtin_trap();
    if (t->nbytes > 0) /* reads every byte: ASan sees any overrun */
      for (volatile size_t k = 0; k < t->nbytes; k += 61)
        (void)((volatile const uint8_t *)t->data)[k];
  }
  berth_tensors_free(ts, n);
  return 0;
}
