/* Unit tests for the gateway's pure rules (gw_set.h): replica URLs, the
 * atomic replacement of the set, the health and ejection state machine and
 * the power-of-two-choices pick. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw_set.h"

static int url_ok(const char *url, bool remote, char *host, uint16_t *port) {
  berth_errmsg err;
  return berth_gw_parse_url(url, remote, host, 64, port, &err);
}

static void urls(void **state) {
  (void)state;
  char host[64];
  uint16_t port = 0;
  assert_int_equal(url_ok("http://127.0.0.1:8080", false, host, &port),
                   BERTH_OK);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 8080);
  assert_int_equal(url_ok("http://127.0.0.2:1/", false, host, &port), BERTH_OK);
  assert_int_equal(url_ok("http://[::1]:9000", false, host, &port), BERTH_OK);
  assert_string_equal(host, "::1");
  assert_int_equal(port, 9000);
  /* beyond loopback: only when allowed */
  assert_int_equal(url_ok("http://10.0.0.5:80", false, host, &port),
                   BERTH_E_INVALID);
  assert_int_equal(url_ok("http://10.0.0.5:80", true, host, &port), BERTH_OK);
  assert_int_equal(url_ok("http://[2001:db8::1]:80", false, host, &port),
                   BERTH_E_INVALID);
  /* malformed */
  const char *bad[] = {"",
                       "127.0.0.1:80",
                       "https://127.0.0.1:80",
                       "http://127.0.0.1",
                       "http://127.0.0.1:",
                       "http://127.0.0.1:0",
                       "http://127.0.0.1:65536",
                       "http://127.0.0.1:80/v2",
                       "http://localhost:80",
                       "http://127.0.0.1:80x",
                       "http://[::1:80",
                       "http://:80",
                       "http://127.0.0.1.evil.example:80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(url_ok(bad[i], true, host, &port), BERTH_E_INVALID);
  berth_errmsg err;
  assert_int_equal(berth_gw_parse_url(NULL, true, host, 64, &port, &err),
                   BERTH_E_INVALID);
}

static void replace_keeps_and_drains(void **state) {
  (void)state;
  berth_gw_set s = {0};
  berth_errmsg err;
  berth_gw_spec two[] = {{"a", "http://127.0.0.1:1001"},
                         {"b", "http://127.0.0.1:1002"}};
  assert_int_equal(berth_gw_set_replace(&s, two, 2, false, &err), BERTH_OK);
  assert_int_equal(s.n_active, 2);
  assert_int_equal(s.active[0]->state, BERTH_GW_PROBING);
  berth_gw_replica *a = s.active[0], *b = s.active[1];
  a->state = BERTH_GW_HEALTHY;
  a->requests = 7;
  b->in_flight = 2;
  /* a kept (same name and URL), b removed, c new */
  berth_gw_spec next[] = {{"c", "http://127.0.0.1:1003"},
                          {"a", "http://127.0.0.1:1001"}};
  assert_int_equal(berth_gw_set_replace(&s, next, 2, false, &err), BERTH_OK);
  assert_int_equal(s.n_active, 2);
  assert_ptr_equal(s.active[1], a);
  assert_int_equal(a->state, BERTH_GW_HEALTHY);
  assert_int_equal(a->requests, 7);
  assert_string_equal(s.active[0]->name, "c");
  assert_int_equal(s.active[0]->state, BERTH_GW_PROBING);
  assert_int_equal(s.n_draining, 1);
  assert_ptr_equal(s.draining[0], b);
  assert_int_equal(b->state, BERTH_GW_DRAINING);
  assert_ptr_equal(berth_gw_set_find(&s, "a"), a);
  assert_null(berth_gw_set_find(&s, "b"));
  /* b has requests in flight: not freed yet */
  assert_int_equal(berth_gw_set_reap(&s), 0);
  b->in_flight = 0;
  assert_int_equal(berth_gw_set_reap(&s), 1);
  assert_int_equal(s.n_draining, 0);
  /* same name, another URL: a new replica, the old one drains */
  berth_gw_spec moved[] = {{"a", "http://127.0.0.1:2001"}};
  assert_int_equal(berth_gw_set_replace(&s, moved, 1, false, &err), BERTH_OK);
  assert_int_equal(s.n_active, 1);
  assert_ptr_not_equal(s.active[0], a);
  assert_int_equal(s.active[0]->port, 2001);
  assert_int_equal(s.n_draining, 2);
  /* the empty set is allowed */
  assert_int_equal(berth_gw_set_replace(&s, NULL, 0, false, &err), BERTH_OK);
  assert_int_equal(s.n_active, 0);
  berth_gw_set_free(&s);
}

