/* Berth engine: the engine document, validated against tables.
 *
 * Each mapping in the schema (the top level, server, log, workers, a model
 * entry, a tensor spec) is a table of fields: key, kind, bounds, default (as
 * JSON text) and where the value lands in berth_config / berth_model_config;
 * the tables are config_schema.c, this file is the walker. One walker checks a mapping against its table: unknown keys and missing
 * required ones are errors, absent keys take their default and go through
 * the same checks as given ones, and every value comes back normalised into
 * a fresh object, which for a model is the `entry` sent to its worker.
 * Every error names the full key path, "models[1].inputs[0].datatype: ...".
 * The schema is docs/configuration.md, "The engine document".
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "config_schema.h"
#include "http_url.h"
#include "pipeline_config.h"

#define BERTH_CONFIG_PATH_MAX 192
#define BERTH_CONFIG_NAME_MAX 128
#define BERTH_CONFIG_STRING_MAX 4096
#define BERTH_CONFIG_TENSORS_MAX 1024

/* ---- messages --------------------------------------------------------- */

/* A short rendering of a value for "got ..." in messages. */
static const char *berth_config_show(const json_t *v, char *buf, size_t n) {
  switch (json_typeof(v)) {
  case JSON_OBJECT:
    return "a mapping";
  case JSON_ARRAY:
    return "a list";
  case JSON_STRING: {
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    int shown = len > 60 ? 60 : (int)len;
    snprintf(buf, n, "\"%.*s%s\"", shown, s, len > 60 ? "..." : "");
    return buf;
  }
  case JSON_INTEGER:
    snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
  case JSON_REAL:
    snprintf(buf, n, "%.17g", json_real_value(v));
    return buf;
  case JSON_TRUE:
    return "true";
  case JSON_FALSE:
    return "false";
  default:
    return "null";
  }
}

/* "path: <message>, got <value>" with BERTH_E_CONFIG. */
__attribute__((format(printf, 4, 5))) static int
berth_config_bad(berth_errmsg *err, const char *path, const json_t *v,
                 const char *fmt, ...) {
  if (err == NULL)
    return BERTH_E_CONFIG;
  char what[BERTH_ERRMSG_SIZE];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (v == NULL)
    return berth_errf(err, BERTH_E_CONFIG, "%s: %s", path, what);
  char shown[96];
  return berth_errf(err, BERTH_E_CONFIG, "%s: %s, got %s", path, what,
                    berth_config_show(v, shown, sizeof shown));
}

static int berth_config_nomem(berth_errmsg *err, const char *path) {
  return berth_errf(err, BERTH_E_CONFIG, "%s: out of memory", path);
}

static void berth_config_child(char *out, const char *path, const char *key) {
  if (path[0] == '\0')
    snprintf(out, BERTH_CONFIG_PATH_MAX, "%.64s", key);
  else
    snprintf(out, BERTH_CONFIG_PATH_MAX, "%.120s.%.64s", path, key);
}

static void berth_config_index(char *out, const char *path, size_t i) {
  snprintf(out, BERTH_CONFIG_PATH_MAX, "%.160s[%zu]", path, i);
}

/* ---- scalar kinds ----------------------------------------------------- */

static void *berth_config_at(void *base, size_t off) {
  return (char *)base + off;
}

/* Integer value of v (an integer, or a real with an integral value). */
static bool berth_config_int(const json_t *v, int64_t *out) {
  if (json_is_integer(v)) {
    *out = json_integer_value(v);
    return true;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
      *out = (int64_t)d;
      return true;
    }
  }
  return false;
}

static bool berth_config_name_ok(const char *s, size_t n) {
  if (n == 0 || n > BERTH_CONFIG_NAME_MAX)
    return false;
  if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
    return false; /* would be a path segment of its own in URLs and files */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  }
  return true;
}

