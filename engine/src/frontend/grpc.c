/* Berth engine: inference.GRPCInferenceService over HTTP/2 — calls,
 * framing, deadlines, status codes, and the inference methods.
 *
 * A call is one HTTP/2 stream. Its head reaches berth_grpc_handle, which
 * checks it (HTTP/2, POST, application/grpc, a known method, no
 * compression, grpc-timeout) and creates the call; its DATA then comes to
 * grpc_on_body piece by piece, where codec_grpc.c's reader cuts it into
 * messages. Each message is handled as soon as it is complete:
 *  - unary methods (grpc_meta.c, and ModelInfer) answer one message;
 *  - ModelStreamInfer submits every request as it arrives and writes each
 *    answer (a ModelStreamInferResponse, error_message on failure) as soon
 *    as it is done, in completion order; the trailers follow when the
 *    client has half-closed and every answer is written.
 * Inference takes the REST path's steps: decode once (protobuf ->
 * berth_infer_request), check against the model's signature, queue on the
 * model's scheduler with the call's deadline; the job's done callback
 * encodes the answer. */
#include "grpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "access_log.h"
#include "codec_grpc.h"
#include "front.h"
#include "http_guard.h"
#include "log.h"
#include "router.h"
#include "ui.h"
#include "shm_api.h"
#include "trace.h"

#define SERVICE_PREFIX "/inference.GRPCInferenceService/"
#define HEALTH_PREFIX "/grpc.health.v1.Health/"
#define GRPC_CT                                                                \
  { "content-type", "application/grpc" }
#define MAX_RESPONSE ((size_t)UINT32_MAX + BERTH_GRPC_PREFIX)
/* A stream whose client leaves this much of its answers unread, or keeps
 * this many requests unanswered, is refused more work. */
#define STREAM_MAX_UNREAD ((size_t)64 << 20)
#define STREAM_MAX_PENDING 4096

typedef enum {
  KIND_UNARY,
  KIND_INFER,
  KIND_STREAM_INFER,
  KIND_LOAD,
  KIND_UNLOAD,
  KIND_WATCH, /* grpc_health.c: one request, answers until the end */
  KIND_EACH,  /* one answer (fn) per request message, until half-close */
} method_kind;

typedef struct grpc_method {
  const char *path; /* the HTTP/2 :path */
  const char *name; /* in the access log */
  method_kind kind;
  berth_grpc_unary_fn fn;
  bool health; /* a health probe (server.health_open) */
  bool admin;  /* needs an admin token (tokens configured) */
} grpc_method;

#define OIP(m, kind, fn, health)                                               \
  { SERVICE_PREFIX m, m, kind, fn, health, false }
#define OIP_ADMIN(m, fn)                                                       \
  { SERVICE_PREFIX m, m, KIND_UNARY, fn, false, true }
#define REFLECT(v)                                                             \
  {                                                                            \
    "/grpc.reflection." v ".ServerReflection/ServerReflectionInfo",            \
        "grpc.reflection." v ".ServerReflection/ServerReflectionInfo",         \
        KIND_EACH, berth_grpc_reflect_info, false, false                       \
  }

static const grpc_method methods[] = {
    OIP("ServerLive", KIND_UNARY, berth_grpc_server_live, true),
    OIP("ServerReady", KIND_UNARY, berth_grpc_server_ready, true),
    OIP("ModelReady", KIND_UNARY, berth_grpc_model_ready, true),
    OIP("ServerMetadata", KIND_UNARY, berth_grpc_server_metadata, false),
    OIP("ModelMetadata", KIND_UNARY, berth_grpc_model_metadata, false),
    OIP("ModelInfer", KIND_INFER, NULL, false),
    OIP("ModelStreamInfer", KIND_STREAM_INFER, NULL, false),
    OIP("ModelConfig", KIND_UNARY, berth_grpc_model_config, false),
    OIP("ModelStatistics", KIND_UNARY, berth_grpc_model_statistics, false),
    OIP("RepositoryIndex", KIND_UNARY, berth_grpc_repository_index, false),
    OIP("RepositoryModelLoad", KIND_LOAD, NULL, false),
    OIP("RepositoryModelUnload", KIND_UNLOAD, NULL, false),
    OIP("SystemSharedMemoryStatus", KIND_UNARY, berth_grpc_shm_status, false),
    OIP_ADMIN("SystemSharedMemoryRegister", berth_grpc_shm_register),
    OIP_ADMIN("SystemSharedMemoryUnregister", berth_grpc_shm_unregister),
    OIP("CudaSharedMemoryStatus", KIND_UNARY, berth_grpc_cuda_shm_none, false),
    OIP_ADMIN("CudaSharedMemoryRegister", berth_grpc_cuda_shm_register),
    OIP_ADMIN("CudaSharedMemoryUnregister", berth_grpc_cuda_shm_none),
    {HEALTH_PREFIX "Check", "grpc.health.v1.Health/Check", KIND_UNARY,
     berth_grpc_health_check, true, false},
    {HEALTH_PREFIX "Watch", "grpc.health.v1.Health/Watch", KIND_WATCH, NULL,
     true, false},
    REFLECT("v1"),
    REFLECT("v1alpha"),
};

