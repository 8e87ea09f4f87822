/* Berth engine: a load's config override (repo_override.h). */
#include "repo_override.h"

#include "config.h"
#include "engine.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY "parameters.config."

bool berth_repo_is_override(const json_t *config) {
  static const char *const chooses[] = {"path", "runtime", "class", "platform"};
  if (!json_is_object(config))
    return false;
  for (size_t i = 0; i < sizeof chooses / sizeof chooses[0]; i++)
    if (json_object_get(config, chooses[i]) != NULL)
      return false;
  return true;
}

/* An integer, or a string of decimal digits (protobuf JSON writes 64-bit
 * integers as strings), as a new JSON integer; NULL for anything else. */
static json_t *as_integer(const json_t *v) {
  if (json_is_integer(v))
    return json_integer(json_integer_value(v));
  if (!json_is_string(v))
    return NULL;
  const char *s = json_string_value(v);
  if (s[0] == '\0' || strlen(s) > 18 || (s[0] == '-' && s[1] == '\0'))
    return NULL;
  for (const char *p = s[0] == '-' ? s + 1 : s; *p != '\0'; p++)
    if (*p < '0' || *p > '9')
      return NULL;
  errno = 0;
  long long n = strtoll(s, NULL, 10);
  return errno == 0 ? json_integer(n) : NULL;
}

/* Sets out[key] to v as an integer (key: Berth's; what: the request's). */
static int set_int(json_t *out, const char *key, const json_t *v,
                   const char *what, berth_errmsg *err) {
  json_t *n = as_integer(v);
  if (n == NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      KEY "%s: expected an integer "
                          "(a number, or a string of digits)",
                      what);
  if (json_object_set_new(out, key, n) != 0)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  return BERTH_OK;
}