/* A non-empty string without NUL, at most BERTH_CONFIG_STRING_MAX bytes. */
static int berth_config_text(const json_t *v, const char *path,
                             berth_errmsg *err) {
  if (!json_is_string(v))
    return berth_config_bad(err, path, v, "expected a string");
  size_t n = json_string_length(v);
  if (n == 0)
    return berth_config_bad(err, path, NULL, "may not be empty");
  if (n > BERTH_CONFIG_STRING_MAX)
    return berth_config_bad(err, path, NULL, "longer than %d bytes",
                            BERTH_CONFIG_STRING_MAX);
  if (memchr(json_string_value(v), '\0', n) != NULL)
    return berth_config_bad(err, path, NULL, "may not contain NUL");
  return BERTH_OK;
}

static int berth_config_store_str(const berth_config_field *f, void *base,
                                  const char *s, const char *path,
                                  berth_errmsg *err) {
  if (f->slot == BERTH_CONFIG_NO_SLOT || s == NULL)
    return BERTH_OK;
  char *copy = strdup(s);
  if (copy == NULL)
    return berth_config_nomem(err, path);
  *(char **)berth_config_at(base, f->slot) = copy;
  return BERTH_OK;
}

static void berth_config_store_uint(const berth_config_field *f, void *base,
                                    uint64_t u) {
  void *p = berth_config_at(base, f->slot);
  if (f->size == sizeof(uint16_t)) {
    uint16_t x = (uint16_t)u;
    memcpy(p, &x, sizeof x);
  } else if (f->size == sizeof(uint32_t)) {
    uint32_t x = (uint32_t)u;
    memcpy(p, &x, sizeof x);
  } else {
    memcpy(p, &u, sizeof u);
  }
}

/* ---- composite kinds -------------------------------------------------- */

static int berth_config_section(const berth_config_table *t, json_t *obj,
                                void *base, const char *path, json_t **norm,
                                berth_errmsg *err);

static int berth_config_argv(const berth_config_field *f, json_t *v, void *base,
                             const char *path, berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_config_bad(err, path, v, "expected a list of strings");
  size_t n = json_array_size(v);
  size_t lo = f->imax > 0 ? (size_t)f->imin : 1;
  size_t hi = f->imax > 0 ? (size_t)f->imax : BERTH_CONFIG_ARGV_MAX;
  if (n < lo || n > hi)
    return berth_config_bad(err, path, NULL,
                            "expected %zu..%zu strings, got %zu", lo, hi, n);
  char ***argv = berth_config_at(base, f->slot);
  *argv = calloc(n + 1, sizeof **argv);
  if (*argv == NULL)
    return berth_config_nomem(err, path);
  *(size_t *)berth_config_at(base, f->count_slot) = n;
  for (size_t i = 0; i < n; i++) {
    char item[BERTH_CONFIG_PATH_MAX];
    berth_config_index(item, path, i);
    json_t *s = json_array_get(v, i);
    int rc = berth_config_text(s, item, err);
    if (rc != BERTH_OK)
      return rc;
    (*argv)[i] = strdup(json_string_value(s));
    if ((*argv)[i] == NULL)
      return berth_config_nomem(err, item);
  }
  return BERTH_OK;
}

static int berth_config_shape(const berth_config_field *f, json_t *v,
                              void *base, const char *path, json_t **norm,
                              berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_config_bad(err, path, v, "expected a list of dimensions");
  size_t n = json_array_size(v);
  if (n > BERTH_MAX_DIMS)
    return berth_config_bad(err, path, NULL, "at most %d dimensions, got %zu",
                            BERTH_MAX_DIMS, n);
  int64_t *shape = berth_config_at(base, f->slot);
  json_t *out = json_array();
  if (out == NULL)
    return berth_config_nomem(err, path);
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_array_get(v, i);
    int64_t dim;
    if (!berth_config_int(d, &dim) || dim < -1) {
      char item[BERTH_CONFIG_PATH_MAX];
      berth_config_index(item, path, i);
      json_decref(out);
      return berth_config_bad(err, item, d,
                              "expected -1 (variable) or a size >= 0");
    }
    shape[i] = dim;
    if (json_array_append_new(out, json_integer(dim)) != 0) {
      json_decref(out);
      return berth_config_nomem(err, path);
    }
  }
  *(uint32_t *)berth_config_at(base, f->count_slot) = (uint32_t)n;
  *norm = out;
  return BERTH_OK;
}

