/* Berth engine: Open Inference Protocol v2 over REST — routes, metadata,
 * and the infer path (decode once, JSON or binary tensors; check against the
 * signature, queue, answer). Every failure is mapped to an HTTP status here,
 * once. Triton's configuration, statistics and repository routes live in
 * rest_triton.c, KServe v1 in kserve_v1.c; what they share is rest.h. */
#include "rest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_binary.h"
#include "access_log.h"
#include "codec_json.h"
#include "http_guard.h"
#include "log.h"
#include "router.h"
#include "ui.h"

#define JSON_CT {"content-type", "application/json"}

/* ---- answering -------------------------------------------------------- */

int berth_rest_http_status(int status) {
  switch (status) {
  case BERTH_OK:
    return 200;
  case BERTH_E_INVALID:
  case BERTH_E_PARSE:
  case BERTH_E_UNSUPPORTED:
  case BERTH_E_CONFIG:
    return 400;
  case BERTH_E_NOT_FOUND:
    return 404;
  case BERTH_E_UNAUTHENTICATED:
    return 401;
  case BERTH_E_FORBIDDEN:
    return 403;
  case BERTH_E_METHOD:
    return 405;
  case BERTH_E_TOO_LARGE:
    return 413;
  case BERTH_E_MEDIA_TYPE:
    return 415;
  case BERTH_E_OVERLOAD:
    return 429;
  case BERTH_E_UNAVAILABLE:
  case BERTH_E_SHUTDOWN:
    return 503;
  case BERTH_E_TIMEOUT:
    return 504;
  default:
    return 500;
  }
}

/* The request's id: the client's X-Request-ID, else the OIP request's
 * "id" (noted by handle_infer), else a fresh one made here. */
const char *berth_rest_request_id(berth_http_req *req) {
  const char *id = berth_http_req_note(req, BERTH_HTTP_NOTE_REQUEST_ID);
  if (id == NULL) {
    char fresh[BERTH_REQUEST_ID_MAX + 1];
    berth_request_id_new(fresh);
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_REQUEST_ID, fresh,
                            strlen(fresh));
    id = berth_http_req_note(req, BERTH_HTTP_NOTE_REQUEST_ID);
  }
  return id;
}

static void access_log(berth_engine *e, berth_http_req *req, int http_status,
                       size_t body_len) {
  if (!e->cfg.access_log)
    return;
  int v = berth_http_version(req);
  berth_access_record r = {
      .protocol = v == 20 ? "http/2" : v == 10 ? "http/1.0" : "http/1.1",
      .request_id = berth_rest_request_id(req),
      .model = berth_http_req_note(req, BERTH_HTTP_NOTE_MODEL),
      .version = berth_http_req_note(req, BERTH_HTTP_NOTE_VERSION),
      .status = http_status,
      .latency_ms = (double)(uv_hrtime() - berth_http_received_ns(req)) / 1e6,
      .bytes_out = body_len,
      .peer = berth_http_peer(req),
  };
  r.method = berth_http_method(req, &r.method_len);
  r.path = berth_http_path(req, &r.path_len);
  size_t in = 0;
  berth_http_body(req, &in);
  r.bytes_in = in;
  berth_access_log(&r);
}

void berth_rest_respond_take(berth_engine *e, berth_http_req *req,
                             int http_status, const berth_http_header_kv *h,
                             size_t n, char *body, size_t len) {
  access_log(e, req, http_status, len);
  /* every answer echoes the request id; one to a listed cross-site origin
   * carries the CORS headers (http_guard.h), and with CORS origins
   * configured every other answer says that it depends on Origin (caches) */
  berth_http_header_kv all[8 + BERTH_GUARD_CORS_HEADERS];
  if (n < 8) {
    memcpy(all, h, n * sizeof *h);
    all[n].name = "x-request-id";
    all[n].value = berth_rest_request_id(req);
    const char *cors = berth_http_req_note(req, BERTH_HTTP_NOTE_CORS_ORIGIN);
    size_t k = cors != NULL ? berth_http_guard_cors_headers(cors, all + n + 1)
                            : 0;
    if (cors == NULL && e->cfg.n_cors_origins > 0)
      all[n + 1 + k++] = (berth_http_header_kv){"vary", "Origin"};
    berth_http_respond_take(req, http_status, all, n + 1 + k, body, len);
    return;
  }
  berth_http_respond_take(req, http_status, h, n, body, len);
}

