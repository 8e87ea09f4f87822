/* Fuzz target: inflating untrusted HTTP bodies (compress.h). The first
 * byte picks gzip or deflate and a small output limit or a large one; the
 * rest is the compressed body. Whatever inflates must stay within the
 * limit, and what inflates re-compresses and inflates back to itself; the
 * header parsers take the same bytes as a Content-Encoding and an
 * Accept-Encoding value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compress.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (data == NULL || size == 0)
    return 0;
  berth_encoding parsed;
  berth_errmsg err;
  (void)berth_encoding_parse((const char *)data, size, &parsed, &err);
  (void)berth_encoding_accept((const char *)data, size);
  berth_encoding enc = (data[0] & 1) ? BERTH_ENC_GZIP : BERTH_ENC_DEFLATE;
  size_t limit = (data[0] & 2) ? 1 << 20 : 100;
  char *out = NULL;
  size_t n = 0;
  int rc = berth_inflate(enc, data + 1, size - 1, limit, &out, &n, &err);
  if (rc == BERTH_OK) {
    if (n > limit)
      abort();
    char *z = NULL, *back = NULL;
    size_t zn = 0, bn = 0;
    if (berth_deflate(enc, (const uint8_t *)out, n, &z, &zn, &err) ==
            BERTH_OK &&
        berth_inflate(enc, (const uint8_t *)z, zn, limit, &back, &bn, &err) ==
            BERTH_OK &&
        (bn != n || (n > 0 && memcmp(back, out, n) != 0)))
      abort();
    free(z);
    free(back);
  } else if (out != NULL || n != 0) {
    abort();
  }
  free(out);
  return 0;
}