static int berth_config_sizes(const berth_config_field *f, json_t *v,
                              void *base, const char *path, json_t **norm,
                              berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_config_bad(err, path, v, "expected a list of sizes");
  size_t n = json_array_size(v);
  if (n > BERTH_MAX_PREFERRED)
    return berth_config_bad(err, path, NULL, "at most %d sizes, got %zu",
                            BERTH_MAX_PREFERRED, n);
  uint32_t *sizes = berth_config_at(base, f->slot);
  json_t *out = json_array();
  if (out == NULL)
    return berth_config_nomem(err, path);
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_array_get(v, i);
    int64_t x;
    if (!berth_config_int(d, &x) || x < f->imin || x > f->imax) {
      char item[BERTH_CONFIG_PATH_MAX];
      berth_config_index(item, path, i);
      json_decref(out);
      return berth_config_bad(err, item, d, "expected an integer in %lld..%lld",
                              (long long)f->imin, (long long)f->imax);
    }
    sizes[i] = (uint32_t)x;
    if (json_array_append_new(out, json_integer(x)) != 0) {
      json_decref(out);
      return berth_config_nomem(err, path);
    }
  }
  *(uint32_t *)berth_config_at(base, f->count_slot) = (uint32_t)n;
  *norm = out;
  return BERTH_OK;
}

static int berth_config_tensors(const berth_config_field *f, json_t *v,
                                void *base, const char *path, json_t **norm,
                                berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_config_bad(err, path, v, "expected a list of tensors");
  size_t n = json_array_size(v);
  if (n > BERTH_CONFIG_TENSORS_MAX)
    return berth_config_bad(err, path, NULL, "at most %d tensors, got %zu",
                            BERTH_CONFIG_TENSORS_MAX, n);
  *(bool *)berth_config_at(base, f->flag_slot) = true;
  json_t *out = json_array();
  if (out == NULL)
    return berth_config_nomem(err, path);
  berth_tensor_spec *specs = NULL;
  if (n > 0) {
    specs = calloc(n, sizeof *specs);
    if (specs == NULL) {
      json_decref(out);
      return berth_config_nomem(err, path);
    }
    /* Owned by base from here on, so a failure below frees what is set. */
    *(berth_tensor_spec **)berth_config_at(base, f->slot) = specs;
    *(size_t *)berth_config_at(base, f->count_slot) = n;
  }
  for (size_t i = 0; i < n; i++) {
    char item[BERTH_CONFIG_PATH_MAX];
    berth_config_index(item, path, i);
    json_t *spec_norm = NULL;
    int rc = berth_config_section(&berth_config_tensor, json_array_get(v, i),
                                  &specs[i], item, &spec_norm, err);
    if (rc == BERTH_OK && json_array_append_new(out, spec_norm) != 0)
      rc = berth_config_nomem(err, item);
    for (size_t j = 0; rc == BERTH_OK && j < i; j++) {
      if (strcmp(specs[j].name, specs[i].name) == 0) {
        char name_path[BERTH_CONFIG_PATH_MAX];
        berth_config_child(name_path, item, "name");
        rc = berth_config_bad(err, name_path, NULL,
                              "duplicate tensor name \"%.64s\" (also %s[%zu])",
                              specs[i].name, path, j);
      }
    }
    if (rc != BERTH_OK) {
      json_decref(out);
      return rc;
    }
  }
  *norm = out;
  return BERTH_OK;
}

/* A list of mappings, each checked against f->sub into an element of a
 * fresh array that base owns from the start (a failure frees it with the
 * rest of base). */
