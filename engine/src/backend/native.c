/* Berth engine: models served by a native backend in berthd's own process
 * (backend: native; docs/native.md).
 *
 * Such a model is a model version like any other: it is in
 * engine->models, requests queue and batch in the scheduler, and its
 * answers are split per request by berth_batch_complete. Only where a batch
 * runs differs: instead of a worker process, a thread of libuv's pool runs
 * it through backend.h (at most `instances` batches at once; ONNX Runtime's
 * own intra-op threads do the math), and the answer comes back to the loop
 * in the work request's after-callback. Loading runs on the pool too, so
 * the loop answers health probes while a model loads.
 *
 * Ownership: the module sets engine->native_ops; each native model owns a
 * berth_native (m->native), freed when the model is unloaded (once its
 * batches and its load are over) or when the engine is freed. A work
 * request owns its batch until after_run hands it to the scheduler.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "engine.h"
#include "log.h"
#include "native.h"

struct berth_native {
  berth_model *m;
  const berth_backend_ops *ops;
  berth_backend *handle; /* owned once loaded */
  uint32_t slots;        /* batches that may run at once */
  uint32_t running;      /* batches on the pool */
  bool loading;          /* a load is on the pool */
  bool stopped;          /* unloaded: free once nothing is on the pool */
  uv_work_t load_req;
  /* the load's result, written on the pool, read in after_load */
  int load_rc;
  berth_errmsg load_err;
  berth_backend_sig sig;
  berth_backend *loaded;
};

typedef struct run_req {
  uv_work_t req;
  berth_native *nat;
  berth_batch *b;
  berth_backend_result res;
  int rc;
  berth_errmsg err;
} run_req;

static void native_free(berth_native *nat) {
  if (nat == NULL)
    return;
  if (nat->handle != NULL && nat->ops != NULL)
    nat->ops->unload(nat->handle);
  berth_backend_sig_clear(&nat->sig);
  free(nat);
}

/* Frees nat once nothing of it is on the pool and it was stopped. */
static void maybe_free(berth_native *nat) {
  if (!nat->stopped || nat->running > 0 || nat->loading)
    return;
  if (nat->m != NULL && nat->m->native == nat)
    nat->m->native = NULL;
  native_free(nat);
}

/* ---- loading ---------------------------------------------------------- */

/* Intra-op threads when the entry's parameters say none, as a Python
 * worker picks them (python/berth/worker.py): OMP_NUM_THREADS when set,
 * else the usable CPUs divided by the batches that may run at once. */
static int default_threads(uint32_t slots) {
  const char *omp = getenv("OMP_NUM_THREADS");
  long v = omp != NULL ? strtol(omp, NULL, 10) : 0;
  if (v > 0 && v <= 1024)
    return (int)v;
  cpu_set_t set;
  int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  int n = cpus / (int)(slots > 0 ? slots : 1);
  return n > 0 ? n : 1;
}

static void load_work(uv_work_t *req) {
  berth_native *nat = req->data;
  if (nat->load_rc != BERTH_OK) /* refused before loading (native_start) */
    return;
  const berth_model_config *cfg = nat->m->cfg;
  json_t *path = json_object_get(cfg->entry, "path");
  const berth_config *ec = &nat->m->engine->cfg;
  berth_backend_opts o = {
      .library = nat->ops == &berth_backend_lgbm  ? ec->native_lightgbm
                 : nat->ops == &berth_backend_xgb ? ec->native_xgboost
                                                  : ec->native_onnxruntime,
      .path = json_string_value(path),
      .params = json_object_get(cfg->entry, "parameters"),
      .threads = default_threads(nat->slots),
      .entry = cfg->entry};
  nat->load_rc = nat->ops->load(&o, &nat->loaded, &nat->sig, &nat->load_err);
}

/* The signature as the READY frame a worker would send, so that the model
 * adopts it by the same rules (a declared signature or batch size wins). */
