/* Unit tests of the autoscaling policy (sched/autoscale_policy.c) with a
 * fake clock: samples every 100 ms, as the engine takes them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "autoscale_policy.h"

#define MS 1000000ull
#define SEC (1000 * MS)
#define T0 (1000 * SEC) /* any origin */

static berth_autoscale_config base_cfg(void) {
  return (berth_autoscale_config){.enabled = true,
                                  .min_instances = 1,
                                  .max_instances = 8,
                                  .target_ongoing_requests = 2,
                                  .upscale_delay_s = 1,
                                  .downscale_delay_s = 2,
                                  .scale_to_zero_after_s = 3,
                                  .stable_window_s = 4,
                                  .panic_window_s = 0.5,
                                  .panic_threshold = 2.0};
}

/* Samples `ongoing` every 100 ms from *now for `secs` seconds, deciding
 * after each with `current` instances (or the desired count when current
 * is -1); returns the last decision. */
static berth_autoscale_decision run(berth_autoscale_state *s, uint64_t *now,
                                    double secs, double ongoing, int current) {
  berth_autoscale_decision d = {0};
  uint64_t end = *now + (uint64_t)(secs * (double)SEC);
  while (*now < end) {
    *now += 100 * MS;
    berth_autoscale_record(s, *now, ongoing);
    d = berth_autoscale_decide(s, *now,
                               current < 0 ? s->desired : (uint32_t)current);
  }
  return d;
}

static berth_autoscale_state *fresh(const berth_autoscale_config *c,
                                    uint32_t initial, uint64_t now) {
  berth_autoscale_state *s = malloc(sizeof *s);
  assert_non_null(s);
  berth_autoscale_init(s, c, initial, now);
  return s;
}

static void config_checks_name_the_key(void **state) {
  (void)state;
  char why[200];
  berth_autoscale_config c = base_cfg();
  assert_int_equal(berth_autoscale_config_check(&c, why, sizeof why), 0);
  c.min_instances = 9;
  assert_int_equal(berth_autoscale_config_check(&c, why, sizeof why), -1);
  assert_non_null(strstr(why, "min_instances"));
  c = base_cfg();
  c.target_ongoing_requests = 0;
  assert_int_equal(berth_autoscale_config_check(&c, why, sizeof why), -1);
  assert_non_null(strstr(why, "target_ongoing_requests"));
  c = base_cfg();
  c.panic_window_s = 5; /* longer than the stable window */
  assert_int_equal(berth_autoscale_config_check(&c, why, sizeof why), -1);
  assert_non_null(strstr(why, "panic_window_s"));
  c = base_cfg();
  c.panic_threshold = 0.5;
  assert_int_equal(berth_autoscale_config_check(&c, why, sizeof why), -1);
  assert_non_null(strstr(why, "panic_threshold"));
  c = base_cfg();
  c.max_instances = 0;
  c.min_instances = 0;
  assert_int_equal(berth_autoscale_config_check(&c, why, sizeof why), -1);
}

/* Steady load of 6 ongoing at target 2: 3 instances, after the upscale
 * delay and not before. */
static void stable_load_scales_up_after_the_delay(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  c.panic_threshold = 100; /* keep panic out of this test */
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  berth_autoscale_decision d = run(s, &now, 0.5, 6, -1);
  assert_int_equal(d.desired, 1); /* wanted for 0.5 s < 1 s */
  assert_false(d.panic);
  d = run(s, &now, 4, 6, -1);
  assert_int_equal(d.desired, 3);
  assert_true(d.stable_avg > 5.9 && d.stable_avg < 6.1);
  free(s);
}

static void the_count_stays_within_min_and_max(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  c.max_instances = 4;
  c.min_instances = 2;
  c.panic_threshold = 100;
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  assert_int_equal(s->desired, 2); /* initial clamped up to min */
  berth_autoscale_decision d = run(s, &now, 6, 100, -1);
  assert_int_equal(d.desired, 4);
  d = run(s, &now, 10, 0, -1);
  assert_int_equal(d.desired, 2); /* never below min (and min > 0) */
  free(s);
}

/* Load ends: the count comes down only once the stable window's average
 * fell and the downscale delay passed. */
