/* Unit tests of the scheduler's queue without workers or a server: the
 * bounded queue (overload), priorities, cancel, the rows a batching model
 * takes, failing what is queued, and the deadline sweep. A model with no
 * worker never dispatches, so every job stays queued until the test acts;
 * the deadline sweep runs on a real libuv loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"

#define CONFIG                                                                 \
  "models:\n"                                                                  \
  "  - {name: m, runtime: r, path: p, max_batch_size: 4,"                      \
  " max_queue_size: 3}\n"

typedef struct fixture {
  uv_loop_t loop;
  berth_engine e;
  berth_model m;
  berth_model *ptrs[1];
} fixture;

/* A job that records how it was answered. */
typedef struct test_job {
  berth_job job; /* first */
  int status;
  int done_calls;
  int released;
  int order; /* answer order, from 1 */
  berth_tensor input;
} test_job;

static int answers;

static void on_done(berth_job *job, int status, const char *msg,
                    berth_infer_response *resp) {
  (void)msg;
  (void)resp;
  test_job *t = (test_job *)job;
  t->status = status;
  t->done_calls++;
  t->order = ++answers;
}

static void on_release(berth_job *job) { ((test_job *)job)->released++; }

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  berth_errmsg err;
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->e.loop = &f->loop;
  assert_int_equal(berth_config_parse(CONFIG, strlen(CONFIG), &f->e.cfg, &err),
                   BERTH_OK);
  berth_sched_engine_init(&f->e);
  assert_int_equal(berth_model_init(&f->m, &f->e, &f->e.cfg.models[0], &err),
                   BERTH_OK);
  f->m.state = BERTH_MODEL_READY;
  f->ptrs[0] = &f->m;
  f->e.models = f->ptrs;
  f->e.n_models = 1;
  answers = 0;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  berth_sched_close(&f->m);
  berth_sched_engine_close(&f->e);
  uv_run(&f->loop, UV_RUN_DEFAULT); /* the handles' close callbacks */
  berth_model_free(&f->m);
  berth_config_clear(&f->e.cfg);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f);
  return 0;
}

/* A job of `rows` rows; params: a JSON object text or NULL. */
static void make_job(test_job *t, int64_t rows, const char *params) {
  memset(t, 0, sizeof *t);
  t->input.name = (char *)"x";
  t->input.dtype = BERTH_DT_FP32;
  t->input.ndim = 2;
  t->input.shape[0] = rows;
  t->input.shape[1] = 2;
  t->job.req.inputs = &t->input;
  t->job.req.n_inputs = 1;
  if (params != NULL) {
    json_error_t jerr;
    t->job.req.parameters = json_loads(params, 0, &jerr);
    assert_non_null(t->job.req.parameters);
  }
  t->job.done = on_done;
  t->job.release = on_release;
  t->status = -1;
}

static void drop_job(test_job *t) { json_decref(t->job.req.parameters); }

static void the_queue_is_bounded(void **state) {
  fixture *f = *state;
  test_job j[4];
  berth_errmsg err;
  for (int i = 0; i < 3; i++) {
    make_job(&j[i], 1, NULL);
    assert_int_equal(berth_sched_submit(&f->m, &j[i].job, &err), BERTH_OK);
  }
  assert_int_equal(f->m.q_len, 3);
  assert_int_equal(f->m.q_rows, 3);
  assert_int_equal(f->m.inflight, 3);
  make_job(&j[3], 1, NULL);
  assert_int_equal(berth_sched_submit(&f->m, &j[3].job, &err),
                   BERTH_E_OVERLOAD);
  assert_non_null(strstr(err.msg, "max_queue_size"));
  assert_int_equal(j[3].done_calls, 0); /* refused: no callback */
  berth_sched_fail_queued(&f->m, BERTH_E_SHUTDOWN, "stop");
  for (int i = 0; i < 3; i++) {
    assert_int_equal(j[i].done_calls, 1);
    assert_int_equal(j[i].status, BERTH_E_SHUTDOWN);
    assert_int_equal(j[i].released, 1);
    drop_job(&j[i]);
  }
  drop_job(&j[3]);
  assert_int_equal(f->m.q_len, 0);
  assert_int_equal(f->m.inflight, 0);
}

