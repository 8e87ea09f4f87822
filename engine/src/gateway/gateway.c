/* Berth engine, gateway mode: the module — listeners, health checks,
 * metrics and the admin endpoint (gateway.h, docs/gateway.md). */
#include "gateway.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc.h"
#include "http_guard.h"
#include "log.h"
#include "metrics.h"
#include "rest.h"

/* PUT /v2/gateway/replicas bodies beyond this are refused (413). */
#define GW_ADMIN_MAX_BODY (1u << 20)

uint32_t berth_gw_rand(void *gateway) {
  berth_gateway *g = gateway;
  g->rng ^= g->rng << 13; /* xorshift64 */
  g->rng ^= g->rng >> 7;
  g->rng ^= g->rng << 17;
  return (uint32_t)(g->rng >> 16);
}

/* ---- transports ------------------------------------------------------------ */

static void transport_close(berth_gw_replica *r) {
  gw_transport *t = r->transport;
  if (t == NULL)
    return;
  if (t->probe != NULL)
    berth_gw_ustream_cancel(t->probe);
  berth_gw_up_close(t->up);
  free(t);
  r->transport = NULL;
}

/* Gives every active replica its connections (those that lack them). */
static void transports_attach(berth_gateway *g) {
  for (size_t i = 0; i < g->set.n_active; i++) {
    berth_gw_replica *r = g->set.active[i];
    if (r->transport != NULL)
      continue;
    gw_transport *t = calloc(1, sizeof *t);
    if (t == NULL)
      return;
    t->up = berth_gw_up_new(g->e->loop, r->host, r->port, g->conns_per_replica);
    if (t->up == NULL) {
      free(t);
      return;
    }
    t->g = g;
    t->r = r;
    r->transport = t;
  }
}

/* Closes the drained replicas and frees them. */
static void drained_reap(berth_gateway *g) {
  for (size_t i = 0; i < g->set.n_draining; i++) {
    berth_gw_replica *r = g->set.draining[i];
    gw_transport *t = r->transport;
    if (t != NULL && t->probe != NULL) {
      berth_gw_ustream_cancel(t->probe);
      t->probe = NULL;
    }
    if (r->in_flight == 0)
      transport_close(r);
  }
  berth_gw_set_reap(&g->set);
}

void berth_gw_attempt_done(berth_gateway *g, berth_gw_replica *r) {
  if (r->state == BERTH_GW_DRAINING && r->in_flight == 0)
    drained_reap(g);
}

/* ---- health checks ----------------------------------------------------------- */

static void health_result(gw_transport *t, bool ok) {
  berth_gateway *g = t->g;
  berth_gw_replica *r = t->r;
  berth_gw_state before = r->state;
  bool ejected = berth_gw_on_health(r, ok, &g->policy, uv_now(g->e->loop));
  if (ejected)
    berth_log_kv(BERTH_LOG_WARNING, "replica ejected", "replica", r->name,
                 "reason", "health check failed", NULL);
  else if (before != BERTH_GW_HEALTHY && r->state == BERTH_GW_HEALTHY)
    berth_log_kv(BERTH_LOG_INFO, "replica healthy", "replica", r->name, "url",
                 r->url, NULL);
}

static void probe_head(void *ud, int status, const berth_http_header_kv *h,
                       size_t n, bool end) {
  ((gw_transport *)ud)->probe_status = status;
}

static void probe_data(void *ud, const char *data, size_t len) {}

static void probe_close(void *ud, bool ok, const berth_http_header_kv *t,
                        size_t n, const char *why) {
  gw_transport *tr = ud;
  tr->probe = NULL;
  health_result(tr, ok && tr->probe_status == 200);
}

static const berth_gw_stream_cbs probe_cbs = {probe_head, probe_data,
                                              probe_close};

