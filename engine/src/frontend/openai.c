/* Berth engine: the OpenAI-compatible request routes (openai.h): decoding,
 * the model a request names, its mapping onto the model's inputs, errors
 * in OpenAI's shape. */
#include "openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec_json.h"
#include "router.h"
#include "text.h"

#define JSON_CT                                                                \
  { "content-type", "application/json" }

/* ---- errors ---------------------------------------------------------------- */

bool berth_openai_path(const char *path, size_t len) {
  static const char *const paths[] = {"/v1/chat/completions", "/v1/completions",
                                      "/v1/embeddings"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
    if (len == strlen(paths[i]) && memcmp(path, paths[i], len) == 0)
      return true;
  return false;
}

static const char *error_type(int http_status) {
  switch (http_status) {
  case 401:
    return "authentication_error";
  case 403:
    return "permission_error";
  case 429:
    return "rate_limit_error";
  default:
    return http_status >= 500 ? "server_error" : "invalid_request_error";
  }
}

int berth_openai_error_json(berth_buf *out, int status, const char *msg,
                            const char *param, const char *code) {
  int hs = berth_rest_http_status(status);
  if (code == NULL && hs == 401)
    code = "invalid_api_key";
  json_t *doc =
      json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message",
                msg != NULL ? msg : "", "type", error_type(hs), "param",
                param != NULL && *param ? json_string(param) : json_null(),
                "code", code != NULL ? json_string(code) : json_null());
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL) /* msg not UTF-8, or out of memory */
    return berth_buf_printf(out, "{\"error\":{\"message\":\"internal error\","
                                 "\"type\":\"server_error\",\"param\":null,"
                                 "\"code\":null}}");
  int rc = berth_buf_append(out, text, strlen(text));
  free(text);
  return rc;
}

void berth_openai_respond_error(berth_engine *e, berth_http_req *req,
                                int status, const char *msg, const char *param,
                                const char *code) {
  berth_buf b;
  berth_buf_init(&b, 64 * 1024);
  (void)berth_openai_error_json(&b, status, msg, param, code);
  int hs = berth_rest_http_status(status);
  berth_http_header_kv h[2] = {JSON_CT, {"retry-after", "1"}};
  size_t nh = status == BERTH_E_OVERLOAD ? 2 : 1;
  if (status == BERTH_E_UNAUTHENTICATED) {
    h[1] = (berth_http_header_kv){"www-authenticate", "Bearer realm=\"berth\""};
    nh = 2;
  }
  size_t len = 0;
  char *data = berth_buf_detach(&b, &len);
  berth_rest_respond_take(e, req, hs, h, nh, data, len);
}

/* ---- the model ------------------------------------------------------------- */

/* The model the request's "model" names (a traffic route, a model's newest
 * ready version, a pipeline), or NULL after answering 404 model_not_found
 * or 503. */
static berth_model *find_model(berth_engine *e, berth_http_req *req,
                               const char *name,
                               struct berth_route_stat **routed) {
  size_t n = strlen(name);
  berth_slice s = {name, n};
  berth_model *m = NULL;
  *routed = NULL;
  if (berth_slice_valid_name(s)) {
    m = berth_router_resolve(e, name, n, req, routed);
    if (m == NULL)
      m = berth_model_find(e, name, n, NULL, 0);
    if (m == NULL)
      m = berth_composite_find(e, name, n, NULL, 0);
  }
  if (m == NULL || m->state == BERTH_MODEL_UNAVAILABLE) {
    char msg[400];
    snprintf(msg, sizeof msg,
             "The model '%.200s' does not exist%s; GET /v1/models lists the "
             "served models",
             name, m != NULL ? " (it was unloaded)" : "");
    berth_openai_respond_error(e, req, BERTH_E_NOT_FOUND, msg, "model",
                               "model_not_found");
    return NULL;
  }
  berth_rest_note_model(req, m);
  return m;
}

static const berth_tensor_spec *input_spec(const berth_model *m,
                                           const char *name) {
  for (size_t i = 0; i < m->n_inputs; i++)
    if (strcmp(m->inputs[i].name, name) == 0)
      return &m->inputs[i];
  return NULL;
}

/* The shape of n elements for spec: the last variable dimension (or the
 * only one) takes n, the others 1 (the signature check judges the rest). */
static json_t *shape_of(const berth_tensor_spec *s, size_t n) {
  json_t *shape = json_array();
  uint32_t nd = s != NULL && s->ndim > 0 ? s->ndim : 1;
  for (uint32_t i = 0; shape != NULL && i < nd; i++) {
    int64_t d = s != NULL && s->ndim > 0 ? s->shape[i] : -1;
    json_array_append_new(shape, json_integer(i + 1 == nd ? (json_int_t)n
                                              : d > 0     ? d
                                                          : 1));
  }
  return shape;
}

