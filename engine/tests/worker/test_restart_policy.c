/* Unit tests of the supervisor's restart rule (worker/restart_policy.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "restart_policy.h"

static berth_restart_in crashed(double backoff_s, uint64_t served_ns) {
  return (berth_restart_in){.stopping = false,
                            .failed_load = false,
                            .backoff_s = backoff_s,
                            .served_ns = served_ns,
                            .backoff_min_s = 0.1,
                            .backoff_max_s = 10};
}

static void a_crash_restarts_after_the_backoff_which_doubles(void **state) {
  (void)state;
  berth_restart_in in = crashed(0.1, 0);
  berth_restart_plan p = berth_restart_decide(&in);
  assert_true(p.restart);
  assert_true(p.delay_s == 0.1);
  assert_true(p.next_backoff_s == 0.2);
  in.backoff_s = p.next_backoff_s;
  p = berth_restart_decide(&in);
  assert_true(p.delay_s == 0.2);
  assert_true(p.next_backoff_s == 0.4);
}

static void the_backoff_stops_at_its_maximum(void **state) {
  (void)state;
  berth_restart_in in = crashed(8, 0);
  berth_restart_plan p = berth_restart_decide(&in);
  assert_true(p.delay_s == 8);
  assert_true(p.next_backoff_s == 10);
  in.backoff_s = 10;
  p = berth_restart_decide(&in);
  assert_true(p.delay_s == 10);
  assert_true(p.next_backoff_s == 10);
}

static void a_worker_that_served_long_starts_over(void **state) {
  (void)state;
  berth_restart_in in = crashed(10, BERTH_RESTART_HEALTHY_NS + 1);
  berth_restart_plan p = berth_restart_decide(&in);
  assert_true(p.restart);
  assert_true(p.delay_s == 0.1);
  assert_true(p.next_backoff_s == 0.2);
  in.served_ns = BERTH_RESTART_HEALTHY_NS; /* not longer than 30 s */
  assert_true(berth_restart_decide(&in).delay_s == 10);
}

static void stopping_or_failed_loads_are_not_restarted(void **state) {
  (void)state;
  berth_restart_in in = crashed(0.1, 0);
  in.stopping = true;
  assert_false(berth_restart_decide(&in).restart);
  in = crashed(0.1, 0);
  in.failed_load = true;
  berth_restart_plan p = berth_restart_decide(&in);
  assert_false(p.restart);
  assert_true(p.next_backoff_s == 0.1); /* unchanged */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_crash_restarts_after_the_backoff_which_doubles),
      cmocka_unit_test(the_backoff_stops_at_its_maximum),
      cmocka_unit_test(a_worker_that_served_long_starts_over),
      cmocka_unit_test(stopping_or_failed_loads_are_not_restarted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
