/* Berth engine: the context object and the model-version, job, batch and
 * worker structures that the router, scheduler and supervisor share.
 *
 * There are no globals: every module reaches the engine through the
 * berth_engine passed in or stored in its model. Everything runs on the one
 * libuv loop thread.
 *
 * Ownership at a glance:
 *   berth_engine owns the config, the models array, the listeners.
 *   berth_model owns its effective signature, its queued jobs (until they
 *     are handed to a worker) and its worker slots.
 *   A berth_job is owned by whoever created it (rest.c); the scheduler only
 *     links it into a queue or a batch, and calls job->done exactly once.
 *   A berth_batch is owned by the worker running it.
 */
#ifndef BERTH_ENGINE_H
#define BERTH_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "auth.h"
#include "batcher.h"
#include "config.h"
#include "tls.h"
#include "httpd.h"
#include "infer.h"
#include "model_metrics.h"
#include "observer.h"
#include "scheduler.h"
#include "supervisor.h"

struct berth_trace_ctx; /* obs/trace.h */

typedef struct berth_engine berth_engine;
typedef struct berth_model berth_model;
typedef struct berth_job berth_job;
typedef struct berth_batch berth_batch;
typedef struct berth_worker berth_worker;

/* What a model does, by its kind: a model version served by worker
 * processes (model.c: berth_worker_model_ops) or a composite such as a
 * pipeline's stand-in (pipeline.c). The frontends, the router and the
 * repository go through berth_model_submit / _ready / _state and never
 * branch on the kind. */
typedef struct berth_model_ops {
  const char *kind; /* "model", "pipeline": for messages */
  bool composite;   /* not in engine->models, no worker, one
                                  version "1", not loadable */
  /* Takes a job as berth_sched_submit does (same contract). */
  int (*submit)(berth_model *m, berth_job *job, berth_errmsg *err);
  /* Can take requests now. */
  bool (*ready)(const berth_model *m);
  /* The repository index's state (READY, LOADING, UNLOADING,
   * UNAVAILABLE) and, when not ready, why (cap bytes, NUL-terminated). */
  const char *(*state)(const berth_model *m, char *reason, size_t cap);
  /* Brings the effective signature up to date before it is described or
   * checked (NULL: nothing to do). */
  void (*refresh)(berth_model *m);
  /* Where a model that is not served by worker processes runs (a native
   * backend, backend/native.c); each NULL means the supervisor's workers.
   * start: begins loading (berth_model_start). can_run: a batch may start
   * now. run: takes the batch (ownership as berth_worker_run). stop: the
   * model was unloaded: free what start made once its batches are over. */
  int (*start)(berth_model *m, berth_errmsg *err);
  bool (*can_run)(berth_model *m);
  void (*run)(berth_model *m, berth_batch *b);
  void (*stop)(berth_model *m);
} berth_model_ops;

/* Called exactly once per job. On success status is BERTH_OK and resp holds
 * the outputs; their data may borrow from worker memory that is valid only
 * during the call (encode or copy before returning). On failure resp is NULL
 * and errmsg says why (NUL-terminated, never NULL). The job is no longer
 * referenced by the scheduler when this runs; the callee may free it. */
typedef void (*berth_job_done_cb)(berth_job *job, int status,
                                  const char *errmsg,
                                  berth_infer_response *resp);

/* A decoupled model's response before the final answer (docs/decoupled.md):
 * called zero or more times, always before done, never after it; resp's
 * data borrows worker memory valid only during the call. done then comes
 * once as for any job, with an empty response (no outputs) on success.
 * NULL: the creator takes no partial responses (they are dropped). */
typedef void (*berth_job_partial_cb)(berth_job *job,
                                     berth_infer_response *resp);

/* Called exactly once, after done, when the scheduler holds no more
 * reference to the job (at once, or when the batch it ran in finishes if
 * done came early because of a timeout). The creator frees the job here. */
typedef void (*berth_job_release_cb)(berth_job *job);

/* Choices (OpenAI's n) whose generated tokens a job counts one by one;
 * those of higher indices count when they finish (obs/metrics.c). */
#define BERTH_JOB_TOKEN_CHOICES 16

#define BERTH_PRIORITY_HIGH 0
#define BERTH_PRIORITY_NORMAL 1
#define BERTH_PRIORITY_LEVELS 2

