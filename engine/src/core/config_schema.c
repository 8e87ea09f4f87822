/* Berth engine: the engine document's schema as data — one table of fields
 * per mapping (top level, server, log, workers, tracing, a model entry, a
 * tensor spec, a route and its targets), each field with its key, kind,
 * bounds, default and where the value lands. The walker that applies them
 * is config.c; the schema's prose is docs/configuration.md.
 */
#include <stddef.h>

#include <jansson.h>

#include "config_schema.h"

#define BERTH_CF_OFF(type, member) offsetof(type, member)
#define BERTH_CF_SIZE(type, member) sizeof(((type *)0)->member)
#define BERTH_CF_NONE .slot = BERTH_CONFIG_NO_SLOT
#define BERTH_CF_TABLE(a)                                                      \
  { (a), sizeof(a) / sizeof((a)[0]) }

static const char *const berth_config_levels[] = {"debug", "info", "warning",
                                                  "error", NULL};
/* Triton's poll mode is not built yet (docs/security.md). */
static const char *const berth_config_control_modes[] = {"none", "explicit",
                                                         NULL};
/* A UINT with choices takes choices[0] for 0 (server.network_loops). */
static const char *const berth_config_auto_word[] = {"auto", NULL};
static const char *const berth_config_formats[] = {"json", "text", "auto",
                                                   NULL};
/* How the HTTP server writes responses (docs/http.md). */
static const char *const berth_config_write_paths[] = {"direct", "writev",
                                                       "uring", "auto", NULL};
/* Where a model runs (docs/native.md). */
static const char *const berth_config_backends[] = {"python", "native", NULL};

/* Protocol names by berth_dtype value; kept here so that the config does
 * not depend on tensor.c's table. */
const char *const berth_config_dtypes[BERTH_DT_COUNT] = {
    [BERTH_DT_BOOL] = "BOOL",     [BERTH_DT_UINT8] = "UINT8",
    [BERTH_DT_UINT16] = "UINT16", [BERTH_DT_UINT32] = "UINT32",
    [BERTH_DT_UINT64] = "UINT64", [BERTH_DT_INT8] = "INT8",
    [BERTH_DT_INT16] = "INT16",   [BERTH_DT_INT32] = "INT32",
    [BERTH_DT_INT64] = "INT64",   [BERTH_DT_FP16] = "FP16",
    [BERTH_DT_FP32] = "FP32",     [BERTH_DT_FP64] = "FP64",
    [BERTH_DT_BYTES] = "BYTES",   [BERTH_DT_BF16] = "BF16",
};

