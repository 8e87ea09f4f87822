/* Berth engine: the context object and the model-version, job, batch and
 * worker structures that the router, scheduler and supervisor share.
 *
 * There are no globals: every module reaches the engine through the
 * berth_engine passed in or stored in its model. Everything runs on the one
 * libuv loop thread.
 *
 * Ownership at a glance:
 *   berth_engine owns the config, the models array, the httpd.
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
#include <uv.h>

#include "auth.h"
#include "batcher.h"
#include "config.h"
#include "tls.h"
#include "httpd.h"
#include "infer.h"
#include "metrics.h"
#include "trace.h"
#include "pipeline.h"

typedef struct berth_engine berth_engine;
typedef struct berth_model berth_model;
typedef struct berth_job berth_job;
typedef struct berth_batch berth_batch;
typedef struct berth_worker berth_worker;

/* Called exactly once per job. On success status is BERTH_OK and resp holds
 * the outputs; their data may borrow from worker memory that is valid only
 * during the call (encode or copy before returning). On failure resp is NULL
 * and errmsg says why (NUL-terminated, never NULL). The job is no longer
 * referenced by the scheduler when this runs; the callee may free it. */
typedef void (*berth_job_done_cb)(berth_job *job, int status,
                                  const char *errmsg,
                                  berth_infer_response *resp);

/* Called exactly once, after done, when the scheduler holds no more
 * reference to the job (at once, or when the batch it ran in finishes if
 * done came early because of a timeout). The creator frees the job here. */
typedef void (*berth_job_release_cb)(berth_job *job);

#define BERTH_PRIORITY_HIGH 0
#define BERTH_PRIORITY_NORMAL 1
#define BERTH_PRIORITY_LEVELS 2

struct berth_job {
  berth_job *prev, *next;     /* queue links (scheduler.c) */
  berth_model *model;         /* target model version */
  berth_infer_request req;    /* owned: decoded and validated request */
  uint64_t received_ns;       /* when the frontend had the whole request */
  uint64_t enqueued_ns;       /* uv_hrtime() when queued */
  uint64_t deadline_ns;       /* uv_hrtime() deadline, 0 = none (set by
                                 berth_sched_submit from the request's
                                 "timeout" parameter or the model's
                                 timeout_us, unless the frontend set one) */
  int64_t rows;               /* batch rows (first dim), -1 if unbatched */
  berth_protocol protocol;    /* the frontend (metrics label); REST = 0 */
  berth_http_req *http;       /* borrowed or NULL: the frontend's request,
                                 alive until release (a pipeline's switch
                                 reads its headers) */
  unsigned priority;          /* BERTH_PRIORITY_* */
  berth_job_done_cb done;
  berth_job_release_cb release;
  void *user;                 /* the creator's context */
  struct berth_route_stat *route_stat; /* router.c: the route that chose
                                 model counts the answer, or NULL */
  berth_job_done_cb route_done; /* router.c: the creator's done while the
                                 router's wraps it */
  berth_trace_ctx *trace;     /* owned or NULL (tracing off, not sampled):
                                 set by the frontend, freed by
                                 berth_trace_job_finish (trace.h) */
  const char *request_id;     /* borrowed, NUL-terminated or NULL: the
                                 frontend's request id (payload log) */
  bool queued;                /* linked into model's queue */
  bool running;               /* part of a batch on a worker */
  bool answered;              /* done has been called */
};

/* Jobs sent to one worker as one INFER frame. */
struct berth_batch {
  uint64_t id;                /* frame id, unique per engine */
  berth_job **jobs;           /* owned array of borrowed job pointers */
  size_t n_jobs;
  int64_t rows;               /* total batch rows, -1 when unbatched */
  berth_tensor *inputs;       /* owned when n_jobs > 1: the concatenated
                                 inputs; NULL: use jobs[0]->req.inputs */
  size_t n_inputs;
  uint64_t formed_ns;         /* taken from the queue */
  uint64_t sent_ns;           /* frame written */
  uint64_t answered_ns;       /* worker's answer received */
  berth_model *model;
  berth_batch *prev, *next;   /* the model's running batches */
};

