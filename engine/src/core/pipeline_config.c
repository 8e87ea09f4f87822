/* Berth engine: the `pipelines:` list of the engine document — parsing and
 * validation against the document's models. Every error names the key
 * path ("pipelines[0].steps[2].model: unknown model \"clf\""). The schema
 * is docs/pipelines.md. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_config.h"

#define PATH_MAX_LEN 256
#define CF_NAME_MAX 128

static int bad(berth_errmsg *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(berth_errmsg *err, const char *path, const char *fmt, ...) {
  char what[BERTH_ERRMSG_SIZE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return berth_errf(err, BERTH_E_CONFIG, "%s: %s", path, what);
}

static int nomem(berth_errmsg *err, const char *path) {
  return berth_errf(err, BERTH_E_NOMEM, "%s: out of memory", path);
}

static void child(char *out, const char *path, const char *key) {
  snprintf(out, PATH_MAX_LEN, "%.*s.%.60s", PATH_MAX_LEN - 64, path, key);
}

static void index_path(char *out, const char *path, size_t i) {
  snprintf(out, PATH_MAX_LEN, "%.*s[%zu]", PATH_MAX_LEN - 24, path, i);
}

/* [A-Za-z0-9_.-]{1,128}; dots only when allow_dot. */
static bool name_ok(const char *s, bool allow_dot) {
  size_t n = strlen(s);
  if (n == 0 || n > CF_NAME_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '-' ||
          (allow_dot && c == '.')))
      return false;
  }
  return true;
}

/* Checks that obj is a mapping whose keys are all in `keys`
 * (NULL-terminated). */
static int keys_ok(json_t *obj, const char *const *keys, const char *path,
                   berth_errmsg *err) {
  if (!json_is_object(obj))
    return bad(err, path, "expected a mapping");
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    size_t k = 0;
    while (keys[k] != NULL && strcmp(keys[k], key) != 0)
      k++;
    if (keys[k] == NULL) {
      char p[PATH_MAX_LEN];
      child(p, path, key);
      char list[256] = "";
      for (size_t i = 0; keys[i] != NULL; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                 i ? ", " : "", keys[i]);
      return bad(err, p, "unknown key (allowed: %s)", list);
    }
  }
  return BERTH_OK;
}

/* A string value of key, or NULL; BERTH_E_CONFIG when present but not a
 * non-empty string. */
static int opt_string(json_t *obj, const char *key, const char *path,
                      const char **out, berth_errmsg *err) {
  json_t *v = json_object_get(obj, key);
  *out = NULL;
  if (v == NULL)
    return BERTH_OK;
  char p[PATH_MAX_LEN];
  child(p, path, key);
  if (json_is_integer(v) && strcmp(key, "version") == 0)
    return bad(err, p, "write the version as a string (\"%lld\")",
               (long long)json_integer_value(v));
  if (!json_is_string(v) || json_string_length(v) == 0 ||
      json_string_length(v) > 4096)
    return bad(err, p, "expected a non-empty string");
  *out = json_string_value(v);
  return BERTH_OK;
}

static const berth_model_config *
find_model(const berth_config *cfg, const char *name, const char *version) {
  for (size_t i = 0; i < cfg->n_models; i++)
    if (strcmp(cfg->models[i].name, name) == 0 &&
        (version == NULL || strcmp(cfg->models[i].version, version) == 0))
      return &cfg->models[i];
  return NULL;
}

/* ---- freeing ------------------------------------------------------------ */

static void wires_free(berth_pipe_wire *w, size_t n) {
  if (w == NULL)
    return;
  for (size_t i = 0; i < n; i++) {
    free(w[i].name);
    free(w[i].tensor);
  }
  free(w);
}

static void switch_free(berth_pipe_switch *s) {
  if (s == NULL)
    return;
  free(s->name);
  for (size_t i = 0; i < s->n_cases; i++) {
    json_decref(s->cases[i].value);
    free(s->cases[i].model);
  }
  free(s->cases);
  free(s->dflt);
  free(s);
}

