/* Fuzz target: the worker protocol decoders (worker_proto.c).
 *
 * The first 16 bytes are decoded as a frame header and the whole input as a
 * tensor-set payload. The format has exactly one encoding of any content,
 * so whatever decodes must re-encode to the very same bytes, and every
 * decoded tensor must pass berth_tensor_check; anything else traps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_header(const uint8_t *data, size_t size) {
  if (size < BERTH_WP_HEADER_SIZE)
    return;
  berth_wp_header h;
  berth_errmsg err;
  if (berth_wp_header_decode(data, 1u << 20, &h, &err) != BERTH_OK)
    return;
  uint8_t again[BERTH_WP_HEADER_SIZE];
  berth_wp_header_encode(again, &h);
  if (memcmp(again, data, BERTH_WP_HEADER_SIZE) != 0 || h.length > 1u << 20)
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_header(data, size);
  berth_tensor *ts;
  size_t n, plen;
  const char *params;
  berth_errmsg err;
  err.msg[0] = '\0';
  if (berth_wp_tensors_decode(data, size, &ts, &n, &params, &plen, &err) !=
      BERTH_OK) {
    if (err.msg[0] == '\0')
      __builtin_trap();
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    if (berth_tensor_check(&ts[i], &err) != BERTH_OK || !ts[i].data_borrowed)
      __builtin_trap();
  size_t need, written;
  if (berth_wp_tensors_size(ts, n, plen, &need) != BERTH_OK || need != size)
    __builtin_trap();
  uint8_t *buf = malloc(need ? need : 1);
  if (buf == NULL)
    __builtin_trap();
  if (berth_wp_tensors_encode(ts, n, params, plen, buf, need, &written) !=
          BERTH_OK ||
      written != size || memcmp(buf, data, size) != 0)
    __builtin_trap();
  free(buf);
  berth_tensors_free(ts, n);
  return 0;
}
