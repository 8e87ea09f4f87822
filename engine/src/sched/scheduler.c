/* Berth engine: the scheduler — one bounded queue per model version with
 * two priority levels, the dynamic batcher, per-request deadlines, and the
 * split of a batch's outputs back to its requests.
 *
 * Batching rules (docs/batching.md):
 *  - A model batches when its max_batch_size is > 0; every input's first
 *    dimension is then the batch dimension. Requests that carry several
 *    rows are packed whole, never split.
 *  - A batch goes to a worker as soon as one is idle and the batcher says
 *    so (batcher.c: full or preferred size, no delay, a lone request, the
 *    oldest request's delay over, or no more requests expected soon).
 *    Submissions are dispatched at the end of the loop iteration, so that
 *    requests read together are batched together.
 *  - Only compatible requests share a batch: same input names, datatypes,
 *    trailing dimensions and request parameters.
 *  - High-priority requests are taken first.
 *  - A request whose deadline passes while queued is answered 504 and
 *    leaves the queue; one whose deadline passes while running is answered
 *    504 at once and its result is dropped when the batch ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "engine.h"
#include "log.h"
#include "sequence.h"

#define SCAN_LIMIT 128 /* queued requests the batcher looks at per batch */

/* ---- queue ---------------------------------------------------------------- */

static void queue_push(berth_model *m, berth_job *j, bool front) {
  struct berth_job_queue *q = &m->queue[j->priority];
  if (front)
    TAILQ_INSERT_HEAD(q, j, link);
  else
    TAILQ_INSERT_TAIL(q, j, link);
  m->q_len++;
  if (j->rows > 0) /* checked at submit (check_rows): cannot overflow */
    (void)berth_rows_add(&m->q_rows, j->rows);
  j->queued = true;
}

static void queue_unlink(berth_model *m, berth_job *j) {
  TAILQ_REMOVE(&m->queue[j->priority], j, link);
  j->queued = false;
  m->q_len--;
  m->q_rows -= j->rows > 0 ? j->rows : 0;
}

static berth_job *queue_first(berth_model *m) {
  for (unsigned p = 0; p < BERTH_PRIORITY_LEVELS; p++)
    if (!TAILQ_EMPTY(&m->queue[p]))
      return TAILQ_FIRST(&m->queue[p]);
  return NULL;
}

/* ---- answering -------------------------------------------------------- */

static void add_stat(berth_duration_stat *s, uint64_t ns) {
  s->count++;
  s->ns += ns;
}

static uint64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void job_answer(berth_job *j, int status, const char *msg,
                       berth_infer_response *resp) {
  if (j->answered)
    return;
  j->answered = true;
  berth_model_stats *st = &j->model->stats;
  uint64_t took = uv_hrtime() - j->received_ns;
  if (status == BERTH_OK) {
    add_stat(&st->success, took);
    st->inference_count++;
    st->last_inference_ms = wall_ms();
  } else {
    add_stat(&st->fail, took);
  }
  berth_job_deliver(j, status, msg, resp, took);
}

void berth_job_deliver(berth_job *j, int status, const char *msg,
                       berth_infer_response *resp, uint64_t took_ns) {
  berth_model *m = j->model;
  if (m->inflight > 0)
    m->inflight--;
  BERTH_OBSERVE(&m->engine->observers, answered, j, status, msg, resp, took_ns);
  j->done(j, status, msg, resp);
}

void berth_job_release_now(berth_job *j) {
  if (j->model != NULL)
    BERTH_OBSERVE(&j->model->engine->observers, released, j);
  if (j->release != NULL)
    j->release(j);
}

static void job_release(berth_job *j) {
  if (j->seq != NULL) {
    berth_seq_job_done(j->seq, uv_hrtime());
    j->seq = NULL;
  }
  if (j->deadline_ns != 0 && j->model->engine->sched.deadline_jobs > 0)
    j->model->engine->sched.deadline_jobs--;
  berth_job_release_now(j);
}

static void job_finish(berth_job *j, int status, const char *msg) {
  job_answer(j, status, msg, NULL);
  job_release(j);
}

