/* Berth engine: a REST inference call that may stream (rest_stream.h). */
#include "rest_stream.h"

#include <stdlib.h>
#include <string.h>

#include "front.h"

/* Answers a stream's client has left unread past this: the stream ends. */
#define STREAM_MAX_UNREAD ((size_t)64 << 20)

static void call_free(berth_rest_call *c) {
  berth_http_req_on_gone(c->req, NULL, NULL);
  berth_infer_request_clear(&c->job.req);
  berth_http_req_unref(c->req);
  c->ops->destroy(c);
}

static void call_partial(berth_job *job, berth_infer_response *resp) {
  berth_rest_call *c = (berth_rest_call *)job;
  if (c->ended || berth_http_req_is_gone(c->req) || c->ops->partial == NULL)
    return;
  c->ops->partial(c, resp);
}

static void call_done(berth_job *job, int status, const char *errmsg,
                      berth_infer_response *resp) {
  berth_rest_call *c = (berth_rest_call *)job;
  if (!c->ended)
    c->ops->done(c, status, errmsg, resp);
}

static void call_release(berth_job *job) {
  berth_rest_call *c = (berth_rest_call *)job;
  berth_front_job_end(c->engine, &c->job);
  call_free(c);
}

static void call_gone(berth_http_req *req, void *arg) {
  (void)req;
  berth_rest_call *c = arg;
  c->ended = true;
  if (berth_front_cancel(&c->job))
    call_release(&c->job); /* never reached a worker */
  /* running: a decoupled model stops at its next response */
}

int berth_rest_call_submit(berth_engine *e, berth_http_req *req,
                           berth_rest_call *c, const berth_rest_call_ops *ops,
                           berth_model *m, struct berth_route_stat *routed,
                           const char *span, berth_errmsg *err) {
  c->req = req;
  c->engine = e;
  c->ops = ops;
  c->job.done = call_done;
  c->job.partial = ops->partial != NULL ? call_partial : NULL;
  c->job.release = call_release;
  c->job.received_ns = berth_http_received_ns(req);
  c->job.user = c;
  c->job.model = m;
  c->job.protocol = BERTH_PROTO_REST;
  c->job.request_id = berth_rest_request_id(req);
  c->job.http = req;
  berth_http_req_ref(req);
  size_t tl = 0;
  const char *tp = berth_http_header(req, "traceparent", &tl);
  int rc = berth_front_submit(e, &c->job, routed, span, tp, tl, err);
  if (rc != BERTH_OK) {
    call_free(c);
    return rc;
  }
  berth_http_req_on_gone(req, call_gone, c);
  return BERTH_OK;
}

static bool begin(berth_rest_call *c) {
  if (c->begun)
    return true;
  if (berth_rest_stream_begin(c->engine, c->req, 200,
                              "text/event-stream; charset=utf-8") != BERTH_OK)
    return false;
  c->begun = true;
  return true;
}

bool berth_rest_call_event(berth_rest_call *c, const char *text, size_t n) {
  char *ev = malloc(n + 8);
  if (ev == NULL)
    return false;
  memcpy(ev, "data: ", 6);
  memcpy(ev + 6, text, n);
  memcpy(ev + 6 + n, "\n\n", 2);
  if (!begin(c)) {
    free(ev);
    return false;
  }
  return berth_http_stream_send(c->req, ev, n + 8) == BERTH_OK;
}

bool berth_rest_call_event_json(berth_rest_call *c, json_t *doc) {
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL)
    return false;
  bool ok = berth_rest_call_event(c, text, strlen(text));
  free(text);
  return ok;
}

bool berth_rest_call_lagging(const berth_rest_call *c) {
  return berth_http_stream_queued(c->req) > STREAM_MAX_UNREAD;
}

void berth_rest_call_end_stream(berth_rest_call *c) {
  c->ended = true;
  if (begin(c))
    berth_http_stream_end(c->req, NULL, 0);
}

void berth_rest_call_stop(berth_rest_call *c) {
  c->ended = true;
  (void)berth_front_cancel(&c->job); /* running: stops at its next one */
}
