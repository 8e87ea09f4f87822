/* Berth engine: KServe's v1 protocol over REST.
 *
 *   GET  /v1/models                 {"models": [names]}
 *   GET  /v1/models/{m}             {"name": m, "ready": bool}
 *
 * The two GETs also carry OpenAI's model list and model object in the same
 * document ("object", "data"; "id", "object", "created", "owned_by"), so
 * that OpenAI's clients read them too (docs/openai.md). The rest of the
 * OpenAI routes are openai.c's.
 *   POST /v1/models/{m}:predict     {"instances": [...]} -> {"predictions": [...]}
 *
 * v1 has no versions: a model is served by its newest ready version. The
 * instances (or "inputs", an alias) feed the model's single input: its
 * datatype comes from the signature, its shape from the nesting of the
 * lists ([number of instances, ...]), which must be rectangular. The answer
 * is the model's first output (in its signature's order) as nested lists
 * (codec/codec_kserve_v1.c writes it).
 * Errors are {"error": "..."} with the same HTTP statuses as v2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec_json.h"
#include "codec_kserve_v1.h"
#include "rest.h"
#include "router.h"

/* ---- request ------------------------------------------------------------ */

/* Shape of a nested list: the lengths along the first elements. */
static int nested_shape(json_t *v, int64_t *shape, uint32_t *ndim,
                        berth_errmsg *err) {
  uint32_t nd = 0;
  while (json_is_array(v)) {
    if (nd == BERTH_MAX_DIMS)
      return berth_errf(err, BERTH_E_INVALID,
                        "instances are nested more than "
                        "%d levels deep",
                        BERTH_MAX_DIMS);
    shape[nd++] = (int64_t)json_array_size(v);
    v = json_array_get(v, 0);
  }
  *ndim = nd;
  return BERTH_OK;
}

/* Checks that every list at depth d has shape[d] items and leaves sit only
 * at depth ndim. */
static bool rectangular(json_t *v, const int64_t *shape, uint32_t ndim,
                        uint32_t d) {
  if (d == ndim)
    return !json_is_array(v);
  if (!json_is_array(v) || (int64_t)json_array_size(v) != shape[d])
    return false;
  for (size_t i = 0; i < json_array_size(v); i++)
    if (!rectangular(json_array_get(v, i), shape, ndim, d + 1))
      return false;
  return true;
}