#define BERTH_CF_C berth_config
static const berth_config_field berth_config_server_fields[] = {
    {.key = "host",
     .kind = BERTH_CF_STRING,
     .def = "\"127.0.0.1\"",
     .slot = BERTH_CF_OFF(BERTH_CF_C, host)},
    {.key = "http_port",
     .kind = BERTH_CF_UINT,
     .def = "8080",
     .slot = BERTH_CF_OFF(BERTH_CF_C, http_port),
     .size = BERTH_CF_SIZE(BERTH_CF_C, http_port),
     .imin = 0,
     .imax = 65535},
    {.key = "grpc_port",
     .kind = BERTH_CF_UINT,
     .def = "8081",
     .slot = BERTH_CF_OFF(BERTH_CF_C, grpc_port),
     .size = BERTH_CF_SIZE(BERTH_CF_C, grpc_port),
     .imin = 0,
     .imax = 65535},
    {.key = "metrics_port",
     .kind = BERTH_CF_UINT,
     .def = "0",
     .slot = BERTH_CF_OFF(BERTH_CF_C, metrics_port),
     .size = BERTH_CF_SIZE(BERTH_CF_C, metrics_port),
     .imin = 0,
     .imax = 65535},
    {.key = "grpc_max_message_bytes",
     .kind = BERTH_CF_UINT,
     .def = "0",
     .slot = BERTH_CF_OFF(BERTH_CF_C, grpc_max_message_bytes),
     .size = BERTH_CF_SIZE(BERTH_CF_C, grpc_max_message_bytes),
     .imin = 0,
     .imax = INT64_C(4294967295)},
    {.key = "max_body_bytes",
     .kind = BERTH_CF_UINT,
     .def = "67108864",
     .slot = BERTH_CF_OFF(BERTH_CF_C, max_body_bytes),
     .size = BERTH_CF_SIZE(BERTH_CF_C, max_body_bytes),
     .imin = 1,
     .imax = INT64_C(17179869184)},
    {.key = "shm_max_regions",
     .kind = BERTH_CF_UINT,
     .def = "64",
     .slot = BERTH_CF_OFF(BERTH_CF_C, shm_max_regions),
     .size = BERTH_CF_SIZE(BERTH_CF_C, shm_max_regions),
     .imin = 0,
     .imax = 4096},
    {.key = "shm_max_bytes",
     .kind = BERTH_CF_UINT,
     .def = "1073741824",
     .slot = BERTH_CF_OFF(BERTH_CF_C, shm_max_bytes),
     .size = BERTH_CF_SIZE(BERTH_CF_C, shm_max_bytes),
     .imin = 0,
     .imax = INT64_C(1099511627776)},
    {.key = "max_head_bytes",
     .kind = BERTH_CF_UINT,
     .def = "16384",
     .slot = BERTH_CF_OFF(BERTH_CF_C, max_head_bytes),
     .size = BERTH_CF_SIZE(BERTH_CF_C, max_head_bytes),
     .imin = 1024,
     .imax = 1048576},
    {.key = "header_timeout_ms",
     .kind = BERTH_CF_UINT,
     .def = "10000",
     .slot = BERTH_CF_OFF(BERTH_CF_C, header_timeout_ms),
     .size = BERTH_CF_SIZE(BERTH_CF_C, header_timeout_ms),
     .imin = 0,
     .imax = 3600000},
    {.key = "max_connections",
     .kind = BERTH_CF_UINT,
     .def = "1024",
     .slot = BERTH_CF_OFF(BERTH_CF_C, max_connections),
     .size = BERTH_CF_SIZE(BERTH_CF_C, max_connections),
     .imin = 1,
     .imax = 1000000},
    {.key = "network_loops", /* docs/threads.md; "auto" stores 0 */
     .kind = BERTH_CF_UINT,
     .def = "1",
     .slot = BERTH_CF_OFF(BERTH_CF_C, network_loops),
     .size = BERTH_CF_SIZE(BERTH_CF_C, network_loops),
     .imin = 1,
     .imax = 256,
     .choices = berth_config_auto_word},
    {.key = "socket",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, socket)},
    {.key = "drain_timeout_s",
     .kind = BERTH_CF_DOUBLE,
     .def = "30",
     .slot = BERTH_CF_OFF(BERTH_CF_C, drain_timeout_s),
     .dmin = 0,
     .dmax = 3600},
    {.key = "tls_cert",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, tls_cert)},
    {.key = "tls_key",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, tls_key)},
    {.key = "auth_tokens_file",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, auth_tokens_file)},
    {.key = "auth_tokens_env",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, auth_tokens_env)},
    {.key = "admin_tokens_file",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, admin_tokens_file)},
    {.key = "admin_tokens_env",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, admin_tokens_env)},
    {.key = "health_open",
     .kind = BERTH_CF_BOOL,
     .def = "true",
     .slot = BERTH_CF_OFF(BERTH_CF_C, health_open)},
    {.key = "exit_on_error",
     .kind = BERTH_CF_BOOL,
     .def = "true",
     .slot = BERTH_CF_OFF(BERTH_CF_C, exit_on_error)},
    {.key = "model_control_mode",
     .kind = BERTH_CF_ENUM,
     .def = "\"none\"",
     .slot = BERTH_CF_OFF(BERTH_CF_C, model_control_mode),
     .choices = berth_config_control_modes},
    {.key = "repositories",
     .kind = BERTH_CF_ARGV,
     .def = "[]",
     .slot = BERTH_CF_OFF(BERTH_CF_C, repositories),
     .count_slot = BERTH_CF_OFF(BERTH_CF_C, n_repositories),
     .imin = 0,
     .imax = 256},
    {.key = "allowed_hosts",
     .kind = BERTH_CF_ARGV,
     .def = "[]",
     .slot = BERTH_CF_OFF(BERTH_CF_C, allowed_hosts),
     .count_slot = BERTH_CF_OFF(BERTH_CF_C, n_allowed_hosts),
     .imin = 0,
     .imax = 256},
    {.key = "cors_origins",
     .kind = BERTH_CF_ARGV,
     .def = "[]",
     .slot = BERTH_CF_OFF(BERTH_CF_C, cors_origins),
     .count_slot = BERTH_CF_OFF(BERTH_CF_C, n_cors_origins),
     .imin = 0,
     .imax = 256},
    {.key = "write_path",
     .kind = BERTH_CF_ENUM,
     .def = "\"direct\"",
     .slot = BERTH_CF_OFF(BERTH_CF_C, write_path),
     .choices = berth_config_write_paths},
};