static void probe(gw_transport *t) {
  if (t->probe != NULL) {
    /* the last check is still out after a whole interval: a replica that
     * accepts and never answers fails its checks too */
    berth_gw_ustream_cancel(t->probe);
    t->probe = NULL;
    health_result(t, false);
  }
  char authority[80];
  bool v6 = strchr(t->r->host, ':') != NULL;
  snprintf(authority, sizeof authority, v6 ? "[%s]:%u" : "%s:%u", t->r->host,
           (unsigned)t->r->port);
  berth_http_header_kv h[] = {{":method", "GET"},
                              {":scheme", "http"},
                              {":path", "/v2/health/ready"},
                              {":authority", authority},
                              {"user-agent", "berth-gateway"}};
  berth_errmsg err;
  t->probe_status = 0;
  t->probe = berth_gw_up_submit(t->up, h, 5, NULL, &probe_cbs, t, &err);
  if (t->probe == NULL)
    health_result(t, false);
}

static void on_health_timer(uv_timer_t *timer) {
  berth_gateway *g = timer->data;
  transports_attach(g);
  for (size_t i = 0; i < g->set.n_active; i++)
    if (g->set.active[i]->transport != NULL)
      probe(g->set.active[i]->transport);
  drained_reap(g);
}

/* ---- the admin endpoint ------------------------------------------------------ */

static json_t *replica_json(const berth_gw_replica *r) {
  return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "name", r->name,
                   "url", r->url, "state", berth_gw_state_name(r->state),
                   "in_flight", (json_int_t)r->in_flight, "requests",
                   (json_int_t)r->requests, "failures", (json_int_t)r->failures,
                   "ejections", (json_int_t)r->ejections,
                   "consecutive_failures", (json_int_t)r->consecutive_failures);
}

static void admin_list(berth_gateway *g, berth_http_req *req) {
  json_t *list = json_array();
  for (size_t i = 0; list != NULL && i < g->set.n_active; i++)
    json_array_append_new(list, replica_json(g->set.active[i]));
  for (size_t i = 0; list != NULL && i < g->set.n_draining; i++)
    json_array_append_new(list, replica_json(g->set.draining[i]));
  json_t *doc = list != NULL ? json_pack("{s:o}", "replicas", list) : NULL;
  berth_rest_respond_doc(g->e, req, 200, doc);
}

/* Reads {"replicas": [{"name", "url"}, ...]} into specs (borrowing from
 * doc); BERTH_E_INVALID with why. */
static int admin_parse(json_t *doc, berth_gw_spec *specs, size_t *n,
                       berth_errmsg *err) {
  json_t *list = json_object_get(doc, "replicas");
  if (!json_is_object(doc) || json_object_size(doc) != 1 ||
      !json_is_array(list))
    return berth_errf(err, BERTH_E_INVALID,
                      "expected {\"replicas\": [{\"name\": ..., \"url\": "
                      "...}, ...]}");
  if (json_array_size(list) > BERTH_GW_MAX_REPLICAS)
    return berth_errf(err, BERTH_E_INVALID, "at most %d replicas",
                      BERTH_GW_MAX_REPLICAS);
  size_t i;
  json_t *item;
  json_array_foreach(list, i, item) {
    json_t *name = json_object_get(item, "name");
    json_t *url = json_object_get(item, "url");
    if (!json_is_object(item) || json_object_size(item) != 2 ||
        !json_is_string(name) || !json_is_string(url))
      return berth_errf(err, BERTH_E_INVALID,
                        "replicas[%zu]: expected {\"name\": string, \"url\": "
                        "string} and no other keys",
                        i);
    specs[i] = (berth_gw_spec){json_string_value(name), json_string_value(url)};
  }
  *n = json_array_size(list);
  return BERTH_OK;
}

