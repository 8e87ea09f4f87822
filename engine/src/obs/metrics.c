/* Berth engine: Prometheus metrics — histograms, the per-model counters,
 * and the text exposition format 0.0.4. The engine's side (walking the
 * models, process CPU and memory, the registered collectors) and the
 * observer that keeps the per-model numbers are at the end. */
#include "metrics.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <berth/error.h>

#include "engine.h"
#include "placement_metrics.h"

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- rendering ------------------------------------------------------------- */

static const char *const proto_names[BERTH_PROTO_COUNT] = {"rest", "grpc"};
static const char *const outcome_names[BERTH_OUTCOME_COUNT] = {
    "success", "client_error", "server_error",
    "timeout", "overload",     "unavailable"};

/* A float as Prometheus reads it: integers without a fraction. */
static int put_value(berth_buf *out, double v) {
  if (isinf(v))
    return berth_buf_printf(out, v > 0 ? "+Inf" : "-Inf");
  if (isnan(v))
    return berth_buf_printf(out, "NaN");
  if (v == floor(v) && fabs(v) < 1e15)
    return berth_buf_printf(out, "%.0f", v);
  return berth_buf_printf(out, "%.9g", v);
}

static int family(berth_buf *out, const char *name, const char *type,
                  const char *help) {
  return berth_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                          type);
}

/* name{model="..",version=".."<extra>} (no value) */
static int series(berth_buf *out, const char *name, const char *suffix,
                  const berth_metrics_model *mv, const char *extra) {
  int rc = berth_buf_printf(out, "%s%s{model=\"", name, suffix);
  if (rc == BERTH_OK)
    rc = berth_metrics_escape(out, mv->model);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\",version=\"", 11);
  if (rc == BERTH_OK)
    rc = berth_metrics_escape(out, mv->version);
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "\"%s} ", extra);
  return rc;
}

static int sample(berth_buf *out, const char *name,
                  const berth_metrics_model *mv, const char *extra, double v) {
  int rc = series(out, name, "", mv, extra);
  if (rc == BERTH_OK)
    rc = put_value(out, v);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\n", 1);
  return rc;
}

static int histogram(berth_buf *out, const char *name,
                     const berth_metrics_model *mv, const berth_histogram *h) {
  char le[64];
  int rc = BERTH_OK;
  for (size_t i = 0; i <= h->n_bounds && rc == BERTH_OK; i++) {
    if (i < h->n_bounds)
      snprintf(le, sizeof le, ",le=\"%.9g\"", h->bounds[i]);
    else
      snprintf(le, sizeof le, ",le=\"+Inf\"");
    rc = series(out, name, "_bucket", mv, le);
    if (rc == BERTH_OK)
      rc = berth_buf_printf(
          out, "%llu\n", (unsigned long long)berth_histogram_cumulative(h, i));
  }
  if (rc == BERTH_OK)
    rc = series(out, name, "_sum", mv, "");
  if (rc == BERTH_OK)
    rc = put_value(out, h->sum);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\n", 1);
  if (rc == BERTH_OK)
    rc = series(out, name, "_count", mv, "");
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "%llu\n", (unsigned long long)h->count);
  return rc;
}

typedef enum {
  HIST_REQUEST,
  HIST_QUEUE,
  HIST_COMPUTE,
  HIST_BATCH,
  HIST_FIRST, /* decoupled models only */
  HIST_BETWEEN
} hist_kind;

static const berth_histogram *hist_of(const berth_model_metrics *m,
                                      hist_kind k) {
  switch (k) {
  case HIST_REQUEST:
    return &m->request_duration;
  case HIST_QUEUE:
    return &m->queue_duration;
  case HIST_COMPUTE:
    return &m->compute_duration;
  case HIST_FIRST:
    return &m->first_response;
  case HIST_BETWEEN:
    return &m->between_responses;
  default:
    return &m->batch_size;
  }
}

static const struct {
  const char *name;
  hist_kind kind;
  const char *help;
} histograms[] = {
    {"berth_request_duration_seconds", HIST_REQUEST,
     "Inference request time from received to answered."},
    {"berth_queue_duration_seconds", HIST_QUEUE,
     "Time an inference request waited in the model's queue."},
    {"berth_compute_duration_seconds", HIST_COMPUTE,
     "Time from a batch sent to a worker to its answer."},
    {"berth_batch_size", HIST_BATCH,
     "Rows per batch sent to a worker (requests for a model that does not "
     "batch)."},
    {"berth_time_to_first_token_seconds", HIST_FIRST,
     "Decoupled (generative) models: time from a request received to its "
     "first response (token)."},
    {"berth_inter_token_latency_seconds", HIST_BETWEEN,
     "Decoupled (generative) models: time between two consecutive "
     "responses (tokens) of one request."},
};