static const berth_config_field berth_config_log_fields[] = {
    {.key = "level",
     .kind = BERTH_CF_ENUM,
     .def = "\"info\"",
     .slot = BERTH_CF_OFF(BERTH_CF_C, log_level),
     .choices = berth_config_levels},
    {.key = "format",
     .kind = BERTH_CF_ENUM,
     .def = "\"json\"",
     .slot = BERTH_CF_OFF(BERTH_CF_C, log_format),
     .choices = berth_config_formats},
    {.key = "access_log",
     .kind = BERTH_CF_BOOL,
     .def = "false",
     .slot = BERTH_CF_OFF(BERTH_CF_C, access_log)},
    {.key = "payload_log_path",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, payload_log_path)},
    {.key = "payload_log_max_bytes",
     .kind = BERTH_CF_UINT,
     .def = "104857600",
     .slot = BERTH_CF_OFF(BERTH_CF_C, payload_log_max_bytes),
     .size = BERTH_CF_SIZE(BERTH_CF_C, payload_log_max_bytes),
     .imin = 1024,
     .imax = INT64_C(1099511627776)},
    {.key = "payload_log_backups",
     .kind = BERTH_CF_UINT,
     .def = "5",
     .slot = BERTH_CF_OFF(BERTH_CF_C, payload_log_backups),
     .size = BERTH_CF_SIZE(BERTH_CF_C, payload_log_backups),
     .imin = 0,
     .imax = 1000},
    {.key = "payload_log_queue_bytes",
     .kind = BERTH_CF_UINT,
     .def = "16777216",
     .slot = BERTH_CF_OFF(BERTH_CF_C, payload_log_queue_bytes),
     .size = BERTH_CF_SIZE(BERTH_CF_C, payload_log_queue_bytes),
     .imin = 1024,
     .imax = INT64_C(17179869184)},
};

#define BERTH_CF_M berth_model_config
static const berth_config_field berth_config_payload_fields[] = {
    {.key = "rate",
     .kind = BERTH_CF_DOUBLE,
     .def = "0",
     .slot = BERTH_CF_OFF(BERTH_CF_M, payload_log_rate),
     .dmin = 0,
     .dmax = 1},
};
#undef BERTH_CF_M
static const berth_config_table berth_config_payload = {
    berth_config_payload_fields, 1};

static const berth_config_field berth_config_workers_fields[] = {
    {.key = "command",
     .kind = BERTH_CF_ARGV,
     .def = "[\"python3\", \"-m\", \"berth.worker\"]",
     .slot = BERTH_CF_OFF(BERTH_CF_C, worker_command),
     .count_slot = BERTH_CF_OFF(BERTH_CF_C, worker_argc),
     .imin = 1},
    {.key = "load_timeout_s",
     .kind = BERTH_CF_DOUBLE,
     .def = "300",
     .slot = BERTH_CF_OFF(BERTH_CF_C, worker_load_timeout_s),
     .dmin = 0.001,
     .dmax = 86400},
    {.key = "restart_backoff_s",
     .kind = BERTH_CF_DOUBLE,
     .def = "0.1",
     .slot = BERTH_CF_OFF(BERTH_CF_C, restart_backoff_s),
     .dmin = 0.001,
     .dmax = 3600},
    {.key = "restart_backoff_max_s",
     .kind = BERTH_CF_DOUBLE,
     .def = "10",
     .slot = BERTH_CF_OFF(BERTH_CF_C, restart_backoff_max_s),
     .dmin = 0.001,
     .dmax = 3600},
    {.key = "template",
     .kind = BERTH_CF_BOOL,
     .def = "true",
     .slot = BERTH_CF_OFF(BERTH_CF_C, worker_template)},
    /* shared memory between berthd and each worker (worker protocol 3) */
    {.key = "shared_memory_size",
     .kind = BERTH_CF_BYTES,
     .def = "67108864",
     .slot = BERTH_CF_OFF(BERTH_CF_C, worker_shm_size),
     .imin = 0,
     .imax = INT64_C(1) << 34},
    {.key = "shared_memory_threshold",
     .kind = BERTH_CF_BYTES,
     .def = "65536",
     .slot = BERTH_CF_OFF(BERTH_CF_C, worker_shm_threshold),
     .imin = 1,
     .imax = INT64_C(1) << 34},
};

static const berth_config_field berth_config_tracing_fields[] = {
    {.key = "endpoint",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_C, trace_endpoint)},
    {.key = "service_name",
     .kind = BERTH_CF_STRING,
     .def = "\"berth\"",
     .slot = BERTH_CF_OFF(BERTH_CF_C, trace_service_name)},
    {.key = "sample_rate",
     .kind = BERTH_CF_DOUBLE,
     .def = "1",
     .slot = BERTH_CF_OFF(BERTH_CF_C, trace_sample_rate),
     .dmin = 0,
     .dmax = 1},
    {.key = "max_queue_size",
     .kind = BERTH_CF_UINT,
     .def = "2048",
     .slot = BERTH_CF_OFF(BERTH_CF_C, trace_max_queue_size),
     .size = BERTH_CF_SIZE(BERTH_CF_C, trace_max_queue_size),
     .imin = 1,
     .imax = 1048576},
    {.key = "flush_interval_ms",
     .kind = BERTH_CF_UINT,
     .def = "1000",
     .slot = BERTH_CF_OFF(BERTH_CF_C, trace_flush_interval_ms),
     .size = BERTH_CF_SIZE(BERTH_CF_C, trace_flush_interval_ms),
     .imin = 10,
     .imax = 3600000},
    {.key = "export_timeout_ms",
     .kind = BERTH_CF_UINT,
     .def = "10000",
     .slot = BERTH_CF_OFF(BERTH_CF_C, trace_export_timeout_ms),
     .size = BERTH_CF_SIZE(BERTH_CF_C, trace_export_timeout_ms),
     .imin = 1,
     .imax = 600000},
};
#undef BERTH_CF_C

