/* Berth engine: Host, Origin and Content-Type checks against web pages
 * (http_guard.h says the rules and why). */
#include "http_guard.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "rest.h"

/* ---- small text helpers --------------------------------------------------- */

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* a (an bytes) equals b (an bytes), ASCII case-insensitively */
static bool ci_eqn(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

static bool ci_is(const char *a, size_t an, const char *lit) {
  size_t n = strlen(lit);
  return an == n && ci_eqn(a, lit, n);
}

/* Drops optional white space (space, tab) at both ends. */
static void trim(const char **p, size_t *n) {
  while (*n > 0 && (**p == ' ' || **p == '\t')) {
    (*p)++;
    (*n)--;
  }
  while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
    (*n)--;
}

static bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9');
}

/* RFC 9110 token characters (media types). */
static bool is_tchar(char c) {
  return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* ---- Content-Type --------------------------------------------------------- */

bool berth_guard_content_type_ok(const char *v, size_t len) {
  if (v == NULL)
    return true; /* no Content-Type: Triton's HTTP client sends none */
  trim(&v, &len);
  size_t i = 0;
  while (i < len && is_tchar(v[i]))
    i++;
  if (i == 0 || i == len || v[i] != '/')
    return false;
  size_t sub = ++i;
  while (i < len && is_tchar(v[i]))
    i++;
  if (i == sub)
    return false;
  size_t end = i;
  while (i < len && (v[i] == ' ' || v[i] == '\t'))
    i++;
  if (i < len && v[i] != ';') /* parameters (charset=...) may follow */
    return false;
  return ci_is(v, end, "application/json") ||
         ci_is(v, end, "application/octet-stream");
}

/* ---- authorities (Host values, the host:port of an Origin) ----------------- */

typedef struct authority {
  const char *host; /* without brackets, without a trailing dot */
  size_t host_len;
  long port;      /* -1: none given */
  bool bracketed; /* an IPv6 literal */
} authority;

static bool host_char(char c, bool bracketed) {
  if (bracketed)
    return is_alnum(c) || c == ':' || c == '.';
  return is_alnum(c) || c == '-' || c == '.' || c == '_';
}

/* Parses "host[:port]" or "[v6][:port]". false on anything else (paths,
 * user info, two colons without brackets, bytes no DNS name has). */
static bool parse_authority(const char *p, size_t n, authority *a) {
  trim(&p, &n);
  size_t i = 0;
  a->bracketed = n > 0 && p[0] == '[';
  if (a->bracketed) {
    while (i < n && p[i] != ']')
      i++;
    if (i == n)
      return false;
    a->host = p + 1;
    a->host_len = i - 1;
    i++;
  } else {
    while (i < n && p[i] != ':')
      i++;
    a->host = p;
    a->host_len = i;
  }
  if (a->host_len == 0 || a->host_len > 253)
    return false;
  for (size_t k = 0; k < a->host_len; k++)
    if (!host_char(a->host[k], a->bracketed))
      return false;
  if (!a->bracketed && a->host_len > 1 && a->host[a->host_len - 1] == '.')
    a->host_len--; /* "localhost." is "localhost" */
  a->port = -1;
  if (i == n)
    return true;
  if (p[i] != ':')
    return false;
  i++;
  if (i < n)
    a->port = 0;
  for (size_t digits = 0; i < n; i++, digits++) {
    if (p[i] < '0' || p[i] > '9' || digits == 5)
      return false;
    a->port = a->port * 10 + (p[i] - '0');
  }
  return a->port <= 65535;
}

static bool ip_literal(const authority *a) {
  char text[INET6_ADDRSTRLEN + 1];
  unsigned char addr[16];
  if (a->host_len >= sizeof text)
    return false;
  memcpy(text, a->host, a->host_len);
  text[a->host_len] = '\0';
  return inet_pton(a->bracketed ? AF_INET6 : AF_INET, text, addr) == 1;
}

static bool ends_with_ci(const char *s, size_t n, const char *suffix,
                         size_t sn) {
  return n > sn && ci_eqn(s + n - sn, suffix, sn);
}

/* One allowed_hosts entry: "*", "*.example.com" or a name (a port on it is
 * ignored, as on the Host). */
static bool host_entry_matches(const char *entry, const authority *a) {
  size_t n = strlen(entry);
  trim(&entry, &n);
  if (n == 1 && entry[0] == '*')
    return true;
  if (n > 2 && entry[0] == '*' && entry[1] == '.')
    return ends_with_ci(a->host, a->host_len, entry + 1, n - 1);
  authority e;
  return parse_authority(entry, n, &e) && e.bracketed == a->bracketed &&
         e.host_len == a->host_len && ci_eqn(e.host, a->host, a->host_len);
}

bool berth_guard_host_ok(const berth_http_guard *g, const char *host,
                         size_t len) {
  if (host != NULL)
    trim(&host, &len);
  if (host == NULL || len == 0)
    return true; /* HTTP/1.0 without Host: no browser sends that */
  authority a;
  if (!parse_authority(host, len, &a))
    return false;
  if (ip_literal(&a))
    return true;
  if (ci_is(a.host, a.host_len, "localhost") ||
      ends_with_ci(a.host, a.host_len, ".localhost", 10))
    return true;
  for (size_t i = 0; i < g->n_allowed_hosts; i++)
    if (host_entry_matches(g->allowed_hosts[i], &a))
      return true;
  return false;
}

/* ---- Origin ---------------------------------------------------------------- */

typedef struct origin_parts {
  const char *scheme;
  size_t scheme_len;
  authority auth;
  long default_port; /* 80 for http, 443 for https, else -1 */
  long port;         /* the given port, else default_port */
} origin_parts;

/* Parses "scheme://host[:port]" (what browsers send: no path). */
static bool parse_origin(const char *p, size_t n, origin_parts *o) {
  trim(&p, &n);
  size_t i = 0;
  while (i < n && (is_alnum(p[i]) || p[i] == '+' || p[i] == '-' || p[i] == '.'))
    i++;
  if (i == 0 || n - i < 3 || memcmp(p + i, "://", 3) != 0)
    return false;
  o->scheme = p;
  o->scheme_len = i;
  if (!parse_authority(p + i + 3, n - i - 3, &o->auth))
    return false;
  o->default_port = ci_is(p, i, "http") ? 80 : ci_is(p, i, "https") ? 443 : -1;
  o->port = o->auth.port >= 0 ? o->auth.port : o->default_port;
  return true;
}

static bool same_authority(const authority *a, const authority *b) {
  return a->bracketed == b->bracketed && a->host_len == b->host_len &&
         ci_eqn(a->host, b->host, a->host_len);
}

static bool origin_entry_matches(const char *entry, const char *raw,
                                 size_t raw_len, const origin_parts *o,
                                 bool parsed) {
  size_t n = strlen(entry);
  trim(&entry, &n);
  if (n == 1 && entry[0] == '*')
    return true;
  if (n == raw_len && ci_eqn(entry, raw, n))
    return true; /* "null", or spelled as the browser spells it */
  origin_parts e;
  return parsed && parse_origin(entry, n, &e) &&
         e.scheme_len == o->scheme_len &&
         ci_eqn(e.scheme, o->scheme, e.scheme_len) &&
         same_authority(&e.auth, &o->auth) && e.port == o->port;
}

berth_guard_origin berth_guard_origin_check(const berth_http_guard *g,
                                            const char *origin_v, size_t olen,
                                            const char *host, size_t hlen) {
  if (origin_v == NULL)
    return BERTH_GUARD_ORIGIN_ABSENT;
  trim(&origin_v, &olen);
  origin_parts o;
  bool parsed = parse_origin(origin_v, olen, &o);
  authority h;
  /* Same origin: the page was served by this very host and port (the
   * scheme is not compared: a TLS proxy in front changes it). The Host's
   * port defaults to the Origin's scheme's. */
  if (parsed && o.port >= 0 && host != NULL &&
      parse_authority(host, hlen, &h) && same_authority(&o.auth, &h) &&
      (h.port >= 0 ? h.port : o.default_port) == o.port)
    return BERTH_GUARD_ORIGIN_SAME;
  for (size_t i = 0; i < g->n_cors_origins; i++)
    if (origin_entry_matches(g->cors_origins[i], origin_v, olen, &o, parsed))
      return BERTH_GUARD_ORIGIN_LISTED;
  return BERTH_GUARD_ORIGIN_FOREIGN;
}

/* ---- one request ----------------------------------------------------------- */

/* Copies at most 100 bytes of a header value for a message, printable
 * ASCII only. */
static void shown(char *out, size_t cap, const char *v, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n && i < 100 && k + 1 < cap; i++)
    out[k++] = v[i] >= 0x20 && v[i] < 0x7f && v[i] != '\'' ? v[i] : '?';
  if (n > 100 && k + 3 < cap) {
    memcpy(out + k, "...", 3);
    k += 3;
  }
  out[k] = '\0';
}

