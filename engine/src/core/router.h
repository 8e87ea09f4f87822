/* Berth engine: the router — served names (routes) that split their
 * requests by weight across model versions or models, optionally sticky per
 * caller (a hash of a request header), and a shadow target that receives a
 * copy of the requests whose answers are only recorded (docs/traffic.md).
 *
 * A route is found by the name a client calls, when the request names no
 * version: /v2/models/{route}/infer (REST, also KServe v1 :predict) and
 * ModelInfer with model_name = route (gRPC). A route may share the name of a
 * model; requests that name a version still reach that version directly.
 *
 * Ownership: the engine owns the router (engine->router); the router owns
 * its routes, and a route owns its current definition (a
 * berth_route_config) and its counters. Routes are never removed while the
 * engine runs, so a job may keep pointers to a route's counters; a new
 * definition (the admin API) replaces the old one at once on the loop
 * thread: requests already routed keep the model they were given.
 *
 * Shadow copies are jobs of their own at the lowest priority, owned by the
 * router: they do not count as in-flight requests (a drain does not wait for
 * them; those still queued when it ends fail with the others, running ones
 * end with their worker), they are dropped (counted) when the shadow model
 * is not ready or its queue is half full, and their answers never reach the
 * client.
 */
#ifndef BERTH_ROUTER_H
#define BERTH_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

typedef struct berth_router berth_router;
typedef struct berth_route berth_route;
/* Counters of one (route, model version) pair; lives as long as the
 * engine. */
typedef struct berth_route_stat berth_route_stat;

/* Builds the routes of e->cfg.routes, checking what the config parser
 * cannot: names unique, weights summing to more than 0, every target a
 * known model (version). BERTH_E_CONFIG naming the key path
 * ("routes[0].split[1].version: ..."). Call after the models exist. */
int berth_router_init(berth_engine *e, berth_errmsg *err);
/* The traffic routes' module (main.c's list, first): berth_router_init
 * (and its /metrics collector) and berth_router_free. */
extern const berth_module berth_router_module;
void berth_router_free(berth_engine *e);

/* The route called name (len bytes), or NULL. */
berth_route *berth_router_find(berth_engine *e, const char *name, size_t len);

/* The lookup sites' one call: when name is a route, the model version a
 * request goes to. infer_req non-NULL: an inference request, the target is
 * drawn by weight (or by the hash of the route's sticky header in
 * infer_req) and *stat is set for berth_router_submit; NULL: the route's
 * primary target (its first split entry), for metadata, readiness and
 * configuration, and *stat is NULL. Returns NULL when name is no route or
 * its target cannot be resolved now. */
berth_model *berth_router_resolve(berth_engine *e, const char *name, size_t len,
                                  const berth_http_req *infer_req,
                                  berth_route_stat **stat);

/* berth_sched_submit for frontends: with stat NULL exactly that; else the
 * answer is also counted for the route (job->done is wrapped) and, when the
 * route has a shadow, a copy of job->req is sent to it. On failure nothing
 * was queued, no callback ran, and the caller answers as after a failed
 * berth_sched_submit (the failure is already counted for the route). */
int berth_router_submit(berth_model *m, berth_job *job, berth_route_stat *stat,
                        berth_errmsg *err);

/* Appends berth_route_requests_total, berth_shadow_requests_total and
 * berth_shadow_dropped_total (docs/metrics.md). */
int berth_router_metrics(berth_engine *e, berth_buf *out);

/* router_admin.c: the route document (GET /v2/routes/{name}): name, split
 * (model, version or null, weight), sticky_header, shadow (or null). New
 * reference or NULL when out of memory. */
json_t *berth_router_route_doc(const berth_route *rt);
/* Every route's document, in the order they were made. */
json_t *berth_router_index(berth_engine *e);
/* Creates or changes route name from a JSON document in the schema of a
 * routes[] entry without "name" (the name is the argument). For an existing
 * route, keys left out keep their value, and "shadow": null or
 * "sticky_header": null removes them. Validated as at start; errors name
 * the key ("split[1].weight: ..."), BERTH_E_CONFIG, or BERTH_E_NOT_FOUND
 * for an unknown target model. */
int berth_router_update(berth_engine *e, const char *name, json_t *doc,
                        berth_errmsg *err);

#endif