void berth_rest_respond_json(berth_engine *e, berth_http_req *req,
                             int http_status, berth_buf *body) {
  berth_http_header_kv h[] = {JSON_CT};
  size_t len = 0;
  char *data = berth_buf_detach(body, &len);
  berth_rest_respond_take(e, req, http_status, h, 1, data, len);
}

void berth_rest_respond_error(berth_engine *e, berth_http_req *req,
                              int status, const char *msg) {
  berth_buf b;
  berth_buf_init(&b, 64 * 1024);
  if (berth_json_encode_error(msg, &b) != BERTH_OK) {
    berth_buf_free(&b);
    berth_buf_append(&b, "{\"error\":\"internal error\"}", 26);
  }
  int hs = berth_rest_http_status(status);
  if (status == BERTH_E_OVERLOAD || status == BERTH_E_METHOD ||
      status == BERTH_E_UNAUTHENTICATED) {
    berth_http_header_kv h[2] = {JSON_CT, {"retry-after", "1"}};
    if (status == BERTH_E_UNAUTHENTICATED) {
      h[1].name = "www-authenticate";
      h[1].value = "Bearer realm=\"berth\"";
    }
    if (status == BERTH_E_METHOD) {
      h[1].name = "allow";
      h[1].value = "GET, POST";
    }
    size_t len = 0;
    char *data = berth_buf_detach(&b, &len);
    berth_rest_respond_take(e, req, hs, h, 2, data, len);
    return;
  }
  berth_rest_respond_json(e, req, hs, &b);
}

void berth_rest_respond_doc(berth_engine *e, berth_http_req *req,
                            int http_status, json_t *doc) {
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL) {
    berth_rest_respond_error(e, req, BERTH_E_NOMEM, "out of memory");
    return;
  }
  berth_http_header_kv h[] = {JSON_CT};
  berth_rest_respond_take(e, req, http_status, h, 1, text, strlen(text));
}

/* ---- paths ------------------------------------------------------------ */

bool berth_slice_is(berth_slice s, const char *lit) {
  return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* Splits "/a/b/c" into at most max segments; returns the count or -1 when
 * there are more (or empty segments). */
static int split_path(const char *p, size_t n, berth_slice *seg, int max) {
  int k = 0;
  size_t i = 0;
  if (n == 0 || p[0] != '/')
    return -1;
  i = 1;
  while (i < n) {
    size_t start = i;
    while (i < n && p[i] != '/')
      i++;
    if (i == start || k == max)
      return -1;
    seg[k].p = p + start;
    seg[k].n = i - start;
    k++;
    if (i < n)
      i++; /* skip '/'; a trailing slash makes an empty segment next */
    if (i == n && p[n - 1] == '/')
      return -1;
  }
  return k;
}

bool berth_slice_valid_name(berth_slice s) {
  if (s.n == 0 || s.n > 256)
    return false;
  for (size_t i = 0; i < s.n; i++) {
    char c = s.p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  }
  return true;
}

/* ---- metadata ----------------------------------------------------------- */

static json_t *specs_json(const berth_tensor_spec *s, size_t n) {
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) {
    json_t *shape = json_array();
    for (uint32_t k = 0; k < s[i].ndim; k++)
      json_array_append_new(shape, json_integer(s[i].shape[k]));
    json_array_append_new(arr,
                          json_pack("{s:s, s:s, s:o}", "name", s[i].name,
                                    "datatype", berth_dtype_name(s[i].dtype),
                                    "shape", shape));
  }
  return arr;
}

