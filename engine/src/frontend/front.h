/* Berth engine: the inference path every frontend shares (OIP REST, KServe
 * v1, gRPC). A frontend decodes a request into a berth_job embedded in its
 * own call, then hands it to berth_front_submit; that, berth_front_cancel
 * and the job's done/release callbacks are all it sees of the core.
 *
 * berth_front_submit starts the request's trace from the caller's
 * traceparent, counts the request in the engine's in-flight count (the
 * drain waits for it) and submits it through the router (a route's
 * weights, stickiness and shadow copy). A request refused before or at
 * submit is counted here, once: Triton's statistics when it was decoded,
 * the request metrics and the dashboard's recent errors always.
 *
 * Everything runs on the loop thread. */
#ifndef BERTH_FRONT_H
#define BERTH_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "router.h"

/* Counts a request of m that failed before it was queued: in the model's
 * statistics when stats (it was decoded and checked), in the request
 * metrics and the dashboard's recent errors always. received_ns: when the
 * frontend had it (uv_hrtime). */
void berth_front_count_fail(berth_model *m, berth_protocol protocol,
                            uint64_t received_ns, int status, const char *msg,
                            bool stats);

/* Whether m takes a request now. If not, the answer's status
 * (BERTH_E_SHUTDOWN while draining, else BERTH_E_UNAVAILABLE) and msg (cap
 * bytes: why, naming the model or the step that holds a pipeline up), and
 * the refusal is counted (metrics only, as Triton's statistics never
 * counted it). BERTH_OK when it does. */
int berth_front_check_servable(berth_model *m, berth_protocol protocol,
                               uint64_t received_ns, char *msg, size_t cap);

/* Submits job: the caller has set req, model, done, release, user,
 * received_ns and protocol (and may set http, request_id, deadline_ns).
 * span_name names the trace's SERVER span (a literal); traceparent (len
 * bytes, may be NULL) is the caller's. routed: the route from
 * berth_router_resolve, or NULL. On success the job belongs to the core
 * until its release callback. On failure nothing was queued, no callback
 * ran, the failure is counted (statistics included) and the trace holds
 * the refused span; the caller answers with err and frees the job (after
 * berth_front_job_end is not needed: it was never counted in flight). */
int berth_front_submit(berth_engine *e, berth_job *job,
                       berth_route_stat *routed, const char *span_name,
                       const char *traceparent, size_t traceparent_len,
                       berth_errmsg *err);

/* Takes back a job that is still queued (the client left); true if it was,
 * and then no callback will run: the caller ends it (berth_front_job_end)
 * and frees it. false: it is running; its callbacks will come. */
bool berth_front_cancel(berth_job *job);

/* The frontend is done with an accepted job (in its release callback, or
 * after a cancel, or when it stops counting the request as in flight):
 * a trace that never got an answer is ended as left by the client, and the
 * engine's in-flight count drops. */
void berth_front_job_end(berth_engine *e, berth_job *job);

#endif
