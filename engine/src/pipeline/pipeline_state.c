/* Berth engine: a pipeline's readiness and state (pipeline.h): it follows
 * the models its steps may call; when it is not ready, the reason names
 * the step and the model that holds it up. */
#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "pipeline.h"

berth_model *berth_pipe_step_model(berth_engine *e, const berth_pipe_step *s,
                                   size_t which) {
  const char *name = NULL, *version = s->version;
  if (s->model != NULL) {
    if (which > 0)
      return NULL;
    name = s->model;
  } else if (which < s->sw->n_cases) {
    name = s->sw->cases[which].model;
  } else if (which == s->sw->n_cases && s->sw->dflt != NULL) {
    name = s->sw->dflt;
  } else {
    return NULL;
  }
  return berth_model_find(e, name, strlen(name), version,
                          version ? strlen(version) : 0);
}

bool berth_pipeline_ready(berth_engine *e, const berth_pipeline_config *pc) {
  if (e->draining)
    return false;
  for (size_t i = 0; i < pc->n_steps; i++) {
    const berth_pipe_step *s = &pc->steps[i];
    size_t n = s->model != NULL ? 1 : s->sw->n_cases + 1;
    for (size_t k = 0; k < n; k++) {
      berth_model *sm = berth_pipe_step_model(e, s, k);
      if (sm == NULL && s->model == NULL && k == s->sw->n_cases)
        continue; /* a switch without a default */
      if (sm == NULL || !berth_model_ready(sm))
        return false;
    }
  }
  return true;
}

/* A step model's state when it is not ready: "LOADING" while it may still
 * become ready, else "UNAVAILABLE"; why (static or its load_error). */
static const char *step_model_state(const berth_model *sm, const char **why) {
  switch (sm->state) {
  case BERTH_MODEL_FAILED:
    *why = sm->load_error;
    return "UNAVAILABLE";
  case BERTH_MODEL_UNLOADING:
    *why = "it is being unloaded";
    return "UNAVAILABLE";
  case BERTH_MODEL_UNAVAILABLE:
    *why = "it was unloaded";
    return "UNAVAILABLE";
  default:
    *why = "its worker is still loading it";
    return "LOADING";
  }
}

const char *berth_pipeline_state(berth_engine *e,
                                 const berth_pipeline_config *pc, char *reason,
                                 size_t cap) {
  snprintf(reason, cap, "%s", "");
  if (e->draining) {
    snprintf(reason, cap, "the server is shutting down");
    return "UNAVAILABLE";
  }
  const char *state = "READY";
  for (size_t i = 0; i < pc->n_steps; i++) {
    const berth_pipe_step *s = &pc->steps[i];
    size_t n = s->model != NULL ? 1 : s->sw->n_cases + 1;
    for (size_t k = 0; k < n; k++) {
      berth_model *sm = berth_pipe_step_model(e, s, k);
      if (sm == NULL && s->model == NULL && k == s->sw->n_cases)
        continue; /* a switch without a default */
      if (sm != NULL && berth_model_ready(sm))
        continue;
      const char *why = "it is not served", *st = "UNAVAILABLE";
      if (sm != NULL)
        st = step_model_state(sm, &why);
      /* the first step model that cannot become ready, else the first
       * one still loading */
      if (strcmp(state, "READY") == 0 ||
          (strcmp(state, "LOADING") == 0 && strcmp(st, "UNAVAILABLE") == 0)) {
        const char *mname = s->model != NULL     ? s->model
                            : k < s->sw->n_cases ? s->sw->cases[k].model
                                                 : s->sw->dflt;
        snprintf(reason, cap, "step \"%.100s\" (model %.100s%s%.40s): %.250s",
                 s->name, mname, sm != NULL ? " version " : "",
                 sm != NULL ? sm->cfg->version : "", why);
        state = st;
      }
    }
  }
  return state;
}
