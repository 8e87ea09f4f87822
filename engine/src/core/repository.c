/* Berth engine: the model repository API — index, load, unload (engine.h,
 * "repository.c"; docs/rest-api.md, "Model repository").
 *
 * A version in transition has one operation (repo_op) that walks it through
 * phases, checked by one timer every TICK_MS while any operation exists:
 *
 *   unload:  DRAIN  new requests refused (state UNLOADING); workers that are
 *                   not ready are stopped; queued and running requests
 *                   finish on the ready ones (at most drain_timeout_s, then
 *                   what is still queued fails)
 *            STOP   every worker gets SHUTDOWN (TERM if not ready), KILL
 *                   after 5 s; when all have exited their slots are freed
 *                   and the version is UNAVAILABLE
 *   load:    LOAD   workers started (with a new config first, if one was
 *                   given); settled when the version is READY or FAILED; a
 *                   failed version is then unloaded (no restarts), keeping
 *                   its load error as the reason it is UNAVAILABLE
 *
 * A new config for a serving version is a replace (repo_replace.c): the
 * new workers start beside the old ones and take over when ready; the old
 * version keeps serving when they fail. A reload of a version that is not
 * serving (failed, loading) is an unload followed by a load. Callers wait on a repo_call that
 * counts the versions it still waits for; it is answered once, with the
 * first failure if any. When the engine drains, every waiter is answered
 * BERTH_E_SHUTDOWN and the engine's own stop takes the workers down.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"
#include "repo_access.h"
#include "repo_files.h"
#include "repo_override.h"
#include "repo_replace.h"

#define TICK_MS 20
#define KILL_AFTER_NS (5ull * 1000000000ull)

/* One caller of load or unload. */
typedef struct repo_call {
  berth_repo_done_cb done;
  void *arg;
  size_t pending; /* versions not settled, +1 while set up */
  int status;     /* first failure, else BERTH_OK */
  char msg[BERTH_ERRMSG_SIZE];
} repo_call;

typedef struct repo_wait {
  repo_call *call;
  struct repo_wait *next;
} repo_wait;

typedef enum { OP_DRAIN, OP_STOP, OP_LOAD, OP_REPLACE } op_phase;

typedef struct repo_op {
  berth_model *m;
  op_phase phase;
  uint64_t since_ns;            /* when the phase began */
  bool killed;                  /* STOP: KILL sent */
  bool reload;                  /* load again once unloaded */
  berth_model_config *next_cfg; /* owned: the config to load with, or NULL */
  berth_replace *rep;           /* OP_REPLACE: the new workers starting */
  repo_wait *unload_waits;      /* settled once UNAVAILABLE */
  repo_wait *load_waits;        /* settled once READY or failed */
  struct repo_op *next;
} repo_op;

struct berth_repository {
  berth_engine *e;
  uv_timer_t tick;
  bool tick_open, tick_closing;
  repo_op *ops;
  berth_model_config **cfgs; /* owned configs of versions set at run
                                   time (each malloc'd) */
  size_t n_cfgs, cap_cfgs;
  berth_replace **done_reps; /* owned: replaces answered (switched or
                                   failed) whose old workers still stop */
  size_t n_done_reps, cap_done_reps;
  berth_repo_roots roots; /* server.repositories, resolved */
};

/* ---- callers ------------------------------------------------------------ */

static void call_settle(repo_call *c, int status, const char *msg) {
  if (status != BERTH_OK && c->status == BERTH_OK) {
    c->status = status;
    size_t n = strnlen(msg, sizeof c->msg - 1); /* keep the head of it */
    memcpy(c->msg, msg, n);
    c->msg[n] = '\0';
  }
  if (--c->pending > 0)
    return;
  c->done(c->arg, c->status, c->status == BERTH_OK ? "" : c->msg);
  free(c);
}

static int wait_add(repo_wait **list, repo_call *c) {
  repo_wait *w = malloc(sizeof *w);
  if (w == NULL)
    return BERTH_E_NOMEM;
  w->call = c;
  w->next = *list;
  *list = w;
  c->pending++;
  return BERTH_OK;
}

static void settle_all(repo_wait **list, int status, const char *msg) {
  repo_wait *w = *list;
  *list = NULL;
  while (w != NULL) {
    repo_wait *next = w->next;
    call_settle(w->call, status, msg);
    free(w);
    w = next;
  }
}

