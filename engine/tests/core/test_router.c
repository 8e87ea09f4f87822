/* Tests for the router's choices and checks without a server: weighted
 * draws within binomial bounds, sticky keys, weight-0 entries, the checks
 * at start (key paths), and changes through berth_router_update. The models
 * are bare structs in the READY state; nothing is queued (shadow copies and
 * counting run end to end in tests/e2e/test_traffic.py). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router_int.h"

#define MODELS                                                                 \
  "models:\n"                                                                  \
  "  - {name: fraud, version: 1, runtime: r, path: p}\n"                       \
  "  - {name: fraud, version: 2, runtime: r, path: p}\n"                       \
  "  - {name: other, runtime: r, path: p}\n"

typedef struct fixture {
  berth_engine e;
  berth_model models[3];
  berth_model *ptrs[3];
} fixture;

/* An engine with the models of MODELS (all READY) and routes_yaml; returns
 * the status of berth_router_init. */
static int setup_engine(fixture *f, const char *routes_yaml,
                        berth_errmsg *err) {
  memset(f, 0, sizeof *f);
  char text[4096];
  snprintf(text, sizeof text, "%s%s", MODELS, routes_yaml);
  int rc = berth_config_parse(text, strlen(text), &f->e.cfg, err);
  assert_int_equal(rc, BERTH_OK);
  for (size_t i = 0; i < 3; i++) {
    f->models[i].engine = &f->e;
    f->models[i].cfg = &f->e.cfg.models[i];
    f->models[i].state = BERTH_MODEL_READY;
    f->models[i].n_ready = 1;
    f->ptrs[i] = &f->models[i];
  }
  f->e.models = f->ptrs;
  f->e.n_models = 3;
  return berth_router_init(&f->e, err);
}

static void teardown_engine(fixture *f) {
  berth_router_free(&f->e);
  berth_config_clear(&f->e.cfg);
}

static berth_route *route(fixture *f, const char *name) {
  berth_route *rt = berth_router_find(&f->e, name, strlen(name));
  assert_non_null(rt);
  return rt;
}

static bool within(size_t count, size_t n, double p) {
  double sd = sqrt((double)n * p * (1 - p));
  return fabs((double)count - (double)n * p) <= 5 * sd;
}

static void test_weighted_draws(void **state) {
  (void)state;
  fixture f;
  berth_errmsg err = {{0}};
  int rc = setup_engine(&f,
                        "routes:\n"
                        "  - name: canary\n"
                        "    split: [{model: fraud, version: 1, weight: 95},\n"
                        "            {model: fraud, version: 2, weight: 5}]\n"
                        "  - name: three\n"
                        "    split: [{model: fraud, version: 1, weight: 0},\n"
                        "            {model: other, weight: 1},\n"
                        "            {model: fraud, version: 2, weight: 0}]\n",
                        &err);
  assert_int_equal(rc, BERTH_OK);
  size_t n = 100000, second = 0;
  berth_route *rt = route(&f, "canary");
  for (size_t i = 0; i < n; i++)
    second += berth_router_pick(rt, NULL, 0) == 1;
  if (!within(second, n, 0.05))
    fail_msg("%zu of %zu draws took the 5%% entry", second, n);
  rt = route(&f, "three");
  for (size_t i = 0; i < 10000; i++)
    assert_int_equal(berth_router_pick(rt, NULL, 0), 1);
  for (int k = 0; k < 1000; k++) {
    char key[32];
    int len = snprintf(key, sizeof key, "user-%d", k);
    assert_int_equal(berth_router_pick(rt, key, (size_t)len), 1);
  }
  /* the primary target answers for the route's metadata */
  berth_route_stat *st = (berth_route_stat *)1;
  assert_ptr_equal(berth_router_resolve(&f.e, "canary", 6, NULL, &st),
                   &f.models[0]);
  assert_null(st);
  assert_null(berth_router_resolve(&f.e, "fraud", 5, NULL, &st));
  teardown_engine(&f);
}

static void test_sticky_keys(void **state) {
  (void)state;
  fixture f;
  berth_errmsg err = {{0}};
  int rc = setup_engine(&f,
                        "routes:\n"
                        "  - name: ab\n"
                        "    sticky_header: x-user\n"
                        "    split: [{model: fraud, weight: 1},\n"
                        "            {model: other, weight: 1}]\n",
                        &err);
  assert_int_equal(rc, BERTH_OK);
  berth_route *rt = route(&f, "ab");
  size_t n = 20000, first = 0;
  for (size_t k = 0; k < n; k++) {
    char key[32];
    int len = snprintf(key, sizeof key, "user-%zu", k);
    size_t i = berth_router_pick(rt, key, (size_t)len);
    for (int again = 0; again < 3; again++)
      assert_int_equal(berth_router_pick(rt, key, (size_t)len), i);
    first += i == 0;
  }
  if (!within(first, n, 0.5))
    fail_msg("%zu of %zu keys on the first entry", first, n);
  teardown_engine(&f);
}

typedef struct init_case {
  const char *routes;
  const char *msg;
} init_case;

