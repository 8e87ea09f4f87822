/* Berth engine: OTLP/HTTP trace export — finished requests encoded as an
 * OTLP ExportTraceServiceRequest (protobuf-c, proto/otlp_trace.proto), and a
 * small HTTP/1.1 client on libuv that POSTs it to the collector
 * (Content-Type: application/x-protobuf).
 *
 * The client sends one request at a time on a fresh connection with
 * "Connection: close" (an export is at most one per flush interval), bounded
 * by a timeout covering name resolution, connect, write and answer. Only
 * plain http:// is spoken. Everything runs on the loop thread.
 */
#ifndef BERTH_OTLP_EXPORT_H
#define BERTH_OTLP_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "berth/error.h"

/* One finished inference request: up to three spans. Times are wall clock,
 * nanoseconds since the Unix epoch. */
typedef struct berth_trace_record {
  uint8_t trace_id[16];
  uint8_t span_id[8];   /* the SERVER span */
  uint8_t parent_id[8]; /* the caller's span when has_parent */
  uint8_t queue_id[8];  /* the queue span when queued */
  uint8_t worker_id[8]; /* the worker span when sent */
  bool has_parent, queued, sent;
  uint8_t flags;        /* W3C flags (sampled) */
  const char *name;     /* SERVER span name (a literal) */
  const char *protocol; /* "rest" | "grpc" (a literal) */
  int status;           /* berth_status of the answer */
  uint64_t start_ns, end_ns;
  uint64_t queue_start_ns, queue_end_ns;
  uint64_t worker_start_ns, worker_end_ns;
  int64_t batch_size; /* 0 when never batched */
  /* a decoupled model's responses (0: none), the microseconds from
   * received to the first one, the tokens they reported (the SERVER span's
   * berth.responses, berth.time_to_first_response_us,
   * berth.generated_tokens) */
  uint32_t responses;
  uint64_t first_response_us;
  uint64_t gen_tokens;
  char *model; /* owned, with the record (one allocation) */
  char *version;
} berth_trace_record;

/* Spans in a record (1 to 3). */
size_t berth_trace_record_spans(const berth_trace_record *r);

/* Encodes n records as one ExportTraceServiceRequest whose resource has
 * service.name = service (and telemetry.sdk.* of Berth). *out is malloc'd
 * (the caller frees it). BERTH_E_NOMEM. */
int berth_otlp_encode(const berth_trace_record *const *recs, size_t n,
                      const char *service, uint8_t **out, size_t *out_len);

/* ---- the HTTP client ------------------------------------------------------ */

typedef struct berth_otlp_client berth_otlp_client;

/* ok: a 2xx answer; otherwise msg says what failed (NUL-terminated). */
typedef void (*berth_otlp_done_cb)(void *arg, bool ok, const char *msg);

/* Reads the first n bytes of an HTTP/1.x answer: its status code, or -1
 * when they do not start with a status line; *complete tells whether the
 * head and (by Content-Length) the body are all there. Untrusted bytes:
 * never reads past n. */
int berth_otlp_http_answer(const char *s, size_t n, bool *complete);

/* Creates the client for url (checked as above). */
int berth_otlp_client_new(uv_loop_t *loop, const char *url, uint32_t timeout_ms,
                          berth_otlp_client **out, berth_errmsg *err);
/* Whether a POST is in flight. */
bool berth_otlp_busy(const berth_otlp_client *c);
/* POSTs body (malloc'd; taken in every case). done(arg, ...) is called
 * exactly once, later on the loop (never from inside this call).
 * BERTH_E_UNAVAILABLE when a POST is in flight or the client is closing (no
 * callback then; body freed). */
int berth_otlp_post(berth_otlp_client *c, uint8_t *body, size_t len,
                    berth_otlp_done_cb done, void *arg);
/* Closes the client: an exchange in flight goes on until it ends or times
 * out (its done is still called), then the handles close and on_closed(arg)
 * runs; the client's memory is freed then. */
void berth_otlp_client_close(berth_otlp_client *c, void (*on_closed)(void *),
                             void *arg);

#endif
