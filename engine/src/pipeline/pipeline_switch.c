/* Berth engine: a pipeline's switch steps — reading the request input,
 * header or parameter a switch names and picking the model of the first
 * case that matches (pipeline.h, docs/pipelines.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

static const berth_tensor *find_tensor(const berth_tensor *ts, size_t n,
                                       const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(ts[i].name, name) == 0)
      return &ts[i];
  return NULL;
}

typedef struct subject {
  bool present, is_num;
  double num;
  const char *str;
  size_t len;
} subject;

static bool text_number(const char *s, size_t len, double *out) {
  char buf[64];
  if (len == 0 || len >= sizeof buf)
    return false;
  memcpy(buf, s, len);
  buf[len] = '\0';
  char *end;
  *out = strtod(buf, &end);
  return *end == '\0' && !isnan(*out);
}

static bool subject_number(const subject *s, double *out) {
  if (s->is_num) {
    *out = s->num;
    return true;
  }
  return text_number(s->str, s->len, out);
}

static bool value_equals(const subject *s, json_t *v) {
  double a, b;
  if (json_is_string(v)) {
    if (!s->is_num)
      return s->len == json_string_length(v) &&
             memcmp(s->str, json_string_value(v), s->len) == 0;
    return text_number(json_string_value(v), json_string_length(v), &b) &&
           s->num == b;
  }
  b = json_is_boolean(v) ? (json_is_true(v) ? 1 : 0) : json_number_value(v);
  return subject_number(s, &a) && a == b;
}

static bool case_matches(const subject *s, const berth_pipe_case *c) {
  double a;
  if (!s->present)
    return false;
  switch (c->op) {
  case BERTH_PIPE_EQUALS:
    return value_equals(s, c->value);
  case BERTH_PIPE_IN:
    for (size_t i = 0; i < json_array_size(c->value); i++)
      if (value_equals(s, json_array_get(c->value, i)))
        return true;
    return false;
  case BERTH_PIPE_LT:
    return subject_number(s, &a) && a < json_number_value(c->value);
  case BERTH_PIPE_GT:
    return subject_number(s, &a) && a > json_number_value(c->value);
  }
  return false;
}

/* The first element of a tensor as a subject. */
static int tensor_subject(const berth_tensor *t, subject *s,
                          berth_errmsg *err) {
  uint64_t numel = 0;
  berth_shape_numel(t->shape, t->ndim, &numel);
  if (numel == 0)
    return berth_errf(err, BERTH_E_INVALID, "input '%s' is empty", t->name);
  const uint8_t *d = t->data;
  s->present = true;
  s->is_num = true;
  switch (t->dtype) {
  case BERTH_DT_BYTES: {
    uint32_t len;
    if (t->nbytes < 4)
      return berth_errf(err, BERTH_E_INVALID, "input '%s' is empty", t->name);
    memcpy(&len, d, 4);
    s->is_num = false;
    s->str = (const char *)d + 4;
    s->len = len;
    return BERTH_OK;
  }
#define NUM(dt, type)                                                          \
  case dt: {                                                                   \
    type v;                                                                    \
    memcpy(&v, d, sizeof v);                                                   \
    s->num = (double)v;                                                        \
    return BERTH_OK;                                                           \
  }
    NUM(BERTH_DT_BOOL, uint8_t)
    NUM(BERTH_DT_UINT8, uint8_t)
    NUM(BERTH_DT_UINT16, uint16_t)
    NUM(BERTH_DT_UINT32, uint32_t)
    NUM(BERTH_DT_UINT64, uint64_t)
    NUM(BERTH_DT_INT8, int8_t)
    NUM(BERTH_DT_INT16, int16_t)
    NUM(BERTH_DT_INT32, int32_t)
    NUM(BERTH_DT_INT64, int64_t)
    NUM(BERTH_DT_FP32, float)
    NUM(BERTH_DT_FP64, double)
#undef NUM
  default:
    return berth_errf(err, BERTH_E_UNSUPPORTED,
                      "a switch cannot read input "
                      "'%s' of type %s",
                      t->name, berth_dtype_name(t->dtype));
  }
}

int berth_pipe_switch_choose(const berth_pipe_step *st,
                             const berth_infer_request *req,
                             const berth_http_req *http, const char **model,
                             berth_errmsg *err) {
  const berth_pipe_switch *sw = st->sw;
  subject s = {0};
  const char *what = sw->on == BERTH_PIPE_ON_INPUT    ? "input"
                     : sw->on == BERTH_PIPE_ON_HEADER ? "header"
                                                      : "parameter";
  if (sw->on == BERTH_PIPE_ON_INPUT) {
    const berth_tensor *t = find_tensor(req->inputs, req->n_inputs, sw->name);
    if (t == NULL)
      return berth_errf(err, BERTH_E_INVALID,
                        "step \"%s\": its switch reads "
                        "input \"%s\", which the request lacks",
                        st->name, sw->name);
    int rc = tensor_subject(t, &s, err);
    if (rc != BERTH_OK) {
      char why[BERTH_ERRMSG_SIZE];
      snprintf(why, sizeof why, "%s", err->msg);
      return berth_errf(err, rc, "step \"%s\": %s", st->name, why);
    }
  } else if (sw->on == BERTH_PIPE_ON_HEADER) {
    size_t len = 0;
    const char *v =
        http != NULL ? berth_http_header(http, sw->name, &len) : NULL;
    if (v != NULL) {
      s.present = true;
      s.str = v;
      s.len = len;
    }
  } else {
    json_t *v =
        req->parameters ? json_object_get(req->parameters, sw->name) : NULL;
    if (json_is_string(v)) {
      s.present = true;
      s.str = json_string_value(v);
      s.len = json_string_length(v);
    } else if (json_is_number(v) || json_is_boolean(v)) {
      s.present = s.is_num = true;
      s.num =
          json_is_boolean(v) ? (json_is_true(v) ? 1 : 0) : json_number_value(v);
    }
  }
  for (size_t c = 0; c < sw->n_cases; c++)
    if (case_matches(&s, &sw->cases[c])) {
      *model = sw->cases[c].model;
      return BERTH_OK;
    }
  if (sw->dflt != NULL) {
    *model = sw->dflt;
    return BERTH_OK;
  }
  return berth_errf(err, BERTH_E_INVALID,
                    "step \"%s\": no case of its switch "
                    "matches %s \"%s\"%s and it has no default",
                    st->name, what, sw->name, s.present ? "" : " (absent)");
}
