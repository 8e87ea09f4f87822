/* Berth engine: OTLP/HTTP trace export (see otlp_export.h). */
#include "otlp_export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_url.h"
#include "otlp_trace.pb-c.h"

#ifndef BERTH_VERSION
#define BERTH_VERSION "0"
#endif

/* ---- encoding ------------------------------------------------------------ */

#define MAX_ATTRS 9

size_t berth_trace_record_spans(const berth_trace_record *r) {
  return 1 + (r->queued ? 1 : 0) + (r->sent ? 1 : 0);
}

typedef struct span_pool {
  Berth__Otlp__KeyValue *kv;
  Berth__Otlp__KeyValue **kvp;
  Berth__Otlp__AnyValue *av;
  size_t used;
} span_pool;

static Berth__Otlp__KeyValue *attr(span_pool *p, const char *key) {
  Berth__Otlp__KeyValue *kv = &p->kv[p->used];
  Berth__Otlp__AnyValue *av = &p->av[p->used];
  p->kvp[p->used] = kv;
  p->used++;
  berth__otlp__key_value__init(kv);
  berth__otlp__any_value__init(av);
  kv->key = (char *)key;
  kv->value = av;
  return kv;
}

static void attr_str(span_pool *p, const char *key, const char *v) {
  Berth__Otlp__KeyValue *kv = attr(p, key);
  kv->value->value_case = BERTH__OTLP__ANY_VALUE__VALUE_STRING_VALUE;
  kv->value->string_value = (char *)v;
}

static void attr_int(span_pool *p, const char *key, int64_t v) {
  Berth__Otlp__KeyValue *kv = attr(p, key);
  kv->value->value_case = BERTH__OTLP__ANY_VALUE__VALUE_INT_VALUE;
  kv->value->int_value = v;
}

/* Fills one span's common fields; its attributes start at p->used. */
static void span_fill(Berth__Otlp__Span *s, const berth_trace_record *r,
                      const uint8_t *id, const uint8_t *parent,
                      const char *name, Berth__Otlp__Span__SpanKind kind,
                      uint64_t start, uint64_t end, span_pool *p) {
  berth__otlp__span__init(s);
  s->trace_id.data = (uint8_t *)r->trace_id;
  s->trace_id.len = 16;
  s->span_id.data = (uint8_t *)id;
  s->span_id.len = 8;
  if (parent != NULL) {
    s->parent_span_id.data = (uint8_t *)parent;
    s->parent_span_id.len = 8;
  }
  s->name = (char *)name;
  s->kind = kind;
  s->start_time_unix_nano = start;
  s->end_time_unix_nano = end < start ? start : end;
  s->flags = r->flags;
  s->attributes = &p->kvp[p->used];
  size_t before = p->used;
  attr_str(p, "berth.model", r->model);
  attr_str(p, "berth.model_version", r->version);
  if (r->batch_size > 0)
    attr_int(p, "berth.batch_size", r->batch_size);
  s->n_attributes = p->used - before;
}