/* ---- submit ------------------------------------------------------------- */

static void on_deadline_sweep(uv_timer_t *t);

/* ---- sequences (sequence.h; docs/batching.md) ----------------------- */

static void on_seq_sweep(uv_timer_t *t);

/* Reads sequence_id, sequence_start and sequence_end (sequence.h), admits
 * the request into its sequence and takes the keys out of the parameters
 * (so that requests of different sequences can share a batch). */
static int read_sequence(berth_model *m, berth_job *job, berth_errmsg *err) {
  berth_seq_req r;
  json_t *sb = json_object_get(m->cfg->entry, "sequence_batching");
  int rc =
      berth_seq_parse(job->req.parameters, m->cfg->name, sb != NULL, &r, err);
  if (rc != BERTH_OK || sb == NULL)
    return rc;
  if (m->seqs == NULL)
    m->seqs = berth_seq_table_new(sb, m->n_workers, m->max_batch_size,
                                  m->cfg->seq_max_sequences,
                                  m->cfg->seq_idle_us * 1000u);
  rc = m->seqs != NULL ? berth_seq_admit(m->seqs, &r, job->enqueued_ns,
                                         m->cfg->name, &job->seq, err)
                       : berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc != BERTH_OK)
    return rc;
  job->seq_start = r.start;
  job->seq_end = r.end;
  job->priority = BERTH_PRIORITY_NORMAL; /* one queue keeps their order */
  berth_seq_strip(job->req.parameters);
  if (json_object_size(job->req.parameters) == 0) {
    json_decref(job->req.parameters);
    job->req.parameters = NULL;
  }
  uv_timer_t *sweep = &m->engine->sched.seq_timer;
  uint64_t every_ms = m->seqs->idle_ns / 10000000u; /* a tenth, 1..100 ms */
  every_ms = every_ms < 1 ? 1 : every_ms > 100 ? 100 : every_ms;
  if (m->seqs->idle_ns > 0 && !uv_is_active((uv_handle_t *)sweep))
    uv_timer_start(sweep, on_seq_sweep, every_ms, every_ms);
  return BERTH_OK;
}

static void on_seq_sweep(uv_timer_t *t) {
  berth_engine *e = t->data;
  uint64_t now = uv_hrtime();
  size_t live = 0;
  for (size_t i = 0; i < e->n_models; i++) {
    berth_seq_table *st = e->models[i]->seqs;
    if (st == NULL)
      continue;
    size_t n = berth_seq_expire(st, now);
    if (n > 0)
      berth_logf(BERTH_LOG_INFO, "model '%s': %zu idle sequence(s) expired",
                 e->models[i]->cfg->name, n);
    live += st->live;
  }
  if (live == 0)
    uv_timer_stop(t);
}

/* The worker parameters of a sequence batch: the first job's, with
 * "berth_sequences" (one entry per job, in row order) and
 * "berth_sequence_drop" (ids that expired on this instance). */
static int seq_batch_params(berth_batch *b, size_t inst) {
  json_t *list = json_array();
  for (size_t i = 0; list != NULL && i < b->n_jobs; i++) {
    const berth_job *j = b->jobs[i];
    if (json_array_append_new(list, berth_seq_batch_entry(j->seq, j->seq_start,
                                                          j->seq_end,
                                                          j->rows)) != 0) {
      json_decref(list);
      list = NULL;
    }
  }
  return berth_seq_batch_params(b->model->seqs, inst,
                                b->jobs[0]->req.parameters, list, &b->params);
}

