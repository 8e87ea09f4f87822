/* Berth engine: gRPC's wire details that need no protobuf — the
 * length-prefixed message framing, the grpc-message and grpc-timeout
 * headers, and UTF-8 clean-up (codec_grpc.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_grpc.h"
#include "text.h"

#define MAX_KEEP_BUFFER ((size_t)1 << 20) /* reader keeps at most this much */

/* ---- UTF-8 ---------------------------------------------------------- */

/* ---- framing -------------------------------------------------------- */

void berth_grpc_reader_init(berth_grpc_reader *r, size_t max_message) {
  memset(r, 0, sizeof *r);
  r->max_message = max_message;
  berth_buf_init(&r->body, max_message);
}

size_t berth_grpc_reader_held(const berth_grpc_reader *r) {
  return r->head_len + r->body.len;
}

bool berth_grpc_reader_idle(const berth_grpc_reader *r) {
  return r->head_len == 0;
}

void berth_grpc_reader_free(berth_grpc_reader *r) { berth_buf_free(&r->body); }

static void reader_next(berth_grpc_reader *r) {
  r->head_len = 0;
  r->compressed = false;
  r->want = 0;
  if (r->body.cap > MAX_KEEP_BUFFER)
    berth_buf_free(&r->body);
  else
    berth_buf_reset(&r->body);
}

/* Hands one whole message to cb, inflated first when it was flagged
 * compressed. */
static int deliver(berth_grpc_reader *r, bool compressed, const uint8_t *msg,
                   size_t n, berth_grpc_message_cb cb, void *arg,
                   berth_errmsg *err) {
  if (!compressed)
    return cb(arg, msg, n);
  char *plain = NULL;
  size_t pn = 0;
  int rc = berth_inflate(r->encoding, msg, n, r->max_message, &plain, &pn, err);
  if (rc == BERTH_E_TOO_LARGE)
    return berth_errf(err, rc,
                      "a compressed message inflates past the limit "
                      "of %zu bytes (grpc_max_message_bytes)",
                      r->max_message);
  if (rc != BERTH_OK)
    return rc;
  static const uint8_t empty[1] = {0};
  rc = cb(arg, plain != NULL ? (const uint8_t *)plain : empty, pn);
  free(plain);
  return rc;
}

int berth_grpc_reader_feed(berth_grpc_reader *r, const uint8_t *data,
                           size_t len, berth_grpc_message_cb cb, void *arg,
                           berth_errmsg *err) {
  static const uint8_t empty[1] = {0};
  while (len > 0) {
    if (r->head_len < BERTH_GRPC_PREFIX) {
      size_t take = BERTH_GRPC_PREFIX - r->head_len;
      if (take > len)
        take = len;
      memcpy(r->head + r->head_len, data, take);
      r->head_len += take;
      data += take;
      len -= take;
      if (r->head_len < BERTH_GRPC_PREFIX)
        break;
      if (r->head[0] == 1 && r->encoding == BERTH_ENC_IDENTITY)
        return berth_errf(err, BERTH_E_UNSUPPORTED,
                          "a compressed message arrived on a call whose "
                          "grpc-encoding is identity");
      r->compressed = r->head[0] == 1;
      if (r->head[0] > 1)
        return berth_errf(err, BERTH_E_PARSE,
                          "bad gRPC message prefix: compressed flag %u",
                          r->head[0]);
      r->want = (size_t)r->head[1] << 24 | (size_t)r->head[2] << 16 |
                (size_t)r->head[3] << 8 | (size_t)r->head[4];
      if (r->want > r->max_message)
        return berth_errf(
            err, BERTH_E_TOO_LARGE,
            "message of %zu bytes is larger than the limit of %zu "
            "bytes (grpc_max_message_bytes)",
            r->want, r->max_message);
      if (r->want > 0)
        continue;
      /* an empty message: deliver it now */
    }
    int rc;
    bool compressed = r->compressed;
    if (r->want == 0) {
      reader_next(r);
      rc = deliver(r, compressed, empty, 0, cb, arg, err);
    } else if (r->body.len == 0 && len >= r->want) {
      size_t n = r->want; /* whole message in this piece: no copy */
      const uint8_t *msg = data;
      data += n;
      len -= n;
      reader_next(r);
      rc = deliver(r, compressed, msg, n, cb, arg, err);
    } else {
      if (r->body.len == 0 && berth_buf_reserve(&r->body, r->want) == NULL)
        return berth_errf(err, BERTH_E_NOMEM,
                          "out of memory for a %zu-byte message", r->want);
      size_t take = r->want - r->body.len;
      if (take > len)
        take = len;
      if (berth_buf_append(&r->body, data, take) != BERTH_OK)
        return berth_errf(err, BERTH_E_NOMEM, "out of memory");
      data += take;
      len -= take;
      if (r->body.len < r->want)
        break;
      /* hand over the buffer's bytes, then forget them */
      berth_buf whole = r->body;
      berth_buf_init(&r->body, r->max_message);
      size_t n = r->want;
      reader_next(r);
      rc = deliver(r, compressed, (const uint8_t *)whole.data, n, cb, arg, err);
      berth_buf_free(&whole);
    }
    if (rc != 0)
      return rc;
  }
  return BERTH_OK;
}

