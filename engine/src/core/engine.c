/* Berth engine: the engine's lifecycle — models and workers up, the
 * modules above core/ (main.c's list: pipelines, observers, frontends)
 * started in order, and the orderly stop on SIGTERM/SIGINT: stop intake,
 * drain in-flight requests (bounded by drain_timeout_s), stop workers
 * (SHUTDOWN, then TERM, then KILL), close the listeners and every handle,
 * exit 0. The engine names no module: it calls their hooks.
 *
 * Signal handlers only set state the loop acts on (libuv delivers them on
 * the loop thread). */
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "log.h"

static void finish_drain(berth_engine *e);
static void maybe_drained(berth_engine *e);
static void on_load_failed(void *ctx, berth_model *m);
static void workers_stopped(void *arg);

/* Triton's names; docs/rest-api.md and docs/grpc.md say what each covers. */
const char *const berth_server_extensions[] = {
    "binary_tensor_data",   "model_configuration", "statistics",
    "model_repository",     "parameters",          "schedule_policy",
    "system_shared_memory",
};
const size_t berth_server_n_extensions =
    sizeof berth_server_extensions / sizeof berth_server_extensions[0];

int berth_engine_init(berth_engine *e, uv_loop_t *loop, berth_config *cfg,
                      const berth_module *const *modules, size_t n_modules,
                      berth_errmsg *err) {
  memset(e, 0, sizeof *e);
  e->loop = loop;
  e->modules = modules;
  e->n_modules = n_modules;
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
  int rc = berth_repository_start(e, err);
  if (rc != BERTH_OK)
    return rc;
  berth_supervisor_engine_init(e);
  uv_timer_init(loop, &e->drain_timer);
  uv_signal_init(loop, &e->sig_term);
  uv_signal_init(loop, &e->sig_int);
  e->drain_timer.data = e;
  e->sig_term.data = e->sig_int.data = e;
  berth_observer self = {.ctx = e, .load_failed = on_load_failed};
  if (rc == BERTH_OK)
    rc = berth_engine_observe(e, &self, err);
  for (size_t i = 0; i < e->n_modules && rc == BERTH_OK; i++)
    if (e->modules[i]->init != NULL)
      rc = e->modules[i]->init(e, err);
  return rc;
}

int berth_engine_observe(berth_engine *e, const berth_observer *o,
                         berth_errmsg *err) {
  if (e->observers.n == BERTH_MAX_OBSERVERS)
    return berth_errf(err, BERTH_E_INTERNAL, "more than %d observers",
                      BERTH_MAX_OBSERVERS);
  e->observers.list[e->observers.n++] = *o;
  return BERTH_OK;
}

int berth_engine_add_collector(berth_engine *e, berth_collect_cb collect,
                               void *ctx, berth_errmsg *err) {
  if (e->n_collectors == BERTH_MAX_COLLECTORS)
    return berth_errf(err, BERTH_E_INTERNAL, "more than %d metric collectors",
                      BERTH_MAX_COLLECTORS);
  e->collectors[e->n_collectors++] = (berth_collector){collect, ctx};
  return BERTH_OK;
}

int berth_engine_add_listener(berth_engine *e, berth_httpd *h,
                              berth_errmsg *err) {
  if (e->n_listeners == BERTH_MAX_LISTENERS)
    return berth_errf(err, BERTH_E_INTERNAL, "more than %d listeners",
                      BERTH_MAX_LISTENERS);
  e->listeners[e->n_listeners++] = h;
  return BERTH_OK;
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
      rc = berth_tls_ctx_new(c->tls_cert, c->tls_key, true, true, &e->tls_grpc,
                             err);
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
  int rc = setup_security(e, err);
  e->conns.max = e->cfg.max_connections;
  unsigned loops = e->cfg.network_loops; /* 0: "auto" (docs/threads.md) */
  berth_httpd_set_network_loops(loops > 0 ? loops : uv_available_parallelism());
  for (size_t i = 0; i < e->n_modules && rc == BERTH_OK; i++)
    if (e->modules[i]->start != NULL)
      rc = e->modules[i]->start(e, err);
  for (size_t i = 0; i < e->n_models; i++)
    e->models[i]->at_start = true;
  for (size_t i = 0; i < e->n_models && rc == BERTH_OK; i++)
    rc = berth_model_start(e->models[i], err);
  if (rc != BERTH_OK)
    return rc;
  uv_signal_start(&e->sig_term, on_signal, SIGTERM);
  uv_signal_start(&e->sig_int, on_signal, SIGINT);
  return BERTH_OK;
}

