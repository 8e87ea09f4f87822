/* Berth engine: Triton's REST extensions that clients and perf_analyzer
 * rely on — model configuration (GET .../config), statistics
 * (GET .../stats, /v2/models/stats) and the model repository
 * (POST /v2/repository/index, .../models/{m}/load, .../unload).
 *
 * The documents follow Triton's JSON forms (model_config.proto and the
 * statistics extension), built from the model's effective signature and
 * its berth_model_stats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repo_access.h"
#include "repo_files.h"
#include "rest.h"

/* ---- configuration ---------------------------------------------------- */

/* Triton's model-config type name of a datatype. */
static const char *config_type(berth_dtype dt) {
  switch (dt) {
  case BERTH_DT_BOOL:
    return "TYPE_BOOL";
  case BERTH_DT_UINT8:
    return "TYPE_UINT8";
  case BERTH_DT_UINT16:
    return "TYPE_UINT16";
  case BERTH_DT_UINT32:
    return "TYPE_UINT32";
  case BERTH_DT_UINT64:
    return "TYPE_UINT64";
  case BERTH_DT_INT8:
    return "TYPE_INT8";
  case BERTH_DT_INT16:
    return "TYPE_INT16";
  case BERTH_DT_INT32:
    return "TYPE_INT32";
  case BERTH_DT_INT64:
    return "TYPE_INT64";
  case BERTH_DT_FP16:
    return "TYPE_FP16";
  case BERTH_DT_FP32:
    return "TYPE_FP32";
  case BERTH_DT_FP64:
    return "TYPE_FP64";
  case BERTH_DT_BYTES:
    return "TYPE_STRING";
  case BERTH_DT_BF16:
    return "TYPE_BF16";
  default:
    return "TYPE_INVALID";
  }
}

/* [{name, data_type, dims}], dims without the batch dimension when the
 * model batches (max_batch_size > 0), as Triton writes them. */
static json_t *config_tensors(const berth_tensor_spec *s, size_t n,
                              bool batched) {
  json_t *arr = json_array();
  for (size_t i = 0; arr != NULL && i < n; i++) {
    json_t *dims = json_array();
    for (uint32_t k = batched ? 1 : 0; dims != NULL && k < s[i].ndim; k++)
      json_array_append_new(dims, json_integer(s[i].shape[k]));
    json_t *t = json_pack("{s:s, s:s, s:o}", "name", s[i].name, "data_type",
                          config_type(s[i].dtype), "dims", dims);
    if (t != NULL && s[i].optional)
      json_object_set_new(t, "optional", json_true());
    if (json_array_append_new(arr, t) != 0) {
      json_decref(arr);
      return NULL;
    }
  }
  return arr;
}

/* Triton's sequence_batching of a model that has one (docs/batching.md),
 * or NULL: the idle timeout, the strategy (oldest: max_sequences as its
 * max_candidate_sequences) and the control inputs the worker fills. */
