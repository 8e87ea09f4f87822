/* Fuzz target: the gateway's replica URLs and set replacement (gw_set.h),
 * what PUT /v2/gateway/replicas hands over from a request. The input is
 * split at NULs into strings taken as name, url, name, url, ... */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gw_set.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SPECS 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (data == NULL || size > 4096)
    return 0;
  char *text = malloc(size + 1);
  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  const char *parts[2 * MAX_SPECS];
  size_t n = 0;
  for (size_t off = 0; off <= size && n < 2 * MAX_SPECS;) {
    parts[n++] = text + off;
    off += strlen(text + off) + 1;
  }
  for (size_t i = 0; i < n; i++) {
    char h1[64], h2[64];
    uint16_t p1 = 0, p2 = 0;
    berth_errmsg err;
    int local = berth_gw_parse_url(parts[i], false, h1, sizeof h1, &p1, &err);
    int remote = berth_gw_parse_url(parts[i], true, h2, sizeof h2, &p2, &err);
    /* loopback-only never accepts what allow_remote refuses, and both
     * read the same address and port */
    if (local == BERTH_OK &&
        (remote != BERTH_OK || p1 != p2 || strcmp(h1, h2) != 0 || p1 == 0))
      __builtin_trap();
  }
  berth_gw_spec specs[MAX_SPECS];
  size_t k = 0;
  for (size_t i = 0; i + 1 < n; i += 2)
    specs[k++] = (berth_gw_spec){parts[i], parts[i + 1]};
  berth_gw_set s = {0};
  berth_errmsg err;
  for (int round = 0; round < 2; round++) {
    size_t before = s.n_active;
    int rc = berth_gw_set_replace(&s, specs, k, round == 1, &err);
    if (rc == BERTH_OK && s.n_active != k)
      __builtin_trap();
    if (rc != BERTH_OK && s.n_active != before)
      __builtin_trap();
    for (size_t i = 0; i < s.n_active; i++)
      if (s.active[i]->port == 0 || s.active[i]->state == BERTH_GW_DRAINING)
        __builtin_trap();
  }
  berth_gw_set_reap(&s);
  berth_gw_set_free(&s);
  free(text);
  return 0;
}
