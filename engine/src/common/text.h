/* Berth engine: UTF-8 and JSON string text (text.c). No I/O, no state. */
#ifndef BERTH_TEXT_H
#define BERTH_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Length of the well-formed UTF-8 sequence at s (n > 0 bytes available),
 * or 0 when s does not start one (RFC 3629: no overlongs, no surrogates). */
size_t berth_utf8_seq(const uint8_t *s, size_t n);

/* Appends s as a JSON string literal (quotes included), escaping as needed;
 * invalid UTF-8 bytes become U+FFFD. On failure (out of memory, the
 * buffer's maximum) nothing is appended. */
int berth_json_append_string(berth_buf *out, const char *s, size_t len);

#endif
