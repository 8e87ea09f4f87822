/* Unit tests for the dashboard's bookkeeping: histogram quantiles, the
 * one-second histories, the recent-errors ring, the text sanitizer and the
 * Basic credentials parser. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <berth/error.h>

#include "ui.h"
#include "ui_stats.h"

static const double bounds[] = {0.01, 0.1, 1};

static void quantiles(void **state) {
  (void)state;
  uint64_t none[4] = {0, 0, 0, 0};
  assert_true(isnan(berth_ui_quantile(bounds, 3, none, 0.5)));
  /* 10 observations in (0.01, 0.1]: the median sits halfway through */
  uint64_t mid[4] = {0, 10, 0, 0};
  assert_float_equal(berth_ui_quantile(bounds, 3, mid, 0.5), 0.055, 1e-9);
  assert_float_equal(berth_ui_quantile(bounds, 3, mid, 1.0), 0.1, 1e-9);
  /* the first bucket starts at 0 */
  uint64_t low[4] = {4, 0, 0, 0};
  assert_float_equal(berth_ui_quantile(bounds, 3, low, 0.5), 0.005, 1e-9);
  /* 99 fast, 1 in +Inf: p99 is still fast, p100 is the last bound */
  uint64_t tail[4] = {99, 0, 0, 1};
  assert_true(berth_ui_quantile(bounds, 3, tail, 0.99) <= 0.01);
  assert_float_equal(berth_ui_quantile(bounds, 3, tail, 1.0), 1, 1e-9);
  /* q outside 0..1 is clamped */
  assert_float_equal(berth_ui_quantile(bounds, 3, mid, 7), 0.1, 1e-9);
}

static void timeline_wraps(void **state) {
  (void)state;
  berth_ui_timeline tl;
  memset(&tl, 0, sizeof tl);
  for (uint64_t i = 0; i < BERTH_UI_SAMPLES + 7; i++)
    berth_ui_timeline_advance(&tl, 1000 * i);
  assert_int_equal(tl.n, BERTH_UI_SAMPLES);
  /* oldest first: the first 7 were overwritten */
  assert_int_equal(tl.t_ms[berth_ui_timeline_slot(&tl, 0)], 7000);
  assert_int_equal(tl.t_ms[berth_ui_timeline_slot(&tl, BERTH_UI_SAMPLES - 1)],
                   1000 * (BERTH_UI_SAMPLES + 6));
}

static berth_ui_reading reading(uint64_t req, uint64_t err, uint64_t fast,
                                uint64_t slow, uint64_t batches, double rows,
                                uint64_t queue) {
  berth_ui_reading r;
  memset(&r, 0, sizeof r);
  r.requests = req;
  r.errors = err;
  r.bounds = bounds;
  r.n_bounds = 3;
  r.latency[0] = fast;
  r.latency[2] = slow;
  r.batches = batches;
  r.batch_rows = rows;
  r.queue_depth = queue;
  return r;
}

static void history_values(void **state) {
  (void)state;
  berth_ui_history *h = malloc(sizeof *h);
  assert_non_null(h);
  berth_ui_history_init(h);
  berth_ui_reading r0 = reading(100, 1, 100, 0, 50, 100, 3);
  berth_ui_history_record(h, 0, &r0, 0);
  /* no previous reading: only the queue is known */
  assert_true(isnan(h->v[BERTH_UI_RATE][0]));
  assert_true(isnan(h->v[BERTH_UI_P99_MS][0]));
  assert_float_equal(h->v[BERTH_UI_QUEUE][0], 3, 1e-6);
  /* one second later: 50 more requests, 5 errors, 10 batches of 50 rows */
  berth_ui_reading r1 = reading(150, 6, 140, 10, 60, 150, 0);
  berth_ui_history_record(h, 1, &r1, 0.5);
  assert_float_equal(h->v[BERTH_UI_RATE][1], 100, 1e-3); /* 50 / 0.5 s */
  assert_float_equal(h->v[BERTH_UI_ERROR_RATE][1], 10, 1e-3);
  assert_float_equal(h->v[BERTH_UI_BATCH][1], 5, 1e-6);
  assert_float_equal(h->v[BERTH_UI_QUEUE][1], 0, 1e-6);
  /* 40 fast (<= 10 ms), 10 in (0.1, 1]: p50 fast, p99 slow, in ms */
  assert_true(h->v[BERTH_UI_P50_MS][1] <= 10.0f);
  assert_true(h->v[BERTH_UI_P99_MS][1] > 100.0f);
  /* no batch in the next second: no batch size rather than 0 */
  berth_ui_reading r2 = reading(150, 6, 140, 10, 60, 150, 0);
  berth_ui_history_record(h, 2, &r2, 1);
  assert_true(isnan(h->v[BERTH_UI_BATCH][2]));
  assert_float_equal(h->v[BERTH_UI_RATE][2], 0, 1e-6);
  /* the latency window still covers the slow ones */
  assert_true(h->v[BERTH_UI_P99_MS][2] > 100.0f);
  /* a counter going backwards gives no value, not a negative rate */
  berth_ui_reading r3 = reading(10, 0, 0, 0, 0, 0, 0);
  berth_ui_history_record(h, 3, &r3, 1);
  assert_true(isnan(h->v[BERTH_UI_RATE][3]));
  assert_true(isnan(h->v[BERTH_UI_P50_MS][3]));
  berth_ui_history_skip(h, 1);
  assert_true(isnan(h->v[BERTH_UI_RATE][1]));
  assert_true(isnan(h->v[BERTH_UI_QUEUE][1]));
  free(h);
}

