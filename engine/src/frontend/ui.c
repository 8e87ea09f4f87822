/* Berth engine: the web dashboard — the one-second sampler, the recent
 * errors, GET /ui/api/state and the static files (see ui.h). */
#include "ui.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "codec_json.h"
#include "rest.h"
#include "ui_assets.h"
#include "ui_stats.h"

#define TICK_MS 1000
/* The longest Basic credentials looked at (a token is at most 4096 bytes). */
#define MAX_BASIC_B64 8192
#define MAX_TOKEN 4096

typedef struct ui_track {
  const berth_model *model; /* borrowed: the model this history is of */
  berth_ui_history *h;      /* owned; NULL when it could not be made */
} ui_track;

struct berth_ui {
  berth_engine *engine;
  uv_timer_t timer;
  bool timer_live;       /* initialized and not yet closed */
  uint64_t started_ms;   /* wall clock */
  uint64_t last_tick_ns; /* uv_hrtime of the last sample, 0: none */
  berth_ui_timeline timeline;
  ui_track *tracks; /* owned; tracks[i] follows engine->models[i] */
  size_t n_tracks;
  berth_ui_errors errors;
};

static uint64_t wall_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* ---- sampling ----------------------------------------------------------- */

static void read_model(const berth_model *m, berth_ui_reading *r) {
  const berth_model_metrics *mm = &m->metrics;
  memset(r, 0, sizeof *r);
  for (int p = 0; p < BERTH_PROTO_COUNT; p++)
    for (int o = 0; o < BERTH_OUTCOME_COUNT; o++) {
      r->requests += mm->requests[p][o];
      if (o != BERTH_OUTCOME_SUCCESS)
        r->errors += mm->requests[p][o];
    }
  const berth_histogram *lat = &mm->request_duration;
  r->bounds = lat->bounds;
  r->n_bounds = lat->n_bounds;
  memcpy(r->latency, lat->counts, (lat->n_bounds + 1) * sizeof r->latency[0]);
  r->batches = mm->batch_size.count;
  r->batch_rows = mm->batch_size.sum;
  r->queue_depth = m->q_len;
}

/* Makes sure there is a track for every model version (versions are only
 * ever appended to engine->models). Out of memory: the newest ones wait for
 * the next tick. */
static void grow_tracks(berth_ui *ui) {
  berth_engine *e = ui->engine;
  if (ui->n_tracks >= e->n_models)
    return;
  ui_track *t = realloc(ui->tracks, e->n_models * sizeof *t);
  if (t == NULL)
    return;
  ui->tracks = t;
  for (size_t i = ui->n_tracks; i < e->n_models; i++)
    t[i] = (ui_track){NULL, NULL};
  ui->n_tracks = e->n_models;
}

static void on_tick(uv_timer_t *timer) {
  berth_ui *ui = timer->data;
  berth_engine *e = ui->engine;
  uint64_t now = uv_hrtime();
  double dt = ui->last_tick_ns ? (double)(now - ui->last_tick_ns) / 1e9 : 0;
  ui->last_tick_ns = now;
  grow_tracks(ui);
  size_t slot = berth_ui_timeline_advance(&ui->timeline, wall_ms());
  for (size_t i = 0; i < ui->n_tracks; i++) {
    ui_track *t = &ui->tracks[i];
    const berth_model *m = i < e->n_models ? e->models[i] : NULL;
    if (t->model != m || t->h == NULL) {
      if (t->h == NULL)
        t->h = malloc(sizeof *t->h);
      if (t->h != NULL)
        berth_ui_history_init(t->h);
      t->model = m;
    }
    if (t->h == NULL)
      continue;
    if (m == NULL) {
      berth_ui_history_skip(t->h, slot);
      continue;
    }
    berth_ui_reading r;
    read_model(m, &r);
    berth_ui_history_record(t->h, slot, &r, dt);
  }
}

static void on_answered(void *ctx, berth_job *j, int status, const char *msg,
                        const berth_infer_response *resp, uint64_t took_ns) {
  (void)ctx;
  (void)resp;
  (void)took_ns;
  if (status != BERTH_OK)
    berth_ui_note_error(j->model, j->protocol, status, msg);
}