/* Reads the request's "priority" and "timeout" parameters. */
static int read_parameters(berth_model *m, berth_job *job, berth_errmsg *err) {
  json_t *params = job->req.parameters;
  job->priority = BERTH_PRIORITY_NORMAL;
  json_t *p = params ? json_object_get(params, "priority") : NULL;
  if (p != NULL) {
    json_int_t v = json_is_integer(p) ? json_integer_value(p) : -1;
    if (v < 0 || v > 2)
      return berth_errf(err, BERTH_E_INVALID,
                        "parameter 'priority' must be 1 (high) or 2 (normal; "
                        "0 also means normal)");
    if (v == 1)
      job->priority = BERTH_PRIORITY_HIGH;
  }
  uint64_t timeout_us = m->cfg->timeout_us;
  json_t *t = params ? json_object_get(params, "timeout") : NULL;
  if (t != NULL) {
    json_int_t v = json_is_integer(t) ? json_integer_value(t) : -1;
    if (v < 0 || v > 3600ll * 1000000ll)
      return berth_errf(err, BERTH_E_INVALID,
                        "parameter 'timeout' must be microseconds, an integer "
                        "from 0 (none) to 3600000000");
    timeout_us = (uint64_t)v;
  }
  if (job->deadline_ns == 0 && timeout_us > 0)
    job->deadline_ns = job->enqueued_ns + timeout_us * 1000u;
  return BERTH_OK;
}

/* Rows of a request to a batching model: the shared first dimension. */
static int read_rows(berth_model *m, berth_job *job, berth_errmsg *err) {
  job->rows = -1;
  if (m->max_batch_size == 0)
    return BERTH_OK;
  const berth_infer_request *r = &job->req;
  if (r->n_inputs == 0)
    return BERTH_OK;
  for (size_t i = 0; i < r->n_inputs; i++) {
    const berth_tensor *t = &r->inputs[i];
    if (t->ndim == 0)
      return berth_errf(
          err, BERTH_E_INVALID,
          "input '%s' has no batch dimension, but model '%s' "
          "batches (max_batch_size %u): give it shape [rows, ...]",
          t->name, m->cfg->name, m->max_batch_size);
    if (i > 0 && t->shape[0] != r->inputs[0].shape[0])
      return berth_errf(err, BERTH_E_INVALID,
                        "inputs '%s' and '%s' have %lld and %lld rows; the "
                        "first (batch) dimension must be the same for every "
                        "input",
                        r->inputs[0].name, t->name,
                        (long long)r->inputs[0].shape[0],
                        (long long)t->shape[0]);
  }
  int64_t rows = r->inputs[0].shape[0];
  /* A max_batch_size the user declared bounds every request; one the
   * runtime suggested only bounds how many requests are stacked, and a
   * larger request runs alone. */
  bool declared = json_object_get(m->cfg->entry, "max_batch_size") != NULL;
  if (declared && rows > (int64_t)m->max_batch_size)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '%s' has %lld rows (its first dimension), but "
                      "model '%s' takes at most %u per request "
                      "(max_batch_size)",
                      r->inputs[0].name, (long long)rows, m->cfg->name,
                      m->max_batch_size);
  job->rows = rows;
  return BERTH_OK;
}

/* The model's queued-row counter must never overflow, and a zero-row
 * request is answered without the model (berth_sched_dispatch) only when
 * its outputs' shapes are known: refused now otherwise. */
static int check_rows(berth_model *m, berth_job *job, berth_errmsg *err) {
  int64_t sum = m->q_rows;
  if (job->rows > 0 && berth_rows_add(&sum, job->rows) != BERTH_OK)
    return berth_errf(err, BERTH_E_OVERLOAD,
                      "model '%s' has too many rows queued; retry later",
                      m->cfg->name);
  if (job->rows == 0)
    return berth_signature_zero_rows(m, &job->req, NULL, err);
  return BERTH_OK;
}

int berth_sched_submit(berth_model *m, berth_job *job, berth_errmsg *err) {
  if (m->q_len >= m->cfg->max_queue_size)
    return berth_errf(err, BERTH_E_OVERLOAD,
                      "model '%s' has %zu requests queued (max_queue_size); "
                      "retry later",
                      m->cfg->name, m->q_len);
  job->model = m;
  job->enqueued_ns = uv_hrtime();
  if (job->received_ns == 0)
    job->received_ns = job->enqueued_ns;
  job->answered = false;
  int rc = read_parameters(m, job, err);
  if (rc == BERTH_OK)
    rc = read_rows(m, job, err);
  if (rc == BERTH_OK)
    rc = check_rows(m, job, err);
  if (rc == BERTH_OK)
    rc = read_sequence(m, job, err);
  if (rc != BERTH_OK)
    return rc;
  queue_push(m, job, false);
  m->inflight++;
  if (job->deadline_ns != 0) {
    berth_engine *e = m->engine;
    if (e->sched.deadline_jobs++ == 0)
      uv_timer_start(&e->sched.deadline_timer, on_deadline_sweep, 1, 1);
  }
  /* Dispatched at the end of this loop iteration, with whatever else
   * arrived in it (batcher.h). */
  berth_batcher_arrived(m, job->enqueued_ns);
  return BERTH_OK;
}