typedef struct berth_grpc_call grpc_call;

/* One submitted inference request. */
typedef struct grpc_job {
  berth_job job;   /* first: the job pointer is this pointer */
  grpc_call *call; /* NULL once done (the call no longer waits) */
  char request_id[BERTH_REQUEST_ID_MAX + 1]; /* docs/logging.md */
  LIST_ENTRY(grpc_job) link;                 /* the call's jobs not yet done */
} grpc_job;

struct berth_grpc_call {
  berth_engine *e;
  berth_http_req *req; /* one reference, dropped in call_free */
  const grpc_method *method;
  berth_grpc_reader reader;
  uint64_t started_ns;
  uint64_t deadline_ns; /* uv_hrtime(), 0 = none */
  size_t messages;      /* request messages seen */
  size_t pending;       /* jobs (or a repository operation) not yet done */
  LIST_HEAD(grpc_job_list, grpc_job)
  jobs;                    /* borrowed jobs (each is freed
                                by job_release) */
  berth_grpc_watch *watch; /* KIND_WATCH: its state (grpc_health.c) */
  bool half_closed;        /* the client sent END_STREAM */
  bool begun;              /* response head sent */
  bool ended;              /* trailers sent, or the client is gone */
  int busy;                /* grpc_on_body or job_done on the stack */
  /* access log: the call's request id (x-request-id metadata, else the
   * ModelInfer request's id, else a fresh one; "" until known), the model
   * version named last, message bytes each way */
  char request_id[BERTH_REQUEST_ID_MAX + 1];
  bool id_from_metadata;
  char model[BERTH_HTTP_NOTE_MAX + 1];
  char version[BERTH_HTTP_NOTE_MAX + 1];
  uint64_t bytes_in, bytes_out;
};

/* ---- status ------------------------------------------------------------ */

berth_grpc_code berth_grpc_code_for(int status) {
  switch (status) {
  case BERTH_OK:
    return BERTH_GRPC_OK;
  case BERTH_E_INVALID:
  case BERTH_E_PARSE:
  case BERTH_E_CONFIG:
  case BERTH_E_UNSUPPORTED:
  case BERTH_E_MEDIA_TYPE:
    return BERTH_GRPC_INVALID_ARGUMENT;
  case BERTH_E_NOT_FOUND:
    return BERTH_GRPC_NOT_FOUND;
  case BERTH_E_TOO_LARGE:
  case BERTH_E_OVERLOAD:
  case BERTH_E_NOMEM:
    return BERTH_GRPC_RESOURCE_EXHAUSTED;
  case BERTH_E_UNAVAILABLE:
  case BERTH_E_SHUTDOWN:
    return BERTH_GRPC_UNAVAILABLE;
  case BERTH_E_TIMEOUT:
    return BERTH_GRPC_DEADLINE_EXCEEDED;
  case BERTH_E_METHOD:
    return BERTH_GRPC_UNIMPLEMENTED;
  case BERTH_E_UNAUTHENTICATED:
    return BERTH_GRPC_UNAUTHENTICATED;
  case BERTH_E_FORBIDDEN:
    return BERTH_GRPC_PERMISSION_DENIED;
  case BERTH_E_MODEL:
  case BERTH_E_WORKER_DIED:
  default:
    return BERTH_GRPC_INTERNAL;
  }
}

/* ---- call lifecycle ------------------------------------------------------ */

static void call_free(grpc_call *c) {
  berth_http_req_set_user(c->req, NULL);
  berth_http_req_on_gone(c->req, NULL, NULL);
  berth_http_req_unref(c->req);
  berth_grpc_reader_free(&c->reader);
  free(c);
}

static void call_maybe_free(grpc_call *c) {
  if (c->ended && c->pending == 0 && c->busy == 0)
    call_free(c);
}

static void job_unlink(grpc_call *c, grpc_job *j) {
  LIST_REMOVE(j, link);
  j->call = NULL;
  c->pending--;
}

/* The scheduler holds no more reference: the job's memory goes (the
 * request stopped counting in flight when it was answered or cancelled). */
