/* Tests for placement.c: where worker instances run — spread over the
 * allowed GPUs, memory-aware, all or nothing, growth one at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "placement.h"

#define GIB (UINT64_C(1) << 30)

/* n GPUs 0..n-1 of mem bytes each, budget = mem. */
static berth_placement machine(size_t n, uint64_t mem) {
  berth_placement p;
  memset(&p, 0, sizeof p);
  for (size_t i = 0; i < n; i++)
    p.gpus[i] = (berth_gpu){.index = (uint32_t)i, .memory = mem, .budget = mem};
  p.n_gpus = n;
  return p;
}

static berth_device_req req_of(berth_devices_kind kind, const uint32_t *list,
                               size_t n, uint64_t need) {
  return (berth_device_req){.model = "m",
                            .version = "1",
                            .kind = kind,
                            .list = list,
                            .n_list = n,
                            .need = need};
}

static void test_spread_over_all(void **state) {
  (void)state;
  berth_placement p = machine(2, 16 * GIB);
  berth_device_req r = req_of(BERTH_DEVICES_ALL, NULL, 0, 0);
  int dev[4];
  berth_errmsg err = {{0}};
  assert_int_equal(berth_placement_plan(&p, &r, 4, dev, &err), BERTH_OK);
  assert_int_equal(dev[0], 0);
  assert_int_equal(dev[1], 1);
  assert_int_equal(dev[2], 0);
  assert_int_equal(dev[3], 1);
  assert_int_equal(p.gpus[0].instances, 2);
  assert_int_equal(p.gpus[1].instances, 2);
}

static void test_list_limits_the_gpus(void **state) {
  (void)state;
  berth_placement p = machine(4, 16 * GIB);
  static const uint32_t list[] = {3, 1};
  berth_device_req r = req_of(BERTH_DEVICES_LIST, list, 2, GIB);
  int dev[3];
  berth_errmsg err = {{0}};
  assert_int_equal(berth_placement_plan(&p, &r, 3, dev, &err), BERTH_OK);
  assert_int_equal(dev[0], 1); /* equal counts and memory: lowest index */
  assert_int_equal(dev[1], 3);
  assert_int_equal(dev[2], 1);
  assert_int_equal(p.gpus[1].used, 2 * GIB);
  assert_int_equal(p.gpus[3].used, GIB);
  assert_int_equal(p.gpus[0].instances, 0);
  assert_int_equal(p.gpus[2].instances, 0);
}

static void test_memory_aware(void **state) {
  (void)state;
  berth_placement p = machine(2, 16 * GIB);
  /* another model already holds 12 GiB of GPU 0 */
  berth_placement_take(&p, 0, 12 * GIB);
  berth_device_req r = req_of(BERTH_DEVICES_ALL, NULL, 0, 6 * GIB);
  int dev[2];
  berth_errmsg err = {{0}};
  /* 6 GiB fits only on GPU 1 (16 free), twice not: 16 - 6 = 10 >= 6 */
  assert_int_equal(berth_placement_plan(&p, &r, 2, dev, &err), BERTH_OK);
  assert_int_equal(dev[0], 1);
  assert_int_equal(dev[1], 1);
  assert_int_equal(p.gpus[1].used, 12 * GIB);
  /* a third needs 6 GiB: GPU 0 has 4 free, GPU 1 has 4 free */
  int d = 99;
  assert_int_equal(berth_placement_pick(&p, &r, dev, 2, &d, &err),
                   BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "model 'm' version '1'"));
  assert_non_null(strstr(err.msg, "6.0 GiB"));
  assert_non_null(strstr(err.msg, "GPU 0: 4.0 GiB free of 16.0 GiB"));
  assert_non_null(strstr(err.msg, "GPU 1: 4.0 GiB free of 16.0 GiB"));
}

static void test_spread_prefers_more_free_memory(void **state) {
  (void)state;
  berth_placement p = machine(3, 16 * GIB);
  berth_placement_take(&p, 0, 8 * GIB);
  berth_placement_take(&p, 1, 2 * GIB);
  berth_device_req r = req_of(BERTH_DEVICES_AUTO, NULL, 0, GIB);
  int d = -5;
  berth_errmsg err = {{0}};
  assert_int_equal(berth_placement_pick(&p, &r, NULL, 0, &d, &err), BERTH_OK);
  assert_int_equal(d, 2);
}

static void test_no_fit_is_all_or_nothing(void **state) {
  (void)state;
  berth_placement p = machine(2, 8 * GIB);
  berth_device_req r = req_of(BERTH_DEVICES_ALL, NULL, 0, 3 * GIB);
  int dev[5];
  berth_errmsg err = {{0}};
  /* 2 per GPU fit (6 of 8 GiB), the fifth does not */
  assert_int_equal(berth_placement_plan(&p, &r, 5, dev, &err), BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "instance 4 needs 3.0 GiB"));
  assert_int_equal(p.gpus[0].used, 0);
  assert_int_equal(p.gpus[1].used, 0);
  assert_int_equal(p.gpus[0].instances, 0);
  assert_int_equal(p.gpus[1].instances, 0);
  assert_int_equal(berth_placement_plan(&p, &r, 4, dev, &err), BERTH_OK);
}

