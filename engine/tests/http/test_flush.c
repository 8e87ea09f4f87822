/* Tests for the output queue's bookkeeping (flush.c): items queue in order,
 * a gather covers them from the cursor on, partial writes move the cursor
 * across items and buffers, callbacks run once each in order with the
 * status, owned buffers are freed (ASan checks), and the dirty list holds
 * a connection once. No socket: the connection is a bare struct whose
 * server never started its loop handles. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "flush.h"
#include "server_int.h"

static int order[16];
static int statuses[16];
static int n_done;

static void on_item(void *arg, int status) {
  order[n_done] = (int)(intptr_t)arg;
  statuses[n_done] = status;
  n_done++;
}

static berth_httpd *new_server(void) {
  berth_httpd *h = calloc(1, sizeof *h);
  assert_non_null(h);
  berth_errmsg err;
  assert_int_equal(berth_flush_setup(&h->flush, BERTH_WRITE_WRITEV, "t", &err),
                   BERTH_OK);
  return h;
}

static berth_httpd_conn *new_conn(berth_httpd *h) {
  berth_httpd_conn *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->srv = h;
  return c;
}

static char *dup_str(const char *s) {
  char *p = strdup(s);
  assert_non_null(p);
  return p;
}

/* Queues "hello" + "world" (two buffers, both owned), then "!!" (static). */
static void queue_three(berth_httpd_conn *c) {
  static char bang[] = "!!";
  char *a = dup_str("hello"), *b = dup_str("world");
  uv_buf_t two[2] = {uv_buf_init(a, 5), uv_buf_init(b, 5)};
  assert_int_equal(berth_out_queue(c, two, 2, a, b, on_item, (void *)1),
                   BERTH_OK);
  uv_buf_t empty = uv_buf_init(NULL, 0);
  assert_int_equal(
      berth_out_queue(c, &empty, 1, NULL, NULL, on_item, (void *)2), BERTH_OK);
  uv_buf_t one = uv_buf_init(bang, 2);
  assert_int_equal(berth_out_queue(c, &one, 1, NULL, NULL, on_item, (void *)3),
                   BERTH_OK);
}

static void test_queue_and_partial_writes(void **state) {
  (void)state;
  n_done = 0;
  berth_httpd *h = new_server();
  berth_httpd_conn *c = new_conn(h);
  queue_three(c);
  assert_int_equal(c->writes, 3);
  assert_int_equal(berth_server_conn_queued(c), 12);
  assert_true(c->out.dirty);
  assert_ptr_equal(LIST_FIRST(&h->flush.dirty), c);
  berth_out_mark(c); /* once on the list */
  assert_null(LIST_NEXT(c, out.dirty_link));

  size_t len = 0;
  assert_int_equal(berth_out_gather(c, 64, &len),
                   3); /* the empty one skipped */
  assert_int_equal(len, 12);
  assert_memory_equal(c->out.iov[0].iov_base, "hello", 5);
  assert_memory_equal(c->out.iov[2].iov_base, "!!", 2);

  /* 3 bytes: inside the first buffer */
  assert_int_equal(berth_out_consume(c, 3), 0);
  assert_int_equal(n_done, 0);
  assert_int_equal(berth_server_conn_queued(c), 9);
  assert_int_equal(berth_out_gather(c, 64, &len), 3);
  assert_int_equal(len, 9);
  assert_memory_equal(c->out.iov[0].iov_base, "lo", 2);
  assert_int_equal(c->out.iov[0].iov_len, 2);

  /* 4 more: across into the second buffer of the same item */
  assert_int_equal(berth_out_consume(c, 4), 0);
  assert_int_equal(berth_out_gather(c, 1, &len), 1); /* max honoured */
  assert_memory_equal(c->out.iov[0].iov_base, "rld", 3);
  assert_int_equal(len, 3);

  /* the rest of item 1: it ends, and so does the empty item 2 after it */
  assert_int_equal(berth_out_consume(c, 3), 2);
  assert_int_equal(n_done, 2);
  assert_int_equal(order[0], 1);
  assert_int_equal(order[1], 2);
  assert_int_equal(statuses[0], 0);
  assert_int_equal(c->writes, 1);
  assert_int_equal(berth_server_conn_queued(c), 2);

  /* one more item, then everything written at once */
  char *d = dup_str("tail");
  uv_buf_t b = uv_buf_init(d, 4);
  assert_int_equal(berth_out_queue(c, &b, 1, d, NULL, on_item, (void *)4),
                   BERTH_OK);
  assert_int_equal(berth_out_consume(c, 6), 2);
  assert_int_equal(n_done, 4);
  assert_int_equal(order[2], 3);
  assert_int_equal(order[3], 4);
  assert_int_equal(c->writes, 0);
  assert_int_equal(berth_server_conn_queued(c), 0);
  assert_null(c->out.head);
  assert_null(c->out.tail);

  berth_out_free(c);
  free(c);
  berth_flush_abandon(&h->flush);
  free(h);
}