int berth_ui_init(berth_engine *e, berth_errmsg *err) {
  berth_observer o = {.answered = on_answered};
  int rc = berth_engine_observe(e, &o, err);
  if (rc != BERTH_OK)
    return rc;
  berth_ui *ui = calloc(1, sizeof *ui);
  if (ui == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  ui->engine = e;
  ui->started_ms = wall_ms();
  uv_timer_init(e->loop, &ui->timer);
  ui->timer.data = ui;
  ui->timer_live = true;
  uv_timer_start(&ui->timer, on_tick, 0, TICK_MS);
  uv_unref((uv_handle_t *)&ui->timer); /* never keeps the loop alive */
  e->ui = ui;
  return BERTH_OK;
}

static void timer_closed(uv_handle_t *h) { (void)h; }

void berth_ui_close(berth_engine *e) {
  berth_ui *ui = e->ui;
  if (ui == NULL || !ui->timer_live)
    return;
  ui->timer_live = false;
  uv_timer_stop(&ui->timer);
  uv_close((uv_handle_t *)&ui->timer, timer_closed);
}

void berth_ui_free(berth_engine *e) {
  berth_ui *ui = e->ui;
  if (ui == NULL)
    return;
  for (size_t i = 0; i < ui->n_tracks; i++)
    free(ui->tracks[i].h);
  free(ui->tracks);
  free(ui);
  e->ui = NULL;
}

void berth_ui_note_error(berth_model *m, berth_protocol protocol, int status,
                         const char *msg) {
  if (m == NULL || m->engine == NULL || m->engine->ui == NULL)
    return;
  berth_ui_errors_add(&m->engine->ui->errors, wall_ms(), m->cfg->name,
                      m->cfg->version, protocol, status,
                      msg != NULL ? msg : berth_status_message(status));
}

/* ---- GET /ui/api/state ---------------------------------------------------- */

static const char *state_name(const berth_model *m) {
  switch (m->state) {
  case BERTH_MODEL_READY:
    return m->n_ready > 0 || m->asleep ? "READY" : "RESTARTING";
  case BERTH_MODEL_LOADING:
    return m->has_served ? "RESTARTING" : "LOADING";
  case BERTH_MODEL_FAILED:
    return "FAILED";
  case BERTH_MODEL_UNLOADING:
    return "UNLOADING";
  default:
    return "UNAVAILABLE";
  }
}

static json_t *number_or_null(float v) {
  return isfinite(v) ? json_real((double)v) : json_null();
}

static const char *const series_names[BERTH_UI_SERIES] = {
    "rate", "error_rate", "p50_ms", "p99_ms", "batch", "queue"};

static json_t *series_json(const berth_ui *ui, const berth_ui_history *h) {
  json_t *obj = json_object();
  for (int s = 0; obj != NULL && s < BERTH_UI_SERIES; s++) {
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < ui->timeline.n; i++) {
      size_t slot = berth_ui_timeline_slot(&ui->timeline, i);
      if (json_array_append_new(arr, number_or_null(h ? h->v[s][slot] : NAN)) !=
          0) {
        json_decref(arr);
        arr = NULL;
      }
    }
    if (arr == NULL || json_object_set_new(obj, series_names[s], arr) != 0) {
      json_decref(obj);
      obj = NULL;
    }
  }
  return obj;
}

