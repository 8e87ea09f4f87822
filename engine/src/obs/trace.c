/* Berth engine: OpenTelemetry tracing — W3C traceparent, the per-request
 * trace context, and the tracer's bounded buffer of finished requests that a
 * timer hands to the OTLP exporter (see trace.h). */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "engine.h"
#include "log.h"
#include "otlp_export.h"

/* ---- W3C traceparent ------------------------------------------------------ */

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1; /* upper case is not allowed */
}

/* n bytes from 2n lower-case hex characters; false on a bad character. */
static bool unhex(const char *s, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return true;
}

static bool all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  return true;
}

int berth_traceparent_parse(const char *s, size_t len, berth_traceparent *out) {
  memset(out, 0, sizeof *out);
  if (s == NULL)
    return BERTH_E_INVALID;
  while (len > 0 && (s[0] == ' ' || s[0] == '\t')) {
    s++;
    len--;
  }
  while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
    len--;
  uint8_t version;
  if (len < BERTH_TRACEPARENT_LEN || !unhex(s, &version, 1) || version == 0xff)
    return BERTH_E_INVALID;
  /* version 00 is exactly 55 characters; a later version may add fields
   * after a '-' (and is read as 00) */
  if (version == 0
          ? len != BERTH_TRACEPARENT_LEN
          : len > BERTH_TRACEPARENT_LEN && s[BERTH_TRACEPARENT_LEN] != '-')
    return BERTH_E_INVALID;
  berth_traceparent tp;
  if (s[2] != '-' || s[35] != '-' || s[52] != '-' ||
      !unhex(s + 3, tp.trace_id, 16) || !unhex(s + 36, tp.span_id, 8) ||
      !unhex(s + 53, &tp.flags, 1) || all_zero(tp.trace_id, 16) ||
      all_zero(tp.span_id, 8))
    return BERTH_E_INVALID;
  *out = tp;
  return BERTH_OK;
}

static void hex(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
}

void berth_traceparent_format(const berth_traceparent *tp,
                              char out[BERTH_TRACEPARENT_LEN + 1]) {
  memcpy(out, "00-", 3);
  hex(tp->trace_id, 16, out + 3);
  out[35] = '-';
  hex(tp->span_id, 8, out + 36);
  out[52] = '-';
  hex(&tp->flags, 1, out + 53);
  out[55] = '\0';
}

/* ---- the tracer ------------------------------------------------------------ */

#define POST_MAX_RECORDS 512 /* requests per export */
#define FAIL_LOG_EVERY_NS (60ull * 1000000000ull)

struct berth_tracer {
  uv_loop_t *loop;
  berth_otlp_client *client; /* owned; NULL once closed */
  char *service;             /* owned: service.name */
  double sample_rate;
  uint32_t flush_ms;
  berth_trace_record **ring; /* owned records, cap slots */
  size_t cap, head, count;
  size_t in_post_spans; /* spans of the POST in flight */
  uv_timer_t flush_timer;
  bool closing;
  berth_trace_counters counters;
  uint8_t rnd[256]; /* random bytes not yet used */
  size_t rnd_used;
  int64_t wall_offset_ns;    /* wall clock - uv_hrtime(), renewed
                                     every flush tick (clock steps) */
  uint64_t last_fail_log_ns; /* 0: never */
  uint64_t fails_since_log;
};

struct berth_trace_ctx {
  berth_tracer *tracer;
  berth_traceparent self; /* trace id, SERVER span id, flags */
  uint8_t parent_id[8];
  bool has_parent;
  const char *name, *protocol;
  uint64_t received_ns; /* monotonic (uv_hrtime) below */
  uint64_t queue_end_ns, sent_ns, answered_ns, end_ns;
  int64_t batch_size;
  int status;
  bool ended;
  bool refused; /* never queued: no queue span */
};