int berth_otlp_encode(const berth_trace_record *const *recs, size_t n,
                      const char *service, uint8_t **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += berth_trace_record_spans(recs[i]);
  size_t nattr = total * MAX_ATTRS;
  Berth__Otlp__Span *spans = calloc(total ? total : 1, sizeof *spans);
  Berth__Otlp__Span **spanp = calloc(total ? total : 1, sizeof *spanp);
  Berth__Otlp__Status *status = calloc(n ? n : 1, sizeof *status);
  span_pool p = {calloc(nattr ? nattr : 1, sizeof *p.kv),
                 calloc(nattr ? nattr : 1, sizeof *p.kvp),
                 calloc(nattr ? nattr : 1, sizeof *p.av), 0};
  int rc = BERTH_E_NOMEM;
  if (spans == NULL || spanp == NULL || status == NULL || p.kv == NULL ||
      p.kvp == NULL || p.av == NULL)
    goto done;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const berth_trace_record *r = recs[i];
    Berth__Otlp__Span *s = &spans[k];
    span_fill(s, r, r->span_id, r->has_parent ? r->parent_id : NULL, r->name,
              BERTH__OTLP__SPAN__SPAN_KIND__SPAN_KIND_SERVER, r->start_ns,
              r->end_ns, &p);
    attr_str(&p, "berth.protocol", r->protocol);
    attr_str(&p, "berth.status", berth_status_name(r->status));
    if (strcmp(r->protocol, "grpc") == 0)
      attr_str(&p, "rpc.system", "grpc");
    else
      attr_str(&p, "http.request.method", "POST");
    if (r->responses > 0) {
      attr_int(&p, "berth.responses", (int64_t)r->responses);
      attr_int(&p, "berth.time_to_first_response_us",
               (int64_t)r->first_response_us);
      attr_int(&p, "berth.generated_tokens", (int64_t)r->gen_tokens);
    }
    s->n_attributes = (size_t)(&p.kvp[p.used] - s->attributes);
    if (r->status != BERTH_OK) {
      berth__otlp__status__init(&status[i]);
      status[i].code = BERTH__OTLP__STATUS__STATUS_CODE__STATUS_CODE_ERROR;
      status[i].message = (char *)berth_status_message(r->status);
      s->status = &status[i];
    }
    spanp[k] = s;
    k++;
    if (r->queued) {
      span_fill(&spans[k], r, r->queue_id, r->span_id, "queue",
                BERTH__OTLP__SPAN__SPAN_KIND__SPAN_KIND_INTERNAL,
                r->queue_start_ns, r->queue_end_ns, &p);
      spanp[k] = &spans[k];
      k++;
    }
    if (r->sent) {
      span_fill(&spans[k], r, r->worker_id, r->span_id, "worker",
                BERTH__OTLP__SPAN__SPAN_KIND__SPAN_KIND_INTERNAL,
                r->worker_start_ns, r->worker_end_ns, &p);
      spanp[k] = &spans[k];
      k++;
    }
  }

  Berth__Otlp__KeyValue rkv[4];
  Berth__Otlp__AnyValue rav[4];
  Berth__Otlp__KeyValue *rkvp[4];
  const char *rkeys[4] = {"service.name", "telemetry.sdk.name",
                          "telemetry.sdk.language", "telemetry.sdk.version"};
  const char *rvals[4] = {service, "berth", "c", BERTH_VERSION};
  for (int i = 0; i < 4; i++) {
    berth__otlp__key_value__init(&rkv[i]);
    berth__otlp__any_value__init(&rav[i]);
    rav[i].value_case = BERTH__OTLP__ANY_VALUE__VALUE_STRING_VALUE;
    rav[i].string_value = (char *)rvals[i];
    rkv[i].key = (char *)rkeys[i];
    rkv[i].value = &rav[i];
    rkvp[i] = &rkv[i];
  }
  Berth__Otlp__Resource res = BERTH__OTLP__RESOURCE__INIT;
  res.n_attributes = 4;
  res.attributes = rkvp;
  Berth__Otlp__InstrumentationScope scope =
      BERTH__OTLP__INSTRUMENTATION_SCOPE__INIT;
  scope.name = "berth";
  scope.version = BERTH_VERSION;
  Berth__Otlp__ScopeSpans ss = BERTH__OTLP__SCOPE_SPANS__INIT;
  ss.scope = &scope;
  ss.n_spans = k;
  ss.spans = spanp;
  Berth__Otlp__ScopeSpans *ssp = &ss;
  Berth__Otlp__ResourceSpans rs = BERTH__OTLP__RESOURCE_SPANS__INIT;
  rs.resource = &res;
  rs.n_scope_spans = 1;
  rs.scope_spans = &ssp;
  Berth__Otlp__ResourceSpans *rsp = &rs;
  Berth__Otlp__ExportTraceServiceRequest req =
      BERTH__OTLP__EXPORT_TRACE_SERVICE_REQUEST__INIT;
  req.n_resource_spans = 1;
  req.resource_spans = &rsp;
  size_t len = berth__otlp__export_trace_service_request__get_packed_size(&req);
  uint8_t *buf = malloc(len ? len : 1);
  if (buf == NULL)
    goto done;
  *out_len = berth__otlp__export_trace_service_request__pack(&req, buf);
  *out = buf;
  rc = BERTH_OK;
