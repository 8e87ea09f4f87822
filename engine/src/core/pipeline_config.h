/* Berth engine: the configuration of pipelines (pipeline_config.c).
 *
 * pipeline_config.c parses and validates the `pipelines:` list of the
 * engine document against the models of the same document (unknown steps,
 * models, inputs and outputs, cycles, datatype and shape mismatches where both
 * signatures are declared); errors name the key path,
 * "pipelines[0].steps[2].inputs.x: ...". docs/pipelines.md is the schema.
 * Running them is pipeline/pipeline.c.
 */
#ifndef BERTH_PIPELINE_CONFIG_H
#define BERTH_PIPELINE_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "berth/error.h"
#include "config.h"

/* Most steps per pipeline, pipelines per document, wires per step. */
#define BERTH_PIPE_MAX_STEPS 64
#define BERTH_PIPE_MAX_PIPELINES 256
#define BERTH_PIPE_MAX_WIRES 256
#define BERTH_PIPE_MAX_CASES 64

/* Where a tensor comes from: a pipeline input (step == -1) or an output of
 * step `step`. */
typedef struct berth_pipe_wire {
  char *name;   /* owned: the name it takes (step input, pipeline output) */
  int step;     /* -1: the request's input `tensor` */
  char *tensor; /* owned: the source tensor's name */
} berth_pipe_wire;

typedef enum {
  BERTH_PIPE_ON_INPUT = 0, /* first element of a request input */
  BERTH_PIPE_ON_HEADER,    /* an HTTP header / gRPC metadata entry */
  BERTH_PIPE_ON_PARAMETER, /* a request parameter */
} berth_pipe_on;

typedef enum {
  BERTH_PIPE_EQUALS = 0,
  BERTH_PIPE_IN,
  BERTH_PIPE_LT,
  BERTH_PIPE_GT,
} berth_pipe_op;

typedef struct berth_pipe_case {
  berth_pipe_op op;
  json_t *value; /* owned: a string, number or bool (IN: a list of them) */
  char *model;   /* owned */
} berth_pipe_case;

typedef struct berth_pipe_switch {
  berth_pipe_on on;
  char *name;             /* owned: input, header (lower case) or parameter */
  berth_pipe_case *cases; /* owned array, tried in order */
  size_t n_cases;
  char *dflt; /* owned or NULL: the model when no case matches */
} berth_pipe_switch;

typedef struct berth_pipe_step {
  char *name;            /* owned; [A-Za-z0-9_-]+ (no '.': refs split on it) */
  char *model;           /* owned, or NULL for a switch step */
  char *version;         /* owned or NULL: the newest ready version */
  berth_pipe_switch *sw; /* owned or NULL */
  berth_pipe_wire *inputs; /* owned array; none: `from` passes all */
  size_t n_inputs;
  bool wired;   /* `inputs` given; else every tensor of step `from` (or
                      every request input when from == -1) goes in by name */
  int from;     /* default wiring's source step, -1 = request inputs */
  size_t *deps; /* owned: steps this one waits for (no duplicates) */
  size_t n_deps;
} berth_pipe_step;

typedef struct berth_pipeline_config {
  char *name;                /* owned */
  berth_tensor_spec *inputs; /* owned or NULL (derived from the steps) */
  size_t n_inputs;
  bool inputs_declared;
  berth_pipe_wire *outputs; /* owned; none: every output of the last step */
  size_t n_outputs;
  berth_pipe_step *steps; /* owned */
  size_t n_steps;
  json_t *entry; /* owned: the validated entry (Triton config) */
} berth_pipeline_config;

/* pipeline_config.c: parses the `pipelines` list `v` (path "pipelines")
 * into cfg->pipelines, checking it against cfg->models. */
int berth_pipeline_config_parse(json_t *v, berth_config *cfg, const char *path,
                                berth_errmsg *err);
/* Frees n configs and the array. Safe with NULL. */
void berth_pipeline_configs_free(berth_pipeline_config *p, size_t n);

#endif