static json_t *model_json(const berth_ui *ui, const berth_model *m,
                          const berth_ui_history *h) {
  const berth_model_metrics *mm = &m->metrics;
  uint64_t total = 0, ok = 0;
  for (int p = 0; p < BERTH_PROTO_COUNT; p++) {
    ok += mm->requests[p][BERTH_OUTCOME_SUCCESS];
    for (int o = 0; o < BERTH_OUTCOME_COUNT; o++)
      total += mm->requests[p][o];
  }
  const char *reason = "";
  if (m->state == BERTH_MODEL_FAILED)
    reason = m->load_error;
  else if (m->state == BERTH_MODEL_UNAVAILABLE)
    reason = m->load_error[0] ? m->load_error : "unloaded";
  char why[sizeof m->load_error];
  berth_ui_copy_text(why, sizeof why, reason);
  /* the autoscaler's desired count, panic and residency
   * (docs/autoscaling.md) */
  bool resident =
      m->n_ready > 0 || (!m->ops->composite && berth_supervisor_active(m) > 0);
  return json_pack(
      "{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I,"
      " s:I, s:I, s:o, s:I, s:b, s:b}",
      "name", m->cfg->name, "version", m->cfg->version, "state", state_name(m),
      "reason", why, "platform", m->platform ? m->platform : "", "instances",
      (json_int_t)m->instances, "workers_ready", (json_int_t)m->n_ready,
      "max_batch_size", (json_int_t)m->max_batch_size, "queue_depth",
      (json_int_t)m->q_len, "inflight", (json_int_t)m->inflight, "requests",
      (json_int_t)total, "errors", (json_int_t)(total - ok), "worker_restarts",
      (json_int_t)mm->worker_restarts, "series", series_json(ui, h),
      "instances_desired", (json_int_t)m->desired, "panic", m->panic,
      "resident", resident);
}

static json_t *errors_json(const berth_ui *ui) {
  static const char *const protos[BERTH_PROTO_COUNT] = {"rest", "grpc"};
  json_t *arr = json_array();
  for (size_t i = 0; arr != NULL && i < ui->errors.n; i++) {
    const berth_ui_error *x = berth_ui_errors_get(&ui->errors, i);
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:s, s:s, s:s, s:s, s:i, s:s}", "time_ms",
        (json_int_t)x->last_ms, "first_ms", (json_int_t)x->first_ms, "count",
        (json_int_t)x->count, "model", x->model, "version", x->version,
        "protocol",
        (unsigned)x->protocol < BERTH_PROTO_COUNT ? protos[x->protocol] : "",
        "code", berth_status_name(x->status), "http",
        berth_rest_http_status(x->status), "message", x->message);
    if (json_array_append_new(arr, o) != 0) {
      json_decref(arr);
      arr = NULL;
    }
  }
  return arr;
}

static json_t *state_doc(berth_engine *e) {
  berth_ui *ui = e->ui;
  json_t *times = json_array();
  for (size_t i = 0; times != NULL && i < ui->timeline.n; i++) {
    size_t slot = berth_ui_timeline_slot(&ui->timeline, i);
    if (json_array_append_new(
            times, json_integer((json_int_t)ui->timeline.t_ms[slot])) != 0) {
      json_decref(times);
      times = NULL;
    }
  }
  json_t *models = json_array();
  for (size_t i = 0; models != NULL && i < e->n_models; i++) {
    const berth_model *m = e->models[i];
    const berth_ui_history *h = NULL;
    if (i < ui->n_tracks && ui->tracks[i].model == m)
      h = ui->tracks[i].h;
    if (json_array_append_new(models, model_json(ui, m, h)) != 0) {
      json_decref(models);
      models = NULL;
    }
  }
  uint64_t now = wall_ms();
  json_t *server = json_pack(
      "{s:s, s:s, s:I, s:I, s:b, s:b, s:i, s:i, s:I}", "name", "berth",
      "version", BERTH_VERSION, "now_ms", (json_int_t)now, "uptime_s",
      (json_int_t)((now - ui->started_ms) / 1000u), "draining", e->draining,
      "auth", berth_auth_enabled(&e->auth), "sample_interval_s", TICK_MS / 1000,
      "latency_window_s", BERTH_UI_LATENCY_WINDOW, "errors_total",
      (json_int_t)ui->errors.total);
  return json_pack("{s:o, s:o, s:o, s:o}", "server", server, "times_ms", times,
                   "models", models, "errors", errors_json(ui));
}

/* ---- answering -------------------------------------------------------------- */

