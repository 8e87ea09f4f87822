/* Berth engine: what the REST handlers share (rest.h) — answering (one
 * berth_status becomes one HTTP status here, every answer echoes the
 * request id and reaches the access log), path segments, the request's
 * notes, and the model version a path names. Nothing here routes or calls
 * a handler: rest_routes.c does. */
#include "rest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access_log.h"
#include "codec_json.h"
#include "compress.h"
#include "http_guard.h"
#include "log.h"
#include "openai.h"
#include "router.h"

#define JSON_CT                                                                \
  { "content-type", "application/json" }

/* ---- answering -------------------------------------------------------- */

int berth_rest_http_status(int status) {
  switch (status) {
  case BERTH_OK:
    return 200;
  case BERTH_E_INVALID:
  case BERTH_E_PARSE:
  case BERTH_E_UNSUPPORTED:
  case BERTH_E_CONFIG:
    return 400;
  case BERTH_E_NOT_FOUND:
    return 404;
  case BERTH_E_UNAUTHENTICATED:
    return 401;
  case BERTH_E_FORBIDDEN:
    return 403;
  case BERTH_E_METHOD:
    return 405;
  case BERTH_E_TOO_LARGE:
    return 413;
  case BERTH_E_MEDIA_TYPE:
    return 415;
  case BERTH_E_OVERLOAD:
    return 429;
  case BERTH_E_UNAVAILABLE:
  case BERTH_E_SHUTDOWN:
    return 503;
  case BERTH_E_TIMEOUT:
    return 504;
  default:
    return 500;
  }
}

/* The request's id: the client's X-Request-ID, else the OIP request's
 * "id" (noted by handle_infer), else a fresh one made here. */
const char *berth_rest_request_id(berth_http_req *req) {
  const char *id = berth_http_req_note(req, BERTH_HTTP_NOTE_REQUEST_ID);
  if (id == NULL) {
    char fresh[BERTH_REQUEST_ID_MAX + 1];
    berth_request_id_new(fresh);
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_REQUEST_ID, fresh,
                            strlen(fresh));
    id = berth_http_req_note(req, BERTH_HTTP_NOTE_REQUEST_ID);
  }
  return id;
}

static void access_log(berth_engine *e, berth_http_req *req, int http_status,
                       size_t body_len) {
  if (!e->cfg.access_log)
    return;
  int v = berth_http_version(req);
  berth_access_record r = {
      .protocol = v == 20   ? "http/2"
                  : v == 10 ? "http/1.0"
                            : "http/1.1",
      .request_id = berth_rest_request_id(req),
      .model = berth_http_req_note(req, BERTH_HTTP_NOTE_MODEL),
      .version = berth_http_req_note(req, BERTH_HTTP_NOTE_VERSION),
      .status = http_status,
      .latency_ms = (double)(uv_hrtime() - berth_http_received_ns(req)) / 1e6,
      .bytes_out = body_len,
      .peer = berth_http_peer(req),
  };
  r.method = berth_http_method(req, &r.method_len);
  r.path = berth_http_path(req, &r.path_len);
  size_t in = 0;
  berth_http_body(req, &in);
  r.bytes_in = in;
  berth_access_log(&r);
}

/* The body compressed as Accept-Encoding asks (gzip, else deflate), or
 * left as it is (not an inference answer, nothing asked, empty, or
 * compression failed: the plain answer is still right). Only inference
 * answers are compressed, as Triton does: tritonclient's clients inflate
 * those alone. Returns the coding used. */
static berth_encoding compress_answer(berth_http_req *req, char **body,
                                      size_t *len) {
  if (berth_http_req_note(req, BERTH_HTTP_NOTE_COMPRESSIBLE) == NULL)
    return BERTH_ENC_IDENTITY;
  size_t al = 0;
  const char *accept = berth_http_header(req, "accept-encoding", &al);
  berth_encoding enc = berth_encoding_accept(accept, al);
  if (enc == BERTH_ENC_IDENTITY || *len == 0)
    return BERTH_ENC_IDENTITY;
  char *z = NULL;
  size_t zl = 0;
  berth_errmsg err;
  if (berth_deflate(enc, (const uint8_t *)*body, *len, &z, &zl, &err) !=
      BERTH_OK)
    return BERTH_ENC_IDENTITY;
  free(*body);
  *body = z;
  *len = zl;
  return enc;
}