done:
  free(spans);
  free(spanp);
  free(status);
  free(p.kv);
  free(p.kvp);
  free(p.av);
  return rc;
}

/* ---- the HTTP client ------------------------------------------------------ */

#define HOST_MAX 256
#define PATH_MAX_ 1024
#define HEAD_MAX 2048    /* the request head we write */
#define STATUS_KEEP 1024 /* answer bytes kept to read the status line */

typedef struct xfer xfer;

struct berth_otlp_client {
  uv_loop_t *loop;
  char host[HOST_MAX];
  char path[PATH_MAX_];
  uint16_t port;
  uint32_t timeout_ms;
  uv_timer_t timer; /* the exchange's deadline */
  xfer *cur;        /* the exchange in flight, or NULL */
  size_t live;      /* exchanges not yet freed, + 1 for timer */
  bool closing;
  void (*on_closed)(void *);
  void *closed_arg;
};

struct xfer {
  berth_otlp_client *c;
  uv_getaddrinfo_t gai;
  uv_connect_t conn;
  uv_write_t wr;
  uv_tcp_t tcp;
  bool resolving; /* gai outstanding */
  bool tcp_open;  /* tcp initialised, not yet closed */
  bool finished;  /* done has been called */
  uint8_t *body;
  size_t body_len;
  char head[HEAD_MAX];
  size_t head_len;
  char got[STATUS_KEEP]; /* the first bytes of the answer */
  size_t got_len;
  berth_otlp_done_cb done;
  void *arg;
};

static void client_maybe_closed(berth_otlp_client *c) {
  if (c->closing && c->live == 0) {
    void (*cb)(void *) = c->on_closed;
    void *arg = c->closed_arg;
    free(c);
    if (cb != NULL)
      cb(arg);
  }
}

static void xfer_free(xfer *x) {
  berth_otlp_client *c = x->c;
  free(x->body);
  free(x);
  c->live--;
  client_maybe_closed(c);
}

static void on_timer_closed(uv_handle_t *h);