static void pipeline_free(berth_pipeline_config *p) {
  free(p->name);
  if (p->inputs != NULL)
    for (size_t i = 0; i < p->n_inputs; i++)
      free(p->inputs[i].name);
  free(p->inputs);
  wires_free(p->outputs, p->n_outputs);
  for (size_t i = 0; p->steps != NULL && i < p->n_steps; i++) {
    berth_pipe_step *s = &p->steps[i];
    free(s->name);
    free(s->model);
    free(s->version);
    switch_free(s->sw);
    wires_free(s->inputs, s->n_inputs);
    free(s->deps);
  }
  free(p->steps);
  json_decref(p->entry);
  memset(p, 0, sizeof *p);
}

void berth_pipeline_configs_free(berth_pipeline_config *p, size_t n) {
  if (p == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    pipeline_free(&p[i]);
  free(p);
}

/* ---- pieces ---------------------------------------------------------------- */

/* inputs: [{name, datatype, shape}] */
static int parse_specs(json_t *v, const char *path, berth_pipeline_config *p,
                       berth_errmsg *err) {
  if (!json_is_array(v) || json_array_size(v) == 0 ||
      json_array_size(v) > BERTH_PIPE_MAX_WIRES)
    return bad(err, path,
               "expected a non-empty list of {name, datatype, "
               "shape} (at most %d)",
               BERTH_PIPE_MAX_WIRES);
  size_t n = json_array_size(v);
  p->inputs = calloc(n, sizeof *p->inputs);
  if (p->inputs == NULL)
    return nomem(err, path);
  p->n_inputs = n;
  p->inputs_declared = true;
  static const char *const keys[] = {"name", "datatype", "shape", NULL};
  for (size_t i = 0; i < n; i++) {
    char ip[PATH_MAX_LEN], kp[PATH_MAX_LEN];
    index_path(ip, path, i);
    json_t *it = json_array_get(v, i);
    int rc = keys_ok(it, keys, ip, err);
    if (rc != BERTH_OK)
      return rc;
    const char *name = json_string_value(json_object_get(it, "name"));
    const char *dt = json_string_value(json_object_get(it, "datatype"));
    json_t *shape = json_object_get(it, "shape");
    if (name == NULL || name[0] == '\0') {
      child(kp, ip, "name");
      return bad(err, kp, "required, a non-empty string");
    }
    berth_dtype d =
        dt ? berth_dtype_from_name(dt, strlen(dt)) : BERTH_DT_INVALID;
    if (d == BERTH_DT_INVALID) {
      child(kp, ip, "datatype");
      return bad(err, kp, "required, a datatype name (FP32, INT64, BYTES...)");
    }
    child(kp, ip, "shape");
    if (!json_is_array(shape) || json_array_size(shape) > BERTH_MAX_DIMS)
      return bad(err, kp, "required, a list of at most %d dimensions",
                 BERTH_MAX_DIMS);
    p->inputs[i].name = strdup(name);
    if (p->inputs[i].name == NULL)
      return nomem(err, ip);
    for (size_t j = 0; j < i; j++)
      if (strcmp(p->inputs[j].name, name) == 0)
        return bad(err, ip, "duplicate input \"%s\"", name);
    p->inputs[i].dtype = d;
    p->inputs[i].ndim = (uint32_t)json_array_size(shape);
    for (size_t k = 0; k < p->inputs[i].ndim; k++) {
      json_t *dv = json_array_get(shape, k);
      if (!json_is_integer(dv) || json_integer_value(dv) < -1)
        return bad(err, kp, "dimensions are integers >= 0, or -1 (any)");
      p->inputs[i].shape[k] = json_integer_value(dv);
    }
  }
  return BERTH_OK;
}

static int step_index(const berth_pipeline_config *p, const char *name,
                      size_t len) {
  for (size_t i = 0; i < p->n_steps; i++)
    if (p->steps[i].name != NULL && strlen(p->steps[i].name) == len &&
        memcmp(p->steps[i].name, name, len) == 0)
      return (int)i;
  return -1;
}

static const berth_tensor_spec *input_spec(const berth_pipeline_config *p,
                                           const char *name) {
  for (size_t i = 0; i < p->n_inputs; i++)
    if (strcmp(p->inputs[i].name, name) == 0)
      return &p->inputs[i];
  return NULL;
}

/* A reference: "$name" (a request input) or "step.tensor". */
static int parse_ref(const berth_pipeline_config *p, json_t *v,
                     const char *path, berth_pipe_wire *w, berth_errmsg *err) {
  const char *s = json_string_value(v);
  if (s == NULL || s[0] == '\0' || strlen(s) > 300)
    return bad(err, path,
               "expected a reference: \"$input\" (a request "
               "input) or \"step.output\"");
  if (s[0] == '$') {
    if (s[1] == '\0')
      return bad(err, path, "\"$\" needs an input name after it");
    if (p->inputs_declared && input_spec(p, s + 1) == NULL)
      return bad(err, path,
                 "the pipeline has no input \"%s\" (its inputs "
                 "are declared)",
                 s + 1);
    w->step = -1;
    w->tensor = strdup(s + 1);
    return w->tensor != NULL ? BERTH_OK : nomem(err, path);
  }
  const char *dot = strchr(s, '.');
  if (dot == NULL || dot[1] == '\0')
    return bad(err, path,
               "\"%s\" is not a reference: write \"$input\" for a "
               "request input or \"step.output\" for a step's output",
               s);
  int k = step_index(p, s, (size_t)(dot - s));
  if (k < 0)
    return bad(err, path, "unknown step \"%.*s\"", (int)(dot - s), s);
  w->step = k;
  w->tensor = strdup(dot + 1);
  return w->tensor != NULL ? BERTH_OK : nomem(err, path);
}

/* A mapping {name: ref}. */
static int parse_wires(const berth_pipeline_config *p, json_t *v,
                       const char *path, berth_pipe_wire **out, size_t *n_out,
                       berth_errmsg *err) {
  if (!json_is_object(v) || json_object_size(v) == 0 ||
      json_object_size(v) > BERTH_PIPE_MAX_WIRES)
    return bad(err, path,
               "expected a mapping of name: reference "
               "(\"$input\" or \"step.output\"), at most %d",
               BERTH_PIPE_MAX_WIRES);
  size_t n = json_object_size(v);
  berth_pipe_wire *w = calloc(n, sizeof *w);
  if (w == NULL)
    return nomem(err, path);
  *out = w;
  *n_out = 0;
  const char *key;
  json_t *ref;
  json_object_foreach(v, key, ref) {
    char kp[PATH_MAX_LEN];
    child(kp, path, key);
    berth_pipe_wire *x = &w[*n_out];
    x->name = strdup(key);
    if (x->name == NULL)
      return nomem(err, kp);
    (*n_out)++;
    int rc = parse_ref(p, ref, kp, x, err);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

static int model_ref(const berth_config *cfg, json_t *v, const char *path,
                     char **out, berth_errmsg *err) {
  const char *s = json_string_value(v);
  if (s == NULL || !name_ok(s, true))
    return bad(err, path, "expected a model name");
  if (find_model(cfg, s, NULL) == NULL)
    return bad(err, path,
               "unknown model \"%s\" (pipelines call models of "
               "the same document)",
               s);
  *out = strdup(s);
  return *out != NULL ? BERTH_OK : nomem(err, path);
}

static bool scalar_ok(json_t *v) {
  return json_is_string(v) || json_is_number(v) || json_is_boolean(v);
}

static int parse_switch(const berth_config *cfg, const berth_pipeline_config *p,
                        json_t *v, const char *path, berth_pipe_switch **out,
                        berth_errmsg *err) {
  static const char *const keys[] = {"input", "header",  "parameter",
                                     "cases", "default", NULL};
  int rc = keys_ok(v, keys, path, err);
  if (rc != BERTH_OK)
    return rc;
  berth_pipe_switch *s = calloc(1, sizeof *s);
  if (s == NULL)
    return nomem(err, path);
  *out = s;
  char kp[PATH_MAX_LEN];
  static const char *const ons[] = {"input", "header", "parameter"};
  const char *name = NULL;
  int found = -1;
  for (int k = 0; k < 3; k++) {
    if (json_object_get(v, ons[k]) == NULL)
      continue;
    if (found >= 0)
      return bad(err, path,
                 "give one of input, header or parameter, not "
                 "both %s and %s",
                 ons[found], ons[k]);
    found = k;
    rc = opt_string(v, ons[k], path, &name, err);
    if (rc != BERTH_OK)
      return rc;
  }
  if (found < 0)
    return bad(err, path,
               "say what the switch reads: input: NAME, header: "
               "NAME or parameter: NAME");
  s->on = (berth_pipe_on)found;
  child(kp, path, ons[found]);
  if (s->on == BERTH_PIPE_ON_INPUT && p->inputs_declared &&
      input_spec(p, name) == NULL)
    return bad(err, kp, "the pipeline has no input \"%s\"", name);
  s->name = strdup(name);
  if (s->name == NULL)
    return nomem(err, kp);
  if (s->on == BERTH_PIPE_ON_HEADER)
    for (char *c = s->name; *c; c++)
      if (*c >= 'A' && *c <= 'Z')
        *c = (char)(*c - 'A' + 'a');
  json_t *cases = json_object_get(v, "cases");
  child(kp, path, "cases");
  if (!json_is_array(cases) || json_array_size(cases) == 0 ||
      json_array_size(cases) > BERTH_PIPE_MAX_CASES)
    return bad(err, kp,
               "required: a non-empty list of {equals|in|lt|gt: "
               "value, model: name} (at most %d)",
               BERTH_PIPE_MAX_CASES);
  s->cases = calloc(json_array_size(cases), sizeof *s->cases);
  if (s->cases == NULL)
    return nomem(err, kp);
  static const char *const ckeys[] = {"equals", "in",    "lt",
                                      "gt",     "model", NULL};
  static const char *const ops[] = {"equals", "in", "lt", "gt"};
  for (size_t i = 0; i < json_array_size(cases); i++) {
    char cp[PATH_MAX_LEN], vp[PATH_MAX_LEN];
    index_path(cp, kp, i);
    json_t *c = json_array_get(cases, i);
    rc = keys_ok(c, ckeys, cp, err);
    if (rc != BERTH_OK)
      return rc;
    berth_pipe_case *bc = &s->cases[s->n_cases];
    int test = -1;
    for (int k = 0; k < 4; k++)
      if (json_object_get(c, ops[k]) != NULL) {
        if (test >= 0)
          return bad(err, cp,
                     "give one test (equals, in, lt or gt), not "
                     "both %s and %s",
                     ops[test], ops[k]);
        test = k;
      }
    if (test < 0)
      return bad(err, cp, "needs a test: equals, in, lt or gt");
    bc->op = (berth_pipe_op)test;
    json_t *val = json_object_get(c, ops[test]);
    child(vp, cp, ops[test]);
    if (bc->op == BERTH_PIPE_IN) {
      bool ok = json_is_array(val) && json_array_size(val) > 0 &&
                json_array_size(val) <= 1024;
      for (size_t k = 0; ok && k < json_array_size(val); k++)
        ok = scalar_ok(json_array_get(val, k));
      if (!ok)
        return bad(err, vp, "expected a non-empty list of strings or numbers");
    } else if (bc->op == BERTH_PIPE_EQUALS) {
      if (!scalar_ok(val))
        return bad(err, vp, "expected a string, a number or a bool");
    } else if (!json_is_number(val)) {
      return bad(err, vp, "expected a number");
    }
    bc->value = json_incref(val);
    s->n_cases++;
    child(vp, cp, "model");
    json_t *mv = json_object_get(c, "model");
    if (mv == NULL)
      return bad(err, vp, "required: the model this case runs");
    rc = model_ref(cfg, mv, vp, &bc->model, err);
    if (rc != BERTH_OK)
      return rc;
  }
  json_t *d = json_object_get(v, "default");
  if (d != NULL) {
    child(kp, path, "default");
    rc = model_ref(cfg, d, kp, &s->dflt, err);
  }
  return rc;
}

/* ---- checks over the whole graph ------------------------------------------ */

static int add_dep(berth_pipe_step *s, size_t d, const char *path,
                   berth_errmsg *err) {
  for (size_t i = 0; i < s->n_deps; i++)
    if (s->deps[i] == d)
      return BERTH_OK;
  size_t *nd = realloc(s->deps, (s->n_deps + 1) * sizeof *nd);
  if (nd == NULL)
    return nomem(err, path);
  s->deps = nd;
  s->deps[s->n_deps++] = d;
  return BERTH_OK;
}

/* Depth-first search for a cycle: 0 unseen, 1 on the stack, 2 done. */
static int find_cycle(const berth_pipeline_config *p, size_t i,
                      unsigned char *mark, size_t *stack, size_t depth,
                      const char *path, berth_errmsg *err) {
  mark[i] = 1;
  stack[depth] = i;
  const berth_pipe_step *s = &p->steps[i];
  for (size_t k = 0; k < s->n_deps; k++) {
    size_t d = s->deps[k];
    if (mark[d] == 1) {
      char loop[400] = "";
      size_t from = 0;
      while (stack[from] != d)
        from++;
      for (size_t j = from; j <= depth; j++)
        snprintf(loop + strlen(loop), sizeof loop - strlen(loop), "%s -> ",
                 p->steps[stack[j]].name);
      snprintf(loop + strlen(loop), sizeof loop - strlen(loop), "%s",
               p->steps[d].name);
      return bad(err, path,
                 "the steps form a cycle (%s); a step can only "
                 "read outputs of steps that do not read its own",
                 loop);
    }
    if (mark[d] == 0) {
      int rc = find_cycle(p, d, mark, stack, depth + 1, path, err);
      if (rc != BERTH_OK)
        return rc;
    }
  }
  mark[i] = 2;
  return BERTH_OK;
}

/* The declared output spec `tensor` of step s's model(s); NULL when some
 * model does not declare its outputs; *missing when one declares them and
 * lacks it. */
static const berth_tensor_spec *
model_output(const berth_model_config *m, const char *tensor, bool *missing) {
  *missing = false;
  if (m == NULL || !m->outputs_declared)
    return NULL;
  for (size_t i = 0; i < m->n_outputs; i++)
    if (strcmp(m->outputs[i].name, tensor) == 0)
      return &m->outputs[i];
  *missing = true;
  return NULL;
}

static const berth_tensor_spec *model_input(const berth_model_config *m,
                                            const char *tensor, bool *missing) {
  *missing = false;
  if (m == NULL || !m->inputs_declared)
    return NULL;
  for (size_t i = 0; i < m->n_inputs; i++)
    if (strcmp(m->inputs[i].name, tensor) == 0)
      return &m->inputs[i];
  *missing = true;
  return NULL;
}

/* The models a step may call (1, or the switch's cases and default). */
static size_t step_models(const berth_config *cfg, const berth_pipe_step *s,
                          const berth_model_config **out, size_t cap) {
  size_t n = 0;
  if (s->model != NULL) {
    out[n++] = find_model(cfg, s->model, s->version);
    return n;
  }
  for (size_t i = 0; i < s->sw->n_cases && n < cap; i++)
    out[n++] = find_model(cfg, s->sw->cases[i].model, NULL);
  if (s->sw->dflt != NULL && n < cap)
    out[n++] = find_model(cfg, s->sw->dflt, NULL);
  return n;
}

/* Same rank, and equal sizes where both are fixed (-1 matches any). */
static bool shapes_agree(const berth_tensor_spec *a,
                         const berth_tensor_spec *b) {
  if (a->ndim != b->ndim)
    return false;
  for (uint32_t k = 0; k < a->ndim; k++)
    if (a->shape[k] >= 0 && b->shape[k] >= 0 && a->shape[k] != b->shape[k])
      return false;
  return true;
}

static const char *shape_text(const berth_tensor_spec *s, char *out,
                              size_t cap) {
  size_t off = (size_t)snprintf(out, cap, "[");
  for (uint32_t k = 0; k < s->ndim && off < cap; k++)
    off += (size_t)snprintf(out + off, cap - off, "%s%lld", k ? ", " : "",
                            (long long)s->shape[k]);
  if (off < cap)
    snprintf(out + off, cap - off, "]");
  return out;
}

/* dtype and shape of src (what `what` names) against dst, its reader. */
static int agree(const berth_tensor_spec *src, const berth_tensor_spec *dst,
                 const char *what, const char *path, berth_errmsg *err) {
  char a[128], b[128];
  if (src == NULL || dst == NULL)
    return BERTH_OK;
  if (src->dtype != dst->dtype)
    return bad(err, path, "%s is %s but what reads it takes %s", what,
               berth_dtype_name(src->dtype), berth_dtype_name(dst->dtype));
  if (!shapes_agree(src, dst))
    return bad(err, path, "%s has shape %s but what reads it takes %s", what,
               shape_text(src, a, sizeof a), shape_text(dst, b, sizeof b));
  return BERTH_OK;
}

/* Checks a wire's source exists in every declared signature and that its
 * datatype and shape agree with what reads it (dst: the spec of the reader,
 * or NULL). */
static int check_source(const berth_config *cfg, const berth_pipeline_config *p,
                        const berth_pipe_wire *w, const berth_tensor_spec *dst,
                        const char *path, berth_errmsg *err) {
  if (w->step < 0) {
    char what[200];
    snprintf(what, sizeof what, "input \"%.150s\"", w->tensor);
    return agree(input_spec(p, w->tensor), dst, what, path, err);
  }
  const berth_pipe_step *from = &p->steps[w->step];
  const berth_model_config *ms[BERTH_PIPE_MAX_CASES + 1];
  size_t n = step_models(cfg, from, ms, BERTH_PIPE_MAX_CASES + 1);
  for (size_t i = 0; i < n; i++) {
    bool missing;
    const berth_tensor_spec *src = model_output(ms[i], w->tensor, &missing);
    if (missing)
      return bad(err, path, "step \"%s\" (model %s) has no output \"%s\"",
                 from->name, ms[i]->name, w->tensor);
    char what[300];
    snprintf(what, sizeof what, "output \"%.150s\" of step \"%.128s\"",
             w->tensor, from->name);
    int rc = agree(src, dst, what, path, err);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

static int check_types(const berth_config *cfg, const berth_pipeline_config *p,
                       const char *path, berth_errmsg *err) {
  char ip[PATH_MAX_LEN], sp[PATH_MAX_LEN], wp[PATH_MAX_LEN];
  for (size_t i = 0; i < p->n_steps; i++) {
    const berth_pipe_step *s = &p->steps[i];
    index_path(ip, path, i);
    child(sp, ip, "inputs");
    const berth_model_config *ms[BERTH_PIPE_MAX_CASES + 1];
    size_t n = step_models(cfg, s, ms, BERTH_PIPE_MAX_CASES + 1);
    for (size_t k = 0; k < s->n_inputs; k++) {
      child(wp, sp, s->inputs[k].name);
      for (size_t m = 0; m < n; m++) {
        bool missing;
        const berth_tensor_spec *dst =
            model_input(ms[m], s->inputs[k].name, &missing);
        if (missing)
          return bad(err, wp, "model %s has no input \"%s\"", ms[m]->name,
                     s->inputs[k].name);
        int rc = check_source(cfg, p, &s->inputs[k], dst, wp, err);
        if (rc != BERTH_OK)
          return rc;
      }
    }
  }
  return BERTH_OK;
}

/* ---- one pipeline ---------------------------------------------------------- */

static int parse_step_body(const berth_config *cfg, berth_pipeline_config *p,
                           size_t i, json_t *it, const char *sp,
                           berth_errmsg *err) {
  berth_pipe_step *s = &p->steps[i];
  char kp[PATH_MAX_LEN];
  json_t *model = json_object_get(it, "model");
  json_t *sw = json_object_get(it, "switch");
  if ((model == NULL) == (sw == NULL))
    return bad(err, sp,
               "give the step either a model or a switch (a "
               "python step is turned into a model by the berth command)");
  const char *version;
  int rc = opt_string(it, "version", sp, &version, err);
  if (rc != BERTH_OK)
    return rc;
  if (model != NULL) {
    child(kp, sp, "model");
    rc = model_ref(cfg, model, kp, &s->model, err);
    if (rc == BERTH_OK && version != NULL) {
      child(kp, sp, "version");
      if (find_model(cfg, s->model, version) == NULL)
        return bad(err, kp, "model \"%s\" has no version \"%s\"", s->model,
                   version);
      s->version = strdup(version);
      if (s->version == NULL)
        return nomem(err, kp);
    }
  } else {
    child(kp, sp, "switch");
    if (version != NULL)
      return bad(err, kp,
                 "a switch step picks models by name; give no "
                 "version");
    rc = parse_switch(cfg, p, sw, kp, &s->sw, err);
  }
  if (rc != BERTH_OK)
    return rc;
  json_t *inputs = json_object_get(it, "inputs");
  s->from = (int)i - 1;
  if (inputs != NULL) {
    child(kp, sp, "inputs");
    rc = parse_wires(p, inputs, kp, &s->inputs, &s->n_inputs, err);
    if (rc != BERTH_OK)
      return rc;
    s->wired = true;
    for (size_t k = 0; k < s->n_inputs; k++) {
      if (s->inputs[k].step == (int)i) {
        char wp[PATH_MAX_LEN];
        child(wp, kp, s->inputs[k].name);
        return bad(err, wp, "a step cannot read its own output");
      }
      if (s->inputs[k].step >= 0) {
        rc = add_dep(s, (size_t)s->inputs[k].step, kp, err);
        if (rc != BERTH_OK)
          return rc;
      }
    }
  } else if (i > 0) {
    rc = add_dep(s, i - 1, sp, err);
  }
  return rc;
}

static int parse_pipeline(const berth_config *cfg, json_t *v, const char *path,
                          berth_pipeline_config *p, berth_errmsg *err) {
  static const char *const keys[] = {"name", "inputs", "steps", "outputs",
                                     NULL};
  int rc = keys_ok(v, keys, path, err);
  if (rc != BERTH_OK)
    return rc;
  p->entry = json_incref(v);
  char kp[PATH_MAX_LEN];
  child(kp, path, "name");
  const char *name = json_string_value(json_object_get(v, "name"));
  if (name == NULL || !name_ok(name, true))
    return bad(err, kp, "required: 1..%d characters of [A-Za-z0-9_.-]",
               CF_NAME_MAX);
  if (find_model(cfg, name, NULL) != NULL)
    return bad(err, kp,
               "\"%s\" is also a model's name; a pipeline is "
               "called like a model, so the names must differ",
               name);
  p->name = strdup(name);
  if (p->name == NULL)
    return nomem(err, kp);
  json_t *inputs = json_object_get(v, "inputs");
  if (inputs != NULL) {
    child(kp, path, "inputs");
    rc = parse_specs(inputs, kp, p, err);
    if (rc != BERTH_OK)
      return rc;
  }
  json_t *steps = json_object_get(v, "steps");
  child(kp, path, "steps");
  if (!json_is_array(steps) || json_array_size(steps) == 0 ||
      json_array_size(steps) > BERTH_PIPE_MAX_STEPS)
    return bad(err, kp, "required: a non-empty list of steps (at most %d)",
               BERTH_PIPE_MAX_STEPS);
  size_t n = json_array_size(steps);
  p->steps = calloc(n, sizeof *p->steps);
  if (p->steps == NULL)
    return nomem(err, kp);
  p->n_steps = n;
  static const char *const skeys[] = {"name",   "model",  "version",
                                      "inputs", "switch", NULL};
  /* names first: a step may read a later step's output (it then runs
   * after it) */
  for (size_t i = 0; i < n; i++) {
    char sp[PATH_MAX_LEN], np[PATH_MAX_LEN];
    index_path(sp, kp, i);
    json_t *it = json_array_get(steps, i);
    rc = keys_ok(it, skeys, sp, err);
    if (rc != BERTH_OK)
      return rc;
    const char *sn = json_string_value(json_object_get(it, "name"));
    child(np, sp, "name");
    if (sn == NULL || !name_ok(sn, false))
      return bad(err, np,
                 "required: 1..%d characters of [A-Za-z0-9_-] (no "
                 "dots: references are written step.output)",
                 CF_NAME_MAX);
    if (step_index(p, sn, strlen(sn)) >= 0)
      return bad(err, np, "duplicate step name \"%s\"", sn);
    p->steps[i].name = strdup(sn);
    if (p->steps[i].name == NULL)
      return nomem(err, np);
  }
  for (size_t i = 0; i < n; i++) {
    char sp[PATH_MAX_LEN];
    index_path(sp, kp, i);
    rc = parse_step_body(cfg, p, i, json_array_get(steps, i), sp, err);
    if (rc != BERTH_OK)
      return rc;
  }
  unsigned char mark[BERTH_PIPE_MAX_STEPS] = {0};
  size_t stack[BERTH_PIPE_MAX_STEPS];
  for (size_t i = 0; i < n; i++)
    if (mark[i] == 0) {
      rc = find_cycle(p, i, mark, stack, 0, kp, err);
      if (rc != BERTH_OK)
        return rc;
    }
  rc = check_types(cfg, p, kp, err);
  if (rc != BERTH_OK)
    return rc;
  json_t *outputs = json_object_get(v, "outputs");
  if (outputs != NULL) {
    child(kp, path, "outputs");
    rc = parse_wires(p, outputs, kp, &p->outputs, &p->n_outputs, err);
    for (size_t k = 0; rc == BERTH_OK && k < p->n_outputs; k++) {
      char wp[PATH_MAX_LEN];
      child(wp, kp, p->outputs[k].name);
      rc = check_source(cfg, p, &p->outputs[k], NULL, wp, err);
    }
  }
  return rc;
}

int berth_pipeline_config_parse(json_t *v, berth_config *cfg, const char *path,
                                berth_errmsg *err) {
  if (!json_is_array(v))
    return bad(err, path, "expected a list of pipelines");
  size_t n = json_array_size(v);
  if (n == 0)
    return BERTH_OK;
  if (n > BERTH_PIPE_MAX_PIPELINES)
    return bad(err, path, "at most %d pipelines, got %zu",
               BERTH_PIPE_MAX_PIPELINES, n);
  cfg->pipelines = calloc(n, sizeof *cfg->pipelines);
  if (cfg->pipelines == NULL)
    return nomem(err, path);
  cfg->n_pipelines = n;
  for (size_t i = 0; i < n; i++) {
    char ip[PATH_MAX_LEN];
    index_path(ip, path, i);
    berth_pipeline_config *p = &cfg->pipelines[i];
    int rc = parse_pipeline(cfg, json_array_get(v, i), ip, p, err);
    if (rc != BERTH_OK)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(cfg->pipelines[j].name, p->name) == 0) {
        char np[PATH_MAX_LEN];
        child(np, ip, "name");
        return bad(err, np, "duplicate pipeline \"%s\" (also %s[%zu])", p->name,
                   path, j);
      }
  }
  return BERTH_OK;
}
