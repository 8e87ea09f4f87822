/* Berth engine: the OIP generate extension over REST (KServe's and
 * Triton's): POST /v2/models/{m}[/versions/{v}]/generate answers one JSON
 * object, .../generate_stream answers server-sent events, one
 * `data: {json}` event per response of the model (docs/rest-api.md).
 *
 * The request is one flat JSON object: "id" and "parameters" are the
 * request's, every other member is the input of that name (a scalar or an
 * array), typed by the model's signature. An answer is
 * {"model_name", "model_version", <output>: value...}, a one-element output
 * as a scalar. Decoupled models stream through the job's partial callback
 * (core/engine.h); a client that leaves cancels the rest. */
#include "rest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_json.h"
#include "front.h"
#include "log.h"

/* Answers a stream's client has left unread past this: the stream ends. */
#define GEN_MAX_UNREAD ((size_t)64 << 20)

typedef struct gen_call {
  berth_job job; /* first: the job pointer is the call pointer */
  berth_http_req *req;
  berth_engine *engine;
  bool stream;   /* generate_stream */
  bool begun;    /* the event stream's head is sent */
  bool ended;    /* answered (or the client left): later responses drop */
  json_t *first; /* generate on a decoupled model: its one response */
  size_t n_resp;
} gen_call;

/* ---- request: flat JSON -> OIP inference request ---- */

static size_t leaves(const json_t *v) {
  if (!json_is_array(v))
    return 1;
  size_t n = 0, i;
  json_t *x;
  json_array_foreach(v, i, x) n += leaves(x);
  return n;
}

static const char *guess_dtype(const json_t *v) {
  while (json_is_array(v) && json_array_size(v) > 0)
    v = json_array_get(v, 0);
  if (json_is_string(v))
    return "BYTES";
  if (json_is_boolean(v))
    return "BOOL";
  return json_is_integer(v) ? "INT64" : "FP32";
}

/* The shape of n elements for spec: fixed dims as declared, variable
 * ones 1 but the last, which takes what is left. */
static json_t *shape_for(const berth_tensor_spec *s, size_t n) {
  json_t *shape = json_array();
  if (s == NULL || s->ndim == 0) {
    json_array_append_new(shape, json_integer((json_int_t)n));
    return shape;
  }
  int64_t fixed = 1;
  int last = -1;
  for (uint32_t i = 0; i < s->ndim; i++) {
    if (s->shape[i] < 0)
      last = (int)i;
    else
      fixed *= s->shape[i] > 0 ? s->shape[i] : 1;
  }
  for (uint32_t i = 0; i < s->ndim; i++) {
    int64_t d = s->shape[i];
    if (d < 0)
      d = (int)i == last ? (int64_t)n / fixed : 1;
    json_array_append_new(shape, json_integer(d));
  }
  return shape;
}

static const berth_tensor_spec *input_spec(const berth_model *m,
                                           const char *name) {
  for (size_t i = 0; i < m->n_inputs; i++)
    if (strcmp(m->inputs[i].name, name) == 0)
      return &m->inputs[i];
  return NULL;
}

/* Builds the OIP request document of a generate body; NULL with err set. */
static json_t *oip_doc(const berth_model *m, const json_t *body,
                       berth_errmsg *err) {
  /* every refusal here is the client's: BERTH_E_INVALID */
  if (!json_is_object(body)) {
    berth_errf(err, BERTH_E_INVALID,
               "a generate request is one JSON object: its members are "
               "the model's inputs by name, with optional \"id\" and "
               "\"parameters\"");
    return NULL;
  }
  json_t *doc = json_object(), *inputs = json_array();
  json_object_set_new(doc, "inputs", inputs);
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)body, k, v) {
    if (strcmp(k, "id") == 0 || strcmp(k, "parameters") == 0) {
      json_object_set(doc, k, v);
      continue;
    }
    const berth_tensor_spec *s = input_spec(m, k);
    if (s == NULL && m->signature_known && m->n_inputs > 0) {
      berth_errf(err, BERTH_E_INVALID,
                 "unexpected field '%.200s': model '%s' has no input of "
                 "that name",
                 k, m->cfg->name);
      json_decref(doc);
      return NULL;
    }
    if (json_is_object(v) || json_is_null(v)) {
      berth_errf(err, BERTH_E_INVALID,
                 "field '%.200s' must be a string, number, boolean or an "
                 "array of them",
                 k);
      json_decref(doc);
      return NULL;
    }
    json_t *data = json_is_array(v) ? json_incref(v) : json_pack("[O]", v);
    json_array_append_new(
        inputs,
        json_pack("{s:s, s:s, s:o, s:o}", "name", k, "datatype",
                  s != NULL ? berth_dtype_name(s->dtype) : guess_dtype(v),
                  "shape", shape_for(s, leaves(v)), "data", data));
  }
  return doc;
}