/* ---- configs ------------------------------------------------------------ */

static void cfg_destroy(berth_model_config *c) {
  if (c == NULL)
    return;
  berth_repo_files_remove(c->files_dir); /* files from its load request */
  berth_config_model_clear(c);
  free(c);
}

static int cfg_adopt(struct berth_repository *r, berth_model_config *c) {
  if (r->n_cfgs == r->cap_cfgs) {
    size_t cap = r->cap_cfgs ? r->cap_cfgs * 2 : 8;
    berth_model_config **p = realloc(r->cfgs, cap * sizeof *p);
    if (p == NULL)
      return BERTH_E_NOMEM;
    r->cfgs = p;
    r->cap_cfgs = cap;
  }
  r->cfgs[r->n_cfgs++] = c;
  return BERTH_OK;
}

/* Frees c if the repository owns it (configs from the engine's document
 * stay with the engine). */
static void cfg_release(struct berth_repository *r,
                        const berth_model_config *c) {
  for (size_t i = 0; i < r->n_cfgs; i++) {
    if (r->cfgs[i] == c) {
      cfg_destroy(r->cfgs[i]);
      r->cfgs[i] = r->cfgs[--r->n_cfgs];
      return;
    }
  }
}

/* ---- the timer ------------------------------------------------------------ */

static void on_tick(uv_timer_t *t);

static void ensure_tick(struct berth_repository *r) {
  if (r->tick_closing || (r->ops == NULL && r->n_done_reps == 0))
    return; /* the close callback starts it again if needed */
  if (!r->tick_open) {
    uv_timer_init(r->e->loop, &r->tick);
    r->tick.data = r;
    r->tick_open = true;
  }
  if (!uv_is_active((uv_handle_t *)&r->tick))
    uv_timer_start(&r->tick, on_tick, TICK_MS, TICK_MS);
}

static void tick_closed(uv_handle_t *h) {
  struct berth_repository *r = h->data;
  r->tick_open = false;
  r->tick_closing = false;
  ensure_tick(r);
}

static void close_tick(struct berth_repository *r) {
  if (!r->tick_open || r->tick_closing)
    return;
  r->tick_closing = true;
  uv_close((uv_handle_t *)&r->tick, tick_closed);
}

static struct berth_repository *repo_of(berth_engine *e) {
  if (e->repo == NULL) {
    e->repo = calloc(1, sizeof *e->repo);
    if (e->repo != NULL)
      e->repo->e = e;
  }
  return e->repo;
}

/* ---- operations ----------------------------------------------------------- */

static repo_op *op_find(struct berth_repository *r, const berth_model *m) {
  for (repo_op *op = r->ops; op != NULL; op = op->next)
    if (op->m == m)
      return op;
  return NULL;
}

static repo_op *op_new(struct berth_repository *r, berth_model *m) {
  repo_op *op = calloc(1, sizeof *op);
  if (op == NULL)
    return NULL;
  op->m = m;
  op->since_ns = uv_hrtime();
  op->next = r->ops;
  r->ops = op;
  return op;
}

/* Room for every replace to be parked without allocating (park_rep). */
static int reserve_rep(struct berth_repository *r) {
  size_t live = 0;
  for (repo_op *op = r->ops; op != NULL; op = op->next)
    live += op->rep != NULL;
  size_t want = r->n_done_reps + live + 1;
  if (want <= r->cap_done_reps)
    return BERTH_OK;
  berth_replace **p = realloc(r->done_reps, want * 2 * sizeof *p);
  if (p == NULL)
    return BERTH_E_NOMEM;
  r->done_reps = p;
  r->cap_done_reps = want * 2;
  return BERTH_OK;
}

/* A replace answered or aborted: stepped until its workers are gone. */
static void park_rep(struct berth_repository *r, berth_replace *x) {
  berth_replace_abort(x); /* nothing unless still loading */
  r->done_reps[r->n_done_reps++] = x;
}

static void op_remove(struct berth_repository *r, repo_op *op) {
  if (op->rep != NULL) {
    park_rep(r, op->rep);
    op->rep = NULL;
  }
  for (repo_op **p = &r->ops; *p != NULL; p = &(*p)->next) {
    if (*p == op) {
      *p = op->next;
      break;
    }
  }
  settle_all(&op->unload_waits, BERTH_E_INTERNAL, "operation dropped");
  settle_all(&op->load_waits, BERTH_E_INTERNAL, "operation dropped");
  cfg_destroy(op->next_cfg);
  free(op);
}