static void job_release(berth_job *job) {
  grpc_job *j = (grpc_job *)job;
  if (j->job.trace != NULL) /* cancelled while queued */
    berth_trace_job_finish(&j->job, BERTH_E_IO);
  berth_infer_request_clear(&j->job.req);
  free(j);
}

/* Takes back the call's queued jobs (running ones finish on their own and
 * find the call ended). */
static void call_cancel_jobs(grpc_call *c) {
  grpc_job *j = LIST_FIRST(&c->jobs);
  while (j != NULL) {
    grpc_job *next = LIST_NEXT(j, link);
    if (berth_front_cancel(&j->job)) {
      job_unlink(c, j);
      berth_front_job_end(c->e, &j->job);
      job_release(&j->job);
    }
    j = next;
  }
}

static const char *call_request_id(grpc_call *c) {
  if (c->request_id[0] == '\0')
    berth_request_id_new(c->request_id);
  return c->request_id;
}

static void access_log(grpc_call *c, berth_grpc_code code) {
  if (!c->e->cfg.access_log)
    return;
  berth_access_record r = {
      .protocol = "grpc",
      .method = c->method->name,
      .method_len = strlen(c->method->name),
      .request_id = call_request_id(c),
      .model = c->model[0] ? c->model : NULL,
      .version = c->version[0] ? c->version : NULL,
      .status = (int)code,
      .latency_ms = (double)(uv_hrtime() - c->started_ns) / 1e6,
      .bytes_in = c->bytes_in,
      .bytes_out = c->bytes_out,
      .peer = berth_http_peer(c->req),
  };
  berth_access_log(&r);
}

/* Ends the call with a status: trailers after what was sent, or a
 * Trailers-Only answer. Queued jobs are taken back. */
static void call_end(grpc_call *c, berth_grpc_code code, const char *msg) {
  if (c->ended)
    return;
  c->ended = true;
  char status[8], text[1024];
  snprintf(status, sizeof status, "%d", (int)code);
  berth_grpc_percent_encode(msg != NULL ? msg : "", text, sizeof text);
  berth_http_header_kv t[4];
  size_t n = 0;
  if (!c->begun) {
    t[n++] = (berth_http_header_kv)GRPC_CT;
    t[n++] = (berth_http_header_kv){"x-request-id", call_request_id(c)};
  }
  t[n++] = (berth_http_header_kv){"grpc-status", status};
  if (code != BERTH_GRPC_OK && text[0] != '\0')
    t[n++] = (berth_http_header_kv){"grpc-message", text};
  berth_http_stream_end(c->req, t, n);
  access_log(c, code);
  berth_grpc_health_unwatch(c->e, c->watch);
  c->watch = NULL;
  call_cancel_jobs(c);
  call_maybe_free(c);
}

static void call_fail(grpc_call *c, int status, const char *msg) {
  call_end(c, berth_grpc_code_for(status), msg);
}

/* Sends one framed message (out is emptied). */
static void call_send(grpc_call *c, berth_buf *out) {
  size_t len = 0;
  char *data = berth_buf_detach(out, &len);
  if (c->ended) {
    free(data);
    return;
  }
  c->bytes_out += len;
  if (!c->begun) {
    berth_http_header_kv h[] = {
        GRPC_CT,
        {"grpc-accept-encoding", "identity,deflate,gzip"},
        {"x-request-id", call_request_id(c)}};
    if (berth_http_stream_begin(c->req, 200, h, 3) != BERTH_OK) {
      free(data);
      call_fail(c, BERTH_E_IO, "could not start the answer");
      return;
    }
    c->begun = true;
  }
  berth_http_stream_send(c->req, data, len);
}

/* A streaming call whose client is done and whose answers are all written. */
static void call_maybe_finish(grpc_call *c) {
  if (!c->ended && c->half_closed && c->pending == 0 &&
      (c->method->kind == KIND_STREAM_INFER || c->method->kind == KIND_EACH))
    call_end(c, BERTH_GRPC_OK, "");
}

static bool ops_send(berth_grpc_call *c, berth_buf *out) {
  c->busy++;
  call_send(c, out);
  bool open = !c->ended;
  c->busy--;
  call_maybe_free(c);
  return open;
}

static void ops_end(berth_grpc_call *c, berth_grpc_code code, const char *msg) {
  call_end(c, code, msg);
}

static size_t ops_unread(const berth_grpc_call *c) {
  return berth_http_stream_queued(c->req);
}

/* The call as a kept-open service sees it (grpc.h). */
static const berth_grpc_call_ops call_ops = {
    .send = ops_send, .end = ops_end, .unread = ops_unread};

static bool past_deadline(const grpc_call *c) {
  return c->deadline_ns != 0 && uv_hrtime() >= c->deadline_ns;
}

/* A failed inference request: the whole call (unary) or one error message
 * on the stream. */
