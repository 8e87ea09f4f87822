/* Berth engine: the numbers kept per model version for /metrics —
 * fixed-bucket histograms, request counts by protocol and outcome, worker
 * restarts, load time, payload log counts (model_metrics.c). They live in
 * the model (berth_model.metrics) so that they survive worker restarts;
 * obs/metrics.c's observer updates them and renders them.
 *
 * Observing never allocates: a histogram is a fixed array of bucket counts.
 * Everything runs on the loop thread; no locks. */
#ifndef BERTH_MODEL_METRICS_H
#define BERTH_MODEL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define BERTH_HIST_MAX_BOUNDS 16

/* Upper bounds (ascending, finite; +Inf is implicit) and, per bucket, the
 * observations that fell in it (not cumulative: rendering sums them). */
typedef struct berth_histogram {
  const double *bounds;                       /* borrowed, static */
  size_t n_bounds;                            /* <= BERTH_HIST_MAX_BOUNDS */
  uint64_t counts[BERTH_HIST_MAX_BOUNDS + 1]; /* last: above every bound */
  uint64_t count;
  double sum;
} berth_histogram;

/* n is clamped to BERTH_HIST_MAX_BOUNDS. */
void berth_histogram_init(berth_histogram *h, const double *bounds, size_t n);
/* Counts v in the first bucket whose bound is >= v (Prometheus' "le"). */
void berth_histogram_observe(berth_histogram *h, double v);
/* Observations <= bounds[i] (i == n_bounds: all of them). */
uint64_t berth_histogram_cumulative(const berth_histogram *h, size_t i);

/* The protocol label of berth_requests_total. */
typedef enum berth_protocol {
  BERTH_PROTO_REST = 0,
  BERTH_PROTO_GRPC,
  BERTH_PROTO_COUNT
} berth_protocol;

/* The outcome label of berth_requests_total. */
typedef enum berth_outcome {
  BERTH_OUTCOME_SUCCESS = 0,
  BERTH_OUTCOME_CLIENT_ERROR,
  BERTH_OUTCOME_SERVER_ERROR,
  BERTH_OUTCOME_TIMEOUT,
  BERTH_OUTCOME_OVERLOAD,
  BERTH_OUTCOME_UNAVAILABLE,
  BERTH_OUTCOME_COUNT
} berth_outcome;

/* The outcome of a berth_status (BERTH_OK is a success). */
berth_outcome berth_metrics_outcome(int status);

/* What the engine counts for one model version. */
typedef struct berth_model_metrics {
  uint64_t requests[BERTH_PROTO_COUNT][BERTH_OUTCOME_COUNT];
  berth_histogram request_duration; /* s: received -> answered */
  berth_histogram queue_duration;   /* s: queued -> taken into a batch */
  berth_histogram compute_duration; /* s: frame sent -> answer received */
  berth_histogram batch_size;       /* rows per batch */
  /* decoupled (generative) models: received -> first response, and the
   * time between two responses of one request; tokens from the responses'
   * completion_tokens outputs (docs/metrics.md) */
  berth_histogram first_response;
  berth_histogram between_responses;
  uint64_t generated_tokens;
  uint64_t worker_restarts;
  double load_seconds;      /* last worker start -> READY; <0: none */
  uint64_t payload_written; /* payload log records written */
  uint64_t payload_dropped; /* sampled, not written (payload_log.h) */
} berth_model_metrics;

void berth_model_metrics_init(berth_model_metrics *mm);
/* One answered request: its outcome and its duration in seconds. */
void berth_metrics_request(berth_model_metrics *mm, berth_protocol proto,
                           int status, double seconds);

/* Appends s as a Prometheus label value: \\ " and newline escaped (for
 * every collector of /metrics). */
int berth_metrics_escape(berth_buf *out, const char *s);

#endif