static void handle_server_metadata(berth_engine *e, berth_http_req *req) {
  json_t *ext = json_pack("[s,s,s,s]", "binary_tensor_data",
                          "model_configuration", "statistics",
                          "model_repository");
  berth_rest_respond_doc(e, req, 200,
                         json_pack("{s:s, s:s, s:o}", "name", "berth",
                                   "version", BERTH_VERSION, "extensions",
                                   ext));
}

static bool server_ready(berth_engine *e) {
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

static void handle_model_metadata(berth_engine *e, berth_http_req *req,
                                  berth_model *m) {
  json_t *versions = json_array();
  for (size_t i = 0; i < e->n_models; i++)
    if (strcmp(e->models[i]->cfg->name, m->cfg->name) == 0)
      json_array_append_new(versions,
                            json_string(e->models[i]->cfg->version));
  if (m->pipeline != NULL) /* a pipeline is not in e->models */
    json_array_append_new(versions, json_string(m->cfg->version));
  berth_rest_respond_doc(
      e, req, 200,
      json_pack("{s:s, s:o, s:s, s:o, s:o}", "name", m->cfg->name, "versions",
                versions, "platform", m->platform ? m->platform : "",
                "inputs", specs_json(m->inputs, m->n_inputs), "outputs",
                specs_json(m->outputs, m->n_outputs)));
}

void berth_rest_not_ready_message(const berth_model *m, char *out, size_t cap) {
  if (m->pipeline != NULL) { /* names the step model (pipeline.c) */
    char why[512];
    berth_pipeline_state(m, why, sizeof why);
    snprintf(out, cap, "pipeline '%s' is not ready: %s", m->cfg->name, why);
    return;
  }
  const char *why = m->engine->draining ? "the server is shutting down"
                    : m->state == BERTH_MODEL_FAILED ? m->load_error
                    : m->state == BERTH_MODEL_UNLOADING
                        ? "it is being unloaded"
                    : m->state == BERTH_MODEL_UNAVAILABLE ? "it was unloaded"
                    : m->n_ready == 0 ? "its worker is still loading it"
                                      : "unavailable";
  snprintf(out, cap, "model '%s' version '%s' is not ready: %s", m->cfg->name,
           m->cfg->version, why);
}

static void handle_model_ready(berth_engine *e, berth_http_req *req,
                               berth_model *m) {
  if (!berth_model_ready(m)) {
    char msg[700];
    berth_rest_not_ready_message(m, msg, sizeof msg);
    berth_rest_respond_error(e, req, BERTH_E_UNAVAILABLE, msg);
    return;
  }
  berth_rest_respond_doc(e, req, 200,
                         json_pack("{s:s, s:s, s:b}", "name", m->cfg->name,
                                   "version", m->cfg->version, "ready", 1));
}

/* ---- infer ------------------------------------------------------------ */

void berth_rest_note_oip_id(berth_http_req *req, const char *id) {
  char ok[BERTH_REQUEST_ID_MAX + 1];
  if (id != NULL &&
      berth_http_req_note(req, BERTH_HTTP_NOTE_REQUEST_ID) == NULL &&
      berth_request_id_take(id, strlen(id), ok))
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_REQUEST_ID, ok, strlen(ok));
}

void berth_rest_note_model(berth_http_req *req, const berth_model *m) {
  berth_http_req_set_note(req, BERTH_HTTP_NOTE_MODEL, m->cfg->name,
                          strlen(m->cfg->name));
  berth_http_req_set_note(req, BERTH_HTTP_NOTE_VERSION, m->cfg->version,
                          strlen(m->cfg->version));
}

