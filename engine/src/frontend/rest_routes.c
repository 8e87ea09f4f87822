/* Berth engine: REST routing — one table of every path the REST port
 * serves, with its method, the token it needs and its handler (the manner
 * of gRPC's methods[] in grpc.c). A path that matches no route is 404; one
 * that matches only with another method is 405 with an Allow header built
 * from the table. The dashboard (/ui...) keeps its own token rule
 * (ui.c). */
#include "rest.h"

#include "grpc.h"

#include <stdio.h>
#include <string.h>

#include "log.h"
#include "ui.h"
#include "shm_api.h"
#include "access_log.h"
#include "http_guard.h"
#include "compress.h"

/* Which token a route needs when tokens are configured (auth.h). */
typedef enum rest_auth {
  REST_AUTH_HEALTH = 0, /* none while server.health_open (the default) */
  REST_AUTH_USER,       /* an inference token (or an admin one) */
  REST_AUTH_ADMIN,      /* an admin token */
} rest_auth;

typedef struct rest_route {
  const char *method; /* "GET" or "POST" */
  /* Segments after the leading '/': literals, "{model}", "{version}",
   * "{name}" (one segment each, without ':'), or "{model}:predict". */
  const char *path;
  rest_auth auth;
  berth_rest_handler handle;
} rest_route;

static const rest_route routes[] = {
    {"GET", "", REST_AUTH_USER, berth_rest_root},
    {"GET", "metrics", REST_AUTH_USER, berth_rest_metrics},
    {"GET", "v2", REST_AUTH_USER, berth_rest_server_metadata},
    {"GET", "v2/health/live", REST_AUTH_HEALTH, berth_rest_live},
    {"GET", "v2/health/ready", REST_AUTH_HEALTH, berth_rest_ready},
    {"GET", "v2/models/stats", REST_AUTH_USER, berth_rest_all_stats},
    {"GET", "v2/models/{model}", REST_AUTH_USER, berth_rest_model_metadata},
    {"GET", "v2/models/{model}/versions/{version}", REST_AUTH_USER,
     berth_rest_model_metadata},
    {"GET", "v2/models/{model}/ready", REST_AUTH_USER, berth_rest_model_ready},
    {"GET", "v2/models/{model}/versions/{version}/ready", REST_AUTH_USER,
     berth_rest_model_ready},
    {"POST", "v2/models/{model}/infer", REST_AUTH_USER, berth_rest_infer},
    {"POST", "v2/models/{model}/versions/{version}/infer", REST_AUTH_USER,
     berth_rest_infer},
    {"POST", "v2/models/{model}/generate", REST_AUTH_USER, berth_rest_generate},
    {"POST", "v2/models/{model}/versions/{version}/generate", REST_AUTH_USER,
     berth_rest_generate},
    {"POST", "v2/models/{model}/generate_stream", REST_AUTH_USER,
     berth_rest_generate_stream},
    {"POST", "v2/models/{model}/versions/{version}/generate_stream",
     REST_AUTH_USER, berth_rest_generate_stream},
    {"GET", "v2/models/{model}/config", REST_AUTH_USER, berth_rest_config},
    {"GET", "v2/models/{model}/versions/{version}/config", REST_AUTH_USER,
     berth_rest_config},
    {"GET", "v2/models/{model}/stats", REST_AUTH_USER, berth_rest_stats},
    {"GET", "v2/models/{model}/versions/{version}/stats", REST_AUTH_USER,
     berth_rest_stats},
    {"POST", "v2/repository/index", REST_AUTH_USER,
     berth_rest_repository_index},
    {"POST", "v2/repository/models/{model}/load", REST_AUTH_ADMIN,
     berth_rest_repository_load},
    {"POST", "v2/repository/models/{model}/unload", REST_AUTH_ADMIN,
     berth_rest_repository_unload},
    {"GET", "v2/routes", REST_AUTH_USER, berth_rest_routes_list},
    {"GET", "v2/routes/{name}", REST_AUTH_USER, berth_rest_route_get},
    {"POST", "v2/routes/{name}", REST_AUTH_ADMIN, berth_rest_route_update},
    {"GET", "v2/systemsharedmemory/status", REST_AUTH_USER,
     berth_rest_shm_status},
    {"GET", "v2/systemsharedmemory/region/{name}/status", REST_AUTH_USER,
     berth_rest_shm_status},
    {"POST", "v2/systemsharedmemory/region/{name}/register", REST_AUTH_ADMIN,
     berth_rest_shm_register},
    {"POST", "v2/systemsharedmemory/region/{name}/unregister", REST_AUTH_ADMIN,
     berth_rest_shm_unregister},
    {"POST", "v2/systemsharedmemory/unregister", REST_AUTH_ADMIN,
     berth_rest_shm_unregister},
    {"GET", "v2/cudasharedmemory/status", REST_AUTH_USER,
     berth_rest_cuda_shm_status},
    {"GET", "v2/cudasharedmemory/region/{name}/status", REST_AUTH_USER,
     berth_rest_cuda_shm_status},
    {"POST", "v2/cudasharedmemory/region/{name}/register", REST_AUTH_ADMIN,
     berth_rest_cuda_shm_register},
    {"POST", "v2/cudasharedmemory/region/{name}/unregister", REST_AUTH_ADMIN,
     berth_rest_cuda_shm_unregister},
    {"POST", "v2/cudasharedmemory/unregister", REST_AUTH_ADMIN,
     berth_rest_cuda_shm_unregister},
    {"GET", "v1/models", REST_AUTH_USER, berth_rest_v1_list},
    {"GET", "v1/models/{model}", REST_AUTH_USER, berth_rest_v1_status},
    {"POST", "v1/models/{model}:predict", REST_AUTH_USER,
     berth_rest_v1_predict}, /* OpenAI-compatible (openai.c; GET v1/models[/{model}] above serve
       both: kserve_v1.c) */
    {"POST", "v1/chat/completions", REST_AUTH_USER, berth_rest_openai_chat},
    {"POST", "v1/completions", REST_AUTH_USER, berth_rest_openai_completions},
    {"POST", "v1/embeddings", REST_AUTH_USER, berth_rest_openai_embeddings},
};