static void scale_down_waits_for_the_delay(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  c.panic_threshold = 100;
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  berth_autoscale_decision d = run(s, &now, 6, 8, -1);
  assert_int_equal(d.desired, 4);
  d = run(s, &now, 1.5, 0, -1); /* average still high, or delay not over */
  assert_true(d.desired > 1);
  d = run(s, &now, 8, 0, -1);
  assert_int_equal(d.desired, 1);
  free(s);
}

/* A burst far above capacity: panic, up at once (no upscale delay), and
 * no scale-down while panicking even though the load is gone. */
static void a_burst_panics_and_holds(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  c.upscale_delay_s = 30; /* the stable path would wait 30 s */
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  berth_autoscale_decision d = run(s, &now, 1, 0, 1);
  assert_false(d.panic);
  d = run(s, &now, 0.3, 12, 1); /* 12 ongoing > 2.0 x (1 x 2) */
  assert_true(d.panic);
  assert_true(d.desired >= 4);
  uint32_t peak = d.desired;
  d = run(s, &now, 2, 0, (int)peak); /* gone, but still within the panic */
  assert_true(d.panic);
  assert_int_equal(d.desired, peak);
  d = run(s, &now, 10, 0, -1); /* a stable window later: panic over, down */
  assert_false(d.panic);
  assert_int_equal(d.desired, 1);
  free(s);
}

/* Load below the threshold never panics. */
static void load_within_capacity_does_not_panic(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 2, now);
  berth_autoscale_decision d = run(s, &now, 3, 7.9, 2); /* < 2 x 4 */
  assert_false(d.panic);
  free(s);
}

static void idle_scales_to_zero_and_a_request_wakes(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  c.min_instances = 0;
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  berth_autoscale_decision d = run(s, &now, 2.5, 0, -1);
  assert_int_equal(d.desired, 1); /* idle for 2.5 s < 3 s */
  d = run(s, &now, 1, 0, -1);
  assert_int_equal(d.desired, 0);
  d = run(s, &now, 0.1, 1, -1); /* one request: one instance at once */
  assert_int_equal(d.desired, 1);
  d = run(s, &now, 2, 0, -1); /* idle again, not yet long enough */
  assert_int_equal(d.desired, 1);
  d = run(s, &now, 1.5, 0, -1);
  assert_int_equal(d.desired, 0);
  berth_autoscale_wake(s, now); /* a request queued between samples */
  assert_int_equal(s->desired, 1);
  d = berth_autoscale_decide(s, now, 0);
  assert_int_equal(d.desired, 1); /* no instant fall back to zero */
  free(s);
}

/* min_instances 1: never zero, however long idle. */
static void min_one_never_reaches_zero(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  berth_autoscale_decision d = run(s, &now, 30, 0, -1);
  assert_int_equal(d.desired, 1);
  free(s);
}

/* Light steady load (under one target) with min 0 keeps one instance. */
static void light_load_keeps_one(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  c.min_instances = 0;
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  berth_autoscale_decision d = run(s, &now, 10, 0.5, -1);
  assert_int_equal(d.desired, 1);
  free(s);
}

/* A long stable window uses wider buckets and still averages right. */
static void long_windows_average(void **state) {
  (void)state;
  berth_autoscale_config c = base_cfg();
  c.stable_window_s = 600;
  c.panic_window_s = 6;
  c.panic_threshold = 100;
  c.upscale_delay_s = 0;
  uint64_t now = T0;
  berth_autoscale_state *s = fresh(&c, 1, now);
  berth_autoscale_decision d = run(s, &now, 60, 4, -1);
  assert_true(d.stable_avg > 3.9 && d.stable_avg < 4.1);
  assert_int_equal(d.desired, 2);
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(config_checks_name_the_key),
      cmocka_unit_test(stable_load_scales_up_after_the_delay),
      cmocka_unit_test(the_count_stays_within_min_and_max),
      cmocka_unit_test(scale_down_waits_for_the_delay),
      cmocka_unit_test(a_burst_panics_and_holds),
      cmocka_unit_test(load_within_capacity_does_not_panic),
      cmocka_unit_test(idle_scales_to_zero_and_a_request_wakes),
      cmocka_unit_test(min_one_never_reaches_zero),
      cmocka_unit_test(light_load_keeps_one),
      cmocka_unit_test(long_windows_average),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