static int berth_config_list(const berth_config_field *f, json_t *v, void *base,
                             const char *path, json_t **norm,
                             berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_config_bad(err, path, v, "expected a list of mappings");
  size_t n = json_array_size(v);
  if (n < (size_t)f->imin)
    return berth_config_bad(err, path, NULL, "must list at least %lld",
                            (long long)f->imin);
  if (n > (size_t)f->imax)
    return berth_config_bad(err, path, NULL, "at most %lld entries, got %zu",
                            (long long)f->imax, n);
  json_t *out = json_array();
  if (out == NULL)
    return berth_config_nomem(err, path);
  char *items = NULL;
  if (n > 0) {
    items = calloc(n, f->size);
    if (items == NULL) {
      json_decref(out);
      return berth_config_nomem(err, path);
    }
    *(void **)berth_config_at(base, f->slot) = items;
    *(size_t *)berth_config_at(base, f->count_slot) = n;
  }
  for (size_t i = 0; i < n; i++) {
    char item[BERTH_CONFIG_PATH_MAX];
    berth_config_index(item, path, i);
    json_t *item_norm = NULL;
    int rc = berth_config_section(f->sub, json_array_get(v, i),
                                  items + i * f->size, item, &item_norm, err);
    if (rc == BERTH_OK && json_array_append_new(out, item_norm) != 0)
      rc = berth_config_nomem(err, item);
    if (rc != BERTH_OK) {
      json_decref(out);
      return rc;
    }
  }
  *norm = out;
  return BERTH_OK;
}

/* ---- autoscaling (docs/autoscaling.md) -------------------------------- */

/* The autoscaling block's defaults that depend on other keys, and its
 * checks across keys, once the entry's fields are read. */
static int berth_config_autoscale(berth_model_config *m, const char *path,
                                  berth_errmsg *err) {
  berth_autoscale_config *a = &m->autoscale;
  json_t *block = json_object_get(m->entry, "autoscaling");
  a->enabled = block != NULL;
  if (!a->enabled)
    return BERTH_OK;
  char where[BERTH_CONFIG_PATH_MAX];
  berth_config_child(where, path, "autoscaling");
  if (json_object_get(block, "max_instances") == NULL) {
    unsigned cores = uv_available_parallelism();
    a->max_instances = a->min_instances > cores ? a->min_instances : cores;
    if (a->max_instances == 0)
      a->max_instances = 1;
  }
  if (json_object_get(block, "scale_to_zero_after_s") == NULL)
    a->scale_to_zero_after_s = a->downscale_delay_s;
  char why[200];
  if (berth_autoscale_config_check(a, why, sizeof why) != 0)
    return berth_config_bad(err, where, NULL, "%s", why);
  if (json_object_get(m->entry, "sequence_batching") != NULL)
    return berth_config_bad(err, where, NULL,
                            "cannot be combined with sequence_batching "
                            "(a sequence is pinned to one instance)");
  if (m->instances != 0 &&
      (m->instances < a->min_instances || m->instances > a->max_instances))
    return berth_config_bad(err, path, NULL,
                            "instances (%u, the starting count with "
                            "autoscaling) must lie within min_instances (%u) "
                            "and max_instances (%u)",
                            m->instances, a->min_instances, a->max_instances);
  return BERTH_OK;
}

