/* Berth engine: the one config tree, parsed and validated once.
 *
 * The document is YAML or JSON (libyaml reads both); its schema is in
 * docs/configuration.md. Validation errors name the key path, for example
 * "models[1].max_batch_size: expected an integer >= 0, got \"ten\"". Unknown
 * keys are errors.
 */
#ifndef BERTH_CONFIG_H
#define BERTH_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"
#include "berth/tensor.h"
#include "placement.h"
#include "autoscale_policy.h"

/* Most preferred batch sizes a model may list. */
#define BERTH_MAX_PREFERRED 16

/* A declared input or output; shape dims are >= 0 or -1 (variable). */
typedef struct berth_tensor_spec {
  char *name; /* owned */
  berth_dtype dtype;
  uint32_t ndim;
  int64_t shape[BERTH_MAX_DIMS];
  bool optional; /* an input a request may leave out (Triton's optional) */
} berth_tensor_spec;

typedef struct berth_model_config {
  char *name;              /* owned; [A-Za-z0-9_.-]+ */
  char *version;           /* owned; [A-Za-z0-9_.-]+, default "1" */
  char *runtime;           /* owned; e.g. "sklearn", passed to the worker */
  char *platform;          /* owned or NULL (the worker then reports it) */
  uint32_t instances;      /* worker processes; 0 when absent from the
                               entry: the engine picks (cores / 4, >= 1) */
  uint32_t max_batch_size; /* 0 = never batched; absent from the entry =
                               let the worker suggest (READY) */
  uint32_t preferred_batch_sizes[BERTH_MAX_PREFERRED]; /* ascending not
                               required; the batcher sends as soon as a
                               batch reaches one of them */
  uint32_t n_preferred_batch_sizes;
  uint64_t timeout_us;         /* default per-request timeout, 0 = none */
  uint64_t max_queue_delay_us; /* batcher's wait bound, default 1000 */
  uint32_t max_queue_size;     /* queued requests, default 1024 */
  berth_tensor_spec *inputs;   /* owned array or NULL */
  size_t n_inputs;
  bool inputs_declared;       /* true when the config listed inputs */
  berth_tensor_spec *outputs; /* owned array or NULL */
  size_t n_outputs;
  bool outputs_declared;
  uint64_t seq_idle_us; /* sequence_batching.max_sequence_idle_microseconds
                               (only when the entry has sequence_batching) */
  uint32_t seq_max_sequences; /* sequence_batching.max_sequences */
  double payload_log_rate;    /* payload_log.rate: share of requests written
                               to the payload log, 0..1, default 0 */
  json_t *entry;              /* owned reference: the whole validated model
                               entry, sent to the worker in LOAD */
  bool decoupled;             /* decoupled: a request gets zero or many
                               responses (docs/decoupled.md); also set
                               when the worker reports it in READY */
  bool quiet_errors;          /* loaded from a request by a caller without an
                               admin token: a failed load answers a fixed
                               text, the worker's message goes to the log
                               only (it may quote the file) */
  berth_autoscale_config autoscale; /* the autoscaling block
                               (docs/autoscaling.md); .enabled false when
                               absent: fixed instances */
  char *files_dir;                  /* owned or NULL: the private folder holding
                               the files of the load request that gave this
                               config (repo_files.h); the repository removes
                               the folder, clear frees the string */
  /* GPU placement (docs/gpus.md, worker/placement.h): */
  uint8_t devices_kind;             /* berth_devices_kind; default auto */
  uint32_t devices[BERTH_MAX_GPUS]; /* BERTH_DEVICES_LIST: GPU indices,
                               distinct */
  size_t n_devices;
  uint64_t gpu_memory; /* one instance's need on its GPU in
                               bytes; 0 = not counted */
} berth_model_config;

/* One GPU of the machine (the document's gpus list, docs/gpus.md). */
typedef struct berth_gpu_config {
  uint32_t index;  /* CUDA index, distinct */
  uint64_t memory; /* capacity in bytes; 0 = unknown */
  uint64_t budget; /* bytes instances may need there together; absent:
                      memory (0 = no limit) */
} berth_gpu_config;

/* One target of a route (routes[].split[] or routes[].shadow). */
typedef struct berth_route_target_config {
  char *model;   /* owned; a model name */
  char *version; /* owned, or NULL: the model's newest ready
                               version when a request is routed */
  double weight; /* split: share of requests, >= 0 */
  double rate;   /* shadow: fraction of requests copied, 0..1 */
} berth_route_target_config;