/* ---- answers ---- */

/* The generate object of one response; NULL with err set. */
static json_t *answer_doc(gen_call *c, berth_infer_response *resp,
                          berth_errmsg *err) {
  berth_model *m = c->job.model;
  berth_buf out;
  berth_buf_init(&out, (size_t)1 << 31);
  int rc = berth_json_encode_infer_response(m->cfg->name, m->cfg->version,
                                            &c->job.req, resp, &out, err);
  json_t *oip = NULL;
  if (rc == BERTH_OK) {
    /* Text outputs may hold U+0000 (a generated byte 0): keep it. */
    oip = json_loadb(out.data, out.len, JSON_ALLOW_NUL, NULL);
    if (oip == NULL)
      berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  berth_buf_free(&out);
  if (oip == NULL)
    return NULL;
  json_t *doc = json_pack("{s:s, s:s}", "model_name", m->cfg->name,
                          "model_version", m->cfg->version);
  if (doc == NULL) {
    json_decref(oip);
    berth_errf(err, BERTH_E_NOMEM, "out of memory");
    return NULL;
  }
  size_t i;
  json_t *t;
  json_array_foreach(json_object_get(oip, "outputs"), i, t) {
    json_t *data = json_object_get(t, "data");
    const char *name = json_string_value(json_object_get(t, "name"));
    if (name == NULL || data == NULL)
      continue;
    json_object_set(
        doc, name, json_array_size(data) == 1 ? json_array_get(data, 0) : data);
  }
  json_decref(oip);
  return doc;
}

/* Sends one event (doc taken); false when the stream cannot go on. */
static bool send_event(gen_call *c, json_t *doc) {
  char *text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (text == NULL)
    return false;
  size_t n = strlen(text);
  char *ev = malloc(n + 8);
  if (ev == NULL) {
    free(text);
    return false;
  }
  memcpy(ev, "data: ", 6);
  memcpy(ev + 6, text, n);
  memcpy(ev + 6 + n, "\n\n", 2);
  free(text);
  if (!c->begun) {
    if (berth_rest_stream_begin(c->engine, c->req, 200,
                                "text/event-stream; "
                                "charset=utf-8") != BERTH_OK) {
      free(ev);
      return false;
    }
    c->begun = true;
  }
  return berth_http_stream_send(c->req, ev, n + 8) == BERTH_OK;
}

/* Ends the call's answer: an error (as JSON, or as an event once the
 * stream is open), or the end of the stream. */
static void finish_answer(gen_call *c, int status, const char *msg) {
  if (c->ended)
    return;
  c->ended = true;
  if (status != BERTH_OK && !c->begun) {
    berth_rest_respond_error(c->engine, c->req, status, msg);
    return;
  }
  if (status != BERTH_OK)
    send_event(c, json_pack("{s:s}", "error", msg));
  if (!c->begun)
    berth_rest_stream_begin(c->engine, c->req, 200,
                            "text/event-stream; charset=utf-8");
  berth_http_stream_end(c->req, NULL, 0);
}

static void gen_partial(berth_job *job, berth_infer_response *resp) {
  gen_call *c = (gen_call *)job;
  if (c->ended || berth_http_req_is_gone(c->req))
    return;
  c->n_resp++;
  berth_errmsg err;
  json_t *doc = answer_doc(c, resp, &err);
  if (doc == NULL) {
    finish_answer(c, BERTH_E_MODEL, err.msg);
    (void)berth_front_cancel(&c->job); /* running: stops at its next one */
    return;
  }
  if (!c->stream) {
    if (c->first == NULL) {
      c->first = doc;
      return;
    }
    json_decref(doc);
    berth_errf(&err, BERTH_E_INVALID,
               "model '%s' answered with more than one response: generate "
               "answers one; use POST /v2/models/%s/generate_stream",
               job->model->cfg->name, job->model->cfg->name);
    finish_answer(c, BERTH_E_INVALID, err.msg);
    (void)berth_front_cancel(&c->job);
    return;
  }
  if (!send_event(c, doc)) {
    c->ended = true;
    (void)berth_front_cancel(&c->job);
    return;
  }
  if (berth_http_stream_queued(c->req) > GEN_MAX_UNREAD) {
    finish_answer(c, BERTH_E_OVERLOAD,
                  "the client leaves too many answers unread on this stream");
    (void)berth_front_cancel(&c->job);
  }
}

static void gen_done(berth_job *job, int status, const char *errmsg,
                     berth_infer_response *resp) {
  gen_call *c = (gen_call *)job;
  if (c->ended)
    return;
  if (status != BERTH_OK) {
    finish_answer(c, status, errmsg);
    return;
  }
  berth_errmsg err;
  json_t *doc = NULL;
  if (!job->model->decoupled) {
    doc = answer_doc(c, resp, &err);
    if (doc == NULL) {
      finish_answer(c, BERTH_E_MODEL, err.msg);
      return;
    }
  } else if (!c->stream) {
    doc = c->first;
    c->first = NULL;
    if (doc == NULL) {
      berth_errf(&err, BERTH_E_INVALID,
                 "model '%s' answered with no response: generate answers "
                 "one; use POST /v2/models/%s/generate_stream",
                 job->model->cfg->name, job->model->cfg->name);
      finish_answer(c, BERTH_E_INVALID, err.msg);
      return;
    }
  }
  if (!c->stream) {
    c->ended = true;
    berth_rest_respond_doc(c->engine, c->req, 200, doc);
    return;
  }
  if (doc != NULL && !send_event(c, doc)) {
    c->ended = true;
    return;
  }
  finish_answer(c, BERTH_OK, NULL);
}

static void gen_free(gen_call *c) {
  berth_http_req_on_gone(c->req, NULL, NULL);
  berth_infer_request_clear(&c->job.req);
  json_decref(c->first);
  berth_http_req_unref(c->req);
  free(c);
}

static void gen_release(berth_job *job) {
  gen_call *c = (gen_call *)job;
  berth_front_job_end(c->engine, &c->job);
  gen_free(c);
}

static void gen_gone(berth_http_req *req, void *arg) {
  (void)req;
  gen_call *c = arg;
  c->ended = true;
  if (berth_front_cancel(&c->job))
    gen_release(&c->job); /* never reached a worker */
  /* running: a decoupled model stops at its next response */
}

/* Decodes the body into r; BERTH_OK or an error with err set. */
static int decode(berth_engine *e, berth_http_req *req, berth_model *m,
                  berth_infer_request *r, berth_errmsg *err) {
  size_t blen = 0;
  const char *body = berth_http_body(req, &blen);
  json_error_t jerr;
  json_t *in = json_loadb(body, blen, 0, &jerr);
  if (in == NULL)
    return berth_errf(err, BERTH_E_INVALID, "invalid JSON: %s at byte %d",
                      jerr.text, jerr.position);
  json_t *doc = oip_doc(m, in, err);
  json_decref(in);
  if (doc == NULL)
    return BERTH_E_INVALID;
  char *text = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (text == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  berth_json_limits lim = {.max_inputs = 256,
                           .max_tensor_bytes = e->cfg.max_body_bytes * 4,
                           .max_depth = 64};
  int rc = berth_json_decode_infer_request(text, strlen(text), &lim, r, err);
  free(text);
  if (rc == BERTH_OK)
    rc = berth_signature_check(m, r, err);
  return rc;
}

static void generate(berth_engine *e, berth_http_req *req,
                     const berth_rest_match *mt, bool stream) {
  struct berth_route_stat *routed;
  berth_model *m = berth_rest_find_model(e, req, mt, true, false, &routed);
  if (m == NULL || !berth_rest_servable(e, req, m))
    return;
  berth_infer_request r = {0};
  berth_errmsg err;
  int rc = decode(e, req, m, &r, &err);
  gen_call *c = rc == BERTH_OK ? calloc(1, sizeof *c) : NULL;
  if (rc == BERTH_OK && c == NULL)
    rc = berth_errf(&err, BERTH_E_NOMEM, "out of memory");
  if (rc != BERTH_OK) {
    berth_infer_request_clear(&r);
    berth_rest_count_fail(m, req, rc, err.msg);
    berth_rest_respond_error(e, req, rc, err.msg);
    return;
  }
  berth_rest_note_oip_id(req, r.id);
  c->job.req = r;
  c->req = req;
  c->engine = e;
  c->stream = stream;
  c->job.done = gen_done;
  c->job.partial = gen_partial;
  c->job.release = gen_release;
  c->job.received_ns = berth_http_received_ns(req);
  c->job.user = c;
  c->job.model = m;
  c->job.protocol = BERTH_PROTO_REST;
  c->job.request_id = berth_rest_request_id(req);
  c->job.http = req;
  berth_http_req_ref(req);
  size_t tl = 0;
  const char *tp = berth_http_header(req, "traceparent", &tl);
  rc =
      berth_front_submit(e, &c->job, routed,
                         stream ? "POST /v2/models/{model_name}/generate_stream"
                                : "POST /v2/models/{model_name}/generate",
                         tp, tl, &err);
  if (rc != BERTH_OK) {
    berth_rest_respond_error(e, req, rc, err.msg);
    gen_free(c);
    return;
  }
  berth_http_req_on_gone(req, gen_gone, c);
}

void berth_rest_generate(berth_engine *e, berth_http_req *req,
                         const berth_rest_match *mt) {
  generate(e, req, mt, false);
}

void berth_rest_generate_stream(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt) {
  generate(e, req, mt, true);
}
