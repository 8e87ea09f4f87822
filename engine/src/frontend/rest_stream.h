/* Berth engine: one REST inference call whose answer may stream
 * (rest_stream.c) — the machinery that the OIP generate extension
 * (rest_generate.c) and the OpenAI-compatible routes (openai.c) share: the
 * job submitted through front.h, server-sent events over HTTP/1.1 chunked
 * transfer coding or HTTP/2, a bound on what a slow reader leaves unread,
 * and a client that leaves cancelling the request (queued: taken back at
 * once; running: the worker stops the model at its next response).
 *
 * A handler embeds berth_rest_call first in its own call, fills
 * call->job.req and calls berth_rest_call_submit; its ops then see every
 * response of the model (partial), the end (done) and the release (free).
 * Everything runs on the loop thread.
 */
#ifndef BERTH_REST_STREAM_H
#define BERTH_REST_STREAM_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "rest.h"

typedef struct berth_rest_call berth_rest_call;

typedef struct berth_rest_call_ops {
  /* One response of a decoupled model (resp borrowed for the call); only
   * while the call has not ended and the client is there. NULL: the model
   * must not be decoupled. */
  void (*partial)(berth_rest_call *c, berth_infer_response *resp);
  /* The end: as the job's done callback, only while the call has not
   * ended (it must end it: answer, or berth_rest_call_end_stream). */
  void (*done)(berth_rest_call *c, int status, const char *msg,
               berth_infer_response *resp);
  /* Frees what the derived call owns and the call itself (c is the
   * pointer calloc gave). */
  void (*destroy)(berth_rest_call *c);
} berth_rest_call_ops;

struct berth_rest_call {
  berth_job job; /* first: the job pointer is the call pointer */
  berth_http_req *req;
  berth_engine *engine;
  const berth_rest_call_ops *ops;
  bool begun; /* the event stream's head is sent */
  bool ended; /* answered (or the client left): later responses drop */
};

/* Submits c (calloc'd by the caller, job.req filled and taken) for model m
 * with the span name span (a literal). On success c belongs to the core
 * until its release, and a client that leaves cancels it. On failure
 * nothing is queued, c is freed (ops->destroy) and the caller answers with
 * the status returned and err. */
int berth_rest_call_submit(berth_engine *e, berth_http_req *req,
                           berth_rest_call *c, const berth_rest_call_ops *ops,
                           berth_model *m, struct berth_route_stat *routed,
                           const char *span, berth_errmsg *err);

/* Sends `data: <text>\n\n` (n bytes of text), beginning the event stream
 * (200, text/event-stream) first if needed; false when the stream cannot
 * go on (the caller stops: berth_rest_call_stop). */
bool berth_rest_call_event(berth_rest_call *c, const char *text, size_t n);
/* The same with doc (reference taken) written as compact JSON. */
bool berth_rest_call_event_json(berth_rest_call *c, json_t *doc);
/* Whether the client leaves more than the stream's bound unread (the
 * caller then ends the stream with an error). */
bool berth_rest_call_lagging(const berth_rest_call *c);
/* Ends the event stream (begins it first if nothing was sent); the call is
 * ended. */
void berth_rest_call_end_stream(berth_rest_call *c);
/* The call stops answering (ended) and the running model stops at its
 * next response. Only from ops->partial (the job is running). */
void berth_rest_call_stop(berth_rest_call *c);

#endif