static void admin_replace(berth_gateway *g, berth_http_req *req) {
  size_t len = 0;
  const char *body = berth_http_body(req, &len);
  if (len > GW_ADMIN_MAX_BODY) {
    berth_rest_respond_error(g->e, req, BERTH_E_TOO_LARGE,
                             "the replica list is larger than 1 MiB");
    return;
  }
  json_error_t jerr;
  json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
  if (doc == NULL) {
    char msg[300];
    snprintf(msg, sizeof msg, "malformed JSON: %s", jerr.text);
    berth_rest_respond_error(g->e, req, BERTH_E_PARSE, msg);
    return;
  }
  berth_gw_spec *specs = calloc(BERTH_GW_MAX_REPLICAS, sizeof *specs);
  size_t n = 0;
  berth_errmsg err;
  int rc = specs == NULL ? berth_errf(&err, BERTH_E_NOMEM, "out of memory")
                         : admin_parse(doc, specs, &n, &err);
  if (rc == BERTH_OK)
    rc = berth_gw_set_replace(&g->set, specs, n, g->allow_remote, &err);
  free(specs);
  json_decref(doc);
  if (rc != BERTH_OK) {
    berth_rest_respond_error(g->e, req, rc, err.msg);
    return;
  }
  char count[16];
  snprintf(count, sizeof count, "%zu", n);
  berth_log_kv(BERTH_LOG_INFO, "gateway replicas replaced", "replicas", count,
               NULL);
  transports_attach(g);
  drained_reap(g);
  for (size_t i = 0; i < g->set.n_active; i++) {
    gw_transport *t = g->set.active[i]->transport;
    if (t != NULL && t->probe == NULL &&
        g->set.active[i]->state == BERTH_GW_PROBING)
      probe(t); /* at once, not at the next tick */
  }
  admin_list(g, req);
}

/* ---- the REST listener ------------------------------------------------------- */

static bool path_is(const char *p, size_t pl, const char *lit) {
  return pl == strlen(lit) && memcmp(p, lit, pl) == 0;
}

static bool method_is(berth_http_req *req, const char *m) {
  size_t ml = 0;
  const char *v = berth_http_method(req, &ml);
  return ml == strlen(m) && memcmp(v, m, ml) == 0;
}

/* The token check; false: answered 401/403. */
static bool rest_auth(berth_gateway *g, berth_http_req *req, bool admin,
                      bool health) {
  size_t hl = 0;
  const char *authz = berth_http_header(req, "authorization", &hl);
  switch (berth_auth_check(&g->e->auth, authz, hl, admin, health)) {
  case BERTH_AUTH_UNAUTHENTICATED:
    berth_rest_respond_error(g->e, req, BERTH_E_UNAUTHENTICATED,
                             "missing or unknown bearer token; send "
                             "Authorization: Bearer <token>");
    return false;
  case BERTH_AUTH_FORBIDDEN:
    berth_rest_respond_error(g->e, req, BERTH_E_FORBIDDEN,
                             "this endpoint needs an admin token");
    return false;
  default:
    return true;
  }
}

/* The guard (http_guard.h); false: answered. */
static bool rest_guard(berth_gateway *g, berth_http_req *req) {
  berth_http_guard hg = berth_http_guard_of(g->e);
  berth_guard_verdict v;
  berth_http_guard_decide(&hg, req, true, &v);
  if (v.action == BERTH_GUARD_REFUSE) {
    berth_rest_respond_error(g->e, req, v.status, v.msg);
    return false;
  }
  if (v.action == BERTH_GUARD_PREFLIGHT) {
    size_t ol = 0;
    const char *o = berth_http_header(req, "origin", &ol);
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_CORS_ORIGIN, o, ol);
    berth_http_header_kv h[BERTH_GUARD_PREFLIGHT_HEADERS];
    size_t nh = berth_http_guard_preflight_headers(
        berth_http_req_note(req, BERTH_HTTP_NOTE_CORS_ORIGIN), h);
    berth_rest_respond_take(g->e, req, 204, h, nh, NULL, 0);
    return false;
  }
  if (v.cors) {
    size_t ol = 0;
    const char *o = berth_http_header(req, "origin", &ol);
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_CORS_ORIGIN, o, ol);
  }
  return true;
}

static void admin(berth_gateway *g, berth_http_req *req) {
  bool get = method_is(req, "GET"), put = method_is(req, "PUT");
  if (!get && !put) {
    berth_rest_respond_method(g->e, req, "GET, PUT");
    return;
  }
  if (!rest_auth(g, req, put, false))
    return;
  if (get)
    admin_list(g, req);
  else
    admin_replace(g, req);
}

