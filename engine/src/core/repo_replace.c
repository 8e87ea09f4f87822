/* Berth engine: replacing a serving model version without downtime
 * (repo_replace.h; docs/rest-api.md, "Model repository").
 *
 * The new config's workers start in a candidate berth_model that nothing
 * routes to. When every one of them is ready, the candidate and the serving
 * version trade their workers, config and signature (the serving version's
 * berth_model stays where it is: jobs, routes and pipelines point to it), so
 * queued requests go to the new workers at once; the old workers, now the
 * candidate's, finish the batch they run and get SHUTDOWN when idle. When a
 * candidate fails to load, its workers are stopped and the old ones never
 * stopped serving.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"
#include "repo_replace.h"

#define KILL_AFTER_NS (5ull * 1000000000ull)

struct berth_replace {
  berth_model *m;   /* the serving version (engine->models) */
  berth_model cand; /* the candidate, then the old workers */
  berth_replace_phase phase;
  uint64_t since_ns; /* when the phase began */
  bool killed;
  int start_rc; /* berth_supervisor_start's failure, else BERTH_OK */
  const berth_model_config *spare; /* the config no longer in use once
                                      done: the old one after a switch, the
                                      candidate's after a failure */
  unsigned closed_ticks;           /* CLOSED: ticks since the handles closed */
};

berth_replace *berth_replace_start(berth_model *m,
                                   const berth_model_config *cfg,
                                   berth_errmsg *err) {
  berth_replace *x = calloc(1, sizeof *x);
  if (x == NULL) {
    berth_errf(err, BERTH_E_NOMEM, "out of memory");
    return NULL;
  }
  x->m = m;
  x->spare = cfg;
  x->since_ns = uv_hrtime();
  x->phase = BERTH_REPLACE_LOADING;
  int rc = berth_model_init(&x->cand, m->engine, cfg, err);
  x->cand.state = BERTH_MODEL_LOADING;
  if (rc == BERTH_OK)
    rc = berth_supervisor_start(&x->cand, err);
  if (rc != BERTH_OK) {
    /* slots that exist are stopped and freed by the FAILING phase */
    x->start_rc = rc;
    x->phase = BERTH_REPLACE_FAILING;
    berth_supervisor_stop_model(&x->cand, false);
    return x;
  }
  berth_log_kv(BERTH_LOG_INFO, "loading a new config beside the serving one",
               "model", cfg->name, "version", cfg->version, NULL);
  return x;
}

berth_replace_phase berth_replace_phase_of(const berth_replace *x) {
  return x->phase;
}

int berth_replace_start_error(const berth_replace *x) { return x->start_rc; }

const berth_model *berth_replace_model(const berth_replace *x) { return x->m; }

const berth_model_config *berth_replace_spare(const berth_replace *x) {
  return x->spare;
}

/* Trades what belongs to a config between the two models. */
static void trade(berth_model *a, berth_model *b) {
  berth_model t = *a;
  a->cfg = b->cfg;
  a->platform = b->platform;
  a->inputs = b->inputs;
  a->n_inputs = b->n_inputs;
  a->outputs = b->outputs;
  a->n_outputs = b->n_outputs;
  a->signature_known = b->signature_known;
  a->max_batch_size = b->max_batch_size;
  b->cfg = t.cfg;
  b->platform = t.platform;
  b->inputs = t.inputs;
  b->n_inputs = t.n_inputs;
  b->outputs = t.outputs;
  b->n_outputs = t.n_outputs;
  b->signature_known = t.signature_known;
  b->max_batch_size = t.max_batch_size;
  a->metrics.load_seconds = b->metrics.load_seconds;
  berth_supervisor_swap(a, b);
}

static void switch_over(berth_replace *x) {
  berth_model *m = x->m;
  berth_sched_sequences_reset(m); /* their state is in the old workers */
  trade(m, &x->cand);
  x->spare = x->cand.cfg; /* the old config, freed once its workers exit */
  m->state = BERTH_MODEL_READY;
  m->load_error[0] = '\0';
  x->cand.state = BERTH_MODEL_UNLOADING;
  x->phase = BERTH_REPLACE_RETIRING;
  x->since_ns = uv_hrtime();
  berth_log_kv(BERTH_LOG_INFO, "new config serving; old workers retire",
               "model", m->cfg->name, "version", m->cfg->version, NULL);
  berth_sched_dispatch(m);
  berth_supervisor_retire(&x->cand);
}

void berth_replace_abort(berth_replace *x) {
  if (x->phase != BERTH_REPLACE_LOADING)
    return;
  x->phase = BERTH_REPLACE_FAILING;
  x->since_ns = uv_hrtime();
  x->cand.state = BERTH_MODEL_UNLOADING;
  berth_supervisor_stop_model(&x->cand, false);
}

/* Workers gone: frees the slots and closes the candidate's handles. */
static void close_cand(berth_replace *x) {
  berth_supervisor_free(&x->cand);
  berth_sched_close(&x->cand);
  x->phase = BERTH_REPLACE_CLOSED;
  x->closed_ticks = 0;
}

static void step_stopping(berth_replace *x, uint64_t now) {
  berth_engine *e = x->m->engine;
  if (x->phase == BERTH_REPLACE_RETIRING)
    berth_supervisor_retire(&x->cand);
  else
    berth_supervisor_stop_model(&x->cand, false);
  if (berth_supervisor_model_stopped(&x->cand)) {
    close_cand(x);
    return;
  }
  uint64_t grace = KILL_AFTER_NS;
  if (x->phase == BERTH_REPLACE_RETIRING)
    grace += (uint64_t)(e->cfg.drain_timeout_s * 1e9);
  if (!x->killed && now - x->since_ns > grace) {
    berth_supervisor_kill_model(&x->cand);
    x->killed = true;
  }
}

berth_replace_phase berth_replace_step(berth_replace *x, char *msg,
                                       size_t cap) {
  uint64_t now = uv_hrtime();
  berth_model *c = &x->cand;
  switch (x->phase) {
  case BERTH_REPLACE_LOADING:
    if (c->load_error[0] != '\0' || c->state == BERTH_MODEL_FAILED) {
      snprintf(msg, cap,
               "model '%s' version '%s' failed to load the new "
               "config, and the previous one keeps serving: %s",
               c->cfg->name, c->cfg->version,
               c->load_error[0] != '\0' ? c->load_error : "no worker ready");
      berth_replace_abort(x);
      return BERTH_REPLACE_FAILING;
    }
    if (c->n_workers > 0 && c->n_ready == c->n_workers)
      switch_over(x);
    return x->phase;
  case BERTH_REPLACE_RETIRING:
  case BERTH_REPLACE_FAILING:
    step_stopping(x, now);
    return x->phase;
  default:
    /* the close callbacks ran during the loop iteration that closed them */
    x->closed_ticks++;
    return x->phase;
  }
}

bool berth_replace_freeable(const berth_replace *x) {
  return x->phase == BERTH_REPLACE_CLOSED && x->closed_ticks >= 2;
}

void berth_replace_free(berth_replace *x) {
  if (x == NULL)
    return;
  berth_model_free(&x->cand);
  free(x);
}