bool berth_sched_cancel(berth_job *job) {
  if (!job->queued)
    return false;
  queue_unlink(job->model, job);
  if (job->seq != NULL) {
    berth_seq_job_cancelled(job->seq);
    job->seq = NULL;
  }
  if (job->model->inflight > 0)
    job->model->inflight--; /* never answered: the client left */
  if (job->deadline_ns != 0 && job->model->engine->sched.deadline_jobs > 0)
    job->model->engine->sched.deadline_jobs--;
  return true;
}

/* Fails the queued requests of sequences whose state was lost. */
static void fail_lost(berth_model *m) {
  char msg[300];
  snprintf(msg, sizeof msg,
           "the worker of model '%s' that held this sequence's state "
           "exited; start the sequence again (sequence_start true)",
           m->cfg->name);
  for (unsigned p = 0; p < BERTH_PRIORITY_LEVELS; p++) {
    berth_job *j = TAILQ_FIRST(&m->queue[p]);
    while (j != NULL) {
      berth_job *next = TAILQ_NEXT(j, link);
      if (j->seq != NULL && j->seq->lost) {
        queue_unlink(m, j);
        job_finish(j, BERTH_E_WORKER_DIED, msg);
      }
      j = next;
    }
  }
}

void berth_sched_worker_lost(berth_model *m, berth_worker *w) {
  size_t inst = 0;
  while (inst < m->n_workers && m->workers[inst] != w)
    inst++;
  if (m->seqs != NULL && berth_seq_lose_instance(m->seqs, inst) > 0)
    fail_lost(m);
}

void berth_sched_sequences_reset(berth_model *m) {
  berth_seq_table *t = m->seqs;
  if (t == NULL)
    return;
  m->seqs = NULL; /* the next sequence request makes a new table */
  for (size_t i = 0; i < t->instances; i++)
    (void)berth_seq_lose_instance(t, i);
  fail_lost(m);
  berth_seq_table_orphan(t);
}

void berth_sched_fail_queued(berth_model *m, int status, const char *msg) {
  berth_job *j;
  while ((j = queue_first(m)) != NULL) {
    queue_unlink(m, j);
    job_finish(j, status, msg);
  }
}

/* ---- deadlines ---------------------------------------------------------- */

static void sweep_model(berth_model *m, uint64_t now) {
  for (unsigned p = 0; p < BERTH_PRIORITY_LEVELS; p++) {
    berth_job *j = TAILQ_FIRST(&m->queue[p]);
    while (j != NULL) {
      berth_job *next = TAILQ_NEXT(j, link);
      if (j->deadline_ns != 0 && now >= j->deadline_ns) {
        queue_unlink(m, j);
        job_finish(j, BERTH_E_TIMEOUT,
                   "the request timed out while queued (its timeout "
                   "parameter or the model's timeout_us)");
      }
      j = next;
    }
  }
  berth_batch *b;
  LIST_FOREACH(b, &m->running, link) {
    for (size_t i = 0; i < b->n_jobs; i++) {
      berth_job *j = b->jobs[i];
      if (j->deadline_ns != 0 && now >= j->deadline_ns && !j->answered)
        job_answer(j, BERTH_E_TIMEOUT,
                   "the request timed out while the model ran it; its result "
                   "will be dropped",
                   NULL);
    }
  }
}

static void on_deadline_sweep(uv_timer_t *t) {
  berth_engine *e = t->data;
  uint64_t now = uv_hrtime();
  for (size_t i = 0; i < e->n_models; i++)
    sweep_model(e->models[i], now);
  if (e->sched.deadline_jobs == 0)
    uv_timer_stop(t);
}