static void close_timer(berth_otlp_client *c) {
  if (!uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_tcp_closed(uv_handle_t *h) {
  xfer *x = h->data;
  x->tcp_open = false;
  if (!x->resolving)
    xfer_free(x);
}

/* Ends the exchange once: stops the deadline, calls done, and releases the
 * connection (the memory goes when every handle and request is back). */
static void xfer_end(xfer *x, bool ok, const char *msg) {
  if (x->finished)
    return;
  x->finished = true;
  berth_otlp_client *c = x->c;
  if (c->cur == x) {
    c->cur = NULL;
    uv_timer_stop(&c->timer);
  }
  x->done(x->arg, ok, msg);
  if (c->closing)
    close_timer(c);
  if (x->tcp_open) {
    if (!uv_is_closing((uv_handle_t *)&x->tcp))
      uv_close((uv_handle_t *)&x->tcp, on_tcp_closed);
  } else if (!x->resolving) {
    xfer_free(x);
  }
}

static void xfer_fail(xfer *x, const char *what, int uverr) {
  char msg[512];
  snprintf(msg, sizeof msg, "%.40s %.120s:%u: %.80s", what, x->c->host,
           (unsigned)x->c->port, uv_strerror(uverr));
  xfer_end(x, false, msg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  xfer *x = h->data;
  (void)suggested;
  /* the part of got that is free; once full, a scratch area: the rest of
   * the answer is read and thrown away */
  static char sink[4096];
  if (x->got_len < sizeof x->got)
    *buf = uv_buf_init(x->got + x->got_len,
                       (unsigned)(sizeof x->got - x->got_len));
  else
    *buf = uv_buf_init(sink, sizeof sink);
}

int berth_otlp_http_answer(const char *s, size_t n, bool *complete) {
  *complete = false;
  if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ')
    return -1;
  int code = 0;
  for (int i = 9; i < 12; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    code = code * 10 + (s[i] - '0');
  }
  /* whole: the head and, by Content-Length, the body (the server may keep
   * the connection open) */
  size_t head = 0;
  for (size_t i = 0; i + 3 < n; i++)
    if (memcmp(s + i, "\r\n\r\n", 4) == 0) {
      head = i + 4;
      break;
    }
  if (head == 0)
    return code;
  static const char cl[] = "content-length:";
  size_t p = 0;
  while (p < head) {
    const char *eol = memchr(s + p, '\n', head - p);
    if (eol == NULL)
      break;
    size_t line = (size_t)(eol - (s + p));
    if (line > sizeof cl - 1 && strncasecmp(s + p, cl, sizeof cl - 1) == 0) {
      size_t q = p + sizeof cl - 1, v = 0;
      while (q < p + line && (s[q] == ' ' || s[q] == '\t'))
        q++;
      bool digits = false;
      while (q < p + line && s[q] >= '0' && s[q] <= '9') {
        if (v > (SIZE_MAX - 9) / 10)
          return code; /* absurd: wait for the end of the connection */
        v = v * 10 + (size_t)(s[q] - '0');
        q++;
        digits = true;
      }
      *complete = digits && n - head >= v;
      return code;
    }
    p += line + 1;
  }
  return code;
}

static void answer_read(xfer *x) {
  bool complete;
  int code = berth_otlp_http_answer(x->got, x->got_len, &complete);
  if (code >= 200 && code < 300) {
    xfer_end(x, true, "");
    return;
  }
  char msg[512];
  if (code < 0)
    snprintf(msg, sizeof msg, "%.120s:%u answered no HTTP status line",
             x->c->host, (unsigned)x->c->port);
  else
    snprintf(msg, sizeof msg, "%.120s:%u%.100s answered HTTP %d", x->c->host,
             (unsigned)x->c->port, x->c->path, code);
  xfer_end(x, false, msg);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  xfer *x = s->data;
  (void)buf;
  if (x->finished)
    return;
  if (n == UV_EOF) {
    answer_read(x);
    return;
  }
  if (n < 0) {
    xfer_fail(x, "reading the answer of", (int)n);
    return;
  }
  if (buf->base == x->got + x->got_len)
    x->got_len += (size_t)n;
  bool complete = false;
  berth_otlp_http_answer(x->got, x->got_len, &complete);
  if (x->got_len == sizeof x->got || complete)
    answer_read(x);
}

static void on_written(uv_write_t *w, int status) {
  xfer *x = w->data;
  if (x->finished)
    return;
  if (status < 0) {
    xfer_fail(x, "writing to", status);
    return;
  }
  int rc = uv_read_start((uv_stream_t *)&x->tcp, on_alloc, on_read);
  if (rc < 0)
    xfer_fail(x, "reading from", rc);
}

static void on_connected(uv_connect_t *cr, int status) {
  xfer *x = cr->data;
  if (x->finished)
    return;
  if (status < 0) {
    xfer_fail(x, "connecting to", status);
    return;
  }
  uv_buf_t bufs[2] = {uv_buf_init(x->head, (unsigned)x->head_len),
                      uv_buf_init((char *)x->body, (unsigned)x->body_len)};
  x->wr.data = x;
  int rc = uv_write(&x->wr, (uv_stream_t *)&x->tcp, bufs, 2, on_written);
  if (rc < 0)
    xfer_fail(x, "writing to", rc);
}

static void xfer_connect(xfer *x, const struct sockaddr *addr) {
  int rc = uv_tcp_init(x->c->loop, &x->tcp);
  if (rc < 0) {
    xfer_fail(x, "connecting to", rc);
    return;
  }
  x->tcp_open = true;
  x->tcp.data = x;
  x->conn.data = x;
  rc = uv_tcp_connect(&x->conn, &x->tcp, addr, on_connected);
  if (rc < 0)
    xfer_fail(x, "connecting to", rc);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res) {
  xfer *x = g->data;
  x->resolving = false;
  if (x->finished) { /* timed out or closed meanwhile */
    uv_freeaddrinfo(res);
    if (!x->tcp_open)
      xfer_free(x);
    return;
  }
  if (status < 0 || res == NULL) {
    uv_freeaddrinfo(res);
    xfer_fail(x, "resolving", status < 0 ? status : UV_EAI_NONAME);
    return;
  }
  xfer_connect(x, res->ai_addr);
  uv_freeaddrinfo(res);
}

static void on_deadline(uv_timer_t *t) {
  berth_otlp_client *c = t->data;
  if (c->cur == NULL)
    return;
  xfer *x = c->cur;
  if (x->resolving)
    uv_cancel((uv_req_t *)&x->gai); /* on_resolved still runs */
  char msg[512];
  snprintf(msg, sizeof msg, "%.120s:%u did not answer within %u ms", c->host,
           (unsigned)c->port, (unsigned)c->timeout_ms);
  xfer_end(x, false, msg);
}

/* Deferred start, so done never runs inside berth_otlp_post. */
static void xfer_start(xfer *x) {
  berth_otlp_client *c = x->c;
  struct sockaddr_storage ss;
  if (uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&ss) == 0 ||
      uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&ss) == 0) {
    xfer_connect(x, (const struct sockaddr *)&ss);
    return;
  }
  char port[8];
  snprintf(port, sizeof port, "%u", (unsigned)c->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  x->gai.data = x;
  x->resolving = true;
  int rc = uv_getaddrinfo(c->loop, &x->gai, on_resolved, c->host, port, &hints);
  if (rc < 0) {
    x->resolving = false;
    xfer_fail(x, "resolving", rc);
  }
}

static void on_start(uv_timer_t *t) {
  berth_otlp_client *c = t->data;
  if (c->cur == NULL)
    return;
  uv_timer_start(&c->timer, on_deadline, c->timeout_ms, 0);
  xfer_start(c->cur);
}

int berth_otlp_client_new(uv_loop_t *loop, const char *url, uint32_t timeout_ms,
                          berth_otlp_client **out, berth_errmsg *err) {
  *out = NULL;
  berth_otlp_client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int rc = berth_http_parse_url(url, c->host, sizeof c->host, &c->port, c->path,
                                sizeof c->path, err);
  if (rc != BERTH_OK) {
    free(c);
    return rc;
  }
  c->loop = loop;
  c->timeout_ms = timeout_ms ? timeout_ms : 1;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->live = 1;
  *out = c;
  return BERTH_OK;
}

bool berth_otlp_busy(const berth_otlp_client *c) {
  return c == NULL || c->cur != NULL || c->closing;
}

int berth_otlp_post(berth_otlp_client *c, uint8_t *body, size_t len,
                    berth_otlp_done_cb done, void *arg) {
  if (berth_otlp_busy(c) || len > UINT32_MAX) {
    free(body);
    return BERTH_E_UNAVAILABLE;
  }
  xfer *x = calloc(1, sizeof *x);
  if (x == NULL) {
    free(body);
    return BERTH_E_NOMEM;
  }
  bool v6 = strchr(c->host, ':') != NULL;
  int hl = snprintf(x->head, sizeof x->head,
                    "POST %s HTTP/1.1\r\nHost: %s%s%s:%u\r\n"
                    "User-Agent: berth/" BERTH_VERSION "\r\n"
                    "Content-Type: application/x-protobuf\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    c->path, v6 ? "[" : "", c->host, v6 ? "]" : "",
                    (unsigned)c->port, len);
  if (hl < 0 || (size_t)hl >= sizeof x->head) {
    free(body);
    free(x);
    return BERTH_E_INTERNAL;
  }
  x->head_len = (size_t)hl;
  x->c = c;
  x->body = body;
  x->body_len = len;
  x->done = done;
  x->arg = arg;
  c->cur = x;
  c->live++;
  uv_timer_start(&c->timer, on_start, 0, 0);
  return BERTH_OK;
}

static void on_timer_closed(uv_handle_t *h) {
  berth_otlp_client *c = h->data;
  c->live--;
  client_maybe_closed(c);
}

void berth_otlp_client_close(berth_otlp_client *c, void (*on_closed)(void *),
                             void *arg) {
  c->on_closed = on_closed;
  c->closed_arg = arg;
  c->closing = true;
  /* an exchange in flight (or about to start: the last export) keeps
   * running under its own deadline, which the timer enforces: close the
   * timer only once it is over */
  if (c->cur == NULL)
    close_timer(c);
}
