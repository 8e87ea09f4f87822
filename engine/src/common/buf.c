#include "buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth/error.h"

void berth_buf_init(berth_buf *b, size_t max) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

/* Ensures room for n more bytes plus the trailing NUL. */
static int buf_grow(berth_buf *b, size_t n) {
  if (n > b->max || b->len > b->max - n)
    return BERTH_E_TOO_LARGE;
  size_t need = b->len + n + 1;
  if (need <= b->cap)
    return BERTH_OK;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  char *p = realloc(b->data, cap);
  if (p == NULL)
    return BERTH_E_NOMEM;
  b->data = p;
  b->cap = cap;
  return BERTH_OK;
}

int berth_buf_append(berth_buf *b, const void *p, size_t n) {
  int rc = buf_grow(b, n);
  if (rc != BERTH_OK)
    return rc;
  if (n > 0)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return BERTH_OK;
}

int berth_buf_printf(berth_buf *b, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0)
    return BERTH_E_INVALID;
  if ((size_t)n < sizeof small)
    return berth_buf_append(b, small, (size_t)n);
  int rc = buf_grow(b, (size_t)n);
  if (rc != BERTH_OK)
    return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return BERTH_OK;
}

char *berth_buf_reserve(berth_buf *b, size_t n) {
  if (buf_grow(b, n) != BERTH_OK)
    return NULL;
  return b->data + b->len;
}

void berth_buf_commit(berth_buf *b, size_t n) {
  b->len += n;
  b->data[b->len] = '\0';
}

void berth_buf_reset(berth_buf *b) {
  b->len = 0;
  if (b->data != NULL)
    b->data[0] = '\0';
}

void berth_buf_truncate(berth_buf *b, size_t len) {
  if (len > b->len)
    return;
  b->len = len;
  if (b->data != NULL)
    b->data[len] = '\0';
}

char *berth_buf_detach(berth_buf *b, size_t *len) {
  char *p = b->data;
  if (len != NULL)
    *len = b->len;
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  return p;
}

void berth_buf_free(berth_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}