/* ---- forming batches -------------------------------------------------- */

static const berth_tensor *find_input(const berth_infer_request *r,
                                      const char *name, size_t hint) {
  if (hint < r->n_inputs && strcmp(r->inputs[hint].name, name) == 0)
    return &r->inputs[hint];
  for (size_t i = 0; i < r->n_inputs; i++)
    if (strcmp(r->inputs[i].name, name) == 0)
      return &r->inputs[i];
  return NULL;
}

static bool compatible(const berth_job *a, const berth_job *b) {
  if (a->rows < 0 || b->rows < 0 || a->req.n_inputs != b->req.n_inputs)
    return false;
  for (size_t i = 0; i < a->req.n_inputs; i++) {
    const berth_tensor *x = &a->req.inputs[i];
    const berth_tensor *y = find_input(&b->req, x->name, i);
    if (y == NULL || x->dtype != y->dtype || x->ndim != y->ndim)
      return false;
    for (uint32_t k = 1; k < x->ndim; k++)
      if (x->shape[k] != y->shape[k])
        return false;
  }
  if ((a->req.parameters == NULL) != (b->req.parameters == NULL))
    return false;
  return a->req.parameters == NULL ||
         json_equal(a->req.parameters, b->req.parameters);
}

/* Largest preferred size <= rows, or 0. */
static int64_t preferred_at_most(const berth_model *m, int64_t rows) {
  int64_t best = 0;
  for (uint32_t i = 0; i < m->cfg->n_preferred_batch_sizes; i++) {
    int64_t p = m->cfg->preferred_batch_sizes[i];
    if (p <= rows && p > best)
      best = p;
  }
  return best;
}

/* Concatenates the jobs' inputs along the first dimension (scheduler.h). */
int berth_batch_concat_inputs(berth_batch *b) {
  if (b->inputs != NULL || b->n_jobs < 2)
    return BERTH_OK;
  const berth_infer_request *first = &b->jobs[0]->req;
  b->inputs = calloc(first->n_inputs, sizeof *b->inputs);
  if (b->inputs == NULL)
    return BERTH_E_NOMEM;
  b->n_inputs = first->n_inputs;
  for (size_t i = 0; i < first->n_inputs; i++) {
    const berth_tensor *proto = &first->inputs[i];
    berth_tensor *t = &b->inputs[i];
    size_t total = 0;
    for (size_t k = 0; k < b->n_jobs; k++)
      total += find_input(&b->jobs[k]->req, proto->name, i)->nbytes;
    t->name = strdup(proto->name);
    t->data = malloc(total ? total : 1);
    if (t->name == NULL || t->data == NULL)
      return BERTH_E_NOMEM;
    t->dtype = proto->dtype;
    t->ndim = proto->ndim;
    memcpy(t->shape, proto->shape, sizeof t->shape);
    t->shape[0] = b->rows;
    t->nbytes = total;
    size_t off = 0;
    for (size_t k = 0; k < b->n_jobs; k++) {
      const berth_tensor *src = find_input(&b->jobs[k]->req, proto->name, i);
      if (src->nbytes > 0)
        memcpy(t->data + off, src->data, src->nbytes);
      off += src->nbytes;
    }
  }
  return BERTH_OK;
}

static berth_batch *batch_new(berth_model *m, size_t cap) {
  berth_batch *b = calloc(1, sizeof *b);
  if (b == NULL)
    return NULL;
  b->jobs = calloc(cap, sizeof *b->jobs);
  if (b->jobs == NULL) {
    free(b);
    return NULL;
  }
  b->model = m;
  b->rows = -1;
  return b;
}

static void batch_add(berth_batch *b, berth_job *j) {
  queue_unlink(b->model, j);
  if (j->seq != NULL)
    berth_seq_running(j->seq);
  b->jobs[b->n_jobs++] = j;
  if (j->rows >= 0) {
    if (b->rows < 0)
      b->rows = 0;
    /* cannot fail: take_batch adds only rows that keep it <= max */
    (void)berth_rows_add(&b->rows, j->rows);
  }
}

