/* Fuzz target: the worker output line splitter (worker_output.c), which
 * cuts whatever bytes a worker prints into bounded lines.
 *
 * Byte 0 picks the line limit (1..64), byte 1 the size of the pieces the
 * rest is fed in. The lines must come out as the reference splitting says:
 * a line within the limit whole (a trailing '\r' dropped), a longer one as
 * its first `limit` bytes marked cut, and nothing else; anything else
 * traps. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker_output.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  const char *text; /* the input after the two control bytes */
  size_t len, pos;  /* where the reference splitting is */
  size_t limit;
} expect_ctx;

/* The next expected line from the reference splitting of the input. */
static void check_line(void *arg, const char *line, size_t len, bool cut) {
  expect_ctx *x = arg;
  const char *start = x->text + x->pos;
  size_t rest = x->len - x->pos;
  const char *nl = memchr(start, '\n', rest);
  size_t full = nl != NULL ? (size_t)(nl - start) : rest;
  size_t want = full;
  bool want_cut = full > x->limit;
  if (want_cut)
    want = x->limit;
  else if (want > 0 && start[want - 1] == '\r')
    want--;
  if (x->pos > x->len || cut != want_cut || len != want ||
      memcmp(line, start, len) != 0)
    __builtin_trap();
  x->pos += full + (nl != NULL ? 1 : 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  expect_ctx x = {.text = (const char *)data + 2,
                  .len = size - 2,
                  .limit = (size_t)(data[0] % 64) + 1};
  size_t piece = (size_t)data[1] % 17 + 1;
  berth_line_splitter sp;
  if (berth_line_splitter_init(&sp, x.limit) != BERTH_OK)
    return 0;
  for (size_t off = 0; off < x.len; off += piece) {
    size_t n = x.len - off < piece ? x.len - off : piece;
    berth_line_splitter_feed(&sp, x.text + off, n, check_line, &x);
  }
  berth_line_splitter_flush(&sp, check_line, &x);
  berth_line_splitter_free(&sp);
  if (x.pos < x.len) /* every byte belongs to some line */
    __builtin_trap();
  return 0;
}
