/* Berth engine: gzip and deflate (compress.h), on zlib. */
#include "compress.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#define CHUNK 65536

int berth_encoding_parse(const char *v, size_t len, berth_encoding *out,
                         berth_errmsg *err) {
  while (len > 0 && (v[0] == ' ' || v[0] == '\t')) {
    v++;
    len--;
  }
  while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
    len--;
  static const struct {
    const char *name;
    berth_encoding enc;
  } known[] = {{"identity", BERTH_ENC_IDENTITY},
               {"gzip", BERTH_ENC_GZIP},
               {"x-gzip", BERTH_ENC_GZIP},
               {"deflate", BERTH_ENC_DEFLATE}};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (strlen(known[i].name) == len &&
        strncasecmp(v, known[i].name, len) == 0) {
      *out = known[i].enc;
      return BERTH_OK;
    }
  return berth_errf(err, BERTH_E_MEDIA_TYPE,
                    "Content-Encoding '%.*s' is not "
                    "supported; send the body as gzip, deflate or identity",
                    (int)(len > 40 ? 40 : len), v);
}

/* q of one Accept-Encoding member's parameters ("; q=0.5"): 0 only for an
 * explicit q=0 (0, 0.0, 0.00, 0.000). */
static bool q_positive(const char *p, size_t n) {
  for (size_t i = 0; i + 1 < n; i++)
    if ((p[i] == 'q' || p[i] == 'Q') && p[i + 1] == '=') {
      for (size_t j = i + 2; j < n; j++)
        if (p[j] >= '1' && p[j] <= '9')
          return true;
      return false;
    }
  return true;
}

berth_encoding berth_encoding_accept(const char *v, size_t len) {
  bool gzip = false, deflate = false;
  size_t i = 0;
  while (v != NULL && i < len) {
    size_t start = i;
    while (i < len && v[i] != ',')
      i++;
    const char *m = v + start;
    size_t mn = i - start, tok;
    while (mn > 0 && (*m == ' ' || *m == '\t')) {
      m++;
      mn--;
    }
    for (tok = 0; tok < mn && m[tok] != ';' && m[tok] != ' '; tok++)
      ;
    bool ok = q_positive(m + tok, mn - tok);
    if (ok && tok == 4 && strncasecmp(m, "gzip", 4) == 0)
      gzip = true;
    if (ok && tok == 7 && strncasecmp(m, "deflate", 7) == 0)
      deflate = true;
    i++;
  }
  return gzip      ? BERTH_ENC_GZIP
         : deflate ? BERTH_ENC_DEFLATE
                   : BERTH_ENC_IDENTITY;
}

const char *berth_encoding_name(berth_encoding enc) {
  return enc == BERTH_ENC_GZIP      ? "gzip"
         : enc == BERTH_ENC_DEFLATE ? "deflate"
                                    : "identity";
}