typedef enum {
  G_QUEUE,
  G_INFLIGHT,
  G_WORKERS,
  G_RESTARTS,
  G_LOAD,
  G_WRSS,
  G_PAYLOAD_WRITTEN,
  G_PAYLOAD_DROPPED,
  G_TOKENS /* decoupled models only */
} gkind;

static const struct {
  const char *name;
  const char *type;
  gkind kind;
  const char *help;
} scalars[] = {
    {"berth_queue_depth", "gauge", G_QUEUE,
     "Inference requests waiting in the model's queue."},
    {"berth_inflight_requests", "gauge", G_INFLIGHT,
     "Inference requests accepted and not yet answered (queued or running)."},
    {"berth_workers", "gauge", G_WORKERS,
     "Worker processes that have loaded the model and are ready."},
    {"berth_worker_restarts_total", "counter", G_RESTARTS,
     "Worker processes restarted after they exited or failed to start."},
    {"berth_model_load_seconds", "gauge", G_LOAD,
     "Seconds the last worker to become ready took to load the model."},
    {"berth_workers_resident_memory_bytes", "gauge", G_WRSS,
     "Resident memory of the model's worker processes, summed."},
    {"berth_payload_records_written_total", "counter", G_PAYLOAD_WRITTEN,
     "Sampled requests written to the payload log."},
    {"berth_payload_records_dropped_total", "counter", G_PAYLOAD_DROPPED,
     "Sampled requests not written to the payload log (its queue was full, "
     "the record was too large, or the write failed)."},
    {"berth_generated_tokens_total", "counter", G_TOKENS,
     "Decoupled (generative) models: tokens generated, from the responses' "
     "completion_tokens outputs (its rate is tokens per second)."},
};

/* false: this model has no such sample (unknown value). */
static bool scalar_of(const berth_metrics_model *mv, gkind k, double *v) {
  switch (k) {
  case G_QUEUE:
    *v = (double)mv->queue_depth;
    return true;
  case G_INFLIGHT:
    *v = (double)mv->inflight;
    return true;
  case G_WORKERS:
    *v = (double)mv->workers_ready;
    return true;
  case G_RESTARTS:
    *v = (double)mv->m->worker_restarts;
    return true;
  case G_LOAD:
    *v = mv->m->load_seconds;
    return *v >= 0;
  case G_PAYLOAD_WRITTEN:
    *v = (double)mv->m->payload_written;
    return true;
  case G_PAYLOAD_DROPPED:
    *v = (double)mv->m->payload_dropped;
    return true;
  case G_TOKENS:
    *v = (double)mv->m->generated_tokens;
    return mv->decoupled;
  default:
    *v = mv->workers_rss_bytes;
    return *v >= 0;
  }
}

int berth_metrics_render(berth_buf *out, const berth_metrics_model *models,
                         size_t n, const berth_metrics_process *proc) {
  int rc = family(out, "berth_requests_total", "counter",
                  "Inference requests answered, by protocol and outcome.");
  char extra[96];
  for (size_t i = 0; i < n && rc == BERTH_OK; i++)
    for (int p = 0; p < BERTH_PROTO_COUNT && rc == BERTH_OK; p++)
      for (int o = 0; o < BERTH_OUTCOME_COUNT && rc == BERTH_OK; o++) {
        snprintf(extra, sizeof extra, ",protocol=\"%s\",outcome=\"%s\"",
                 proto_names[p], outcome_names[o]);
        rc = sample(out, "berth_requests_total", &models[i], extra,
                    (double)models[i].m->requests[p][o]);
      }
  for (size_t h = 0; h < COUNT_OF(histograms) && rc == BERTH_OK; h++) {
    rc = family(out, histograms[h].name, "histogram", histograms[h].help);
    for (size_t i = 0; i < n && rc == BERTH_OK; i++)
      if (models[i].decoupled || histograms[h].kind < HIST_FIRST)
        rc = histogram(out, histograms[h].name, &models[i],
                       hist_of(models[i].m, histograms[h].kind));
  }
  for (size_t s = 0; s < COUNT_OF(scalars) && rc == BERTH_OK; s++) {
    rc = family(out, scalars[s].name, scalars[s].type, scalars[s].help);
    for (size_t i = 0; i < n && rc == BERTH_OK; i++) {
      double v;
      if (scalar_of(&models[i], scalars[s].kind, &v))
        rc = sample(out, scalars[s].name, &models[i], "", v);
    }
  }
  if (rc == BERTH_OK && proc->cpu_seconds >= 0) {
    rc = family(out, "berth_process_cpu_seconds_total", "counter",
                "User and system CPU time of the engine process (not its "
                "workers).");
    if (rc == BERTH_OK)
      rc = berth_buf_printf(out, "berth_process_cpu_seconds_total ");
    if (rc == BERTH_OK)
      rc = put_value(out, proc->cpu_seconds);
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, "\n", 1);
  }
  if (rc == BERTH_OK && proc->rss_bytes >= 0) {
    rc = family(out, "berth_process_resident_memory_bytes", "gauge",
                "Resident memory of the engine process (not its workers).");
    if (rc == BERTH_OK)
      rc = berth_buf_printf(out, "berth_process_resident_memory_bytes ");
    if (rc == BERTH_OK)
      rc = put_value(out, proc->rss_bytes);
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, "\n", 1);
  }
  if (rc == BERTH_OK)
    rc = family(out, "berth_build_info", "gauge",
                "Always 1; the version label says which Berth is running.");
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "berth_build_info{version=\"");
  if (rc == BERTH_OK)
    rc = berth_metrics_escape(out, proc->version ? proc->version : "");
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "\"} 1\n");
  return rc;
}