typedef struct rest_call {
  berth_job job;              /* first: the job pointer is the call pointer */
  berth_http_req *req;        /* one reference held; binary inputs borrow
                                 from its body */
  berth_engine *engine;
  berth_rest_format fmt;
  bool binary_default;        /* binary_data_output */
} rest_call;

void berth_rest_count_fail(berth_model *m, berth_http_req *req, int status,
                           const char *msg) {
  uint64_t now = uv_hrtime(), got = berth_http_received_ns(req);
  uint64_t took = now > got ? now - got : 0;
  m->stats.fail.count++;
  m->stats.fail.ns += took;
  berth_metrics_request(&m->metrics, BERTH_PROTO_REST, status,
                        (double)took / 1e9);
  berth_ui_note_error(m, BERTH_PROTO_REST, status, msg);
}

/* Counts a request refused before it was decoded (the model is not
 * servable) in the metrics only, as the statistics never did. */
static void count_refused(berth_model *m, berth_http_req *req, int status,
                          const char *msg) {
  uint64_t now = uv_hrtime(), got = berth_http_received_ns(req);
  berth_metrics_request(&m->metrics, BERTH_PROTO_REST, status,
                        (double)(now > got ? now - got : 0) / 1e9);
  berth_ui_note_error(m, BERTH_PROTO_REST, status, msg);
}

/* The scheduler holds no more reference to the job: release the request
 * (whose body the binary inputs borrow) and the call. */
static void call_finish(rest_call *c) {
  berth_engine *e = c->engine;
  berth_trace_job_finish(&c->job, BERTH_E_IO); /* left before an answer */
  berth_http_req_on_gone(c->req, NULL, NULL);
  berth_infer_request_clear(&c->job.req); /* before the body goes */
  berth_http_req_unref(c->req);
  free(c);
  e->inflight--;
  berth_engine_request_done(e);
}

static void call_release(berth_job *job) { call_finish((rest_call *)job); }

/* Encodes a successful answer and sends it. */
static void call_answer(rest_call *c, berth_infer_response *resp) {
  berth_engine *e = c->engine;
  berth_model *m = c->job.model;
  berth_buf out;
  berth_buf_init(&out, (size_t)1 << 31);
  berth_errmsg err;
  size_t head_len = 0;
  bool binary = c->fmt == BERTH_REST_OIP &&
                berth_binary_wanted(&c->job.req, c->binary_default);
  int rc;
  if (c->fmt == BERTH_REST_KSERVE_V1)
    rc = berth_kserve_v1_encode(&c->job.req, resp, &out, &err);
  else if (binary)
    rc = berth_binary_encode_infer_response(m->cfg->name, m->cfg->version,
                                            &c->job.req, c->binary_default,
                                            resp, &out, &head_len, &err);
  else
    rc = berth_json_encode_infer_response(m->cfg->name, m->cfg->version,
                                          &c->job.req, resp, &out, &err);
  if (rc != BERTH_OK) {
    berth_buf_free(&out);
    /* the client's choices (an unknown output, text that JSON cannot
     * carry) are 400; anything else is the model's answer's fault */
    bool client = rc == BERTH_E_INVALID || rc == BERTH_E_UNSUPPORTED;
    berth_rest_respond_error(e, c->req, client ? rc : BERTH_E_MODEL,
                             err.msg);
    return;
  }
  char hl[24], tp[BERTH_TRACEPARENT_LEN + 1];
  snprintf(hl, sizeof hl, "%zu", head_len);
  berth_http_header_kv h[3] = {{"content-type", "application/octet-stream"},
                               {"inference-header-content-length", hl}};
  size_t n = 2;
  if (!binary) {
    h[0].value = "application/json";
    n = 1;
  }
  if (c->job.trace != NULL) { /* the request's span, for the caller */
    berth_trace_ctx_traceparent(c->job.trace, tp);
    h[n++] = (berth_http_header_kv){"traceparent", tp};
  }
  size_t len = 0;
  char *data = berth_buf_detach(&out, &len);
  berth_rest_respond_take(e, c->req, 200, h, n, data, len);
}

