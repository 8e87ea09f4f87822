/* Berth engine, gateway mode (docs/gateway.md): a berthd that serves no
 * models and forwards every OIP REST, KServe v1 and gRPC request to one of
 * its replicas (ordinary berthd's) over HTTP/2, chosen by power of two
 * choices on the gateway's own in-flight counts, with health checks,
 * outlier ejection and one retry on another replica when a replica fails
 * before it answered.
 *
 * gateway.c: the module (listeners, health timer, metrics, the admin
 * endpoint /v2/gateway/replicas); gw_forward.c: the forwarded calls;
 * gw_upstream.c: the HTTP/2 client; gw_set.c: the pure rules.
 *
 * Ownership: the engine owns the berth_gateway (e->gateway), made at init
 * and freed by the module's free hook; the set owns the replicas; each
 * replica's transport (gw_transport) is owned by gateway.c.
 */
#ifndef BERTH_GATEWAY_H
#define BERTH_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "engine.h"
#include "gw_set.h"
#include "gw_upstream.h"

typedef struct berth_gateway {
  berth_engine *e;
  berth_gw_set set;
  berth_gw_policy policy;
  uint32_t retries;
  uint32_t conns_per_replica;
  bool allow_remote;
  uv_timer_t health;
  bool timer_open;
  uint64_t rng;
  uint64_t retried;       /* attempts on another replica */
  uint64_t no_replica;    /* answered 503: no healthy replica */
  uint64_t forward_fails; /* answered 502/UNAVAILABLE after every try */
} berth_gateway;

/* A replica's connections and its health check in flight. */
typedef struct gw_transport {
  berth_gateway *g;
  berth_gw_replica *r;
  berth_gw_up *up;
  berth_gw_ustream *probe; /* NULL when none in flight */
  int probe_status;
} gw_transport;

/* The gateway module (main.c's list in gateway mode). */
extern const berth_module berth_gateway_module;

/* gw_forward.c: REST and gRPC listeners' forwarding. */
void berth_gw_forward_rest(berth_gateway *g, berth_http_req *req);
void berth_gw_forward_grpc(berth_gateway *g, berth_http_req *req);
size_t berth_gw_grpc_on_body(berth_http_req *req, const char *data, size_t len,
                             bool end, void *arg);
/* Answers a gRPC call that never reached a replica (Trailers-Only). */
void berth_gw_grpc_refuse(berth_http_req *req, int code, const char *msg);

/* gateway.c: a forwarded attempt on r ended; drained replicas go. */
void berth_gw_attempt_done(berth_gateway *g, berth_gw_replica *r);
/* A uniform random 32-bit number. */
uint32_t berth_gw_rand(void *gateway);

#endif