/* ---- the engine's side ---------------------------------------------------- */

/* Per network loop (server.network_loops > 1, docs/threads.md): open
 * connections and requests handed to the engine, every listener together. */
static int network_loop_metrics(berth_buf *out) {
  unsigned n = berth_httpd_network_loops();
  if (n <= 1)
    return BERTH_OK;
  int rc = family(out, "berth_network_loop_connections", "gauge",
                  "Client connections open now on each network loop "
                  "(server.network_loops), every TCP listener together.");
  uint64_t conns, reqs;
  for (unsigned i = 0; i < n && rc == BERTH_OK; i++) {
    berth_httpd_loop_stats(i, &conns, &reqs);
    rc = berth_buf_printf(out,
                          "berth_network_loop_connections{loop=\"%u\"} %llu\n",
                          i, (unsigned long long)conns);
  }
  if (rc == BERTH_OK)
    rc = family(out, "berth_network_loop_requests_total", "counter",
                "Requests each network loop has handed to the engine loop.");
  for (unsigned i = 0; i < n && rc == BERTH_OK; i++) {
    berth_httpd_loop_stats(i, &conns, &reqs);
    rc = berth_buf_printf(
        out, "berth_network_loop_requests_total{loop=\"%u\"} %llu\n", i,
        (unsigned long long)reqs);
  }
  return rc;
}

int berth_metrics_collect(berth_engine *e, berth_buf *out) {
  berth_metrics_model *mv = calloc(e->n_models ? e->n_models : 1, sizeof *mv);
  if (mv == NULL)
    return BERTH_E_NOMEM;
  for (size_t i = 0; i < e->n_models; i++) {
    const berth_model *m = e->models[i];
    mv[i].model = m->cfg->name;
    mv[i].version = m->cfg->version;
    mv[i].m = &m->metrics;
    mv[i].queue_depth = m->q_len;
    mv[i].inflight = m->inflight;
    mv[i].workers_ready = m->n_ready;
    mv[i].workers_rss_bytes = berth_supervisor_rss(m);
    mv[i].decoupled = m->decoupled;
  }
  berth_metrics_process proc = {
      .cpu_seconds = -1, .rss_bytes = -1, .version = BERTH_VERSION};
  uv_rusage_t ru;
  if (uv_getrusage(&ru) == 0)
    proc.cpu_seconds =
        (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
        (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  size_t rss = 0;
  if (uv_resident_set_memory(&rss) == 0)
    proc.rss_bytes = (double)rss;
  int rc = berth_metrics_render(out, mv, e->n_models, &proc);
  free(mv);
  if (rc == BERTH_OK)
    rc = family(out, "berth_connections_open", "gauge",
                "Client connections open now, every listener together "
                "(server.max_connections bounds them).");
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "berth_connections_open %zu\n", e->conns.open);
  if (rc == BERTH_OK)
    rc = family(out, "berth_connections_refused_total", "counter",
                "Connections closed at once because server.max_connections "
                "were open.");
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "berth_connections_refused_total %llu\n",
                          (unsigned long long)e->conns.refused);
  if (rc == BERTH_OK)
    rc = network_loop_metrics(out);
  if (rc == BERTH_OK)
    rc = berth_placement_metrics(e, out);
  for (size_t i = 0; i < e->n_collectors && rc == BERTH_OK; i++)
    rc = e->collectors[i].collect(e->collectors[i].ctx, out);
  return rc;
}

