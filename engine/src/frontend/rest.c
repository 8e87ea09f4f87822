/* Berth engine: Open Inference Protocol v2 over REST — routes, metadata,
 * and the infer path (decode once, JSON or binary tensors; check against the
 * signature, queue, answer), health and metrics. The routes that lead
 * here are rest_routes.c's table; Triton's configuration, statistics and
 * repository handlers live in rest_triton.c, KServe v1 in kserve_v1.c, the
 * traffic routes' in router_admin.c; what they share is rest.h and
 * rest_common.c. */
#include "rest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_binary.h"
#include "access_log.h"
#include "codec_json.h"
#include "codec_kserve_v1.h"
#include "front.h"
#include "numtext.h"
#include "shm_api.h"
#include "log.h"
#include "router.h"
#include "ui.h"
#include "trace.h"
#include "metrics.h"

/* ---- metadata ----------------------------------------------------------- */

static json_t *specs_json(const berth_tensor_spec *s, size_t n) {
  json_t *arr = json_array();
  for (size_t i = 0; i < n; i++) {
    json_t *shape = json_array();
    for (uint32_t k = 0; k < s[i].ndim; k++)
      json_array_append_new(shape, json_integer(s[i].shape[k]));
    json_array_append_new(
        arr, json_pack("{s:s, s:s, s:o}", "name", s[i].name, "datatype",
                       berth_dtype_name(s[i].dtype), "shape", shape));
  }
  return arr;
}

void berth_rest_server_metadata(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt) {
  (void)mt;
  json_t *ext = json_array();
  for (size_t i = 0; i < berth_server_n_extensions; i++)
    json_array_append_new(ext, json_string(berth_server_extensions[i]));
  berth_rest_respond_doc(e, req, 200,
                         json_pack("{s:s, s:s, s:o}", "name", "berth",
                                   "version", BERTH_VERSION, "extensions",
                                   ext));
}

void berth_rest_model_metadata(berth_engine *e, berth_http_req *req,
                               const berth_rest_match *mt) {
  struct berth_route_stat *routed;
  berth_model *m = berth_rest_find_model(e, req, mt, false, false, &routed);
  if (m == NULL)
    return;
  json_t *versions = json_array();
  for (size_t i = 0; i < e->n_models; i++)
    if (strcmp(e->models[i]->cfg->name, m->cfg->name) == 0)
      json_array_append_new(versions, json_string(e->models[i]->cfg->version));
  if (m->ops->composite) /* not in e->models */
    json_array_append_new(versions, json_string(m->cfg->version));
  berth_rest_respond_doc(
      e, req, 200,
      json_pack("{s:s, s:o, s:s, s:o, s:o}", "name", m->cfg->name, "versions",
                versions, "platform", m->platform ? m->platform : "", "inputs",
                specs_json(m->inputs, m->n_inputs), "outputs",
                specs_json(m->outputs, m->n_outputs)));
}

void berth_rest_model_ready(berth_engine *e, berth_http_req *req,
                            const berth_rest_match *mt) {
  struct berth_route_stat *routed;
  berth_model *m = berth_rest_find_model(e, req, mt, false, false, &routed);
  if (m == NULL)
    return;
  if (!berth_model_ready(m)) {
    char msg[700];
    berth_model_not_ready_message(m, msg, sizeof msg);
    berth_rest_respond_error(e, req, BERTH_E_UNAVAILABLE, msg);
    return;
  }
  berth_rest_respond_doc(e, req, 200,
                         json_pack("{s:s, s:s, s:b}", "name", m->cfg->name,
                                   "version", m->cfg->version, "ready", 1));
}

/* ---- infer ------------------------------------------------------------ */

typedef struct rest_call {
  berth_job job;       /* first: the job pointer is the call pointer */
  berth_http_req *req; /* one reference held; binary inputs borrow
                                 from its body */
  berth_engine *engine;
  berth_rest_format fmt;
  bool binary_default; /* binary_data_output */
} rest_call;

void berth_rest_count_fail(berth_model *m, berth_http_req *req, int status,
                           const char *msg) {
  berth_front_count_fail(m, BERTH_PROTO_REST, berth_http_received_ns(req),
                         status, msg, true);
}

/* Releases the request (whose body the binary inputs borrow) and the
 * call. */
static void call_free(rest_call *c) {
  berth_http_req_on_gone(c->req, NULL, NULL);
  berth_infer_request_clear(&c->job.req); /* before the body goes */
  berth_http_req_unref(c->req);
  free(c);
}