/* Adds input name (datatype dt) with data (taken) to inputs, when m takes
 * it; when it does not, a refusal naming param unless quiet. */
static int add_input(json_t *inputs, const berth_model *m, const char *name,
                     const char *dt, json_t *data, bool quiet,
                     const char **param, berth_errmsg *err) {
  const berth_tensor_spec *s = input_spec(m, name);
  if (s == NULL) {
    json_decref(data);
    if (quiet)
      return BERTH_OK;
    *param = name;
    return berth_errf(err, BERTH_E_INVALID,
                      "model '%s' does not take '%s' (its signature has no "
                      "input of that name; docs/openai.md)",
                      m->cfg->name, name);
  }
  json_t *t =
      json_pack("{s:s, s:s, s:o, s:o}", "name", name, "datatype", dt, "shape",
                shape_of(s, json_array_size(data)), "data", data);
  if (t == NULL || json_array_append_new(inputs, t) != 0)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  return BERTH_OK;
}

/* The sampling inputs the request gave. */
static int add_sampling(json_t *in, const berth_model *m,
                        const berth_oai_request *r, const char **param,
                        berth_errmsg *err) {
  int rc = BERTH_OK;
  if (r->has_max_tokens)
    rc = add_input(in, m, "max_tokens", "INT32",
                   json_pack("[i]", (int)r->max_tokens), false, param, err);
  if (rc == BERTH_OK && r->has_temperature)
    rc = add_input(in, m, "temperature", "FP32",
                   json_pack("[f]", (double)r->temperature), false, param, err);
  if (rc == BERTH_OK && r->has_top_p)
    rc = add_input(in, m, "top_p", "FP32", json_pack("[f]", (double)r->top_p),
                   false, param, err);
  if (rc == BERTH_OK && r->has_seed)
    rc = add_input(in, m, "seed", "INT64",
                   json_pack("[I]", (json_int_t)r->seed), false, param, err);
  if (rc == BERTH_OK && r->has_n)
    rc = add_input(in, m, "n", "INT32", json_pack("[i]", (int)r->n), r->n == 1,
                   param, err);
  if (rc == BERTH_OK && r->n_stop > 0) {
    json_t *stops = json_array();
    for (size_t i = 0; stops != NULL && i < r->n_stop; i++)
      json_array_append_new(stops, json_string(r->stop[i]));
    rc = add_input(in, m, "stop", "BYTES", stops, false, param, err);
  }
  if (rc == BERTH_OK)
    rc = add_input(in, m, "stream", "BOOL", json_pack("[b]", r->stream), true,
                   param, err);
  return rc;
}

/* The OIP inference request for r on m (decoded and checked against m's
 * signature) into *out; a refusal names its field in *param. */
static int model_request(berth_engine *e, const berth_model *m,
                         const berth_oai_request *r, berth_infer_request *out,
                         const char **param, berth_errmsg *err) {
  json_t *doc = json_pack("{s:[]}", "inputs");
  json_t *in = json_object_get(doc, "inputs");
  int rc = doc != NULL ? BERTH_OK : berth_errf(err, BERTH_E_NOMEM, "oom");
  if (rc == BERTH_OK && r->kind == BERTH_OAI_EMBEDDING) {
    json_t *data = json_array();
    for (size_t i = 0; data != NULL && i < r->n_input; i++)
      json_array_append_new(data, json_string(r->input[i]));
    rc = add_input(in, m, m->inputs[0].name, "BYTES", data, false, param, err);
  } else if (rc == BERTH_OK) {
    bool chat = r->kind == BERTH_OAI_CHAT;
    rc = add_input(in, m, chat ? "messages" : "text_input", "BYTES",
                   json_pack("[s]", chat ? r->messages : r->prompt), false,
                   param, err);
    if (rc == BERTH_OK)
      rc = add_sampling(in, m, r, param, err);
  }
  char *text = rc == BERTH_OK ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (rc == BERTH_OK && text == NULL)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc != BERTH_OK)
    return rc;
  berth_json_limits lim = {.max_inputs = 16,
                           .max_tensor_bytes = e->cfg.max_body_bytes * 4,
                           .max_depth = 8};
  rc = berth_json_decode_infer_request(text, strlen(text), &lim, out, err);
  free(text);
  if (rc == BERTH_OK)
    rc = berth_signature_check(m, out, err);
  return rc;
}