/* A served name whose requests are split across model versions, with an
 * optional shadow (docs/traffic.md). Whether the targets exist is checked
 * by the router (router.c), which knows the models. */
typedef struct berth_route_config {
  char *name;                       /* owned; [A-Za-z0-9_.-]+ */
  berth_route_target_config *split; /* owned array of n_split (>= 1) */
  size_t n_split;
  char *sticky_header;              /* owned or NULL */
  berth_route_target_config shadow; /* shadow.model NULL: no shadow */
} berth_route_config;

/* gateway: (docs/gateway.md): berthd forwards every request to replicas
 * instead of serving models. Present when health_interval_ms != 0 (its
 * minimum is 1): berth_config_gateway_on. */
typedef struct berth_gateway_replica_config {
  char *name; /* owned; [A-Za-z0-9_.-]+ */
  char *url;  /* owned; http://ADDRESS:PORT (checked by gateway/) */
} berth_gateway_replica_config;

typedef struct berth_gateway_config {
  berth_gateway_replica_config *replicas; /* owned array, may be empty */
  size_t n_replicas;
  uint32_t health_interval_ms;      /* default 1000; 0 = no gateway: section */
  uint32_t eject_after_failures;    /* consecutive failures, default 3 */
  uint32_t eject_for_ms;            /* default 5000 */
  uint32_t retries;                 /* other replicas tried, default 1 */
  uint32_t connections_per_replica; /* h2c connections, default 2 */
  bool allow_remote; /* replicas beyond loopback, default false */
} berth_gateway_config;

#define berth_config_gateway_on(c) ((c)->gateway.health_interval_ms != 0)

typedef struct berth_config {
  char *host;                    /* owned, default "127.0.0.1" */
  uint16_t http_port;            /* default 8080; 0 = pick a free port */
  uint16_t grpc_port;            /* default 8081; 0 = pick a free port */
  uint16_t metrics_port;         /* default 0 = none: GET /metrics is on the
                                    REST port (always) and on this one */
  size_t grpc_max_message_bytes; /* default 0 = max_body_bytes */
  char *tls_cert;                /* owned or NULL: PEM chain; with tls_key
                                    both listeners speak TLS only */
  char *tls_key;                 /* owned or NULL */
  char *auth_tokens_file;        /* owned or NULL: inference tokens */
  char *auth_tokens_env;         /* owned or NULL: a variable's name */
  char *admin_tokens_file;       /* owned or NULL: admin tokens */
  char *admin_tokens_env;        /* owned or NULL */
  bool health_open;              /* health endpoints need no token */
  bool exit_on_error;            /* default true: a model that fails to load
                                    at start stops the server (exit 1) */
  char *model_control_mode;      /* owned: none (default: no repository
                                    load/unload) or explicit
                                    (docs/security.md) */
  char **repositories;           /* owned NULL-terminated list of absolute
                                    paths (folders, or single model files)
                                    a load may name files inside; [] by
                                    default (berth serve fills it) */
  size_t n_repositories;
  char **allowed_hosts; /* owned NULL-terminated list (may be
                                    empty): Host names beyond IP addresses
                                    and localhost; "*" any (http_guard.h) */
  size_t n_allowed_hosts;
  char **cors_origins; /* owned NULL-terminated list (may be
                                    empty): cross-site origins allowed;
                                    "*" any (http_guard.h) */
  size_t n_cors_origins;
  /* owned: direct|writev|uring|auto (server.write_path, docs/http.md) */
  char *write_path;

  size_t max_body_bytes;            /* default 64 MiB */
  size_t shm_max_regions;           /* registered shared-memory regions,
                                    default 64; 0 = none may be registered */
  uint64_t shm_max_bytes;           /* their windows together, default 1 GiB */
  size_t max_head_bytes;            /* default 16 KiB */
  uint32_t header_timeout_ms;       /* a request head's deadline from its first
                                    byte, default 10000; 0 = none */
  uint32_t max_connections;         /* open client connections, all listeners
                                    together, default 1024 */
  uint32_t network_loops;           /* network threads (httpd.h), default 1;
                                    0 = "auto": one per core */
  char *socket;                     /* owned or NULL: also serve REST on this
                                    Unix socket (mode 0600) */
  double drain_timeout_s;           /* SIGTERM drain bound, default 30 */
  char *log_level;                  /* owned: debug|info|warning|error */
  char *log_format;                 /* owned: json|text */
  bool access_log;                  /* default false */
  char *payload_log_path;           /* owned or NULL: the payload log file */
  uint64_t payload_log_max_bytes;   /* rotate beyond, default 100 MiB */
  uint32_t payload_log_backups;     /* rotated files kept, default 5 */
  uint64_t payload_log_queue_bytes; /* records waiting, default 16 MiB */
  char **worker_command;            /* owned NULL-terminated argv */
  size_t worker_argc;
  double worker_load_timeout_s; /* LOAD -> READY bound, default 300 */
  double restart_backoff_s;     /* first restart delay, default 0.1 */
  double restart_backoff_max_s; /* cap, default 10 */
  bool worker_template; /* fork workers from a template process (zygote.h) */
  uint64_t worker_shm_size;      /* bytes of each worker's shared memory
                                    region, 0 = none (docs/worker-protocol.md) */
  uint64_t worker_shm_threshold; /* tensors of at least this many bytes go
                                    through it */
  /* tracing: (docs/tracing.md) */
  char *trace_endpoint;             /* owned or NULL = tracing off: OTLP/HTTP
                                    URL, http://host[:port][/path] */
  char *trace_service_name;         /* owned, default "berth" */
  double trace_sample_rate;         /* new traces kept, 0..1, default 1 */
  uint32_t trace_max_queue_size;    /* requests waiting for export, 2048 */
  uint32_t trace_flush_interval_ms; /* export period, default 1000 */
  uint32_t trace_export_timeout_ms; /* one POST's bound, default 10000 */
  uint64_t memory_budget;           /* bytes the models' workers may hold
                                    together, 0 = no budget
                                    (docs/autoscaling.md) */
  berth_model_config *models;       /* owned array */
  size_t n_models;
  berth_route_config *routes; /* owned array (router.c), may be NULL */
  size_t n_routes;
  struct berth_pipeline_config *pipelines; /* owned array (pipeline_config.h) */
  size_t n_pipelines;
  berth_gateway_config gateway; /* gateway mode (docs/gateway.md) */
  char *native_onnxruntime;     /* owned or NULL: native.onnxruntime, the path
                               of ONNX Runtime's shared library
                               (docs/native.md) */
  char *native_lightgbm;        /* owned or NULL: native.lightgbm, the path of
                               LightGBM's (docs/native.md) */
  char *native_xgboost;         /* owned or NULL: native.xgboost, XGBoost's */
  berth_gpu_config *gpus;       /* owned array or NULL: the machine's GPUs */
  size_t n_gpus;
} berth_config;