static const init_case init_cases[] = {
    {"routes: [{name: r, split: [{model: nope, weight: 1}]}]\n",
     "routes[0].split[0].model: no model named \"nope\""},
    {"routes: [{name: r, split: [{model: fraud, weight: 1},"
     " {model: fraud, version: 9, weight: 1}]}]\n",
     "routes[0].split[1].version: model \"fraud\" has no version \"9\""},
    {"routes: [{name: r, split: [{model: fraud, weight: 0}]}]\n",
     "routes[0].split: the weights must add up to more than 0"},
    {"routes: [{name: r, split: [{model: fraud, weight: 1}]},\n"
     "         {name: r, split: [{model: other, weight: 1}]}]\n",
     "routes[1].name: duplicate route \"r\""},
    {"routes: [{name: r, split: [{model: fraud, weight: 1}],"
     " shadow: {model: fraud, version: 3}}]\n",
     "routes[0].shadow.version: model \"fraud\" has no version \"3\""},
};

static void test_init_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof init_cases / sizeof init_cases[0]; i++) {
    fixture f;
    berth_errmsg err = {{0}};
    int rc = setup_engine(&f, init_cases[i].routes, &err);
    if (rc != BERTH_E_CONFIG || strcmp(err.msg, init_cases[i].msg) != 0)
      fail_msg("case %zu: rc %d\n  got  %s\n  want %s", i, rc, err.msg,
               init_cases[i].msg);
    teardown_engine(&f);
  }
}

static int update(fixture *f, const char *name, const char *json,
                  berth_errmsg *err) {
  json_t *doc = json_loads(json, 0, NULL);
  assert_non_null(doc);
  int rc = berth_router_update(&f->e, name, doc, err);
  json_decref(doc);
  return rc;
}

static void test_updates(void **state) {
  (void)state;
  fixture f;
  berth_errmsg err = {{0}};
  int rc = setup_engine(&f,
                        "routes:\n"
                        "  - name: live\n"
                        "    sticky_header: x-user\n"
                        "    split: [{model: fraud, version: 1, weight: 1}]\n",
                        &err);
  assert_int_equal(rc, BERTH_OK);
  berth_route *rt = route(&f, "live");
  /* only the split changes; the sticky header stays */
  rc = update(&f, "live",
              "{\"split\": [{\"model\": \"fraud\", \"version\": \"1\", "
              "\"weight\": 0}, {\"model\": \"fraud\", \"version\": \"2\", "
              "\"weight\": 3}]}",
              &err);
  assert_int_equal(rc, BERTH_OK);
  assert_ptr_equal(route(&f, "live"), rt); /* the same route, swapped */
  for (int i = 0; i < 1000; i++)
    assert_int_equal(berth_router_pick(rt, NULL, 0), 1);
  json_t *doc = berth_router_route_doc(rt);
  char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal(
      text, "{\"name\":\"live\",\"shadow\":null,\"split\":[{\"model\":"
            "\"fraud\",\"version\":\"1\",\"weight\":0.0},{\"model\":\"fraud\","
            "\"version\":\"2\",\"weight\":3.0}],\"sticky_header\":\"x-user\"}");
  free(text);
  json_decref(doc);
  /* refused changes name the key and change nothing */
  assert_int_equal(update(&f, "live",
                          "{\"split\": [{\"model\": \"x\", "
                          "\"weight\": 1}]}",
                          &err),
                   BERTH_E_CONFIG);
  assert_string_equal(err.msg, "split[0].model: no model named \"x\"");
  assert_int_equal(update(&f, "live",
                          "{\"shadow\": {\"model\": \"other\", "
                          "\"rate\": -1}}",
                          &err),
                   BERTH_E_CONFIG);
  assert_string_equal(err.msg,
                      "shadow.rate: expected a number in 0..1, got -1");
  assert_int_equal(update(&f, "live", "{\"name\": \"other\"}", &err),
                   BERTH_E_CONFIG);
  assert_int_equal(update(&f, "live", "[]", &err), BERTH_E_CONFIG);
  assert_int_equal(rt->cfg.n_split, 2);
  /* null removes */
  assert_int_equal(update(&f, "live",
                          "{\"sticky_header\": null, "
                          "\"shadow\": {\"model\": \"other\"}}",
                          &err),
                   BERTH_OK);
  assert_null(rt->cfg.sticky_header);
  assert_string_equal(rt->cfg.shadow.model, "other");
  assert_true(rt->cfg.shadow.rate == 1.0);
  assert_int_equal(update(&f, "live", "{\"shadow\": null}", &err), BERTH_OK);
  assert_null(rt->cfg.shadow.model);
  /* a new route needs a split */
  assert_int_equal(update(&f, "fresh", "{}", &err), BERTH_E_CONFIG);
  assert_string_equal(err.msg, "split: required");
  assert_int_equal(update(&f, "fresh",
                          "{\"split\": [{\"model\": \"other\", "
                          "\"weight\": 1}]}",
                          &err),
                   BERTH_OK);
  json_t *all = berth_router_index(&f.e);
  assert_int_equal(json_array_size(all), 2);
  json_decref(all);
  teardown_engine(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_weighted_draws),
      cmocka_unit_test(test_sticky_keys),
      cmocka_unit_test(test_init_errors),
      cmocka_unit_test(test_updates),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