static void infer_failed(grpc_call *c, int status, const char *msg) {
  if (c->ended)
    return;
  if (c->method->kind != KIND_STREAM_INFER ||
      (status == BERTH_E_TIMEOUT && past_deadline(c))) {
    call_fail(c, status, msg);
    return;
  }
  berth_buf out;
  berth_buf_init(&out, 64 * 1024);
  if (berth_grpc_encode_stream_error(msg, &out) == BERTH_OK)
    call_send(c, &out);
  berth_buf_free(&out);
}

/* ---- inference ------------------------------------------------------------ */

/* The request asked for Triton's final-response flag
 * (triton_enable_empty_final_response, docs/grpc.md). */
static bool wants_final_flag(const berth_job *job) {
  return json_is_true(json_object_get(job->req.parameters,
                                      "triton_enable_empty_final_response"));
}

/* Writes one response on the stream, with triton_final_response when the
 * request asked for it. empty: the final response of a decoupled model
 * (no outputs at all, whatever the request named). */
static void stream_answer(grpc_call *c, berth_job *job,
                          berth_infer_response *resp, bool final, bool empty) {
  berth_model *m = job->model;
  berth_infer_request req = job->req; /* shallow: id and outputs */
  if (empty) {
    req.outputs = NULL;
    req.n_outputs = 0;
  }
  berth_infer_response r = *resp;
  json_t *params = NULL;
  if (wants_final_flag(job)) {
    params = resp->parameters != NULL ? json_deep_copy(resp->parameters)
                                      : json_object();
    if (params == NULL || json_object_set_new(params, "triton_final_response",
                                              json_boolean(final)) != 0) {
      json_decref(params);
      infer_failed(c, BERTH_E_NOMEM, "out of memory");
      return;
    }
    r.parameters = params;
  }
  berth_grpc_answer a = {m->cfg->name, m->cfg->version, &req, &r, true};
  berth_buf out;
  berth_buf_init(&out, MAX_RESPONSE);
  berth_errmsg err;
  int rc = berth_grpc_encode_infer_response(&a, &out, &err);
  if (rc != BERTH_OK)
    infer_failed(
        c,
        rc == BERTH_E_INVALID || rc == BERTH_E_TOO_LARGE ? rc : BERTH_E_MODEL,
        err.msg);
  else
    call_send(c, &out);
  berth_buf_free(&out);
  json_decref(params);
}

/* One response of a decoupled model, before the final answer. */
static void job_partial(berth_job *job, berth_infer_response *resp) {
  grpc_job *j = (grpc_job *)job;
  grpc_call *c = j->call;
  if (c == NULL || c->ended)
    return;
  c->busy++;
  stream_answer(c, job, resp, false, false);
  c->busy--;
  call_maybe_free(c);
}

static void job_done(berth_job *job, int status, const char *errmsg,
                     berth_infer_response *resp) {
  grpc_job *j = (grpc_job *)job;
  grpc_call *c = j->call;
  berth_engine *e = job->model->engine;
  if (c == NULL) { /* cannot happen: done runs once, while linked */
    berth_engine_request_end(e);
    return;
  }
  job_unlink(c, j);
  c->busy++;
  if (!c->ended) {
    if (status != BERTH_OK) {
      infer_failed(c, status, errmsg);
    } else if (job->model->decoupled && c->method->kind == KIND_STREAM_INFER) {
      /* Every response went out already: only the empty final one, when
       * the client asked for it (Triton's enable_empty_final_response). */
      if (wants_final_flag(job))
        stream_answer(c, job, resp, true, true);
    } else if (c->method->kind == KIND_STREAM_INFER && wants_final_flag(job)) {
      stream_answer(c, job, resp, true, false);
    } else {
      berth_model *m = job->model;
      berth_grpc_answer a = {m->cfg->name, m->cfg->version, &job->req, resp,
                             c->method->kind == KIND_STREAM_INFER};
      berth_buf out;
      berth_buf_init(&out, MAX_RESPONSE);
      berth_errmsg err;
      int rc = berth_shm_write_outputs(e, &job->req, resp, &err);
      if (rc == BERTH_OK)
        rc = berth_grpc_encode_infer_response(&a, &out, &err);
      if (rc != BERTH_OK)
        infer_failed(c,
                     rc == BERTH_E_INVALID || rc == BERTH_E_TOO_LARGE
                         ? rc
                         : BERTH_E_MODEL,
                     err.msg);
      else
        call_send(c, &out);
      berth_buf_free(&out);
      if (c->method->kind == KIND_INFER)
        call_end(c, BERTH_GRPC_OK, "");
    }
  }
  call_maybe_finish(c);
  c->busy--;
  call_maybe_free(c);
  berth_engine_request_end(e); /* answered: the trace ends at release */
}