static json_t *sequence_config(const berth_model *m) {
  const berth_model_config *c = m->cfg;
  json_t *sb = json_object_get(c->entry, "sequence_batching");
  if (sb == NULL)
    return NULL;
  const char *st = json_string_value(json_object_get(sb, "strategy"));
  bool oldest = st != NULL && strcmp(st, "oldest") == 0;
  json_t *doc = json_pack("{s:I}", "max_sequence_idle_microseconds",
                          (json_int_t)c->seq_idle_us);
  json_t *how =
      oldest
          ? json_pack("{s:I, s:I, s:[]}", "max_candidate_sequences",
                      (json_int_t)c->seq_max_sequences,
                      "max_queue_delay_microseconds",
                      (json_int_t)c->max_queue_delay_us, "preferred_batch_size")
          : json_object();
  json_t *controls = json_array();
  if (doc == NULL || how == NULL || controls == NULL ||
      json_object_set_new(doc, oldest ? "oldest" : "direct", how) != 0 ||
      json_object_set(doc, "control_input", controls) != 0) {
    json_decref(how);
    json_decref(controls);
    json_decref(doc);
    return NULL;
  }
  static const char *const keys[] = {"start", "end", "ready", "corrid"};
  static const char *const kinds[] = {
      "CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END",
      "CONTROL_SEQUENCE_READY", "CONTROL_SEQUENCE_CORRID"};
  json_t *ci = json_object_get(sb, "control_inputs");
  for (size_t i = 0; i < 4; i++) {
    const char *name = json_string_value(json_object_get(ci, keys[i]));
    if (name == NULL)
      continue;
    json_t *ctl = i < 3 ? json_pack("{s:s, s:[i,i]}", "kind", kinds[i],
                                    "int32_false_true", 0, 1)
                        : json_pack("{s:s, s:s}", "kind", kinds[i], "data_type",
                                    "TYPE_UINT64");
    json_t *one =
        ctl ? json_pack("{s:s, s:[o]}", "name", name, "control", ctl) : NULL;
    if (one == NULL || json_array_append_new(controls, one) != 0) {
      json_decref(controls);
      json_decref(doc);
      return NULL;
    }
  }
  json_decref(controls);
  return doc;
}

/* Triton's instance_group: a group per device the instances run on
 * (KIND_GPU with its GPU; KIND_CPU for CPU instances and those left on the
 * server's own devices, docs/gpus.md), or one KIND_CPU group before the
 * workers exist. */
static json_t *instance_groups(const berth_model *m) {
  size_t n = m->n_workers;
  int *devices = malloc((n ? n : 1) * sizeof *devices);
  if (devices == NULL)
    return NULL;
  for (size_t k = 0; k < n; k++)
    devices[k] = berth_supervisor_worker_device(m, k);
  berth_device_group groups[BERTH_MAX_GPUS + 2];
  size_t ng = berth_placement_groups(devices, n, groups,
                                     sizeof groups / sizeof groups[0]);
  free(devices);
  json_t *list = json_array();
  if (ng == 0)
    groups[ng++] = (berth_device_group){
        .device = BERTH_DEVICE_CPU, .count = m->instances ? m->instances : 1};
  for (size_t g = 0; list != NULL && g < ng; g++) {
    bool gpu = groups[g].device >= 0;
    json_t *one = json_pack("{s:s, s:I, s:s}", "name", m->cfg->name, "count",
                            (json_int_t)groups[g].count, "kind",
                            gpu ? "KIND_GPU" : "KIND_CPU");
    if (one != NULL && gpu)
      json_object_set_new(one, "gpus", json_pack("[i]", groups[g].device));
    if (one == NULL || json_array_append_new(list, one) != 0) {
      json_decref(list);
      return NULL;
    }
  }
  return list;
}

void berth_rest_model_config(berth_engine *e, berth_http_req *req,
                             berth_model *m) {
  const berth_model_config *c = m->cfg;
  uint32_t mbs = m->max_batch_size; /* effective: config or runtime hint */
  json_t *doc =
      json_pack("{s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:{s:b}}", "name", c->name,
                "platform", m->platform ? m->platform : "", "backend",
                c->runtime, "max_batch_size", (json_int_t)mbs, "input",
                config_tensors(m->inputs, m->n_inputs, mbs > 0), "output",
                config_tensors(m->outputs, m->n_outputs, mbs > 0),
                "instance_group", instance_groups(m),
                "model_transaction_policy", "decoupled", (int)m->decoupled);
  json_t *seq = doc != NULL ? sequence_config(m) : NULL;
  if (seq != NULL && json_object_set_new(doc, "sequence_batching", seq) != 0) {
    json_decref(doc);
    doc = NULL;
  }
  if (doc != NULL && mbs > 0 && seq == NULL) {
    json_t *pref = json_array();
    for (uint32_t i = 0; pref != NULL && i < c->n_preferred_batch_sizes; i++)
      json_array_append_new(pref, json_integer(c->preferred_batch_sizes[i]));
    json_t *db = json_pack("{s:I, s:o}", "max_queue_delay_microseconds",
                           (json_int_t)c->max_queue_delay_us,
                           "preferred_batch_size", pref);
    if (db == NULL || json_object_set_new(doc, "dynamic_batching", db) != 0) {
      json_decref(doc);
      doc = NULL;
    }
  }
  berth_rest_respond_doc(e, req, 200, doc);
}

