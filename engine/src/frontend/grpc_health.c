/* Berth engine: gRPC's health-checking service, grpc.health.v1.Health
 * (proto/health.proto): Check and Watch.
 *
 * Service names (docs/grpc.md):
 *   ""                                the server: SERVING when it is ready
 *   "inference.GRPCInferenceService"  the same (the inference service)
 *   "MODEL"                           the model's newest version (or a
 *                                     route's first target, or a pipeline)
 *   "MODEL/VERSION"                   that version
 * SERVING when ready, NOT_SERVING while it loads, failed, is unloaded or
 * the server drains; anything else is unknown (Check: NOT_FOUND; Watch:
 * SERVICE_UNKNOWN, and the call goes on: the name may appear later).
 *
 * Watch sends the status at once, then again whenever it changes. Changes
 * are found by comparing, every POLL_MS while any Watch is open, each
 * watched name's status with the last one sent: one timer for the engine,
 * and no hook in the many places a model's readiness changes. A drain is
 * sent at once (berth_grpc_health_drain): NOT_SERVING, then the call ends
 * UNAVAILABLE. A Watch is not a request in flight: it never holds a drain.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "codec_grpc.h"
#include "grpc.h"
#include "health.pb-c.h"

#define POLL_MS 200
#define SERVICE_MAX 600 /* longer names are no model's */
#define WATCH_MAX_UNREAD ((size_t)64 * 1024)
#define INFERENCE_SERVICE "inference.GRPCInferenceService"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;
#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING                                                            \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SERVICE_UNKNOWN                                                        \
  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

typedef struct berth_grpc_health berth_grpc_health;

struct berth_grpc_watch {
  berth_grpc_call *call;
  const berth_grpc_call_ops *ops;    /* grpc.c's, for call */
  serving_status last;               /* sent last */
  LIST_ENTRY(berth_grpc_watch) link; /* the open watches */
  char service[SERVICE_MAX + 1];
};

struct berth_grpc_health {
  uv_timer_t timer; /* runs while watches is not empty */
  berth_engine *e;
  LIST_HEAD(watch_list, berth_grpc_watch)
  watches; /* the open Watch
                                                      calls */
};

/* ---- statuses ------------------------------------------------------------- */

static serving_status service_status(berth_engine *e, const char *s) {
  if (s[0] == '\0' || strcmp(s, INFERENCE_SERVICE) == 0)
    return !e->draining && berth_server_ready(e) ? SERVING : NOT_SERVING;
  char name[SERVICE_MAX + 1];
  snprintf(name, sizeof name, "%s", s);
  char *version = strchr(name, '/');
  if (version != NULL)
    *version++ = '\0';
  if (version != NULL && (version[0] == '\0' || strchr(version, '/') != NULL))
    return SERVICE_UNKNOWN;
  berth_model *m = NULL;
  berth_errmsg err;
  if (berth_grpc_find_model(e, name, version, &m, &err) != BERTH_OK)
    return SERVICE_UNKNOWN;
  return !e->draining && berth_model_ready(m) ? SERVING : NOT_SERVING;
}

/* Unpacks a HealthCheckRequest; its service name (NUL-terminated) into
 * out, "" when absent. */
static int take_service(const uint8_t *msg, size_t len,
                        char out[SERVICE_MAX + 1], berth_errmsg *err) {
  Grpc__Health__V1__HealthCheckRequest *rq =
      (Grpc__Health__V1__HealthCheckRequest *)berth_grpc_unpack(
          &grpc__health__v1__health_check_request__descriptor, msg, len);
  if (rq == NULL)
    return berth_errf(err, BERTH_E_PARSE,
                      "the message is not a valid "
                      "grpc.health.v1.HealthCheckRequest");
  const char *s = rq->service != NULL ? rq->service : "";
  size_t sl = strlen(s);
  if (sl <= SERVICE_MAX)
    memcpy(out, s, sl + 1);
  protobuf_c_message_free_unpacked(&rq->base, NULL);
  if (sl > SERVICE_MAX)
    return berth_errf(err, BERTH_E_INVALID,
                      "the service name is longer than %d bytes", SERVICE_MAX);
  return BERTH_OK;
}

static int append_status(serving_status st, berth_buf *out, berth_errmsg *err) {
  Grpc__Health__V1__HealthCheckResponse r =
      GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = st;
  return berth_grpc_append_message(&r.base, out, err);
}