#define BERTH_CF_T berth_tensor_spec
static const berth_config_field berth_config_tensor_fields[] = {
    {.key = "name",
     .kind = BERTH_CF_STRING,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_T, name)},
    {.key = "datatype",
     .kind = BERTH_CF_DTYPE,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_T, dtype)},
    {.key = "shape",
     .kind = BERTH_CF_SHAPE,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_T, shape),
     .count_slot = BERTH_CF_OFF(BERTH_CF_T, ndim)},
    {.key = "optional", /* absent: false (the struct is zeroed) */
     .kind = BERTH_CF_BOOL,
     .slot = BERTH_CF_OFF(BERTH_CF_T, optional)},
};
#undef BERTH_CF_T

/* sequence_batching (docs/batching.md): the engine reads the idle timeout
 * and the bound; strategy and control_inputs are read from the entry. */
static const char *const berth_config_seq_strategies[] = {"direct", "oldest",
                                                          NULL};
static const berth_config_field berth_config_seq_control_fields[] = {
    {.key = "start", .kind = BERTH_CF_OPT_STRING, .def = "null", BERTH_CF_NONE},
    {.key = "end", .kind = BERTH_CF_OPT_STRING, .def = "null", BERTH_CF_NONE},
    {.key = "ready", .kind = BERTH_CF_OPT_STRING, .def = "null", BERTH_CF_NONE},
    {.key = "corrid",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     BERTH_CF_NONE},
};
static const berth_config_table berth_config_seq_control =
    BERTH_CF_TABLE(berth_config_seq_control_fields);
static const berth_config_field berth_config_seq_fields[] = {
    {.key = "max_sequence_idle_microseconds",
     .kind = BERTH_CF_UINT,
     .def = "1000000",
     .slot = BERTH_CF_OFF(berth_model_config, seq_idle_us),
     .size = BERTH_CF_SIZE(berth_model_config, seq_idle_us),
     .imin = 0,
     .imax = INT64_C(86400000000)},
    {.key = "max_sequences",
     .kind = BERTH_CF_UINT,
     .def = "1024",
     .slot = BERTH_CF_OFF(berth_model_config, seq_max_sequences),
     .size = BERTH_CF_SIZE(berth_model_config, seq_max_sequences),
     .imin = 1,
     .imax = 1000000},
    {.key = "strategy",
     .kind = BERTH_CF_ENUM,
     .def = "\"direct\"",
     BERTH_CF_NONE,
     .choices = berth_config_seq_strategies},
    {.key = "control_inputs",
     .kind = BERTH_CF_SECTION,
     .def = "{}",
     BERTH_CF_NONE,
     .sub = &berth_config_seq_control},
};
static const berth_config_table berth_config_seq =
    BERTH_CF_TABLE(berth_config_seq_fields);

/* autoscaling (docs/autoscaling.md): slots in berth_autoscale_config;
 * config.c fills the defaults that depend on other keys and checks the
 * keys against each other. */
#define BERTH_CF_A berth_autoscale_config
#define BERTH_CF_ASC_SECONDS(k, d, lo)                                         \
  {                                                                            \
    .key = #k, .kind = BERTH_CF_DOUBLE, .def = d,                              \
    .slot = BERTH_CF_OFF(BERTH_CF_A, k), .dmin = lo, .dmax = 86400             \
  }
static const berth_config_field berth_config_autoscale_fields[] = {
    {.key = "min_instances",
     .kind = BERTH_CF_UINT,
     .def = "1",
     .slot = BERTH_CF_OFF(BERTH_CF_A, min_instances),
     .size = BERTH_CF_SIZE(BERTH_CF_A, min_instances),
     .imin = 0,
     .imax = 256},
    {.key = "max_instances",
     .kind = BERTH_CF_UINT,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_A, max_instances),
     .size = BERTH_CF_SIZE(BERTH_CF_A, max_instances),
     .imin = 1,
     .imax = 256},
    {.key = "target_ongoing_requests",
     .kind = BERTH_CF_DOUBLE,
     .def = "2",
     .slot = BERTH_CF_OFF(BERTH_CF_A, target_ongoing_requests),
     .dmin = 0.01,
     .dmax = 1000000},
    BERTH_CF_ASC_SECONDS(upscale_delay_s, "30", 0),
    BERTH_CF_ASC_SECONDS(downscale_delay_s, "600", 0),
    BERTH_CF_ASC_SECONDS(scale_to_zero_after_s, NULL, 0),
    BERTH_CF_ASC_SECONDS(stable_window_s, "60", 0.1),
    BERTH_CF_ASC_SECONDS(panic_window_s, "6", 0.1),
    {.key = "panic_threshold",
     .kind = BERTH_CF_DOUBLE,
     .def = "2.0",
     .slot = BERTH_CF_OFF(BERTH_CF_A, panic_threshold),
     .dmin = 1,
     .dmax = 1000},
};
#undef BERTH_CF_ASC_SECONDS
#undef BERTH_CF_A
static const berth_config_table berth_config_autoscale =
    BERTH_CF_TABLE(berth_config_autoscale_fields);

