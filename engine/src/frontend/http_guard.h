/* Berth engine: the browser-facing defences of every listener
 * (docs/security.md, "Web pages in your browser").
 *
 * A web page open in the operator's browser can send requests to a server
 * on 127.0.0.1 (cross-site request forgery) and, by pointing its own name
 * at 127.0.0.1, even read the answers (DNS rebinding). Three checks stop
 * it, before any routing:
 *
 *   Host     the Host header (HTTP/2: :authority) must name an IP address
 *            (literal), localhost (or a name under .localhost), or a name
 *            the operator listed in server.allowed_hosts ("*": any name;
 *            "*.example.com": its subdomains). The port is ignored. A
 *            rebinding page's requests carry the page's own name, never an
 *            IP literal, so IP literals are safe to allow: that keeps
 *            Kubernetes probes (Host = the pod's IP) and clients that
 *            connect by address working. A request with no Host (HTTP/1.0)
 *            is no browser's and passes.
 *   Origin   a request that carries an Origin must come from the server's
 *            own origin (Origin's host and port equal the Host's) or from
 *            one listed in server.cors_origins ("*": any). "null" (a
 *            sandboxed frame, a file) is foreign unless listed.
 *   Content-Type  a request with a body-bearing method (anything but GET,
 *            HEAD and OPTIONS) must name application/json or
 *            application/octet-stream (the binary tensor extension),
 *            parameters allowed, or no Content-Type at all (Triton's
 *            Python HTTP client sends none); the three types an HTML form
 *            or a "simple" cross-site fetch can send are refused (415).
 *
 * A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)
 * from an allowed origin is answered 204 with the CORS headers; from any
 * other origin 403.
 *
 * The pure functions below take header values as pointer and length (not
 * NUL-terminated) and allocate nothing; berth_http_guard_decide reads one
 * request. The REST glue (rest_routes.c) answers in the OIP error
 * shape; gRPC maps the verdict to PERMISSION_DENIED itself (grpc.c).
 *
 * Ownership: berth_http_guard borrows its lists (from the engine's config,
 * which outlives every request).
 */
#ifndef BERTH_HTTP_GUARD_H
#define BERTH_HTTP_GUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "httpd.h"

typedef struct berth_engine berth_engine;

typedef struct berth_http_guard {
  char *const *allowed_hosts; /* borrowed; n_allowed_hosts names */
  size_t n_allowed_hosts;
  char *const *cors_origins; /* borrowed; n_cors_origins origins */
  size_t n_cors_origins;
} berth_http_guard;

/* The allowed body types, as the 415 answer names them. */
#define BERTH_GUARD_CONTENT_TYPES "application/json or application/octet-stream"

/* true when a Content-Type value (v, len bytes; v NULL = no header) is
 * allowed on a request that changes or computes something. */
bool berth_guard_content_type_ok(const char *v, size_t len);

/* true when a Host value (len bytes; NULL = absent) names this server by
 * the rules above. */
bool berth_guard_host_ok(const berth_http_guard *g, const char *host,
                         size_t len);

typedef enum berth_guard_origin {
  BERTH_GUARD_ORIGIN_ABSENT = 0, /* no Origin header */
  BERTH_GUARD_ORIGIN_SAME,       /* the server's own origin */
  BERTH_GUARD_ORIGIN_LISTED,     /* another origin, in cors_origins */
  BERTH_GUARD_ORIGIN_FOREIGN,    /* anything else: refused */
} berth_guard_origin;

/* Classifies an Origin value (NULL = absent) against the request's Host
 * value (NULL = absent; only compared, the Host check is separate). */
berth_guard_origin berth_guard_origin_check(const berth_http_guard *g,
                                            const char *origin, size_t olen,
                                            const char *host, size_t hlen);

typedef enum berth_guard_action {
  BERTH_GUARD_PASS = 0,  /* go on; cors tells whether to add CORS headers */
  BERTH_GUARD_PREFLIGHT, /* answer 204 with the preflight headers */
  BERTH_GUARD_REFUSE,    /* answer status (FORBIDDEN or MEDIA_TYPE), msg */
} berth_guard_action;

typedef struct berth_guard_verdict {
  berth_guard_action action;
  int status;    /* REFUSE: BERTH_E_FORBIDDEN or BERTH_E_MEDIA_TYPE */
  bool cors;     /* the Origin is a listed cross-site one: echo it */
  char msg[400]; /* REFUSE: what was refused and the flag that allows it */
} berth_guard_verdict;

/* Decides on one request: Host, then Origin, then preflight, then (when
 * check_type) the Content-Type of body-bearing methods. */
void berth_http_guard_decide(const berth_http_guard *g,
                             const berth_http_req *req, bool check_type,
                             berth_guard_verdict *v);

/* The guard of the engine's config. */
berth_http_guard berth_http_guard_of(const berth_engine *e);

/* The headers of a preflight's 204 for an allowed origin (h: room for
 * BERTH_GUARD_PREFLIGHT_HEADERS; origin borrowed, NUL-terminated). */
#define BERTH_GUARD_PREFLIGHT_HEADERS 5
size_t berth_http_guard_preflight_headers(const char *origin,
                                          berth_http_header_kv *h);

/* The headers every answer to a listed cross-site origin carries, for
 * berth_rest_respond_take: fills up to BERTH_GUARD_CORS_HEADERS entries of
 * h with origin (NUL-terminated, the request's note) and returns how many. */
#define BERTH_GUARD_CORS_HEADERS 3
size_t berth_http_guard_cors_headers(const char *origin,
                                     berth_http_header_kv *h);

#endif