/* ---- the observer ---------------------------------------------------------- */

static void on_dispatched(void *ctx, berth_job *j, uint64_t now_ns,
                          int64_t batch_size) {
  (void)ctx;
  (void)batch_size;
  berth_histogram_observe(&j->model->metrics.queue_duration,
                          (double)(now_ns - j->enqueued_ns) / 1e9);
}

static void on_batch_sent(void *ctx, berth_batch *b) {
  (void)ctx;
  berth_histogram_observe(&b->model->metrics.batch_size,
                          (double)(b->rows > 0 ? b->rows : (int64_t)b->n_jobs));
}

static void on_batch_ended(void *ctx, berth_batch *b, uint64_t now_ns,
                           bool answered) {
  (void)ctx;
  if (answered)
    berth_histogram_observe(&b->model->metrics.compute_duration,
                            (double)(now_ns - b->sent_ns) / 1e9);
}

static void on_answered(void *ctx, berth_job *j, int status, const char *msg,
                        const berth_infer_response *resp, uint64_t took_ns) {
  (void)ctx;
  (void)msg;
  (void)resp;
  berth_metrics_request(&j->model->metrics, j->protocol, status,
                        (double)took_ns / 1e9);
}

/* An INT32 [1] output of resp by name; false when there is none. */
static bool int_output(const berth_infer_response *resp, const char *name,
                       int32_t *out) {
  for (size_t i = 0; i < resp->n_outputs; i++) {
    const berth_tensor *t = &resp->outputs[i];
    if (strcmp(t->name, name) == 0 && t->dtype == BERTH_DT_INT32 &&
        t->nbytes >= 4) {
      memcpy(out, t->data, 4); /* little-endian, as the host */
      return true;
    }
  }
  return false;
}

/* The tokens a response adds: its choice's completion_tokens (a running
 * count) less what that choice had reported; a choice past the job's
 * table counts on its last response (a finish_reason output that is not
 * empty). */
static uint64_t new_tokens(berth_job *j, const berth_infer_response *resp) {
  int32_t total = 0, index = 0;
  if (!int_output(resp, "completion_tokens", &total) || total < 0)
    return 0;
  (void)int_output(resp, "index", &index);
  if (index >= 0 && index < BERTH_JOB_TOKEN_CHOICES) {
    uint32_t seen = j->gen_tokens_seen[index];
    if ((uint32_t)total <= seen)
      return 0;
    j->gen_tokens_seen[index] = (uint32_t)total;
    return (uint64_t)total - seen;
  }
  for (size_t i = 0; i < resp->n_outputs; i++) {
    const berth_tensor *t = &resp->outputs[i];
    if (strcmp(t->name, "finish_reason") == 0 && t->dtype == BERTH_DT_BYTES &&
        t->nbytes > 4)
      return (uint64_t)total;
  }
  return 0;
}

static void on_responded(void *ctx, berth_job *j,
                         const berth_infer_response *resp, uint64_t now_ns) {
  (void)ctx;
  berth_model_metrics *mm = &j->model->metrics;
  if (j->n_responses == 1)
    berth_histogram_observe(
        &mm->first_response,
        now_ns > j->received_ns ? (double)(now_ns - j->received_ns) / 1e9 : 0);
  else if (j->last_response_ns != 0 && now_ns >= j->last_response_ns)
    berth_histogram_observe(&mm->between_responses,
                            (double)(now_ns - j->last_response_ns) / 1e9);
  uint64_t add = new_tokens(j, resp);
  j->gen_tokens += add;
  mm->generated_tokens += add;
}

static void on_worker_ready(void *ctx, berth_model *m, double load_s) {
  (void)ctx;
  m->metrics.load_seconds = load_s;
}

static void on_worker_restarted(void *ctx, berth_model *m) {
  (void)ctx;
  m->metrics.worker_restarts++;
}

static int metrics_init(berth_engine *e, berth_errmsg *err) {
  berth_observer o = {.dispatched = on_dispatched,
                      .batch_sent = on_batch_sent,
                      .batch_ended = on_batch_ended,
                      .answered = on_answered,
                      .responded = on_responded,
                      .worker_ready = on_worker_ready,
                      .worker_restarted = on_worker_restarted};
  return berth_engine_observe(e, &o, err);
}

const berth_module berth_metrics_module = {.name = "metrics",
                                           .init = metrics_init};
