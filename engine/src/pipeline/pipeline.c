/* Berth engine: running pipelines (pipeline.h).
 *
 * A request to a pipeline is one run. The run starts on the next loop
 * turn (so that berth_pipeline_submit never calls the job's callbacks
 * before the frontend has finished submitting), picks the model of every
 * switch step, then starts each step whose inputs are all available as an
 * internal berth_job on that step's model: the scheduler batches it with
 * the model's other traffic. A step's outputs are copied into the run (raw
 * tensors), its job is released, and the steps that read them start; steps
 * that read the same inputs run at the same time. When every step is done
 * the pipeline's outputs (borrowed from the run) answer the outer job
 * through its own done callback, so each frontend encodes them as for a
 * model. The first failure answers the outer job with a message naming the
 * step; queued steps are cancelled and running ones are ignored. The outer
 * job is released (its request may go) only when no step job refers to its
 * tensors any more. */
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "engine.h"

struct berth_pipeline {
  berth_model model;               /* the stand-in: name, signature, stats */
  berth_model_config cfg;          /* its config (name, version "1", entry) */
  const berth_pipeline_config *pc; /* borrowed from engine->cfg */
  bool sig_done;                   /* the signature is derived completely */
};

typedef enum { ST_WAITING = 0, ST_RUNNING, ST_DONE } step_state;

typedef struct pipe_run pipe_run;

typedef struct pipe_step_job {
  berth_job job; /* first: the job pointer is this pointer */
  pipe_run *run;
  size_t step;
} pipe_step_job;

struct pipe_run {
  berth_pipeline *p;
  berth_engine *e;
  berth_job *outer;     /* the request; released in run_finish */
  uint64_t deadline_ns; /* the outer request's, 0 = none */
  uint64_t started_ns;  /* its steps began (statistics) */
  uv_timer_t start;     /* starts the run on the next loop turn;
                                   closing it frees the run */
  const char *model[BERTH_PIPE_MAX_STEPS];   /* chosen per step (borrowed) */
  const char *version[BERTH_PIPE_MAX_STEPS]; /* NULL = newest ready */
  unsigned char state[BERTH_PIPE_MAX_STEPS];
  berth_tensor *outs[BERTH_PIPE_MAX_STEPS]; /* owned copies */
  size_t n_outs[BERTH_PIPE_MAX_STEPS];
  pipe_step_job *live[BERTH_PIPE_MAX_STEPS]; /* submitted, not released */
  size_t pending;                            /* step jobs not yet released */
  size_t n_done;
  bool answered, failed, advancing, again, finished;
};

/* ---- the stand-in model -------------------------------------------------- */

static void specs_clear(berth_tensor_spec *s, size_t n) {
  if (s == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free(s[i].name);
  free(s);
}

static berth_model *step_main_model(berth_engine *e, const berth_pipe_step *s) {
  if (s->model != NULL || s->sw->dflt == NULL)
    return berth_pipe_step_model(e, s, 0);
  return berth_pipe_step_model(e, s, s->sw->n_cases);
}

static const berth_tensor_spec *spec_in(const berth_tensor_spec *s, size_t n,
                                        const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s[i].name, name) == 0)
      return &s[i];
  return NULL;
}

static int spec_push(berth_tensor_spec **arr, size_t *n,
                     const berth_tensor_spec *src, const char *name) {
  if (spec_in(*arr, *n, name) != NULL)
    return BERTH_OK;
  berth_tensor_spec *na = realloc(*arr, (*n + 1) * sizeof *na);
  if (na == NULL)
    return BERTH_E_NOMEM;
  *arr = na;
  na[*n] = *src;
  na[*n].name = strdup(name);
  if (na[*n].name == NULL)
    return BERTH_E_NOMEM;
  (*n)++;
  return BERTH_OK;
}

