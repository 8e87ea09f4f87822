/* berthd: arguments -> config -> engine -> loop. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "autoscale.h"
#include "buf.h"
#include "config.h"
#include "engine.h"
#include "gateway.h"
#include "grpc.h"
#include "log.h"
#include "malloc_tune.h"
#include "metrics.h"
#include "native.h"
#include "payload_log.h"
#include "pipeline.h"
#include "rest.h"
#include "router.h"
#include "trace.h"
#include "ui.h"
#include "shm_api.h"

/* The parts of the engine that register with it (the traffic routes, then
 * those above core/), in the order they are set up and
 * started (and closed and freed in reverse). Observers register in this
 * order, so a job's answer reaches metrics, then tracing, the payload log
 * and the dashboard; the frontends start listening last. */
static const berth_module *const modules[] = {
    &berth_router_module, &berth_pipeline_module,    &berth_metrics_module,
    &berth_trace_module,  &berth_payload_log_module, &berth_ui_module,
    &berth_shm_module,    &berth_rest_module,        &berth_grpc_module,
    &berth_native_module, &berth_autoscale_module,
};

/* Gateway mode (config gateway:, docs/gateway.md): no models, no model
 * frontends; the gateway owns the REST and gRPC ports and forwards. */
static const berth_module *const gateway_modules[] = {
    &berth_metrics_module,
    &berth_gateway_module,
};

#define MAX_CONFIG_BYTES (16u << 20)

static void usage(FILE *to) {
  fprintf(
      to,
      "usage: berthd --config FILE | --config-fd N\n"
      "       berthd --version\n"
      "       berthd --print-limits\n\n"
      "Runs the Berth inference engine with the given configuration\n"
      "(YAML or JSON; schema in docs/configuration.md). Most users start\n"
      "it through `berth serve`, which builds the configuration.\n"
      "--print-limits prints the configuration's keys and bounds as JSON.\n");
}

static int read_all(int fd, berth_buf *out, berth_errmsg *err) {
  for (;;) {
    char *dst = berth_buf_reserve(out, 65536);
    if (dst == NULL)
      return berth_errf(err, BERTH_E_TOO_LARGE,
                        "the configuration is larger than %u bytes",
                        MAX_CONFIG_BYTES);
    ssize_t n = read(fd, dst, 65536);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return berth_errf(err, BERTH_E_IO, "cannot read the configuration: %s",
                        strerror(errno));
    if (n == 0)
      return BERTH_OK;
    berth_buf_commit(out, (size_t)n);
  }
}

static int load_config(int argc, char **argv, berth_config *cfg,
                       berth_errmsg *err) {
  int fd = -1;
  bool close_fd = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      fd = open(argv[++i], O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        return berth_errf(err, BERTH_E_IO, "cannot open %s: %s", argv[i],
                          strerror(errno));
      close_fd = true;
    } else if (strcmp(argv[i], "--config-fd") == 0 && i + 1 < argc) {
      char *end;
      long v = strtol(argv[++i], &end, 10);
      if (*end != '\0' || v < 0 || v > 65535)
        return berth_errf(err, BERTH_E_INVALID, "--config-fd needs a number");
      fd = (int)v;
      close_fd = true;
      fcntl(fd, F_SETFD, FD_CLOEXEC);
    } else {
      return berth_errf(err, BERTH_E_INVALID, "unknown argument '%s'", argv[i]);
    }
  }
  if (fd < 0)
    return berth_errf(err, BERTH_E_INVALID, "no configuration given");
  berth_buf text;
  berth_buf_init(&text, MAX_CONFIG_BYTES);
  int rc = read_all(fd, &text, err);
  if (close_fd)
    close(fd);
  if (rc == BERTH_OK)
    rc = berth_config_parse(text.data ? text.data : "", text.len, cfg, err);
  berth_buf_free(&text);
  return rc;
}

/* berthd --print-limits: the schema's keys and bounds, for `berth serve`. */
static int print_limits(void) {
  json_t *schema = berth_config_schema_json();
  char *text = schema != NULL ? json_dumps(schema, JSON_INDENT(2)) : NULL;
  json_decref(schema);
  if (text == NULL) {
    fprintf(stderr, "berthd: out of memory\n");
    return 1;
  }
  int rc = puts(text) == EOF || fflush(stdout) != 0 ? 1 : 0;
  free(text);
  return rc;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--print-limits") == 0)
    return print_limits();
  if (argc == 2 && strcmp(argv[1], "--version") == 0) {
    printf("berthd %s\n", BERTH_VERSION);
    return 0;
  }
  if (argc == 2 &&
      (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 0;
  }
  signal(SIGPIPE, SIG_IGN);
  berth_malloc_tune();
  berth_config cfg;
  berth_errmsg err = {{0}};
  memset(&cfg, 0, sizeof cfg);
  if (load_config(argc, argv, &cfg, &err) != BERTH_OK) {
    fprintf(stderr, "berthd: %s\n", err.msg);
    usage(stderr);
    return 2;
  }
  berth_log_setup(cfg.log_level, berth_log_format_is_json(cfg.log_format));

  uv_loop_t *loop = uv_default_loop();
  berth_engine *e = calloc(1, sizeof *e);
  if (e == NULL) {
    fprintf(stderr, "berthd: out of memory\n");
    berth_config_clear(&cfg);
    return 1;
  }
  bool gateway = berth_config_gateway_on(&cfg);
  int rc = gateway
               ? berth_engine_init(
                     e, loop, &cfg, gateway_modules,
                     sizeof gateway_modules / sizeof gateway_modules[0], &err)
               : berth_engine_init(e, loop, &cfg, modules,
                                   sizeof modules / sizeof modules[0], &err);
  if (rc == BERTH_OK)
    rc = berth_engine_start(e, &err);
  if (rc != BERTH_OK) {
    berth_log_kv(BERTH_LOG_ERROR, "cannot start", "error", err.msg, NULL);
    berth_engine_begin_drain(e);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  int code = rc == BERTH_OK ? e->exit_code : 1;
  berth_engine_free(e);
  free(e);
  uv_loop_close(loop);
  return code;
}