/* Bytes from the kernel's CSPRNG, drawn 256 at a time. */
static void random_bytes(berth_tracer *t, uint8_t *out, size_t n) {
  while (n > 0) {
    if (t->rnd_used == sizeof t->rnd) {
      ssize_t got = getrandom(t->rnd, sizeof t->rnd, 0);
      if (got != (ssize_t)sizeof t->rnd) {
        /* never expected on Linux >= 3.17; stay unique if it happens */
        uint64_t x = uv_hrtime() ^ (uint64_t)(uintptr_t)t;
        for (size_t i = 0; i < sizeof t->rnd; i++) {
          x += 0x9e3779b97f4a7c15ull;
          uint64_t z = x;
          z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
          z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
          t->rnd[i] = (uint8_t)(z ^ (z >> 31));
        }
      }
      t->rnd_used = 0;
    }
    size_t take = sizeof t->rnd - t->rnd_used;
    if (take > n)
      take = n;
    memcpy(out, t->rnd + t->rnd_used, take);
    t->rnd_used += take;
    out += take;
    n -= take;
  }
}

/* A non-zero random id. */
static void new_id(berth_tracer *t, uint8_t *out, size_t n) {
  do
    random_bytes(t, out, n);
  while (all_zero(out, n));
}

static uint64_t wall_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void flush(berth_tracer *t);

static void renew_offset(berth_tracer *t) {
  uint64_t mono = uv_hrtime();
  t->wall_offset_ns = (int64_t)(wall_now_ns() - mono);
}

static void on_flush_timer(uv_timer_t *h) {
  renew_offset(h->data);
  flush(h->data);
}