/* One inflate pass with zlib's window bits wbits. */
static int inflate_with(int wbits, const uint8_t *in, size_t n, size_t max_out,
                        char **out, size_t *out_len, berth_errmsg *err) {
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, wbits) != Z_OK)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  size_t cap = n < CHUNK ? CHUNK : n, len = 0;
  if (cap > max_out)
    cap = max_out > 0 ? max_out : 1;
  char *buf = malloc(cap);
  int rc =
      buf == NULL ? berth_errf(err, BERTH_E_NOMEM, "out of memory") : BERTH_OK;
  z.next_in = (Bytef *)(uintptr_t)in;
  int zr = Z_OK;
  size_t left = n;
  while (rc == BERTH_OK && zr != Z_STREAM_END) {
    if (z.avail_in == 0 && left > 0) {
      z.avail_in = left > UINT32_MAX ? UINT32_MAX : (uInt)left;
      left -= z.avail_in;
    }
    unsigned char probe; /* full at the limit: one more byte is too many */
    bool probing = len == cap && cap >= max_out;
    if (len == cap && !probing) {
      size_t ncap = cap * 2 < max_out ? cap * 2 : max_out;
      char *nb = realloc(buf, ncap);
      if (nb == NULL) {
        rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
        break;
      }
      buf = nb;
      cap = ncap;
    }
    size_t room = probing ? 1 : cap - len;
    z.next_out = probing ? &probe : (Bytef *)buf + len;
    z.avail_out = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
    uInt before = z.avail_out;
    zr = inflate(&z, Z_NO_FLUSH);
    size_t made = before - z.avail_out;
    if (probing && made > 0)
      rc = berth_errf(err, BERTH_E_TOO_LARGE,
                      "the body inflates past "
                      "server.max_body_bytes (%zu bytes)",
                      max_out);
    else if (!probing)
      len += made;
    if (rc != BERTH_OK)
      break;
    if (zr == Z_BUF_ERROR && z.avail_in == 0 && left == 0)
      rc = berth_errf(err, BERTH_E_PARSE, "the compressed body is truncated");
    else if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
      rc = berth_errf(err, zr == Z_MEM_ERROR ? BERTH_E_NOMEM : BERTH_E_PARSE,
                      "the compressed body is corrupt (%s)",
                      z.msg != NULL ? z.msg : "bad data");
  }
  if (rc == BERTH_OK && (z.avail_in > 0 || left > 0))
    rc = berth_errf(err, BERTH_E_PARSE, "bytes follow the compressed stream");
  inflateEnd(&z);
  if (rc != BERTH_OK || len == 0) {
    free(buf);
    buf = NULL;
    if (rc == BERTH_OK)
      len = 0;
  }
  *out = buf;
  *out_len = rc == BERTH_OK ? len : 0;
  return rc;
}

int berth_inflate(berth_encoding enc, const uint8_t *in, size_t n,
                  size_t max_out, char **out, size_t *out_len,
                  berth_errmsg *err) {
  *out = NULL;
  *out_len = 0;
  if (enc == BERTH_ENC_IDENTITY)
    return berth_errf(err, BERTH_E_INVALID, "identity is not compressed");
  if (enc == BERTH_ENC_GZIP)
    return inflate_with(16 + MAX_WBITS, in, n, max_out, out, out_len, err);
  /* deflate: the zlib format; without its two-byte header, a raw stream */
  bool zlib_head =
      n >= 2 && (in[0] & 0x0f) == 8 && ((in[0] << 8) | in[1]) % 31 == 0;
  return inflate_with(zlib_head ? MAX_WBITS : -MAX_WBITS, in, n, max_out, out,
                      out_len, err);
}

int berth_deflate(berth_encoding enc, const uint8_t *in, size_t n, char **out,
                  size_t *out_len, berth_errmsg *err) {
  *out = NULL;
  *out_len = 0;
  if (enc == BERTH_ENC_IDENTITY)
    return berth_errf(err, BERTH_E_INVALID, "identity is not compressed");
  z_stream z;
  memset(&z, 0, sizeof z);
  int wbits = enc == BERTH_ENC_GZIP ? 16 + MAX_WBITS : MAX_WBITS;
  if (n > UINT32_MAX / 2 || deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                                         wbits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  size_t cap = deflateBound(&z, (uLong)n) + 32;
  char *buf = malloc(cap);
  if (buf == NULL) {
    deflateEnd(&z);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  z.next_in = (Bytef *)(uintptr_t)in;
  z.avail_in = (uInt)n;
  z.next_out = (Bytef *)buf;
  z.avail_out = (uInt)cap;
  int zr = deflate(&z, Z_FINISH);
  size_t len = cap - z.avail_out;
  deflateEnd(&z);
  if (zr != Z_STREAM_END) {
    free(buf);
    return berth_errf(err, BERTH_E_INTERNAL, "compression failed");
  }
  *out = buf;
  *out_len = len;
  return BERTH_OK;
}