static void test_failures_and_close(void **state) {
  (void)state;
  n_done = 0;
  berth_httpd *h = new_server();
  berth_httpd_conn *c = new_conn(h);
  queue_three(c);
  assert_int_equal(berth_out_consume(c, 2), 0);
  berth_out_fail_all(c, UV_EPIPE); /* every item, in order, with the status */
  assert_int_equal(n_done, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(order[i], i + 1);
    assert_int_equal(statuses[i], UV_EPIPE);
  }
  assert_int_equal(c->writes, 0);
  assert_int_equal(berth_server_conn_queued(c), 0);

  /* freeing a connection drops what it still holds, as cancelled */
  queue_three(c);
  berth_out_free(c);
  assert_int_equal(n_done, 6);
  assert_int_equal(statuses[5], UV_ECANCELED);
  assert_false(c->out.dirty);

  /* an item the direct path wrote whole (its completion waits for the loop
   * turn's check) completes with 0 even when the connection goes first */
  queue_three(c);
  c->out.head->written = true;
  berth_out_free(c);
  assert_int_equal(n_done, 9);
  assert_int_equal(statuses[6], 0);
  assert_int_equal(statuses[7], UV_ECANCELED);
  assert_true(LIST_EMPTY(&h->flush.dirty));

  /* a closing connection takes nothing more; the buffers are freed */
  c->closing = true;
  char *x = dup_str("late");
  uv_buf_t b = uv_buf_init(x, 4);
  assert_int_equal(berth_out_queue(c, &b, 1, x, NULL, on_item, (void *)9),
                   BERTH_E_IO);
  assert_int_equal(n_done, 9);
  assert_null(c->out.head);
  free(c);
  berth_flush_abandon(&h->flush);
  free(h);
}

static void test_write_path_names(void **state) {
  (void)state;
  assert_int_equal(berth_httpd_write_path("writev"), BERTH_WRITE_WRITEV);
  assert_int_equal(berth_httpd_write_path("uring"), BERTH_WRITE_URING);
  assert_int_equal(berth_httpd_write_path("auto"), BERTH_WRITE_AUTO);
  assert_int_equal(berth_httpd_write_path("direct"), BERTH_WRITE_DIRECT);
  assert_int_equal(berth_httpd_write_path(NULL), BERTH_WRITE_DIRECT);
  /* auto always starts: io_uring when it works, else writev */
  berth_flush f;
  berth_errmsg err;
  assert_int_equal(berth_flush_setup(&f, BERTH_WRITE_AUTO, "t", &err),
                   BERTH_OK);
  const char *mode = berth_flush_mode_name(&f);
  assert_true(strcmp(mode, "uring") == 0 || strcmp(mode, "writev") == 0);
  assert_true(berth_uring_built() || strcmp(mode, "writev") == 0);
  berth_flush_abandon(&f);
  /* forced uring: either works or says why, naming the key */
  int rc = berth_flush_setup(&f, BERTH_WRITE_URING, "127.0.0.1:1", &err);
  if (rc == BERTH_OK) {
    assert_string_equal(berth_flush_mode_name(&f), "uring");
    berth_flush_abandon(&f);
  } else {
    assert_int_equal(rc, BERTH_E_CONFIG);
    assert_non_null(strstr(err.msg, "server.write_path"));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_queue_and_partial_writes),
      cmocka_unit_test(test_failures_and_close),
      cmocka_unit_test(test_write_path_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
