/* Berth engine: one bounded FIFO queue per model version, and the hand-off
 * of batches to idle workers.
 *
 * Today a batch holds one job (no dynamic batching yet); the batch type and
 * the take-from-queue step are where the dynamic batcher slots in: it will
 * take up to max_batch_size jobs, wait up to max_queue_delay_us counted from
 * the oldest, and never wait while a worker is idle and nothing else is
 * queued. */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"

static void queue_push(berth_model *m, berth_job *j) {
  j->prev = m->q_tail;
  j->next = NULL;
  if (m->q_tail != NULL)
    m->q_tail->next = j;
  else
    m->q_head = j;
  m->q_tail = j;
  m->q_len++;
  j->queued = true;
}

static void queue_unlink(berth_model *m, berth_job *j) {
  if (j->prev != NULL)
    j->prev->next = j->next;
  else
    m->q_head = j->next;
  if (j->next != NULL)
    j->next->prev = j->prev;
  else
    m->q_tail = j->prev;
  j->prev = j->next = NULL;
  j->queued = false;
  m->q_len--;
}

int berth_sched_submit(berth_model *m, berth_job *job, berth_errmsg *err) {
  if (m->q_len >= m->cfg->max_queue_size)
    return berth_errf(err, BERTH_E_OVERLOAD,
                      "model '%s' has %zu requests queued (max_queue_size); "
                      "retry later", m->cfg->name, m->q_len);
  job->model = m;
  job->enqueued_ns = uv_hrtime();
  queue_push(m, job);
  berth_sched_dispatch(m);
  return BERTH_OK;
}

bool berth_sched_cancel(berth_job *job) {
  if (!job->queued)
    return false;
  queue_unlink(job->model, job);
  return true;
}

/* Takes the next batch from the queue: one job for now. */
static berth_batch *take_batch(berth_model *m) {
  berth_batch *b = calloc(1, sizeof *b);
  if (b == NULL)
    return NULL;
  b->jobs = calloc(1, sizeof *b->jobs);
  if (b->jobs == NULL) {
    free(b);
    return NULL;
  }
  berth_job *j = m->q_head;
  queue_unlink(m, j);
  j->running = true;
  b->jobs[0] = j;
  b->n_jobs = 1;
  b->id = ++m->engine->next_batch_id;
  return b;
}

void berth_sched_dispatch(berth_model *m) {
  while (m->q_head != NULL) {
    berth_worker *w = berth_supervisor_idle_worker(m);
    if (w == NULL)
      return;
    berth_batch *b = take_batch(m);
    if (b == NULL) {
      /* Out of memory: fail the oldest job rather than spin. */
      berth_job *j = m->q_head;
      queue_unlink(m, j);
      j->done(j, BERTH_E_NOMEM, "out of memory while forming a batch", NULL);
      continue;
    }
    berth_worker_run(w, b);
  }
}

void berth_batch_free(berth_batch *b) {
  if (b == NULL)
    return;
  free(b->jobs);
  free(b);
}

void berth_batch_fail(berth_batch *b, int status, const char *msg) {
  for (size_t i = 0; i < b->n_jobs; i++) {
    berth_job *j = b->jobs[i];
    j->running = false;
    j->done(j, status, msg, NULL);
  }
  berth_batch_free(b);
}

void berth_batch_complete(berth_batch *b, berth_tensor *outs, size_t n,
                          const char *params, size_t params_len) {
  /* One job per batch: the outputs are that job's, borrowed from the
   * worker's frame for the duration of the callback. */
  berth_infer_response resp = {.outputs = outs, .n_outputs = n,
                               .parameters = NULL};
  if (params_len > 2) {
    json_error_t jerr;
    resp.parameters = json_loadb(params, params_len, 0, &jerr);
  }
  for (size_t i = 0; i < b->n_jobs; i++) {
    berth_job *j = b->jobs[i];
    j->running = false;
    j->done(j, BERTH_OK, "", &resp);
  }
  json_decref(resp.parameters);
  berth_batch_free(b);
}
