/* Berth engine: Prometheus metrics — counters, gauges and fixed-bucket
 * histograms kept per model version by the engine (never by the workers, so
 * they survive worker restarts), and their rendering in the Prometheus text
 * exposition format 0.0.4 (docs/metrics.md lists every metric).
 *
 * Observing never allocates: a histogram is a fixed array of bucket counts.
 * Everything runs on the loop thread; no locks. */
#ifndef BERTH_METRICS_H
#define BERTH_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "model_metrics.h"

#define BERTH_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* What rendering needs of one model version (the engine fills it in). */
typedef struct berth_metrics_model {
  const char *model;
  const char *version;
  const berth_model_metrics *m;
  uint64_t queue_depth;
  uint64_t inflight; /* submitted, not yet answered */
  uint64_t workers_ready;
  double workers_rss_bytes; /* < 0: unknown, not rendered */
  bool decoupled;           /* the generative series are rendered for it */
} berth_metrics_model;

typedef struct berth_metrics_process {
  double cpu_seconds;  /* < 0: unknown */
  double rss_bytes;    /* < 0: unknown */
  const char *version; /* berth_build_info */
} berth_metrics_process;

/* Appends the exposition of every metric: per-model families first, then
 * the process ones. BERTH_OK or the berth_buf error. */
int berth_metrics_render(berth_buf *out, const berth_metrics_model *models,
                         size_t n, const berth_metrics_process *proc);

struct berth_engine;
struct berth_module;
/* The engine's side: appends the exposition of every model version, of the
 * process, then of every registered collector (GET /metrics). */
int berth_metrics_collect(struct berth_engine *e, berth_buf *out);
/* The metrics module (main.c's list): its observer keeps the per-model
 * counters and histograms. */
extern const struct berth_module berth_metrics_module;

#endif