static bool eligible(const berth_model *m, const berth_job *j, size_t inst) {
  return m->seqs == NULL || j->seq == NULL || berth_seq_eligible(j->seq, inst);
}

/* The oldest queued job that instance inst may run now, or NULL. */
static berth_job *seq_first(berth_model *m, size_t inst) {
  for (unsigned p = 0; p < BERTH_PRIORITY_LEVELS; p++) {
    berth_job *j;
    TAILQ_FOREACH(j, &m->queue[p], link)
    if (eligible(m, j, inst))
      return j;
  }
  return NULL;
}

/* Takes the next batch from the queue, starting with first, for worker
 * instance inst (sequence models: only its sequences, one request each). */
static berth_batch *take_batch(berth_model *m, berth_job *first, size_t inst) {
  /* A decoupled model's responses belong to one request: never batched. */
  size_t cap = first->rows > 0 && m->max_batch_size > 0 && !m->decoupled
                   ? SCAN_LIMIT
                   : 1;
  berth_batch *b = batch_new(m, cap);
  if (b == NULL)
    return NULL;
  batch_add(b, first);
  if (cap > 1) {
    int64_t max = m->max_batch_size;
    for (unsigned p = 0; p < BERTH_PRIORITY_LEVELS && b->rows < max; p++) {
      berth_job *j = TAILQ_FIRST(&m->queue[p]);
      size_t scanned = 0;
      while (j != NULL && b->rows < max && b->n_jobs < cap &&
             scanned++ < SCAN_LIMIT) {
        berth_job *next = TAILQ_NEXT(j, link);
        if (j->rows <= max - b->rows && eligible(m, j, inst) &&
            compatible(first, j))
          batch_add(b, j);
        j = next;
      }
    }
    /* Trim back to a preferred size when one fits. */
    int64_t target = preferred_at_most(m, b->rows);
    while (target > 0 && b->rows > target && b->n_jobs > 1) {
      berth_job *j = b->jobs[--b->n_jobs];
      b->rows -= j->rows;
      if (j->seq != NULL)
        j->seq->busy = false;
      queue_push(m, j, true);
    }
  }
  uint64_t now = uv_hrtime();
  int64_t size = b->rows > 0 ? b->rows : (int64_t)b->n_jobs;
  for (size_t i = 0; i < b->n_jobs; i++) {
    b->jobs[i]->running = true;
    add_stat(&m->stats.queue, now - b->jobs[i]->enqueued_ns);
    BERTH_OBSERVE(&m->engine->observers, dispatched, b->jobs[i], now, size);
  }
  b->formed_ns = now;
  b->id = ++m->engine->next_batch_id;
  /* No concatenation here: the worker's INFER frame is written from the
   * jobs' own buffers (worker_io.c, wp_gather.h). */
  if (m->seqs != NULL && seq_batch_params(b, inst) != BERTH_OK) {
    berth_batch_fail(b, BERTH_E_NOMEM, "out of memory while forming a batch");
    return NULL;
  }
  return b;
}

/* A request with 0 rows: answered from the signature, never by the model
 * (its outputs' shapes were checked at submit). */
static void answer_zero_rows(berth_model *m, berth_job *j) {
  berth_infer_response resp = {0};
  berth_errmsg err;
  queue_unlink(m, j);
  int rc = berth_signature_zero_rows(m, &j->req, &resp, &err);
  if (rc == BERTH_OK) {
    job_answer(j, BERTH_OK, "", &resp);
    job_release(j);
  } else {
    job_finish(j, rc, err.msg);
  }
  berth_infer_response_clear(&resp);
}

static void send_batch(berth_model *m, berth_worker *w, berth_batch *b) {
  LIST_INSERT_HEAD(&m->running, b, link);
  b->listed = true;
  m->stats.execution_count++;
  BERTH_OBSERVE(&m->engine->observers, batch_sent, b);
  if (m->ops->run != NULL)
    m->ops->run(m, b); /* a native backend (core/engine.h) */
  else
    berth_worker_run(w, b);
}

