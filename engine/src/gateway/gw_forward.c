/* Berth engine, gateway mode: one forwarded request (gateway.h).
 *
 * A call picks a replica (power of two choices), sends the request's head
 * and body on a stream of that replica's pool, and relays the answer: REST
 * answers with a Content-Length are collected (up to server.max_body_bytes)
 * and answered whole; others (generate_stream's events) and every gRPC
 * answer stream through, DATA and trailers. When the replica fails before
 * it sent a head (connect refused, reset, lost connection), the call tries
 * another replica, up to gateway.retries times; never after a head.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "codec_grpc.h"
#include "gateway.h"
#include "grpc.h"
#include "log.h"
#include "rest.h"

#define GW_MAX_FIELDS 100
#define GW_MAX_TRIES 9
/* Answer bytes a slow client may leave queued before the call gives up. */
#define GW_MAX_QUEUED (64u << 20)

typedef struct gw_call {
  berth_gateway *g;
  berth_http_req *req; /* referenced */
  bool grpc;
  berth_http_header_kv head[GW_MAX_FIELDS + 4]; /* forwarded head */
  size_t n_head;
  char *head_mem; /* owned: the strings of head */
  berth_gw_body body;
  char *body_mem;   /* gRPC: owned copy of the DATA so far */
  char *length_mem; /* owned: the forwarded content-length value */
  bool no_body;     /* a GET: the head ends the stream */
  size_t body_cap;
  berth_gw_replica *tried[GW_MAX_TRIES];
  size_t n_tried;
  berth_gw_replica *cur; /* the attempt's replica (counted in flight) */
  berth_gw_ustream *us;
  uint64_t attempt_ns;
  char last_error[400];
  bool got_head, streaming, finished, gone;
  int status;
  berth_http_header_kv *saved; /* owned copies: a buffered answer's head or
                                  a Trailers-Only gRPC answer */
  size_t n_saved;
  bool trailers_only;
  berth_buf resp;
} gw_call;

static void call_attempt(gw_call *c);

/* ---- headers ------------------------------------------------------------- */

static bool hop_by_hop(const char *n, size_t nl) {
  static const char *const drop[] = {
      "connection", "keep-alive",    "proxy-connection", "transfer-encoding",
      "upgrade",    "host",          "content-length",   "expect",
      "te",         "http2-settings"};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    if (strlen(drop[i]) == nl && strncasecmp(drop[i], n, nl) == 0)
      return true;
  return false;
}

/* Builds the head sent to replicas: pseudo-headers, then the client's
 * fields (names lower-cased) but the hop-by-hop ones. */
static bool build_head(gw_call *c) {
  berth_http_req *req = c->req;
  size_t ml, pl, ql = 0, hl = 0;
  const char *method = berth_http_method(req, &ml);
  const char *path = berth_http_path(req, &pl);
  const char *query = berth_http_query(req, &ql);
  const char *host = berth_http_header(req, "host", &hl);
  size_t nf = berth_http_header_count(req);
  size_t bytes = ml + pl + ql + hl + 64;
  for (size_t i = 0; i < nf; i++) {
    const char *n, *v;
    size_t nl, vl;
    berth_http_header_at(req, i, &n, &nl, &v, &vl);
    bytes += nl + vl + 2;
  }
  char *m = malloc(bytes);
  if (m == NULL)
    return false;
  c->head_mem = m;
  char *p = m;
#define PUT(name, fmt, ...)                                                    \
  do {                                                                         \
    int w = snprintf(p, (size_t)(m + bytes - p), fmt, __VA_ARGS__);            \
    c->head[c->n_head++] = (berth_http_header_kv){name, p};                    \
    p += w + 1;                                                                \
  } while (0)
  PUT(":method", "%.*s", (int)ml, method);
  PUT(":scheme", "%s", "http");
  PUT(":path", "%.*s%s%.*s", (int)pl, path, query ? "?" : "", (int)ql,
      query ? query : "");
  if (host != NULL)
    PUT(":authority", "%.*s", (int)hl, host);
  else
    PUT(":authority", "%s", "localhost");
#undef PUT
  for (size_t i = 0; i < nf && c->n_head < GW_MAX_FIELDS; i++) {
    const char *n, *v;
    size_t nl, vl;
    berth_http_header_at(req, i, &n, &nl, &v, &vl);
    bool te_trailers = nl == 2 && strncasecmp(n, "te", 2) == 0 && vl == 8 &&
                       strncasecmp(v, "trailers", 8) == 0;
    if (hop_by_hop(n, nl) && !te_trailers)
      continue;
    char *name = p;
    for (size_t k = 0; k < nl; k++)
      name[k] = (n[k] >= 'A' && n[k] <= 'Z') ? (char)(n[k] + 32) : n[k];
    name[nl] = '\0';
    p += nl + 1;
    memcpy(p, v, vl);
    p[vl] = '\0';
    c->head[c->n_head++] = (berth_http_header_kv){name, p};
    p += vl + 1;
  }
  return true;
}