int berth_grpc_health_check(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err) {
  char service[SERVICE_MAX + 1];
  int rc = take_service(msg, len, service, err);
  if (rc != BERTH_OK)
    return rc;
  serving_status st = service_status(e, service);
  if (st == SERVICE_UNKNOWN)
    return berth_errf(
        err, BERTH_E_NOT_FOUND,
        "unknown service '%.200s': health names "
        "are \"\" (the server), %s, a model's name or NAME/VERSION",
        service, INFERENCE_SERVICE);
  return append_status(st, out, err);
}

/* ---- Watch ---------------------------------------------------------------- */

static void unlink_watch(berth_grpc_health *h, berth_grpc_watch *w) {
  LIST_REMOVE(w, link);
}

/* Sends st on w's call, or ends the call when the client leaves too much
 * unread. Returns false when the call ended: w and the call are gone. */
static bool send_status(berth_grpc_watch *w, serving_status st) {
  berth_grpc_call *c = w->call;
  w->last = st;
  if (w->ops->unread(c) > WATCH_MAX_UNREAD) {
    w->ops->end(c, BERTH_GRPC_RESOURCE_EXHAUSTED,
                "the client leaves the "
                "health statuses of this Watch unread");
    return false;
  }
  berth_buf out;
  berth_buf_init(&out, 64);
  berth_errmsg err;
  bool open = true;
  if (append_status(st, &out, &err) == BERTH_OK)
    open = w->ops->send(c, &out);
  berth_buf_free(&out);
  return open;
}

/* Ends w's call after a drain's last NOT_SERVING (w goes with the call). */
static void end_drained(berth_grpc_watch *w) {
  berth_grpc_call *c = w->call;
  if (send_status(w, NOT_SERVING))
    w->ops->end(c, BERTH_GRPC_UNAVAILABLE, "the server is shutting down");
}

static void on_poll(uv_timer_t *t) {
  berth_grpc_health *h = t->data;
  berth_engine *e = h->e;
  for (berth_grpc_watch *w = LIST_FIRST(&h->watches), *next; w != NULL;
       w = next) {
    next = LIST_NEXT(w, link);
    serving_status st = service_status(e, w->service);
    if (st != w->last)
      send_status(w, st);
  }
  if (LIST_EMPTY(&h->watches))
    uv_timer_stop(&h->timer);
}

static berth_grpc_health *health_of(berth_engine *e) {
  if (e->grpc_health == NULL) {
    berth_grpc_health *h = calloc(1, sizeof *h);
    if (h == NULL)
      return NULL;
    uv_timer_init(e->loop, &h->timer);
    h->timer.data = h;
    h->e = e;
    e->grpc_health = h;
  }
  return e->grpc_health;
}

int berth_grpc_health_watch(berth_engine *e, berth_grpc_call *c,
                            const berth_grpc_call_ops *ops, const uint8_t *msg,
                            size_t len, berth_grpc_watch **out,
                            berth_errmsg *err) {
  *out = NULL;
  berth_grpc_watch *w = calloc(1, sizeof *w);
  if (w == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int rc = take_service(msg, len, w->service, err);
  berth_grpc_health *h = rc == BERTH_OK ? health_of(e) : NULL;
  if (rc == BERTH_OK && h == NULL)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc != BERTH_OK) {
    free(w);
    return rc;
  }
  w->call = c;
  w->ops = ops;
  LIST_INSERT_HEAD(&h->watches, w, link);
  *out = w;
  if (e->draining) {
    end_drained(w);
    return BERTH_OK;
  }
  send_status(w, service_status(e, w->service)); /* may end the call */
  if (!uv_is_active((uv_handle_t *)&h->timer))
    uv_timer_start(&h->timer, on_poll, POLL_MS, POLL_MS);
  return BERTH_OK;
}

void berth_grpc_health_unwatch(berth_engine *e, berth_grpc_watch *w) {
  if (w == NULL)
    return;
  if (e->grpc_health != NULL)
    unlink_watch(e->grpc_health, w);
  free(w);
}

void berth_grpc_health_drain(berth_engine *e) {
  berth_grpc_health *h = e->grpc_health;
  if (h == NULL)
    return;
  for (berth_grpc_watch *w = LIST_FIRST(&h->watches), *next; w != NULL;
       w = next) {
    next = LIST_NEXT(w, link);
    end_drained(w);
  }
}

static void timer_closed(uv_handle_t *t) { free(t->data); }

void berth_grpc_health_close(berth_engine *e) {
  berth_grpc_health *h = e->grpc_health;
  if (h == NULL)
    return;
  berth_grpc_health_drain(e);
  uv_close((uv_handle_t *)&h->timer, timer_closed);
  e->grpc_health = NULL;
}