void berth_rest_respond_take(berth_engine *e, berth_http_req *req,
                             int http_status, const berth_http_header_kv *h,
                             size_t n, char *body, size_t len) {
  access_log(e, req, http_status, len);
  berth_encoding enc =
      n < 8 ? compress_answer(req, &body, &len) : BERTH_ENC_IDENTITY;
  /* every answer echoes the request id; one to a listed cross-site origin
   * carries the CORS headers (http_guard.h), and with CORS origins
   * configured every other answer says that it depends on Origin (caches) */
  berth_http_header_kv all[10 + BERTH_GUARD_CORS_HEADERS];
  if (n < 8) {
    memcpy(all, h, n * sizeof *h);
    all[n].name = "x-request-id";
    all[n].value = berth_rest_request_id(req);
    const char *cors = berth_http_req_note(req, BERTH_HTTP_NOTE_CORS_ORIGIN);
    size_t k =
        cors != NULL ? berth_http_guard_cors_headers(cors, all + n + 1) : 0;
    if (cors == NULL && e->cfg.n_cors_origins > 0)
      all[n + 1 + k++] = (berth_http_header_kv){"vary", "Origin"};
    if (enc != BERTH_ENC_IDENTITY) {
      all[n + 1 + k++] =
          (berth_http_header_kv){"content-encoding", berth_encoding_name(enc)};
      all[n + 1 + k++] = (berth_http_header_kv){"vary", "Accept-Encoding"};
    }
    berth_http_respond_take(req, http_status, all, n + 1 + k, body, len);
    return;
  }
  berth_http_respond_take(req, http_status, h, n, body, len);
}

int berth_rest_stream_begin(berth_engine *e, berth_http_req *req,
                            int http_status, const char *content_type) {
  access_log(e, req, http_status, 0);
  berth_http_header_kv all[4 + BERTH_GUARD_CORS_HEADERS];
  all[0] = (berth_http_header_kv){"content-type", content_type};
  all[1] = (berth_http_header_kv){"cache-control", "no-cache"};
  all[2] = (berth_http_header_kv){"x-request-id", berth_rest_request_id(req)};
  const char *cors = berth_http_req_note(req, BERTH_HTTP_NOTE_CORS_ORIGIN);
  size_t k = cors != NULL ? berth_http_guard_cors_headers(cors, all + 3) : 0;
  if (cors == NULL && e->cfg.n_cors_origins > 0)
    all[3 + k++] = (berth_http_header_kv){"vary", "Origin"};
  return berth_http_stream_begin(req, http_status, all, 3 + k);
}

void berth_rest_respond_json(berth_engine *e, berth_http_req *req,
                             int http_status, berth_buf *body) {
  berth_http_header_kv h[] = {JSON_CT};
  size_t len = 0;
  char *data = berth_buf_detach(body, &len);
  berth_rest_respond_take(e, req, http_status, h, 1, data, len);
}

void berth_rest_respond_error(berth_engine *e, berth_http_req *req, int status,
                              const char *msg) {
  size_t pl = 0;
  const char *path = berth_http_path(req, &pl);
  if (status != BERTH_E_METHOD && berth_openai_path(path, pl)) {
    berth_openai_respond_error(e, req, status, msg, NULL, NULL);
    return;
  }
  berth_buf b;
  berth_buf_init(&b, 64 * 1024);
  if (berth_json_encode_error(msg, &b) != BERTH_OK) {
    berth_buf_free(&b);
    berth_buf_append(&b, "{\"error\":\"internal error\"}", 26);
  }
  int hs = berth_rest_http_status(status);
  if (status == BERTH_E_OVERLOAD || status == BERTH_E_METHOD ||
      status == BERTH_E_UNAUTHENTICATED) {
    berth_http_header_kv h[2] = {JSON_CT, {"retry-after", "1"}};
    if (status == BERTH_E_UNAUTHENTICATED) {
      h[1].name = "www-authenticate";
      h[1].value = "Bearer realm=\"berth\"";
    }
    if (status == BERTH_E_METHOD) { /* berth_rest_respond_method names
                                       the path's own methods */
      h[1].name = "allow";
      h[1].value = "GET, POST";
    }
    size_t len = 0;
    char *data = berth_buf_detach(&b, &len);
    berth_rest_respond_take(e, req, hs, h, 2, data, len);
    return;
  }
  berth_rest_respond_json(e, req, hs, &b);
}

void berth_rest_respond_method(berth_engine *e, berth_http_req *req,
                               const char *allow) {
  size_t ml = 0;
  const char *method = berth_http_method(req, &ml);
  char msg[200];
  snprintf(msg, sizeof msg,
           "method %.*s not allowed on this endpoint; it "
           "takes %s",
           (int)(ml > 20 ? 20 : ml), method, allow);
  berth_buf b;
  berth_buf_init(&b, 64 * 1024);
  size_t pl = 0;
  const char *path = berth_http_path(req, &pl);
  int rc = berth_openai_path(path, pl)
               ? berth_openai_error_json(&b, BERTH_E_METHOD, msg, NULL, NULL)
               : berth_json_encode_error(msg, &b);
  if (rc != BERTH_OK) {
    berth_buf_free(&b);
    berth_buf_append(&b, "{\"error\":\"internal error\"}", 26);
  }
  berth_http_header_kv h[2] = {JSON_CT, {"allow", allow}};
  size_t len = 0;
  char *data = berth_buf_detach(&b, &len);
  berth_rest_respond_take(e, req, 405, h, 2, data, len);
}