/* ---- statistics ------------------------------------------------------- */

static json_t *duration(const berth_duration_stat *d) {
  return json_pack("{s:I, s:I}", "count", (json_int_t)d->count, "ns",
                   (json_int_t)d->ns);
}

/* Triton's fields, and Berth's "instances": the autoscaler's desired and
 * the ready worker instances (docs/autoscaling.md). */
static json_t *model_stats(const berth_model *m) {
  const berth_model_stats *s = &m->stats;
  static const berth_duration_stat zero = {0, 0};
  return json_pack(
      "{s:s, s:s, s:I, s:I, s:I, s:{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o},"
      " s:[], s:[], s:{s:I, s:I}}",
      "name", m->cfg->name, "version", m->cfg->version, "last_inference",
      (json_int_t)s->last_inference_ms, "inference_count",
      (json_int_t)s->inference_count, "execution_count",
      (json_int_t)s->execution_count, "inference_stats", "success",
      duration(&s->success), "fail", duration(&s->fail), "queue",
      duration(&s->queue), "compute_input", duration(&s->compute_input),
      "compute_infer", duration(&s->compute_infer), "compute_output",
      duration(&s->compute_output), "cache_hit", duration(&zero), "cache_miss",
      duration(&zero), "batch_stats", "memory_usage", "instances", "desired",
      (json_int_t)m->desired, "ready", (json_int_t)m->n_ready);
}

void berth_rest_model_stats(berth_engine *e, berth_http_req *req,
                            berth_model *m, bool all_versions) {
  json_t *arr = json_array();
  for (size_t i = 0; arr != NULL && i < e->n_models; i++) {
    berth_model *x = e->models[i];
    bool want = m == NULL || x == m ||
                (all_versions && strcmp(x->cfg->name, m->cfg->name) == 0);
    if (want && json_array_append_new(arr, model_stats(x)) != 0) {
      json_decref(arr);
      arr = NULL;
    }
  }
  /* pipelines are not in e->models: one asked for, or all of them */
  for (size_t i = 0; arr != NULL && i < e->n_composites; i++) {
    berth_model *x = e->composites[i];
    if ((m == NULL || x == m) && json_array_append_new(arr, model_stats(x))) {
      json_decref(arr);
      arr = NULL;
    }
  }
  berth_rest_respond_doc(e, req, 200,
                         arr ? json_pack("{s:o}", "model_stats", arr) : NULL);
}

/* ---- repository ------------------------------------------------------- */

/* A load or unload in progress: the request is answered when the
 * repository calls back. */
typedef struct repo_req {
  berth_engine *e;
  berth_http_req *req; /* one reference held */
  char name[260];
} repo_req;

static void repo_done(void *arg, int status, const char *msg) {
  repo_req *rr = arg;
  if (status != BERTH_OK) {
    berth_rest_respond_error(rr->e, rr->req, status, msg);
  } else {
    json_t *all = berth_repository_index(rr->e, false), *mine = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(all, i, v) {
      if (strcmp(json_string_value(json_object_get(v, "name")), rr->name) == 0)
        json_array_append(mine, v);
    }
    json_decref(all);
    berth_rest_respond_doc(
        rr->e, rr->req, 200,
        mine ? json_pack("{s:s, s:o}", "name", rr->name, "versions", mine)
             : NULL);
  }
  berth_http_req_unref(rr->req);
  free(rr);
}