/* One ModelInferRequest: decode, find and check the model, queue. */
static void infer_message(grpc_call *c, const uint8_t *msg, size_t len) {
  berth_engine *e = c->e;
  uint64_t now = uv_hrtime();
  if (past_deadline(c)) {
    call_fail(c, BERTH_E_TIMEOUT, "the call's deadline (grpc-timeout) passed");
    return;
  }
  if (e->draining) {
    infer_failed(c, BERTH_E_SHUTDOWN,
                 "the server is shutting down and takes no new "
                 "requests");
    return;
  }
  grpc_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    infer_failed(c, BERTH_E_NOMEM, "out of memory");
    return;
  }
  size_t max_tensor = e->cfg.max_body_bytes > SIZE_MAX / 4
                          ? SIZE_MAX
                          : e->cfg.max_body_bytes * 4;
  berth_grpc_limits lim = {.max_inputs = 256, .max_tensor_bytes = max_tensor};
  berth_grpc_target target;
  berth_errmsg err;
  berth_model *m = NULL;
  bool submitted_failed = false;
  berth_route_stat *routed = NULL;
  int rc = berth_grpc_decode_infer_request(msg, len, &lim, &target, &j->job.req,
                                           &err);
  if (rc == BERTH_OK && target.model_name != NULL &&
      (target.model_version == NULL || target.model_version[0] == '\0'))
    m = berth_router_resolve(e, target.model_name, strlen(target.model_name),
                             c->req, &routed);
  if (rc == BERTH_OK && m == NULL)
    rc = berth_grpc_find_model(e, target.model_name, target.model_version, &m,
                               &err);
  berth_grpc_target_clear(&target);
  if (rc == BERTH_OK) {
    snprintf(c->model, sizeof c->model, "%s", m->cfg->name);
    snprintf(c->version, sizeof c->version, "%s", m->cfg->version);
  }
  if (c->id_from_metadata)
    memcpy(j->request_id, c->request_id, sizeof j->request_id);
  else if (j->job.req.id == NULL ||
           !berth_request_id_take(j->job.req.id, strlen(j->job.req.id),
                                  j->request_id))
    berth_request_id_new(j->request_id);
  if (c->method->kind == KIND_INFER)
    memcpy(c->request_id, j->request_id, sizeof c->request_id);
  j->job.request_id = j->request_id;
  if (rc == BERTH_OK) {
    rc = berth_front_check_servable(m, BERTH_PROTO_GRPC, now, err.msg,
                                    sizeof err.msg);
    if (rc != BERTH_OK)
      m = NULL; /* counted (metrics only, as over REST) */
  }
  if (rc == BERTH_OK)
    rc = berth_shm_resolve(c->e, &j->job.req, &err);
  if (rc == BERTH_OK)
    rc = berth_signature_check(m, &j->job.req, &err);
  if (rc == BERTH_OK) {
    j->job.done = job_done;
    if (c->method->kind == KIND_STREAM_INFER)
      j->job.partial = job_partial;
    j->job.release = job_release;
    j->job.user = c;
    j->job.received_ns = now;
    j->job.protocol = BERTH_PROTO_GRPC;
    j->job.deadline_ns = c->deadline_ns;
    j->job.model = m;
    j->job.http = c->req;
    /* linked first: a submit may complete the job before it returns */
    j->call = c;
    LIST_INSERT_HEAD(&c->jobs, j, link);
    c->pending++;
    size_t tl = 0;
    const char *tp = berth_http_header(c->req, "traceparent", &tl);
    rc = berth_front_submit(
        e, &j->job, routed,
        c->method->kind == KIND_STREAM_INFER
            ? "inference.GRPCInferenceService/ModelStreamInfer"
            : "inference.GRPCInferenceService/ModelInfer",
        tp, tl, &err);
    if (rc != BERTH_OK) { /* not queued, no callback ran, counted, traced */
      job_unlink(c, j);
      m = NULL;
      submitted_failed = true;
    }
  }
  if (rc != BERTH_OK) {
    if (m != NULL) /* decoded and checked, refused before the submit */
      berth_front_count_fail(m, BERTH_PROTO_GRPC, now, rc, err.msg, true);
    if (!submitted_failed)
      berth_trace_job_refused(&j->job, rc);
    berth_infer_request_clear(&j->job.req);
    free(j);
    infer_failed(c, rc, err.msg);
  }
}

/* ---- repository ----------------------------------------------------------- */