/* The answer (the scheduler counts it in the model's statistics); the call
 * lives on until call_release. */
static void call_done(berth_job *job, int status, const char *errmsg,
                      berth_infer_response *resp) {
  rest_call *c = (rest_call *)job;
  if (status != BERTH_OK)
    berth_rest_respond_error(c->engine, c->req, status, errmsg);
  else
    call_answer(c, resp);
}

static void call_gone(berth_http_req *req, void *arg) {
  rest_call *c = arg;
  if (berth_sched_cancel(&c->job))
    call_finish(c); /* never reached a worker: nothing else refers to it */
  /* running: the worker's answer will find the request gone */
}

bool berth_rest_servable(berth_engine *e, berth_http_req *req,
                         berth_model *m) {
  char msg[700];
  if (e->draining) {
    static const char shutting[] = "the server is shutting down and takes no "
                                   "new requests";
    count_refused(m, req, BERTH_E_SHUTDOWN, shutting);
    berth_rest_respond_error(e, req, BERTH_E_SHUTDOWN, shutting);
    return false;
  }
  if (!berth_model_accepting(m)) {
    berth_rest_not_ready_message(m, msg, sizeof msg);
    count_refused(m, req, BERTH_E_UNAVAILABLE, msg);
    berth_rest_respond_error(e, req, BERTH_E_UNAVAILABLE, msg);
    return false;
  }
  return true;
}

void berth_rest_submit(berth_engine *e, berth_http_req *req, berth_model *m,
                       berth_infer_request *r, berth_rest_format fmt,
                       bool binary_default, berth_route_stat *routed) {
  rest_call *c = calloc(1, sizeof *c);
  if (c == NULL) {
    berth_infer_request_clear(r);
    berth_rest_respond_error(e, req, BERTH_E_NOMEM, "out of memory");
    return;
  }
  c->job.req = *r;
  memset(r, 0, sizeof *r);
  c->req = req;
  c->engine = e;
  c->fmt = fmt;
  c->binary_default = binary_default;
  c->job.done = call_done;
  c->job.release = call_release;
  c->job.received_ns = berth_http_received_ns(req);
  c->job.user = c;
  c->job.model = m;
  if (e->tracer != NULL) {
    size_t tl = 0;
    const char *tp = berth_http_header(req, "traceparent", &tl);
    c->job.trace = berth_trace_begin(
        e->tracer, tp, tl,
        fmt == BERTH_REST_KSERVE_V1 ? "POST /v1/models/{model_name}:predict"
                                    : "POST /v2/models/{model_name}/infer",
        "rest", c->job.received_ns);
  }
  c->job.request_id = berth_rest_request_id(req);
  c->job.http = req;
  berth_http_req_ref(req);
  e->inflight++;
  berth_errmsg err;
  int rc = berth_router_submit(m, &c->job, routed, &err);
  if (rc != BERTH_OK) {
    berth_rest_count_fail(m, req, rc, err.msg);
    berth_rest_respond_error(e, req, rc, err.msg);
    berth_trace_job_refused(&c->job, rc);
    call_finish(c);
    return;
  }
  /* The job may already be on a worker (dispatch is synchronous up to the
   * write), but call_done runs only from a worker answer, later on the
   * loop. */
  berth_http_req_on_gone(req, call_gone, c);
}

/* Decodes the body: binary extension when the head length header is there,
 * else JSON. */