/* The request body as a JSON object (NULL for an empty body). */
static int body_object(berth_http_req *req, json_t **out, berth_errmsg *err) {
  size_t len = 0;
  const char *body = berth_http_body(req, &len);
  *out = NULL;
  if (body == NULL || len == 0)
    return BERTH_OK;
  json_error_t jerr;
  *out = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
  if (*out == NULL)
    return berth_errf(err, BERTH_E_PARSE,
                      "request is not valid JSON: %s "
                      "(byte %d)",
                      jerr.text, jerr.position);
  if (!json_is_object(*out)) {
    json_decref(*out);
    *out = NULL;
    return berth_errf(err, BERTH_E_INVALID, "request must be a JSON object");
  }
  json_t *p = json_object_get(*out, "parameters");
  if (p != NULL && !json_is_object(p)) {
    json_decref(*out);
    *out = NULL;
    return berth_errf(err, BERTH_E_INVALID, "parameters must be an object");
  }
  return BERTH_OK;
}

static void repository_index(berth_engine *e, berth_http_req *req,
                             json_t *body) {
  json_t *ready = json_object_get(body, "ready");
  if (ready != NULL && !json_is_boolean(ready)) {
    berth_rest_respond_error(e, req, BERTH_E_INVALID,
                             "ready must be true or false");
    return;
  }
  berth_rest_respond_doc(e, req, 200,
                         berth_repository_index(e, json_is_true(ready)));
}

/* The "file:<path>" parameters of a load (base64 text) into files; false
 * when the request was answered (no admin token: nothing is decoded or
 * written; a bad path, bad base64, too many bytes). */
static bool request_files(berth_engine *e, berth_http_req *req,
                          berth_slice name, json_t *params, bool admin,
                          berth_repo_files *files) {
  const char *key;
  json_t *v;
  berth_errmsg err;
  int rc = BERTH_OK;
  bool refused = false;
  json_object_foreach(params, key, v) {
    if (!berth_repo_is_file_key(key))
      continue;
    rc = berth_repo_files_check_key(key, &err);
    if (rc != BERTH_OK)
      break;
    if (!admin)
      refused = true; /* after every path is checked; nothing decoded */
    else if (!json_is_string(v))
      rc = berth_errf(&err, BERTH_E_CONFIG,
                      "parameters \"%.200s\": expected the file's contents "
                      "as base64 text",
                      key);
    else
      rc = berth_repo_files_add_base64(files, key, json_string_value(v),
                                       json_string_length(v),
                                       e->cfg.max_body_bytes, &err);
    if (rc != BERTH_OK)
      break;
  }
  if (rc == BERTH_OK && refused)
    rc = berth_repo_files_forbidden(&err);
  if (rc == BERTH_OK)
    return true;
  berth_repo_files_clear(files);
  if (rc == BERTH_E_CONFIG) {
    /* Triton's words for a model folder it cannot read */
    char msg[BERTH_ERRMSG_SIZE + 200];
    snprintf(msg, sizeof msg,
             "failed to load '%.*s': failed to poll from model "
             "repository: %s",
             (int)name.n, name.p, err.msg);
    berth_rest_respond_error(e, req, rc, msg);
  } else {
    berth_rest_respond_error(e, req, rc, err.msg);
  }
  return false;
}