/* repository.c finished a load or unload: an empty response, or the error. */
static void repo_done(void *arg, int status, const char *msg) {
  grpc_call *c = arg;
  c->pending--;
  c->busy++;
  if (status == BERTH_OK) {
    berth_buf out;
    berth_buf_init(&out, 64);
    if (berth_grpc_append_prefix(&out, 0) ==
        BERTH_OK) /* both answers are empty */
      call_send(c, &out);
    berth_buf_free(&out);
    call_end(c, BERTH_GRPC_OK, "");
  } else {
    call_fail(c, status, msg);
  }
  c->busy--;
  call_maybe_free(c);
}

static void repo_message(grpc_call *c, const uint8_t *msg, size_t len) {
  berth_errmsg err;
  c->pending++;
  size_t hl = 0;
  const char *authz = berth_http_header(c->req, "authorization", &hl);
  bool admin = berth_auth_is_admin(&c->e->auth, authz, authz ? hl : 0);
  int rc = berth_grpc_repository_start(
      c->e, msg, len, c->method->kind == KIND_LOAD, admin, repo_done, c, &err);
  if (rc != BERTH_OK) {
    c->pending--;
    call_fail(c, rc, err.msg);
  }
}

/* ---- messages ------------------------------------------------------------- */

static int on_message(void *arg, const uint8_t *msg, size_t len) {
  grpc_call *c = arg;
  if (c->ended)
    return 1; /* stop feeding */
  c->messages++;
  c->bytes_in += len;
  bool many =
      c->method->kind == KIND_STREAM_INFER || c->method->kind == KIND_EACH;
  if (!many && c->messages > 1) {
    call_end(c, BERTH_GRPC_INTERNAL,
             "a unary method got a second request message");
    return 1;
  }
  if (c->method->kind == KIND_STREAM_INFER) {
    if (berth_http_stream_queued(c->req) > STREAM_MAX_UNREAD) {
      call_end(c, BERTH_GRPC_RESOURCE_EXHAUSTED,
               "the client leaves too many answers "
               "unread on this stream");
      return 1;
    }
    if (c->pending >= STREAM_MAX_PENDING) {
      infer_failed(c, BERTH_E_OVERLOAD,
                   "too many requests in flight on this stream");
      return 0;
    }
  }
  if (c->method->kind == KIND_LOAD || c->method->kind == KIND_UNLOAD) {
    repo_message(c, msg, len);
    return 1;
  }
  if (c->method->kind == KIND_WATCH) {
    berth_errmsg err; /* c->watch is set before the first status is sent */
    int rc =
        berth_grpc_health_watch(c->e, c, &call_ops, msg, len, &c->watch, &err);
    if (rc != BERTH_OK)
      call_fail(c, rc, err.msg);
    return 1;
  }
  if (c->method->kind == KIND_EACH &&
      berth_http_stream_queued(c->req) > STREAM_MAX_UNREAD) {
    call_end(c, BERTH_GRPC_RESOURCE_EXHAUSTED,
             "the client leaves too many answers "
             "unread on this stream");
    return 1;
  }
  if (c->method->kind != KIND_UNARY && c->method->kind != KIND_EACH) {
    infer_message(c, msg, len);
    return c->ended ? 1 : 0;
  }
  berth_buf out;
  berth_buf_init(&out, MAX_RESPONSE);
  berth_errmsg err;
  int rc = c->method->fn(c->e, msg, len, &out, &err);
  if (rc == BERTH_OK) {
    call_send(c, &out);
    if (c->method->kind == KIND_UNARY)
      call_end(c, BERTH_GRPC_OK, "");
  } else {
    call_fail(c, rc, err.msg);
  }
  berth_buf_free(&out);
  return c->ended ? 1 : 0;
}

size_t berth_grpc_on_body(berth_http_req *req, const char *data, size_t len,
                          bool end, void *arg) {
  (void)arg;
  grpc_call *c = berth_http_req_user(req);
  if (c == NULL || c->ended)
    return 0;
  c->busy++;
  berth_errmsg err;
  int rc = berth_grpc_reader_feed(&c->reader, (const uint8_t *)data, len,
                                  on_message, c, &err);
  if (rc < 0 && !c->ended)
    call_end(c,
             rc == BERTH_E_UNSUPPORTED ? BERTH_GRPC_UNIMPLEMENTED
             : rc == BERTH_E_PARSE     ? BERTH_GRPC_INTERNAL
                                       : berth_grpc_code_for(rc),
             err.msg);
  if (end && !c->ended) {
    c->half_closed = true;
    if (!berth_grpc_reader_idle(&c->reader))
      call_end(c, BERTH_GRPC_INTERNAL, "the stream ended inside a message");
    else if (c->messages == 0 && c->method->kind != KIND_STREAM_INFER &&
             c->method->kind != KIND_EACH)
      call_end(c, BERTH_GRPC_INTERNAL,
               "the call ended without a request message");
    else
      call_maybe_finish(c);
  }
  c->busy--;
  size_t held = c->ended ? 0 : berth_grpc_reader_held(&c->reader);
  call_maybe_free(c);
  return held;
}