static int set_int_list(json_t *out, const char *key, const json_t *v,
                        const char *what, berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_errf(err, BERTH_E_CONFIG,
                      KEY "%s: expected a list of "
                          "integers",
                      what);
  json_t *list = json_array();
  if (list == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  size_t i;
  const json_t *x;
  json_array_foreach(v, i, x) {
    json_t *n = as_integer(x);
    if (n == NULL || json_array_append_new(list, n) != 0) {
      json_decref(list);
      return berth_errf(err, BERTH_E_CONFIG,
                        KEY "%s[%zu]: expected an "
                            "integer",
                        what, i);
    }
  }
  if (json_object_set_new(out, key, list) != 0)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  return BERTH_OK;
}

/* One group's GPUs (its gpus list) added to the union in gpus; their
 * number in *n. */
static int group_gpus(const json_t *list, size_t i, json_t *gpus, size_t *n,
                      berth_errmsg *err) {
  if (!json_is_array(list) || json_array_size(list) == 0)
    return berth_errf(err, BERTH_E_CONFIG,
                      KEY "instance_group[%zu].gpus: expected a non-empty "
                          "list of GPU indices",
                      i);
  size_t k;
  const json_t *x;
  json_array_foreach(list, k, x) {
    json_t *g = as_integer(x);
    if (g == NULL)
      return berth_errf(err, BERTH_E_CONFIG,
                        KEY "instance_group[%zu].gpus[%zu]: expected an "
                            "integer",
                        i, k);
    bool seen = false;
    size_t j;
    const json_t *y;
    json_array_foreach(gpus, j, y) seen = seen || json_equal(g, y);
    if (seen)
      json_decref(g);
    else if (json_array_append_new(gpus, g) != 0)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  *n = json_array_size(list);
  return BERTH_OK;
}

/* Triton's instance groups: count per group (per GPU of a KIND_GPU group,
 * every known GPU when it lists none) summed into instances; KIND_GPU
 * groups' GPUs into devices (all when one lists none), KIND_CPU into
 * devices: cpu (docs/gpus.md). */
static int take_instance_group(json_t *out, const json_t *v, size_t n_gpus,
                               berth_errmsg *err) {
  if (!json_is_array(v) || json_array_size(v) == 0)
    return berth_errf(err, BERTH_E_CONFIG,
                      KEY "instance_group: expected a "
                          "non-empty list of groups ({\"count\": N})");
  json_int_t total = 0;
  bool any_cpu = false, any_gpu = false, all = false;
  json_t *gpus = json_array();
  if (gpus == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  size_t i;
  const json_t *g;
  int rc = BERTH_OK;
  json_array_foreach(v, i, g) {
    json_t *n =
        json_is_object(g) ? as_integer(json_object_get(g, "count")) : NULL;
    json_int_t c = n != NULL ? json_integer_value(n) : -1;
    json_decref(n);
    if (c < 1 || c > 1024) {
      rc = berth_errf(err, BERTH_E_CONFIG,
                      KEY "instance_group[%zu].count: "
                          "expected an integer from 1 to 1024",
                      i);
      break;
    }
    const json_t *kv = json_object_get(g, "kind");
    const char *kind = kv != NULL ? json_string_value(kv) : "KIND_AUTO";
    bool gpu = kind != NULL && strcmp(kind, "KIND_GPU") == 0;
    bool cpu = kind != NULL && strcmp(kind, "KIND_CPU") == 0;
    if (kind == NULL || (!gpu && !cpu && strcmp(kind, "KIND_AUTO") != 0 &&
                         strcmp(kind, "KIND_MODEL") != 0)) {
      rc = berth_errf(err, BERTH_E_CONFIG,
                      KEY "instance_group[%zu].kind: expected KIND_AUTO, "
                          "KIND_GPU, KIND_CPU or KIND_MODEL",
                      i);
      break;
    }
    const json_t *list = json_object_get(g, "gpus");
    size_t per = 1;
    if (list != NULL && cpu)
      rc = berth_errf(err, BERTH_E_CONFIG,
                      KEY "instance_group[%zu].gpus: a KIND_CPU group runs "
                          "on no GPU",
                      i);
    else if (list != NULL)
      rc = group_gpus(list, i, gpus, &per, err);
    else if (gpu)
      per = n_gpus > 0 ? n_gpus : 1;
    if (rc != BERTH_OK)
      break;
    any_gpu = any_gpu || gpu || list != NULL;
    all = all || (gpu && list == NULL);
    any_cpu = any_cpu || cpu;
    total += c * (json_int_t)per;
  }
  if (rc == BERTH_OK && any_gpu && any_cpu)
    rc = berth_errf(err, BERTH_E_CONFIG,
                    KEY "instance_group: KIND_CPU and KIND_GPU groups in one "
                        "model are not supported (Berth gives a model one "
                        "devices list; load a second version for the other)");
  json_t *devices = NULL;
  if (rc == BERTH_OK && any_gpu)
    devices = all ? json_string("all") : json_incref(gpus);
  else if (rc == BERTH_OK && any_cpu)
    devices = json_string("cpu");
  json_decref(gpus);
  if (rc != BERTH_OK)
    return rc;
  json_t *t = json_integer(total);
  if (t == NULL || json_object_set_new(out, "instances", t) != 0 ||
      (devices != NULL && json_object_set_new(out, "devices", devices) != 0))
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  return BERTH_OK;
}

static int take_dynamic_batching(json_t *out, const json_t *v,
                                 berth_errmsg *err) {
  if (!json_is_object(v))
    return berth_errf(err, BERTH_E_CONFIG,
                      KEY "dynamic_batching: expected "
                          "an object");
  const char *k;
  json_t *x;
  int rc = BERTH_OK;
  json_object_foreach((json_t *)v, k, x) {
    if (strcmp(k, "max_queue_delay_microseconds") == 0)
      rc = set_int(out, "max_queue_delay_us", x,
                   "dynamic_batching.max_queue_delay_microseconds", err);
    else if (strcmp(k, "preferred_batch_size") == 0)
      rc = set_int_list(out, "preferred_batch_sizes", x,
                        "dynamic_batching.preferred_batch_size", err);
    else
      rc = berth_errf(err, BERTH_E_CONFIG,
                      KEY "dynamic_batching.%.64s: not "
                          "supported (max_queue_delay_microseconds and "
                          "preferred_batch_size are)",
                      k);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

/* One key of the override, into out. */
static int take(json_t *out, const char *k, const json_t *v, const char *name,
                size_t n_gpus, berth_errmsg *err) {
  static const char *const ints[] = {"max_batch_size", "instances",
                                     "max_queue_delay_us", "timeout_us",
                                     "max_queue_size"};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
    if (strcmp(k, ints[i]) == 0)
      return set_int(out, k, v, k, err);
  if (strcmp(k, "preferred_batch_sizes") == 0)
    return set_int_list(out, k, v, k, err);
  if (strcmp(k, "instance_group") == 0)
    return take_instance_group(out, v, n_gpus, err);
  if (strcmp(k, "dynamic_batching") == 0)
    return take_dynamic_batching(out, v, err);
  if (strcmp(k, "name") == 0) {
    if (!json_is_string(v) || strcmp(json_string_value(v), name) != 0)
      return berth_errf(err, BERTH_E_CONFIG,
                        KEY "name: not the model in the "
                            "path (\"%.128s\")",
                        name);
    return BERTH_OK;
  }
  /* Berth's autoscaling block (docs/autoscaling.md) replaces the entry's
   * whole; null removes it (fixed instances). The model entry's parse
   * checks its keys. */
  if (strcmp(k, "autoscaling") == 0 && json_is_null(v)) {
    json_object_del(out, k);
    return BERTH_OK;
  }
  if (strcmp(k, "version") == 0 || strcmp(k, "parameters") == 0 ||
      strcmp(k, "devices") == 0 || strcmp(k, "gpu_memory") == 0 ||
      strcmp(k, "autoscaling") == 0) {
    if (json_object_set(out, k, (json_t *)v) != 0)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    return BERTH_OK;
  }
  return berth_errf(err, BERTH_E_CONFIG,
                    KEY
                    "%.64s: not something a config "
                    "override may change (it may change max_batch_size, "
                    "instance_group, dynamic_batching, instances, "
                    "max_queue_delay_us, preferred_batch_sizes, timeout_us, "
                    "max_queue_size, parameters, devices, gpu_memory, "
                    "autoscaling; the model's files decide "
                    "its inputs and outputs)",
                    k);
}

int berth_repo_override_entry(const json_t *base, const json_t *override,
                              const char *name, size_t n_gpus, json_t **out,
                              berth_errmsg *err) {
  *out = NULL;
  if (!json_is_object(base) || !json_is_object(override))
    return berth_errf(err, BERTH_E_CONFIG,
                      "parameters.config: expected an "
                      "object");
  json_t *merged = json_deep_copy(base);
  if (merged == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  const char *k;
  json_t *v;
  json_object_foreach((json_t *) override, k, v) {
    int rc = take(merged, k, v, name, n_gpus, err);
    if (rc != BERTH_OK) {
      json_decref(merged);
      return rc;
    }
  }
  *out = merged;
  return BERTH_OK;
}

int berth_repo_override_for(berth_engine *e, const char *name, json_t *config,
                            json_t **parsed, json_t **merged,
                            berth_errmsg *err) {
  *merged = NULL;
  *parsed = json_is_string(config)
                ? berth_yaml_load(json_string_value(config),
                                  json_string_length(config), err)
                : json_incref(config);
  if (*parsed == NULL) {
    char why[BERTH_ERRMSG_SIZE];
    snprintf(why, sizeof why, "%s", err->msg);
    return berth_errf(err, BERTH_E_CONFIG, "parameters.config: %s", why);
  }
  if (!berth_repo_is_override(*parsed))
    return BERTH_OK;
  const char *ver = json_string_value(json_object_get(*parsed, "version"));
  berth_model *base = NULL;
  for (size_t i = 0; i < e->n_models; i++)
    if (strcmp(e->models[i]->cfg->name, name) == 0 &&
        (ver == NULL || strcmp(e->models[i]->cfg->version, ver) == 0))
      base = e->models[i];
  if (base == NULL)
    return berth_errf(err, BERTH_E_NOT_FOUND,
                      "Request for unknown model: "
                      "'%.128s'%s%.64s is not found; a config override "
                      "changes a model the server serves (a new model needs "
                      "its whole entry, with path and runtime)",
                      name, ver ? " version " : "", ver ? ver : "");
  return berth_repo_override_entry(base->cfg->entry, *parsed, name,
                                   e->cfg.n_gpus, merged, err);
}