static void log_model(const char *what, const berth_model *m) {
  berth_log_kv(BERTH_LOG_INFO, what, "model", m->cfg->name, "version",
               m->cfg->version, NULL);
}

static void begin_unload(repo_op *op) {
  berth_model *m = op->m;
  m->state = BERTH_MODEL_UNLOADING;
  op->phase = OP_DRAIN;
  op->since_ns = uv_hrtime();
  berth_supervisor_stop_model(m, true);
  log_model("unloading model", m);
}

/* Starts the workers of an unloaded (or never started) version; settles
 * the load waiters and removes the op on failure. */
static void start_load(struct berth_repository *r, repo_op *op) {
  berth_model *m = op->m;
  berth_errmsg err;
  char msg[BERTH_ERRMSG_SIZE + 128];
  int rc = BERTH_OK;
  op->reload = false;
  m->at_start = false; /* a load through the API: its failure is answered */
  if (op->next_cfg != NULL) {
    const berth_model_config *old = m->cfg;
    rc = cfg_adopt(r, op->next_cfg);
    if (rc == BERTH_OK) {
      op->next_cfg = NULL;
      rc = berth_model_reconfigure(m, r->cfgs[r->n_cfgs - 1], &err);
      if (old != m->cfg)
        cfg_release(r, old);
    } else {
      berth_errf(&err, rc, "out of memory");
    }
  }
  m->state = BERTH_MODEL_LOADING;
  m->load_error[0] = '\0';
  if (rc == BERTH_OK)
    rc = berth_model_start(m, &err);
  if (rc != BERTH_OK) {
    snprintf(m->load_error, sizeof m->load_error, "%s", err.msg);
    m->state = BERTH_MODEL_FAILED;
    snprintf(msg, sizeof msg,
             "model '%s' version '%s' could not be started: "
             "%s",
             m->cfg->name, m->cfg->version, err.msg);
    settle_all(&op->load_waits, rc, msg);
    op_remove(r, op);
    return;
  }
  op->phase = OP_LOAD;
  op->since_ns = uv_hrtime();
  log_model("loading model (repository API)", m);
}

static void step_drain(repo_op *op, uint64_t now) {
  berth_model *m = op->m;
  berth_engine *e = m->engine;
  m->state = BERTH_MODEL_UNLOADING; /* a worker restart may not revive it */
  berth_supervisor_stop_model(m, true);
  bool empty = m->q_len == 0 && LIST_EMPTY(&m->running);
  bool late = now - op->since_ns > (uint64_t)(e->cfg.drain_timeout_s * 1e9);
  if (!empty && (late || m->n_ready == 0))
    berth_sched_fail_queued(m, BERTH_E_UNAVAILABLE,
                            "the model was unloaded before this request ran");
  if (!empty && !late && m->n_ready > 0)
    return;
  berth_supervisor_stop_model(m, false);
  op->phase = OP_STOP;
  op->since_ns = now;
}

static void step_stop(struct berth_repository *r, repo_op *op, uint64_t now) {
  berth_model *m = op->m;
  m->state = BERTH_MODEL_UNLOADING;
  if (!berth_supervisor_model_stopped(m)) {
    if (!op->killed && now - op->since_ns > KILL_AFTER_NS) {
      berth_supervisor_kill_model(m);
      op->killed = true;
    }
    return;
  }
  berth_sched_fail_queued(m, BERTH_E_UNAVAILABLE,
                          "the model was unloaded before this request ran");
  berth_supervisor_free(m);
  if (m->ops->stop != NULL)
    m->ops->stop(m);
  m->n_ready = 0;
  m->state = BERTH_MODEL_UNAVAILABLE;
  log_model("model unloaded", m);
  for (size_t i = 0; !op->reload && i < r->n_cfgs; i++) {
    if (r->cfgs[i] == m->cfg && r->cfgs[i]->files_dir != NULL) {
      berth_repo_files_remove(r->cfgs[i]->files_dir); /* load them again */
      free(r->cfgs[i]->files_dir);
      r->cfgs[i]->files_dir = NULL;
    }
  }
  settle_all(&op->unload_waits, BERTH_OK, "");
  if (op->reload)
    start_load(r, op);
  else
    op_remove(r, op);
}