/* The engine's own observer (registered at init): a model that failed to
 * load at start stops the server under server.exit_on_error. */
static void on_load_failed(void *ctx, berth_model *m) {
  berth_engine *e = ctx;
  if (!e->cfg.exit_on_error || !m->at_start || m->has_served || e->draining)
    return;
  berth_log_kv(
      BERTH_LOG_ERROR,
      "a model failed to load at start: exiting (server.exit_on_error; "
      "--no-exit-on-error keeps the server up with the model "
      "UNAVAILABLE)",
      "model", m->cfg->name, "version", m->cfg->version, "error", m->load_error,
      NULL);
  e->exit_code = 1;
  berth_engine_begin_drain(e);
}

static void on_drain_timeout(uv_timer_t *t) {
  berth_engine *e = t->data;
  char n[32];
  snprintf(n, sizeof n, "%zu", e->inflight);
  berth_log_kv(BERTH_LOG_WARNING,
               "drain_timeout_s passed with requests still in flight; "
               "stopping anyway",
               "inflight", n, NULL);
  finish_drain(e);
}

void berth_engine_begin_drain(berth_engine *e) {
  if (e->draining)
    return;
  e->draining = true;
  for (size_t i = 0; i < e->n_listeners; i++)
    berth_httpd_stop_accepting(e->listeners[i]);
  for (size_t i = 0; i < e->n_modules; i++)
    if (e->modules[i]->drain != NULL)
      e->modules[i]->drain(e);
  uv_timer_start(&e->drain_timer, on_drain_timeout,
                 (uint64_t)(e->cfg.drain_timeout_s * 1000.0), 0);
  maybe_drained(e);
}

void berth_engine_request_begin(berth_engine *e) { e->inflight++; }

void berth_engine_request_end(berth_engine *e) {
  if (e->inflight > 0)
    e->inflight--;
  maybe_drained(e);
}

static void maybe_drained(berth_engine *e) {
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
  e->stopping = true;
  berth_supervisor_stop_all(e, 5000, workers_stopped, e);
}

static void handle_closed(uv_handle_t *h) { (void)h; }

/* Every listener is closed: the engine's own handles and the modules'. */
static void listeners_closed(berth_engine *e) {
  uv_close((uv_handle_t *)&e->drain_timer, handle_closed);
  uv_close((uv_handle_t *)&e->sig_term, handle_closed);
  uv_close((uv_handle_t *)&e->sig_int, handle_closed);
  berth_sched_engine_close(e);
  berth_supervisor_engine_close(e);
  for (size_t i = e->n_modules; i-- > 0;)
    if (e->modules[i]->close != NULL)
      e->modules[i]->close(e);
  for (size_t i = 0; i < e->n_models; i++) {
    berth_supervisor_free(e->models[i]);
    berth_sched_close(e->models[i]);
  }
  berth_log_kv(BERTH_LOG_INFO, "stopped", NULL);
}

/* Closes the newest listener still open; its close callback comes back
 * here for the next one (reverse order of start). */
static void close_next_listener(void *arg) {
  berth_engine *e = arg;
  if (e->n_listeners == 0) {
    listeners_closed(e);
    return;
  }
  berth_httpd *h = e->listeners[--e->n_listeners];
  berth_httpd_close(h, close_next_listener, e);
}

/* Every worker process is gone (the supervisor's stop_all callback). */
static void workers_stopped(void *arg) {
  berth_engine *e = arg;
  if (e->closing)
    return;
  e->closing = true;
  close_next_listener(e);
}

void berth_engine_free(berth_engine *e) {
  for (size_t i = 0; i < e->n_models; i++) {
    if (e->models[i] != NULL)
      berth_model_free(e->models[i]);
    free(e->models[i]);
  }
  free(e->models);
  free(e->composites);
  berth_repository_free(e);
  for (size_t i = e->n_modules; i-- > 0;)
    if (e->modules[i]->free != NULL)
      e->modules[i]->free(e);
  berth_tls_ctx_free(e->tls_rest);
  berth_tls_ctx_free(e->tls_grpc);
  berth_auth_clear(&e->auth);
  berth_config_clear(&e->cfg);
  memset(e, 0, sizeof *e);
}
