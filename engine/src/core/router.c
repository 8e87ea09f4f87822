/* Berth engine: the router — choosing a route's target (weights, sticky
 * hash), counting answers per route and version, and shadow copies.
 * Documents and changes at run time are in router_admin.c. */
#include "router_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* ---- random numbers ------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** (Blackman and Vigna, public domain algorithm). */
static uint64_t rng_next(berth_router *r) {
  uint64_t *s = r->rng;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

/* A uniform double in [0, 1) from 53 bits. */
static double unit(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; }

static void rng_seed(berth_router *r) {
  uint64_t seed =
      uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
  for (int i = 0; i < 4; i++)
    r->rng[i] = splitmix64(&seed);
}

/* ---- setup ----------------------------------------------------------------- */

static berth_model *target_model(berth_engine *e,
                                 const berth_route_target_config *t) {
  return berth_model_find(e, t->model, strlen(t->model), t->version,
                          t->version != NULL ? strlen(t->version) : 0);
}

static int check_target(berth_engine *e, const berth_route_target_config *t,
                        const char *path, berth_errmsg *err) {
  if (!berth_model_name_exists(e, t->model, strlen(t->model)))
    return berth_errf(err, BERTH_E_CONFIG, "%s.model: no model named \"%s\"",
                      path, t->model);
  if (target_model(e, t) == NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      "%s.version: model \"%s\" has no version \"%s\"", path,
                      t->model, t->version);
  return BERTH_OK;
}

int berth_router_check(berth_engine *e, const berth_route_config *cfg,
                       const char *path, double **cum, berth_errmsg *err) {
  char item[224];
  double total = 0;
  *cum = NULL;
  for (size_t i = 0; i < cfg->n_split; i++) {
    snprintf(item, sizeof item, "%.190s%ssplit[%zu]", path,
             path[0] != '\0' ? "." : "", i);
    int rc = check_target(e, &cfg->split[i], item, err);
    if (rc != BERTH_OK)
      return rc;
    total += cfg->split[i].weight;
  }
  if (!(total > 0))
    return berth_errf(err, BERTH_E_CONFIG,
                      "%s%ssplit: the weights must add up to more than 0", path,
                      path[0] != '\0' ? "." : "");
  if (cfg->shadow.model != NULL) {
    snprintf(item, sizeof item, "%.190s%sshadow", path,
             path[0] != '\0' ? "." : "");
    int rc = check_target(e, &cfg->shadow, item, err);
    if (rc != BERTH_OK)
      return rc;
  }
  double *c = calloc(cfg->n_split, sizeof *c);
  if (c == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  double run = 0;
  for (size_t i = 0; i < cfg->n_split; i++) {
    run += cfg->split[i].weight;
    c[i] = run;
  }
  *cum = c;
  return BERTH_OK;
}

int berth_router_add(berth_engine *e, berth_route_config *cfg, double *cum,
                     berth_errmsg *err) {
  berth_router *r = e->router;
  if (r->n_routes >= BERTH_ROUTES_MAX)
    return berth_errf(err, BERTH_E_CONFIG,
                      "there are %d routes already, the most there may be",
                      BERTH_ROUTES_MAX);
  if (r->n_routes == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    berth_route **grown = realloc(r->routes, cap * sizeof *grown);
    if (grown == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    r->routes = grown;
    r->cap = cap;
  }
  berth_route *rt = calloc(1, sizeof *rt);
  if (rt == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  rt->engine = e;
  rt->cfg = *cfg;
  memset(cfg, 0, sizeof *cfg);
  rt->cum = cum;
  rt->total = cum[rt->cfg.n_split - 1];
  r->routes[r->n_routes++] = rt;
  return BERTH_OK;
}

static int collect(void *ctx, berth_buf *out) {
  return berth_router_metrics(ctx, out);
}

int berth_router_init(berth_engine *e, berth_errmsg *err) {
  e->router = calloc(1, sizeof *e->router);
  if (e->router == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int arc = berth_engine_add_collector(e, collect, e, err);
  if (arc != BERTH_OK)
    return arc;
  rng_seed(e->router);
  berth_config *c = &e->cfg;
  for (size_t i = 0; i < c->n_routes; i++) {
    char path[64];
    snprintf(path, sizeof path, "routes[%zu]", i);
    const char *name = c->routes[i].name;
    if (berth_router_find(e, name, strlen(name)) != NULL)
      return berth_errf(err, BERTH_E_CONFIG, "%s.name: duplicate route \"%s\"",
                        path, name);
    double *cum = NULL;
    int rc = berth_router_check(e, &c->routes[i], path, &cum, err);
    if (rc == BERTH_OK)
      rc = berth_router_add(e, &c->routes[i], cum, err);
    if (rc != BERTH_OK) {
      free(cum);
      return rc;
    }
  }
  return BERTH_OK;
}

void berth_router_free(berth_engine *e) {
  berth_router *r = e->router;
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n_routes; i++) {
    berth_route *rt = r->routes[i];
    berth_config_route_clear(&rt->cfg);
    free(rt->cum);
    berth_route_stat *s = rt->stats;
    while (s != NULL) {
      berth_route_stat *next = s->next;
      free(s);
      s = next;
    }
    free(rt);
  }
  free(r->routes);
  free(r);
  e->router = NULL;
}

/* ---- choosing ---------------------------------------------------------------- */

berth_route *berth_router_find(berth_engine *e, const char *name, size_t len) {
  berth_router *r = e->router;
  if (r == NULL)
    return NULL;
  for (size_t i = 0; i < r->n_routes; i++) {
    const char *n = r->routes[i]->cfg.name;
    if (strlen(n) == len && memcmp(n, name, len) == 0)
      return r->routes[i];
  }
  return NULL;
}

/* The counters of (rt, m), made on first use; NULL when out of memory. */
static berth_route_stat *stat_of(berth_route *rt, berth_model *m) {
  for (berth_route_stat *s = rt->stats; s != NULL; s = s->next)
    if (s->model == m)
      return s;
  berth_route_stat *s = calloc(1, sizeof *s);
  if (s == NULL)
    return NULL;
  s->route = rt;
  s->model = m;
  berth_route_stat **tail = &rt->stats; /* first use first in /metrics */
  while (*tail != NULL)
    tail = &(*tail)->next;
  *tail = s;
  return s;
}

/* 64-bit FNV-1a, then a finaliser so that close values spread. */
static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= UINT64_C(0x100000001b3);
  }
  return splitmix64(&h);
}

/* The split entry a point u in [0, 1) falls on. */
static size_t split_index(const berth_route *rt, double u) {
  double x = u * rt->total;
  size_t i = 0;
  while (i + 1 < rt->cfg.n_split && !(x < rt->cum[i]))
    i++;
  /* never an entry of weight 0 (x can only equal a bound from below when
   * rounding lands on it) */
  while (rt->cfg.split[i].weight <= 0 && i + 1 < rt->cfg.n_split)
    i++;
  while (rt->cfg.split[i].weight <= 0 && i > 0)
    i--;
  return i;
}

size_t berth_router_pick(berth_route *rt, const char *key, size_t key_len) {
  double u = key != NULL && key_len > 0 ? unit(hash_bytes(key, key_len))
                                        : unit(rng_next(rt->engine->router));
  return split_index(rt, u);
}

berth_model *berth_router_resolve(berth_engine *e, const char *name, size_t len,
                                  const berth_http_req *infer_req,
                                  berth_route_stat **stat) {
  *stat = NULL;
  berth_route *rt = berth_router_find(e, name, len);
  if (rt == NULL)
    return NULL;
  if (infer_req == NULL)
    return target_model(e, &rt->cfg.split[0]);
  size_t hl = 0;
  const char *h = rt->cfg.sticky_header != NULL
                      ? berth_http_header(infer_req, rt->cfg.sticky_header, &hl)
                      : NULL;
  size_t i = berth_router_pick(rt, h, hl);
  berth_model *m = target_model(e, &rt->cfg.split[i]);
  if (m != NULL)
    *stat = stat_of(rt, m); /* NULL when out of memory: just not counted */
  return m;
}

/* ---- shadow copies ----------------------------------------------------------- */

typedef struct shadow_job {
  berth_job job;          /* first: the job pointer is this pointer */
  berth_route_stat *stat; /* the shadow version's counters */
} shadow_job;

static int copy_tensor(berth_tensor *dst, const berth_tensor *src) {
  *dst = *src;
  dst->name = NULL;
  dst->data = NULL;
  dst->data_borrowed = false;
  dst->name = strdup(src->name);
  if (dst->name == NULL)
    return BERTH_E_NOMEM;
  if (src->nbytes > 0) {
    dst->data = malloc(src->nbytes);
    if (dst->data == NULL)
      return BERTH_E_NOMEM;
    memcpy(dst->data, src->data, src->nbytes);
  }
  return BERTH_OK;
}

/* A deep copy of r for another job; parameters lose "priority", so that
 * the scheduler queues the copy at the lowest level (BERTH_PRIORITY_NORMAL),
 * behind every request that asked for the high one. */
static int copy_request(berth_infer_request *dst,
                        const berth_infer_request *src) {
  memset(dst, 0, sizeof *dst);
  if (src->id != NULL && (dst->id = strdup(src->id)) == NULL)
    return BERTH_E_NOMEM;
  if (src->parameters != NULL) {
    dst->parameters = json_deep_copy(src->parameters);
    if (dst->parameters == NULL)
      return BERTH_E_NOMEM;
    json_object_del(dst->parameters, "priority");
  }
  if (src->n_inputs > 0) {
    dst->inputs = calloc(src->n_inputs, sizeof *dst->inputs);
    if (dst->inputs == NULL)
      return BERTH_E_NOMEM;
    dst->n_inputs = src->n_inputs;
    for (size_t i = 0; i < src->n_inputs; i++)
      if (copy_tensor(&dst->inputs[i], &src->inputs[i]) != BERTH_OK)
        return BERTH_E_NOMEM;
  }
  if (src->n_outputs > 0) {
    dst->outputs = calloc(src->n_outputs, sizeof *dst->outputs);
    if (dst->outputs == NULL)
      return BERTH_E_NOMEM;
    dst->n_outputs = src->n_outputs;
    for (size_t i = 0; i < src->n_outputs; i++) {
      const berth_output_request *o = &src->outputs[i];
      dst->outputs[i].name = strdup(o->name);
      if (dst->outputs[i].name == NULL)
        return BERTH_E_NOMEM;
      if (o->parameters != NULL &&
          (dst->outputs[i].parameters = json_deep_copy(o->parameters)) == NULL)
        return BERTH_E_NOMEM;
    }
  }
  return BERTH_OK;
}

/* Where a shadow answer is recorded: its counters and a debug line. The
 * payload log, when there is one, records the same answers from here. */
static void shadow_record(shadow_job *s, int status, const char *errmsg) {
  berth_route_stat *st = s->stat;
  st->shadow[berth_metrics_outcome(status)]++;
  if (berth_log_enabled(BERTH_LOG_DEBUG)) {
    char ms[32];
    snprintf(ms, sizeof ms, "%.3f",
             (double)(uv_hrtime() - s->job.received_ns) / 1e6);
    berth_log_kv(BERTH_LOG_DEBUG, "shadow answer", "route", st->route->cfg.name,
                 "model", st->model->cfg->name, "version",
                 st->model->cfg->version, "id",
                 s->job.req.id != NULL ? s->job.req.id : "", "ms", ms, "error",
                 status == BERTH_OK ? "" : errmsg, NULL);
  }
}

static void shadow_done(berth_job *job, int status, const char *errmsg,
                        berth_infer_response *resp) {
  (void)resp; /* recorded, never returned */
  shadow_record((shadow_job *)job, status, errmsg);
}

static void shadow_release(berth_job *job) {
  shadow_job *s = (shadow_job *)job;
  berth_infer_request_clear(&s->job.req);
  free(s);
}

/* A copy of primary's request for the route's shadow, or NULL when this
 * request is not mirrored (rate) or is dropped (counted). Made before the
 * primary is queued: a queued job may be answered at once. */
static shadow_job *shadow_prepare(berth_route *rt, const berth_job *primary) {
  const berth_route_target_config *t = &rt->cfg.shadow;
  berth_engine *e = rt->engine;
  if (t->model == NULL || t->rate <= 0)
    return NULL;
  if (t->rate < 1 && !(unit(rng_next(e->router)) < t->rate))
    return NULL;
  berth_model *m = target_model(e, t);
  berth_route_stat *st = m != NULL ? stat_of(rt, m) : NULL;
  if (st == NULL)
    return NULL;
  if (!berth_model_accepting(m) ||
      m->q_len >= (m->cfg->max_queue_size + 1) / 2) {
    st->shadow_dropped++;
    return NULL;
  }
  shadow_job *s = calloc(1, sizeof *s);
  if (s == NULL || copy_request(&s->job.req, &primary->req) != BERTH_OK) {
    if (s != NULL)
      shadow_release(&s->job);
    st->shadow_dropped++;
    return NULL;
  }
  s->stat = st;
  s->job.model = m;
  s->job.done = shadow_done;
  s->job.release = shadow_release;
  s->job.user = s;
  s->job.received_ns = primary->received_ns;
  s->job.protocol = primary->protocol;
  return s;
}

static void shadow_send(shadow_job *s) {
  berth_errmsg err;
  berth_route_stat *st = s->stat;
  int rc = berth_model_submit(s->job.model, &s->job, &err);
  if (rc != BERTH_OK) { /* not queued: no callback ran */
    st->shadow_dropped++;
    shadow_release(&s->job);
  }
}

/* ---- submitting ------------------------------------------------------------- */

/* The primary's answer: counted for the route, then handed to the
 * frontend's own callback. */
static void routed_done(berth_job *job, int status, const char *errmsg,
                        berth_infer_response *resp) {
  berth_route_stat *st = job->route_stat;
  berth_job_done_cb done = job->route_done;
  if (st != NULL)
    st->requests[berth_metrics_outcome(status)]++;
  done(job, status, errmsg, resp);
}

int berth_router_submit(berth_model *m, berth_job *job, berth_route_stat *stat,
                        berth_errmsg *err) {
  if (stat == NULL)
    return berth_model_submit(m, job, err);
  shadow_job *s = shadow_prepare(stat->route, job);
  job->route_stat = stat;
  job->route_done = job->done;
  job->done = routed_done;
  int rc = berth_model_submit(m, job, err);
  if (rc != BERTH_OK) {
    job->done = job->route_done;
    job->route_done = NULL;
    job->route_stat = NULL;
    stat->requests[berth_metrics_outcome(rc)]++;
    if (s != NULL)
      shadow_release(&s->job); /* the request was refused: nothing to mirror */
    return rc;
  }
  if (s != NULL)
    shadow_send(s);
  return BERTH_OK;
}

/* ---- metrics ----------------------------------------------------------------- */

static const char *const outcome_label[BERTH_OUTCOME_COUNT] = {
    "success", "client_error", "server_error",
    "timeout", "overload",     "unavailable"};

/* name{route="..",model="..",version=".."<extra>} value\n */
static int route_sample(berth_buf *out, const char *name,
                        const berth_route_stat *s, const char *extra,
                        uint64_t v) {
  int rc = berth_buf_printf(out, "%s{route=\"", name);
  if (rc == BERTH_OK)
    rc = berth_metrics_escape(out, s->route->cfg.name);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\",model=\"", 9);
  if (rc == BERTH_OK)
    rc = berth_metrics_escape(out, s->model->cfg->name);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\",version=\"", 11);
  if (rc == BERTH_OK)
    rc = berth_metrics_escape(out, s->model->cfg->version);
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "\"%s} %llu\n", extra, (unsigned long long)v);
  return rc;
}

