/* Berth engine: pipelines — a named DAG of steps, each step a model (or,
 * for a switch step, one model picked per request), called like a model.
 *
 * Their configuration (the `pipelines:` list of the engine document) is
 * parsed by core/pipeline_config.c (pipeline_config.h).
 *
 * pipeline.c runs them. Each pipeline has a stand-in berth_model (not in
 * engine->models) that carries its name, platform "pipeline", effective
 * signature and statistics, so the frontends find, describe and answer a
 * pipeline as they do a model: it is a composite model (engine.h) whose
 * operations submit to berth_pipeline_submit. Each step becomes an internal
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
#include "pipeline_config.h"
#include "httpd.h"
#include "infer.h"
#include "model_metrics.h"

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

struct berth_module;
/* The pipelines module (main.c's list): berth_pipelines_init (and their
 * metric families), berth_pipelines_free. */
extern const struct berth_module berth_pipeline_module;

/* Creates engine->pipelines from engine->cfg.pipelines. */
int berth_pipelines_init(struct berth_engine *e, berth_errmsg *err);
void berth_pipelines_free(struct berth_engine *e);
/* The stand-in model of pipeline `name`, or NULL. */
struct berth_model *berth_pipeline_find(struct berth_engine *e,
                                        const char *name, size_t len);
/* The stand-in model of engine->pipelines[i] (i < n_pipelines). */
struct berth_model *berth_pipeline_model_at(struct berth_engine *e, size_t i);
/* The validated config of pipeline stand-in m (borrowed). */
const berth_pipeline_config *
berth_pipeline_config_of(const struct berth_model *m);
/* pipeline_state.c: the engine model that step s calls as its which-th
 * choice: 0 for a model step; for a switch, case `which`, then (which ==
 * n_cases) the default; NULL past them or when no such model is served.
 * Without the step's version, the newest ready version. */
struct berth_model *berth_pipe_step_model(struct berth_engine *e,
                                          const berth_pipe_step *s,
                                          size_t which);
/* pipeline_state.c: ready: every model a step of pc may call is ready. */
bool berth_pipeline_ready(struct berth_engine *e,
                          const berth_pipeline_config *pc);
/* pipeline_state.c: Triton's state of the pipeline for the repository
 * index: "READY" when it is ready, else "LOADING" (a step model is still loading) or
 * "UNAVAILABLE" (one failed to load or was unloaded, or the server is
 * shutting down); reason (cap bytes, "" when READY) names the step and its
 * model. Returns a static string. */
const char *berth_pipeline_state(struct berth_engine *e,
                                 const berth_pipeline_config *pc, char *reason,
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