static void replace_is_all_or_nothing(void **state) {
  (void)state;
  berth_gw_set s = {0};
  berth_errmsg err;
  berth_gw_spec one[] = {{"a", "http://127.0.0.1:1001"}};
  assert_int_equal(berth_gw_set_replace(&s, one, 1, false, &err), BERTH_OK);
  berth_gw_replica *a = s.active[0];
  berth_gw_spec dup[] = {{"x", "http://127.0.0.1:1"},
                         {"x", "http://127.0.0.1:2"}};
  assert_int_equal(berth_gw_set_replace(&s, dup, 2, false, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "duplicate"));
  berth_gw_spec remote[] = {{"x", "http://127.0.0.1:1"},
                            {"y", "http://192.0.2.1:80"}};
  assert_int_equal(berth_gw_set_replace(&s, remote, 2, false, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "replicas[1].url"));
  assert_non_null(strstr(err.msg, "loopback"));
  berth_gw_spec badname[] = {{"a/b", "http://127.0.0.1:1"}};
  assert_int_equal(berth_gw_set_replace(&s, badname, 1, false, &err),
                   BERTH_E_INVALID);
  berth_gw_spec noname[] = {{"", "http://127.0.0.1:1"}};
  assert_int_equal(berth_gw_set_replace(&s, noname, 1, false, &err),
                   BERTH_E_INVALID);
  /* nothing changed */
  assert_int_equal(s.n_active, 1);
  assert_ptr_equal(s.active[0], a);
  assert_int_equal(s.n_draining, 0);
  berth_gw_set_free(&s);
}

static void state_machine(void **state) {
  (void)state;
  berth_gw_policy p = {.eject_after_failures = 3, .eject_for_ms = 5000};
  berth_gw_replica r;
  memset(&r, 0, sizeof r);
  r.state = BERTH_GW_PROBING;
  /* probing: failures count, no traffic, never "ejected" */
  assert_false(berth_gw_on_health(&r, false, &p, 0));
  assert_false(berth_gw_on_health(&r, false, &p, 0));
  assert_false(berth_gw_on_health(&r, false, &p, 0));
  assert_int_equal(r.state, BERTH_GW_PROBING);
  assert_false(berth_gw_eligible(&r));
  assert_int_equal(r.failures, 3);
  /* a passing check makes it healthy */
  assert_false(berth_gw_on_health(&r, true, &p, 10));
  assert_int_equal(r.state, BERTH_GW_HEALTHY);
  assert_true(berth_gw_eligible(&r));
  assert_int_equal(r.consecutive_failures, 0);
  /* two failures, a success: the run starts over */
  assert_false(berth_gw_on_failure(&r, &p, 20));
  assert_false(berth_gw_on_failure(&r, &p, 21));
  berth_gw_on_success(&r);
  assert_false(berth_gw_on_failure(&r, &p, 22));
  assert_false(berth_gw_on_failure(&r, &p, 23));
  assert_int_equal(r.state, BERTH_GW_HEALTHY);
  /* the third in a row ejects it for eject_for_ms */
  assert_true(berth_gw_on_failure(&r, &p, 1000));
  assert_int_equal(r.state, BERTH_GW_EJECTED);
  assert_int_equal(r.ejections, 1);
  assert_int_equal(r.ejected_until_ms, 6000);
  assert_false(berth_gw_eligible(&r));
  /* more failures while ejected: no second ejection */
  assert_false(berth_gw_on_failure(&r, &p, 1001));
  assert_int_equal(r.ejections, 1);
  /* a passing check before the time is over changes nothing */
  assert_false(berth_gw_on_health(&r, true, &p, 5999));
  assert_int_equal(r.state, BERTH_GW_EJECTED);
  /* after it: a failing check ejects it again, a passing one restores */
  assert_true(berth_gw_on_health(&r, false, &p, 6000));
  assert_int_equal(r.ejections, 2);
  assert_int_equal(r.ejected_until_ms, 11000);
  assert_false(berth_gw_on_health(&r, true, &p, 11000));
  assert_int_equal(r.state, BERTH_GW_HEALTHY);
  assert_true(berth_gw_eligible(&r));
  /* a healthy replica's failing health checks count as failures */
  assert_false(berth_gw_on_health(&r, false, &p, 12000));
  assert_false(berth_gw_on_health(&r, false, &p, 12001));
  assert_true(berth_gw_on_health(&r, false, &p, 12002));
  assert_int_equal(r.state, BERTH_GW_EJECTED);
  /* draining replicas ignore checks */
  r.state = BERTH_GW_DRAINING;
  assert_false(berth_gw_on_health(&r, true, &p, 99999));
  assert_int_equal(r.state, BERTH_GW_DRAINING);
  assert_false(berth_gw_eligible(&r));
  assert_string_equal(berth_gw_state_name(BERTH_GW_PROBING), "probing");
  assert_string_equal(berth_gw_state_name(BERTH_GW_HEALTHY), "healthy");
  assert_string_equal(berth_gw_state_name(BERTH_GW_EJECTED), "ejected");
  assert_string_equal(berth_gw_state_name(BERTH_GW_DRAINING), "draining");
}