static void respond_error(berth_engine *e, berth_http_req *req, int status,
                          const char *msg) {
  berth_buf b;
  berth_buf_init(&b, 64 * 1024);
  if (berth_json_encode_error(msg, &b) != BERTH_OK) {
    berth_buf_free(&b);
    berth_buf_append(&b, "{\"error\":\"internal error\"}", 26);
  }
  berth_http_header_kv h[3] = {{"content-type", "application/json"},
                               {"cache-control", "no-store"}};
  size_t n = 2;
  if (status == BERTH_E_UNAUTHENTICATED)
    h[n++] = (berth_http_header_kv){
        "www-authenticate",
        "Basic realm=\"Berth dashboard\", charset=\"UTF-8\""};
  else if (status == BERTH_E_METHOD)
    h[n++] = (berth_http_header_kv){"allow", "GET, HEAD"};
  size_t len = 0;
  char *data = berth_buf_detach(&b, &len);
  berth_rest_respond_take(e, req, berth_rest_http_status(status), h, n, data,
                          len);
}

static void respond_state(berth_engine *e, berth_http_req *req) {
  json_t *doc = state_doc(e);
  char *text = doc != NULL
                   ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(5))
                   : NULL;
  json_decref(doc);
  if (text == NULL) {
    respond_error(e, req, BERTH_E_NOMEM, "out of memory");
    return;
  }
  berth_http_header_kv h[] = {{"content-type", "application/json"},
                              {"cache-control", "no-store"},
                              {"x-content-type-options", "nosniff"}};
  berth_rest_respond_take(e, req, 200, h, 3, text, strlen(text));
}

static bool etag_matches(const char *inm, size_t len, const char *etag) {
  size_t el = strlen(etag);
  if (len == 1 && inm[0] == '*')
    return true;
  for (size_t i = 0; i + el <= len; i++)
    if (memcmp(inm + i, etag, el) == 0)
      return true;
  return false;
}

static void respond_asset(berth_engine *e, berth_http_req *req,
                          const berth_ui_asset *a) {
  static const char csp[] =
      "default-src 'none'; script-src 'self'; style-src 'self'; "
      "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
      "form-action 'none'; frame-ancestors 'none'";
  berth_http_header_kv h[] = {
      {"content-type", a->content_type},  {"etag", a->etag},
      {"cache-control", "no-cache"},      {"x-content-type-options", "nosniff"},
      {"referrer-policy", "no-referrer"}, {"content-security-policy", csp}};
  size_t n = sizeof h / sizeof h[0];
  size_t il = 0;
  const char *inm = berth_http_header(req, "if-none-match", &il);
  if (inm != NULL && etag_matches(inm, il, a->etag)) {
    berth_rest_respond_take(e, req, 304, h, n, NULL, 0);
    return;
  }
  char *body = malloc(a->len ? a->len : 1);
  if (body == NULL) {
    respond_error(e, req, BERTH_E_NOMEM, "out of memory");
    return;
  }
  memcpy(body, a->data, a->len);
  berth_rest_respond_take(e, req, 200, h, n, body, a->len);
}

/* ---- tokens ------------------------------------------------------------------- */

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* Strict standard base64 (padding required); false on anything else or
 * when the result would not fit in cap bytes. */
static bool b64_decode(const char *s, size_t n, unsigned char *out, size_t cap,
                       size_t *out_len) {
  if (n == 0 || n % 4 != 0)
    return false;
  size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
  size_t len = n / 4 * 3 - pad;
  if (len > cap)
    return false;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int v[4];
    for (int k = 0; k < 4; k++) {
      bool last_group = i + 4 == n;
      if (last_group && (size_t)k >= 4 - pad) {
        if (s[i + (size_t)k] != '=')
          return false;
        v[k] = 0;
      } else if ((v[k] = b64_value((unsigned char)s[i + (size_t)k])) < 0) {
        return false;
      }
    }
    uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                 (uint32_t)v[2] << 6 | (uint32_t)v[3];
    unsigned char b[3] = {(unsigned char)(w >> 16), (unsigned char)(w >> 8),
                          (unsigned char)w};
    for (int k = 0; k < 3 && o < len; k++)
      out[o++] = b[k];
  }
  *out_len = len;
  return true;
}