/* The core holds no more reference to the job: the request is over. */
static void call_finish(rest_call *c) {
  berth_front_job_end(c->engine, &c->job);
  call_free(c);
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
  /* outputs asked for in shared memory go there first */
  int rc = berth_shm_write_outputs(e, &c->job.req, resp, &err);
  if (rc == BERTH_OK && c->fmt == BERTH_REST_KSERVE_V1)
    rc = berth_kserve_v1_encode(&c->job.req, resp, &out, &err);
  else if (rc == BERTH_OK && binary)
    rc = berth_binary_encode_infer_response(m->cfg->name, m->cfg->version,
                                            &c->job.req, c->binary_default,
                                            resp, &out, &head_len, &err);
  else if (rc == BERTH_OK)
    rc = berth_json_encode_infer_response(m->cfg->name, m->cfg->version,
                                          &c->job.req, resp, &out, &err);
  if (rc != BERTH_OK) {
    berth_buf_free(&out);
    /* the client's choices (an unknown output, text that JSON cannot
     * carry) are 400; anything else is the model's answer's fault */
    bool client = rc == BERTH_E_INVALID || rc == BERTH_E_UNSUPPORTED;
    berth_rest_respond_error(e, c->req, client ? rc : BERTH_E_MODEL, err.msg);
    return;
  }
  char hl[24] = "", tp[BERTH_TRACEPARENT_LEN + 1];
  if (binary)
    hl[berth_num_u64(hl, head_len)] = '\0';
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
  /* an inference's answer (and only that) may be compressed */
  berth_http_req_set_note(c->req, BERTH_HTTP_NOTE_COMPRESSIBLE, "1", 1);
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
  if (berth_front_cancel(&c->job))
    call_finish(c); /* never reached a worker: nothing else refers to it */
  /* running: the worker's answer will find the request gone */
}

bool berth_rest_servable(berth_engine *e, berth_http_req *req, berth_model *m) {
  char msg[700];
  int status = berth_front_check_servable(
      m, BERTH_PROTO_REST, berth_http_received_ns(req), msg, sizeof msg);
  if (status != BERTH_OK)
    berth_rest_respond_error(e, req, status, msg);
  return status == BERTH_OK;
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
  c->job.protocol = BERTH_PROTO_REST;
  c->job.request_id = berth_rest_request_id(req);
  c->job.http = req;
  berth_http_req_ref(req);
  size_t tl = 0;
  const char *tp = berth_http_header(req, "traceparent", &tl);
  berth_errmsg err;
  int rc = berth_front_submit(e, &c->job, routed,
                              fmt == BERTH_REST_KSERVE_V1
                                  ? "POST /v1/models/{model_name}:predict"
                                  : "POST /v2/models/{model_name}/infer",
                              tp, tl, &err);
  if (rc != BERTH_OK) { /* counted and traced; never in flight */
    berth_rest_respond_error(e, req, rc, err.msg);
    call_free(c);
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
  /* a gzip or deflate body was inflated by the router (rest_routes.c) */
  const char *h =
      berth_http_header(req, "inference-header-content-length", &hlen);
  if (h == NULL)
    return berth_json_decode_infer_request(body, blen, &lim, r, err);
  int rc = berth_binary_parse_head_length(h, hlen, blen, &head_len, err);
  if (rc != BERTH_OK)
    return rc;
  return berth_binary_decode_infer_request(body, blen, head_len, &lim, r, err);
}

void berth_rest_infer(berth_engine *e, berth_http_req *req,
                      const berth_rest_match *mt) {
  struct berth_route_stat *routed;
  berth_model *m = berth_rest_find_model(e, req, mt, true, false, &routed);
  if (m == NULL || !berth_rest_servable(e, req, m))
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
    rc = berth_shm_resolve(e, &r, &err);
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

/* ---- health and metrics ---------------------------------------------------- */

void berth_rest_live(berth_engine *e, berth_http_req *req,
                     const berth_rest_match *mt) {
  (void)mt;
  berth_rest_respond_doc(e, req, 200, json_pack("{s:b}", "live", 1));
}

void berth_rest_ready(berth_engine *e, berth_http_req *req,
                      const berth_rest_match *mt) {
  (void)mt;
  bool ok = berth_server_ready(e);
  berth_rest_respond_doc(e, req, ok ? 200 : 503,
                         json_pack("{s:b}", "ready", ok));
}

/* KServe's v1 liveness probe (its clients GET the root). */
void berth_rest_root(berth_engine *e, berth_http_req *req,
                     const berth_rest_match *mt) {
  (void)mt;
  berth_rest_respond_doc(e, req, 200, json_pack("{s:s}", "status", "alive"));
}

/* GET /metrics: the Prometheus text exposition (docs/metrics.md). */
void berth_rest_metrics(berth_engine *e, berth_http_req *req,
                        const berth_rest_match *mt) {
  (void)mt;
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