void berth_rest_respond_doc(berth_engine *e, berth_http_req *req,
                            int http_status, json_t *doc) {
  char *text = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL) {
    berth_rest_respond_error(e, req, BERTH_E_NOMEM, "out of memory");
    return;
  }
  berth_http_header_kv h[] = {JSON_CT};
  berth_rest_respond_take(e, req, http_status, h, 1, text, strlen(text));
}

/* ---- paths ------------------------------------------------------------ */

bool berth_slice_is(berth_slice s, const char *lit) {
  return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* Splits "/a/b/c" into at most max segments; returns the count or -1 when
 * there are more (or empty segments). */
int berth_rest_split_path(const char *p, size_t n, berth_slice *seg, int max) {
  int k = 0;
  size_t i = 0;
  if (n == 0 || p[0] != '/')
    return -1;
  i = 1;
  while (i < n) {
    size_t start = i;
    while (i < n && p[i] != '/')
      i++;
    if (i == start || k == max)
      return -1;
    seg[k].p = p + start;
    seg[k].n = i - start;
    k++;
    if (i < n)
      i++; /* skip '/'; a trailing slash makes an empty segment next */
    if (i == n && p[n - 1] == '/')
      return -1;
  }
  return k;
}

bool berth_slice_valid_name(berth_slice s) {
  if (s.n == 0 || s.n > 256)
    return false;
  for (size_t i = 0; i < s.n; i++) {
    char c = s.p[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  }
  return true;
}

void berth_rest_note_oip_id(berth_http_req *req, const char *id) {
  char ok[BERTH_REQUEST_ID_MAX + 1];
  if (id != NULL &&
      berth_http_req_note(req, BERTH_HTTP_NOTE_REQUEST_ID) == NULL &&
      berth_request_id_take(id, strlen(id), ok))
    berth_http_req_set_note(req, BERTH_HTTP_NOTE_REQUEST_ID, ok, strlen(ok));
}

void berth_rest_note_model(berth_http_req *req, const berth_model *m) {
  berth_http_req_set_note(req, BERTH_HTTP_NOTE_MODEL, m->cfg->name,
                          strlen(m->cfg->name));
  berth_http_req_set_note(req, BERTH_HTTP_NOTE_VERSION, m->cfg->version,
                          strlen(m->cfg->version));
}

/* ---- the model a path names ------------------------------------------------ */

berth_model *berth_rest_find_model(berth_engine *e, berth_http_req *req,
                                   const berth_rest_match *mt, bool infer,
                                   bool unloaded_ok,
                                   berth_route_stat **routed) {
  berth_slice name = mt->model;
  const char *ver = mt->version.p;
  size_t ver_len = mt->version.n;
  char msg[700];
  *routed = NULL;
  if (ver != NULL && !berth_slice_valid_name(mt->version)) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                             "invalid model version");
    return NULL;
  }
  /* a route (no version named): its target for inference, else its
   * primary target */
  bool valid = berth_slice_valid_name(name);
  bool exists = valid && berth_model_name_exists(e, name.p, name.n);
  berth_model *m =
      ver == NULL && valid
          ? berth_router_resolve(e, name.p, name.n, infer ? req : NULL, routed)
          : NULL;
  /* a name no model has may be a composite's (a pipeline), version "1" */
  if (m == NULL && valid && !exists)
    m = berth_composite_find(e, name.p, name.n, ver, ver_len);
  if (m == NULL && !exists) {
    snprintf(msg, sizeof msg,
             "Request for unknown model: '%.*s' is not found "
             "(POST /v2/repository/index lists the models served)",
             (int)(name.n > 200 ? 200 : name.n), name.p);
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
    return NULL;
  }
  if (m == NULL)
    m = berth_model_find(e, name.p, name.n, ver, ver_len);
  if (m == NULL) {
    bool numeric = true;
    for (size_t i = 0; i < ver_len; i++)
      numeric = numeric && ver[i] >= '0' && ver[i] <= '9';
    if (!numeric) /* Triton's text for a version that is no number */
      snprintf(msg, sizeof msg,
               "failed to get model version from specified version string "
               "'%.*s' (model '%.*s' has no version of that name; POST "
               "/v2/repository/index lists the versions)",
               (int)ver_len, ver, (int)name.n, name.p);
    else
      snprintf(msg, sizeof msg,
               "Request for unknown model: '%.*s' version %.*s "
               "is not found (POST /v2/repository/index lists the versions)",
               (int)name.n, name.p, (int)ver_len, ver);
    berth_rest_respond_error(
        e, req, numeric ? BERTH_E_NOT_FOUND : BERTH_E_INVALID, msg);
    return NULL;
  }
  berth_rest_note_model(req, m);
  if (m->state == BERTH_MODEL_UNAVAILABLE && !unloaded_ok) {
    snprintf(msg, sizeof msg,
             "model '%s' version '%s' is not loaded (%.300s); "
             "POST /v2/repository/models/%s/load loads it",
             m->cfg->name, m->cfg->version,
             m->load_error[0] ? m->load_error : "it was unloaded",
             m->cfg->name);
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
    return NULL;
  }
  return m;
}
