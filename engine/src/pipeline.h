/* Berth engine: pipelines — a named DAG of steps, each step a model (or,
 * for a switch step, one model picked per request), called like a model.
 *
 * pipeline_config.c parses and validates the `pipelines:` list of the
 * engine document against the models of the same document (unknown steps,
 * models, inputs and outputs, cycles, datatype and shape mismatches where both
 * signatures are declared); errors name the key path,
 * "pipelines[0].steps[2].inputs.x: ...". docs/pipelines.md is the schema.
 *
 * pipeline.c runs them. Each pipeline has a stand-in berth_model (not in
 * engine->models) that carries its name, platform "pipeline", effective
 * signature and statistics, so the frontends find, describe and answer a
 * pipeline as they do a model; berth_sched_submit hands a job whose model
 * is a pipeline to berth_pipeline_submit. Each step becomes an internal
 * berth_job submitted to the step's model (batched with any other traffic
 * to it); its outputs are copied into the run's state (raw tensors, never
 * JSON) and start the steps that read them. A failure fails the request
 * with a message naming the step. pipeline_state.c says whether a pipeline
 * is ready (its step models are) and, if not, which step model holds it up.
 */
#ifndef BERTH_PIPELINE_H
#define BERTH_PIPELINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "berth/error.h"
#include "buf.h"
#include "config.h"
#include "httpd.h"
#include "infer.h"
#include "metrics.h"

/* Most steps per pipeline, pipelines per document, wires per step. */
#define BERTH_PIPE_MAX_STEPS 64
#define BERTH_PIPE_MAX_PIPELINES 256
#define BERTH_PIPE_MAX_WIRES 256
#define BERTH_PIPE_MAX_CASES 64

/* Where a tensor comes from: a pipeline input (step == -1) or an output of
 * step `step`. */
typedef struct berth_pipe_wire {
  char *name;      /* owned: the name it takes (step input, pipeline output) */
  int step;        /* -1: the request's input `tensor` */
  char *tensor;    /* owned: the source tensor's name */
} berth_pipe_wire;

typedef enum {
  BERTH_PIPE_ON_INPUT = 0,   /* first element of a request input */
  BERTH_PIPE_ON_HEADER,      /* an HTTP header / gRPC metadata entry */
  BERTH_PIPE_ON_PARAMETER,   /* a request parameter */
} berth_pipe_on;

typedef enum {
  BERTH_PIPE_EQUALS = 0,
  BERTH_PIPE_IN,
  BERTH_PIPE_LT,
  BERTH_PIPE_GT,
} berth_pipe_op;

typedef struct berth_pipe_case {
  berth_pipe_op op;
  json_t *value;   /* owned: a string, number or bool (IN: a list of them) */
  char *model;     /* owned */
} berth_pipe_case;

typedef struct berth_pipe_switch {
  berth_pipe_on on;
  char *name;      /* owned: input, header (lower case) or parameter */
  berth_pipe_case *cases; /* owned array, tried in order */
  size_t n_cases;
  char *dflt;      /* owned or NULL: the model when no case matches */
} berth_pipe_switch;

typedef struct berth_pipe_step {
  char *name;      /* owned; [A-Za-z0-9_-]+ (no '.': refs split on it) */
  char *model;     /* owned, or NULL for a switch step */
  char *version;   /* owned or NULL: the newest ready version */
  berth_pipe_switch *sw; /* owned or NULL */
  berth_pipe_wire *inputs; /* owned array; none: `from` passes all */
  size_t n_inputs;
  bool wired;      /* `inputs` given; else every tensor of step `from` (or
                      every request input when from == -1) goes in by name */
  int from;        /* default wiring's source step, -1 = request inputs */
  size_t *deps;    /* owned: steps this one waits for (no duplicates) */
  size_t n_deps;
} berth_pipe_step;

typedef struct berth_pipeline_config {
  char *name;                  /* owned */
  berth_tensor_spec *inputs;   /* owned or NULL (derived from the steps) */
  size_t n_inputs;
  bool inputs_declared;
  berth_pipe_wire *outputs;    /* owned; none: every output of the last step */
  size_t n_outputs;
  berth_pipe_step *steps;      /* owned */
  size_t n_steps;
  json_t *entry;               /* owned: the validated entry (Triton config) */
} berth_pipeline_config;

/* pipeline_config.c: parses the `pipelines` list `v` (path "pipelines")
 * into cfg->pipelines, checking it against cfg->models. */
int berth_pipeline_config_parse(json_t *v, berth_config *cfg,
                                const char *path, berth_errmsg *err);
/* Frees n configs and the array. Safe with NULL. */
void berth_pipeline_configs_free(berth_pipeline_config *p, size_t n);

/* pipeline_switch.c: picks the model of switch step st for a request (its
 * inputs and parameters; http: its headers, or NULL) into *model (borrowed
 * from the config). BERTH_E_INVALID naming the step when no case matches
 * and there is no default. */
int berth_pipe_switch_choose(const berth_pipe_step *st,
                             const berth_infer_request *req,
                             const berth_http_req *http, const char **model,
                             berth_errmsg *err);

/* ---- runtime (pipeline.c) ---------------------------------------------- */

struct berth_engine;
struct berth_model;
struct berth_job;
typedef struct berth_pipeline berth_pipeline;

/* Creates engine->pipelines from engine->cfg.pipelines. */
int berth_pipelines_init(struct berth_engine *e, berth_errmsg *err);
void berth_pipelines_free(struct berth_engine *e);
/* The stand-in model of pipeline `name`, or NULL. */
struct berth_model *berth_pipeline_find(struct berth_engine *e,
                                        const char *name, size_t len);
/* The stand-in model of engine->pipelines[i] (i < n_pipelines). */
struct berth_model *berth_pipeline_model_at(struct berth_engine *e, size_t i);
/* The validated config of pipeline stand-in m (borrowed). */
const berth_pipeline_config *berth_pipeline_config_of(const struct berth_model *m);
/* pipeline_state.c: the engine model that step s calls as its which-th
 * choice: 0 for a model step; for a switch, case `which`, then (which ==
 * n_cases) the default; NULL past them or when no such model is served.
 * Without the step's version, the newest ready version. */
struct berth_model *berth_pipe_step_model(struct berth_engine *e,
                                          const berth_pipe_step *s,
                                          size_t which);
/* pipeline_state.c: ready: every model a step may call is ready. */
bool berth_pipeline_ready(const struct berth_model *m);
/* pipeline_state.c: Triton's state of the pipeline for the repository
 * index: "READY" when it is ready, else "LOADING" (a step model is still loading) or
 * "UNAVAILABLE" (one failed to load or was unloaded, or the server is
 * shutting down); reason (cap bytes, "" when READY) names the step and its
 * model. Returns a static string. */
const char *berth_pipeline_state(const struct berth_model *m, char *reason,
                                 size_t cap);
/* Runs job (whose model is a pipeline's stand-in). Same contract as
 * berth_sched_submit: on failure nothing is called and the caller keeps the
 * job; on BERTH_OK job->done and then job->release are called exactly once,
 * perhaps before this returns. */
int berth_pipeline_submit(struct berth_model *m, struct berth_job *job,
                          berth_errmsg *err);
/* Appends berth_pipeline_* metric families (docs/metrics.md). */
int berth_pipeline_metrics_render(struct berth_engine *e, berth_buf *out);

#endif