typedef enum {
  BERTH_MODEL_LOADING = 0,    /* no worker has reported READY yet */
  BERTH_MODEL_READY,          /* at least one worker is ready */
  BERTH_MODEL_FAILED,         /* the model failed to load; see load_error */
  BERTH_MODEL_UNLOADING,      /* being unloaded (repository.c): finishing its
                                 queued requests, then its workers stop */
  BERTH_MODEL_UNAVAILABLE,    /* unloaded: no workers; a load restarts it */
} berth_model_state;

/* A count and a total duration, as Triton's statistics report them. */
typedef struct berth_duration_stat {
  uint64_t count;
  uint64_t ns;
} berth_duration_stat;

/* Cumulative per-model-version statistics, kept by the scheduler and the
 * REST/gRPC frontends (Triton's statistics extension reads them). */
typedef struct berth_model_stats {
  uint64_t last_inference_ms;     /* wall clock (ms since epoch) */
  uint64_t inference_count;       /* requests answered successfully */
  uint64_t execution_count;       /* batches run */
  berth_duration_stat success;    /* request received -> answered, ok */
  berth_duration_stat fail;       /* request received -> answered, failed */
  berth_duration_stat queue;      /* queued -> sent to a worker */
  berth_duration_stat compute_input;  /* batch formed -> frame written */
  berth_duration_stat compute_infer;  /* frame written -> answer received */
  berth_duration_stat compute_output; /* answer received -> encoded */
} berth_model_stats;

struct berth_model {
  berth_engine *engine;
  const berth_model_config *cfg;  /* borrowed from engine->cfg */
  char *platform;                 /* owned: effective platform name */
  berth_tensor_spec *inputs;      /* owned: effective signature */
  size_t n_inputs;
  berth_tensor_spec *outputs;
  size_t n_outputs;
  bool signature_known;           /* false: do not check inputs */
  berth_model_state state;
  char load_error[512];
  /* scheduler */
  uint32_t max_batch_size;        /* effective (config, else READY hint) */
  uint32_t instances;             /* effective worker count */
  berth_job *q_head[BERTH_PRIORITY_LEVELS], *q_tail[BERTH_PRIORITY_LEVELS];
  size_t q_len;                   /* both levels */
  int64_t q_rows;                 /* batch rows queued, both levels */
  berth_batcher batcher;          /* when to send (batcher.h); closed by
                                     berth_sched_close before the model's
                                     memory may go */
  berth_batch *running;           /* batches on workers */
  /* supervisor */
  berth_worker **workers;         /* owned array of owned slots */
  size_t n_workers;
  size_t n_ready;                 /* workers that said READY and live */
  bool has_served;                /* a worker has been ready once: while a
                                     crashed worker restarts, requests wait
                                     in the queue instead of getting 503 */
  berth_model_stats stats;
  berth_model_metrics metrics;    /* Prometheus (metrics.c) */
  struct berth_pipeline *pipeline; /* non-NULL: this is a pipeline's
                                      stand-in, not in engine->models, and
                                      berth_sched_submit runs the pipeline
                                      (pipeline.h) */
};

struct berth_engine {
  uv_loop_t *loop;
  berth_config cfg;               /* owned */
  berth_model **models;           /* owned array of n_models owned models
                                     (pointers: a model never moves, jobs
                                     and workers point to it) */
  size_t n_models;
  berth_httpd *httpd;             /* owned */
  berth_tls_ctx *tls_rest;        /* owned or NULL: TLS for REST */
  berth_tls_ctx *tls_grpc;        /* owned or NULL: TLS for gRPC (h2 only) */
  berth_auth auth;                /* tokens; disabled when none */
  berth_httpd *grpc_httpd;        /* owned: the gRPC listener (grpc.c) */
  berth_httpd *metrics_httpd;     /* owned or NULL: server.metrics_port */
  bool draining;                  /* SIGTERM seen: refuse new work */
  bool stopping;                  /* drain over: workers being stopped */
  bool closing;                   /* workers gone: handles being closed */
  size_t inflight;                /* accepted requests not yet answered */
  uint64_t next_batch_id;
  size_t live_procs;              /* worker processes not yet reaped/freed */
  size_t deadline_jobs;           /* queued or running jobs with a deadline */
  uv_timer_t deadline_timer;      /* sweeps expired jobs while any exist */
  uv_signal_t sig_term, sig_int;
  uv_timer_t drain_timer;
  uv_timer_t stop_timer;
  int exit_code;
  struct berth_payload_log *payload_log; /* owned or NULL (payload_log.h) */
  struct berth_repository *repo;  /* owned (repository.c); NULL until the
                                     repository API is first used */
  struct berth_router *router;    /* owned (router.c): traffic routes */
  berth_tracer *tracer;           /* owned or NULL: tracing off (trace.h) */
  struct berth_ui *ui;            /* owned (ui.c): the dashboard's samples
                                     and recent errors */
  struct berth_pipeline **pipelines; /* owned array of owned pipelines
                                     (pipeline.c), one per cfg.pipelines */
  size_t n_pipelines;
  struct berth_grpc_health *grpc_health; /* owned (grpc_health.c): the open
                                     gRPC health Watch calls; NULL until
                                     the first */
};