/* Answer headers worth passing on to the client. */
static size_t filter_answer(const berth_http_header_kv *h, size_t n,
                            berth_http_header_kv *out, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k < cap; i++) {
    const char *name = h[i].name;
    if (hop_by_hop(name, strlen(name)) || strcmp(name, "date") == 0)
      continue;
    out[k++] = h[i];
  }
  return k;
}

static void saved_free(gw_call *c) {
  for (size_t i = 0; i < c->n_saved; i++) {
    free((char *)c->saved[i].name);
    free((char *)c->saved[i].value);
  }
  free(c->saved);
  c->saved = NULL;
  c->n_saved = 0;
}

static bool save_headers(gw_call *c, const berth_http_header_kv *h, size_t n) {
  c->saved = calloc(n ? n : 1, sizeof *c->saved);
  if (c->saved == NULL)
    return false;
  for (size_t i = 0; i < n; i++) {
    char *a = strdup(h[i].name), *b = strdup(h[i].value);
    if (a == NULL || b == NULL) {
      free(a);
      free(b);
      return false;
    }
    c->saved[c->n_saved++] = (berth_http_header_kv){a, b};
  }
  return true;
}

/* ---- answering ------------------------------------------------------------- */

void berth_gw_grpc_refuse(berth_http_req *req, int code, const char *msg) {
  char status[8], text[1024];
  snprintf(status, sizeof status, "%d", code);
  berth_grpc_percent_encode(msg, text, sizeof text);
  berth_http_header_kv t[] = {{"content-type", "application/grpc"},
                              {"grpc-status", status},
                              {"grpc-message", text}};
  berth_http_stream_end(req, t, 3);
}

static void call_free(gw_call *c) {
  saved_free(c);
  berth_buf_free(&c->resp);
  free(c->head_mem);
  free(c->body_mem);
  free(c->length_mem);
  berth_http_req_set_user(c->req, NULL);
  berth_http_req_unref(c->req);
  berth_engine_request_end(c->g->e);
  free(c);
}

/* The attempt in flight is over (counted once). */
static void attempt_end(gw_call *c, bool ok) {
  berth_gw_replica *r = c->cur;
  if (r == NULL)
    return;
  c->cur = NULL;
  c->us = NULL;
  r->in_flight--;
  berth_gw_hist_observe(&r->latency,
                        (double)(uv_hrtime() - c->attempt_ns) / 1e9);
  if (ok) {
    berth_gw_on_success(r);
  } else if (berth_gw_on_failure(r, &c->g->policy, uv_now(c->g->e->loop))) {
    berth_log_kv(BERTH_LOG_WARNING, "replica ejected", "replica", r->name,
                 "reason", c->last_error, NULL);
  }
  berth_gw_attempt_done(c->g, r);
}

/* Answers an error the gateway made itself. */
static void call_fail(gw_call *c, int status, const char *msg) {
  if (!c->gone) {
    if (c->grpc && c->streaming)
      berth_gw_grpc_refuse(c->req, BERTH_GRPC_UNAVAILABLE, msg);
    else if (c->grpc)
      berth_gw_grpc_refuse(c->req, berth_grpc_code_for(status), msg);
    else if (c->streaming)
      berth_http_stream_end(c->req, NULL, 0);
    else
      berth_rest_respond_error(c->g->e, c->req, status, msg);
  }
  c->finished = true;
}

/* ---- the replica's answer --------------------------------------------------- */