static void rest_handle(berth_http_req *req, void *arg) {
  berth_gateway *g = arg;
  berth_engine *e = g->e;
  if (!rest_guard(g, req))
    return;
  size_t pl = 0;
  const char *path = berth_http_path(req, &pl);
  bool get = method_is(req, "GET");
  if (get && (path_is(path, pl, "/v2/health/live") ||
              path_is(path, pl, "/v2/health/ready"))) {
    if (!rest_auth(g, req, false, true))
      return;
    bool ready = path_is(path, pl, "/v2/health/live") ||
                 (!e->draining && berth_gw_healthy_count(&g->set) > 0);
    static const berth_http_header_kv none[1] = {{"", ""}};
    berth_rest_respond_take(e, req, ready ? 200 : 503, none, 0, NULL, 0);
    return;
  }
  if (path_is(path, pl, "/v2/gateway/replicas")) {
    admin(g, req);
    return;
  }
  if (!rest_auth(g, req, false, false))
    return;
  if (get && path_is(path, pl, "/metrics")) {
    berth_rest_metrics(e, req, NULL);
    return;
  }
  if (e->draining) {
    berth_rest_respond_error(e, req, BERTH_E_SHUTDOWN,
                             "the gateway is shutting down");
    return;
  }
  berth_gw_forward_rest(g, req);
}

/* ---- the gRPC listener ------------------------------------------------------- */

static void grpc_handle(berth_http_req *req, void *arg) {
  berth_gateway *g = arg;
  static const berth_http_header_kv ct[] = {
      {"content-type", "application/json"}};
  if (berth_http_version(req) != 20) {
    static const char m[] = "{\"error\": \"this is the gRPC port: gRPC "
                            "needs HTTP/2 (REST is on the HTTP port)\"}";
    berth_http_respond(req, 505, ct, 1, m, sizeof m - 1);
    return;
  }
  if (!method_is(req, "POST")) {
    static const char m[] = "{\"error\": \"gRPC calls are POST requests\"}";
    berth_http_respond(req, 405, ct, 1, m, sizeof m - 1);
    return;
  }
  berth_http_guard hg = berth_http_guard_of(g->e);
  berth_guard_verdict v;
  berth_http_guard_decide(&hg, req, false, &v);
  if (v.action == BERTH_GUARD_REFUSE) {
    berth_gw_grpc_refuse(req, BERTH_GRPC_PERMISSION_DENIED, v.msg);
    return;
  }
  size_t cl = 0;
  const char *type = berth_http_header(req, "content-type", &cl);
  if (type == NULL || cl < 16 || memcmp(type, "application/grpc", 16) != 0) {
    static const char m[] =
        "{\"error\": \"gRPC needs content-type application/grpc\"}";
    berth_http_respond(req, 415, ct, 1, m, sizeof m - 1);
    return;
  }
  size_t hl = 0, pl = 0;
  const char *authz = berth_http_header(req, "authorization", &hl);
  const char *path = berth_http_path(req, &pl);
  bool health = pl >= 22 && memcmp(path, "/grpc.health.v1.Health/", 22) == 0;
  switch (berth_auth_check(&g->e->auth, authz, hl, false, health)) {
  case BERTH_AUTH_UNAUTHENTICATED:
    berth_gw_grpc_refuse(req, BERTH_GRPC_UNAUTHENTICATED,
                         "missing or unknown bearer token; send metadata "
                         "authorization: Bearer <token>");
    return;
  case BERTH_AUTH_FORBIDDEN:
    berth_gw_grpc_refuse(req, BERTH_GRPC_PERMISSION_DENIED,
                         "this method needs an admin token");
    return;
  default:
    break;
  }
  if (g->e->draining) {
    berth_gw_grpc_refuse(req, BERTH_GRPC_UNAVAILABLE,
                         "the gateway is shutting down");
    return;
  }
  berth_gw_forward_grpc(g, req);
}

/* ---- metrics ------------------------------------------------------------------- */

static int family(berth_buf *out, const char *name, const char *type,
                  const char *help) {
  return berth_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                          type);
}

static int per_replica(berth_buf *out, const berth_gw_set *s, const char *name,
                       int which) {
  int rc = BERTH_OK;
  for (size_t i = 0; rc == BERTH_OK && i < s->n_active; i++) {
    const berth_gw_replica *r = s->active[i];
    uint64_t v = which == 0   ? r->requests
                 : which == 1 ? r->failures
                 : which == 2 ? r->in_flight
                 : which == 3 ? r->ejections
                              : (uint64_t)(r->state == BERTH_GW_HEALTHY);
    rc = berth_buf_printf(out, "%s{replica=\"%s\"} %llu\n", name, r->name,
                          (unsigned long long)v);
  }
  return rc;
}