/* engine.c */
/* The protocol extensions the server serves, as its metadata lists them
 * (REST GET /v2 and gRPC ServerMetadata): berth_server_n_extensions names. */
extern const char *const berth_server_extensions[];
extern const size_t berth_server_n_extensions;
int berth_engine_init(berth_engine *e, uv_loop_t *loop, berth_config *cfg,
                      berth_errmsg *err);
int berth_engine_start(berth_engine *e, berth_errmsg *err);
/* Stop intake and drain (SIGTERM). Idempotent. */
void berth_engine_begin_drain(berth_engine *e);
/* Called whenever inflight drops; finishes the drain when it reaches 0. */
void berth_engine_request_done(berth_engine *e);
/* Called by the supervisor when every worker of every model has exited
 * after berth_supervisor_stop_all. */
void berth_engine_workers_stopped(berth_engine *e);
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
bool berth_model_ready(const berth_model *m);
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

/* signature.c: checks a request against the model's signature: every input
 * known and present, datatype and shape matching (-1 matches any size),
 * requested outputs known. BERTH_E_INVALID with a message naming the input. */
int berth_signature_check(const berth_model *m, const berth_infer_request *r,
                          berth_errmsg *err);

/* scheduler.c */
/* Queues a job (BERTH_E_OVERLOAD when the queue is full) and dispatches. */
int berth_sched_submit(berth_model *m, berth_job *job, berth_errmsg *err);
/* Sends queued jobs to idle workers. Called after submit and whenever a
 * worker becomes idle. */
void berth_sched_dispatch(berth_model *m);
/* Removes a queued (not yet running) job; returns true if it was queued.
 * Neither callback is called: the caller still owns the job. */
bool berth_sched_cancel(berth_job *job);
/* Sets up the model's scheduler state (timers); berth_sched_close undoes it. */
void berth_sched_init(berth_model *m);
void berth_sched_close(berth_model *m);
void berth_sched_engine_init(berth_engine *e);
void berth_sched_engine_close(berth_engine *e);
/* Fails every queued job of m with status and msg. */
void berth_sched_fail_queued(berth_model *m, int status, const char *msg);
/* Completes every job of a batch with an error and frees the batch. */
void berth_batch_fail(berth_batch *b, int status, const char *msg);
/* What every answered job goes through, for the scheduler's jobs and a
 * pipeline's outer job alike: the model's in-flight count and request
 * metrics (took_ns: received -> answered), the payload log, the dashboard's
 * recent errors, job->done, then the trace's outcome. */
void berth_job_deliver(berth_job *j, int status, const char *msg,
                       berth_infer_response *resp, uint64_t took_ns);
/* The job is no longer referenced: its trace's spans go out (or are
 * dropped), then job->release. */
void berth_job_release_now(berth_job *j);
/* Completes a batch from a worker's RESULT tensors and frees the batch. */
void berth_batch_complete(berth_batch *b, berth_tensor *outs, size_t n,
                          const char *params, size_t params_len);
void berth_batch_free(berth_batch *b);

/* metrics.c: appends the Prometheus exposition of every model version and
 * of the process (GET /metrics). */
int berth_metrics_collect(berth_engine *e, berth_buf *out);