static void test_growth_and_release(void **state) {
  (void)state;
  berth_placement p = machine(2, 0); /* memory unknown: no budget */
  berth_device_req r = req_of(BERTH_DEVICES_ALL, NULL, 0, 40 * GIB);
  int dev[8];
  size_t n = 0;
  berth_errmsg err = {{0}};
  for (; n < 5; n++) { /* one at a time, as autoscaling grows a model */
    assert_int_equal(berth_placement_pick(&p, &r, dev, n, &dev[n], &err),
                     BERTH_OK);
    berth_placement_take(&p, dev[n], r.need);
  }
  assert_int_equal(dev[0], 0);
  assert_int_equal(dev[1], 1);
  assert_int_equal(dev[2], 0);
  assert_int_equal(dev[3], 1);
  assert_int_equal(dev[4], 0);
  /* two instances on GPU 0 stop: the next goes back there */
  berth_placement_release(&p, dev[0], r.need);
  berth_placement_release(&p, dev[2], r.need);
  int rest[3] = {dev[1], dev[3], dev[4]};
  int d = -5;
  assert_int_equal(berth_placement_pick(&p, &r, rest, 3, &d, &err), BERTH_OK);
  assert_int_equal(d, 0);
  assert_int_equal(p.gpus[0].instances, 1);
  assert_int_equal(p.gpus[0].used, 40 * GIB);
}

static void test_cpu_and_inherit(void **state) {
  (void)state;
  berth_placement none = machine(0, 0);
  berth_placement two = machine(2, GIB);
  berth_errmsg err = {{0}};
  int d = 7;
  berth_device_req cpu = req_of(BERTH_DEVICES_CPU, NULL, 0, 5 * GIB);
  assert_int_equal(berth_placement_pick(&two, &cpu, NULL, 0, &d, &err),
                   BERTH_OK);
  assert_int_equal(d, BERTH_DEVICE_CPU);
  berth_placement_take(&two, d, cpu.need); /* counts nothing */
  assert_int_equal(two.gpus[0].used + two.gpus[1].used, 0);
  berth_device_req autoreq = req_of(BERTH_DEVICES_AUTO, NULL, 0, 0);
  assert_int_equal(berth_placement_pick(&none, &autoreq, NULL, 0, &d, &err),
                   BERTH_OK);
  assert_int_equal(d, BERTH_DEVICE_INHERIT);
  berth_device_req all = req_of(BERTH_DEVICES_ALL, NULL, 0, 0);
  assert_int_equal(berth_placement_pick(&none, &all, NULL, 0, &d, &err),
                   BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "knows none"));
}

static void test_unknown_gpu(void **state) {
  (void)state;
  berth_placement p = machine(2, GIB);
  static const uint32_t list[] = {0, 5};
  berth_device_req r = req_of(BERTH_DEVICES_LIST, list, 2, 0);
  int dev[2];
  berth_errmsg err = {{0}};
  assert_int_equal(berth_placement_plan(&p, &r, 2, dev, &err), BERTH_E_CONFIG);
  assert_non_null(
      strstr(err.msg, "GPU 5 is not one of the server's GPUs (0, 1)"));
  assert_int_equal(p.gpus[0].instances, 0);
}

static void test_env_and_names(void **state) {
  (void)state;
  char v[16], name[32];
  assert_true(berth_placement_env_value(3, v, sizeof v));
  assert_string_equal(v, "3");
  assert_true(berth_placement_env_value(BERTH_DEVICE_CPU, v, sizeof v));
  assert_string_equal(v, "");
  assert_false(berth_placement_env_value(BERTH_DEVICE_INHERIT, v, sizeof v));
  berth_placement_name(2, name, sizeof name);
  assert_string_equal(name, "cuda:2");
  berth_placement_name(BERTH_DEVICE_CPU, name, sizeof name);
  assert_string_equal(name, "cpu");
  berth_placement_name(BERTH_DEVICE_INHERIT, name, sizeof name);
  assert_string_equal(name, "default");
}

static void test_groups(void **state) {
  (void)state;
  const int devices[] = {1, 0, 1, BERTH_DEVICE_CPU, 0, 1};
  berth_device_group g[4];
  assert_int_equal(berth_placement_groups(devices, 6, g, 4), 3);
  assert_int_equal(g[0].device, 1);
  assert_int_equal(g[0].count, 3);
  assert_int_equal(g[1].device, 0);
  assert_int_equal(g[1].count, 2);
  assert_int_equal(g[2].device, BERTH_DEVICE_CPU);
  assert_int_equal(g[2].count, 1);
  /* no room: the rest count in the last group */
  assert_int_equal(berth_placement_groups(devices, 6, g, 1), 1);
  assert_int_equal(g[0].count, 6);
  assert_int_equal(berth_placement_groups(devices, 0, g, 4), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spread_over_all),
      cmocka_unit_test(test_list_limits_the_gpus),
      cmocka_unit_test(test_memory_aware),
      cmocka_unit_test(test_spread_prefers_more_free_memory),
      cmocka_unit_test(test_no_fit_is_all_or_nothing),
      cmocka_unit_test(test_growth_and_release),
      cmocka_unit_test(test_cpu_and_inherit),
      cmocka_unit_test(test_unknown_gpu),
      cmocka_unit_test(test_env_and_names),
      cmocka_unit_test(test_groups),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