static int latency(berth_buf *out, const berth_gw_set *s) {
  static const char n[] = "berth_gateway_forward_duration_seconds";
  int rc = family(out, n, "histogram",
                  "Time from sending a request to a replica to the end of "
                  "its answer (an attempt).");
  for (size_t i = 0; rc == BERTH_OK && i < s->n_active; i++) {
    const berth_gw_replica *r = s->active[i];
    uint64_t cum = 0;
    for (size_t b = 0; rc == BERTH_OK && b < BERTH_GW_HIST_BUCKETS; b++) {
      cum += r->latency.buckets[b];
      rc = berth_buf_printf(out, "%s_bucket{replica=\"%s\",le=\"%g\"} %llu\n",
                            n, r->name, berth_gw_hist_bounds[b],
                            (unsigned long long)cum);
    }
    if (rc == BERTH_OK)
      rc = berth_buf_printf(out,
                            "%s_bucket{replica=\"%s\",le=\"+Inf\"} %llu\n"
                            "%s_sum{replica=\"%s\"} %.9g\n"
                            "%s_count{replica=\"%s\"} %llu\n",
                            n, r->name, (unsigned long long)r->latency.count, n,
                            r->name, r->latency.sum, n, r->name,
                            (unsigned long long)r->latency.count);
  }
  return rc;
}

static int collect(void *ctx, berth_buf *out) {
  berth_gateway *g = ctx;
  static const struct {
    const char *name, *type, *help;
  } fam[] = {
      {"berth_gateway_requests_total", "counter",
       "Requests forwarded to each replica (attempts, retries included)."},
      {"berth_gateway_failures_total", "counter",
       "Failed attempts and health checks per replica (connect errors, "
       "resets, 5xx)."},
      {"berth_gateway_in_flight", "gauge",
       "Requests forwarded to each replica and not finished."},
      {"berth_gateway_ejections_total", "counter",
       "Times each replica was ejected as an outlier."},
      {"berth_gateway_replica_healthy", "gauge",
       "1 when the replica takes traffic (healthy), else 0."},
  };
  int rc = BERTH_OK;
  for (int i = 0; rc == BERTH_OK && i < 5; i++) {
    rc = family(out, fam[i].name, fam[i].type, fam[i].help);
    if (rc == BERTH_OK)
      rc = per_replica(out, &g->set, fam[i].name, i);
  }
  if (rc == BERTH_OK)
    rc = latency(out, &g->set);
  if (rc == BERTH_OK)
    rc = family(out, "berth_gateway_retries_total", "counter",
                "Attempts sent to another replica after a failure before "
                "any answer.");
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "berth_gateway_retries_total %llu\n",
                          (unsigned long long)g->retried);
  if (rc == BERTH_OK)
    rc = family(out, "berth_gateway_unavailable_total", "counter",
                "Requests the gateway answered 503 / UNAVAILABLE itself "
                "(reason: no_replica, or failed after every try).");
  if (rc == BERTH_OK)
    rc = berth_buf_printf(
        out,
        "berth_gateway_unavailable_total{reason=\"no_replica\"} %llu\n"
        "berth_gateway_unavailable_total{reason=\"failed\"} %llu\n",
        (unsigned long long)g->no_replica,
        (unsigned long long)g->forward_fails);
  return rc;
}

/* ---- the module ---------------------------------------------------------------- */