#define N_ROUTES (sizeof routes / sizeof routes[0])
#define MAX_SEGMENTS 8

/* Matches one pattern segment (pl bytes) against a path segment; fills the
 * capture it names. */
static bool match_segment(const char *pat, size_t pl, berth_slice seg,
                          berth_rest_match *mt) {
  if (pl == 0 || pat[0] != '{')
    return seg.n == pl && memcmp(seg.p, pat, pl) == 0;
  const char *close = memchr(pat, '}', pl);
  if (close == NULL)
    return false;
  size_t name_len = (size_t)(close - pat) + 1;
  const char *suffix = close + 1; /* ":predict" or "" */
  size_t sl = pl - name_len;
  if (seg.n <= sl || memcmp(seg.p + seg.n - sl, suffix, sl) != 0)
    return false;
  berth_slice v = {seg.p, seg.n - sl};
  if (memchr(v.p, ':', v.n) != NULL)
    return false; /* "x:verb" is no model name */
  if (name_len == 7 && memcmp(pat, "{model}", 7) == 0)
    mt->model = v;
  else if (name_len == 9 && memcmp(pat, "{version}", 9) == 0)
    mt->version = v;
  else
    mt->name = v;
  return true;
}

/* Whether the path segments match route r's path (captures in *mt). */
static bool match_path(const rest_route *r, const berth_slice *seg, int nseg,
                       berth_rest_match *mt) {
  memset(mt, 0, sizeof *mt);
  const char *p = r->path;
  int i = 0;
  while (*p != '\0') {
    const char *end = strchr(p, '/');
    size_t pl = end != NULL ? (size_t)(end - p) : strlen(p);
    if (i == nseg || !match_segment(p, pl, seg[i], mt))
      return false;
    i++;
    p += pl + (end != NULL ? 1 : 0);
  }
  return i == nseg;
}

/* Checks the bearer token (tokens are configured); false: answered 401 or
 * 403. */
