/* Berth engine: model versions — lookup by name and version, readiness,
 * and the effective signature (declared in the config, else reported by the
 * worker's READY frame). */
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "autoscale.h"
#include "engine.h"
#include "log.h"
#include "sequence.h"

static void specs_free(berth_tensor_spec *s, size_t n) {
  if (s == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    free(s[i].name);
  free(s);
}

static int specs_copy(const berth_tensor_spec *src, size_t n,
                      berth_tensor_spec **out) {
  *out = NULL;
  if (n == 0)
    return BERTH_OK;
  berth_tensor_spec *d = calloc(n, sizeof *d);
  if (d == NULL)
    return BERTH_E_NOMEM;
  for (size_t i = 0; i < n; i++) {
    d[i] = src[i];
    d[i].name = strdup(src[i].name);
    if (d[i].name == NULL) {
      specs_free(d, i);
      return BERTH_E_NOMEM;
    }
  }
  *out = d;
  return BERTH_OK;
}

/* Takes the config's own parts: platform, declared signature, batch size.
 * The model's previous ones must be freed already. */
static int apply_config(berth_model *m, const berth_model_config *cfg,
                        berth_errmsg *err) {
  m->cfg = cfg;
  berth_model_pick_ops(m);
  m->max_batch_size = cfg->max_batch_size;
  m->decoupled = cfg->decoupled;
  if (cfg->platform != NULL) {
    m->platform = strdup(cfg->platform);
    if (m->platform == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  if (cfg->inputs_declared) {
    if (specs_copy(cfg->inputs, cfg->n_inputs, &m->inputs) != BERTH_OK)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    m->n_inputs = cfg->n_inputs;
    m->signature_known = true;
  }
  if (cfg->outputs_declared) {
    if (specs_copy(cfg->outputs, cfg->n_outputs, &m->outputs) != BERTH_OK)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    m->n_outputs = cfg->n_outputs;
  }
  return BERTH_OK;
}

int berth_model_init(berth_model *m, berth_engine *e,
                     const berth_model_config *cfg, berth_errmsg *err) {
  memset(m, 0, sizeof *m);
  m->engine = e;
  m->cfg = cfg;
  m->state = BERTH_MODEL_LOADING;
  berth_model_metrics_init(&m->metrics);
  berth_sched_init(m);
  return apply_config(m, cfg, err);
}

int berth_model_reconfigure(berth_model *m, const berth_model_config *cfg,
                            berth_errmsg *err) {
  berth_sched_sequences_reset(m);
  free(m->platform);
  specs_free(m->inputs, m->n_inputs);
  specs_free(m->outputs, m->n_outputs);
  m->platform = NULL;
  m->inputs = m->outputs = NULL;
  m->n_inputs = m->n_outputs = 0;
  m->signature_known = false;
  m->load_error[0] = '\0';
  return apply_config(m, cfg, err);
}

void berth_model_free(berth_model *m) {
  if (m->ops != NULL && m->ops->stop != NULL) /* a native backend's model */
    m->ops->stop(m);
  if (m->seqs != NULL) /* its jobs are gone or never come back */
    berth_seq_table_orphan(m->seqs);
  free(m->as);
  free(m->platform);
  specs_free(m->inputs, m->n_inputs);
  specs_free(m->outputs, m->n_outputs);
  memset(m, 0, sizeof *m);
}

/* Numeric strings compare as numbers, so version "10" is newer than "9". */
static int version_cmp(const char *a, const char *b) {
  char *ea, *eb;
  unsigned long long na = strtoull(a, &ea, 10);
  unsigned long long nb = strtoull(b, &eb, 10);
  if (*a != '\0' && *ea == '\0' && *b != '\0' && *eb == '\0')
    return na < nb ? -1 : na > nb;
  return strcmp(a, b);
}

static bool str_eq(const char *s, const char *p, size_t n) {
  return strlen(s) == n && memcmp(s, p, n) == 0;
}

/* How much an unversioned request wants a version: ready ones first, then
 * those in service but not ready (loading, failed, being unloaded), then
 * unloaded ones. */
static int find_rank(const berth_model *m) {
  switch (m->state) {
  case BERTH_MODEL_READY:
    return m->n_ready > 0 || m->asleep ? 0 : 1;
  case BERTH_MODEL_UNAVAILABLE:
    return 2;
  default:
    return 1;
  }
}

berth_model *berth_model_find(berth_engine *e, const char *name,
                              size_t name_len, const char *version,
                              size_t version_len) {
  berth_model *best = NULL;
  for (size_t i = 0; i < e->n_models; i++) {
    berth_model *m = e->models[i];
    if (!str_eq(m->cfg->name, name, name_len))
      continue;
    if (version != NULL) {
      if (str_eq(m->cfg->version, version, version_len))
        return m;
      continue;
    }
    int r = find_rank(m), rb = best != NULL ? find_rank(best) : 3;
    if (r < rb ||
        (r == rb && version_cmp(m->cfg->version, best->cfg->version) > 0))
      best = m;
  }
  return best;
}

bool berth_model_name_exists(berth_engine *e, const char *name, size_t len) {
  return berth_model_find(e, name, len, NULL, 0) != NULL;
}

bool berth_model_ready(const berth_model *m) { return m->ops->ready(m); }

int berth_model_submit(berth_model *m, berth_job *job, berth_errmsg *err) {
  return m->ops->submit(m, job, err);
}

const char *berth_model_state_name(const berth_model *m, char *reason,
                                   size_t cap) {
  return m->ops->state(m, reason, cap);
}

void berth_model_not_ready_message(const berth_model *m, char *out,
                                   size_t cap) {
  char why[512];
  if (m->ops->composite) { /* its state names the step that holds it up */
    m->ops->state(m, why, sizeof why);
    snprintf(out, cap, "%s '%.100s' is not ready: %.300s", m->ops->kind,
             m->cfg->name, why);
    return;
  }
  const char *w = m->engine->draining ? "the server is shutting down"
                  : m->state == BERTH_MODEL_FAILED      ? m->load_error
                  : m->state == BERTH_MODEL_UNLOADING   ? "it is being unloaded"
                  : m->state == BERTH_MODEL_UNAVAILABLE ? "it was unloaded"
                  : m->n_ready == 0 ? "its worker is still loading it"
                                    : "unavailable";
  snprintf(out, cap, "model '%.100s' version '%.100s' is not ready: %.300s",
           m->cfg->name, m->cfg->version, w);
}

berth_model *berth_composite_find(berth_engine *e, const char *name,
                                  size_t name_len, const char *version,
                                  size_t version_len) {
  if (version != NULL && !(version_len == 1 && version[0] == '1'))
    return NULL;
  if (berth_model_name_exists(e, name, name_len))
    return NULL; /* a worker-backed model of that name comes first */
  for (size_t i = 0; i < e->n_composites; i++) {
    berth_model *c = e->composites[i];
    if (strlen(c->cfg->name) == name_len &&
        memcmp(c->cfg->name, name, name_len) == 0) {
      if (c->ops->refresh != NULL)
        c->ops->refresh(c);
      return c;
    }
  }
  return NULL;
}

int berth_engine_add_composite(berth_engine *e, berth_model *m,
                               berth_errmsg *err) {
  berth_model **grown =
      realloc(e->composites, (e->n_composites + 1) * sizeof *grown);
  if (grown == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  e->composites = grown;
  e->composites[e->n_composites++] = m;
  return BERTH_OK;
}

/* ---- the worker-backed model's operations ------------------------------- */

/* Asleep (scaled to zero, evicted): ready, a request wakes it
 * (docs/autoscaling.md). */
static bool worker_ready(const berth_model *m) {
  return m->state == BERTH_MODEL_READY && (m->n_ready > 0 || m->asleep) &&
         !m->engine->draining;
}

/* Queues the job; a model asleep wakes (autoscale.c). */
static int worker_submit(berth_model *m, berth_job *job, berth_errmsg *err) {
  int rc = berth_sched_submit(m, job, err);
  if (rc == BERTH_OK)
    berth_autoscale_submitted(m);
  return rc;
}

static const char *worker_state(const berth_model *m, char *reason,
                                size_t cap) {
  const char *why = "", *state;
  switch (m->state) {
  case BERTH_MODEL_READY:
    state = m->n_ready > 0 || m->asleep ? "READY" : "LOADING";
    if (m->n_ready == 0)
      why = m->asleep ? "asleep: no worker runs; a request starts one"
                      : "no worker is ready";
    break;
  case BERTH_MODEL_LOADING:
    state = "LOADING";
    break;
  case BERTH_MODEL_FAILED:
    state = "UNAVAILABLE";
    why = m->load_error;
    break;
  case BERTH_MODEL_UNLOADING:
    state = "UNLOADING";
    why = "being unloaded";
    break;
  default:
    state = "UNAVAILABLE";
    why = m->load_error[0] != '\0' ? m->load_error : "unloaded";
  }
  snprintf(reason, cap, "%s", why);
  return state;
}

const berth_model_ops berth_worker_model_ops = {.kind = "model",
                                                .composite = false,
                                                .submit = worker_submit,
                                                .ready = worker_ready,
                                                .state = worker_state};

void berth_model_pick_ops(berth_model *m) {
  const char *b = json_string_value(json_object_get(m->cfg->entry, "backend"));
  bool native = b != NULL && strcmp(b, "native") == 0;
  m->ops = native && m->engine->native_ops != NULL ? m->engine->native_ops
                                                   : &berth_worker_model_ops;
}

int berth_model_start(berth_model *m, berth_errmsg *err) {
  if (m->ops->start != NULL)
    return m->ops->start(m, err);
  return berth_supervisor_start(m, err);
}

bool berth_server_ready(const berth_engine *e) {
  if (e->draining)
    return false;
  for (size_t i = 0; i < e->n_models; i++) {
    const berth_model *m = e->models[i];
    bool unloaded = m->state == BERTH_MODEL_UNLOADING ||
                    m->state == BERTH_MODEL_UNAVAILABLE;
    if (!unloaded && !berth_model_ready(m)) /* unloaded on purpose: ignored */
      return false;
  }
  return true;
}

bool berth_model_accepting(const berth_model *m) {
  if (m->engine->draining)
    return false;
  return berth_model_ready(m) ||
         (m->has_served && m->state == BERTH_MODEL_LOADING);
}

/* Parses [{"name":..,"datatype":..,"shape":[..][,"optional":true]}, ...]
 * from a worker. */
static int parse_specs(json_t *arr, const char *what, berth_tensor_spec **out,
                       size_t *n_out, berth_errmsg *err) {
  *out = NULL;
  *n_out = 0;
  if (arr == NULL)
    return BERTH_OK;
  if (!json_is_array(arr) || json_array_size(arr) > 1024)
    return berth_errf(err, BERTH_E_PARSE, "READY: %s must be a list", what);
  size_t n = json_array_size(arr);
  if (n == 0)
    return BERTH_OK;
  berth_tensor_spec *s = calloc(n, sizeof *s);
  if (s == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    json_t *it = json_array_get(arr, i);
    const char *name = json_string_value(json_object_get(it, "name"));
    const char *dt = json_string_value(json_object_get(it, "datatype"));
    json_t *shape = json_object_get(it, "shape");
    berth_dtype d =
        dt ? berth_dtype_from_name(dt, strlen(dt)) : BERTH_DT_INVALID;
    if (name == NULL || *name == '\0' || d == BERTH_DT_INVALID ||
        !json_is_array(shape) || json_array_size(shape) > BERTH_MAX_DIMS) {
      specs_free(s, i);
      return berth_errf(err, BERTH_E_PARSE,
                        "READY: %s[%zu] needs a name, a known datatype and a "
                        "shape of at most %d dimensions",
                        what, i, BERTH_MAX_DIMS);
    }
    s[i].name = strdup(name);
    if (s[i].name == NULL) {
      specs_free(s, i);
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    }
    s[i].dtype = d;
    s[i].optional = json_is_true(json_object_get(it, "optional"));
    s[i].ndim = (uint32_t)json_array_size(shape);
    for (size_t k = 0; k < s[i].ndim; k++) {
      json_t *v = json_array_get(shape, k);
      json_int_t dim = json_is_integer(v) ? json_integer_value(v) : -2;
      if (dim < -1) {
        specs_free(s, i + 1);
        return berth_errf(err, BERTH_E_PARSE,
                          "READY: %s[%zu].shape holds a bad dimension", what,
                          i);
      }
      s[i].shape[k] = dim;
    }
  }
  *out = s;
  *n_out = n;
  return BERTH_OK;
}

int berth_model_adopt_ready(berth_model *m, const char *text, size_t len,
                            berth_errmsg *err) {
  json_error_t jerr;
  json_t *doc = json_loadb(text, len, 0, &jerr);
  if (doc == NULL || !json_is_object(doc)) {
    json_decref(doc);
    return berth_errf(err, BERTH_E_PARSE, "READY payload is not a JSON object");
  }
  int rc = BERTH_OK;
  const char *platform = json_string_value(json_object_get(doc, "platform"));
  if (m->platform == NULL && platform != NULL) {
    m->platform = strdup(platform);
    if (m->platform == NULL)
      rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  /* The worker may suggest a batch size when the config left it out. */
  json_t *mbs = json_object_get(doc, "max_batch_size");
  if (rc == BERTH_OK && json_is_integer(mbs) &&
      json_object_get(m->cfg->entry, "max_batch_size") == NULL) {
    json_int_t v = json_integer_value(mbs);
    if (v >= 0 && v <= 1048576)
      m->max_batch_size = (uint32_t)v;
  }
  /* A decoupled model (a generator predict) says so; the config may too. */
  if (json_is_true(json_object_get(doc, "decoupled")))
    m->decoupled = true;
  if (rc == BERTH_OK && !m->cfg->inputs_declared && m->inputs == NULL) {
    rc = parse_specs(json_object_get(doc, "inputs"), "inputs", &m->inputs,
                     &m->n_inputs, err);
    m->signature_known = rc == BERTH_OK && m->n_inputs > 0;
  }
  if (rc == BERTH_OK && !m->cfg->outputs_declared && m->outputs == NULL)
    rc = parse_specs(json_object_get(doc, "outputs"), "outputs", &m->outputs,
                     &m->n_outputs, err);
  json_decref(doc);
  return rc;
}