struct berth_job {
  TAILQ_ENTRY(berth_job) link; /* its priority level's queue (scheduler.c) */
  berth_model *model;          /* target model version */
  berth_infer_request req;     /* owned: decoded and validated request */
  uint64_t received_ns;        /* when the frontend had the whole request */
  uint64_t enqueued_ns;        /* uv_hrtime() when queued */
  uint64_t deadline_ns;        /* uv_hrtime() deadline, 0 = none (set by
                                 berth_sched_submit from the request's
                                 "timeout" parameter or the model's
                                 timeout_us, unless the frontend set one) */
  int64_t rows;                /* batch rows (first dim), -1 if unbatched */
  berth_protocol protocol;     /* the frontend (metrics label); REST = 0 */
  berth_http_req *http;        /* borrowed or NULL: the frontend's request,
                                 alive until release (a pipeline's switch
                                 reads its headers) */
  unsigned priority;           /* BERTH_PRIORITY_* */
  berth_job_done_cb done;
  berth_job_partial_cb partial; /* NULL unless the frontend streams a
                                 decoupled model's responses */
  berth_job_release_cb release;
  void *user;                          /* the creator's context */
  struct berth_route_stat *route_stat; /* router.c: the route that chose
                                 model counts the answer, or NULL */
  berth_job_done_cb route_done;        /* router.c: the creator's done while the
                                 router's wraps it */
  struct berth_trace_ctx *trace; /* owned or NULL (tracing off, not sampled):
                                 set by the frontend, freed by
                                 berth_trace_job_finish (trace.h) */
  const char *request_id;        /* borrowed, NUL-terminated or NULL: the
                                 frontend's request id (payload log) */
  bool queued;                   /* linked into model's queue */
  bool running;                  /* part of a batch on a worker */
  bool answered;                 /* done has been called */
  struct berth_seq *seq;         /* borrowed (sequence.h) or NULL: the live
                                 sequence it belongs to */
  bool seq_start, seq_end;       /* its sequence_start / sequence_end */
  /* A decoupled model's responses: worker/worker_io.c counts them and
   * sets first_response_ns before the observers' responded hook and
   * last_response_ns after it (so the hook reads the previous one);
   * obs/metrics.c's observer keeps the tokens (the responses'
   * completion_tokens, per choice index below BERTH_JOB_TOKEN_CHOICES). */
  uint32_t n_responses;
  uint64_t first_response_ns, last_response_ns;
  uint64_t gen_tokens;
  uint32_t gen_tokens_seen[BERTH_JOB_TOKEN_CHOICES];
};

/* Jobs sent to one worker as one INFER frame. */
struct berth_batch {
  uint64_t id;      /* frame id, unique per engine */
  berth_job **jobs; /* owned array of borrowed job pointers */
  size_t n_jobs;
  int64_t rows;         /* total batch rows, -1 when unbatched */
  berth_tensor *inputs; /* owned or NULL: the concatenated inputs, filled
                           only by berth_batch_concat_inputs (scheduler.h)
                           for a consumer that needs them contiguous; NULL:
                           each job's req.inputs, concatenated in job order */
  size_t n_inputs;
  uint64_t formed_ns;   /* taken from the queue */
  uint64_t sent_ns;     /* frame written */
  uint64_t wire_end;    /* worker.c: the worker socket's byte count once
                           its INFER frame is written (an answer before
                           that is a protocol break) */
  uint64_t answered_ns; /* worker's answer received */
  berth_model *model;
  LIST_ENTRY(berth_batch) link; /* the model's running batches */
  bool listed;                  /* linked into model->running */
  json_t *params;               /* owned or NULL: the parameters sent to the
                                 worker instead of jobs[0]'s (a sequence
                                 batch's "sequences" list) */
};

typedef enum {
  BERTH_MODEL_LOADING = 0, /* no worker has reported READY yet */
  BERTH_MODEL_READY,       /* at least one worker is ready */
  BERTH_MODEL_FAILED,      /* the model failed to load; see load_error */
  BERTH_MODEL_UNLOADING,   /* being unloaded (repository.c): finishing its
                                 queued requests, then its workers stop */
  BERTH_MODEL_UNAVAILABLE, /* unloaded: no workers; a load restarts it */
} berth_model_state;

/* A count and a total duration, as Triton's statistics report them. */
typedef struct berth_duration_stat {
  uint64_t count;
  uint64_t ns;
} berth_duration_stat;

/* Cumulative per-model-version statistics, kept by the scheduler and the
 * REST/gRPC frontends (Triton's statistics extension reads them). */