static void step_load(struct berth_repository *r, repo_op *op) {
  berth_model *m = op->m;
  char msg[BERTH_ERRMSG_SIZE + 128];
  if (m->state == BERTH_MODEL_READY && m->n_ready > 0) {
    settle_all(&op->load_waits, BERTH_OK, "");
    op_remove(r, op);
  } else if (m->state == BERTH_MODEL_FAILED) {
    snprintf(msg, sizeof msg, "failed to load '%s' version %s: %s",
             m->cfg->name, m->cfg->version, m->load_error);
    settle_all(&op->load_waits, BERTH_E_MODEL, msg);
    /* No retries for a version loaded through the API: it is unloaded and
     * keeps its load error as the reason. */
    begin_unload(op);
  }
}

static void step_replace(struct berth_repository *r, repo_op *op) {
  char msg[BERTH_ERRMSG_SIZE];
  berth_replace_phase ph = berth_replace_step(op->rep, msg, sizeof msg);
  if (ph == BERTH_REPLACE_LOADING)
    return;
  if (ph == BERTH_REPLACE_RETIRING)
    settle_all(&op->load_waits, BERTH_OK, "");
  else
    settle_all(&op->load_waits, BERTH_E_MODEL, msg);
  op_remove(r, op); /* parks the replace: its old workers still stop */
}

static void step_done_reps(struct berth_repository *r) {
  char msg[BERTH_ERRMSG_SIZE];
  for (size_t i = 0; i < r->n_done_reps;) {
    berth_replace *x = r->done_reps[i];
    berth_replace_step(x, msg, sizeof msg);
    if (!berth_replace_freeable(x)) {
      i++;
      continue;
    }
    const berth_model_config *spare = berth_replace_spare(x);
    berth_replace_free(x);
    cfg_release(r, spare);
    r->done_reps[i] = r->done_reps[--r->n_done_reps];
  }
}

static void on_tick(uv_timer_t *t) {
  struct berth_repository *r = t->data;
  berth_engine *e = r->e;
  uint64_t now = uv_hrtime();
  step_done_reps(r);
  repo_op *op = r->ops;
  while (op != NULL) {
    repo_op *next = op->next;
    if (e->draining || e->stopping) {
      const char *msg = "the server is shutting down";
      settle_all(&op->unload_waits, BERTH_E_SHUTDOWN, msg);
      settle_all(&op->load_waits, BERTH_E_SHUTDOWN, msg);
      op_remove(r, op);
    } else if (op->phase == OP_DRAIN) {
      step_drain(op, now);
    } else if (op->phase == OP_STOP) {
      step_stop(r, op, now);
    } else if (op->phase == OP_REPLACE) {
      step_replace(r, op);
    } else {
      step_load(r, op);
    }
    op = next;
  }
  if (r->ops == NULL && r->n_done_reps == 0)
    close_tick(r);
}

/* A caller's record, or NULL when it was answered already (shutting down,
 * out of memory). */
static repo_call *new_call(berth_engine *e, berth_repo_done_cb done,
                           void *arg) {
  if (e->draining) {
    done(arg, BERTH_E_SHUTDOWN, "the server is shutting down");
    return NULL;
  }
  repo_call *c = repo_of(e) != NULL ? calloc(1, sizeof *c) : NULL;
  if (c == NULL) {
    done(arg, BERTH_E_NOMEM, "out of memory");
    return NULL;
  }
  *c = (repo_call){.done = done, .arg = arg, .pending = 1};
  return c;
}

static void call_fail(repo_call *c, int status, const char *msg) {
  if (c->status == BERTH_OK) {
    c->status = status;
    size_t n = strnlen(msg, sizeof c->msg - 1); /* keep the head of it */
    memcpy(c->msg, msg, n);
    c->msg[n] = '\0';
  }
}

/* ---- index ---------------------------------------------------------------- */