static json_t *ready_doc(const berth_backend_sig *sig) {
  json_t *doc = json_pack("{s:s, s:i, s:[], s:[]}", "platform", sig->platform,
                          "max_batch_size", (json_int_t)sig->max_batch_size,
                          "inputs", "outputs");
  for (int side = 0; doc != NULL && side < 2; side++) {
    const berth_tensor_spec *s = side == 0 ? sig->inputs : sig->outputs;
    size_t n = side == 0 ? sig->n_inputs : sig->n_outputs;
    json_t *list = json_object_get(doc, side == 0 ? "inputs" : "outputs");
    for (size_t i = 0; i < n; i++) {
      json_t *shape = json_array();
      for (uint32_t k = 0; shape != NULL && k < s[i].ndim; k++)
        json_array_append_new(shape, json_integer(s[i].shape[k]));
      if (shape == NULL ||
          json_array_append_new(
              list, json_pack("{s:s, s:s, s:o}", "name", s[i].name, "datatype",
                              berth_dtype_name(s[i].dtype), "shape", shape)) !=
              0) {
        json_decref(doc);
        return NULL;
      }
    }
  }
  return doc;
}

static int adopt(berth_native *nat, berth_errmsg *err) {
  json_t *doc = ready_doc(&nat->sig);
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int rc = berth_model_adopt_ready(nat->m, text, strlen(text), err);
  free(text);
  return rc;
}

static void fail_load(berth_model *m, const char *msg) {
  snprintf(m->load_error, sizeof m->load_error, "%s",
           m->cfg->quiet_errors ? "the native backend could not load the "
                                  "model file (the server log has why)"
                                : msg);
  m->state = BERTH_MODEL_FAILED;
  berth_sched_fail_queued(m, BERTH_E_UNAVAILABLE, m->load_error);
  berth_log_kv(BERTH_LOG_ERROR, "model failed to load (backend: native)",
               "model", m->cfg->name, "version", m->cfg->version, "error", msg,
               NULL);
  BERTH_OBSERVE(&m->engine->observers, load_failed, m);
}

static void after_load(uv_work_t *req, int status) {
  berth_native *nat = req->data;
  berth_model *m = nat->m;
  nat->loading = false;
  nat->handle = nat->loaded;
  nat->loaded = NULL;
  if (nat->stopped) { /* unloaded while it loaded */
    maybe_free(nat);
    return;
  }
  berth_errmsg err;
  int rc = status != 0 ? berth_errf(&err, BERTH_E_SHUTDOWN, "load cancelled")
           : nat->load_rc != BERTH_OK
               ? berth_errf(&err, nat->load_rc, "%s", nat->load_err.msg)
               : adopt(nat, &err);
  if (rc != BERTH_OK) {
    fail_load(m, err.msg);
    return;
  }
  m->state = BERTH_MODEL_READY;
  m->n_ready = 1;
  m->has_served = true;
  m->load_error[0] = '\0';
  berth_log_kv(BERTH_LOG_INFO, "model ready", "model", m->cfg->name, "version",
               m->cfg->version, "platform", m->platform ? m->platform : "",
               "backend", nat->ops->name, NULL);
  berth_sched_dispatch(m);
}

/* What a native backend cannot do that a worker can. */
static int check_entry(const berth_model *m, berth_errmsg *err) {
  if (json_object_get(m->cfg->entry, "sequence_batching") != NULL ||
      m->cfg->decoupled)
    return berth_errf(err, BERTH_E_CONFIG,
                      "model '%s': backend: native serves neither sequence "
                      "batching nor decoupled models; use backend: python",
                      m->cfg->name);
  return BERTH_OK;
}

static void native_stop(berth_model *m);

/* Starts loading m on the pool. A model the backend cannot serve fails
 * there too, as a load failure (the model is UNAVAILABLE with the reason;
 * under exit_on_error the server stops), not as a failed server start. */
