/* Unit tests of the batcher's pure decision (sched/batch_plan.c): each rule
 * of docs/batching.md's "How a batch forms", one input at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "batch_plan.h"

#define MS 1000000ull

/* Eight requests seen at once, three queued (3 rows of 16), one running, the
 * oldest queued 1 ms ago with a 5 ms delay, the last one 0.1 ms ago, batches
 * taking 4 ms: the batcher should wait for more. */
static berth_batch_plan_in busy(void) {
  return (berth_batch_plan_in){.now_ns = 100 * MS,
                               .delay_ns = 5 * MS,
                               .max_batch_size = 16,
                               .q_len = 3,
                               .q_rows = 3,
                               .q_rows_preferred = false,
                               .oldest_ns = 99 * MS,
                               .in_server = 4,
                               .seen = 8,
                               .last_arrival_ns = 100 * MS - MS / 10,
                               .service_ns = 4 * MS};
}

static void waits_for_expected_arrivals(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  berth_batch_plan p = berth_batch_plan_decide(&in);
  assert_false(p.send);
  /* half a service time after the last arrival, before the delay's end */
  assert_int_equal(p.wake_at_ns, in.last_arrival_ns + 2 * MS);
  assert_int_equal(p.seen, 8);
}

static void never_waits_past_the_oldest_delay(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.service_ns = 100 * MS; /* a lull of 50 ms would outlast the delay */
  berth_batch_plan p = berth_batch_plan_decide(&in);
  assert_false(p.send);
  assert_int_equal(p.wake_at_ns, in.oldest_ns + in.delay_ns);
}

static void sends_when_not_batching_or_no_delay(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.max_batch_size = 0;
  assert_true(berth_batch_plan_decide(&in).send);
  in = busy();
  in.delay_ns = 0;
  assert_true(berth_batch_plan_decide(&in).send);
}

static void sends_a_full_or_preferred_batch(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.q_rows = 16;
  assert_true(berth_batch_plan_decide(&in).send);
  in.q_rows = 40; /* more than fits: still full */
  assert_true(berth_batch_plan_decide(&in).send);
  in = busy();
  in.q_rows_preferred = true;
  assert_true(berth_batch_plan_decide(&in).send);
}

static void sends_when_the_delay_is_over_and_expects_fewer(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.now_ns = in.oldest_ns + in.delay_ns;
  berth_batch_plan p = berth_batch_plan_decide(&in);
  assert_true(p.send);
  assert_int_equal(p.seen, 4); /* only four came */
  in.in_server = 0;
  assert_int_equal(berth_batch_plan_decide(&in).seen, 1); /* never 0 */
}

static void a_lone_request_never_waits(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.q_len = 1;
  in.q_rows = 1;
  assert_true(berth_batch_plan_decide(&in).send);
}

static void sends_when_every_client_seen_is_here(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.in_server = 8;
  berth_batch_plan p = berth_batch_plan_decide(&in);
  assert_true(p.send);
  assert_int_equal(p.seen, 8);
}

static void a_lull_ends_the_wait(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.last_arrival_ns = in.now_ns - 2 * MS; /* half of 4 ms: the lull */
  berth_batch_plan p = berth_batch_plan_decide(&in);
  assert_true(p.send);
  assert_int_equal(p.seen, 4);
}

static void no_service_time_yet_means_no_wait(void **state) {
  (void)state;
  berth_batch_plan_in in = busy();
  in.service_ns = 0; /* nothing ran: a lull of 0 */
  assert_true(berth_batch_plan_decide(&in).send);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(waits_for_expected_arrivals),
      cmocka_unit_test(never_waits_past_the_oldest_delay),
      cmocka_unit_test(sends_when_not_batching_or_no_delay),
      cmocka_unit_test(sends_a_full_or_preferred_batch),
      cmocka_unit_test(sends_when_the_delay_is_over_and_expects_fewer),
      cmocka_unit_test(a_lone_request_never_waits),
      cmocka_unit_test(sends_when_every_client_seen_is_here),
      cmocka_unit_test(a_lull_ends_the_wait),
      cmocka_unit_test(no_service_time_yet_means_no_wait),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