json_t *berth_repository_index(berth_engine *e, bool ready_only) {
  json_t *arr = json_array();
  for (size_t i = 0; arr != NULL && i < e->n_models; i++) {
    const berth_model *m = e->models[i];
    char reason[600];
    const char *state = berth_model_state_name(m, reason, sizeof reason);
    if (ready_only && strcmp(state, "READY") != 0)
      continue;
    /* Triton's four fields, and Berth's "resident": whether worker
     * processes hold the model now (docs/autoscaling.md) */
    bool resident = berth_supervisor_active(m) > 0 || m->n_ready > 0;
    if (json_array_append_new(
            arr, json_pack("{s:s, s:s, s:s, s:s, s:b}", "name", m->cfg->name,
                           "version", m->cfg->version, "state", state, "reason",
                           reason, "resident", resident)) != 0) {
      json_decref(arr);
      arr = NULL;
    }
  }
  /* composites such as pipelines (not in e->models): one version, "1",
   * with a reason naming what keeps it from being ready */
  for (size_t i = 0; arr != NULL && i < e->n_composites; i++) {
    const berth_model *m = e->composites[i];
    char reason[600];
    const char *state = berth_model_state_name(m, reason, sizeof reason);
    if (ready_only && strcmp(state, "READY") != 0)
      continue;
    if (json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "name",
                                             m->cfg->name, "version",
                                             m->cfg->version, "state", state,
                                             "reason", reason)) != 0) {
      json_decref(arr);
      arr = NULL;
    }
  }
  return arr;
}

/* ---- unload --------------------------------------------------------------- */

static int unload_one(struct berth_repository *r, berth_model *m,
                      repo_call *c) {
  repo_op *op = op_find(r, m);
  if (op == NULL) {
    if (m->state == BERTH_MODEL_UNAVAILABLE)
      return BERTH_OK;
    op = op_new(r, m);
    if (op == NULL)
      return BERTH_E_NOMEM;
    begin_unload(op);
  } else if (op->phase == OP_LOAD || op->phase == OP_REPLACE) {
    settle_all(&op->load_waits, BERTH_E_UNAVAILABLE,
               "the model was unloaded while it was loading");
    if (op->rep != NULL) {
      park_rep(r, op->rep); /* the new workers stop */
      op->rep = NULL;
    }
    begin_unload(op);
  } else if (op->reload) {
    op->reload = false;
    cfg_destroy(op->next_cfg);
    op->next_cfg = NULL;
    settle_all(&op->load_waits, BERTH_E_UNAVAILABLE,
               "the model was unloaded before it was loaded again");
  }
  return wait_add(&op->unload_waits, c);
}

/* The message refusing to `what` under the name of a pipeline, in err. */
static const char *pipeline_refusal(const char *name, const char *what,
                                    berth_errmsg *err) {
  berth_errf(err, BERTH_E_INVALID,
             "'%.128s' is a pipeline of the "
             "configuration: the repository cannot %s under its name (a "
             "pipeline is ready when its step models are; load or unload "
             "those)",
             name, what);
  return err->msg;
}

static void repo_unload(berth_engine *e, const char *name, const char *version,
                        berth_repo_done_cb done, void *arg) {
  char msg[400];
  repo_call *c = new_call(e, done, arg);
  if (c == NULL)
    return;
  struct berth_repository *r = e->repo;
  size_t found = 0;
  for (size_t i = 0; i < e->n_models; i++) {
    berth_model *m = e->models[i];
    if (strcmp(m->cfg->name, name) != 0 ||
        (version != NULL && strcmp(m->cfg->version, version) != 0))
      continue;
    found++;
    if (unload_one(r, m, c) != BERTH_OK)
      call_fail(c, BERTH_E_NOMEM, "out of memory");
  }
  if (found == 0 &&
      berth_composite_find(e, name, strlen(name), NULL, 0) != NULL) {
    berth_errmsg err;
    call_fail(c, BERTH_E_INVALID, pipeline_refusal(name, "unload", &err));
  } else if (found == 0) {
    if (version != NULL && berth_model_name_exists(e, name, strlen(name)))
      snprintf(msg, sizeof msg,
               "Request for unknown model: '%.128s' version "
               "%.128s is not found",
               name, version);
    else
      snprintf(msg, sizeof msg,
               "Request for unknown model: '%.128s' is not "
               "found",
               name);
    call_fail(c, BERTH_E_NOT_FOUND, msg);
  }
  ensure_tick(r);
  call_settle(c, BERTH_OK, "");
}

void berth_repository_unload(berth_engine *e, const char *name,
                             const char *version, berth_repo_done_cb done,
                             void *arg) {
  berth_errmsg err;
  if (berth_repo_mode_allows(&e->cfg, &err) != BERTH_OK) {
    done(arg, BERTH_E_FORBIDDEN, err.msg);
    return;
  }
  repo_unload(e, name, version, done, arg);
}