static bool authorized(berth_engine *e, berth_http_req *req, rest_auth auth) {
  size_t hl = 0;
  const char *authz = berth_http_header(req, "authorization", &hl);
  switch (berth_auth_check(&e->auth, authz, authz ? hl : 0,
                           auth == REST_AUTH_ADMIN, auth == REST_AUTH_HEALTH)) {
  case BERTH_AUTH_UNAUTHENTICATED:
    berth_rest_respond_error(e, req, BERTH_E_UNAUTHENTICATED,
                             "missing or unknown bearer token; send "
                             "Authorization: Bearer <token>");
    return false;
  case BERTH_AUTH_FORBIDDEN:
    berth_rest_respond_error(e, req, BERTH_E_FORBIDDEN,
                             "this endpoint needs an admin token");
    return false;
  default:
    return true;
  }
}

/* A path no route has: the most helpful 404 for where it points. */
static void not_found(berth_engine *e, berth_http_req *req,
                      const berth_slice *seg, int nseg, const char *path,
                      size_t pl) {
  char msg[400];
  bool v2 = nseg >= 2 && berth_slice_is(seg[0], "v2");
  if (v2 && nseg >= 3 && berth_slice_is(seg[1], "models")) {
    berth_rest_match mt = {.model = seg[2]};
    if (nseg >= 5 && berth_slice_is(seg[3], "versions"))
      mt.version = seg[4];
    struct berth_route_stat *routed;
    if (berth_rest_find_model(e, req, &mt, false, true, &routed) != NULL)
      berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, "no such endpoint");
    return;
  }
  if (v2 && berth_slice_is(seg[1], "repository")) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                             "no such endpoint; "
                             "see /v2/repository/index and "
                             "/v2/repository/models/{name}/load|unload");
    return;
  }
  if (v2 && berth_slice_is(seg[1], "routes")) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                             "no such endpoint; see /v2/routes and "
                             "/v2/routes/{name}");
    return;
  }
  if (nseg >= 2 && berth_slice_is(seg[0], "v1") &&
      berth_slice_is(seg[1], "models")) {
    berth_slice last = nseg == 3 ? seg[2] : (berth_slice){"", 0};
    berth_rest_v1_not_found(e, req, last);
    return;
  }
  snprintf(msg, sizeof msg,
           "no endpoint at '%.*s'; see /v2 and "
           "/v2/models/{name}",
           (int)(pl > 200 ? 200 : pl), path);
  berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
}

/* The Allow value as a string that outlives the answer (the table's
 * methods are GET and POST). */
static const char *allow_static(const char *allow) {
  if (strcmp(allow, "GET") == 0)
    return "GET";
  if (strcmp(allow, "POST") == 0)
    return "POST";
  return "GET, POST";
}

/* ---- the browser-facing checks ------------------------------------------ */

static void answer_preflight(berth_engine *e, berth_http_req *req) {
  size_t ol = 0;
  const char *o = berth_http_header(req, "origin", &ol);
  char origin[BERTH_HTTP_NOTE_MAX + 1];
  size_t n = ol < BERTH_HTTP_NOTE_MAX ? ol : BERTH_HTTP_NOTE_MAX;
  memcpy(origin, o, n);
  origin[n] = '\0';
  berth_http_header_kv h[BERTH_GUARD_PREFLIGHT_HEADERS];
  size_t nh = berth_http_guard_preflight_headers(origin, h);
  berth_rest_respond_take(e, req, 204, h, nh, NULL, 0);
}

/* The guard's REST glue (http_guard.h): false when it answered (403, 415,
 * or a preflight's 204); a listed cross-site origin is noted for the CORS
 * headers of the answer. */
static bool guard_rest(berth_engine *e, berth_http_req *req) {
  berth_http_guard g = berth_http_guard_of(e);
  berth_guard_verdict v;
  berth_http_guard_decide(&g, req, true, &v);
  switch (v.action) {
  case BERTH_GUARD_REFUSE:
    berth_rest_respond_error(e, req, v.status, v.msg);
    return false;
  case BERTH_GUARD_PREFLIGHT:
    answer_preflight(e, req);
    return false;
  default:
    break;
  }
  if (v.cors) {
    size_t ol = 0;
    const char *o = berth_http_header(req, "origin", &ol);
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_CORS_ORIGIN, o, ol);
  }
  return true;
}