#define BERTH_CF_M berth_model_config
static const berth_config_field berth_config_model_fields[] = {
    {.key = "name",
     .kind = BERTH_CF_NAME,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_M, name)},
    {.key = "version",
     .kind = BERTH_CF_VERSION,
     .def = "\"1\"",
     .slot = BERTH_CF_OFF(BERTH_CF_M, version)},
    {.key = "runtime",
     .kind = BERTH_CF_STRING,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_M, runtime)},
    {.key = "platform",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = BERTH_CF_OFF(BERTH_CF_M, platform)},
    {.key = "path", .kind = BERTH_CF_STRING, .required = true, BERTH_CF_NONE},
    {.key = "class", .kind = BERTH_CF_OPT_STRING, .def = "null", BERTH_CF_NONE},
    {.key = "instances",
     .kind = BERTH_CF_UINT,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_M, instances),
     .size = BERTH_CF_SIZE(BERTH_CF_M, instances),
     .imin = 1,
     .imax = 256},
    {.key = "max_batch_size",
     .kind = BERTH_CF_UINT,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_M, max_batch_size),
     .size = BERTH_CF_SIZE(BERTH_CF_M, max_batch_size),
     .imin = 0,
     .imax = 1048576},
    {.key = "max_queue_delay_us",
     .kind = BERTH_CF_UINT,
     .def = "1000",
     .slot = BERTH_CF_OFF(BERTH_CF_M, max_queue_delay_us),
     .size = BERTH_CF_SIZE(BERTH_CF_M, max_queue_delay_us),
     .imin = 0,
     .imax = 60000000},
    {.key = "preferred_batch_sizes",
     .kind = BERTH_CF_SIZES,
     .def = "[]",
     .slot = BERTH_CF_OFF(BERTH_CF_M, preferred_batch_sizes),
     .count_slot = BERTH_CF_OFF(BERTH_CF_M, n_preferred_batch_sizes),
     .imin = 1,
     .imax = 1048576},
    {.key = "timeout_us",
     .kind = BERTH_CF_UINT,
     .def = "0",
     .slot = BERTH_CF_OFF(BERTH_CF_M, timeout_us),
     .size = BERTH_CF_SIZE(BERTH_CF_M, timeout_us),
     .imin = 0,
     .imax = 3600000000LL},
    {.key = "max_queue_size",
     .kind = BERTH_CF_UINT,
     .def = "1024",
     .slot = BERTH_CF_OFF(BERTH_CF_M, max_queue_size),
     .size = BERTH_CF_SIZE(BERTH_CF_M, max_queue_size),
     .imin = 1,
     .imax = 1000000},
    {.key = "inputs",
     .kind = BERTH_CF_TENSORS,
     .slot = BERTH_CF_OFF(BERTH_CF_M, inputs),
     .count_slot = BERTH_CF_OFF(BERTH_CF_M, n_inputs),
     .flag_slot = BERTH_CF_OFF(BERTH_CF_M, inputs_declared)},
    {.key = "outputs",
     .kind = BERTH_CF_TENSORS,
     .slot = BERTH_CF_OFF(BERTH_CF_M, outputs),
     .count_slot = BERTH_CF_OFF(BERTH_CF_M, n_outputs),
     .flag_slot = BERTH_CF_OFF(BERTH_CF_M, outputs_declared)},
    {.key = "parameters", .kind = BERTH_CF_OBJECT, .def = "{}", BERTH_CF_NONE},
    {.key = "decoupled",
     .kind = BERTH_CF_BOOL,
     .def = "false",
     .slot = BERTH_CF_OFF(BERTH_CF_M, decoupled)},
    {.key = "payload_log",
     .kind = BERTH_CF_SECTION,
     .def = "{}",
     BERTH_CF_NONE,
     .sub = &berth_config_payload},
    {.key = "sequence_batching",
     .kind = BERTH_CF_SECTION,
     .def = NULL,
     BERTH_CF_NONE,
     .sub = &berth_config_seq},
    /* native backends (docs/native.md): read by backend/native.c */
    {.key = "backend", /* absent: python */
     .kind = BERTH_CF_ENUM,
     .def = NULL,
     BERTH_CF_NONE,
     .choices = berth_config_backends},
    /* GPU placement (docs/gpus.md) */
    /* absent (auto, no need) stays out of the worker's entry */
    {.key = "devices",
     .kind = BERTH_CF_DEVICES,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_M, devices),
     .count_slot = BERTH_CF_OFF(BERTH_CF_M, n_devices),
     .flag_slot = BERTH_CF_OFF(BERTH_CF_M, devices_kind)},
    {.key = "gpu_memory",
     .kind = BERTH_CF_BYTES,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_M, gpu_memory),
     .imin = 0,
     .imax = INT64_C(1125899906842624)},
    {.key = "autoscaling",
     .kind = BERTH_CF_SECTION,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_M, autoscale),
     .sub = &berth_config_autoscale},
};
#undef BERTH_CF_M