/* The spec of tensor `t` produced by step `step` (-1: request input). */
static const berth_tensor_spec *source_spec(berth_pipeline *p, int step,
                                            const char *t) {
  berth_engine *e = p->model.engine;
  if (step < 0)
    return spec_in(p->model.inputs, p->model.n_inputs, t);
  berth_model *m = step_main_model(e, &p->pc->steps[step]);
  return m != NULL ? spec_in(m->outputs, m->n_outputs, t) : NULL;
}

/* Derives the stand-in's signature from the declared inputs and the step
 * models' signatures, until it is complete. */
static void refresh_signature(berth_pipeline *p) {
  if (p->sig_done)
    return;
  berth_engine *e = p->model.engine;
  const berth_pipeline_config *pc = p->pc;
  berth_model *pm = &p->model;
  bool complete = true;
  berth_tensor_spec *ins = NULL, *outs = NULL;
  size_t n_ins = 0, n_outs = 0;
  int rc = BERTH_OK;
  if (pc->inputs_declared) {
    for (size_t i = 0; rc == BERTH_OK && i < pc->n_inputs; i++)
      rc = spec_push(&ins, &n_ins, &pc->inputs[i], pc->inputs[i].name);
  } else {
    for (size_t i = 0; rc == BERTH_OK && i < pc->n_steps; i++) {
      const berth_pipe_step *s = &pc->steps[i];
      bool reads_request = s->wired ? false : s->from < 0;
      for (size_t k = 0; s->wired && k < s->n_inputs; k++)
        reads_request = reads_request || s->inputs[k].step < 0;
      if (!reads_request)
        continue;
      berth_model *m = step_main_model(e, s);
      if (m == NULL || !m->signature_known) {
        complete = false;
        continue;
      }
      if (!s->wired) {
        for (size_t k = 0; rc == BERTH_OK && k < m->n_inputs; k++)
          rc = spec_push(&ins, &n_ins, &m->inputs[k], m->inputs[k].name);
        continue;
      }
      for (size_t k = 0; rc == BERTH_OK && k < s->n_inputs; k++) {
        if (s->inputs[k].step >= 0)
          continue;
        const berth_tensor_spec *sp =
            spec_in(m->inputs, m->n_inputs, s->inputs[k].name);
        if (sp == NULL)
          complete = false;
        else
          rc = spec_push(&ins, &n_ins, sp, s->inputs[k].tensor);
      }
    }
  }
  specs_clear(pm->inputs, pm->n_inputs);
  pm->inputs = ins;
  pm->n_inputs = n_ins;
  pm->signature_known = rc == BERTH_OK && complete && n_ins > 0;
  /* outputs */
  if (pc->n_outputs > 0) {
    for (size_t k = 0; rc == BERTH_OK && k < pc->n_outputs; k++) {
      const berth_pipe_wire *w = &pc->outputs[k];
      const berth_tensor_spec *sp = source_spec(p, w->step, w->tensor);
      if (sp == NULL)
        complete = false;
      else
        rc = spec_push(&outs, &n_outs, sp, w->name);
    }
  } else {
    berth_model *m = step_main_model(e, &pc->steps[pc->n_steps - 1]);
    if (m == NULL || m->n_outputs == 0)
      complete = false;
    for (size_t k = 0; m != NULL && rc == BERTH_OK && k < m->n_outputs; k++)
      rc = spec_push(&outs, &n_outs, &m->outputs[k], m->outputs[k].name);
  }
  specs_clear(pm->outputs, pm->n_outputs);
  /* an incomplete list would refuse outputs the pipeline does give */
  if (rc != BERTH_OK || !complete) {
    for (size_t k = 0; k < n_outs; k++)
      free(outs[k].name);
    free(outs);
    outs = NULL;
    n_outs = 0;
  }
  pm->outputs = outs;
  pm->n_outputs = n_outs;
  p->sig_done = rc == BERTH_OK && complete;
}

static void refresh(berth_model *m) { refresh_signature(m->pipeline); }

static bool ready(const berth_model *m) {
  return berth_pipeline_ready(m->engine, m->pipeline->pc);
}