/* Notes the client's X-Request-ID as the request id (docs/logging.md). */
static void note_request_id(berth_http_req *req) {
  size_t il = 0;
  const char *rid = berth_http_header(req, "x-request-id", &il);
  char given[BERTH_REQUEST_ID_MAX + 1];
  if (berth_request_id_take(rid, il, given))
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_REQUEST_ID, given,
                            strlen(given));
}

/* A gzip or deflate body (Content-Encoding) becomes the plain one, at most
 * server.max_body_bytes of it (413 beyond: a zip bomb stops there); false
 * after answering (413, 400 for a corrupt stream, 415 for another coding).
 * Only after the token check: strangers never make the server inflate. */
static bool inflate_body(berth_engine *e, berth_http_req *req) {
  size_t hl = 0, n = 0;
  const char *h = berth_http_header(req, "content-encoding", &hl);
  if (h == NULL)
    return true;
  berth_encoding enc;
  berth_errmsg err;
  char *plain = NULL;
  size_t plain_len = 0;
  const char *body = berth_http_body(req, &n);
  int rc = berth_encoding_parse(h, hl, &enc, &err);
  if (rc == BERTH_OK && enc != BERTH_ENC_IDENTITY && n > 0)
    rc = berth_inflate(enc, (const uint8_t *)body, n, e->cfg.max_body_bytes,
                       &plain, &plain_len, &err);
  else if (rc == BERTH_OK)
    return true;
  if (rc != BERTH_OK) {
    berth_rest_respond_error(e, req, rc, err.msg);
    return false;
  }
  berth_http_req_replace_body(req, plain, plain_len);
  return true;
}

void berth_rest_handle(berth_http_req *req, void *arg) {
  berth_engine *e = arg;
  size_t ml, pl;
  const char *method = berth_http_method(req, &ml);
  const char *path = berth_http_path(req, &pl);
  size_t tl = 0;
  const char *type = berth_http_header(req, "content-type", &tl);
  if (berth_http_version(req) == 20 && type != NULL && tl >= 16 &&
      memcmp(type, "application/grpc", 16) == 0) {
    berth_grpc_handle(req, e); /* gRPC on the REST port (gateways) */
    return;
  }
  note_request_id(req);
  /* Host, Origin, Content-Type: before anything else (http_guard.h) */
  if (!guard_rest(e, req))
    return;
  if (berth_ui_route(path, pl)) { /* the dashboard: its own token rule */
    berth_ui_handle(e, req);
    return;
  }
  berth_slice seg[MAX_SEGMENTS];
  int nseg = berth_rest_split_path(path, pl, seg, MAX_SEGMENTS);
  /* The route whose path and method match; else the methods of those whose
   * path matches, and the strictest token among them. */
  const rest_route *hit = NULL;
  berth_rest_match mt, hit_mt;
  rest_auth auth = REST_AUTH_USER;
  char allow[32] = "";
  bool path_known = false;
  /* the method first (cheap): most requests are a POST to infer, and only
   * a few routes take POST */
  for (size_t i = 0; i < N_ROUTES && nseg >= 0; i++) {
    if (strlen(routes[i].method) == ml &&
        memcmp(routes[i].method, method, ml) == 0 &&
        match_path(&routes[i], seg, nseg, &mt)) {
      hit = &routes[i];
      hit_mt = mt;
      auth = hit->auth;
      break;
    }
  }
  /* none: which methods the path takes (405), or none (404) */
  for (size_t i = 0; i < N_ROUTES && hit == NULL && nseg >= 0; i++) {
    if (!match_path(&routes[i], seg, nseg, &mt))
      continue;
    if (!path_known || routes[i].auth > auth)
      auth = routes[i].auth;
    path_known = true;
    if (strstr(allow, routes[i].method) == NULL)
      snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s",
               allow[0] ? ", " : "", routes[i].method);
  }
  if (berth_auth_enabled(&e->auth) && !authorized(e, req, auth))
    return;
  if (hit != NULL && !inflate_body(e, req))
    return;
  if (hit != NULL)
    hit->handle(e, req, &hit_mt);
  else if (path_known)
    berth_rest_respond_method(e, req, allow_static(allow));
  else
    not_found(e, req, seg, nseg, path, pl);
}

