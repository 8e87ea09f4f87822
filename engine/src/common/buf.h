/* Berth engine: a growable byte buffer with a hard maximum set at creation
 * (curl's dynbuf idea): input can never make it grow without bound. */
#ifndef BERTH_BUF_H
#define BERTH_BUF_H

#include <stddef.h>

typedef struct berth_buf {
  char *data; /* owned (free()); NULL until the first append */
  size_t len; /* bytes in use; data[len] is always '\0' when data != NULL */
  size_t cap; /* bytes allocated */
  size_t max; /* an append that would make len exceed max fails */
} berth_buf;

void berth_buf_init(berth_buf *b, size_t max);
/* BERTH_OK, BERTH_E_TOO_LARGE (over max, buffer unchanged) or BERTH_E_NOMEM. */
int berth_buf_append(berth_buf *b, const void *p, size_t n);
int berth_buf_printf(berth_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Makes room for n more bytes and returns where they go (len unchanged;
 * caller then calls berth_buf_commit); NULL on failure. */
char *berth_buf_reserve(berth_buf *b, size_t n);
void berth_buf_commit(berth_buf *b, size_t n);
/* Empties the buffer, keeping its memory. */
void berth_buf_reset(berth_buf *b);
/* Drops what lies past len (len <= b->len), keeping its memory: how a
 * writer takes back a half-written value on failure. */
void berth_buf_truncate(berth_buf *b, size_t len);
/* Gives the memory to the caller (who free()s it) and empties the buffer. */
char *berth_buf_detach(berth_buf *b, size_t *len);
void berth_buf_free(berth_buf *b);

#endif