/* Somewhere to run a batch now: an idle worker (*w), or a free slot of a
 * native backend (*w stays NULL). */
static bool idle_slot(berth_model *m, berth_worker **w) {
  *w = NULL;
  if (m->ops->run != NULL)
    return m->ops->can_run(m);
  *w = berth_supervisor_idle_worker(m);
  return *w != NULL;
}

/* A sequence model: each idle instance takes the oldest requests of the
 * sequences pinned to it whose previous request is done. */
static void dispatch_sequences(berth_model *m) {
  if (!berth_batcher_ready(m, uv_hrtime()))
    return;
  for (size_t i = 0; i < m->n_workers && m->q_len > 0; i++) {
    berth_worker *w = berth_supervisor_idle_worker_at(m, i);
    berth_job *first = w != NULL ? seq_first(m, i) : NULL;
    berth_batch *b = first != NULL ? take_batch(m, first, i) : NULL;
    if (b != NULL)
      send_batch(m, w, b);
  }
}

void berth_sched_dispatch(berth_model *m) {
  if (m->seqs != NULL) {
    dispatch_sequences(m);
    return;
  }
  while (m->q_len > 0) {
    berth_job *first = queue_first(m);
    if (first->rows == 0) {
      answer_zero_rows(m, first);
      continue;
    }
    berth_worker *w;
    if (!idle_slot(m, &w) || !berth_batcher_ready(m, uv_hrtime()))
      return;
    berth_batch *b = take_batch(m, first, 0);
    if (b == NULL)
      continue; /* its jobs were failed */
    send_batch(m, w, b);
  }
}

/* ---- ending batches --------------------------------------------------- */

void berth_batch_free(berth_batch *b) {
  if (b == NULL)
    return;
  if (b->listed)
    LIST_REMOVE(b, link);
  berth_tensors_free(b->inputs, b->n_inputs);
  json_decref(b->params);
  free(b->jobs);
  free(b);
}

void berth_batch_fail(berth_batch *b, int status, const char *msg) {
  if (b->model != NULL)
    BERTH_OBSERVE(&b->model->engine->observers, batch_ended, b, uv_hrtime(),
                  false);
  for (size_t i = 0; i < b->n_jobs; i++) {
    berth_job *j = b->jobs[i];
    j->running = false;
    job_finish(j, status, msg);
  }
  berth_batch_free(b);
}

/* Byte offset of element `elem` of a BYTES tensor, walking length prefixes
 * from a known (elem0, off0) point. The tensor passed berth_tensor_check. */
static size_t bytes_offset(const berth_tensor *t, uint64_t elem0, size_t off0,
                           uint64_t elem) {
  size_t off = off0;
  for (uint64_t e = elem0; e < elem; e++) {
    uint32_t len;
    memcpy(&len, t->data + off, 4);
    off += 4 + (size_t)len;
  }
  return off;
}