/* ---- load ----------------------------------------------------------------- */

/* A new config (taken) for a serving version: its workers start beside
 * the serving ones (repo_replace.c). */
static int start_replace(struct berth_repository *r, berth_model *m,
                         berth_model_config *cfg, repo_call *c,
                         berth_errmsg *err) {
  /* A native backend's model has no workers to trade (docs/native.md). */
  const char *b = json_string_value(json_object_get(cfg->entry, "backend"));
  if (m->ops->start != NULL || (b != NULL && strcmp(b, "native") == 0)) {
    berth_errf(err, BERTH_E_UNSUPPORTED,
               "a config with backend: native cannot replace a serving "
               "version, nor be replaced while it serves: unload model "
               "'%.128s' first, then load the new config",
               m->cfg->name);
    cfg_destroy(cfg);
    return BERTH_E_UNSUPPORTED;
  }
  if (reserve_rep(r) != BERTH_OK || cfg_adopt(r, cfg) != BERTH_OK) {
    cfg_destroy(cfg);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  berth_replace *x = berth_replace_start(m, cfg, err);
  if (x == NULL) {
    cfg_release(r, cfg);
    return BERTH_E_NOMEM;
  }
  if (berth_replace_phase_of(x) != BERTH_REPLACE_LOADING) {
    int rc = berth_replace_start_error(x);
    park_rep(r, x); /* its config is released when it is freed */
    return rc != BERTH_OK ? rc : BERTH_E_NOMEM;
  }
  repo_op *op = op_new(r, m);
  if (op == NULL) {
    park_rep(r, x);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  op->phase = OP_REPLACE;
  op->rep = x;
  if (wait_add(&op->load_waits, c) != BERTH_OK) {
    op_remove(r, op);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  return BERTH_OK;
}

/* Loads a known version again (config NULL: with its own; a config for a
 * serving version replaces it without downtime). */
static int load_one(struct berth_repository *r, berth_model *m,
                    berth_model_config *cfg, repo_call *c, berth_errmsg *err) {
  repo_op *op = op_find(r, m);
  bool fresh = op == NULL;
  if (op != NULL && op->phase == OP_REPLACE) {
    if (cfg == NULL)
      return wait_add(&op->load_waits, c) == BERTH_OK
                 ? BERTH_OK
                 : berth_errf(err, BERTH_E_NOMEM, "out of memory");
    cfg_destroy(cfg);
    return berth_errf(err, BERTH_E_UNAVAILABLE,
                      "model '%.128s' version "
                      "'%.128s' is being replaced by another load; load it "
                      "again once that one has answered",
                      m->cfg->name, m->cfg->version);
  }
  if (fresh) {
    bool serving = m->state == BERTH_MODEL_READY && m->n_ready > 0;
    if (serving && cfg == NULL)
      return BERTH_OK; /* already loaded */
    if (serving)
      return start_replace(r, m, cfg, c, err);
    op = op_new(r, m);
    if (op == NULL) {
      cfg_destroy(cfg);
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    }
  }
  if (cfg != NULL) {
    cfg_destroy(op->next_cfg);
    op->next_cfg = cfg;
  }
  if (wait_add(&op->load_waits, c) != BERTH_OK) {
    if (fresh)
      op_remove(r, op);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  if (op->phase == OP_DRAIN || op->phase == OP_STOP) {
    if (!fresh) {
      op->reload = true; /* being unloaded: load again afterwards */
      return BERTH_OK;
    }
  }
  if (!fresh && op->phase == OP_LOAD && cfg == NULL)
    return BERTH_OK; /* already loading: wait with the others */
  if (m->state == BERTH_MODEL_UNAVAILABLE) {
    start_load(r, op);
  } else if (fresh && m->state == BERTH_MODEL_LOADING && cfg == NULL) {
    op->phase = OP_LOAD; /* the first load, still going */
  } else {
    op->reload = true; /* serving, failed, or loading with another config */
    begin_unload(op);
  }
  return BERTH_OK;
}

/* Adds a version the engine did not know, with its config (taken). */
static int add_version(struct berth_repository *r, berth_model_config *cfg,
                       repo_call *c, berth_errmsg *err) {
  berth_engine *e = r->e;
  berth_model **models = realloc(e->models, (e->n_models + 1) * sizeof *models);
  if (models == NULL) {
    cfg_destroy(cfg);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  e->models = models;
  berth_model *m = calloc(1, sizeof *m);
  if (m == NULL || cfg_adopt(r, cfg) != BERTH_OK) {
    free(m);
    cfg_destroy(cfg);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  int rc = berth_model_init(m, e, cfg, err);
  /* Listed even when init failed: its scheduler timer is open and the
   * engine closes and frees every listed model. */
  e->models[e->n_models++] = m;
  if (rc != BERTH_OK) {
    m->state = BERTH_MODEL_UNAVAILABLE;
    return rc;
  }
  m->state = BERTH_MODEL_UNAVAILABLE;
  repo_op *op = op_new(r, m);
  if (op == NULL || wait_add(&op->load_waits, c) != BERTH_OK) {
    if (op != NULL)
      op_remove(r, op);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  start_load(r, op);
  return BERTH_OK;
}

/* The config given with a load: parsed, and its name checked against the
 * path's. */
static int parse_config(json_t *config, const char *name,
                        berth_model_config **out, berth_errmsg *err) {
  *out = calloc(1, sizeof **out);
  if (*out == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int rc =
      berth_config_parse_model_entry(config, "parameters.config", *out, err);
  if (rc == BERTH_OK && strcmp((*out)->name, name) != 0) {
    rc = berth_errf(err, BERTH_E_CONFIG,
                    "parameters.config.name: \"%.128s\" "
                    "is not the model in the path (\"%.128s\")",
                    (*out)->name, name);
    berth_config_model_clear(*out);
  }
  if (rc != BERTH_OK) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

/* A load with files (Triton's "file:" parameters): for an admin only, with
 * a whole entry in config; the files are written into a private folder
 * (*dir) and *parsed is the entry pointing there. */
static int files_entry(struct berth_repository *r, const char *name,
                       json_t *config, bool trusted,
                       const berth_repo_files *files, json_t **parsed,
                       char **dir, berth_errmsg *err) {
  json_t *merged = NULL, *entry = NULL;
  if (!trusted)
    return berth_repo_files_forbidden(err);
  if (config == NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      "parameters.config is required with file: parameters "
                      "(a whole model entry: runtime, ...)");
  int rc = berth_repo_override_for(r->e, name, config, parsed, &merged, err);
  if (rc == BERTH_OK && merged != NULL)
    rc = berth_errf(err, BERTH_E_CONFIG,
                    "parameters.config: expected a whole model entry "
                    "(runtime, ...) with file: parameters, not an override");
  json_decref(merged);
  if (rc == BERTH_OK)
    rc = berth_repo_files_write(files, r->roots.real, r->roots.n, dir, err);
  if (rc == BERTH_OK)
    rc = berth_repo_files_entry(*parsed, *dir, &entry, err);
  json_decref(*parsed);
  *parsed = entry;
  if (rc != BERTH_OK && *dir != NULL) {
    berth_repo_files_remove(*dir);
    free(*dir);
    *dir = NULL;
  }
  return rc;
}

static void repo_load(berth_engine *e, const char *name, json_t *config,
                      bool trusted, const berth_repo_files *files,
                      berth_repo_done_cb done, void *arg) {
  berth_errmsg err;
  repo_call *c = new_call(e, done, arg);
  if (c == NULL)
    return;
  struct berth_repository *r = e->repo;
  int rc = BERTH_OK;
  if (berth_composite_find(e, name, strlen(name), NULL, 0) != NULL) {
    /* a model of that name would hide the pipeline (pipeline.c) */
    call_fail(c, BERTH_E_INVALID, pipeline_refusal(name, "load a model", &err));
    ensure_tick(r);
    call_settle(c, BERTH_OK, "");
    return;
  }
  json_t *parsed = NULL, *merged = NULL;
  char *fdir = NULL;
  if (files != NULL && files->n > 0) {
    rc = files_entry(r, name, config, trusted, files, &parsed, &fdir, &err);
    config = parsed;
  } else if (config != NULL) {
    rc = berth_repo_override_for(e, name, config, &parsed, &merged, &err);
    if (merged != NULL) {
      /* files, runtime and class are the operator's: no token rule */
      config = merged;
      trusted = true;
    }
  }
  if (rc == BERTH_OK && config != NULL) {
    berth_model_config *cfg = NULL;
    rc = parse_config(config, name, &cfg, &err);
    if (rc == BERTH_OK && fdir != NULL) {
      cfg->files_dir = fdir; /* the server wrote it: no path rule */
      fdir = NULL;
    } else if (rc == BERTH_OK && (rc = berth_repo_check_entry(
                                      &r->roots, cfg, trusted, &err)) != 0) {
      cfg_destroy(cfg);
      cfg = NULL;
    }
    berth_model *m = NULL;
    if (rc == BERTH_OK)
      m = berth_model_find(e, cfg->name, strlen(cfg->name), cfg->version,
                           strlen(cfg->version));
    if (rc == BERTH_OK && m == NULL)
      rc = add_version(r, cfg, c, &err);
    else if (rc == BERTH_OK)
      rc = load_one(r, m, cfg, c, &err);
  } else if (rc == BERTH_OK) {
    size_t found = 0;
    for (size_t i = 0; rc == BERTH_OK && i < e->n_models; i++) {
      if (strcmp(e->models[i]->cfg->name, name) != 0)
        continue;
      found++;
      rc = load_one(r, e->models[i], NULL, c, &err);
    }
    if (found == 0)
      rc = berth_errf(&err, BERTH_E_NOT_FOUND,
                      "Request for unknown model: "
                      "'%.128s' is not found; to add a model, give its entry "
                      "in parameters.config",
                      name);
  }
  json_decref(parsed);
  json_decref(merged);
  berth_repo_files_remove(fdir); /* written, then refused */
  free(fdir);
  if (rc == BERTH_E_CONFIG || rc == BERTH_E_INVALID ||
      rc == BERTH_E_NOT_FOUND) {
    /* Triton's clients look for "failed to load" in a refused load */
    char msg[BERTH_ERRMSG_SIZE + 160];
    snprintf(msg, sizeof msg, "failed to load '%.128s': %s", name, err.msg);
    call_fail(c, rc, msg);
  } else if (rc != BERTH_OK) {
    call_fail(c, rc, err.msg);
  }
  ensure_tick(r);
  call_settle(c, BERTH_OK, "");
}

void berth_repository_load(berth_engine *e, const char *name, json_t *config,
                           bool trusted, berth_repo_done_cb done, void *arg) {
  berth_repository_load_files(e, name, config, trusted, NULL, done, arg);
}

void berth_repository_load_files(berth_engine *e, const char *name,
                                 json_t *config, bool trusted,
                                 const berth_repo_files *files,
                                 berth_repo_done_cb done, void *arg) {
  berth_errmsg err;
  if (berth_repo_mode_allows(&e->cfg, &err) != BERTH_OK) {
    done(arg, BERTH_E_FORBIDDEN, err.msg);
    return;
  }
  repo_load(e, name, config, trusted, files, done, arg);
}

/* ---- start ------------------------------------------------------------------ */

int berth_repository_start(berth_engine *e, berth_errmsg *err) {
  struct berth_repository *r = repo_of(e);
  if (r == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int rc = berth_repo_roots_init(&r->roots, e->cfg.repositories,
                                 e->cfg.n_repositories, err);
  if (rc != BERTH_OK)
    return rc;
  char n[32];
  snprintf(n, sizeof n, "%zu", r->roots.n);
  berth_log_kv(BERTH_LOG_INFO, "model control", "mode",
               e->cfg.model_control_mode ? e->cfg.model_control_mode : "none",
               "repositories", n, NULL);
  return BERTH_OK;
}

/* ---- teardown --------------------------------------------------------------- */

void berth_repository_free(berth_engine *e) {
  struct berth_repository *r = e->repo;
  if (r == NULL)
    return;
  while (r->ops != NULL) {
    settle_all(&r->ops->unload_waits, BERTH_E_SHUTDOWN, "stopped");
    settle_all(&r->ops->load_waits, BERTH_E_SHUTDOWN, "stopped");
    op_remove(r, r->ops);
  }
  for (size_t i = 0; i < r->n_done_reps; i++)
    berth_replace_free(r->done_reps[i]);
  free(r->done_reps);
  berth_repo_roots_clear(&r->roots);
  for (size_t i = 0; i < r->n_cfgs; i++)
    cfg_destroy(r->cfgs[i]);
  free(r->cfgs);
  free(r);
  e->repo = NULL;
}
