/* Berth engine: checks a decoded request against its model's signature
 * before it reaches a worker, so a bad request is a clear 400 naming the
 * input, never a model crash. */
#include <stdio.h>
#include <string.h>

#include "engine.h"

static void format_shape(char *out, size_t cap, const int64_t *shape,
                         uint32_t ndim) {
  size_t off = 0;
  off += (size_t)snprintf(out + off, cap - off, "[");
  for (uint32_t i = 0; i < ndim && off < cap; i++)
    off += (size_t)snprintf(out + off, cap - off, "%s%lld", i ? "," : "",
                            (long long)shape[i]);
  if (off < cap)
    snprintf(out + off, cap - off, "]");
}

static const berth_tensor_spec *find_spec(const berth_tensor_spec *s, size_t n,
                                          const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s[i].name, name) == 0)
      return &s[i];
  return NULL;
}

static void list_names(char *out, size_t cap, const berth_tensor_spec *s,
                       size_t n) {
  size_t off = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n && off < cap; i++)
    off += (size_t)snprintf(out + off, cap - off, "%s'%s'", i ? ", " : "",
                            s[i].name);
}

static int check_input(const berth_model *m, const berth_tensor *t,
                       const berth_tensor_spec *spec, berth_errmsg *err) {
  if (t->dtype != spec->dtype)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '%s' has datatype %s, but model '%s' expects %s",
                      t->name, berth_dtype_name(t->dtype), m->cfg->name,
                      berth_dtype_name(spec->dtype));
  bool ok = t->ndim == spec->ndim;
  for (uint32_t i = 0; ok && i < t->ndim; i++)
    ok = spec->shape[i] < 0 || spec->shape[i] == t->shape[i];
  if (!ok) {
    char got[160], want[160];
    format_shape(got, sizeof got, t->shape, t->ndim);
    format_shape(want, sizeof want, spec->shape, spec->ndim);
    return berth_errf(err, BERTH_E_INVALID,
                      "input '%s' has shape %s, but model '%s' expects %s "
                      "(-1 = any size)", t->name, got, m->cfg->name, want);
  }
  return BERTH_OK;
}

int berth_signature_check(const berth_model *m, const berth_infer_request *r,
                          berth_errmsg *err) {
  char names[256];
  if (m->signature_known) {
    for (size_t i = 0; i < r->n_inputs; i++) {
      const berth_tensor *t = &r->inputs[i];
      const berth_tensor_spec *s = find_spec(m->inputs, m->n_inputs, t->name);
      if (s == NULL) {
        list_names(names, sizeof names, m->inputs, m->n_inputs);
        return berth_errf(err, BERTH_E_INVALID,
                          "unknown input '%s'; model '%s' takes %s", t->name,
                          m->cfg->name, names);
      }
      int rc = check_input(m, t, s, err);
      if (rc != BERTH_OK)
        return rc;
    }
    for (size_t i = 0; i < m->n_inputs; i++) {
      bool found = false;
      for (size_t k = 0; k < r->n_inputs && !found; k++)
        found = strcmp(r->inputs[k].name, m->inputs[i].name) == 0;
      if (!found)
        return berth_errf(err, BERTH_E_INVALID,
                          "missing input '%s' (%s, shape of %u dimensions) "
                          "for model '%s'", m->inputs[i].name,
                          berth_dtype_name(m->inputs[i].dtype),
                          m->inputs[i].ndim, m->cfg->name);
    }
  }
  if (m->n_outputs > 0) {
    for (size_t i = 0; i < r->n_outputs; i++) {
      if (find_spec(m->outputs, m->n_outputs, r->outputs[i].name) == NULL) {
        list_names(names, sizeof names, m->outputs, m->n_outputs);
        return berth_errf(err, BERTH_E_INVALID,
                          "unknown output '%s'; model '%s' has %s",
                          r->outputs[i].name, m->cfg->name, names);
      }
    }
  }
  return BERTH_OK;
}
