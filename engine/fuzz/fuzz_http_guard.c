/* Fuzz target: the header values the browser-facing checks parse
 * (http_guard.h) — Content-Type, Host and Origin — from arbitrary bytes.
 * The input is split at the first NUL: the part before is one value, the
 * part after another (a Host to compare an Origin against). */
#include <stdint.h>
#include <string.h>

#include "http_guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (data == NULL)
    return 0;
  const char *a = (const char *)data;
  const uint8_t *nul = memchr(data, 0, size);
  size_t an = nul != NULL ? (size_t)(nul - data) : size;
  const char *b = nul != NULL ? a + an + 1 : NULL;
  size_t bn = nul != NULL ? size - an - 1 : 0;
  (void)berth_guard_content_type_ok(a, size);
  char *none[] = {NULL};
  char *any[] = {"*", NULL};
  char *some[] = {"berth.internal", "*.example.com", "https://app.example",
                  "null", NULL};
  berth_http_guard g0 = {.allowed_hosts = none, .cors_origins = none};
  berth_http_guard g1 = {.allowed_hosts = any,
                         .n_allowed_hosts = 1,
                         .cors_origins = any,
                         .n_cors_origins = 1};
  berth_http_guard g2 = {.allowed_hosts = some,
                         .n_allowed_hosts = 4,
                         .cors_origins = some,
                         .n_cors_origins = 4};
  bool h0 = berth_guard_host_ok(&g0, a, an);
  bool h1 = berth_guard_host_ok(&g1, a, an);
  bool h2 = berth_guard_host_ok(&g2, a, an);
  /* more names listed never refuses what fewer allowed */
  if ((h0 && !h1) || (h0 && !h2))
    __builtin_trap();
  berth_guard_origin o0 = berth_guard_origin_check(&g0, a, an, b, bn);
  berth_guard_origin o1 = berth_guard_origin_check(&g1, a, an, b, bn);
  berth_guard_origin o2 = berth_guard_origin_check(&g2, a, an, b, bn);
  /* without a list, nothing is "listed"; with "*", nothing is foreign */
  if (o0 == BERTH_GUARD_ORIGIN_LISTED || o1 == BERTH_GUARD_ORIGIN_FOREIGN ||
      o0 == BERTH_GUARD_ORIGIN_ABSENT)
    __builtin_trap();
  if (o0 == BERTH_GUARD_ORIGIN_SAME &&
      (o1 != BERTH_GUARD_ORIGIN_SAME || o2 != BERTH_GUARD_ORIGIN_SAME))
    __builtin_trap();
  return 0;
}