typedef enum { FAM_ROUTED, FAM_SHADOW, FAM_DROPPED } route_family;

static int route_family_render(berth_engine *e, berth_buf *out,
                               route_family fam) {
  static const char *const names[] = {"berth_route_requests_total",
                                      "berth_shadow_requests_total",
                                      "berth_shadow_dropped_total"};
  static const char *const helps[] = {
      "Inference requests a route sent to a model version, by outcome.",
      "Shadow copies of a route's requests answered by the shadow version, "
      "by outcome (the answers are recorded, never returned).",
      "Shadow copies not sent: the shadow version was not ready, its queue "
      "was half full, or memory ran out."};
  int rc = berth_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n",
                            names[fam], helps[fam], names[fam]);
  berth_router *r = e->router;
  for (size_t i = 0; r != NULL && i < r->n_routes && rc == BERTH_OK; i++)
    for (berth_route_stat *s = r->routes[i]->stats; s != NULL && rc == BERTH_OK;
         s = s->next) {
      if (fam == FAM_DROPPED) {
        rc = route_sample(out, names[fam], s, "", s->shadow_dropped);
        continue;
      }
      const uint64_t *v = fam == FAM_ROUTED ? s->requests : s->shadow;
      for (int o = 0; o < BERTH_OUTCOME_COUNT && rc == BERTH_OK; o++) {
        char extra[48];
        snprintf(extra, sizeof extra, ",outcome=\"%s\"", outcome_label[o]);
        rc = route_sample(out, names[fam], s, extra, v[o]);
      }
    }
  return rc;
}

int berth_router_metrics(berth_engine *e, berth_buf *out) {
  int rc = BERTH_OK;
  if (e->router == NULL || e->router->n_routes == 0)
    return BERTH_OK; /* no routes: no families */
  for (int f = FAM_ROUTED; f <= FAM_DROPPED && rc == BERTH_OK; f++)
    rc = route_family_render(e, out, (route_family)f);
  return rc;
}

const berth_module berth_router_module = {
    .name = "router", .init = berth_router_init, .free = berth_router_free};