static int native_start(berth_model *m, berth_errmsg *err) {
  if (m->native != NULL) /* a failed load's: let it go */
    native_stop(m);
  berth_native *nat = calloc(1, sizeof *nat);
  if (nat == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  nat->m = m;
  nat->ops = berth_backend_for(m->cfg->runtime);
  if (nat->ops == NULL)
    nat->load_rc = berth_errf(&nat->load_err, BERTH_E_CONFIG,
                              "model '%s': backend: native serves runtimes "
                              "onnx, lightgbm and xgboost only (this one is "
                              "'%s'); use backend: python",
                              m->cfg->name, m->cfg->runtime);
  else
    nat->load_rc = check_entry(m, &nat->load_err);
  nat->slots = m->cfg->instances > 0 ? m->cfg->instances : 1;
  nat->loading = true;
  nat->load_req.data = nat;
  m->native = nat;
  m->instances = nat->slots;
  m->state = BERTH_MODEL_LOADING;
  if (uv_queue_work(m->engine->loop, &nat->load_req, load_work, after_load) !=
      0) {
    m->native = NULL;
    free(nat);
    return berth_errf(err, BERTH_E_INTERNAL, "could not queue the load");
  }
  return BERTH_OK;
}

/* ---- running batches ------------------------------------------------- */

static bool native_can_run(berth_model *m) {
  berth_native *nat = m->native;
  return nat != NULL && nat->handle != NULL && !nat->stopped &&
         nat->running < nat->slots;
}

static void run_work(uv_work_t *req) {
  run_req *r = req->data;
  berth_batch *b = r->b;
  const berth_infer_request *first = &b->jobs[0]->req;
  const berth_tensor *ins = b->inputs ? b->inputs : first->inputs;
  size_t n = b->inputs ? b->n_inputs : first->n_inputs;
  r->rc = r->nat->ops->run(r->nat->handle, ins, n, &r->res, &r->err);
}

static void after_run(uv_work_t *req, int status) {
  run_req *r = req->data;
  berth_native *nat = r->nat;
  berth_batch *b = r->b;
  b->answered_ns = uv_hrtime();
  nat->running--;
  if (status != 0)
    berth_batch_fail(b, BERTH_E_SHUTDOWN, "the server stopped the batch");
  else if (r->rc != BERTH_OK)
    berth_batch_fail(b, r->rc, r->err.msg);
  else
    berth_batch_complete(b, r->res.outputs, r->res.n_outputs, NULL, 0);
  berth_backend_result_free(nat->ops, nat->handle, &r->res);
  free(r);
  berth_model *m = nat->m;
  bool live = m != NULL && m->native == nat;
  maybe_free(nat);
  if (live)
    berth_sched_dispatch(m);
}

static void native_run(berth_model *m, berth_batch *b) {
  berth_native *nat = m->native;
  b->sent_ns = uv_hrtime();
  /* A batch of several requests runs as one tensor per input: the worker
   * path sends the requests' own buffers and never stacks them, so the
   * native path does it here, on the loop, before the pool takes it. */
  if (berth_batch_concat_inputs(b) != BERTH_OK) {
    berth_batch_fail(b, BERTH_E_NOMEM, "out of memory");
    return;
  }
  run_req *r = calloc(1, sizeof *r);
  if (r == NULL) {
    berth_batch_fail(b, BERTH_E_NOMEM, "out of memory");
    return;
  }
  r->nat = nat;
  r->b = b;
  r->req.data = r;
  nat->running++;
  if (uv_queue_work(m->engine->loop, &r->req, run_work, after_run) != 0) {
    nat->running--;
    free(r);
    berth_batch_fail(b, BERTH_E_INTERNAL, "could not queue the batch");
  }
}

static void native_stop(berth_model *m) {
  berth_native *nat = m->native;
  if (nat == NULL)
    return;
  nat->stopped = true;
  m->native = NULL;
  nat->m = nat->running > 0 || nat->loading ? m : NULL;
  maybe_free(nat);
}

/* ---- the model kind ---------------------------------------------------- */

static bool native_ready(const berth_model *m) {
  return m->state == BERTH_MODEL_READY && m->native != NULL &&
         m->native->handle != NULL && !m->engine->draining;
}

static const char *native_state(const berth_model *m, char *reason,
                                size_t cap) {
  return berth_worker_model_ops.state(m, reason, cap);
}

static const berth_model_ops native_ops = {.kind = "model",
                                           .composite = false,
                                           .submit = berth_sched_submit,
                                           .ready = native_ready,
                                           .state = native_state,
                                           .start = native_start,
                                           .can_run = native_can_run,
                                           .run = native_run,
                                           .stop = native_stop};

static int native_init(berth_engine *e, berth_errmsg *err) {
  (void)err;
  e->native_ops = &native_ops;
  for (size_t i = 0; i < e->n_models; i++)
    berth_model_pick_ops(e->models[i]);
  return BERTH_OK;
}

/* A model's native state goes with the model (berth_model_free calls
 * ops->stop): the module itself owns nothing. */
const berth_module berth_native_module = {.name = "native",
                                          .init = native_init};