static int berth_config_models(json_t *v, berth_config *cfg, const char *path,
                               berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_config_bad(err, path, v, "expected a list of models");
  size_t n = json_array_size(v);
  if (n == 0 && berth_config_gateway_on(cfg))
    return BERTH_OK; /* a gateway serves no models itself */
  if (n == 0)
    return berth_config_bad(err, path, NULL, "must list at least one model");
  if (n > BERTH_CONFIG_MODELS_MAX)
    return berth_config_bad(err, path, NULL, "at most %d models, got %zu",
                            BERTH_CONFIG_MODELS_MAX, n);
  cfg->models = calloc(n, sizeof *cfg->models);
  if (cfg->models == NULL)
    return berth_config_nomem(err, path);
  cfg->n_models = n;
  for (size_t i = 0; i < n; i++) {
    char item[BERTH_CONFIG_PATH_MAX];
    berth_config_index(item, path, i);
    berth_model_config *m = &cfg->models[i];
    int rc = berth_config_section(&berth_config_model, json_array_get(v, i), m,
                                  item, &m->entry, err);
    if (rc == BERTH_OK)
      rc = berth_config_autoscale(m, item, err);
    if (rc != BERTH_OK)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(cfg->models[j].name, m->name) == 0 &&
          strcmp(cfg->models[j].version, m->version) == 0)
        return berth_config_bad(
            err, item, NULL,
            "duplicate model \"%s\" version \"%s\" (also %s[%zu])", m->name,
            m->version, path, j);
  }
  return BERTH_OK;
}

/* ---- one field -------------------------------------------------------- */

/* Checks v against f, stores it under base and sets *norm to the
 * normalised value (a new reference). */
static int berth_config_field_value(const berth_config_field *f, json_t *v,
                                    void *base, const char *path, json_t **norm,
                                    berth_errmsg *err) {
  int rc = BERTH_OK;
  int64_t i64;
  char buf[32];
  *norm = NULL;
  switch (f->kind) {
  case BERTH_CF_OPT_STRING:
    if (json_is_null(v))
      break;
    /* fall through */
  case BERTH_CF_STRING:
    rc = berth_config_text(v, path, err);
    if (rc == BERTH_OK)
      rc = berth_config_store_str(f, base, json_string_value(v), path, err);
    break;
  case BERTH_CF_VERSION:
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
      snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
      *norm = json_string(buf);
      if (*norm == NULL)
        return berth_config_nomem(err, path);
      v = *norm;
    }
    /* fall through */
  case BERTH_CF_NAME:
    if (!json_is_string(v) ||
        !berth_config_name_ok(json_string_value(v), json_string_length(v)))
      rc = berth_config_bad(err, path, v,
                            "expected 1..%d characters of [A-Za-z0-9_.-]",
                            BERTH_CONFIG_NAME_MAX);
    else
      rc = berth_config_store_str(f, base, json_string_value(v), path, err);
    break;
  case BERTH_CF_ENUM: {
    size_t k = 0;
    if (json_is_string(v))
      for (; f->choices[k] != NULL; k++)
        if (strcmp(f->choices[k], json_string_value(v)) == 0)
          break;
    if (!json_is_string(v) || f->choices[k] == NULL) {
      char list[128] = "";
      for (size_t c = 0; f->choices[c] != NULL; c++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                 c ? ", " : "", f->choices[c]);
      rc = berth_config_bad(err, path, v, "expected one of %s", list);
    } else {
      rc = berth_config_store_str(f, base, f->choices[k], path, err);
    }
    break;
  }
  case BERTH_CF_UINT:
    if (f->choices != NULL && json_is_string(v) &&
        strcmp(json_string_value(v), f->choices[0]) == 0) {
      berth_config_store_uint(f, base, 0); /* the word for 0 ("auto") */
      *norm = json_string(f->choices[0]);
      if (*norm == NULL)
        return berth_config_nomem(err, path);
      break;
    }
    if (!berth_config_int(v, &i64) || i64 < f->imin || i64 > f->imax)
      return berth_config_bad(
          err, path, v, "expected an integer in %" PRId64 "..%" PRId64 "%s%s%s",
          f->imin, f->imax, f->choices != NULL ? " or \"" : "",
          f->choices != NULL ? f->choices[0] : "",
          f->choices != NULL ? "\"" : "");
    berth_config_store_uint(f, base, (uint64_t)i64);
    *norm = json_integer(i64);
    if (*norm == NULL)
      return berth_config_nomem(err, path);
    break;
  case BERTH_CF_DOUBLE:
    if (!json_is_number(v) || json_number_value(v) < f->dmin ||
        json_number_value(v) > f->dmax)
      return berth_config_bad(err, path, v, "expected a number in %g..%g",
                              f->dmin, f->dmax);
    *(double *)berth_config_at(base, f->slot) = json_number_value(v);
    break;
  case BERTH_CF_BOOL:
    if (!json_is_boolean(v))
      return berth_config_bad(err, path, v, "expected true or false");
    *(bool *)berth_config_at(base, f->slot) = json_is_true(v);
    break;
  case BERTH_CF_ARGV:
    rc = berth_config_argv(f, v, base, path, err);
    break;
  case BERTH_CF_OBJECT:
    if (!json_is_object(v))
      return berth_config_bad(err, path, v, "expected a mapping");
    break;
  case BERTH_CF_DTYPE: {
    int dt = BERTH_DT_INVALID;
    for (int k = 1; json_is_string(v) && k < BERTH_DT_COUNT; k++)
      if (berth_config_dtypes[k] != NULL &&
          strcmp(berth_config_dtypes[k], json_string_value(v)) == 0)
        dt = k;
    if (dt == BERTH_DT_INVALID) {
      if (json_is_string(v))
        return berth_config_bad(err, path, NULL, "unknown datatype \"%.64s\"",
                                json_string_value(v));
      return berth_config_bad(err, path, v, "expected a datatype name");
    }
    *(berth_dtype *)berth_config_at(base, f->slot) = (berth_dtype)dt;
    break;
  }
  case BERTH_CF_SHAPE:
    return berth_config_shape(f, v, base, path, norm, err);
  case BERTH_CF_SIZES:
    return berth_config_sizes(f, v, base, path, norm, err);
  case BERTH_CF_TENSORS:
    return berth_config_tensors(f, v, base, path, norm, err);
  case BERTH_CF_SECTION:
    return berth_config_section(
        f->sub, v,
        f->slot == BERTH_CONFIG_NO_SLOT ? base : berth_config_at(base, f->slot),
        path, norm, err);
  case BERTH_CF_LIST:
    return berth_config_list(f, v, base, path, norm, err);
  case BERTH_CF_MODELS:
    rc = berth_config_models(v, base, path, err);
    break;
  case BERTH_CF_PIPELINES:
    rc = berth_pipeline_config_parse(v, base, path, err);
    break;
  case BERTH_CF_BYTES:
    return berth_config_bytes(f, v, base, path, norm, err);
  case BERTH_CF_DEVICES:
    return berth_config_devices(f, v, base, path, norm, err);
  }
  if (rc != BERTH_OK) {
    json_decref(*norm);
    *norm = NULL;
    return rc;
  }
  if (*norm == NULL)
    *norm = json_incref(v);
  if (*norm == NULL)
    return berth_config_nomem(err, path);
  return BERTH_OK;
}

