/* Berth engine: checks a decoded request against its model's signature
 * before it reaches a worker, so a bad request is a clear 400 naming the
 * input, never a model crash. */
#include <stdio.h>
#include <stdlib.h>
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
                      "(-1 = any size)",
                      t->name, got, m->cfg->name, want);
  }
  return BERTH_OK;
}

uint64_t berth_signature_max_extent(const berth_config *cfg) {
  size_t max = cfg->max_body_bytes;
  if (cfg->grpc_max_message_bytes > max)
    max = cfg->grpc_max_message_bytes;
  return max > 0 ? (uint64_t)max : 1;
}

/* A tensor with elements is bounded by its data (each element takes at
 * least one byte of a body that max_body_bytes bounds); one without
 * elements carries no data, so its shape is bounded here: every dimension
 * and the product of the non-zero ones at most what a request could carry
 * (overflow-checked), so no absurd shape reaches a worker or the batcher's
 * row counters. */
static int check_extent(const berth_model *m, const berth_tensor *t,
                        berth_errmsg *err) {
  char got[160];
  uint64_t numel = 0, extent = 0;
  for (uint32_t i = 0; i < t->ndim; i++)
    if (t->shape[i] < 0)
      return berth_errf(err, BERTH_E_INVALID,
                        "input '%s': dimension %u is %lld; dimensions must be "
                        "0 or more",
                        t->name, i, (long long)t->shape[i]);
  if (berth_shape_numel(t->shape, t->ndim, &numel) == BERTH_OK && numel > 0)
    return BERTH_OK;
  uint64_t max = berth_signature_max_extent(&m->engine->cfg);
  if (berth_shape_extent(t->shape, t->ndim, max, &extent) == BERTH_OK)
    return BERTH_OK;
  format_shape(got, sizeof got, t->shape, t->ndim);
  return berth_errf(err, BERTH_E_INVALID,
                    "input '%s' has shape %s: its dimensions describe more "
                    "than %llu elements, the most a request can carry "
                    "(server.max_body_bytes); no model is called",
                    t->name, got, (unsigned long long)max);
}

int berth_signature_check(const berth_model *m, const berth_infer_request *r,
                          berth_errmsg *err) {
  char names[256];
  for (size_t i = 0; i < r->n_inputs; i++) {
    int rc = check_extent(m, &r->inputs[i], err);
    if (rc != BERTH_OK)
      return rc;
  }
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
      bool found = m->inputs[i].optional;
      for (size_t k = 0; k < r->n_inputs && !found; k++)
        found = strcmp(r->inputs[k].name, m->inputs[i].name) == 0;
      if (!found)
        return berth_errf(err, BERTH_E_INVALID,
                          "missing input '%s' (%s, shape of %u dimensions) "
                          "for model '%s'",
                          m->inputs[i].name,
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

/* Fills out (when not NULL) with one empty output of a zero-row answer:
 * the spec's shape with 0 rows. */
static int empty_output(const berth_model *m, const berth_tensor_spec *s,
                        berth_tensor *out, berth_errmsg *err) {
  bool known = s->ndim >= 1 && s->dtype != BERTH_DT_INVALID;
  for (uint32_t k = 1; known && k < s->ndim; k++)
    known = s->shape[k] >= 0;
  if (!known)
    return berth_errf(err, BERTH_E_INVALID,
                      "a request with 0 rows cannot be answered: model '%s' "
                      "does not declare the shape of output '%s' beyond its "
                      "first dimension; send at least one row",
                      m->cfg->name, s->name);
  if (out == NULL)
    return BERTH_OK;
  out->name = strdup(s->name);
  out->data = malloc(1); /* no bytes, but never NULL for the encoders */
  if (out->name == NULL || out->data == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  out->dtype = s->dtype;
  out->ndim = s->ndim;
  memcpy(out->shape, s->shape, sizeof out->shape);
  out->shape[0] = 0;
  out->nbytes = 0;
  return BERTH_OK;
}

int berth_signature_zero_rows(const berth_model *m,
                              const berth_infer_request *r,
                              berth_infer_response *out, berth_errmsg *err) {
  if (m->n_outputs == 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "a request with 0 rows cannot be answered: model '%s' "
                      "declares no outputs, so their shapes are unknown; send "
                      "at least one row",
                      m->cfg->name);
  size_t n = r->n_outputs > 0 ? r->n_outputs : m->n_outputs;
  if (out != NULL) {
    memset(out, 0, sizeof *out);
    out->outputs = calloc(n, sizeof *out->outputs);
    if (out->outputs == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    out->n_outputs = n;
  }
  for (size_t i = 0; i < n; i++) {
    const berth_tensor_spec *s =
        r->n_outputs > 0
            ? find_spec(m->outputs, m->n_outputs, r->outputs[i].name)
            : &m->outputs[i];
    if (s == NULL)
      return berth_errf(err, BERTH_E_INVALID, "unknown output '%s'",
                        r->outputs[i].name);
    int rc = empty_output(m, s, out != NULL ? &out->outputs[i] : NULL, err);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}
