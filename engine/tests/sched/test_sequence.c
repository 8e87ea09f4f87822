/* Unit tests of sequence batching's bookkeeping (sched/sequence.c): the
 * parameters read from a request, admission (start, unknown id, bounds),
 * instance pinning, one running request per sequence, end and expiry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sequence.h"

#define MS 1000000ull

static json_t *params(const char *text) {
  json_t *p = json_loads(text, 0, NULL);
  assert_non_null(p);
  return p;
}

static void parses_ids_and_flags(void **state) {
  (void)state;
  berth_errmsg err;
  berth_seq_req r;
  json_t *p = params("{\"sequence_id\": 7, \"sequence_start\": true}");
  assert_int_equal(berth_seq_parse(p, "m", true, &r, &err), BERTH_OK);
  assert_true(r.has && r.start && !r.end);
  assert_int_equal(json_integer_value(r.id), 7);
  json_decref(p);
  p = params("{\"sequence_id\": \"abc\", \"sequence_end\": true, \"k\": 1}");
  assert_int_equal(berth_seq_parse(p, "m", true, &r, &err), BERTH_OK);
  assert_true(r.has && !r.start && r.end);
  berth_seq_strip(p);
  assert_int_equal(json_object_size(p), 1); /* "k" stays */
  json_decref(p);
  /* 0 and "" mean no sequence, as in Triton */
  p = params("{\"sequence_id\": 0}");
  assert_int_equal(berth_seq_parse(p, "m", false, &r, &err), BERTH_OK);
  assert_false(r.has);
  /* a sequence model needs an id */
  assert_int_equal(berth_seq_parse(p, "m", true, &r, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "needs parameter 'sequence_id'"));
  json_decref(p);
  assert_int_equal(berth_seq_parse(NULL, "m", false, &r, &err), BERTH_OK);
  assert_false(r.has);
  /* a model without sequence batching refuses one, naming itself */
  p = params("{\"sequence_id\": 3}");
  assert_int_equal(berth_seq_parse(p, "plain", false, &r, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "model 'plain' has no sequence_batching"));
  json_decref(p);
}

static void refuses_bad_parameters(void **state) {
  (void)state;
  const char *bad[] = {
      "{\"sequence_id\": 1.5}",
      "{\"sequence_id\": -1}",
      "{\"sequence_id\": [1]}",
      "{\"sequence_id\": true}",
      "{\"sequence_id\": 3, \"sequence_start\": 1}",
      "{\"sequence_start\": true}",
      "{\"sequence_id\": 0, \"sequence_end\": true}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    berth_errmsg err;
    berth_seq_req r;
    json_t *p = params(bad[i]);
    assert_int_equal(berth_seq_parse(p, "m", true, &r, &err), BERTH_E_INVALID);
    json_decref(p);
  }
}

/* Admits a request of id (an integer) with the given flags. */
static int admit(berth_seq_table *t, json_int_t id, bool start, bool end,
                 uint64_t now, berth_seq **out) {
  berth_errmsg err;
  json_t *jid = json_integer(id);
  berth_seq_req r = {.has = true, .id = jid, .start = start, .end = end};
  int rc = berth_seq_admit(t, &r, now, "m", out, &err);
  json_decref(jid);
  return rc;
}

static void unknown_without_start_and_bounds(void **state) {
  (void)state;
  berth_seq_table t;
  assert_int_equal(berth_seq_table_init(&t, 2, 4, 2, 0, BERTH_SEQ_OLDEST),
                   BERTH_OK);
  berth_seq *a, *b, *c;
  assert_int_equal(admit(&t, 1, false, false, 0, &a), BERTH_E_INVALID);
  assert_int_equal(admit(&t, 1, true, false, 0, &a), BERTH_OK);
  assert_int_equal(admit(&t, 2, true, false, 0, &b), BERTH_OK);
  /* least loaded instance first */
  assert_int_not_equal(a->instance, b->instance);
  assert_int_equal(admit(&t, 3, true, false, 0, &c), BERTH_E_OVERLOAD);
  /* the same id finds the same entry */
  berth_seq *again;
  assert_int_equal(admit(&t, 1, false, false, 0, &again), BERTH_OK);
  assert_ptr_equal(again, a);
  assert_int_equal(a->jobs, 2);
  berth_seq_job_done(a, 0);
  berth_seq_job_done(a, 0);
  berth_seq_job_cancelled(b);
  berth_seq_table_free(&t);
}

static void direct_bounds_slots_per_instance(void **state) {
  (void)state;
  berth_seq_table t;
  assert_int_equal(berth_seq_table_init(&t, 1, 2, 100, 0, BERTH_SEQ_DIRECT),
                   BERTH_OK);
  berth_seq *a, *b, *c;
  assert_int_equal(admit(&t, 1, true, false, 0, &a), BERTH_OK);
  assert_int_equal(admit(&t, 2, true, false, 0, &b), BERTH_OK);
  assert_int_equal(admit(&t, 3, true, false, 0, &c), BERTH_E_OVERLOAD);
  /* an end frees the slot at once, the entry when its job is done */
  berth_seq *a_end;
  assert_int_equal(admit(&t, 1, false, true, 0, &a_end), BERTH_OK);
  assert_int_equal(t.live, 1);
  assert_int_equal(admit(&t, 3, true, false, 0, &c), BERTH_OK);
  assert_int_equal(admit(&t, 1, false, false, 0, &a_end), BERTH_E_INVALID);
  berth_seq_job_done(a, 0);
  berth_seq_job_done(a, 0); /* freed here (ASan checks) */
  berth_seq_job_done(b, 0);
  berth_seq_job_done(c, 0);
  berth_seq_table_free(&t);
}