/* Starts a load or an unload of the model named by seg. */
static void repository_change(berth_engine *e, berth_http_req *req,
                              berth_slice name, bool load, json_t *body) {
  json_t *params = json_object_get(body, "parameters");
  json_t *config = json_object_get(params, "config");
  json_t *version = json_object_get(params, "version");
  char ver[260];
  size_t hl = 0;
  const char *authz = berth_http_header(req, "authorization", &hl);
  bool admin = berth_auth_is_admin(&e->auth, authz, authz ? hl : 0);
  if (load && config != NULL && !json_is_object(config) &&
      !json_is_string(config)) {
    berth_rest_respond_error(e, req, BERTH_E_CONFIG,
                             "parameters.config: expected a model entry (a "
                             "JSON object, or JSON/YAML text)");
    return;
  }
  berth_repo_files files = {0};
  if (load && !request_files(e, req, name, params, admin, &files))
    return;
  if (!load && json_is_integer(version) && json_integer_value(version) >= 0) {
    snprintf(ver, sizeof ver, "%" JSON_INTEGER_FORMAT,
             json_integer_value(version));
  } else if (!load && version != NULL) {
    if (!json_is_string(version) ||
        !berth_slice_valid_name((berth_slice){json_string_value(version),
                                              json_string_length(version)})) {
      berth_rest_respond_error(e, req, BERTH_E_INVALID,
                               "parameters.version must be a model version");
      return;
    }
    snprintf(ver, sizeof ver, "%s", json_string_value(version));
  }
  repo_req *rr = calloc(1, sizeof *rr);
  if (rr == NULL) {
    berth_repo_files_clear(&files);
    berth_rest_respond_error(e, req, BERTH_E_NOMEM, "out of memory");
    return;
  }
  rr->e = e;
  rr->req = req;
  snprintf(rr->name, sizeof rr->name, "%.*s", (int)name.n, name.p);
  berth_http_req_ref(req);
  if (load) {
    berth_repository_load_files(e, rr->name, config, admin, &files, repo_done,
                                rr);
    berth_repo_files_clear(&files); /* written (or refused) by now */
  } else {
    berth_repository_unload(e, rr->name, version != NULL ? ver : NULL,
                            repo_done, rr);
  }
}

void berth_rest_repository_index(berth_engine *e, berth_http_req *req,
                                 const berth_rest_match *mt) {
  (void)mt;
  berth_errmsg err;
  json_t *body = NULL;
  int rc = body_object(req, &body, &err);
  if (rc != BERTH_OK) {
    berth_rest_respond_error(e, req, rc, err.msg);
    return;
  }
  repository_index(e, req, body);
  json_decref(body);
}

/* POST /v2/repository/models/{model}/load and unload; the route table
 * asked for an admin token when tokens are configured. */
static void repository_load_or_unload(berth_engine *e, berth_http_req *req,
                                      const berth_rest_match *mt, bool load) {
  berth_errmsg err;
  if (berth_repo_mode_allows(&e->cfg, &err) != BERTH_OK) {
    berth_rest_respond_error(e, req, BERTH_E_FORBIDDEN, err.msg);
    return;
  }
  if (!berth_slice_valid_name(mt->model)) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, "invalid model name");
    return;
  }
  json_t *body = NULL;
  int rc = body_object(req, &body, &err);
  if (rc != BERTH_OK) {
    berth_rest_respond_error(e, req, rc, err.msg);
    return;
  }
  repository_change(e, req, mt->model, load, body);
  json_decref(body);
}

void berth_rest_repository_load(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt) {
  repository_load_or_unload(e, req, mt, true);
}

void berth_rest_repository_unload(berth_engine *e, berth_http_req *req,
                                  const berth_rest_match *mt) {
  repository_load_or_unload(e, req, mt, false);
}

/* ---- handlers of the route table (rest_routes.c) ----------------------- */

void berth_rest_config(berth_engine *e, berth_http_req *req,
                       const berth_rest_match *mt) {
  struct berth_route_stat *routed;
  berth_model *m = berth_rest_find_model(e, req, mt, false, false, &routed);
  if (m != NULL)
    berth_rest_model_config(e, req, m);
}

void berth_rest_stats(berth_engine *e, berth_http_req *req,
                      const berth_rest_match *mt) {
  struct berth_route_stat *routed;
  berth_model *m = berth_rest_find_model(e, req, mt, false, true, &routed);
  if (m != NULL)
    berth_rest_model_stats(e, req, m, mt->version.p == NULL);
}

void berth_rest_all_stats(berth_engine *e, berth_http_req *req,
                          const berth_rest_match *mt) {
  (void)mt;
  berth_rest_model_stats(e, req, NULL, true);
}