static int decode_body(berth_engine *e, berth_http_req *req,
                       berth_infer_request *r, berth_errmsg *err) {
  size_t blen = 0, hlen = 0, head_len = 0;
  const char *body = berth_http_body(req, &blen);
  berth_json_limits lim = {.max_inputs = 256,
                           .max_tensor_bytes = e->cfg.max_body_bytes * 4,
                           .max_depth = 64};
  const char *enc = berth_http_header(req, "content-encoding", &hlen);
  if (enc != NULL && !(hlen == 8 && memcmp(enc, "identity", 8) == 0))
    return berth_errf(err, BERTH_E_UNSUPPORTED, "Content-Encoding '%.*s' is "
                      "not supported; send the body uncompressed",
                      (int)(hlen > 40 ? 40 : hlen), enc);
  const char *h = berth_http_header(req, "inference-header-content-length",
                                    &hlen);
  if (h == NULL)
    return berth_json_decode_infer_request(body, blen, &lim, r, err);
  int rc = berth_binary_parse_head_length(h, hlen, blen, &head_len, err);
  if (rc != BERTH_OK)
    return rc;
  return berth_binary_decode_infer_request(body, blen, head_len, &lim, r, err);
}

static void handle_infer(berth_engine *e, berth_http_req *req,
                         berth_model *m, berth_route_stat *routed) {
  if (!berth_rest_servable(e, req, m))
    return;
  berth_infer_request r = {0};
  berth_errmsg err;
  bool binary_default = false;
  int rc = decode_body(e, req, &r, &err);
  if (rc == BERTH_OK)
    berth_rest_note_oip_id(req, r.id);
  if (rc == BERTH_OK)
    rc = berth_binary_output_prefs(&r, &binary_default, &err);
  if (rc == BERTH_OK)
    rc = berth_signature_check(m, &r, &err);
  if (rc != BERTH_OK) {
    berth_infer_request_clear(&r);
    berth_rest_count_fail(m, req, rc, err.msg);
    berth_rest_respond_error(e, req, rc, err.msg);
    return;
  }
  berth_rest_submit(e, req, m, &r, BERTH_REST_OIP, binary_default, routed);
}

/* ---- metrics ------------------------------------------------------------ */

/* GET /metrics: the Prometheus text exposition (docs/metrics.md). */
static void handle_metrics(berth_engine *e, berth_http_req *req) {
  berth_buf out;
  berth_buf_init(&out, (size_t)64 << 20);
  if (berth_metrics_collect(e, &out) != BERTH_OK) {
    berth_buf_free(&out);
    berth_rest_respond_error(e, req, BERTH_E_NOMEM,
                             "out of memory rendering the metrics");
    return;
  }
  berth_http_header_kv h[] = {{"content-type", BERTH_METRICS_CONTENT_TYPE}};
  size_t len = 0;
  char *data = berth_buf_detach(&out, &len);
  berth_rest_respond_take(e, req, 200, h, 1, data, len);
}

/* ---- routing ------------------------------------------------------------ */