typedef struct berth_model_stats {
  uint64_t last_inference_ms;         /* wall clock (ms since epoch) */
  uint64_t inference_count;           /* requests answered successfully */
  uint64_t execution_count;           /* batches run */
  berth_duration_stat success;        /* request received -> answered, ok */
  berth_duration_stat fail;           /* request received -> answered, failed */
  berth_duration_stat queue;          /* queued -> sent to a worker */
  berth_duration_stat compute_input;  /* batch formed -> frame written */
  berth_duration_stat compute_infer;  /* frame written -> answer received */
  berth_duration_stat compute_output; /* answer received -> encoded */
} berth_model_stats;

struct berth_model {
  berth_engine *engine;
  const berth_model_ops *ops;    /* what it is (never NULL) */
  const berth_model_config *cfg; /* borrowed from engine->cfg */
  char *platform;                /* owned: effective platform name */
  berth_tensor_spec *inputs;     /* owned: effective signature */
  size_t n_inputs;
  berth_tensor_spec *outputs;
  size_t n_outputs;
  bool signature_known; /* false: do not check inputs */
  bool decoupled;       /* config's decoupled, or the worker said
                                     so in READY: one request per batch,
                                     answered by RESPONSE frames */
  berth_model_state state;
  char load_error[512];
  /* scheduler */
  uint32_t max_batch_size; /* effective (config, else READY hint) */
  uint32_t instances;      /* effective worker count */
  TAILQ_HEAD(berth_job_queue, berth_job) queue[BERTH_PRIORITY_LEVELS];
  size_t q_len;          /* both levels */
  int64_t q_rows;        /* batch rows queued, both levels */
  berth_batcher batcher; /* when to send (batcher.h); closed by
                                     berth_sched_close before the model's
                                     memory may go */
  LIST_HEAD(berth_batch_list, berth_batch) running; /* batches on workers */
  /* supervisor */
  berth_worker **workers; /* owned array of owned slots */
  size_t n_workers;
  size_t n_ready;    /* workers that said READY and live */
  bool at_start;     /* configured at start and not since
                                     loaded through the repository API:
                                     its failure to load stops the server
                                     under server.exit_on_error */
  bool has_served;   /* a worker has been ready once: while a
                                     crashed worker restarts, requests wait
                                     in the queue instead of getting 503 */
  uint64_t inflight; /* submitted, not yet answered (the
                                     batcher's load signal; a gauge) */
  berth_model_stats stats;
  berth_model_metrics metrics;     /* Prometheus (metrics.c) */
  struct berth_pipeline *pipeline; /* non-NULL: this is a pipeline's
                                      stand-in (pipeline.c's own link) */
  struct berth_seq_table *seqs;    /* owned or NULL: live sequences (made
                                     at the first sequence request of a
                                     model with sequence_batching) */
  struct berth_native *native;     /* owned by backend/native.c or NULL:
                                     a native backend's loaded model */
  /* autoscaling and the memory budget (autoscale.c alone writes these) */
  struct berth_autoscale_state *as; /* owned or NULL: the policy's state,
                                     made at the first tick of a model with
                                     an autoscaling block */
  const berth_model_config *as_cfg; /* the config `as` was made for */
  uint32_t desired;                 /* instances wanted (a gauge) */
  bool panic;                       /* the policy is in panic mode */
  bool asleep;                      /* its workers were stopped on purpose
                                     (scale to zero, eviction): it stays
                                     READY and a request wakes it */
  uint64_t evictions;               /* times the memory budget evicted it */
  double resident_bytes;            /* its workers' resident memory, last
                                     measured (0 while asleep) */
  double unit_bytes;                /* one worker's, last measured with
                                     every worker ready (0: not yet) */
  uint64_t last_used_ns;            /* last request submitted (LRU) */
};

/* Appends a part of the /metrics exposition (Prometheus text) to out;
 * BERTH_OK or the berth_buf error. */
typedef int (*berth_collect_cb)(void *ctx, berth_buf *out);

typedef struct berth_collector {
  berth_collect_cb collect;
  void *ctx; /* borrowed */
} berth_collector;

#define BERTH_MAX_COLLECTORS 8

/* A part of the engine above core/ (observers, frontends, pipelines) that
 * the engine starts and stops without naming it. main.c lists them; the
 * engine calls each present hook in list order (free in reverse order).
 * Every hook runs on the loop thread. */