void berth_rest_metrics_handle(berth_http_req *req, void *arg) {
  berth_engine *e = arg;
  size_t ml, pl;
  const char *method = berth_http_method(req, &ml);
  const char *path = berth_http_path(req, &pl);
  if (!guard_rest(e, req))
    return;
  if (berth_auth_enabled(&e->auth) && !authorized(e, req, REST_AUTH_USER))
    return;
  if (!(pl == 8 && memcmp(path, "/metrics", 8) == 0)) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                             "this port serves only GET /metrics");
    return;
  }
  if (!(ml == 3 && memcmp(method, "GET", 3) == 0)) {
    berth_rest_respond_method(e, req, "GET");
    return;
  }
  berth_rest_metrics(e, req, NULL);
}

/* ---- the module ------------------------------------------------------------ */

/* Starts one listener with opt, hands it to the engine; *port_out gets its
 * port as text. */
static int listen_on(berth_engine *e, const berth_httpd_options *opt,
                     char port_out[16], berth_errmsg *err) {
  berth_httpd *h = NULL;
  int rc = berth_httpd_start(e->loop, opt, &h, err);
  if (rc != BERTH_OK)
    return rc;
  rc = berth_engine_add_listener(e, h, err);
  if (rc != BERTH_OK) {
    berth_httpd_close(h, NULL, NULL);
    return rc;
  }
  snprintf(port_out, 16, "%u", berth_httpd_port(h));
  return BERTH_OK;
}

static int rest_start(berth_engine *e, berth_errmsg *err) {
  berth_httpd_options opt = {
      .host = e->cfg.host,
      .port = e->cfg.http_port,
      .max_body_bytes = e->cfg.max_body_bytes,
      .max_head_bytes = e->cfg.max_head_bytes,
      .max_headers = 100,
      .idle_timeout_ms = 120000,
      .header_timeout_ms = e->cfg.header_timeout_ms,
      .write_path = berth_httpd_write_path(e->cfg.write_path),
      .budget = &e->conns,
      .handler = berth_rest_handle,
      .handler_data = e,
      .on_body = berth_grpc_on_body, /* gRPC requests only */
      .stream_grpc_only = true,
      .tls = e->tls_rest,
  };
  char port[16], url[300];
  int rc = listen_on(e, &opt, port, err);
  if (rc != BERTH_OK)
    return rc;
  if (e->cfg.socket != NULL) {
    berth_httpd_options so = opt;
    so.socket_path = e->cfg.socket;
    so.tls = NULL;
    char unused[16];
    rc = listen_on(e, &so, unused, err);
    if (rc != BERTH_OK)
      return rc;
    berth_log_kv(BERTH_LOG_INFO,
                 "listening (REST on a Unix socket: HTTP/1.1 and h2c)",
                 "socket", e->cfg.socket, "mode", "0600", NULL);
  }
  bool v6 = strchr(e->cfg.host, ':') != NULL;
  snprintf(url, sizeof url, "%s://%s%s%s:%s", e->tls_rest ? "https" : "http",
           v6 ? "[" : "", e->cfg.host, v6 ? "]" : "", port);
  berth_log_kv(BERTH_LOG_INFO,
               e->tls_rest ? "listening (REST: HTTP/1.1 and HTTP/2 over TLS)"
                           : "listening (REST: HTTP/1.1 and h2c)",
               "url", url, "port", port, "version", BERTH_VERSION, "auth",
               berth_auth_enabled(&e->auth) ? "bearer tokens" : "off", NULL);
  if (e->cfg.metrics_port == 0)
    return BERTH_OK;
  opt.port = e->cfg.metrics_port;
  opt.handler = berth_rest_metrics_handle;
  opt.on_body = NULL;
  opt.max_body_bytes = 64 * 1024; /* a scrape has no body */
  rc = listen_on(e, &opt, port, err);
  if (rc == BERTH_OK)
    berth_log_kv(BERTH_LOG_INFO, "listening (metrics: GET /metrics)", "host",
                 e->cfg.host, "metrics_port", port, NULL);
  return rc;
}

const berth_module berth_rest_module = {.name = "rest", .start = rest_start};