static void route_model(berth_engine *e, berth_http_req *req, bool is_get,
                        bool is_post, berth_slice *seg, int nseg) {
  /* seg[0]="v2", seg[1]="models", seg[2]=name, ... */
  berth_slice name = seg[2];
  const char *ver = NULL;
  size_t ver_len = 0;
  int rest = 3;
  char msg[700];
  if (nseg == 3 && berth_slice_is(name, "stats")) {
    if (!is_get)
      goto method;
    berth_rest_model_stats(e, req, NULL, true);
    return;
  }
  if (nseg >= 5 && berth_slice_is(seg[3], "versions")) {
    ver = seg[4].p;
    ver_len = seg[4].n;
    rest = 5;
    if (!berth_slice_valid_name(seg[4])) {
      berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                               "invalid model version");
      return;
    }
  }
  berth_slice action = {NULL, 0};
  if (nseg == rest + 1)
    action = seg[rest];
  else if (nseg != rest) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, "no such endpoint");
    return;
  }
  /* a route (no version named): its target for inference, else its
   * primary target */
  berth_route_stat *routed = NULL;
  bool infer = action.p != NULL && berth_slice_is(action, "infer");
  bool valid = berth_slice_valid_name(name);
  bool exists = valid && berth_model_name_exists(e, name.p, name.n);
  berth_model *m = ver == NULL && valid
                       ? berth_router_resolve(e, name.p, name.n,
                                              infer ? req : NULL, &routed)
                       : NULL;
  /* a name no model has may be a pipeline's (pipeline.c), version "1" */
  if (m == NULL && valid && !exists &&
      (ver == NULL || (ver_len == 1 && ver[0] == '1')))
    m = berth_pipeline_find(e, name.p, name.n);
  if (m == NULL && !exists) {
    snprintf(msg, sizeof msg, "unknown model '%.*s'",
             (int)(name.n > 200 ? 200 : name.n), name.p);
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
    return;
  }
  if (m == NULL)
    m = berth_model_find(e, name.p, name.n, ver, ver_len);
  if (m == NULL) {
    snprintf(msg, sizeof msg, "model '%.*s' has no version '%.*s'",
             (int)name.n, name.p, (int)ver_len, ver);
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
    return;
  }
  berth_rest_note_model(req, m);
  bool stats = action.p != NULL && berth_slice_is(action, "stats");
  if (m->state == BERTH_MODEL_UNAVAILABLE && !stats) {
    snprintf(msg, sizeof msg, "model '%s' version '%s' is not loaded (%.300s); "
             "POST /v2/repository/models/%s/load loads it", m->cfg->name,
             m->cfg->version,
             m->load_error[0] ? m->load_error : "it was unloaded",
             m->cfg->name);
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
    return;
  }
  bool post_action = action.p != NULL && berth_slice_is(action, "infer");
  if (post_action ? !is_post : !is_get)
    goto method;
  if (action.p == NULL)
    handle_model_metadata(e, req, m);
  else if (berth_slice_is(action, "ready"))
    handle_model_ready(e, req, m);
  else if (post_action)
    handle_infer(e, req, m, routed);
  else if (berth_slice_is(action, "config"))
    berth_rest_model_config(e, req, m);
  else if (stats)
    berth_rest_model_stats(e, req, m, ver == NULL);
  else
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, "no such endpoint");
  return;
method:
  berth_rest_respond_error(e, req, BERTH_E_METHOD,
                           "method not allowed on this endpoint");
}

/* Checks the bearer token (tokens are configured); false: answered 401 or
 * 403. */
static bool authorized(berth_engine *e, berth_http_req *req, bool admin,
                       bool health) {
  size_t hl = 0;
  const char *authz = berth_http_header(req, "authorization", &hl);
  switch (berth_auth_check(&e->auth, authz, authz ? hl : 0, admin, health)) {
  case BERTH_AUTH_UNAUTHENTICATED:
    berth_rest_respond_error(e, req, BERTH_E_UNAUTHENTICATED,
                             "missing or unknown bearer token; send "
                             "Authorization: Bearer <token>");
    return false;
  case BERTH_AUTH_FORBIDDEN:
    berth_rest_respond_error(e, req, BERTH_E_FORBIDDEN,
                             "this endpoint needs an admin token");
    return false;
  default:
    return true;
  }
}

void berth_rest_metrics_handle(berth_http_req *req, void *arg) {
  berth_engine *e = arg;
  size_t ml, pl;
  const char *method = berth_http_method(req, &ml);
  const char *path = berth_http_path(req, &pl);
  if (!berth_http_guard_rest(e, req))
    return;
  if (berth_auth_enabled(&e->auth) && !authorized(e, req, false, false))
    return;
  if (!(pl == 8 && memcmp(path, "/metrics", 8) == 0)) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                             "this port serves only GET /metrics");
    return;
  }
  if (!(ml == 3 && memcmp(method, "GET", 3) == 0)) {
    berth_rest_respond_error(e, req, BERTH_E_METHOD,
                             "method not allowed on this endpoint");
    return;
  }
  handle_metrics(e, req);
}