typedef struct berth_module {
  const char *name;
  /* After the models exist, before anything listens: make state, register
   * observers, collectors and models (pipelines). */
  int (*init)(struct berth_engine *e, berth_errmsg *err);
  /* Open files, start listeners (berth_engine_add_listener). */
  int (*start)(struct berth_engine *e, berth_errmsg *err);
  /* The drain began (SIGTERM): the listeners take no new connections;
   * end what would hold the drain up (open streams that never finish). */
  void (*drain)(struct berth_engine *e);
  /* No request is left and the listeners are closed: close own handles. */
  void (*close)(struct berth_engine *e);
  /* After the loop has stopped: free own state. Also after a failed init
   * or start, so it must cope with a half-made state. */
  void (*free)(struct berth_engine *e);
} berth_module;

#define BERTH_MAX_LISTENERS 8

struct berth_engine {
  uv_loop_t *loop;
  const berth_module *const *modules; /* borrowed array (main.c) */
  size_t n_modules;
  berth_observers observers; /* registered hooks (observer.h) */
  berth_collector collectors[BERTH_MAX_COLLECTORS]; /* /metrics parts */
  size_t n_collectors;
  berth_httpd *listeners[BERTH_MAX_LISTENERS]; /* owned: every listening
                                     server, closed in reverse order */
  size_t n_listeners;
  berth_config cfg;     /* owned */
  berth_model **models; /* owned array of n_models owned models
                                     (pointers: a model never moves, jobs
                                     and workers point to it) */
  size_t n_models;
  berth_tls_ctx *tls_rest;       /* owned or NULL: TLS for REST */
  berth_tls_ctx *tls_grpc;       /* owned or NULL: TLS for gRPC (h2 only) */
  berth_auth auth;               /* tokens; disabled when none */
  berth_httpd_conn_budget conns; /* server.max_connections, shared by every
                                     listener (httpd.h) */
  bool draining;                 /* SIGTERM seen: refuse new work */
  bool stopping;                 /* drain over: workers being stopped */
  berth_sched_state sched;       /* the scheduler's (scheduler.h) */
  berth_supervisor_state sup;    /* the supervisor's (supervisor.h) */
  bool closing;                  /* workers gone: handles being closed */
  size_t inflight;               /* accepted requests not yet answered */
  uint64_t next_batch_id;
  uv_signal_t sig_term, sig_int;
  uv_timer_t drain_timer;
  int exit_code;
  struct berth_payload_log *payload_log; /* owned or NULL (payload_log.h) */
  struct berth_repository *repo;         /* owned (repository.c); NULL until the
                                     repository API is first used */
  struct berth_router *router;           /* owned (router.c): traffic routes */
  struct berth_tracer *tracer;       /* owned or NULL: tracing off (trace.h) */
  struct berth_ui *ui;               /* owned (ui.c): the dashboard's samples
                                     and recent errors */
  struct berth_pipeline **pipelines; /* owned array of owned pipelines
                                     (pipeline.c), one per cfg.pipelines */
  size_t n_pipelines;
  berth_model **composites; /* owned array of borrowed models that
                                     are not worker-backed (pipelines'
                                     stand-ins), berth_engine_add_composite */
  size_t n_composites;
  struct berth_shm_registry *shm;        /* owned (shm_registry.c): registered
                                     shared-memory regions; made by
                                     berth_shm_module */
  struct berth_grpc_health *grpc_health; /* owned (grpc_health.c): the open
                                     gRPC health Watch calls; NULL until
                                     the first */
  struct berth_gateway *gateway; /* owned (gateway/gateway.c) or NULL: gateway
                                     mode (docs/gateway.md) */
  const berth_model_ops *native_ops;   /* borrowed or NULL: the operations of
                                     models with backend: native, set by
                                     the native module (backend/native.c) */
  struct berth_autoscaler *autoscaler; /* owned (autoscale.c): the sampling
                                     timer; made by berth_autoscale_module */
};

/* engine.c */
/* The protocol extensions the server serves, as its metadata lists them
 * (REST GET /v2 and gRPC ServerMetadata): berth_server_n_extensions names. */
extern const char *const berth_server_extensions[];
extern const size_t berth_server_n_extensions;

/* Takes cfg (it is emptied), makes the models and calls every module's
 * init (modules: borrowed, must outlive the engine). */
int berth_engine_init(berth_engine *e, uv_loop_t *loop, berth_config *cfg,
                      const berth_module *const *modules, size_t n_modules,
                      berth_errmsg *err);
/* Registers an observer (copied) whose hooks every job event reaches;
 * BERTH_E_INTERNAL when BERTH_MAX_OBSERVERS are registered. */