/* native: the native backends' shared libraries (docs/native.md). */
static const berth_config_field berth_config_native_fields[] = {
    {.key = "onnxruntime",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = offsetof(berth_config, native_onnxruntime)},
    {.key = "lightgbm",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = offsetof(berth_config, native_lightgbm)},
    {.key = "xgboost",
     .kind = BERTH_CF_OPT_STRING,
     .def = "null",
     .slot = offsetof(berth_config, native_xgboost)},
};
static const berth_config_table berth_config_native =
    BERTH_CF_TABLE(berth_config_native_fields);

static const berth_config_table berth_config_server =
    BERTH_CF_TABLE(berth_config_server_fields);
static const berth_config_table berth_config_log =
    BERTH_CF_TABLE(berth_config_log_fields);
static const berth_config_table berth_config_workers =
    BERTH_CF_TABLE(berth_config_workers_fields);
static const berth_config_table berth_config_tracing =
    BERTH_CF_TABLE(berth_config_tracing_fields);
const berth_config_table berth_config_tensor =
    BERTH_CF_TABLE(berth_config_tensor_fields);
const berth_config_table berth_config_model =
    BERTH_CF_TABLE(berth_config_model_fields);

#define BERTH_CF_R berth_route_target_config
static const berth_config_field berth_config_split_fields[] = {
    {.key = "model",
     .kind = BERTH_CF_NAME,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_R, model)},
    {.key = "version",
     .kind = BERTH_CF_VERSION,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_R, version)},
    {.key = "weight",
     .kind = BERTH_CF_DOUBLE,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_R, weight),
     .dmin = 0,
     .dmax = 1e9},
};
static const berth_config_field berth_config_shadow_fields[] = {
    {.key = "model",
     .kind = BERTH_CF_NAME,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_R, model)},
    {.key = "version",
     .kind = BERTH_CF_VERSION,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_R, version)},
    {.key = "rate",
     .kind = BERTH_CF_DOUBLE,
     .def = "1.0",
     .slot = BERTH_CF_OFF(BERTH_CF_R, rate),
     .dmin = 0,
     .dmax = 1},
};
#undef BERTH_CF_R
static const berth_config_table berth_config_split =
    BERTH_CF_TABLE(berth_config_split_fields);
static const berth_config_table berth_config_shadow =
    BERTH_CF_TABLE(berth_config_shadow_fields);

#define BERTH_CF_RT berth_route_config
static const berth_config_field berth_config_route_fields[] = {
    {.key = "name",
     .kind = BERTH_CF_NAME,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_RT, name)},
    {.key = "split",
     .kind = BERTH_CF_LIST,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_RT, split),
     .count_slot = BERTH_CF_OFF(BERTH_CF_RT, n_split),
     .size = sizeof(berth_route_target_config),
     .imin = 1,
     .imax = 64,
     .sub = &berth_config_split},
    {.key = "sticky_header",
     .kind = BERTH_CF_NAME,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_RT, sticky_header)},
    {.key = "shadow",
     .kind = BERTH_CF_SECTION,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_RT, shadow),
     .sub = &berth_config_shadow},
};
#undef BERTH_CF_RT
const berth_config_table berth_config_route =
    BERTH_CF_TABLE(berth_config_route_fields);

/* ---- gateway: (docs/gateway.md) --------------------------------------- */
#define BERTH_CF_GR berth_gateway_replica_config
static const berth_config_field berth_config_gw_replica_fields[] = {
    {.key = "name",
     .kind = BERTH_CF_NAME,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_GR, name)},
    {.key = "url",
     .kind = BERTH_CF_STRING,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_GR, url)},
};
#undef BERTH_CF_GR
static const berth_config_table berth_config_gw_replica =
    BERTH_CF_TABLE(berth_config_gw_replica_fields);
#define BERTH_CF_G berth_gateway_config
#define BERTH_CF_GW_UINT(k, d, lo, hi)                                         \
  {                                                                            \
    .key = #k, .kind = BERTH_CF_UINT, .def = d,                                \
    .slot = BERTH_CF_OFF(BERTH_CF_G, k), .size = BERTH_CF_SIZE(BERTH_CF_G, k), \
    .imin = lo, .imax = hi                                                     \
  }