/* supervisor.c */
/* Resident memory of m's live worker processes, summed (bytes, from
 * /proc/<pid>/statm); -1 when none could be read. */
double berth_supervisor_rss(const berth_model *m);
/* Creates the model's worker slots and spawns them. */
int berth_supervisor_start(berth_model *m, berth_errmsg *err);
/* An idle, ready worker of m, or NULL. */
berth_worker *berth_supervisor_idle_worker(berth_model *m);
/* Sends a batch to an idle worker, which takes ownership of it. On failure
 * the batch's jobs are failed and the worker is restarted. */
void berth_worker_run(berth_worker *w, berth_batch *b);
/* Sends SHUTDOWN to every worker, escalates to SIGTERM/SIGKILL after
 * timeout_ms, and calls berth_engine_workers_stopped when all are gone. */
void berth_supervisor_stop_all(berth_engine *e, uint64_t timeout_ms);
/* Frees the worker slots (after stop_all completed). */
void berth_supervisor_free(berth_model *m);

/* rest.c: the OIP REST handler given to the httpd. */
void berth_rest_handle(berth_http_req *req, void *engine);
/* rest.c: the handler of server.metrics_port: GET /metrics only, with the
 * REST port's token rule. */
void berth_rest_metrics_handle(berth_http_req *req, void *engine);

/* repository.c: the model repository API, shared by the REST and gRPC
 * frontends (docs/rest-api.md, "Model repository"). The engine knows the
 * model versions of its config and those loaded since with a full model
 * entry; a version is never forgotten, only unloaded (its berth_model stays,
 * so jobs and workers may point to it; a version added at run time has a
 * config owned by the repository). Every call runs on the loop thread.
 * Admin tokens (a later issue) are checked by the frontends before calling
 * these. */
typedef void (*berth_repo_done_cb)(void *arg, int status, const char *msg);
/* [{"name", "version", "state", "reason"}] of every model version; state is
 * READY, LOADING, UNLOADING or UNAVAILABLE (failed to load, or unloaded:
 * reason says which). ready_only: READY versions only. New reference; NULL
 * when out of memory. */
json_t *berth_repository_index(berth_engine *e, bool ready_only);
/* Loads model name. config NULL: every known version of name that is not
 * serving is (re)started from its current config; one that is READY stays
 * as it is. config given (a JSON object, or a JSON/YAML string, in the
 * schema of a models[] entry): validated (errors name
 * "parameters.config.<key>"); it adds the version, or replaces the config of
 * that version (unloading it first, without dropping its queued requests).
 * done(arg, status, msg) is called exactly once, possibly before this
 * returns: BERTH_OK when every version concerned is READY, else the first
 * failure (BERTH_E_CONFIG, BERTH_E_NOT_FOUND, BERTH_E_MODEL with the load
 * error, BERTH_E_SHUTDOWN). */
void berth_repository_load(berth_engine *e, const char *name,
                           json_t *config, berth_repo_done_cb done,
                           void *arg);
/* Unloads model name (only that version when version is not NULL): new
 * requests are refused at once (503), queued and running ones finish
 * (bounded by server.drain_timeout_s), then its workers get SHUTDOWN (TERM,
 * then KILL after 5 s) and their slots are freed. done as for load, called
 * when every version concerned is UNAVAILABLE. */
void berth_repository_unload(berth_engine *e, const char *name,
                             const char *version, berth_repo_done_cb done,
                             void *arg);
/* Frees what the repository owns (after the loop has stopped). */
void berth_repository_free(berth_engine *e);
/* supervisor.c, for the repository: stop one model's workers (SHUTDOWN to
 * ready ones, TERM to the others; keep_ready: only those not ready, so the
 * ready ones can finish the queue) without restarting them, KILL those
 * still running, and whether none is left. */
void berth_supervisor_stop_model(berth_model *m, bool keep_ready);
void berth_supervisor_kill_model(berth_model *m);
bool berth_supervisor_model_stopped(const berth_model *m);
/* model.c: gives an unloaded model (no workers, nothing queued) a new
 * config (borrowed; it must outlive the model or the next reconfigure):
 * signature, platform and batch size start again from it. */
int berth_model_reconfigure(berth_model *m, const berth_model_config *cfg,
                            berth_errmsg *err);

#endif
