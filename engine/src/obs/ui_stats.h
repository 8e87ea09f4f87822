/* Berth engine: what the web dashboard remembers (ui.c serves it) — a
 * timeline of one-second samples per model version (request rate, error
 * rate, latency quantiles, batch size, queue depth) and a ring of the most
 * recent errors. Everything here is fixed-size: nothing grows with traffic.
 *
 * Pure bookkeeping, no loop and no engine: the sampler (ui.c) hands in
 * readings of the cumulative counters, this module turns them into values.
 */
#ifndef BERTH_UI_STATS_H
#define BERTH_UI_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

/* Samples kept: one a second, five minutes. */
#define BERTH_UI_SAMPLES 300
/* The latency quantiles of a sample span this many readings (seconds), so
 * a quiet second does not make the line jump. */
#define BERTH_UI_LATENCY_WINDOW 5
/* Recent errors kept. */
#define BERTH_UI_MAX_ERRORS 50
#define BERTH_UI_ERROR_TEXT 320

/* ---- the timeline ---------------------------------------------------- */

/* The sample times, shared by every model version's history: slot k of a
 * history holds the value at t_ms[k]. */
typedef struct berth_ui_timeline {
  uint64_t t_ms[BERTH_UI_SAMPLES]; /* wall clock, ms since the epoch */
  size_t next;                     /* slot the next sample goes to */
  size_t n;                        /* samples held (<= BERTH_UI_SAMPLES) */
} berth_ui_timeline;

/* Takes the next slot for a sample at now_ms and returns it. */
size_t berth_ui_timeline_advance(berth_ui_timeline *tl, uint64_t now_ms);
/* The slot of the i-th sample held, oldest first (i < tl->n). */
size_t berth_ui_timeline_slot(const berth_ui_timeline *tl, size_t i);

typedef enum berth_ui_series {
  BERTH_UI_RATE = 0,   /* requests answered per second */
  BERTH_UI_ERROR_RATE, /* of which not a success, per second */
  BERTH_UI_P50_MS,     /* request latency quantiles, ms */
  BERTH_UI_P99_MS,
  BERTH_UI_BATCH, /* mean rows per batch sent to a worker */
  BERTH_UI_QUEUE, /* requests waiting in the queue at the sample */
  BERTH_UI_SERIES
} berth_ui_series;

/* The cumulative counters of one model version at one moment. */
typedef struct berth_ui_reading {
  uint64_t requests;    /* answered, every outcome */
  uint64_t errors;      /* answered, not a success */
  const double *bounds; /* the latency histogram's bucket bounds */
  size_t n_bounds;      /* <= BERTH_HIST_MAX_BOUNDS */
  uint64_t latency[BERTH_HIST_MAX_BOUNDS + 1]; /* per bucket, not
                                                  cumulative; last: +Inf */
  uint64_t batches;                            /* batches sent to workers */
  double batch_rows;                           /* rows in them */
  uint64_t queue_depth;                        /* now */
} berth_ui_reading;

/* The samples of one model version. */
typedef struct berth_ui_history {
  float v[BERTH_UI_SERIES][BERTH_UI_SAMPLES];     /* by timeline slot; NaN: no
                                                 value (no traffic, or the
                                                 version did not exist) */
  berth_ui_reading past[BERTH_UI_LATENCY_WINDOW]; /* the last readings */
  size_t past_next; /* where the next reading goes */
  size_t past_n;    /* readings held */
} berth_ui_history;

/* Every value NaN, no reading held. */
void berth_ui_history_init(berth_ui_history *h);
/* Turns reading r, taken dt_s seconds after the previous one, into the
 * values of slot, and keeps it. Rates need a previous reading; a counter
 * that went backwards gives NaN rather than a negative rate. */
void berth_ui_history_record(berth_ui_history *h, size_t slot,
                             const berth_ui_reading *r, double dt_s);
/* Clears slot (NaN) without a reading (the version is gone from view). */
void berth_ui_history_skip(berth_ui_history *h, size_t slot);

/* The q-quantile (0..1) of observations counted per bucket (counts[i]:
 * those <= bounds[i] and above bounds[i-1]; counts[n_bounds]: above the last
 * bound), interpolating linearly inside the bucket as Prometheus'
 * histogram_quantile does: the first bucket starts at 0, and a quantile in
 * the +Inf bucket is the last finite bound. NaN when there is none. */
double berth_ui_quantile(const double *bounds, size_t n_bounds,
                         const uint64_t *counts, double q);

/* ---- recent errors ---------------------------------------------------- */

typedef struct berth_ui_error {
  uint64_t first_ms, last_ms; /* wall clock, ms since the epoch */
  uint64_t count;             /* identical errors in a row, merged */
  int status;                 /* berth_status */
  berth_protocol protocol;
  char model[128]; /* truncated, valid UTF-8 */
  char version[64];
  char message[BERTH_UI_ERROR_TEXT];
} berth_ui_error;

typedef struct berth_ui_errors {
  berth_ui_error e[BERTH_UI_MAX_ERRORS]; /* ring */
  size_t next;                           /* where the next one goes */
  size_t n;                              /* held */
  uint64_t total; /* noted since start, merged ones included */
} berth_ui_errors;

/* Notes an error. When the newest one held has the same model, version,
 * protocol, status and message it is counted there instead of taking a
 * slot, so a burst of one failure cannot push out the others. Text is
 * copied with berth_ui_copy_text. */
void berth_ui_errors_add(berth_ui_errors *r, uint64_t now_ms, const char *model,
                         const char *version, berth_protocol protocol,
                         int status, const char *message);
/* The i-th newest error held (0: the newest), or NULL when i >= r->n. */
const berth_ui_error *berth_ui_errors_get(const berth_ui_errors *r, size_t i);

/* Copies NUL-terminated src into dst (cap > 0 bytes, always terminated) as
 * valid UTF-8 without control characters: each byte of an invalid or
 * overlong sequence, and each control character, becomes '?'; text that
 * does not fit is cut at a character boundary. Returns the bytes written. */
size_t berth_ui_copy_text(char *dst, size_t cap, const char *src);

#endif
