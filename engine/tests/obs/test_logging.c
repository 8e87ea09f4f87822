/* Unit tests for the worker output line splitter, payload log rotation and
 * request ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "access_log.h"
#include "payload_log.h"
#include "worker_output.h"

/* ---- line splitter ------------------------------------------------------ */

typedef struct {
  char lines[16][64];
  bool cut[16];
  int n;
} seen_lines;

static void collect(void *arg, const char *line, size_t len, bool cut) {
  seen_lines *s = arg;
  assert_true(s->n < 16);
  assert_true(len < 64);
  memcpy(s->lines[s->n], line, len);
  s->lines[s->n][len] = '\0';
  s->cut[s->n] = cut;
  s->n++;
}

static void feed(berth_line_splitter *sp, seen_lines *s, const char *text) {
  berth_line_splitter_feed(sp, text, strlen(text), collect, s);
}

static void splits_lines_across_reads(void **state) {
  (void)state;
  berth_line_splitter sp;
  seen_lines s = {0};
  assert_int_equal(berth_line_splitter_init(&sp, 16), BERTH_OK);
  feed(&sp, &s, "one\ntw");
  assert_int_equal(s.n, 1);
  feed(&sp, &s, "o\r\n\nthr");
  feed(&sp, &s, "ee");
  assert_int_equal(s.n, 3);
  assert_string_equal(s.lines[0], "one");
  assert_string_equal(s.lines[1], "two"); /* CRLF: the CR goes too */
  assert_string_equal(s.lines[2], "");
  berth_line_splitter_flush(&sp, collect, &s); /* end of stream */
  assert_int_equal(s.n, 4);
  assert_string_equal(s.lines[3], "three");
  assert_false(s.cut[3]);
  berth_line_splitter_flush(&sp, collect, &s); /* nothing left */
  assert_int_equal(s.n, 4);
  berth_line_splitter_free(&sp);
}

static void cuts_long_lines_and_drops_the_rest(void **state) {
  (void)state;
  berth_line_splitter sp;
  seen_lines s = {0};
  assert_int_equal(berth_line_splitter_init(&sp, 8), BERTH_OK);
  /* longer than 8 within one read */
  feed(&sp, &s, "0123456789abcdef\nok\n");
  assert_int_equal(s.n, 2);
  assert_string_equal(s.lines[0], "01234567");
  assert_true(s.cut[0]);
  assert_string_equal(s.lines[1], "ok");
  assert_false(s.cut[1]);
  /* longer than 8 across reads, the newline much later */
  feed(&sp, &s, "abcd");
  feed(&sp, &s, "efgh");
  assert_int_equal(s.n, 2); /* full, but it may still end right here */
  feed(&sp, &s, "ijklmnopqrstuvwxyz");
  assert_int_equal(s.n, 3); /* the 9th byte makes it too long */
  assert_string_equal(s.lines[2], "abcdefgh");
  assert_true(s.cut[2]);
  feed(&sp, &s, "more\nnext\n");
  assert_int_equal(s.n, 4);
  assert_string_equal(s.lines[3], "next");
  /* exactly 8 bytes is not cut, in one read or with the newline later */
  feed(&sp, &s, "12345678\n");
  assert_int_equal(s.n, 5);
  assert_string_equal(s.lines[4], "12345678");
  assert_false(s.cut[4]);
  feed(&sp, &s, "ABCDEFGH");
  feed(&sp, &s, "\n");
  assert_int_equal(s.n, 6);
  assert_string_equal(s.lines[5], "ABCDEFGH");
  assert_false(s.cut[5]);
  berth_line_splitter_free(&sp);
}

/* ---- rotation ----------------------------------------------------------- */

static void put(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void expect(const char *path, const char *text) {
  char got[64] = {0};
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  size_t n = fread(got, 1, sizeof got - 1, f);
  fclose(f);
  got[n] = '\0';
  assert_string_equal(got, text);
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static void rotation_keeps_n_files(void **state) {
  (void)state;
  char dir[] = "/tmp/berth-rotate-XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[128], b1[140], b2[140], b3[140];
  snprintf(path, sizeof path, "%s/p.jsonl", dir);
  snprintf(b1, sizeof b1, "%s.1", path);
  snprintf(b2, sizeof b2, "%s.2", path);
  snprintf(b3, sizeof b3, "%s.3", path);
  put(path, "A");
  assert_int_equal(berth_payload_rotate(path, 2), 0);
  assert_false(exists(path));
  expect(b1, "A");
  put(path, "B");
  assert_int_equal(berth_payload_rotate(path, 2), 0);
  expect(b1, "B");
  expect(b2, "A");
  put(path, "C");
  assert_int_equal(berth_payload_rotate(path, 2), 0);
  expect(b1, "C");
  expect(b2, "B"); /* A fell off: two backups kept */
  assert_false(exists(b3));
  /* nothing to rotate is fine */
  assert_int_equal(berth_payload_rotate(path, 2), 0);
  /* no backups: the file just goes */
  put(path, "D");
  assert_int_equal(berth_payload_rotate(path, 0), 0);
  assert_false(exists(path));
  unlink(b1);
  unlink(b2);
  rmdir(dir);
}

/* ---- request ids -------------------------------------------------------- */

static void request_ids(void **state) {
  (void)state;
  char id[BERTH_REQUEST_ID_MAX + 1], other[BERTH_REQUEST_ID_MAX + 1];
  berth_request_id_new(id);
  berth_request_id_new(other);
  assert_int_equal(strlen(id), 32);
  assert_string_not_equal(id, other);
  assert_true(berth_request_id_take("abc-1", 5, id));
  assert_string_equal(id, "abc-1");
  assert_false(berth_request_id_take("a b", 3, id)); /* space */
  assert_false(berth_request_id_take("", 0, id));
  assert_false(berth_request_id_take(NULL, 0, id));
  char big[BERTH_REQUEST_ID_MAX + 2];
  memset(big, 'x', sizeof big);
  assert_true(berth_request_id_take(big, BERTH_REQUEST_ID_MAX, id));
  assert_false(berth_request_id_take(big, BERTH_REQUEST_ID_MAX + 1, id));
  assert_false(berth_request_id_take("\xc3\xa9", 2, id)); /* not ASCII */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(splits_lines_across_reads),
      cmocka_unit_test(cuts_long_lines_and_drops_the_rest),
      cmocka_unit_test(rotation_keeps_n_files),
      cmocka_unit_test(request_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