static bool method_is(const char *m, size_t n, const char *lit) {
  return n == strlen(lit) && memcmp(m, lit, n) == 0;
}

void berth_http_guard_decide(const berth_http_guard *g,
                             const berth_http_req *req, bool check_type,
                             berth_guard_verdict *v) {
  memset(v, 0, sizeof *v);
  char text[110];
  size_t hl = 0, ol = 0, ml = 0, cl = 0;
  const char *host = berth_http_header(req, "host", &hl);
  const char *orig = berth_http_header(req, "origin", &ol);
  const char *method = berth_http_method(req, &ml);
  v->action = BERTH_GUARD_REFUSE;
  v->status = BERTH_E_FORBIDDEN;
  if (!berth_guard_host_ok(g, host, hl)) {
    shown(text, sizeof text, host, hl);
    snprintf(v->msg, sizeof v->msg,
             "Host '%s' is not allowed: this server "
             "answers requests addressed to an IP address, localhost, or a "
             "name listed with --allowed-hosts (server.allowed_hosts); this "
             "stops DNS rebinding",
             text);
    return;
  }
  berth_guard_origin kind = berth_guard_origin_check(g, orig, ol, host, hl);
  if (kind == BERTH_GUARD_ORIGIN_FOREIGN) {
    shown(text, sizeof text, orig, ol);
    snprintf(v->msg, sizeof v->msg,
             "Origin '%s' is not allowed: web pages "
             "of other sites may not call this server; allow that site with "
             "--cors-origins (server.cors_origins)",
             text);
    return;
  }
  v->cors = kind == BERTH_GUARD_ORIGIN_LISTED;
  v->action = BERTH_GUARD_PASS;
  v->status = BERTH_OK;
  if (orig != NULL && method_is(method, ml, "OPTIONS") &&
      berth_http_header(req, "access-control-request-method", &cl) != NULL) {
    v->action = BERTH_GUARD_PREFLIGHT;
    return;
  }
  if (!check_type || method_is(method, ml, "GET") ||
      method_is(method, ml, "HEAD") || method_is(method, ml, "OPTIONS"))
    return;
  const char *ct = berth_http_header(req, "content-type", &cl);
  if (berth_guard_content_type_ok(ct, cl))
    return;
  shown(text, sizeof text, ct, cl);
  v->action = BERTH_GUARD_REFUSE;
  v->status = BERTH_E_MEDIA_TYPE;
  snprintf(v->msg, sizeof v->msg,
           "Content-Type '%s' is not accepted: send " BERTH_GUARD_CONTENT_TYPES
           " (binary tensors), or no Content-Type "
           "(with curl add -H 'Content-Type: application/json': curl -d "
           "sends a form type)",
           text);
}