bool berth_ui_basic_password(const char *header, size_t len, char *out,
                             size_t cap, size_t *out_len) {
  if (header == NULL || len < 6 || strncasecmp(header, "Basic ", 6) != 0 ||
      cap == 0)
    return false;
  const char *p = header + 6;
  size_t n = len - 6;
  while (n > 0 && *p == ' ') {
    p++;
    n--;
  }
  while (n > 0 && p[n - 1] == ' ')
    n--;
  if (n > MAX_BASIC_B64)
    return false;
  unsigned char raw[MAX_BASIC_B64 / 4 * 3];
  size_t rl = 0;
  if (!b64_decode(p, n, raw, sizeof raw, &rl))
    return false;
  const unsigned char *colon = memchr(raw, ':', rl);
  if (colon == NULL)
    return false;
  size_t pl = rl - (size_t)(colon + 1 - raw);
  if (pl + 1 > cap || memchr(colon + 1, '\0', pl) != NULL)
    return false;
  memcpy(out, colon + 1, pl);
  out[pl] = '\0';
  *out_len = pl;
  return true;
}

/* With tokens configured: a bearer token, or a token as the password of
 * Basic authentication (what a browser sends after its login prompt). */
static bool authorized(berth_engine *e, berth_http_req *req) {
  if (!berth_auth_enabled(&e->auth))
    return true;
  size_t hl = 0;
  const char *authz = berth_http_header(req, "authorization", &hl);
  char bearer[7 + MAX_TOKEN + 1];
  size_t pl = 0;
  if (authz != NULL &&
      berth_ui_basic_password(authz, hl, bearer + 7, sizeof bearer - 7, &pl)) {
    memcpy(bearer, "Bearer ", 7);
    authz = bearer;
    hl = 7 + pl;
  }
  berth_auth_result r =
      berth_auth_check(&e->auth, authz, authz ? hl : 0, false, false);
  memset(bearer, 0, sizeof bearer);
  if (r == BERTH_AUTH_ALLOW)
    return true;
  respond_error(e, req, BERTH_E_UNAUTHENTICATED,
                "the dashboard needs a token: sign in with any user name and "
                "a token as the password, or send Authorization: Bearer "
                "<token>");
  return false;
}

/* ---- routing ----------------------------------------------------------------- */

bool berth_ui_route(const char *path, size_t len) {
  return (len == 3 && memcmp(path, "/ui", 3) == 0) ||
         (len >= 4 && memcmp(path, "/ui/", 4) == 0);
}

static bool path_is(const char *p, size_t n, const char *lit) {
  return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

void berth_ui_handle(berth_engine *e, berth_http_req *req) {
  size_t ml = 0, pl = 0;
  const char *method = berth_http_method(req, &ml);
  const char *path = berth_http_path(req, &pl);
  if (!authorized(e, req))
    return;
  /* HEAD: the transport sends the head of the GET answer without its body */
  if (!(ml == 3 && memcmp(method, "GET", 3) == 0) &&
      !(ml == 4 && memcmp(method, "HEAD", 4) == 0)) {
    respond_error(e, req, BERTH_E_METHOD,
                  "the dashboard answers GET and HEAD only");
    return;
  }
  if (path_is(path, pl, "/ui/"))
    pl = 3; /* the page, as /ui */
  if (path_is(path, pl, "/ui/api/state")) {
    respond_state(e, req);
    return;
  }
  for (size_t i = 0; i < berth_ui_n_assets; i++)
    if (path_is(path, pl, berth_ui_assets[i].path)) {
      respond_asset(e, req, &berth_ui_assets[i]);
      return;
    }
  char msg[300];
  snprintf(msg, sizeof msg,
           "no dashboard file at '%.*s'; the dashboard is "
           "at /ui",
           (int)(pl > 200 ? 200 : pl), path);
  respond_error(e, req, BERTH_E_NOT_FOUND, msg);
}

const berth_module berth_ui_module = {.name = "ui",
                                      .init = berth_ui_init,
                                      .close = berth_ui_close,
                                      .free = berth_ui_free};
