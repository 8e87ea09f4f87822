/* Berth engine: the router's structures, shared by router.c (choosing,
 * shadow copies, counters) and router_admin.c (documents, changes at run
 * time). Internal to those two files. */
#ifndef BERTH_ROUTER_INT_H
#define BERTH_ROUTER_INT_H

#include <stdint.h>

#include "router.h"

/* Most routes an engine holds (the config's own bound too). */
#define BERTH_ROUTES_MAX 4096

struct berth_route_stat {
  berth_route_stat *next;                 /* the route's list */
  berth_route *route;                     /* the route counted */
  berth_model *model;                     /* the version that answered */
  uint64_t requests[BERTH_OUTCOME_COUNT]; /* routed here, by outcome */
  uint64_t shadow[BERTH_OUTCOME_COUNT];   /* shadow copies, by outcome */
  uint64_t shadow_dropped;                /* shadow copies not sent */
};

struct berth_route {
  berth_engine *engine;
  berth_route_config cfg;  /* owned: the current definition */
  double *cum;             /* owned: cumulative split weights */
  double total;            /* cum[n_split - 1], > 0 */
  berth_route_stat *stats; /* owned list, never shrinks */
};

struct berth_router {
  berth_route **routes; /* owned array of owned routes */
  size_t n_routes, cap;
  uint64_t rng[4]; /* xoshiro256** state */
};

/* Checks cfg against the engine's models and computes the cumulative
 * weights; path prefixes error keys. On success *cum is a new array. */
int berth_router_check(berth_engine *e, const berth_route_config *cfg,
                       const char *path, double **cum, berth_errmsg *err);
/* The split entry for a request: by the hash of key (the sticky header's
 * value; the same key gives the same entry while the weights stay), or at
 * random when key is NULL or empty. Never an entry of weight 0. */
size_t berth_router_pick(berth_route *rt, const char *key, size_t key_len);
/* Adds a route (taking cfg and cum over) to the router. */
int berth_router_add(berth_engine *e, berth_route_config *cfg, double *cum,
                     berth_errmsg *err);

#endif