/* Whether m can serve a request of kind; answers 400 when it cannot. */
static bool fits(berth_engine *e, berth_http_req *req, const berth_model *m,
                 const berth_oai_request *r) {
  char msg[600];
  const char *name = m->cfg->name;
  if (r->kind == BERTH_OAI_EMBEDDING) {
    const berth_tensor_spec *in = m->n_inputs == 1 ? &m->inputs[0] : NULL;
    if (!m->decoupled && in != NULL && in->dtype == BERTH_DT_BYTES &&
        m->n_outputs >= 1)
      return true;
    snprintf(msg, sizeof msg,
             "model '%s' is not an embedding model: /v1/embeddings needs a "
             "model with one BYTES input and an FP32 output [-1, dim] "
             "(docs/openai.md)",
             name);
  } else {
    const char *key = r->kind == BERTH_OAI_CHAT ? "messages" : "text_input";
    const berth_tensor_spec *in = input_spec(m, key);
    if (m->decoupled && in != NULL && in->dtype == BERTH_DT_BYTES)
      return true;
    snprintf(msg, sizeof msg,
             "model '%s' is not a generative model for %s: it needs to be "
             "decoupled and take a BYTES input '%s' (docs/openai.md)",
             name,
             r->kind == BERTH_OAI_CHAT ? "/v1/chat/completions"
                                       : "/v1/completions",
             key);
  }
  berth_openai_respond_error(e, req, BERTH_E_INVALID, msg, "model",
                             "model_not_supported");
  return false;
}

/* ---- the routes ------------------------------------------------------------ */

static const char *span_of(berth_oai_kind kind) {
  return kind == BERTH_OAI_CHAT         ? "POST /v1/chat/completions"
         : kind == BERTH_OAI_COMPLETION ? "POST /v1/completions"
                                        : "POST /v1/embeddings";
}

static void call_init(berth_oai_call *c, berth_http_req *req,
                      const berth_oai_request *r) {
  c->kind = r->kind;
  c->stream = r->stream;
  c->include_usage = r->include_usage;
  c->n = r->n;
  c->base64 = r->base64;
  c->has_dimensions = r->has_dimensions;
  c->dimensions = r->dimensions;
  c->n_input = r->n_input;
  c->created = (long long)time(NULL);
  snprintf(c->id, sizeof c->id, "%s%s",
           r->kind == BERTH_OAI_CHAT         ? "chatcmpl-"
           : r->kind == BERTH_OAI_COMPLETION ? "cmpl-"
                                             : "embd-",
           berth_rest_request_id(req));
  for (int i = 0; i < BERTH_OAI_MAX_N; i++)
    berth_buf_init(&c->choices[i].text, (size_t)64 << 20);
}

static void handle(berth_engine *e, berth_http_req *req, berth_oai_kind kind) {
  size_t blen = 0;
  const char *body = berth_http_body(req, &blen);
  berth_oai_request r;
  berth_errmsg err;
  int rc = berth_oai_decode(body, blen, kind, &r, &err);
  if (rc != BERTH_OK) {
    berth_openai_respond_error(e, req, rc, err.msg, r.err_param, NULL);
    return;
  }
  struct berth_route_stat *routed = NULL;
  berth_model *m = find_model(e, req, r.model, &routed);
  if (m == NULL || !berth_rest_servable(e, req, m) || !fits(e, req, m, &r)) {
    berth_oai_request_clear(&r);
    return;
  }
  berth_infer_request ir = {0};
  const char *param = NULL;
  rc = model_request(e, m, &r, &ir, &param, &err);
  berth_oai_call *c = rc == BERTH_OK ? calloc(1, sizeof *c) : NULL;
  if (rc == BERTH_OK && c == NULL)
    rc = berth_errf(&err, BERTH_E_NOMEM, "out of memory");
  if (rc != BERTH_OK) {
    berth_oai_request_clear(&r);
    berth_infer_request_clear(&ir);
    berth_rest_count_fail(m, req, rc, err.msg);
    berth_openai_respond_error(e, req, rc, err.msg, param, NULL);
    return;
  }
  call_init(c, req, &r);
  berth_oai_request_clear(&r);
  c->base.job.req = ir;
  rc = berth_rest_call_submit(e, req, &c->base,
                              kind == BERTH_OAI_EMBEDDING ? &berth_oai_embed_ops
                                                          : &berth_oai_gen_ops,
                              m, routed, span_of(kind), &err);
  if (rc != BERTH_OK)
    berth_openai_respond_error(e, req, rc, err.msg, NULL, NULL);
}

void berth_rest_openai_chat(berth_engine *e, berth_http_req *req,
                            const berth_rest_match *mt) {
  (void)mt;
  handle(e, req, BERTH_OAI_CHAT);
}

void berth_rest_openai_completions(berth_engine *e, berth_http_req *req,
                                   const berth_rest_match *mt) {
  (void)mt;
  handle(e, req, BERTH_OAI_COMPLETION);
}

void berth_rest_openai_embeddings(berth_engine *e, berth_http_req *req,
                                  const berth_rest_match *mt) {
  (void)mt;
  handle(e, req, BERTH_OAI_EMBEDDING);
}