int berth_engine_observe(berth_engine *e, const berth_observer *o,
                         berth_errmsg *err);
/* Registers a part of GET /metrics, rendered after the models' and the
 * process's families in registration order. */
int berth_engine_add_collector(berth_engine *e, berth_collect_cb collect,
                               void *ctx, berth_errmsg *err);
/* Hands a started listener to the engine, which stops it accepting at
 * drain and closes it (after the workers stopped) in reverse order. */
int berth_engine_add_listener(berth_engine *e, berth_httpd *h,
                              berth_errmsg *err);
int berth_engine_start(berth_engine *e, berth_errmsg *err);

/* Stop intake and drain (SIGTERM). Idempotent. */
void berth_engine_begin_drain(berth_engine *e);
/* A frontend accepted an inference request (it counts in the drain). */
void berth_engine_request_begin(berth_engine *e);
/* That request is over; the drain finishes when none is left. */
void berth_engine_request_end(berth_engine *e);
void berth_engine_free(berth_engine *e);

/* model.c */
int berth_model_init(berth_model *m, berth_engine *e,
                     const berth_model_config *cfg, berth_errmsg *err);
void berth_model_free(berth_model *m);
/* Looks a model up; version NULL means the newest READY version (numeric
 * order when both versions are numbers, else string order), else the newest
 * one in service (loading, failed, unloading), else the newest unloaded one.
 * NULL if absent. */
berth_model *berth_model_find(berth_engine *e, const char *name,
                              size_t name_len, const char *version,
                              size_t version_len);
/* true if any version of name exists. */
bool berth_model_name_exists(berth_engine *e, const char *name, size_t len);
/* The composite model called name (a pipeline), when no worker-backed model
 * has that name and version is NULL or "1"; else NULL. Its signature is
 * brought up to date (ops->refresh). */
berth_model *berth_composite_find(berth_engine *e, const char *name,
                                  size_t name_len, const char *version,
                                  size_t version_len);
/* Registers a composite model (borrowed: it must outlive the engine's
 * models, i.e. until berth_engine_free). */
int berth_engine_add_composite(berth_engine *e, berth_model *m,
                               berth_errmsg *err);
/* The worker-backed model's operations (model.c). */
extern const berth_model_ops berth_worker_model_ops;
/* Gives m the operations its config's backend names (backend: native and
 * e->native_ops set: those; else the worker-backed ones). */
void berth_model_pick_ops(berth_model *m);
/* Starts serving m: ops->start, or the supervisor's workers. */
int berth_model_start(berth_model *m, berth_errmsg *err);
/* m->ops->submit: queues the job on m (or runs the composite). */
int berth_model_submit(berth_model *m, berth_job *job, berth_errmsg *err);
bool berth_model_ready(const berth_model *m);
/* m->ops->state: the repository index's state name. */
const char *berth_model_state_name(const berth_model *m, char *reason,
                                   size_t cap);
/* "model 'x' version 'v' is not ready: why" (or "pipeline 'x' ..."),
 * for the 503 a frontend answers (cap bytes, NUL-terminated). */
void berth_model_not_ready_message(const berth_model *m, char *out, size_t cap);
/* The server is ready (REST /v2/health/ready, gRPC ServerReady and the
 * health service's ""): not draining, and every model version ready but
 * those unloaded on purpose. */
bool berth_server_ready(const berth_engine *e);
/* Takes new inference requests: ready, or restarting after a crash (the
 * requests queue for the restarted worker). */
bool berth_model_accepting(const berth_model *m);
/* Adopts the signature a worker reported in READY (JSON payload), unless
 * the config declared one. */
int berth_model_adopt_ready(berth_model *m, const char *json, size_t len,
                            berth_errmsg *err);

/* signature.c: checks a request against the model's signature (and, for
 * every model, the shape bound of an input without elements, see
 * berth_signature_max_extent): every input
 * known and present, datatype and shape matching (-1 matches any size),
 * requested outputs known. BERTH_E_INVALID with a message naming the input. */
int berth_signature_check(const berth_model *m, const berth_infer_request *r,
                          berth_errmsg *err);
/* The most elements a request can carry, so the bound on the shape of an
 * input without elements: max(server.max_body_bytes,
 * server.grpc_max_message_bytes). */