/* ---- one mapping ------------------------------------------------------ */

static int berth_config_section(const berth_config_table *t, json_t *obj,
                                void *base, const char *path, json_t **norm,
                                berth_errmsg *err) {
  const char *where = path[0] != '\0' ? path : "(top level)";
  *norm = NULL;
  if (!json_is_object(obj))
    return berth_config_bad(err, where, obj, "expected a mapping");
  const char *key;
  json_t *value;
  json_object_foreach(obj, key, value) {
    size_t i = 0;
    while (i < t->n && strcmp(t->fields[i].key, key) != 0)
      i++;
    if (i == t->n) {
      char child[BERTH_CONFIG_PATH_MAX];
      berth_config_child(child, path, key);
      return berth_config_bad(err, child, NULL, "unknown key");
    }
  }
  json_t *out = json_object();
  if (out == NULL)
    return berth_config_nomem(err, where);
  for (size_t i = 0; i < t->n; i++) {
    const berth_config_field *f = &t->fields[i];
    char child[BERTH_CONFIG_PATH_MAX];
    berth_config_child(child, path, f->key);
    json_t *v = json_incref(json_object_get(obj, f->key));
    if (v == NULL && f->required) {
      json_decref(out);
      return berth_config_bad(err, child, NULL, "required");
    }
    if (v == NULL && f->def == NULL)
      continue;
    if (v == NULL) {
      v = json_loads(f->def, JSON_DECODE_ANY, NULL);
      if (v == NULL) {
        json_decref(out);
        return berth_config_nomem(err, child);
      }
    }
    json_t *fv = NULL;
    int rc = berth_config_field_value(f, v, base, child, &fv, err);
    json_decref(v);
    if (rc == BERTH_OK && json_object_set_new(out, f->key, fv) != 0)
      rc = berth_config_nomem(err, child);
    if (rc != BERTH_OK) {
      json_decref(out);
      return rc;
    }
  }
  *norm = out;
  return BERTH_OK;
}

