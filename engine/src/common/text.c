/* Berth engine: text helpers that every layer may use — UTF-8 sequences and
 * JSON string literals (logs, errors and the JSON codec all write them). */
#include "text.h"

#include <stdbool.h>
#include <string.h>

#include "berth/error.h"

size_t berth_utf8_seq(const uint8_t *s, size_t n) {
  uint8_t c = s[0];
  if (c < 0x80)
    return 1;
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80)
      return 0;
  return len;
}

/* Bytes that go into a JSON string as they are. */
static bool plain_byte(uint8_t c) {
  return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Appends the escape for an ASCII byte that is not plain. */
static int append_escape(berth_buf *out, uint8_t c) {
  char e[6] = {'\\', 0, 0, 0, 0, 0};
  size_t n = 2;
  switch (c) {
  case '"':
    e[1] = '"';
    break;
  case '\\':
    e[1] = '\\';
    break;
  case '\n':
    e[1] = 'n';
    break;
  case '\r':
    e[1] = 'r';
    break;
  case '\t':
    e[1] = 't';
    break;
  case '\b':
    e[1] = 'b';
    break;
  case '\f':
    e[1] = 'f';
    break;
  default:
    memcpy(e + 1, "u00", 3);
    e[4] = "0123456789abcdef"[c >> 4];
    e[5] = "0123456789abcdef"[c & 15];
    n = 6;
  }
  return berth_buf_append(out, e, n);
}

int berth_json_append_string(berth_buf *out, const char *s, size_t len) {
  const uint8_t *p = (const uint8_t *)s;
  size_t start = out->len;
  int rc = berth_buf_append(out, "\"", 1);
  size_t i = 0;
  while (rc == BERTH_OK && i < len) {
    size_t j = i;
    while (j < len) { /* plain ASCII and well-formed multi-byte text */
      size_t k = plain_byte(p[j]) ? 1
                 : p[j] >= 0x80   ? berth_utf8_seq(p + j, len - j)
                                  : 0;
      if (k == 0)
        break;
      j += k;
    }
    if (j > i)
      rc = berth_buf_append(out, p + i, j - i);
    if (rc != BERTH_OK || j == len)
      break;
    if (p[j] >= 0x80) /* one U+FFFD per byte that starts no valid sequence */
      rc = berth_buf_append(out, "\xEF\xBF\xBD", 3);
    else
      rc = append_escape(out, p[j]);
    i = j + 1;
  }
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\"", 1);
  if (rc != BERTH_OK)
    berth_buf_truncate(out, start);
  return rc;
}