/* A scripted "random" source: returns the next number of the script. */
typedef struct script {
  const uint32_t *v;
  size_t n, i;
} script;

static uint32_t scripted(void *ctx) {
  script *s = ctx;
  return s->v[s->i++ % s->n];
}

static uint64_t xs = 88172645463325252ull;
static uint32_t xorshift(void *ctx) {
  (void)ctx;
  xs ^= xs << 13;
  xs ^= xs >> 7;
  xs ^= xs << 17;
  return (uint32_t)(xs >> 11);
}

static void pick(void **state) {
  (void)state;
  berth_gw_set s = {0};
  berth_errmsg err;
  berth_gw_spec three[] = {{"a", "http://127.0.0.1:1"},
                           {"b", "http://127.0.0.1:2"},
                           {"c", "http://127.0.0.1:3"}};
  assert_int_equal(berth_gw_set_replace(&s, three, 3, false, &err), BERTH_OK);
  berth_gw_replica *a = s.active[0], *b = s.active[1], *c = s.active[2];
  script sc = {(const uint32_t[]){0, 0}, 2, 0};
  /* none healthy: nothing to pick */
  assert_null(berth_gw_pick(&s, NULL, 0, scripted, &sc));
  a->state = b->state = c->state = BERTH_GW_HEALTHY;
  /* draws a (0) and then b (0 of the two others): fewer in flight wins */
  a->in_flight = 5;
  b->in_flight = 1;
  sc.i = 0;
  assert_ptr_equal(berth_gw_pick(&s, NULL, 0, scripted, &sc), b);
  b->in_flight = 9;
  sc.i = 0;
  assert_ptr_equal(berth_gw_pick(&s, NULL, 0, scripted, &sc), a);
  /* the two drawn are always distinct */
  script same = {(const uint32_t[]){2, 2}, 2, 0};
  c->in_flight = 100;
  assert_ptr_not_equal(berth_gw_pick(&s, NULL, 0, scripted, &same), c);
  /* excluded replicas (already tried) and unhealthy ones are skipped */
  berth_gw_replica *ex[] = {a};
  b->state = BERTH_GW_EJECTED;
  assert_ptr_equal(berth_gw_pick(&s, ex, 1, scripted, &sc), c);
  berth_gw_replica *ex2[] = {a, c};
  assert_null(berth_gw_pick(&s, ex2, 2, scripted, &sc));
  assert_int_equal(berth_gw_healthy_count(&s), 2);
  /* with random draws, the least loaded is chosen far more often and the
   * most loaded never (it loses every pair it is in) */
  b->state = BERTH_GW_HEALTHY;
  a->in_flight = 0;
  b->in_flight = 5;
  c->in_flight = 10;
  size_t n[3] = {0, 0, 0};
  for (int i = 0; i < 3000; i++) {
    berth_gw_replica *r = berth_gw_pick(&s, NULL, 0, xorshift, NULL);
    n[r == a ? 0 : r == b ? 1 : 2]++;
  }
  assert_int_equal(n[2], 0);
  assert_true(n[0] > n[1]);
  assert_true(n[1] > 0);
  berth_gw_set_free(&s);
}

static void histogram(void **state) {
  (void)state;
  berth_gw_hist h;
  memset(&h, 0, sizeof h);
  berth_gw_hist_observe(&h, 0.0001);
  berth_gw_hist_observe(&h, 0.003);
  berth_gw_hist_observe(&h, 100);
  assert_int_equal(h.count, 3);
  assert_int_equal(h.buckets[0], 1);
  assert_int_equal(h.buckets[3], 1); /* <= 0.005 */
  uint64_t in_buckets = 0;
  for (size_t i = 0; i < BERTH_GW_HIST_BUCKETS; i++)
    in_buckets += h.buckets[i];
  assert_int_equal(in_buckets, 2); /* 100 s only in +Inf */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(urls),
      cmocka_unit_test(replace_keeps_and_drains),
      cmocka_unit_test(replace_is_all_or_nothing),
      cmocka_unit_test(state_machine),
      cmocka_unit_test(pick),
      cmocka_unit_test(histogram),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