uint64_t berth_signature_max_extent(const berth_config *cfg);
/* The answer to a request with 0 rows for a batching model, given without
 * calling it: each requested output (all when none is named) empty, with
 * the declared shape and 0 as its first dimension. out NULL: only checks
 * that the answer can be formed. BERTH_E_INVALID when the model does not
 * declare the outputs' dtype and shape beyond the first dimension. On
 * success out holds owned tensors (berth_infer_response_clear); on failure
 * out may hold some, which the caller clears too. */
int berth_signature_zero_rows(const berth_model *m,
                              const berth_infer_request *r,
                              berth_infer_response *out, berth_errmsg *err);

/* repository.c: the model repository API, shared by the REST and gRPC
 * frontends (docs/rest-api.md, "Model repository"). The engine knows the
 * model versions of its config and those loaded since with a full model
 * entry; a version is never forgotten, only unloaded (its berth_model stays,
 * so jobs and workers may point to it; a version added at run time has a
 * config owned by the repository). Every call runs on the loop thread.
 * The token a call needs is checked by the frontends before calling these
 * (the REST route table, gRPC's method table); the model control mode and
 * the path and code rules are checked here (repo_access.h). */
typedef void (*berth_repo_done_cb)(void *arg, int status, const char *msg);
/* [{"name", "version", "state", "reason"}] of every model version; state is
 * READY, LOADING, UNLOADING or UNAVAILABLE (failed to load, or unloaded:
 * reason says which). ready_only: READY versions only. New reference; NULL
 * when out of memory. */
json_t *berth_repository_index(berth_engine *e, bool ready_only);
/* Loads model name. Refused (BERTH_E_FORBIDDEN, naming the flag) unless
 * server.model_control_mode is explicit. config NULL: every known version
 * of name that is not serving is (re)started from its current config; one
 * that is READY stays as it is. config given (a JSON object, or a JSON/YAML
 * string, in the schema of a models[] entry): validated (errors name
 * "parameters.config.<key>"); its path must lie inside server.repositories
 * (repo_access.h: BERTH_E_FORBIDDEN otherwise) and is replaced by its
 * realpath; a runtime that runs code needs trusted (the caller sent an
 * admin token). It adds the version, or replaces the config of that
 * version: a serving version keeps serving until the new workers are all
 * ready (repo_replace.h), and keeps serving the old config when they fail;
 * one not serving is unloaded first, without dropping its queued requests.
 * Without trusted, a failed load's message is a fixed text (the worker's,
 * which may quote the file, goes to the log). done(arg, status, msg) is
 * called exactly once, possibly before this returns: BERTH_OK when every
 * version concerned is READY, else the first failure (BERTH_E_CONFIG,
 * BERTH_E_FORBIDDEN, BERTH_E_NOT_FOUND, BERTH_E_MODEL with the load error,
 * BERTH_E_SHUTDOWN). */
void berth_repository_load(berth_engine *e, const char *name, json_t *config,
                           bool trusted, berth_repo_done_cb done, void *arg);
/* As berth_repository_load with model files from the request (Triton's
 * "file:" parameters; borrowed, may be NULL): refused (BERTH_E_FORBIDDEN)
 * unless trusted; config must be a whole entry without a path; the files
 * are written into a private folder (repo_files.h) that the entry's path
 * names, removed when the version is unloaded or its config replaced, and
 * at server stop. */
struct berth_repo_files;
void berth_repository_load_files(berth_engine *e, const char *name,
                                 json_t *config, bool trusted,
                                 const struct berth_repo_files *files,
                                 berth_repo_done_cb done, void *arg);
/* Unloads model name (only that version when version is not NULL): new
 * requests are refused at once (503), queued and running ones finish
 * (bounded by server.drain_timeout_s), then its workers get SHUTDOWN (TERM,
 * then KILL after 5 s) and their slots are freed. done as for load, called
 * when every version concerned is UNAVAILABLE. */
void berth_repository_unload(berth_engine *e, const char *name,
                             const char *version, berth_repo_done_cb done,
                             void *arg);
/* Resolves server.repositories (BERTH_E_CONFIG naming a bad entry); at
 * engine start. */
int berth_repository_start(berth_engine *e, berth_errmsg *err);
/* Frees what the repository owns (after the loop has stopped). */
void berth_repository_free(berth_engine *e);
/* model.c: gives an unloaded model (no workers, nothing queued) a new
 * config (borrowed; it must outlive the model or the next reconfigure):
 * signature, platform and batch size start again from it. */
int berth_model_reconfigure(berth_model *m, const berth_model_config *cfg,
                            berth_errmsg *err);

#endif
