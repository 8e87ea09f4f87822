/* Berth engine: gzip and deflate for HTTP bodies (compress.c). Pure: bytes
 * in, bytes out, every output bounded. "deflate" is the zlib format
 * (RFC 1950) as HTTP defines it; a raw deflate stream is accepted too,
 * since some clients send one.
 */
#ifndef BERTH_COMPRESS_H
#define BERTH_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

typedef enum {
  BERTH_ENC_IDENTITY = 0,
  BERTH_ENC_GZIP,
  BERTH_ENC_DEFLATE,
} berth_encoding;

/* The one coding a Content-Encoding value (len bytes, case-insensitive,
 * blanks around it ignored) names: identity, gzip (or x-gzip), deflate.
 * BERTH_E_MEDIA_TYPE naming it for anything else (several codings, br). */
int berth_encoding_parse(const char *v, size_t len, berth_encoding *out,
                         berth_errmsg *err);

/* The coding to answer with for an Accept-Encoding value (NULL: none):
 * gzip when listed with q > 0, else deflate, else identity. */
berth_encoding berth_encoding_accept(const char *v, size_t len);

/* "gzip" / "deflate" / "identity". */
const char *berth_encoding_name(berth_encoding enc);

/* Inflates in (n bytes, enc gzip or deflate) into *out (malloc'd, the
 * caller frees it; NULL when *out_len is 0). BERTH_E_TOO_LARGE as soon as
 * the output would pass max_out (a zip bomb stops there, nothing more is
 * allocated); BERTH_E_PARSE for a corrupt or truncated stream, or bytes
 * after it; BERTH_E_NOMEM. */
int berth_inflate(berth_encoding enc, const uint8_t *in, size_t n,
                  size_t max_out, char **out, size_t *out_len,
                  berth_errmsg *err);

/* Compresses in (n bytes) with enc (gzip or deflate) into *out (malloc'd,
 * the caller frees it). BERTH_E_NOMEM, BERTH_E_INVALID for identity. */
int berth_deflate(berth_encoding enc, const uint8_t *in, size_t n, char **out,
                  size_t *out_len, berth_errmsg *err);

#endif