int berth_grpc_append_prefix(berth_buf *out, size_t len) {
  if (len > UINT32_MAX)
    return BERTH_E_TOO_LARGE;
  uint8_t p[BERTH_GRPC_PREFIX] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16),
                                  (uint8_t)(len >> 8), (uint8_t)len};
  return berth_buf_append(out, p, sizeof p);
}

/* Appends message m, framed. */
/* Copies msg into out (cap bytes) as valid UTF-8: invalid bytes become '?'. */
void berth_grpc_utf8_clean(const char *msg, char *out, size_t cap) {
  const unsigned char *s = (const unsigned char *)msg;
  size_t n = strlen(msg), o = 0;
  for (size_t i = 0; i < n;) {
    size_t l = berth_utf8_seq(s + i, n - i);
    size_t w = l ? l : 1;
    if (o + w >= cap)
      break;
    if (l)
      memcpy(out + o, s + i, l);
    else
      out[o] = '?';
    o += w;
    i += w;
  }
  out[o] = '\0';
}

void berth_grpc_percent_encode(const char *msg, char *out, size_t cap) {
  static const char hex[] = "0123456789ABCDEF";
  if (cap == 0)
    return;
  const unsigned char *s = (const unsigned char *)(msg != NULL ? msg : "");
  size_t n = strlen((const char *)s), o = 0;
  for (size_t i = 0; i < n;) {
    size_t l = berth_utf8_seq(s + i, n - i);
    if (l == 0) { /* not UTF-8: written as '?' */
      if (o + 1 >= cap)
        break;
      out[o++] = '?';
      i++;
      continue;
    }
    size_t need = 0;
    for (size_t k = 0; k < l; k++)
      need += (s[i + k] >= 0x20 && s[i + k] <= 0x7e && s[i + k] != '%') ? 1 : 3;
    if (o + need >= cap)
      break;
    for (size_t k = 0; k < l; k++) {
      unsigned char c = s[i + k];
      if (c >= 0x20 && c <= 0x7e && c != '%') {
        out[o++] = (char)c;
      } else {
        out[o++] = '%';
        out[o++] = hex[c >> 4];
        out[o++] = hex[c & 15];
      }
    }
    i += l;
  }
  out[o] = '\0';
}

bool berth_grpc_parse_timeout(const char *v, size_t len, uint64_t *ns) {
  if (v == NULL || len < 2 || len > 9)
    return false;
  uint64_t n = 0;
  for (size_t i = 0; i + 1 < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return false;
    n = n * 10 + (uint64_t)(v[i] - '0');
  }
  uint64_t unit;
  switch (v[len - 1]) {
  case 'H':
    unit = UINT64_C(3600000000000);
    break;
  case 'M':
    unit = UINT64_C(60000000000);
    break;
  case 'S':
    unit = UINT64_C(1000000000);
    break;
  case 'm':
    unit = UINT64_C(1000000);
    break;
  case 'u':
    unit = UINT64_C(1000);
    break;
  case 'n':
    unit = 1;
    break;
  default:
    return false;
  }
  *ns = n > UINT64_MAX / unit ? UINT64_MAX : n * unit;
  return true;
}