/* Parses and validates text (YAML or JSON, len bytes). On success fills
 * *out (caller clears it); on failure returns BERTH_E_CONFIG with the key
 * path in err and leaves *out zeroed. */
int berth_config_parse(const char *text, size_t len, berth_config *out,
                       berth_errmsg *err);
void berth_config_clear(berth_config *c);

/* Converts YAML or JSON text to a jansson tree (plain scalars typed as YAML
 * 1.2 core schema: null, bool, int, float, else string; quoted scalars are
 * strings). Aliases are refused. Returns a new reference or NULL with err. */
json_t *berth_yaml_load(const char *text, size_t len, berth_errmsg *err);

/* Parses one models[] entry (a JSON object, or a JSON/YAML string) into
 * *out with the same checks and defaults as in a whole document; errors name
 * the key under path ("parameters.config.max_batch_size: ..."). The caller
 * clears *out with berth_config_model_clear. For models loaded at run time
 * (repository.c). */
int berth_config_parse_model_entry(json_t *entry, const char *path,
                                   berth_model_config *out, berth_errmsg *err);
void berth_config_model_clear(berth_model_config *m);

/* Parses one routes[] entry (a JSON object) with the checks of a whole
 * document; errors name the key under path ("split[1].weight: ..."). For
 * routes changed at run time (router_admin.c). The caller clears *out with
 * berth_config_route_clear. */
int berth_config_parse_route_entry(json_t *entry, const char *path,
                                   berth_route_config *out, berth_errmsg *err);
void berth_config_route_clear(berth_route_config *r);

/* The schema's keys and bounds as a JSON object (what `berthd
 * --print-limits` prints; docs/configuration.md): per key its "type", and
 * where they apply "required", "default", "min"/"max" (numbers, or the
 * elements of a list of sizes), "min_items"/"max_items" (lists), "choices"
 * (enums, datatypes) and "keys" (the fields of a mapping or of a list's
 * elements, in the same form). Returns a new reference, or NULL when out
 * of memory. */
json_t *berth_config_schema_json(void);

#endif