static void on_head(void *ud, int status, const berth_http_header_kv *h,
                    size_t n, bool end) {
  gw_call *c = ud;
  c->got_head = true;
  c->status = status;
  if (c->gone)
    return;
  bool length = false;
  for (size_t i = 0; i < n; i++)
    length = length || strcmp(h[i].name, "content-length") == 0;
  if (c->grpc && end) {
    c->trailers_only = true;
    if (!save_headers(c, h, n))
      c->trailers_only = false;
    return;
  }
  if (!c->grpc && (length || end)) {
    if (!save_headers(c, h, n))
      berth_gw_ustream_cancel(c->us); /* ends as a failure below */
    return;
  }
  berth_http_header_kv out[GW_MAX_FIELDS];
  size_t k = filter_answer(h, n, out, GW_MAX_FIELDS);
  c->streaming = true;
  berth_http_stream_begin(c->req, c->grpc ? 200 : status, out, k);
}

static void on_data(void *ud, const char *data, size_t len) {
  gw_call *c = ud;
  if (c->gone || len == 0)
    return;
  if (!c->streaming) {
    if (berth_buf_append(&c->resp, data, len) != BERTH_OK) {
      snprintf(c->last_error, sizeof c->last_error,
               "the replica's answer is larger than server.max_body_bytes");
      berth_gw_ustream_cancel(c->us);
      attempt_end(c, true);
      call_fail(c, BERTH_E_TOO_LARGE, c->last_error);
      call_free(c);
    }
    return;
  }
  char *copy = malloc(len);
  if (copy == NULL)
    return;
  memcpy(copy, data, len);
  if (berth_http_stream_send(c->req, copy, len) != BERTH_OK)
    return; /* the client is gone: call_gone follows */
  if (berth_http_stream_queued(c->req) > GW_MAX_QUEUED) {
    snprintf(c->last_error, sizeof c->last_error,
             "the client reads the answer too slowly");
    berth_gw_ustream_cancel(c->us);
    attempt_end(c, true);
    call_fail(c, BERTH_E_UNAVAILABLE, c->last_error);
    call_free(c);
  }
}

static void answer_whole(gw_call *c) {
  berth_http_header_kv out[GW_MAX_FIELDS];
  size_t k = filter_answer(c->saved, c->n_saved, out, GW_MAX_FIELDS);
  size_t len = 0;
  char *body = berth_buf_detach(&c->resp, &len);
  berth_http_respond_take(c->req, c->status, out, k, body, len);
}

static void on_close(void *ud, bool ok, const berth_http_header_kv *t, size_t n,
                     const char *why) {
  gw_call *c = ud;
  if (!ok)
    snprintf(c->last_error, sizeof c->last_error, "replica %.128s: %.200s",
             c->cur ? c->cur->name : "?", why);
  bool replica_ok = ok && c->status < 500;
  if (ok && !replica_ok)
    snprintf(c->last_error, sizeof c->last_error, "replica answered status %d",
             c->status);
  attempt_end(c, replica_ok);
  if (c->gone) {
    call_free(c);
    return;
  }
  if (!c->got_head) {
    call_attempt(c); /* another replica, or the final error */
    return;
  }
  if (!ok) {
    call_fail(c, BERTH_E_UNAVAILABLE, c->last_error);
  } else if (c->trailers_only) {
    berth_http_header_kv out[GW_MAX_FIELDS];
    size_t k = filter_answer(c->saved, c->n_saved, out, GW_MAX_FIELDS);
    berth_http_stream_end(c->req, out, k);
  } else if (c->streaming) {
    berth_http_header_kv out[GW_MAX_FIELDS];
    size_t k = filter_answer(t, n, out, GW_MAX_FIELDS);
    berth_http_stream_end(c->req, out, k);
  } else {
    answer_whole(c);
  }
  call_free(c);
}

static const berth_gw_stream_cbs call_cbs = {on_head, on_data, on_close};

/* ---- attempts ------------------------------------------------------------- */

static void call_attempt(gw_call *c) {
  berth_gateway *g = c->g;
  while (c->n_tried <= g->retries && c->n_tried < GW_MAX_TRIES) {
    berth_gw_replica *r =
        berth_gw_pick(&g->set, c->tried, c->n_tried, berth_gw_rand, g);
    if (r == NULL)
      break;
    gw_transport *t = r->transport;
    if (c->n_tried > 0)
      g->retried++;
    c->tried[c->n_tried++] = r;
    r->requests++;
    r->in_flight++;
    c->cur = r;
    c->attempt_ns = uv_hrtime();
    berth_errmsg err;
    c->us = t != NULL ? berth_gw_up_submit(t->up, c->head, c->n_head,
                                           c->no_body ? NULL : &c->body,
                                           &call_cbs, c, &err)
                      : NULL;
    if (c->us != NULL)
      return;
    snprintf(c->last_error, sizeof c->last_error, "replica %.128s: %.200s",
             r->name, t != NULL ? err.msg : "not connected yet");
    attempt_end(c, false);
  }
  if (c->n_tried == 0) {
    g->no_replica++;
    call_fail(c, BERTH_E_UNAVAILABLE,
              "no healthy replica: the gateway has no replica that passed "
              "its health check (see GET /v2/gateway/replicas)");
  } else {
    g->forward_fails++;
    char msg[480];
    snprintf(msg, sizeof msg, "no replica could answer: %.400s", c->last_error);
    call_fail(c, BERTH_E_UNAVAILABLE, msg);
  }
  call_free(c);
}