int berth_tracer_create(uv_loop_t *loop, const berth_config *cfg,
                        berth_tracer **out, berth_errmsg *err) {
  *out = NULL;
  if (cfg->trace_endpoint == NULL)
    return BERTH_OK;
  berth_tracer *t = calloc(1, sizeof *t);
  if (t == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  t->loop = loop;
  t->sample_rate = cfg->trace_sample_rate;
  t->flush_ms =
      cfg->trace_flush_interval_ms ? cfg->trace_flush_interval_ms : 1000;
  t->cap = cfg->trace_max_queue_size ? cfg->trace_max_queue_size : 2048;
  t->rnd_used = sizeof t->rnd;
  t->service =
      strdup(cfg->trace_service_name ? cfg->trace_service_name : "berth");
  t->ring = calloc(t->cap, sizeof *t->ring);
  if (t->service == NULL || t->ring == NULL) {
    free(t->service);
    free(t->ring);
    free(t);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  berth_errmsg why;
  int rc =
      berth_otlp_client_new(loop, cfg->trace_endpoint,
                            cfg->trace_export_timeout_ms, &t->client, &why);
  if (rc != BERTH_OK) {
    free(t->service);
    free(t->ring);
    free(t);
    return berth_errf(err, BERTH_E_CONFIG, "tracing.endpoint: %s", why.msg);
  }
  renew_offset(t);
  uv_timer_init(loop, &t->flush_timer);
  t->flush_timer.data = t;
  uv_timer_start(&t->flush_timer, on_flush_timer, t->flush_ms, t->flush_ms);
  uv_unref((uv_handle_t *)&t->flush_timer);
  *out = t;
  berth_log_kv(BERTH_LOG_INFO, "tracing on (OTLP/HTTP)", "endpoint",
               cfg->trace_endpoint, "service_name", t->service, NULL);
  return BERTH_OK;
}

berth_trace_counters berth_tracer_counters(const berth_tracer *t) {
  berth_trace_counters none = {0, 0};
  return t != NULL ? t->counters : none;
}

/* ---- export ------------------------------------------------------------------ */

static void on_posted(void *arg, bool ok, const char *msg) {
  berth_tracer *t = arg;
  size_t spans = t->in_post_spans;
  t->in_post_spans = 0;
  if (ok) {
    t->counters.spans_exported += spans;
  } else {
    t->counters.spans_dropped += spans;
    uint64_t now = uv_hrtime();
    t->fails_since_log++;
    if (t->last_fail_log_ns == 0 ||
        now - t->last_fail_log_ns >= FAIL_LOG_EVERY_NS) {
      char n[32];
      snprintf(n, sizeof n, "%llu", (unsigned long long)t->fails_since_log);
      berth_log_kv(BERTH_LOG_WARNING,
                   "could not export spans (OTLP); they "
                   "are dropped and counted in "
                   "berth_trace_spans_dropped_total",
                   "error", msg, "failed_exports", n, NULL);
      t->last_fail_log_ns = now;
      t->fails_since_log = 0;
    }
  }
  if (t->closing)
    return;
  if (t->count >= POST_MAX_RECORDS)
    flush(t); /* a backlog: keep going */
}

/* Encodes up to POST_MAX_RECORDS buffered requests and POSTs them, unless
 * a POST is in flight. */
static void flush(berth_tracer *t) {
  if (t->client == NULL || t->count == 0 || berth_otlp_busy(t->client))
    return;
  size_t n = t->count < POST_MAX_RECORDS ? t->count : POST_MAX_RECORDS;
  berth_trace_record *recs[POST_MAX_RECORDS];
  size_t spans = 0;
  for (size_t i = 0; i < n; i++) {
    recs[i] = t->ring[t->head];
    t->ring[t->head] = NULL;
    t->head = (t->head + 1) % t->cap;
    spans += berth_trace_record_spans(recs[i]);
  }
  t->count -= n;
  uint8_t *body = NULL;
  size_t len = 0;
  int rc = berth_otlp_encode((const berth_trace_record *const *)recs, n,
                             t->service, &body, &len);
  for (size_t i = 0; i < n; i++)
    free(recs[i]);
  if (rc != BERTH_OK) {
    t->counters.spans_dropped += spans;
    return;
  }
  t->in_post_spans = spans;
  if (berth_otlp_post(t->client, body, len, on_posted, t) != BERTH_OK) {
    t->in_post_spans = 0;
    t->counters.spans_dropped += spans;
  }
}

static void client_closed(void *arg) {
  berth_tracer *t = arg;
  t->client = NULL;
}

static void flush_timer_closed(uv_handle_t *h) { (void)h; }

void berth_tracer_close(berth_tracer *t) {
  if (t == NULL || t->closing)
    return;
  uv_timer_stop(&t->flush_timer);
  flush(t); /* one last POST; the client finishes it before closing */
  t->closing = true;
  /* what no POST took is dropped */
  while (t->count > 0) {
    berth_trace_record *r = t->ring[t->head];
    t->ring[t->head] = NULL;
    t->head = (t->head + 1) % t->cap;
    t->count--;
    t->counters.spans_dropped += berth_trace_record_spans(r);
    free(r);
  }
  uv_close((uv_handle_t *)&t->flush_timer, flush_timer_closed);
  berth_otlp_client_close(t->client, client_closed, t);
}

void berth_tracer_free(berth_tracer *t) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < t->cap; i++)
    free(t->ring[i]);
  free(t->ring);
  free(t->service);
  free(t);
}

/* ---- per request ------------------------------------------------------------ */