static void latency_window_is_bounded(void **state) {
  (void)state;
  berth_ui_history *h = malloc(sizeof *h);
  assert_non_null(h);
  berth_ui_history_init(h);
  /* slow requests at first, then only fast ones: after the window has
   * passed, p99 is fast */
  uint64_t fast = 0, slow = 10, req = 10;
  berth_ui_reading r = reading(req, 0, fast, slow, 0, 0, 0);
  berth_ui_history_record(h, 0, &r, 1);
  for (size_t k = 1; k <= BERTH_UI_LATENCY_WINDOW + 1; k++) {
    fast += 100;
    req += 100;
    r = reading(req, 0, fast, slow, 0, 0, 0);
    berth_ui_history_record(h, k, &r, 1);
  }
  assert_true(h->v[BERTH_UI_P99_MS][BERTH_UI_LATENCY_WINDOW + 1] <= 10.0f);
  free(h);
}

static void errors_ring(void **state) {
  (void)state;
  berth_ui_errors *r = calloc(1, sizeof *r);
  assert_non_null(r);
  assert_null(berth_ui_errors_get(r, 0));
  berth_ui_errors_add(r, 1, "m", "1", BERTH_PROTO_REST, BERTH_E_INVALID, "bad");
  berth_ui_errors_add(r, 2, "m", "1", BERTH_PROTO_REST, BERTH_E_INVALID, "bad");
  berth_ui_errors_add(r, 3, "m", "1", BERTH_PROTO_GRPC, BERTH_E_INVALID, "bad");
  assert_int_equal(r->n, 2); /* the first two merged */
  assert_int_equal(r->total, 3);
  const berth_ui_error *x = berth_ui_errors_get(r, 1);
  assert_int_equal(x->count, 2);
  assert_int_equal(x->first_ms, 1);
  assert_int_equal(x->last_ms, 2);
  assert_string_equal(x->message, "bad");
  assert_int_equal(berth_ui_errors_get(r, 0)->protocol, BERTH_PROTO_GRPC);
  char msg[32];
  for (int i = 0; i < BERTH_UI_MAX_ERRORS + 5; i++) {
    snprintf(msg, sizeof msg, "error %d", i);
    berth_ui_errors_add(r, 10 + (uint64_t)i, "m", "1", BERTH_PROTO_REST,
                        BERTH_E_MODEL, msg);
  }
  assert_int_equal(r->n, BERTH_UI_MAX_ERRORS);
  snprintf(msg, sizeof msg, "error %d", BERTH_UI_MAX_ERRORS + 4);
  assert_string_equal(berth_ui_errors_get(r, 0)->message, msg);
  assert_string_equal(berth_ui_errors_get(r, BERTH_UI_MAX_ERRORS - 1)->message,
                      "error 5");
  assert_null(berth_ui_errors_get(r, BERTH_UI_MAX_ERRORS));
  /* long text is cut, never overflowing */
  char big[2000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  berth_ui_errors_add(r, 99, big, big, BERTH_PROTO_REST, BERTH_E_MODEL, big);
  x = berth_ui_errors_get(r, 0);
  assert_int_equal(strlen(x->model), sizeof x->model - 1);
  assert_int_equal(strlen(x->message), sizeof x->message - 1);
  free(r);
}

static void text_is_sanitized(void **state) {
  (void)state;
  char out[16];
  assert_int_equal(berth_ui_copy_text(out, sizeof out, "plain"), 5);
  assert_string_equal(out, "plain");
  berth_ui_copy_text(out, sizeof out, "a\nb\x01\x7f");
  assert_string_equal(out, "a?b??");
  berth_ui_copy_text(out, sizeof out, "caf\xc3\xa9");
  assert_string_equal(out, "caf\xc3\xa9");
  /* invalid: lone continuation, overlong, surrogate, truncated, > U+10FFFF */
  berth_ui_copy_text(out, sizeof out, "\x80\xc0\xaf");
  assert_string_equal(out, "???");
  berth_ui_copy_text(out, sizeof out, "\xed\xa0\x80");
  assert_string_equal(out, "???");
  berth_ui_copy_text(out, sizeof out, "x\xe2\x82");
  assert_string_equal(out, "x??");
  berth_ui_copy_text(out, sizeof out, "\xf4\x90\x80\x80");
  assert_string_equal(out, "????");
  /* cut at a character boundary: 7 two-byte characters fill 14 bytes, the
   * 8th does not fit with the NUL */
  berth_ui_copy_text(out, sizeof out,
                     "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                     "\xc3\xa9");
  assert_int_equal(strlen(out), 14);
  assert_int_equal(berth_ui_copy_text(out, 1, "abc"), 0);
  assert_string_equal(out, "");
  berth_ui_copy_text(out, sizeof out, NULL);
  assert_string_equal(out, "");
}

static bool basic(const char *h, char *out, size_t cap) {
  size_t n = 0;
  bool ok = berth_ui_basic_password(h, strlen(h), out, cap, &n);
  if (ok)
    assert_int_equal(n, strlen(out));
  return ok;
}

static void basic_credentials(void **state) {
  (void)state;
  char out[64];
  /* "user:s3cret" */
  assert_true(basic("Basic dXNlcjpzM2NyZXQ=", out, sizeof out));
  assert_string_equal(out, "s3cret");
  assert_true(basic("basic   dXNlcjpzM2NyZXQ=  ", out, sizeof out));
  assert_string_equal(out, "s3cret");
  /* ":tok" (no user name), "a:b:c" (the password holds the rest) */
  assert_true(basic("Basic OnRvaw==", out, sizeof out));
  assert_string_equal(out, "tok");
  assert_true(basic("Basic YTpiOmM=", out, sizeof out));
  assert_string_equal(out, "b:c");
  assert_false(basic("Bearer dXNlcjpzM2NyZXQ=", out, sizeof out));
  assert_false(basic("Basic dXNlcnBhc3M=", out, sizeof out));    /* no ':' */
  assert_false(basic("Basic dXNlcjpzM2NyZXQ", out, sizeof out)); /* length */
  assert_false(basic("Basic dXNl*jpzM2NyZXQ=", out, sizeof out));
  assert_false(basic("Basic =XNlcjpzM2NyZXQ=", out, sizeof out));
  assert_false(basic("Basic ====", out, sizeof out));
  assert_false(basic("Basic ", out, sizeof out));
  assert_false(basic("Basic dXNlcjpzM2NyZXQ=", out, 6));  /* no room for NUL */
  assert_false(basic("Basic dTo6AA==", out, sizeof out)); /* "u::\0" */
  char *huge = malloc(20000);
  assert_non_null(huge);
  memcpy(huge, "Basic ", 6);
  memset(huge + 6, 'A', 20000 - 7);
  huge[20000 - 1] = '\0';
  assert_false(basic(huge, out, sizeof out));
  free(huge);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(quantiles),
      cmocka_unit_test(timeline_wraps),
      cmocka_unit_test(history_values),
      cmocka_unit_test(latency_window_is_bounded),
      cmocka_unit_test(errors_ring),
      cmocka_unit_test(text_is_sanitized),
      cmocka_unit_test(basic_credentials),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