static const berth_config_field berth_config_gateway_fields[] = {
    {.key = "replicas",
     .kind = BERTH_CF_LIST,
     .def = "[]",
     .slot = BERTH_CF_OFF(BERTH_CF_G, replicas),
     .count_slot = BERTH_CF_OFF(BERTH_CF_G, n_replicas),
     .size = sizeof(berth_gateway_replica_config),
     .imin = 0,
     .imax = 256,
     .sub = &berth_config_gw_replica},
    BERTH_CF_GW_UINT(health_interval_ms, "1000", 1, 3600000),
    BERTH_CF_GW_UINT(eject_after_failures, "3", 1, 1000),
    BERTH_CF_GW_UINT(eject_for_ms, "5000", 1, 3600000),
    BERTH_CF_GW_UINT(retries, "1", 0, 8),
    BERTH_CF_GW_UINT(connections_per_replica, "2", 1, 64),
    {.key = "allow_remote",
     .kind = BERTH_CF_BOOL,
     .def = "false",
     .slot = BERTH_CF_OFF(BERTH_CF_G, allow_remote)},
};
#undef BERTH_CF_GW_UINT
#undef BERTH_CF_G
static const berth_config_table berth_config_gateway =
    BERTH_CF_TABLE(berth_config_gateway_fields);
/* The machine's GPUs (docs/gpus.md): berth serve fills the list. */
#define BERTH_CF_G berth_gpu_config
static const berth_config_field berth_config_gpu_fields[] = {
    {.key = "index",
     .kind = BERTH_CF_UINT,
     .required = true,
     .slot = BERTH_CF_OFF(BERTH_CF_G, index),
     .size = BERTH_CF_SIZE(BERTH_CF_G, index),
     .imin = 0,
     .imax = BERTH_GPU_INDEX_MAX},
    {.key = "memory",
     .kind = BERTH_CF_BYTES,
     .def = "0",
     .slot = BERTH_CF_OFF(BERTH_CF_G, memory),
     .imin = 0,
     .imax = INT64_C(1125899906842624)},
    {.key = "budget",
     .kind = BERTH_CF_BYTES,
     .def = NULL,
     .slot = BERTH_CF_OFF(BERTH_CF_G, budget),
     .imin = 1,
     .imax = INT64_C(1125899906842624)},
};
#undef BERTH_CF_G
static const berth_config_table berth_config_gpu =
    BERTH_CF_TABLE(berth_config_gpu_fields);

static const berth_config_field berth_config_root_fields[] = {
    {.key = "server",
     .kind = BERTH_CF_SECTION,
     .def = "{}",
     BERTH_CF_NONE,
     .sub = &berth_config_server},
    {.key = "log",
     .kind = BERTH_CF_SECTION,
     .def = "{}",
     BERTH_CF_NONE,
     .sub = &berth_config_log},
    {.key = "workers",
     .kind = BERTH_CF_SECTION,
     .def = "{}",
     BERTH_CF_NONE,
     .sub = &berth_config_workers},
    {.key = "tracing",
     .kind = BERTH_CF_SECTION,
     .def = "{}",
     BERTH_CF_NONE,
     .sub = &berth_config_tracing},
    /* before models: a gateway serves none (models: []) */
    {.key = "gateway",
     .kind = BERTH_CF_SECTION,
     .def = NULL,
     .slot = offsetof(berth_config, gateway),
     .sub = &berth_config_gateway},
    {.key = "models", .kind = BERTH_CF_MODELS, .required = true, BERTH_CF_NONE},
    /* the models' workers together (docs/autoscaling.md); 0: none */
    {.key = "memory_budget",
     .kind = BERTH_CF_BYTES,
     .def = "0",
     .slot = offsetof(berth_config, memory_budget),
     .imin = 0,
     .imax = INT64_C(1) << 50},
    {.key = "routes",
     .kind = BERTH_CF_LIST,
     .def = "[]",
     .slot = offsetof(berth_config, routes),
     .count_slot = offsetof(berth_config, n_routes),
     .size = sizeof(berth_route_config),
     .imin = 0,
     .imax = 4096,
     .sub = &berth_config_route},
    {.key = "native",
     .kind = BERTH_CF_SECTION,
     .def = "{}",
     BERTH_CF_NONE,
     .sub = &berth_config_native},
    /* after models: pipelines are checked against them */
    {.key = "pipelines",
     .kind = BERTH_CF_PIPELINES,
     .def = "[]",
     BERTH_CF_NONE},
    {.key = "gpus",
     .kind = BERTH_CF_LIST,
     .def = "[]",
     .slot = offsetof(berth_config, gpus),
     .count_slot = offsetof(berth_config, n_gpus),
     .size = sizeof(berth_gpu_config),
     .imin = 0,
     .imax = BERTH_MAX_GPUS,
     .sub = &berth_config_gpu},
};
const berth_config_table berth_config_root =
    BERTH_CF_TABLE(berth_config_root_fields);

/* ---- the schema as JSON (berthd --print-limits) ----------------------- */