/* ---- public ----------------------------------------------------------- */

void berth_config_model_clear(berth_model_config *m) {
  free(m->name);
  free(m->version);
  free(m->runtime);
  free(m->platform);
  for (size_t i = 0; i < m->n_inputs; i++)
    free(m->inputs[i].name);
  free(m->inputs);
  for (size_t i = 0; i < m->n_outputs; i++)
    free(m->outputs[i].name);
  free(m->outputs);
  json_decref(m->entry);
  free(m->files_dir);
  memset(m, 0, sizeof *m);
}

static void berth_config_target_clear(berth_route_target_config *t) {
  free(t->model);
  free(t->version);
  memset(t, 0, sizeof *t);
}

void berth_config_route_clear(berth_route_config *r) {
  free(r->name);
  for (size_t i = 0; i < r->n_split; i++)
    berth_config_target_clear(&r->split[i]);
  free(r->split);
  free(r->sticky_header);
  berth_config_target_clear(&r->shadow);
  memset(r, 0, sizeof *r);
}

static void berth_config_strings_free(char **list, size_t n) {
  if (list != NULL)
    for (size_t i = 0; i < n; i++)
      free(list[i]);
  free(list);
}

void berth_config_clear(berth_config *c) {
  if (c == NULL)
    return;
  free(c->host);
  free(c->tls_cert);
  free(c->tls_key);
  free(c->socket);
  free(c->auth_tokens_file);
  free(c->auth_tokens_env);
  free(c->admin_tokens_file);
  free(c->admin_tokens_env);
  free(c->log_level);
  free(c->log_format);
  free(c->trace_endpoint);
  free(c->trace_service_name);
  free(c->payload_log_path);
  if (c->worker_command != NULL)
    for (size_t i = 0; i < c->worker_argc; i++)
      free(c->worker_command[i]);
  free(c->worker_command);
  free(c->model_control_mode);
  free(c->write_path);
  if (c->repositories != NULL)
    for (size_t i = 0; i < c->n_repositories; i++)
      free(c->repositories[i]);
  free(c->repositories);
  berth_config_strings_free(c->allowed_hosts, c->n_allowed_hosts);
  berth_config_strings_free(c->cors_origins, c->n_cors_origins);
  for (size_t i = 0; i < c->n_models; i++)
    berth_config_model_clear(&c->models[i]);
  free(c->models);
  for (size_t i = 0; i < c->n_routes; i++)
    berth_config_route_clear(&c->routes[i]);
  free(c->routes);
  berth_pipeline_configs_free(c->pipelines, c->n_pipelines);
  for (size_t i = 0; i < c->gateway.n_replicas; i++) {
    free(c->gateway.replicas[i].name);
    free(c->gateway.replicas[i].url);
  }
  free(c->gateway.replicas);
  free(c->native_onnxruntime);
  free(c->native_lightgbm);
  free(c->native_xgboost);
  free(c->gpus);
  memset(c, 0, sizeof *c);
}