/* A uniform draw in [0, 1) from the random pool. */
static double draw(berth_tracer *t) {
  uint64_t x;
  random_bytes(t, (uint8_t *)&x, sizeof x);
  return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

berth_trace_ctx *berth_trace_begin(berth_tracer *t, const char *traceparent,
                                   size_t len, const char *name,
                                   const char *protocol, uint64_t received_ns) {
  if (t == NULL || t->closing)
    return NULL;
  berth_traceparent in;
  bool has_parent = traceparent != NULL &&
                    berth_traceparent_parse(traceparent, len, &in) == BERTH_OK;
  if (has_parent ? (in.flags & 1) == 0
                 : t->sample_rate < 1.0 && draw(t) >= t->sample_rate)
    return NULL;
  berth_trace_ctx *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->tracer = t;
  if (has_parent) {
    memcpy(c->self.trace_id, in.trace_id, 16);
    memcpy(c->parent_id, in.span_id, 8);
    c->self.flags = in.flags;
    c->has_parent = true;
  } else {
    new_id(t, c->self.trace_id, 16);
    c->self.flags = 1;
  }
  new_id(t, c->self.span_id, 8);
  c->name = name;
  c->protocol = protocol;
  c->received_ns = received_ns ? received_ns : uv_hrtime();
  return c;
}

void berth_trace_ctx_traceparent(const berth_trace_ctx *c,
                                 char out[BERTH_TRACEPARENT_LEN + 1]) {
  berth_traceparent_format(&c->self, out);
}

void berth_trace_dispatched(berth_trace_ctx *c, uint64_t now_ns,
                            int64_t batch_size) {
  if (c == NULL)
    return;
  c->queue_end_ns = now_ns;
  c->batch_size = batch_size;
}

void berth_trace_batch_ended(const berth_batch *b) {
  uint64_t now = 0;
  for (size_t i = 0; i < b->n_jobs; i++) {
    berth_trace_ctx *c = b->jobs[i]->trace;
    if (c == NULL || b->sent_ns == 0)
      continue;
    if (now == 0)
      now = uv_hrtime();
    c->sent_ns = b->sent_ns;
    c->answered_ns = b->answered_ns ? b->answered_ns : now;
  }
}

void berth_trace_answered(berth_trace_ctx *c, int status) {
  if (c == NULL || c->ended)
    return;
  c->ended = true;
  c->status = status;
  c->end_ns = uv_hrtime();
}

/* Monotonic -> wall clock (one offset for all spans of a flush period, so
 * the jobs of one batch get equal worker span times). */
static uint64_t wall_of(const berth_tracer *t, uint64_t mono) {
  return (uint64_t)((int64_t)mono + t->wall_offset_ns);
}

void berth_trace_job_finish(berth_job *job, int status) {
  berth_trace_ctx *c = job->trace;
  if (c == NULL)
    return;
  job->trace = NULL;
  berth_tracer *t = c->tracer;
  berth_trace_answered(c, status);
  const char *model = job->model ? job->model->cfg->name : "";
  const char *version = job->model ? job->model->cfg->version : "";
  bool queued = job->enqueued_ns != 0 && !c->refused;
  bool sent = c->sent_ns != 0;
  size_t spans = 1 + (queued ? 1 : 0) + (sent ? 1 : 0);
  if (t->closing || t->count == t->cap) {
    t->counters.spans_dropped += spans;
    free(c);
    return;
  }
  size_t ml = strlen(model), vl = strlen(version);
  berth_trace_record *r = malloc(sizeof *r + ml + vl + 2);
  if (r == NULL) {
    t->counters.spans_dropped += spans;
    free(c);
    return;
  }
  memset(r, 0, sizeof *r);
  r->model = (char *)(r + 1);
  r->version = r->model + ml + 1;
  memcpy(r->model, model, ml + 1);
  memcpy(r->version, version, vl + 1);
  memcpy(r->trace_id, c->self.trace_id, 16);
  memcpy(r->span_id, c->self.span_id, 8);
  memcpy(r->parent_id, c->parent_id, 8);
  r->has_parent = c->has_parent;
  r->flags = c->self.flags;
  r->name = c->name;
  r->protocol = c->protocol;
  r->status = c->status;
  r->batch_size = c->batch_size;
  r->responses = job->n_responses;
  r->gen_tokens = job->gen_tokens;
  if (job->n_responses > 0 && job->first_response_ns >= c->received_ns)
    r->first_response_us = (job->first_response_ns - c->received_ns) / 1000;
  r->start_ns = wall_of(t, c->received_ns);
  r->end_ns = wall_of(t, c->end_ns);
  if (queued) {
    r->queued = true;
    new_id(t, r->queue_id, 8);
    r->queue_start_ns = wall_of(t, job->enqueued_ns);
    r->queue_end_ns = wall_of(t, c->queue_end_ns ? c->queue_end_ns : c->end_ns);
  }
  if (sent) {
    r->sent = true;
    new_id(t, r->worker_id, 8);
    r->worker_start_ns = wall_of(t, c->sent_ns);
    r->worker_end_ns = wall_of(t, c->answered_ns);
  }
  free(c);
  t->ring[(t->head + t->count) % t->cap] = r;
  t->count++;
  if (t->count == POST_MAX_RECORDS && !berth_otlp_busy(t->client))
    uv_timer_start(&t->flush_timer, on_flush_timer, 0, t->flush_ms);
}

void berth_trace_job_refused(berth_job *job, int status) {
  if (job->trace == NULL)
    return;
  job->trace->refused = true;
  berth_trace_job_finish(job, status);
}

/* ---- the module ------------------------------------------------------------ */

static void on_dispatched(void *ctx, berth_job *j, uint64_t now_ns,
                          int64_t batch_size) {
  (void)ctx;
  berth_trace_dispatched(j->trace, now_ns, batch_size);
}

static void on_batch_ended(void *ctx, berth_batch *b, uint64_t now_ns,
                           bool answered) {
  (void)ctx;
  (void)now_ns;
  (void)answered;
  berth_trace_batch_ended(b);
}

static void on_answered(void *ctx, berth_job *j, int status, const char *msg,
                        const berth_infer_response *resp, uint64_t took_ns) {
  (void)ctx;
  (void)msg;
  (void)resp;
  (void)took_ns;
  berth_trace_answered(j->trace, status);
}

static void on_released(void *ctx, berth_job *j) {
  (void)ctx;
  if (j->trace != NULL) /* status only counts if it was never answered */
    berth_trace_job_finish(j, BERTH_E_INTERNAL);
}

static int collect(void *ctx, berth_buf *out) {
  berth_trace_counters tc = berth_tracer_counters(ctx); /* 0s when off */
  int rc = berth_buf_printf(out,
                            "# HELP berth_trace_spans_exported_total "
                            "Spans the OTLP receiver accepted.\n"
                            "# TYPE berth_trace_spans_exported_total counter\n"
                            "berth_trace_spans_exported_total %llu\n",
                            (unsigned long long)tc.spans_exported);
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out,
                          "# HELP berth_trace_spans_dropped_total Spans "
                          "never delivered: the export buffer was full, or "
                          "the export failed.\n"
                          "# TYPE berth_trace_spans_dropped_total counter\n"
                          "berth_trace_spans_dropped_total %llu\n",
                          (unsigned long long)tc.spans_dropped);
  return rc;
}

static int trace_init(berth_engine *e, berth_errmsg *err) {
  int rc = berth_tracer_create(e->loop, &e->cfg, &e->tracer, err);
  if (rc == BERTH_OK)
    rc = berth_engine_add_collector(e, collect, e->tracer, err);
  if (rc != BERTH_OK || e->tracer == NULL)
    return rc; /* off: no hook on the request path */
  berth_observer o = {.ctx = e->tracer,
                      .dispatched = on_dispatched,
                      .batch_ended = on_batch_ended,
                      .answered = on_answered,
                      .released = on_released};
  return berth_engine_observe(e, &o, err);
}

static void trace_close(berth_engine *e) { berth_tracer_close(e->tracer); }

static void trace_free(berth_engine *e) {
  berth_tracer_free(e->tracer);
  e->tracer = NULL;
}

const berth_module berth_trace_module = {.name = "trace",
                                         .init = trace_init,
                                         .close = trace_close,
                                         .free = trace_free};