static const char *const berth_config_kind_names[] = {
    [BERTH_CF_STRING] = "string",   [BERTH_CF_OPT_STRING] = "string",
    [BERTH_CF_NAME] = "name",       [BERTH_CF_VERSION] = "version",
    [BERTH_CF_ENUM] = "enum",       [BERTH_CF_UINT] = "integer",
    [BERTH_CF_DOUBLE] = "number",   [BERTH_CF_BOOL] = "boolean",
    [BERTH_CF_ARGV] = "list",       [BERTH_CF_OBJECT] = "mapping",
    [BERTH_CF_DTYPE] = "datatype",  [BERTH_CF_SHAPE] = "shape",
    [BERTH_CF_SIZES] = "list",      [BERTH_CF_TENSORS] = "list",
    [BERTH_CF_SECTION] = "mapping", [BERTH_CF_MODELS] = "list",
    [BERTH_CF_LIST] = "list",       [BERTH_CF_PIPELINES] = "list",
    [BERTH_CF_BYTES] = "bytes",     [BERTH_CF_DEVICES] = "devices",
};

/* Sets key to value (a new reference, stolen) in obj; false when either
 * failed (value NULL: out of memory). */
static bool berth_schema_set(json_t *obj, const char *key, json_t *value) {
  return value != NULL && json_object_set_new(obj, key, value) == 0;
}

static json_t *berth_schema_choices(const char *const *names, size_t n) {
  json_t *list = json_array();
  for (size_t i = 0; list != NULL && i < n; i++) {
    if (names[i] == NULL)
      continue;
    if (json_array_append_new(list, json_string(names[i])) != 0) {
      json_decref(list);
      return NULL;
    }
  }
  return list;
}

static json_t *berth_schema_table(const berth_config_table *t);

/* The bounds of f, by its kind, into out. */
static bool berth_schema_bounds(const berth_config_field *f, json_t *out) {
  switch (f->kind) {
  case BERTH_CF_UINT:
  case BERTH_CF_SIZES:
  case BERTH_CF_BYTES:
    return berth_schema_set(out, "min", json_integer(f->imin)) &&
           berth_schema_set(out, "max", json_integer(f->imax)) &&
           (f->kind != BERTH_CF_UINT || f->choices == NULL ||
            berth_schema_set(out, "choices",
                             berth_schema_choices(f->choices, 1)));
  case BERTH_CF_DOUBLE:
    return berth_schema_set(out, "min", json_real(f->dmin)) &&
           berth_schema_set(out, "max", json_real(f->dmax));
  case BERTH_CF_ARGV: /* as berth_config_argv reads them */
    return berth_schema_set(out, "min_items",
                            json_integer(f->imax > 0 ? f->imin : 1)) &&
           berth_schema_set(
               out, "max_items",
               json_integer(f->imax > 0 ? f->imax : BERTH_CONFIG_ARGV_MAX));
  case BERTH_CF_LIST:
    return berth_schema_set(out, "min_items", json_integer(f->imin)) &&
           berth_schema_set(out, "max_items", json_integer(f->imax));
  case BERTH_CF_MODELS:
    return berth_schema_set(out, "min_items", json_integer(1)) &&
           berth_schema_set(out, "max_items",
                            json_integer(BERTH_CONFIG_MODELS_MAX));
  case BERTH_CF_ENUM: {
    size_t n = 0;
    while (f->choices[n] != NULL)
      n++;
    return berth_schema_set(out, "choices",
                            berth_schema_choices(f->choices, n));
  }
  case BERTH_CF_DTYPE:
    return berth_schema_set(
        out, "choices",
        berth_schema_choices(berth_config_dtypes, BERTH_DT_COUNT));
  default:
    return true;
  }
}

/* The table a field's value (or its elements) is checked against. */
static const berth_config_table *berth_schema_sub(const berth_config_field *f) {
  if (f->kind == BERTH_CF_MODELS)
    return &berth_config_model;
  if (f->kind == BERTH_CF_TENSORS)
    return &berth_config_tensor;
  if (f->kind == BERTH_CF_SECTION || f->kind == BERTH_CF_LIST)
    return f->sub;
  return NULL;
}

static json_t *berth_schema_field(const berth_config_field *f) {
  json_t *out = json_object();
  if (out == NULL)
    return NULL;
  const berth_config_table *sub = berth_schema_sub(f);
  bool ok = berth_schema_set(out, "type",
                             json_string(berth_config_kind_names[f->kind]));
  if (ok && f->required)
    ok = berth_schema_set(out, "required", json_true());
  if (ok && f->def != NULL)
    ok = berth_schema_set(out, "default",
                          json_loads(f->def, JSON_DECODE_ANY, NULL));
  ok = ok && berth_schema_bounds(f, out);
  if (ok && sub != NULL)
    ok = berth_schema_set(out, "keys", berth_schema_table(sub));
  if (!ok) {
    json_decref(out);
    return NULL;
  }
  return out;
}

static json_t *berth_schema_table(const berth_config_table *t) {
  json_t *out = json_object();
  for (size_t i = 0; out != NULL && i < t->n; i++) {
    if (!berth_schema_set(out, t->fields[i].key,
                          berth_schema_field(&t->fields[i]))) {
      json_decref(out);
      return NULL;
    }
  }
  return out;
}

json_t *berth_config_schema_json(void) {
  return berth_schema_table(&berth_config_root);
}