static void high_priority_goes_first(void **state) {
  fixture *f = *state;
  test_job normal, high;
  berth_errmsg err;
  make_job(&normal, 1, NULL);
  make_job(&high, 1, "{\"priority\": 1}");
  assert_int_equal(berth_sched_submit(&f->m, &normal.job, &err), BERTH_OK);
  assert_int_equal(berth_sched_submit(&f->m, &high.job, &err), BERTH_OK);
  berth_sched_fail_queued(&f->m, BERTH_E_SHUTDOWN, "stop");
  assert_int_equal(high.order, 1);
  assert_int_equal(normal.order, 2);
  drop_job(&normal);
  drop_job(&high);
}

static void bad_priority_is_refused(void **state) {
  fixture *f = *state;
  test_job j;
  berth_errmsg err;
  make_job(&j, 1, "{\"priority\": 7}");
  assert_int_equal(berth_sched_submit(&f->m, &j.job, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "priority"));
  assert_int_equal(f->m.q_len, 0);
  drop_job(&j);
}

static void a_cancelled_job_is_never_answered(void **state) {
  fixture *f = *state;
  test_job a, b;
  berth_errmsg err;
  make_job(&a, 2, NULL);
  make_job(&b, 1, NULL);
  assert_int_equal(berth_sched_submit(&f->m, &a.job, &err), BERTH_OK);
  assert_int_equal(berth_sched_submit(&f->m, &b.job, &err), BERTH_OK);
  assert_true(berth_sched_cancel(&a.job));
  assert_false(berth_sched_cancel(&a.job)); /* no longer queued */
  assert_int_equal(f->m.q_len, 1);
  assert_int_equal(f->m.q_rows, 1);
  berth_sched_fail_queued(&f->m, BERTH_E_SHUTDOWN, "stop");
  assert_int_equal(a.done_calls, 0);
  assert_int_equal(a.released, 0); /* the canceller owns it */
  assert_int_equal(b.done_calls, 1);
  drop_job(&a);
  drop_job(&b);
}

static void rows_beyond_the_declared_batch_are_refused(void **state) {
  fixture *f = *state;
  test_job j;
  berth_errmsg err;
  make_job(&j, 5, NULL);
  assert_int_equal(berth_sched_submit(&f->m, &j.job, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "max_batch_size"));
  drop_job(&j);
  make_job(&j, 4, NULL);
  assert_int_equal(berth_sched_submit(&f->m, &j.job, &err), BERTH_OK);
  assert_int_equal(j.job.rows, 4);
  berth_sched_fail_queued(&f->m, BERTH_E_SHUTDOWN, "stop");
  drop_job(&j);
}

static void a_queued_job_past_its_deadline_gets_504(void **state) {
  fixture *f = *state;
  test_job slow, patient;
  berth_errmsg err;
  make_job(&slow, 1, "{\"timeout\": 1000}"); /* 1 ms */
  make_job(&patient, 1, NULL);
  assert_int_equal(berth_sched_submit(&f->m, &slow.job, &err), BERTH_OK);
  assert_int_equal(berth_sched_submit(&f->m, &patient.job, &err), BERTH_OK);
  /* the sweep runs every millisecond while a job has a deadline */
  for (int i = 0; i < 100000 && slow.done_calls == 0; i++)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(slow.done_calls, 1);
  assert_int_equal(slow.status, BERTH_E_TIMEOUT);
  assert_int_equal(slow.released, 1);
  assert_int_equal(patient.done_calls, 0); /* no deadline: still queued */
  assert_int_equal(f->m.q_len, 1);
  berth_sched_fail_queued(&f->m, BERTH_E_SHUTDOWN, "stop");
  assert_int_equal(patient.status, BERTH_E_SHUTDOWN);
  drop_job(&slow);
  drop_job(&patient);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(the_queue_is_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(high_priority_goes_first, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(bad_priority_is_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(a_cancelled_job_is_never_answered, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          rows_beyond_the_declared_batch_are_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(a_queued_job_past_its_deadline_gets_504,
                                      setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