static void call_gone(berth_http_req *req, void *arg) {
  gw_call *c = arg;
  if (c->finished)
    return;
  c->gone = true;
  if (c->us != NULL) {
    berth_gw_ustream_cancel(c->us);
    snprintf(c->last_error, sizeof c->last_error, "the client left");
    attempt_end(c, true);
    call_free(c);
  }
}

static gw_call *call_new(berth_gateway *g, berth_http_req *req, bool grpc) {
  gw_call *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->g = g;
  c->req = req;
  c->grpc = grpc;
  berth_buf_init(&c->resp, g->e->cfg.max_body_bytes);
  if (!build_head(c)) {
    free(c->head_mem);
    free(c);
    return NULL;
  }
  berth_http_req_ref(req);
  berth_http_req_set_user(req, c);
  berth_http_req_on_gone(req, call_gone, c);
  berth_engine_request_begin(g->e);
  return c;
}

void berth_gw_forward_rest(berth_gateway *g, berth_http_req *req) {
  gw_call *c = call_new(g, req, false);
  if (c == NULL) {
    berth_rest_respond_error(g->e, req, BERTH_E_NOMEM, "out of memory");
    return;
  }
  size_t len = 0;
  const char *body = berth_http_body(req, &len);
  size_t ml = 0;
  const char *m = berth_http_method(req, &ml);
  bool bodyless = len == 0 && ((ml == 3 && memcmp(m, "GET", 3) == 0) ||
                               (ml == 4 && memcmp(m, "HEAD", 4) == 0));
  c->body = (berth_gw_body){body, len, true};
  c->no_body = bodyless;
  if (!bodyless) {
    char cl[32];
    snprintf(cl, sizeof cl, "%zu", len);
    c->length_mem = strdup(cl);
    if (c->length_mem != NULL) /* room was kept: GW_MAX_FIELDS + 4 */
      c->head[c->n_head++] =
          (berth_http_header_kv){"content-length", c->length_mem};
  }
  call_attempt(c);
}

/* gRPC: the body arrives later (berth_gw_grpc_on_body). */
void berth_gw_forward_grpc(berth_gateway *g, berth_http_req *req) {
  gw_call *c = call_new(g, req, true);
  if (c == NULL) {
    berth_gw_grpc_refuse(req, BERTH_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  c->body = (berth_gw_body){"", 0, false};
  call_attempt(c);
}

size_t berth_gw_grpc_on_body(berth_http_req *req, const char *data, size_t len,
                             bool end, void *arg) {
  gw_call *c = berth_http_req_user(req);
  if (c == NULL || c->finished)
    return 0;
  if (c->got_head && c->us != NULL && c->body_mem != NULL) {
    size_t sent = berth_gw_ustream_sent(c->us);
    memmove(c->body_mem, c->body_mem + sent, c->body.len - sent);
    c->body.len -= sent;
    berth_gw_ustream_rebase(c->us, sent);
  }
  if (len > 0) {
    if (c->body.len + len > c->body_cap) {
      size_t cap = c->body_cap ? c->body_cap : 4096;
      while (cap < c->body.len + len)
        cap *= 2;
      char *m = realloc(c->body_mem, cap);
      if (m == NULL) {
        if (c->us != NULL)
          berth_gw_ustream_cancel(c->us);
        attempt_end(c, true);
        call_fail(c, BERTH_E_NOMEM, "out of memory");
        call_free(c);
        return 0;
      }
      c->body_mem = m;
      c->body_cap = cap;
    }
    memcpy(c->body_mem + c->body.len, data, len);
    c->body.len += len;
    c->body.data = c->body_mem;
  }
  if (end)
    c->body.eof = true;
  if (c->us != NULL)
    berth_gw_ustream_resume(c->us);
  return c->body.len;
}