static int gw_init(berth_engine *e, berth_errmsg *err) {
  const berth_gateway_config *gc = &e->cfg.gateway;
  if (gc->allow_remote && e->auth.n_admin == 0)
    return berth_errf(err, BERTH_E_CONFIG,
                      "gateway.allow_remote needs admin tokens "
                      "(server.admin_tokens_file or admin_tokens_env): "
                      "without one, anyone who reaches the gateway could "
                      "point it at any host");
  berth_gateway *g = calloc(1, sizeof *g);
  berth_gw_spec *specs =
      calloc(gc->n_replicas ? gc->n_replicas : 1, sizeof *specs);
  if (g == NULL || specs == NULL) {
    free(g);
    free(specs);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  e->gateway = g;
  g->e = e;
  g->policy = (berth_gw_policy){gc->eject_after_failures, gc->eject_for_ms};
  g->retries = gc->retries;
  g->conns_per_replica = gc->connections_per_replica;
  g->allow_remote = gc->allow_remote;
  g->rng = uv_hrtime() | 1;
  for (size_t i = 0; i < gc->n_replicas; i++)
    specs[i] = (berth_gw_spec){gc->replicas[i].name, gc->replicas[i].url};
  berth_errmsg why;
  int rc = berth_gw_set_replace(&g->set, specs, gc->n_replicas,
                                gc->allow_remote, &why);
  free(specs);
  if (rc != BERTH_OK)
    return berth_errf(err, BERTH_E_CONFIG, "gateway.%s", why.msg);
  return berth_engine_add_collector(e, collect, g, err);
}

static int listen_on(berth_gateway *g, uint16_t port, bool grpc,
                     berth_errmsg *err) {
  berth_engine *e = g->e;
  berth_httpd_options opt = {
      .host = e->cfg.host,
      .port = port,
      .max_body_bytes = e->cfg.max_body_bytes,
      .max_head_bytes = e->cfg.max_head_bytes,
      .max_headers = 100,
      .idle_timeout_ms = grpc ? 300000 : 75000,
      .header_timeout_ms = e->cfg.header_timeout_ms,
      .write_path = berth_httpd_write_path(e->cfg.write_path),
      .budget = &e->conns,
      .handler = grpc ? grpc_handle : rest_handle,
      .handler_data = g,
      .on_body = grpc ? berth_gw_grpc_on_body : NULL,
      .tls = grpc ? e->tls_grpc : e->tls_rest,
  };
  berth_httpd *h = NULL;
  int rc = berth_httpd_start(e->loop, &opt, &h, err);
  if (rc != BERTH_OK)
    return rc;
  rc = berth_engine_add_listener(e, h, err);
  if (rc != BERTH_OK) {
    berth_httpd_close(h, NULL, NULL);
    return rc;
  }
  char p[16];
  snprintf(p, sizeof p, "%u", berth_httpd_port(h));
  berth_log_kv(BERTH_LOG_INFO,
               grpc ? "gateway listening (gRPC)" : "gateway listening (REST)",
               "host", e->cfg.host, grpc ? "grpc_port" : "http_port", p, NULL);
  return BERTH_OK;
}

static int gw_start(berth_engine *e, berth_errmsg *err) {
  berth_gateway *g = e->gateway;
  int rc = listen_on(g, e->cfg.http_port, false, err);
  if (rc == BERTH_OK)
    rc = listen_on(g, e->cfg.grpc_port, true, err);
  if (rc != BERTH_OK)
    return rc;
  transports_attach(g);
  if (uv_timer_init(e->loop, &g->health) != 0)
    return berth_errf(err, BERTH_E_INTERNAL, "cannot make the health timer");
  g->timer_open = true;
  g->health.data = g;
  uint32_t every = e->cfg.gateway.health_interval_ms;
  uv_timer_start(&g->health, on_health_timer, 0, every);
  return BERTH_OK;
}

static void gw_close(berth_engine *e) {
  berth_gateway *g = e->gateway;
  if (g == NULL)
    return;
  if (g->timer_open) {
    uv_timer_stop(&g->health);
    uv_close((uv_handle_t *)&g->health, NULL);
    g->timer_open = false;
  }
  for (size_t i = 0; i < g->set.n_active; i++)
    transport_close(g->set.active[i]);
  for (size_t i = 0; i < g->set.n_draining; i++)
    transport_close(g->set.draining[i]);
}

static void gw_free(berth_engine *e) {
  berth_gateway *g = e->gateway;
  if (g == NULL)
    return;
  gw_close(e);
  berth_gw_set_free(&g->set);
  free(g);
  e->gateway = NULL;
}

const berth_module berth_gateway_module = {.name = "gateway",
                                           .init = gw_init,
                                           .start = gw_start,
                                           .close = gw_close,
                                           .free = gw_free};