static const char *state(const berth_model *m, char *reason, size_t cap) {
  return berth_pipeline_state(m->engine, m->pipeline->pc, reason, cap);
}

/* A pipeline is a composite model (engine.h): these are its operations. */
static const berth_model_ops pipeline_ops = {.kind = "pipeline",
                                             .composite = true,
                                             .submit = berth_pipeline_submit,
                                             .ready = ready,
                                             .state = state,
                                             .refresh = refresh};

int berth_pipelines_init(berth_engine *e, berth_errmsg *err) {
  size_t n = e->cfg.n_pipelines;
  if (n == 0)
    return BERTH_OK;
  e->pipelines = calloc(n, sizeof *e->pipelines);
  if (e->pipelines == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    berth_pipeline *p = calloc(1, sizeof *p);
    if (p == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    e->pipelines[i] = p;
    e->n_pipelines = i + 1;
    p->pc = &e->cfg.pipelines[i];
    p->cfg.name = p->pc->name; /* borrowed: never cleared */
    p->cfg.version = (char *)(uintptr_t) "1";
    p->cfg.runtime = (char *)(uintptr_t) "pipeline";
    p->cfg.platform = (char *)(uintptr_t) "pipeline";
    p->cfg.max_queue_size = 1024;
    p->cfg.entry = p->pc->entry;
    berth_model *m = &p->model;
    m->engine = e;
    m->ops = &pipeline_ops;
    m->cfg = &p->cfg;
    m->pipeline = p;
    m->platform = strdup("pipeline");
    if (m->platform == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    m->state = BERTH_MODEL_READY;
    m->instances = 1;
    berth_model_metrics_init(&m->metrics);
    int rc = berth_engine_add_composite(e, m, err);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

void berth_pipelines_free(berth_engine *e) {
  for (size_t i = 0; i < e->n_pipelines; i++) {
    berth_pipeline *p = e->pipelines[i];
    free(p->model.platform);
    specs_clear(p->model.inputs, p->model.n_inputs);
    specs_clear(p->model.outputs, p->model.n_outputs);
    free(p);
  }
  free(e->pipelines);
  e->pipelines = NULL;
  e->n_pipelines = 0;
}

berth_model *berth_pipeline_find(berth_engine *e, const char *name,
                                 size_t len) {
  for (size_t i = 0; i < e->n_pipelines; i++) {
    berth_pipeline *p = e->pipelines[i];
    if (strlen(p->pc->name) == len && memcmp(p->pc->name, name, len) == 0) {
      refresh_signature(p);
      return &p->model;
    }
  }
  return NULL;
}

berth_model *berth_pipeline_model_at(berth_engine *e, size_t i) {
  return &e->pipelines[i]->model;
}

const berth_pipeline_config *berth_pipeline_config_of(const berth_model *m) {
  return m->pipeline->pc;
}

/* ---- answering the outer request ----------------------------------------- */

static uint64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void outer_answer(pipe_run *r, int status, const char *msg,
                         berth_infer_response *resp) {
  if (r->answered)
    return;
  r->answered = true;
  berth_job *j = r->outer;
  berth_model *pm = &r->p->model;
  uint64_t now = uv_hrtime();
  uint64_t took = now > j->received_ns ? now - j->received_ns : 0;
  if (status == BERTH_OK) {
    pm->stats.success.count++;
    pm->stats.success.ns += took;
    pm->stats.inference_count++;
    pm->stats.execution_count++;
    pm->stats.last_inference_ms = wall_ms();
    if (r->started_ns != 0) { /* the steps, start to end; Triton's three
                                 compute counts go together */
      pm->stats.compute_input.count++;
      pm->stats.compute_infer.count++;
      pm->stats.compute_output.count++;
      pm->stats.compute_infer.ns +=
          now > r->started_ns ? now - r->started_ns : 0;
    }
  } else {
    pm->stats.fail.count++;
    pm->stats.fail.ns += took;
  }
  j->answered = true;
  berth_job_deliver(j, status, msg, resp, took);
}

static void run_closed(uv_handle_t *h) { free(h->data); }

/* Releases the outer job and frees the run once it is answered and no step
 * job is left. */
static void run_maybe_finish(pipe_run *r) {
  if (!r->answered || r->pending > 0 || r->advancing || r->finished)
    return;
  r->finished = true;
  for (size_t i = 0; i < r->p->pc->n_steps; i++)
    berth_tensors_free(r->outs[i], r->n_outs[i]);
  berth_job_release_now(r->outer);
  uv_close((uv_handle_t *)&r->start, run_closed);
}

static void step_job_free(pipe_step_job *sj) {
  berth_infer_request_clear(&sj->job.req);
  free(sj);
}

/* Fails the run: a message naming the step, queued steps cancelled. */
static void run_fail(pipe_run *r, int status, size_t step, const char *model,
                     const char *msg) {
  if (r->failed || r->answered)
    return;
  r->failed = true;
  for (size_t i = 0; i < r->p->pc->n_steps; i++) {
    pipe_step_job *sj = r->live[i];
    if (sj != NULL && berth_sched_cancel(&sj->job)) {
      r->live[i] = NULL;
      r->pending--;
      step_job_free(sj);
    }
  }
  char full[BERTH_ERRMSG_SIZE + 200];
  if (model != NULL)
    snprintf(full, sizeof full, "step \"%s\" (model %s): %s",
             r->p->pc->steps[step].name, model, msg);
  else
    snprintf(full, sizeof full, "step \"%s\": %s", r->p->pc->steps[step].name,
             msg);
  outer_answer(r, status, full, NULL);
}

static const berth_tensor *find_tensor(const berth_tensor *ts, size_t n,
                                       const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(ts[i].name, name) == 0)
      return &ts[i];
  return NULL;
}

/* The pipeline's outputs, borrowed from the run, answer the outer job. */
static void run_succeed(pipe_run *r) {
  const berth_pipeline_config *pc = r->p->pc;
  berth_tensor *outs = NULL;
  size_t n = 0;
  if (pc->n_outputs == 0) {
    outs = r->outs[pc->n_steps - 1];
    n = r->n_outs[pc->n_steps - 1];
    berth_infer_response resp = {.outputs = outs, .n_outputs = n};
    outer_answer(r, BERTH_OK, "", &resp);
    return;
  }
  outs = calloc(pc->n_outputs, sizeof *outs);
  if (outs == NULL) {
    outer_answer(r, BERTH_E_NOMEM, "out of memory", NULL);
    return;
  }
  for (size_t k = 0; k < pc->n_outputs; k++) {
    const berth_pipe_wire *w = &pc->outputs[k];
    const berth_tensor *t =
        w->step < 0
            ? find_tensor(r->outer->req.inputs, r->outer->req.n_inputs,
                          w->tensor)
            : find_tensor(r->outs[w->step], r->n_outs[w->step], w->tensor);
    if (t == NULL) {
      free(outs);
      char msg[600];
      snprintf(msg, sizeof msg,
               "gave no tensor \"%s\" for the pipeline "
               "output \"%s\"",
               w->tensor, w->name);
      size_t s = w->step < 0 ? pc->n_steps - 1 : (size_t)w->step;
      run_fail(r, w->step < 0 ? BERTH_E_INVALID : BERTH_E_MODEL, s, r->model[s],
               msg);
      return;
    }
    outs[k] = *t;
    outs[k].name = w->name; /* borrowed: the response is not cleared */
    outs[k].data_borrowed = true;
  }
  berth_infer_response resp = {.outputs = outs, .n_outputs = pc->n_outputs};
  outer_answer(r, BERTH_OK, "", &resp);
  free(outs);
}

/* ---- steps ------------------------------------------------------------------- */

static void advance(pipe_run *r);

static int copy_outputs(pipe_run *r, size_t step,
                        const berth_infer_response *resp) {
  size_t n = resp->n_outputs;
  berth_tensor *c = calloc(n ? n : 1, sizeof *c);
  if (c == NULL)
    return BERTH_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    const berth_tensor *t = &resp->outputs[i];
    c[i] = *t;
    c[i].data_borrowed = false;
    c[i].name = strdup(t->name);
    c[i].data = malloc(t->nbytes ? t->nbytes : 1);
    if (c[i].name == NULL || c[i].data == NULL) {
      free(c[i].name);
      free(c[i].data);
      c[i].name = NULL;
      c[i].data = NULL;
      berth_tensors_free(c, i);
      return BERTH_E_NOMEM;
    }
    if (t->nbytes > 0)
      memcpy(c[i].data, t->data, t->nbytes);
  }
  r->outs[step] = c;
  r->n_outs[step] = n;
  return BERTH_OK;
}

static void step_done(berth_job *job, int status, const char *errmsg,
                      berth_infer_response *resp) {
  pipe_step_job *sj = (pipe_step_job *)job;
  pipe_run *r = sj->run;
  if (r->failed || r->answered)
    return;
  const char *model = r->model[sj->step];
  if (status != BERTH_OK) {
    run_fail(r, status, sj->step, model, errmsg);
    return;
  }
  if (copy_outputs(r, sj->step, resp) != BERTH_OK) {
    run_fail(r, BERTH_E_NOMEM, sj->step, model, "out of memory");
    return;
  }
  r->state[sj->step] = ST_DONE;
  r->n_done++;
  advance(r);
}

static void step_release(berth_job *job) {
  pipe_step_job *sj = (pipe_step_job *)job;
  pipe_run *r = sj->run;
  if (r->live[sj->step] == sj)
    r->live[sj->step] = NULL;
  step_job_free(sj);
  r->pending--;
  run_maybe_finish(r);
}

/* Borrowed views of the tensors a step reads (names owned). With the
 * default wiring, a tensor the step's model does not take (when it declares
 * its inputs) is left out. */
static int step_inputs(pipe_run *r, size_t i, const berth_model *m,
                       berth_infer_request *req, int *status, char *msg,
                       size_t cap) {
  const berth_pipe_step *s = &r->p->pc->steps[i];
  const berth_infer_request *outer = &r->outer->req;
  size_t n = s->wired      ? s->n_inputs
             : s->from < 0 ? outer->n_inputs
                           : r->n_outs[s->from];
  berth_tensor *ins = calloc(n ? n : 1, sizeof *ins);
  if (ins == NULL)
    goto nomem;
  req->inputs = ins;
  size_t j = 0;
  for (size_t k = 0; k < n; k++) {
    const berth_tensor *t;
    const char *name;
    if (!s->wired) {
      t = s->from < 0 ? &outer->inputs[k] : &r->outs[s->from][k];
      name = t->name;
      if (m->signature_known && spec_in(m->inputs, m->n_inputs, name) == NULL)
        continue;
    } else {
      const berth_pipe_wire *w = &s->inputs[k];
      t = w->step < 0
              ? find_tensor(outer->inputs, outer->n_inputs, w->tensor)
              : find_tensor(r->outs[w->step], r->n_outs[w->step], w->tensor);
      name = w->name;
      if (t == NULL && w->step < 0) {
        *status = BERTH_E_INVALID;
        snprintf(msg, cap,
                 "the request has no input \"%s\" (the step reads "
                 "it as \"%s\")",
                 w->tensor, w->name);
        return *status;
      }
      if (t == NULL) {
        *status = BERTH_E_MODEL;
        snprintf(msg, cap,
                 "step \"%s\" (model %s) gave no output \"%s\" "
                 "for input \"%s\"",
                 r->p->pc->steps[w->step].name, r->model[w->step], w->tensor,
                 w->name);
        return *status;
      }
    }
    ins[j] = *t;
    ins[j].data_borrowed = true;
    ins[j].name = strdup(name);
    req->n_inputs = ++j;
    if (ins[j - 1].name == NULL)
      goto nomem;
  }
  return BERTH_OK;
nomem:
  *status = BERTH_E_NOMEM;
  snprintf(msg, cap, "out of memory");
  return *status;
}

static void not_ready(const berth_model *m, const char *name, char *out,
                      size_t cap) {
  if (m == NULL) {
    snprintf(out, cap, "model '%s' is not loaded", name);
    return;
  }
  const char *why = m->state == BERTH_MODEL_FAILED      ? m->load_error
                    : m->state == BERTH_MODEL_UNLOADING ? "it is being unloaded"
                    : m->state == BERTH_MODEL_UNAVAILABLE ? "it was unloaded"
                    : m->engine->draining ? "the server is shutting down"
                                          : "its worker is still loading it";
  snprintf(out, cap, "model '%s' version '%s' is not ready: %.300s",
           m->cfg->name, m->cfg->version, why);
}

/* Takes a step of an accepted request: as berth_model_accepting, except
 * that a drain does not stop it (the drain finishes accepted requests). */
static bool step_model_usable(const berth_model *m) {
  return (m->state == BERTH_MODEL_READY && m->n_ready > 0) ||
         (m->has_served && m->state == BERTH_MODEL_LOADING);
}

static void start_step(pipe_run *r, size_t i) {
  berth_engine *e = r->e;
  const char *mname = r->model[i], *ver = r->version[i];
  char msg[BERTH_ERRMSG_SIZE];
  r->state[i] = ST_RUNNING;
  if (r->deadline_ns != 0 && uv_hrtime() >= r->deadline_ns) {
    run_fail(r, BERTH_E_TIMEOUT, i, mname,
             "the request timed out before "
             "this step started (its timeout parameter or deadline)");
    return;
  }
  berth_model *m =
      berth_model_find(e, mname, strlen(mname), ver, ver ? strlen(ver) : 0);
  if (m == NULL || !step_model_usable(m)) {
    not_ready(m, mname, msg, sizeof msg);
    run_fail(r, BERTH_E_UNAVAILABLE, i, mname, msg);
    return;
  }
  pipe_step_job *sj = calloc(1, sizeof *sj);
  if (sj == NULL) {
    run_fail(r, BERTH_E_NOMEM, i, mname, "out of memory");
    return;
  }
  sj->run = r;
  sj->step = i;
  int status = BERTH_OK;
  if (step_inputs(r, i, m, &sj->job.req, &status, msg, sizeof msg) !=
      BERTH_OK) {
    step_job_free(sj);
    run_fail(r, status, i, mname, msg);
    return;
  }
  berth_errmsg err;
  int rc = berth_signature_check(m, &sj->job.req, &err);
  if (rc != BERTH_OK) {
    step_job_free(sj);
    run_fail(r, rc, i, mname, err.msg);
    return;
  }
  sj->job.done = step_done;
  sj->job.release = step_release;
  sj->job.user = r;
  sj->job.received_ns = uv_hrtime();
  sj->job.deadline_ns = r->deadline_ns;
  sj->job.protocol = r->outer->protocol;
  if (r->outer->priority == BERTH_PRIORITY_HIGH) {
    /* the scheduler reads the priority from the step's parameters */
    sj->job.req.parameters = json_pack("{s:i}", "priority", 1);
    if (sj->job.req.parameters == NULL) {
      step_job_free(sj);
      run_fail(r, BERTH_E_NOMEM, i, mname, "out of memory");
      return;
    }
  }
  sj->job.http = r->outer->http;
  r->live[i] = sj;
  r->pending++;
  rc = berth_sched_submit(m, &sj->job, &err);
  if (rc != BERTH_OK) { /* not queued: no callback ran */
    r->live[i] = NULL;
    r->pending--;
    step_job_free(sj);
    run_fail(r, rc, i, mname, err.msg);
  }
}

static bool step_can_start(const pipe_run *r, size_t i) {
  const berth_pipe_step *s = &r->p->pc->steps[i];
  if (r->state[i] != ST_WAITING)
    return false;
  for (size_t k = 0; k < s->n_deps; k++)
    if (r->state[s->deps[k]] != ST_DONE)
      return false;
  return true;
}

/* Starts every step whose inputs are ready; answers when all are done.
 * Re-entrant: a step may complete while another is being submitted. */
static void advance(pipe_run *r) {
  if (r->advancing) {
    r->again = true;
    return;
  }
  r->advancing = true;
  size_t n = r->p->pc->n_steps;
  do {
    r->again = false;
    if (r->failed || r->answered)
      break;
    if (r->n_done == n) {
      run_succeed(r);
      break;
    }
    for (size_t i = 0; i < n && !r->failed; i++)
      if (step_can_start(r, i))
        start_step(r, i);
  } while (r->again);
  r->advancing = false;
  run_maybe_finish(r);
}

/* The run leaves the pipeline's "queue" when its steps start: Triton's
 * statistics count every request there, and perf_analyzer (without -x)
 * picks the version whose queue count grew during its measurement. */
static void on_start(uv_timer_t *t) {
  pipe_run *r = t->data;
  berth_model_stats *st = &r->p->model.stats;
  uint64_t now = uv_hrtime(), rec = r->outer->received_ns;
  st->queue.count++;
  st->queue.ns += now > rec ? now - rec : 0;
  r->started_ns = now;
  advance(r);
}

/* ---- submit ----------------------------------------------------------------- */

/* The outer request's "timeout" (its deadline covers every step) and
 * "priority" (every step is queued at it), checked as the scheduler does. */
static int read_parameters(berth_job *job, berth_errmsg *err) {
  json_t *params = job->req.parameters;
  json_t *p = params ? json_object_get(params, "priority") : NULL;
  job->priority = BERTH_PRIORITY_NORMAL;
  if (p != NULL) {
    json_int_t v = json_is_integer(p) ? json_integer_value(p) : -1;
    if (v < 0 || v > 2)
      return berth_errf(err, BERTH_E_INVALID,
                        "parameter 'priority' must be 1 (high) or 2 (normal; "
                        "0 also means normal)");
    if (v == 1)
      job->priority = BERTH_PRIORITY_HIGH;
  }
  json_t *t = params ? json_object_get(params, "timeout") : NULL;
  if (t == NULL)
    return BERTH_OK;
  json_int_t v = json_is_integer(t) ? json_integer_value(t) : -1;
  if (v < 0 || v > 3600ll * 1000000ll)
    return berth_errf(err, BERTH_E_INVALID,
                      "parameter 'timeout' must be microseconds, an integer "
                      "from 0 (none) to 3600000000");
  if (job->deadline_ns == 0 && v > 0)
    job->deadline_ns = uv_hrtime() + (uint64_t)v * 1000u;
  return BERTH_OK;
}

int berth_pipeline_submit(berth_model *m, berth_job *job, berth_errmsg *err) {
  berth_pipeline *p = m->pipeline;
  berth_engine *e = m->engine;
  job->model = m;
  job->answered = false;
  job->rows = -1;
  if (job->received_ns == 0)
    job->received_ns = uv_hrtime();
  int rc = read_parameters(job, err);
  if (rc != BERTH_OK)
    return rc;
  pipe_run *r = calloc(1, sizeof *r);
  if (r == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  r->p = p;
  r->e = e;
  r->outer = job;
  r->deadline_ns = job->deadline_ns;
  for (size_t i = 0; i < p->pc->n_steps; i++) {
    const berth_pipe_step *s = &p->pc->steps[i];
    r->model[i] = s->model;
    r->version[i] = s->version;
    if (s->sw != NULL &&
        (rc = berth_pipe_switch_choose(s, &job->req, job->http, &r->model[i],
                                       err)) != BERTH_OK) {
      free(r);
      return rc;
    }
  }
  uv_timer_init(e->loop, &r->start);
  r->start.data = r;
  uv_timer_start(&r->start, on_start, 0, 0);
  m->inflight++;
  return BERTH_OK;
}

/* ---- metrics ------------------------------------------------------------------ */

static const char *const outcomes[BERTH_OUTCOME_COUNT] = {
    "success", "client_error", "server_error",
    "timeout", "overload",     "unavailable"};

static int label(berth_buf *out, const char *family, const char *pipeline) {
  int rc = berth_buf_printf(out, "%s{pipeline=\"", family);
  if (rc == BERTH_OK)
    rc = berth_metrics_escape(out, pipeline);
  return rc;
}

int berth_pipeline_metrics_render(berth_engine *e, berth_buf *out) {
  if (e->n_pipelines == 0)
    return BERTH_OK;
  int rc = berth_buf_printf(
      out, "# HELP berth_pipeline_requests_total Requests to a pipeline, by "
           "outcome.\n# TYPE berth_pipeline_requests_total counter\n");
  for (size_t i = 0; rc == BERTH_OK && i < e->n_pipelines; i++) {
    const berth_pipeline *p = e->pipelines[i];
    for (size_t o = 0; rc == BERTH_OK && o < BERTH_OUTCOME_COUNT; o++) {
      uint64_t n = 0;
      for (size_t k = 0; k < BERTH_PROTO_COUNT; k++)
        n += p->model.metrics.requests[k][o];
      rc = label(out, "berth_pipeline_requests_total", p->pc->name);
      if (rc == BERTH_OK)
        rc = berth_buf_printf(out, "\",outcome=\"%s\"} %llu\n", outcomes[o],
                              (unsigned long long)n);
    }
  }
  if (rc == BERTH_OK)
    rc = berth_buf_printf(
        out, "# HELP berth_pipeline_request_duration_seconds Time from a "
             "pipeline request's arrival to its answer.\n# TYPE "
             "berth_pipeline_request_duration_seconds histogram\n");
  for (size_t i = 0; rc == BERTH_OK && i < e->n_pipelines; i++) {
    const berth_pipeline *p = e->pipelines[i];
    const berth_histogram *h = &p->model.metrics.request_duration;
    const char *fam = "berth_pipeline_request_duration_seconds_bucket";
    for (size_t b = 0; rc == BERTH_OK && b <= h->n_bounds; b++) {
      rc = label(out, fam, p->pc->name);
      if (rc == BERTH_OK && b < h->n_bounds)
        rc = berth_buf_printf(
            out, "\",le=\"%g\"} %llu\n", h->bounds[b],
            (unsigned long long)berth_histogram_cumulative(h, b));
      else if (rc == BERTH_OK)
        rc = berth_buf_printf(out, "\",le=\"+Inf\"} %llu\n",
                              (unsigned long long)h->count);
    }
    if (rc == BERTH_OK)
      rc = label(out, "berth_pipeline_request_duration_seconds_sum",
                 p->pc->name);
    if (rc == BERTH_OK)
      rc = berth_buf_printf(out, "\"} %.9g\n", h->sum);
    if (rc == BERTH_OK)
      rc = label(out, "berth_pipeline_request_duration_seconds_count",
                 p->pc->name);
    if (rc == BERTH_OK)
      rc = berth_buf_printf(out, "\"} %llu\n", (unsigned long long)h->count);
  }
  return rc;
}

/* ---- the module ------------------------------------------------------------ */

static int collect(void *ctx, berth_buf *out) {
  return berth_pipeline_metrics_render(ctx, out);
}

static int pipelines_module_init(berth_engine *e, berth_errmsg *err) {
  int rc = berth_pipelines_init(e, err);
  if (rc == BERTH_OK && e->n_pipelines > 0)
    rc = berth_engine_add_collector(e, collect, e, err);
  return rc;
}

const berth_module berth_pipeline_module = {.name = "pipelines",
                                            .init = pipelines_module_init,
                                            .free = berth_pipelines_free};