/* ---- the REST and metrics listeners ----------------------------------------- */

berth_http_guard berth_http_guard_of(const berth_engine *e) {
  return (berth_http_guard){.allowed_hosts = e->cfg.allowed_hosts,
                            .n_allowed_hosts = e->cfg.n_allowed_hosts,
                            .cors_origins = e->cfg.cors_origins,
                            .n_cors_origins = e->cfg.n_cors_origins};
}

#define EXPOSED "inference-header-content-length, x-request-id, traceparent"
#define REQUEST_HEADERS                                                        \
  "authorization, content-type, inference-header-content-length, "             \
  "x-request-id, traceparent, tracestate"

size_t berth_http_guard_cors_headers(const char *origin,
                                     berth_http_header_kv *h) {
  h[0] = (berth_http_header_kv){"access-control-allow-origin", origin};
  h[1] = (berth_http_header_kv){"vary", "Origin"};
  h[2] = (berth_http_header_kv){"access-control-expose-headers", EXPOSED};
  return BERTH_GUARD_CORS_HEADERS;
}

size_t berth_http_guard_preflight_headers(const char *origin,
                                          berth_http_header_kv *h) {
  h[0] = (berth_http_header_kv){"access-control-allow-origin", origin};
  h[1] =
      (berth_http_header_kv){"access-control-allow-methods", "GET, HEAD, POST"};
  h[2] =
      (berth_http_header_kv){"access-control-allow-headers", REQUEST_HEADERS};
  h[3] = (berth_http_header_kv){"access-control-max-age", "600"};
  h[4] = (berth_http_header_kv){"vary", "Origin"};
  return BERTH_GUARD_PREFLIGHT_HEADERS;
}