int berth_config_parse(const char *text, size_t len, berth_config *out,
                       berth_errmsg *err) {
  if (out == NULL)
    return berth_errf(err, BERTH_E_CONFIG, "no config to fill");
  memset(out, 0, sizeof *out);
  json_t *root = berth_yaml_load(text, len, err);
  if (root == NULL)
    return BERTH_E_CONFIG;
  json_t *norm = NULL;
  int rc = berth_config_section(&berth_config_root, root, out, "", &norm, err);
  json_decref(root);
  json_decref(norm);
  if (rc == BERTH_OK && out->restart_backoff_max_s < out->restart_backoff_s)
    rc = berth_config_bad(err, "workers.restart_backoff_max_s", NULL,
                          "must be >= workers.restart_backoff_s (%g)",
                          out->restart_backoff_s);
  if (rc == BERTH_OK && out->grpc_port != 0 && out->grpc_port == out->http_port)
    rc = berth_config_bad(err, "server.grpc_port", NULL,
                          "must differ from server.http_port (%u)",
                          (unsigned)out->http_port);
  if (rc == BERTH_OK && out->metrics_port != 0 &&
      (out->metrics_port == out->http_port ||
       out->metrics_port == out->grpc_port))
    rc = berth_config_bad(err, "server.metrics_port", NULL,
                          "must differ from server.http_port (%u) and "
                          "server.grpc_port (%u); 0 turns it off",
                          (unsigned)out->http_port, (unsigned)out->grpc_port);
  if (rc == BERTH_OK)
    rc = berth_config_gpus_check(out, err);
  if (rc == BERTH_OK && out->trace_endpoint != NULL) {
    char host[256], path[1024];
    uint16_t port;
    berth_errmsg why;
    if (berth_http_parse_url(out->trace_endpoint, host, sizeof host, &port,
                             path, sizeof path, &why) != BERTH_OK)
      rc = berth_config_bad(err, "tracing.endpoint", NULL, "%s", why.msg);
  }
  if (rc != BERTH_OK) {
    berth_config_clear(out);
    return BERTH_E_CONFIG;
  }
  return BERTH_OK;
}

int berth_config_parse_model_entry(json_t *entry, const char *path,
                                   berth_model_config *out, berth_errmsg *err) {
  if (out == NULL)
    return berth_errf(err, BERTH_E_CONFIG, "no model config to fill");
  memset(out, 0, sizeof *out);
  char where[BERTH_CONFIG_PATH_MAX];
  snprintf(where, sizeof where, "%.120s", path != NULL ? path : "");
  json_t *root = json_is_string(entry)
                     ? berth_yaml_load(json_string_value(entry),
                                       json_string_length(entry), err)
                     : json_incref(entry);
  if (root == NULL) {
    if (json_is_string(entry) && err != NULL) {
      char why[BERTH_ERRMSG_SIZE];
      snprintf(why, sizeof why, "%s", err->msg);
      berth_errf(err, BERTH_E_CONFIG, "%s: %s", where, why);
    }
    return BERTH_E_CONFIG;
  }
  int rc = berth_config_section(&berth_config_model, root, out, where,
                                &out->entry, err);
  if (rc == BERTH_OK)
    rc = berth_config_autoscale(out, where, err);
  json_decref(root);
  if (rc != BERTH_OK) {
    berth_config_model_clear(out);
    return BERTH_E_CONFIG;
  }
  return BERTH_OK;
}

int berth_config_parse_route_entry(json_t *entry, const char *path,
                                   berth_route_config *out, berth_errmsg *err) {
  if (out == NULL)
    return berth_errf(err, BERTH_E_CONFIG, "no route config to fill");
  memset(out, 0, sizeof *out);
  char where[BERTH_CONFIG_PATH_MAX];
  snprintf(where, sizeof where, "%.120s", path != NULL ? path : "");
  json_t *norm = NULL;
  int rc =
      berth_config_section(&berth_config_route, entry, out, where, &norm, err);
  json_decref(norm);
  if (rc != BERTH_OK) {
    berth_config_route_clear(out);
    return BERTH_E_CONFIG;
  }
  return BERTH_OK;
}