/* The client reset the stream or closed the connection. */
static void grpc_on_gone(berth_http_req *req, void *arg) {
  (void)req;
  grpc_call *c = arg;
  if (c->ended)
    return;
  c->ended = true;
  berth_grpc_health_unwatch(c->e, c->watch);
  c->watch = NULL;
  call_cancel_jobs(c);
  call_maybe_free(c);
}

/* ---- calls ---------------------------------------------------------------- */

static bool header_is(berth_http_req *req, const char *name, const char *prefix,
                      bool whole) {
  size_t len = 0, pl = strlen(prefix);
  const char *v = berth_http_header(req, name, &len);
  if (v == NULL || len < pl || strncmp(v, prefix, pl) != 0)
    return false;
  return !whole || len == pl || v[pl] == '+' || v[pl] == ';';
}

/* Answers a call that never started with a Trailers-Only error. */
static void refuse(berth_engine *e, berth_http_req *req, berth_grpc_code code,
                   const char *msg) {
  char id[BERTH_REQUEST_ID_MAX + 1];
  size_t il = 0;
  const char *rid = berth_http_header(req, "x-request-id", &il);
  if (!berth_request_id_take(rid, il, id))
    berth_request_id_new(id);
  if (e->cfg.access_log) {
    size_t pl = 0;
    const char *path = berth_http_path(req, &pl);
    size_t sl = strlen(SERVICE_PREFIX);
    bool ours = pl > sl && memcmp(path, SERVICE_PREFIX, sl) == 0;
    berth_access_record r = {
        .protocol = "grpc",
        /* as calls log it: the inference methods bare, others with
         * their service */
        .method = ours                       ? path + sl
                  : pl > 0 && path[0] == '/' ? path + 1
                                             : path,
        .method_len = ours                       ? pl - sl
                      : pl > 0 && path[0] == '/' ? pl - 1
                                                 : pl,
        .request_id = id,
        .status = (int)code,
        .latency_ms = (double)(uv_hrtime() - berth_http_received_ns(req)) / 1e6,
        .peer = berth_http_peer(req),
    };
    berth_access_log(&r);
  }
  char status[8], text[1024];
  snprintf(status, sizeof status, "%d", (int)code);
  berth_grpc_percent_encode(msg, text, sizeof text);
  berth_http_header_kv t[] = {GRPC_CT,
                              {"grpc-status", status},
                              {"grpc-message", text},
                              {"grpc-accept-encoding", "identity,deflate,gzip"},
                              {"x-request-id", id}};
  berth_http_stream_end(req, t, 5);
}

static void http_error(berth_http_req *req, int status, const char *json) {
  static const berth_http_header_kv h[] = {
      {"content-type", "application/json"}};
  berth_http_respond(req, status, h, 1, json, strlen(json));
}

