/* Berth engine: the engine's lifecycle — models and workers up, the HTTP
 * frontend listening, and the orderly stop on SIGTERM/SIGINT: stop intake,
 * drain in-flight requests (bounded by drain_timeout_s), stop workers
 * (SHUTDOWN, then TERM, then KILL), close every handle, exit 0.
 *
 * Signal handlers only set state the loop acts on (libuv delivers them on
 * the loop thread). */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "grpc.h"
#include "log.h"
#include "router.h"
#include "payload_log.h"
#include "ui.h"

static void finish_drain(berth_engine *e);

/* Triton's names; docs/rest-api.md and docs/grpc.md say what each covers. */
const char *const berth_server_extensions[] = {
    "binary_tensor_data", "model_configuration", "statistics",
    "model_repository",   "parameters",          "schedule_policy",
};
const size_t berth_server_n_extensions =
    sizeof berth_server_extensions / sizeof berth_server_extensions[0];

int berth_engine_init(berth_engine *e, uv_loop_t *loop, berth_config *cfg,
                      berth_errmsg *err) {
  memset(e, 0, sizeof *e);
  e->loop = loop;
  e->cfg = *cfg; /* take ownership */
  memset(cfg, 0, sizeof *cfg);
  e->models = calloc(e->cfg.n_models ? e->cfg.n_models : 1, sizeof *e->models);
  if (e->models == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  berth_sched_engine_init(e);
  for (size_t i = 0; i < e->cfg.n_models; i++) {
    e->models[i] = calloc(1, sizeof *e->models[i]);
    if (e->models[i] == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    e->n_models = i + 1;
    int rc = berth_model_init(e->models[i], e, &e->cfg.models[i], err);
    if (rc != BERTH_OK)
      return rc;
  }
  int rrc = berth_router_init(e, err);
  if (rrc != BERTH_OK)
    return rrc;
  int prc = berth_pipelines_init(e, err);
  if (prc != BERTH_OK)
    return prc;
  uv_timer_init(loop, &e->drain_timer);
  uv_timer_init(loop, &e->stop_timer);
  uv_signal_init(loop, &e->sig_term);
  uv_signal_init(loop, &e->sig_int);
  e->drain_timer.data = e->stop_timer.data = e;
  e->sig_term.data = e->sig_int.data = e;
  int trc = berth_tracer_create(loop, &e->cfg, &e->tracer, err);
  if (trc != BERTH_OK)
    return trc;
  return berth_ui_init(e, err);
}

static void on_signal(uv_signal_t *s, int signum) {
  berth_engine *e = s->data;
  if (e->draining) {
    berth_log_kv(BERTH_LOG_WARNING,
                 "second stop signal: stopping without waiting", NULL);
    finish_drain(e);
    return;
  }
  berth_log_kv(BERTH_LOG_INFO, "stop signal received: draining", "signal",
               signum == SIGTERM ? "SIGTERM" : "SIGINT", NULL);
  berth_engine_begin_drain(e);
}

/* TLS contexts and tokens, from the config. */
static int setup_security(berth_engine *e, berth_errmsg *err) {
  berth_config *c = &e->cfg;
  if ((c->tls_cert == NULL) != (c->tls_key == NULL))
    return berth_errf(err, BERTH_E_CONFIG,
                      "server.tls_cert and server.tls_key go together: give "
                      "both or neither");
  if (c->tls_cert != NULL) {
    int rc = berth_tls_ctx_new(c->tls_cert, c->tls_key, true, false,
                               &e->tls_rest, err);
    if (rc == BERTH_OK)
      rc = berth_tls_ctx_new(c->tls_cert, c->tls_key, true, true,
                             &e->tls_grpc, err);
    if (rc != BERTH_OK)
      return rc;
  }
  berth_auth_sources src = {.tokens_file = c->auth_tokens_file,
                            .tokens_env = c->auth_tokens_env,
                            .admin_tokens_file = c->admin_tokens_file,
                            .admin_tokens_env = c->admin_tokens_env,
                            .health_open = c->health_open};
  return berth_auth_load(&src, &e->auth, err);
}

int berth_engine_start(berth_engine *e, berth_errmsg *err) {
  int src = setup_security(e, err);
  if (src == BERTH_OK)
    src = berth_payload_log_open(e->loop, &e->cfg, &e->payload_log, err);
  if (src != BERTH_OK)
    return src;
  berth_httpd_options opt = {
      .host = e->cfg.host,
      .port = e->cfg.http_port,
      .max_body_bytes = e->cfg.max_body_bytes,
      .max_head_bytes = e->cfg.max_head_bytes,
      .max_headers = 100,
      .idle_timeout_ms = 120000,
      .handler = berth_rest_handle,
      .handler_data = e,
      .tls = e->tls_rest,
  };
  int rc = berth_httpd_start(e->loop, &opt, &e->httpd, err);
  if (rc != BERTH_OK)
    return rc;
  char port[16], url[300];
  snprintf(port, sizeof port, "%u", berth_httpd_port(e->httpd));
  snprintf(url, sizeof url, "%s://%s%s%s:%s", e->tls_rest ? "https" : "http",
           strchr(e->cfg.host, ':') ? "[" : "", e->cfg.host,
           strchr(e->cfg.host, ':') ? "]" : "", port);
  berth_log_kv(BERTH_LOG_INFO,
               e->tls_rest ? "listening (REST: HTTP/1.1 and HTTP/2 over TLS)"
                           : "listening (REST: HTTP/1.1 and h2c)",
               "url", url, "port", port, "version", BERTH_VERSION, "auth",
               berth_auth_enabled(&e->auth) ? "bearer tokens" : "off", NULL);
  rc = berth_grpc_start(e, err);
  if (rc != BERTH_OK)
    return rc;
  if (e->cfg.metrics_port != 0) {
    opt.port = e->cfg.metrics_port;
    opt.handler = berth_rest_metrics_handle;
    opt.max_body_bytes = 64 * 1024; /* a scrape has no body */
    rc = berth_httpd_start(e->loop, &opt, &e->metrics_httpd, err);
    if (rc != BERTH_OK)
      return rc;
    snprintf(port, sizeof port, "%u", berth_httpd_port(e->metrics_httpd));
    berth_log_kv(BERTH_LOG_INFO, "listening (metrics: GET /metrics)", "host",
                 e->cfg.host, "metrics_port", port, NULL);
  }
  for (size_t i = 0; i < e->n_models; i++) {
    rc = berth_supervisor_start(e->models[i], err);
    if (rc != BERTH_OK)
      return rc;
  }
  uv_signal_start(&e->sig_term, on_signal, SIGTERM);
  uv_signal_start(&e->sig_int, on_signal, SIGINT);
  return BERTH_OK;
}

static void on_drain_timeout(uv_timer_t *t) {
  berth_engine *e = t->data;
  char n[32];
  snprintf(n, sizeof n, "%zu", e->inflight);
  berth_log_kv(BERTH_LOG_WARNING,
               "drain_timeout_s passed with requests still in flight; "
               "stopping anyway", "inflight", n, NULL);
  finish_drain(e);
}

void berth_engine_begin_drain(berth_engine *e) {
  if (e->draining)
    return;
  e->draining = true;
  if (e->httpd != NULL)
    berth_httpd_stop_accepting(e->httpd);
  if (e->grpc_httpd != NULL)
    berth_httpd_stop_accepting(e->grpc_httpd);
  berth_grpc_health_drain(e);
  uv_timer_start(&e->drain_timer, on_drain_timeout,
                 (uint64_t)(e->cfg.drain_timeout_s * 1000.0), 0);
  berth_engine_request_done(e);
}

void berth_engine_request_done(berth_engine *e) {
  if (e->draining && !e->stopping && e->inflight == 0)
    finish_drain(e);
}

/* Fails what is still queued (only after a drain timeout) and stops the
 * workers; running batches fail when their worker exits. */
static void finish_drain(berth_engine *e) {
  if (e->stopping)
    return;
  e->draining = true;
  uv_timer_stop(&e->drain_timer);
  for (size_t i = 0; i < e->n_models; i++)
    berth_sched_fail_queued(e->models[i], BERTH_E_SHUTDOWN,
                            "the server stopped before this request ran");
  berth_log_kv(BERTH_LOG_INFO, "stopping workers", NULL);
  berth_supervisor_stop_all(e, 5000);
}

static void handle_closed(uv_handle_t *h) { (void)h; }

static void httpd_closed(void *arg) {
  berth_engine *e = arg;
  e->httpd = NULL;
  uv_close((uv_handle_t *)&e->drain_timer, handle_closed);
  uv_close((uv_handle_t *)&e->stop_timer, handle_closed);
  uv_close((uv_handle_t *)&e->sig_term, handle_closed);
  uv_close((uv_handle_t *)&e->sig_int, handle_closed);
  berth_ui_close(e);
  berth_grpc_health_close(e);
  berth_sched_engine_close(e);
  berth_tracer_close(e->tracer); /* a last export, then its handles */
  berth_payload_log_close(e->payload_log);
  for (size_t i = 0; i < e->n_models; i++) {
    berth_supervisor_free(e->models[i]);
    berth_sched_close(e->models[i]);
  }
  berth_log_kv(BERTH_LOG_INFO, "stopped", NULL);
}

/* The gRPC listener is closed after the metrics one, then the REST one. */
static void grpc_closed(void *arg) {
  berth_engine *e = arg;
  e->grpc_httpd = NULL;
  if (e->httpd != NULL) {
    berth_httpd_close(e->httpd, httpd_closed, e);
  } else {
    httpd_closed(e);
  }
}

static void close_grpc(berth_engine *e) {
  if (e->grpc_httpd != NULL)
    berth_httpd_close(e->grpc_httpd, grpc_closed, e);
  else
    grpc_closed(e);
}

/* The metrics listener (if any) is closed before the gRPC one. */
static void metrics_closed(void *arg) {
  berth_engine *e = arg;
  e->metrics_httpd = NULL;
  close_grpc(e);
}

void berth_engine_workers_stopped(berth_engine *e) {
  if (e->closing)
    return;
  e->closing = true;
  uv_timer_stop(&e->stop_timer);
  if (e->metrics_httpd != NULL)
    berth_httpd_close(e->metrics_httpd, metrics_closed, e);
  else
    close_grpc(e);
}

void berth_engine_free(berth_engine *e) {
  for (size_t i = 0; i < e->n_models; i++) {
    if (e->models[i] != NULL)
      berth_model_free(e->models[i]);
    free(e->models[i]);
  }
  free(e->models);
  berth_router_free(e);
  berth_pipelines_free(e);
  berth_repository_free(e);
  berth_tracer_free(e->tracer);
  berth_payload_log_free(e->payload_log);
  berth_ui_free(e);
  berth_tls_ctx_free(e->tls_rest);
  berth_tls_ctx_free(e->tls_grpc);
  berth_auth_clear(&e->auth);
  berth_config_clear(&e->cfg);
  memset(e, 0, sizeof *e);
}