/* Gives each job its rows of every output (borrowed slices). */
static void split_outputs(berth_batch *b, berth_tensor *outs, size_t n,
                          berth_infer_response *shared) {
  berth_model *m = b->model;
  for (size_t o = 0; o < n; o++) {
    if (outs[o].ndim == 0 || outs[o].shape[0] != b->rows) {
      char msg[600];
      snprintf(msg, sizeof msg,
               "model '%s' returned output '%s' with %lld rows for a batch "
               "of %lld; a batching model must keep the first dimension",
               m->cfg->name, outs[o].name,
               outs[o].ndim ? (long long)outs[o].shape[0] : 0LL,
               (long long)b->rows);
      for (size_t i = 0; i < b->n_jobs; i++) {
        b->jobs[i]->running = false;
        job_finish(b->jobs[i], BERTH_E_MODEL, msg);
      }
      return;
    }
  }
  berth_tensor *mine = calloc(n ? n : 1, sizeof *mine);
  uint64_t *elem_at = calloc(n ? n : 1, sizeof *elem_at);
  size_t *off_at = calloc(n ? n : 1, sizeof *off_at);
  if (mine == NULL || elem_at == NULL || off_at == NULL) {
    free(mine);
    free(elem_at);
    free(off_at);
    for (size_t i = 0; i < b->n_jobs; i++) {
      b->jobs[i]->running = false;
      job_finish(b->jobs[i], BERTH_E_NOMEM, "out of memory splitting a batch");
    }
    return;
  }
  int64_t row = 0;
  for (size_t i = 0; i < b->n_jobs; i++) {
    berth_job *j = b->jobs[i];
    for (size_t o = 0; o < n; o++) {
      const berth_tensor *t = &outs[o];
      uint64_t numel = 0;
      berth_shape_numel(t->shape, t->ndim, &numel);
      uint64_t per_row = b->rows > 0 ? numel / (uint64_t)b->rows : 0;
      mine[o] = *t;
      mine[o].data_borrowed = true;
      mine[o].shape[0] = j->rows;
      size_t start, end;
      if (t->dtype == BERTH_DT_BYTES) {
        start = bytes_offset(t, elem_at[o], off_at[o], (uint64_t)row * per_row);
        end = bytes_offset(t, (uint64_t)row * per_row, start,
                           (uint64_t)(row + j->rows) * per_row);
        elem_at[o] = (uint64_t)(row + j->rows) * per_row;
        off_at[o] = end;
      } else {
        size_t row_bytes = b->rows > 0 ? t->nbytes / (size_t)b->rows : 0;
        start = (size_t)row * row_bytes;
        end = start + (size_t)j->rows * row_bytes;
      }
      mine[o].data = t->data + start;
      mine[o].nbytes = end - start;
    }
    berth_infer_response resp = {
        .outputs = mine, .n_outputs = n, .parameters = shared->parameters};
    row += j->rows; /* before release: it frees the job */
    j->running = false;
    job_answer(j, BERTH_OK, "", &resp);
    job_release(j);
  }
  free(mine);
  free(elem_at);
  free(off_at);
}

void berth_batch_complete(berth_batch *b, berth_tensor *outs, size_t n,
                          const char *params, size_t params_len) {
  berth_model *m = b->model;
  uint64_t t0 = uv_hrtime();
  BERTH_OBSERVE(&m->engine->observers, batch_ended, b, t0, true);
  add_stat(&m->stats.compute_input, b->sent_ns - b->formed_ns);
  add_stat(&m->stats.compute_infer, t0 - b->sent_ns);
  berth_batcher_served(m, t0 - b->sent_ns);
  berth_infer_response resp = {
      .outputs = outs, .n_outputs = n, .parameters = NULL};
  if (params_len > 2) {
    json_error_t jerr;
    resp.parameters = json_loadb(params, params_len, 0, &jerr);
  }
  if (b->n_jobs == 1) {
    berth_job *j = b->jobs[0];
    j->running = false;
    job_answer(j, BERTH_OK, "", &resp);
    job_release(j);
  } else {
    split_outputs(b, outs, n, &resp);
  }
  json_decref(resp.parameters);
  add_stat(&m->stats.compute_output, uv_hrtime() - t0);
  berth_batch_free(b);
}

/* ---- setup ---------------------------------------------------------------- */

void berth_sched_init(berth_model *m) {
  for (unsigned p = 0; p < BERTH_PRIORITY_LEVELS; p++)
    TAILQ_INIT(&m->queue[p]);
  LIST_INIT(&m->running);
  berth_batcher_init(m);
}

static void timer_closed(uv_handle_t *h) { (void)h; }

void berth_sched_close(berth_model *m) { berth_batcher_close(m); }

void berth_sched_engine_init(berth_engine *e) {
  uv_timer_init(e->loop, &e->sched.deadline_timer);
  e->sched.deadline_timer.data = e;
  uv_timer_init(e->loop, &e->sched.seq_timer);
  e->sched.seq_timer.data = e;
}

void berth_sched_engine_close(berth_engine *e) {
  uv_close((uv_handle_t *)&e->sched.deadline_timer, timer_closed);
  uv_close((uv_handle_t *)&e->sched.seq_timer, timer_closed);
}