void berth_rest_handle(berth_http_req *req, void *arg) {
  berth_engine *e = arg;
  size_t ml, pl;
  const char *method = berth_http_method(req, &ml);
  const char *path = berth_http_path(req, &pl);
  bool is_get = (ml == 3 && memcmp(method, "GET", 3) == 0);
  bool is_post = (ml == 4 && memcmp(method, "POST", 4) == 0);
  size_t il = 0;
  const char *rid = berth_http_header(req, "x-request-id", &il);
  char given[BERTH_REQUEST_ID_MAX + 1];
  if (berth_request_id_take(rid, il, given))
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_REQUEST_ID, given,
                            strlen(given));
  /* Host, Origin, Content-Type: before anything else (http_guard.h) */
  if (!berth_http_guard_rest(e, req))
    return;
  if (berth_ui_route(path, pl)) { /* the dashboard: its own token rule */
    berth_ui_handle(e, req);
    return;
  }
  berth_slice seg[8];
  int nseg = split_path(path, pl, seg, 8);
  if (berth_auth_enabled(&e->auth)) {
    bool health = nseg == 3 && berth_slice_is(seg[0], "v2") &&
                  berth_slice_is(seg[1], "health");
    bool admin = nseg == 5 && berth_slice_is(seg[0], "v2") &&
                 berth_slice_is(seg[1], "repository") &&
                 (berth_slice_is(seg[4], "load") ||
                  berth_slice_is(seg[4], "unload"));
    admin = admin || (!is_get && nseg >= 2 && berth_slice_is(seg[0], "v2") &&
                      berth_slice_is(seg[1], "routes"));
    if (!authorized(e, req, admin, health))
      return;
  }
  if (nseg == 1 && berth_slice_is(seg[0], "metrics")) {
    if (!is_get)
      goto method;
    handle_metrics(e, req);
    return;
  }
  if (nseg == 0 && is_get) {
    /* KServe's v1 liveness probe (its clients GET the root). */
    berth_rest_respond_doc(e, req, 200, json_pack("{s:s}", "status", "alive"));
    return;
  }
  if (nseg >= 2 && berth_slice_is(seg[0], "v1") &&
      berth_slice_is(seg[1], "models")) {
    berth_rest_kserve_v1(e, req, is_get, is_post, seg, nseg);
    return;
  }
  if (nseg >= 1 && berth_slice_is(seg[0], "v2")) {
    if (nseg == 1) {
      if (!is_get)
        goto method;
      handle_server_metadata(e, req);
      return;
    }
    if (nseg == 3 && berth_slice_is(seg[1], "health")) {
      if (!is_get)
        goto method;
      if (berth_slice_is(seg[2], "live")) {
        berth_rest_respond_doc(e, req, 200, json_pack("{s:b}", "live", 1));
        return;
      }
      if (berth_slice_is(seg[2], "ready")) {
        bool ok = server_ready(e);
        berth_rest_respond_doc(e, req, ok ? 200 : 503,
                               json_pack("{s:b}", "ready", ok));
        return;
      }
    }
    if (nseg >= 3 && berth_slice_is(seg[1], "models")) {
      route_model(e, req, is_get, is_post, seg, nseg);
      return;
    }
    if (berth_slice_is(seg[1], "routes")) {
      berth_rest_routes(e, req, is_get, is_post, seg, nseg);
      return;
    }
    if (nseg >= 3 && berth_slice_is(seg[1], "repository")) {
      berth_rest_repository(e, req, is_post, seg, nseg);
      return;
    }
  }
  {
    char msg[400];
    snprintf(msg, sizeof msg, "no endpoint at '%.*s'; see /v2 and "
             "/v2/models/{name}", (int)(pl > 200 ? 200 : pl), path);
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
  }
  return;
method:
  berth_rest_respond_error(e, req, BERTH_E_METHOD,
                           "method not allowed on this endpoint");
}