/* Turns the v1 body into a request for m's single input. */
static int decode_v1(berth_engine *e, berth_http_req *req, berth_model *m,
                     berth_infer_request *r, berth_errmsg *err) {
  memset(r, 0, sizeof *r);
  if (!m->signature_known || m->n_inputs != 1) {
    char names[300] = "";
    size_t off = 0;
    for (size_t i = 0; i < m->n_inputs && off < sizeof names; i++)
      off += (size_t)snprintf(names + off, sizeof names - off, "%s'%s'",
                              i ? ", " : "", m->inputs[i].name);
    if (!m->signature_known)
      return berth_errf(err, BERTH_E_UNSUPPORTED,
                        "model '%s' does not "
                        "declare its inputs, so KServe v1 instances cannot be "
                        "mapped to them; declare inputs in its berth.yaml or "
                        "use /v2/models/%s/infer",
                        m->cfg->name, m->cfg->name);
    return berth_errf(err, BERTH_E_UNSUPPORTED,
                      "model '%s' takes %zu inputs "
                      "(%s); KServe v1 :predict can only feed a model with a "
                      "single input: use /v2/models/%s/infer, which names each "
                      "input",
                      m->cfg->name, m->n_inputs, names, m->cfg->name);
  }
  size_t blen = 0;
  const char *body = berth_http_body(req, &blen);
  json_error_t jerr;
  json_t *doc =
      json_loadb(body ? body : "", blen, JSON_REJECT_DUPLICATES, &jerr);
  if (doc == NULL)
    return berth_errf(err, BERTH_E_PARSE,
                      "request is not valid JSON: %s "
                      "(byte %d)",
                      jerr.text, jerr.position);
  json_t *inst = json_object_get(doc, "instances");
  if (inst == NULL)
    inst = json_object_get(doc, "inputs");
  int64_t shape[BERTH_MAX_DIMS];
  uint32_t ndim = 0;
  int rc = BERTH_OK;
  if (!json_is_array(inst))
    rc = berth_errf(err, BERTH_E_INVALID,
                    "the body must be {\"instances\": "
                    "[...]} (or {\"inputs\": [...]}), a list of instances");
  if (rc == BERTH_OK)
    rc = nested_shape(inst, shape, &ndim, err);
  if (rc == BERTH_OK && !rectangular(inst, shape, ndim, 0))
    rc = berth_errf(err, BERTH_E_INVALID,
                    "instances must be a rectangular "
                    "nested list (every row of the same length, values at "
                    "the same depth)");
  char *text = NULL;
  if (rc == BERTH_OK) {
    const berth_tensor_spec *in = &m->inputs[0];
    json_t *jshape = json_array();
    for (uint32_t k = 0; jshape != NULL && k < ndim; k++)
      json_array_append_new(jshape, json_integer(shape[k]));
    json_t *v2 = json_pack("{s:[{s:s, s:s, s:o, s:O}]}", "inputs", "name",
                           in->name, "datatype", berth_dtype_name(in->dtype),
                           "shape", jshape, "data", inst);
    text = v2 ? json_dumps(v2, JSON_COMPACT) : NULL;
    json_decref(v2);
    if (text == NULL)
      rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  json_decref(doc);
  if (rc != BERTH_OK)
    return rc;
  berth_json_limits lim = {.max_inputs = 1,
                           .max_tensor_bytes = e->cfg.max_body_bytes * 4,
                           .max_depth = 64};
  rc = berth_json_decode_infer_request(text, strlen(text), &lim, r, err);
  free(text);
  if (rc == BERTH_OK && m->n_outputs > 0) {
    r->outputs = calloc(1, sizeof *r->outputs);
    if (r->outputs != NULL)
      r->outputs[0].name = strdup(m->outputs[0].name);
    if (r->outputs == NULL || r->outputs[0].name == NULL)
      rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
    else
      r->n_outputs = 1;
  }
  if (rc != BERTH_OK)
    berth_infer_request_clear(r);
  return rc;
}

/* ---- routes ------------------------------------------------------------- */

/* OpenAI's model object for name (GET /v1/models[/{id}] also answers
 * OpenAI's clients: docs/openai.md). created: the Unix time of the
 * process's first model listing, the same for every model afterwards. */
static json_t *openai_model(const char *name) {
  static time_t created = 0;
  if (created == 0)
    created = time(NULL);
  return json_pack("{s:s, s:s, s:I, s:s}", "id", name, "object", "model",
                   "created", (json_int_t)created, "owned_by", "berth");
}

/* {"models": [names]} for KServe v1 and, in the same document,
 * {"object": "list", "data": [model objects]} for OpenAI. */
static void list_models(berth_engine *e, berth_http_req *req) {
  json_t *names = json_array(), *data = json_array();
  for (size_t i = 0; names != NULL && data != NULL && i < e->n_models; i++) {
    const char *n = e->models[i]->cfg->name;
    bool seen = false;
    for (size_t k = 0; k < i && !seen; k++)
      seen = strcmp(e->models[k]->cfg->name, n) == 0;
    if (!seen) {
      json_array_append_new(names, json_string(n));
      json_array_append_new(data, openai_model(n));
    }
  }
  berth_rest_respond_doc(e, req, 200,
                         names != NULL && data != NULL
                             ? json_pack("{s:o, s:s, s:o}", "models", names,
                                         "object", "list", "data", data)
                             : NULL);
}

/* The model a /v1/models/{name} path names (routes, then models, then
 * composites), or NULL after answering 404. infer: the route's target is
 * drawn for an inference (and *routed set). */
static berth_model *v1_model(berth_engine *e, berth_http_req *req,
                             berth_slice name, bool infer,
                             berth_route_stat **routed) {
  char msg[700];
  bool valid = berth_slice_valid_name(name);
  berth_model *m = valid ? berth_router_resolve(e, name.p, name.n,
                                                infer ? req : NULL, routed)
                         : NULL;
  if (m == NULL && valid)
    m = berth_model_find(e, name.p, name.n, NULL, 0);
  if (m == NULL && valid) /* a composite (a pipeline) */
    m = berth_composite_find(e, name.p, name.n, NULL, 0);
  if (m == NULL || m->state == BERTH_MODEL_UNAVAILABLE) {
    snprintf(msg, sizeof msg, "unknown model '%.*s'%s",
             (int)(name.n > 200 ? 200 : name.n), name.p,
             m != NULL ? " (it was unloaded)" : "");
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
    return NULL;
  }
  berth_rest_note_model(req, m);
  return m;
}

void berth_rest_v1_list(berth_engine *e, berth_http_req *req,
                        const berth_rest_match *mt) {
  (void)mt;
  list_models(e, req);
}

void berth_rest_v1_status(berth_engine *e, berth_http_req *req,
                          const berth_rest_match *mt) {
  berth_route_stat *routed = NULL;
  berth_model *m = v1_model(e, req, mt->model, false, &routed);
  if (m == NULL)
    return;
  json_t *doc = openai_model(m->cfg->name);
  if (doc != NULL) {
    json_object_set_new(doc, "name", json_string(m->cfg->name));
    json_object_set_new(doc, "ready", json_boolean(berth_model_ready(m)));
  }
  berth_rest_respond_doc(e, req, 200, doc);
}

void berth_rest_v1_predict(berth_engine *e, berth_http_req *req,
                           const berth_rest_match *mt) {
  berth_route_stat *routed = NULL;
  berth_model *m = v1_model(e, req, mt->model, true, &routed);
  if (m == NULL || !berth_rest_servable(e, req, m))
    return;
  berth_infer_request r;
  berth_errmsg err;
  int rc = decode_v1(e, req, m, &r, &err);
  if (rc == BERTH_OK)
    rc = berth_signature_check(m, &r, &err);
  if (rc != BERTH_OK) {
    berth_infer_request_clear(&r);
    berth_rest_count_fail(m, req, rc, err.msg);
    berth_rest_respond_error(e, req, rc, err.msg);
    return;
  }
  berth_rest_submit(e, req, m, &r, BERTH_REST_KSERVE_V1, false, routed);
}

void berth_rest_v1_not_found(berth_engine *e, berth_http_req *req,
                             berth_slice name_verb) {
  const char *colon = memchr(name_verb.p, ':', name_verb.n);
  if (colon == NULL) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                             "no such endpoint; "
                             "see /v1/models/{name} and "
                             "/v1/models/{name}:predict");
    return;
  }
  berth_slice name = {name_verb.p, (size_t)(colon - name_verb.p)};
  berth_slice verb = {colon + 1, name_verb.n - name.n - 1};
  berth_route_stat *routed = NULL;
  if (v1_model(e, req, name, false, &routed) == NULL)
    return;
  char msg[200];
  snprintf(msg, sizeof msg,
           "':%.*s' is not supported; KServe v1 here "
           "offers ':predict'",
           (int)(verb.n > 40 ? 40 : verb.n), verb.p);
  berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
}