void berth_grpc_handle(berth_http_req *req, void *arg) {
  berth_engine *e = arg;
  size_t ml = 0, pl = 0;
  const char *method = berth_http_method(req, &ml);
  const char *path = berth_http_path(req, &pl);
  if (berth_http_version(req) != 20) {
    http_error(req, 505,
               "{\"error\": \"this is the gRPC port: gRPC needs HTTP/2 "
               "(REST is on the HTTP port)\"}");
    return;
  }
  if (!(ml == 4 && memcmp(method, "POST", 4) == 0)) {
    static const berth_http_header_kv h[] = {
        {"content-type", "application/json"}, {"allow", "POST"}};
    static const char body[] = "{\"error\": \"gRPC calls are POST requests\"}";
    berth_http_respond(req, 405, h, 2, body, sizeof body - 1);
    return;
  }
  berth_http_guard g = berth_http_guard_of(e);
  berth_guard_verdict v;
  berth_http_guard_decide(&g, req, false, &v); /* :authority and Origin */
  if (v.action == BERTH_GUARD_REFUSE) {
    refuse(e, req, BERTH_GRPC_PERMISSION_DENIED, v.msg);
    return;
  }
  if (!header_is(req, "content-type", "application/grpc", true)) {
    http_error(req, 415,
               "{\"error\": \"gRPC needs content-type application/grpc\"}");
    return;
  }
  const grpc_method *m = NULL;
  for (size_t i = 0; i < sizeof methods / sizeof methods[0] && m == NULL; i++)
    if (strlen(methods[i].path) == pl && memcmp(methods[i].path, path, pl) == 0)
      m = &methods[i];
  if (m == NULL) {
    char msg[400];
    snprintf(msg, sizeof msg,
             "unknown method %.*s: this server implements "
             "inference.GRPCInferenceService, grpc.health.v1.Health and "
             "grpc.reflection.v1(alpha).ServerReflection",
             (int)(pl > 200 ? 200 : pl), path);
    refuse(e, req, BERTH_GRPC_UNIMPLEMENTED, msg);
    return;
  }
  size_t hl = 0;
  const char *authz = berth_http_header(req, "authorization", &hl);
  bool admin = m->kind == KIND_LOAD || m->kind == KIND_UNLOAD || m->admin;
  switch (berth_auth_check(&e->auth, authz, authz ? hl : 0, admin, m->health)) {
  case BERTH_AUTH_UNAUTHENTICATED:
    refuse(e, req, BERTH_GRPC_UNAUTHENTICATED,
           "missing or unknown bearer token; send "
           "metadata authorization: Bearer <token>");
    return;
  case BERTH_AUTH_FORBIDDEN:
    refuse(e, req, BERTH_GRPC_PERMISSION_DENIED,
           "this method needs an admin token");
    return;
  default:
    break;
  }
  const char *enc = berth_http_header(req, "grpc-encoding", &hl);
  berth_encoding encoding = BERTH_ENC_IDENTITY;
  berth_errmsg why;
  if (enc != NULL &&
      berth_encoding_parse(enc, hl, &encoding, &why) != BERTH_OK) {
    refuse(e, req, BERTH_GRPC_UNIMPLEMENTED,
           "grpc-encoding not supported; send gzip, "
           "deflate or identity");
    return;
  }
  uint64_t timeout = 0;
  const char *to = berth_http_header(req, "grpc-timeout", &hl);
  if (to != NULL && !berth_grpc_parse_timeout(to, hl, &timeout)) {
    refuse(e, req, BERTH_GRPC_INVALID_ARGUMENT,
           "malformed grpc-timeout header");
    return;
  }
  grpc_call *c = calloc(1, sizeof *c);
  if (c == NULL) {
    refuse(e, req, BERTH_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  c->e = e;
  c->req = req;
  c->method = m;
  c->started_ns = berth_http_received_ns(req);
  const char *rid = berth_http_header(req, "x-request-id", &hl);
  c->id_from_metadata = berth_request_id_take(rid, hl, c->request_id);
  if (to != NULL)
    c->deadline_ns = timeout > UINT64_MAX - c->started_ns
                         ? UINT64_MAX
                         : c->started_ns + timeout;
  size_t max = e->cfg.grpc_max_message_bytes ? e->cfg.grpc_max_message_bytes
                                             : e->cfg.max_body_bytes;
  berth_grpc_reader_init(&c->reader, max > UINT32_MAX ? UINT32_MAX : max);
  c->reader.encoding = encoding;
  berth_http_req_ref(req);
  berth_http_req_set_user(req, c);
  berth_http_req_on_gone(req, grpc_on_gone, c);
}

int berth_grpc_start(berth_engine *e, berth_errmsg *err) {
  berth_httpd_options opt = {
      .host = e->cfg.host,
      .port = e->cfg.grpc_port,
      .max_body_bytes = e->cfg.max_body_bytes,
      .max_head_bytes = e->cfg.max_head_bytes,
      .max_headers = 100,
      .idle_timeout_ms = 300000,
      .header_timeout_ms = e->cfg.header_timeout_ms,
      .write_path = berth_httpd_write_path(e->cfg.write_path),
      .budget = &e->conns,
      .handler = berth_grpc_handle,
      .handler_data = e,
      .on_body = berth_grpc_on_body,
      .tls = e->tls_grpc,
  };
  berth_httpd *h = NULL;
  int rc = berth_httpd_start(e->loop, &opt, &h, err);
  if (rc != BERTH_OK)
    return rc;
  rc = berth_engine_add_listener(e, h, err);
  if (rc != BERTH_OK) {
    berth_httpd_close(h, NULL, NULL);
    return rc;
  }
  char port[16];
  snprintf(port, sizeof port, "%u", berth_httpd_port(h));
  berth_log_kv(BERTH_LOG_INFO,
               e->tls_grpc
                   ? "listening (gRPC: inference.GRPCInferenceService, health, "
                     "reflection; TLS)"
                   : "listening (gRPC: inference.GRPCInferenceService, health, "
                     "reflection; h2c)",
               "host", e->cfg.host, "grpc_port", port, NULL);
  return BERTH_OK;
}

const berth_module berth_grpc_module = {.name = "grpc",
                                        .start = berth_grpc_start,
                                        .drain = berth_grpc_health_drain,
                                        .close = berth_grpc_health_close};
