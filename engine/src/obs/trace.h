/* Berth engine: OpenTelemetry tracing (docs/tracing.md).
 *
 * A caller's W3C `traceparent` header (HTTP, or gRPC metadata) is parsed;
 * each inference request gets a SERVER span (child of the caller's span, or
 * the root of a new trace) and, under it, a `queue` span (enqueued -> taken
 * into a batch) and a `worker` span (frame written -> worker's answer), with
 * the model, version and batch size as attributes. Finished requests wait in
 * a bounded buffer; a uv timer hands them, encoded as OTLP protobuf, to the
 * exporter (otlp_export.c), one POST at a time, off the request path. When
 * the buffer is full a request's spans are dropped and counted.
 *
 * Off (no tracing.endpoint): the engine has no tracer, and every hook below
 * is a NULL check; nothing is allocated per request.
 *
 * Ownership: the engine owns its tracer (engine->tracer, made, closed and
 * freed by berth_trace_module through berth_tracer_create / _close / _free). A berth_trace_ctx belongs to the job it was made for
 * (berth_job.trace); berth_trace_job_finish hands its spans to the tracer and
 * frees it. Everything runs on the loop thread.
 */
#ifndef BERTH_TRACE_H
#define BERTH_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "berth/error.h"

struct berth_config;
struct berth_job;
struct berth_batch;

/* ---- W3C Trace Context ---------------------------------------------------- */

/* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define BERTH_TRACEPARENT_LEN 55

typedef struct berth_traceparent {
  uint8_t trace_id[16];
  uint8_t span_id[8]; /* the parent (caller's) span */
  uint8_t flags;      /* bit 0: sampled */
} berth_traceparent;

/* Parses a traceparent header value (len bytes, not NUL-terminated; spaces
 * and tabs around it are ignored). Strict per the W3C Trace Context spec:
 * lower-case hex only, version "ff" refused, version 00 exactly 55
 * characters, a higher version at least 55 with '-' after them, trace and
 * span id not all zero. BERTH_E_INVALID when it is not a valid header
 * (*out is then zeroed). */
int berth_traceparent_parse(const char *s, size_t len, berth_traceparent *out);
/* Writes "00-<trace>-<span>-<flags>" and a NUL into out (56 bytes). */
void berth_traceparent_format(const berth_traceparent *tp,
                              char out[BERTH_TRACEPARENT_LEN + 1]);

/* ---- the tracer ------------------------------------------------------------ */

typedef struct berth_tracer berth_tracer;
typedef struct berth_trace_ctx berth_trace_ctx;

/* Counters for /metrics (metrics.c). */
typedef struct berth_trace_counters {
  uint64_t spans_exported; /* accepted by the receiver (2xx) */
  uint64_t spans_dropped;  /* buffer full, or the export failed */
} berth_trace_counters;

/* Creates the tracer from cfg's tracing section; *out stays NULL when
 * tracing is off (no endpoint). BERTH_E_CONFIG names tracing.endpoint when
 * its URL is not http://host[:port][/path]. */
int berth_tracer_create(uv_loop_t *loop, const struct berth_config *cfg,
                        berth_tracer **out, berth_errmsg *err);
/* Sends what is buffered (one last POST, bounded by the export timeout),
 * then closes the tracer's handles; the loop ends when they are closed.
 * NULL-safe. */
void berth_tracer_close(berth_tracer *t);
/* Frees the tracer after its handles are closed (the loop has stopped).
 * NULL-safe. */
void berth_tracer_free(berth_tracer *t);
berth_trace_counters berth_tracer_counters(const berth_tracer *t);

/* ---- per-request hooks (all NULL-safe on the ctx) ------------------------- */

/* Starts the request's trace context: parent-based sampling (a valid
 * traceparent's sampled flag decides; without one, tracing.sample_rate);
 * an invalid traceparent is ignored and a new trace begins. name is the
 * SERVER span's name (a string that outlives the process: a literal);
 * protocol "rest" or "grpc" (a literal); received_ns the uv_hrtime() when
 * the request was complete. NULL when t is NULL (tracing off), the request
 * is not sampled, or memory ran out. */
berth_trace_ctx *berth_trace_begin(berth_tracer *t, const char *traceparent,
                                   size_t len, const char *name,
                                   const char *protocol, uint64_t received_ns);
/* The traceparent of the request's SERVER span (for a response header). */
void berth_trace_ctx_traceparent(const berth_trace_ctx *c,
                                 char out[BERTH_TRACEPARENT_LEN + 1]);

/* The job left the queue in a batch of batch_size rows (or
 * requests, unbatched). */
void berth_trace_dispatched(berth_trace_ctx *c, uint64_t now_ns,
                            int64_t batch_size);
/* The batch ended (answer, failure): its jobs' worker spans
 * get the batch's sent and answered times. */
void berth_trace_batch_ended(const struct berth_batch *b);
/* The job was answered with status (first call counts). */
void berth_trace_answered(berth_trace_ctx *c, int status);
/* The scheduler (or a frontend, for a job the scheduler never took or gave
 * back) is done with the job: its spans go to the tracer's buffer (or are
 * dropped and counted), job->trace is freed and set to NULL. status is the
 * outcome when the job was never answered. NULL-safe on job->trace. */
void berth_trace_job_finish(struct berth_job *job, int status);
/* A frontend's submit was refused (overload, bad parameters): the request
 * span alone, with status, and job->trace freed as above. */
void berth_trace_job_refused(struct berth_job *job, int status);

/* ---- the module ------------------------------------------------------------ */

struct berth_module;
/* The tracing module (main.c's list): makes engine->tracer from the config
 * (none when tracing is off), registers the observer that calls the hooks
 * above at each job event, and the berth_trace_spans_* counters for
 * /metrics. */
extern const struct berth_module berth_trace_module;

#endif