static void one_running_request_per_sequence(void **state) {
  (void)state;
  berth_seq_table t;
  assert_int_equal(berth_seq_table_init(&t, 2, 4, 10, 0, BERTH_SEQ_OLDEST),
                   BERTH_OK);
  berth_seq *a;
  assert_int_equal(admit(&t, 5, true, false, 0, &a), BERTH_OK);
  assert_true(berth_seq_eligible(a, a->instance));
  assert_false(berth_seq_eligible(a, 1 - a->instance)); /* pinned */
  berth_seq_running(a);
  assert_false(berth_seq_eligible(a, a->instance));
  berth_seq_job_done(a, 0);
  assert_true(berth_seq_eligible(a, a->instance));
  berth_seq_table_free(&t);
}

static void idle_sequences_expire_into_drop_lists(void **state) {
  (void)state;
  berth_seq_table t;
  assert_int_equal(
      berth_seq_table_init(&t, 1, 4, 10, 100 * MS, BERTH_SEQ_OLDEST), BERTH_OK);
  berth_seq *a, *b;
  assert_int_equal(admit(&t, 1, true, false, 0, &a), BERTH_OK);
  assert_int_equal(admit(&t, 2, true, false, 0, &b), BERTH_OK);
  berth_seq_job_done(a, 10 * MS);
  /* b still has a queued job: never expires under it */
  assert_int_equal(berth_seq_expire(&t, 50 * MS), 0);
  assert_int_equal(berth_seq_expire(&t, 200 * MS), 1);
  assert_int_equal(t.live, 1);
  json_t *drops = berth_seq_take_drops(&t, 0);
  assert_non_null(drops);
  assert_int_equal(json_array_size(drops), 1);
  assert_int_equal(json_integer_value(json_array_get(drops, 0)), 1);
  json_decref(drops);
  assert_null(berth_seq_take_drops(&t, 0));
  /* the expired id is unknown now */
  assert_int_equal(admit(&t, 1, false, false, 300 * MS, &a), BERTH_E_INVALID);
  berth_seq_job_done(b, 300 * MS);
  berth_seq_table_free(&t);
}

static void batch_parameters_carry_entries_and_drops(void **state) {
  (void)state;
  berth_seq_table t;
  assert_int_equal(berth_seq_table_init(&t, 1, 4, 10, MS, BERTH_SEQ_OLDEST),
                   BERTH_OK);
  berth_seq *a, *b;
  assert_int_equal(admit(&t, 1, true, false, 0, &a), BERTH_OK);
  berth_seq_job_done(a, 0);
  assert_int_equal(berth_seq_expire(&t, 10 * MS), 1);
  assert_int_equal(admit(&t, 2, true, true, 10 * MS, &b), BERTH_OK);
  json_t *list = json_array();
  json_array_append_new(list, berth_seq_batch_entry(b, true, true, -1));
  json_t *own = params("{\"k\": 1}");
  json_t *out = NULL;
  assert_int_equal(berth_seq_batch_params(&t, 0, own, list, &out), BERTH_OK);
  char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal(text,
                      "{\"berth_sequence_drop\":[1],\"berth_sequences\":[{"
                      "\"end\":true,\"id\":2,\"rows\":-1,\"start\":true}],"
                      "\"k\":1}");
  free(text);
  json_decref(out);
  /* the drop list went with that batch; own is untouched */
  assert_int_equal(berth_seq_batch_params(&t, 0, NULL, json_array(), &out),
                   BERTH_OK);
  assert_null(json_object_get(out, "berth_sequence_drop"));
  assert_int_equal(json_object_size(own), 1);
  json_decref(out);
  json_decref(own);
  /* out of memory building the list */
  assert_int_equal(berth_seq_batch_params(&t, 0, NULL, NULL, &out),
                   BERTH_E_NOMEM);
  berth_seq_job_done(b, 10 * MS);
  berth_seq_table_free(&t);
}

static void an_orphan_table_goes_with_its_last_job(void **state) {
  (void)state;
  berth_seq_table *t = calloc(1, sizeof *t);
  assert_non_null(t);
  assert_int_equal(berth_seq_table_init(t, 2, 4, 10, 0, BERTH_SEQ_OLDEST),
                   BERTH_OK);
  berth_seq *a, *b;
  assert_int_equal(admit(t, 1, true, false, 0, &a), BERTH_OK);
  assert_int_equal(admit(t, 2, true, false, 0, &b), BERTH_OK);
  berth_seq_running(a);
  berth_seq_table_orphan(t); /* both lost; the jobs still hold them */
  assert_true(a->lost && !a->live && b->lost);
  berth_seq_job_cancelled(b);
  berth_seq_job_done(a, 0); /* frees a, then the table (ASan checks) */
  /* an orphan without jobs goes at once */
  t = calloc(1, sizeof *t);
  assert_non_null(t);
  assert_int_equal(berth_seq_table_init(t, 1, 1, 1, 0, BERTH_SEQ_DIRECT),
                   BERTH_OK);
  berth_seq_table_orphan(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parses_ids_and_flags),
      cmocka_unit_test(refuses_bad_parameters),
      cmocka_unit_test(unknown_without_start_and_bounds),
      cmocka_unit_test(direct_bounds_slots_per_instance),
      cmocka_unit_test(one_running_request_per_sequence),
      cmocka_unit_test(idle_sequences_expire_into_drop_lists),
      cmocka_unit_test(batch_parameters_carry_entries_and_drops),
      cmocka_unit_test(an_orphan_table_goes_with_its_last_job),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
