/* Berth engine: the config's GPU keys (config_schema.h) — sizes in bytes
 * with units, a model's devices, and the document's gpus list checked
 * against itself and the models. docs/gpus.md is the prose. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_schema.h"

static void *at(void *base, size_t off) { return (char *)base + off; }

/* ---- bytes ------------------------------------------------------------ */

typedef struct {
  const char *name;
  double factor;
} unit;

static const unit units[] = {
    {"", 1},
    {"b", 1},
    {"kb", 1e3},
    {"mb", 1e6},
    {"gb", 1e9},
    {"tb", 1e12},
    {"kib", 1024.0},
    {"mib", 1048576.0},
    {"gib", 1073741824.0},
    {"tib", 1099511627776.0},
};

/* "16GiB", "1.5 GB", "512": the number of bytes, or -1 when s is not a
 * size (digits, an optional fraction, optional spaces, an optional unit of
 * units[], case ignored). */
static double parse_size(const char *s) {
  const char *p = s;
  double v = 0;
  int digits = 0;
  for (; *p >= '0' && *p <= '9' && digits < 20; p++, digits++)
    v = v * 10 + (*p - '0');
  if (digits == 0 || (*p >= '0' && *p <= '9'))
    return -1;
  if (*p == '.') {
    double scale = 0.1;
    int frac = 0;
    for (p++; *p >= '0' && *p <= '9' && frac < 9; p++, frac++, scale /= 10)
      v += (*p - '0') * scale;
    if (frac == 0 || (*p >= '0' && *p <= '9'))
      return -1;
  }
  while (*p == ' ')
    p++;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (strcasecmp(p, units[i].name) == 0)
      return floor(v * units[i].factor + 0.5);
  return -1;
}

int berth_config_bytes(const berth_config_field *f, json_t *v, void *base,
                       const char *path, json_t **norm, berth_errmsg *err) {
  double n = -1;
  if (json_is_integer(v))
    n = (double)json_integer_value(v);
  else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)))
    n = json_real_value(v);
  else if (json_is_string(v) && json_string_length(v) <= 64)
    n = parse_size(json_string_value(v));
  if (n < (double)f->imin || n > (double)f->imax) {
    char shown[80];
    if (json_is_string(v))
      snprintf(shown, sizeof shown, "\"%.64s\"", json_string_value(v));
    else if (json_is_number(v))
      snprintf(shown, sizeof shown, "%.17g", json_number_value(v));
    else
      snprintf(shown, sizeof shown, "%s",
               json_is_array(v)    ? "a list"
               : json_is_object(v) ? "a mapping"
                                   : "another kind");
    return berth_errf(err, BERTH_E_CONFIG,
                      "%s: expected a size in bytes from %" PRId64
                      " to %" PRId64
                      ", a number or a number with a unit (B, KB, MB, GB, "
                      "TB, KiB, MiB, GiB, TiB: \"16GiB\"), got %s",
                      path, f->imin, f->imax, shown);
  }
  *(uint64_t *)at(base, f->slot) = (uint64_t)n;
  *norm = json_integer((json_int_t)n);
  return *norm != NULL
             ? BERTH_OK
             : berth_errf(err, BERTH_E_CONFIG, "%s: out of memory", path);
}

/* ---- devices ---------------------------------------------------------- */

static int devices_bad(const char *path, berth_errmsg *err) {
  return berth_errf(err, BERTH_E_CONFIG,
                    "%s: expected auto, cpu, all, or a list of distinct GPU "
                    "indices (0..%d, at most %d), e.g. [0, 1]",
                    path, BERTH_GPU_INDEX_MAX, BERTH_MAX_GPUS);
}

static int devices_word(const berth_config_field *f, json_t *v, void *base,
                        const char *path, berth_errmsg *err) {
  static const char *const words[] = {"auto", "cpu", "all"};
  static const berth_devices_kind kinds[] = {
      BERTH_DEVICES_AUTO, BERTH_DEVICES_CPU, BERTH_DEVICES_ALL};
  for (size_t i = 0; i < 3; i++)
    if (strcmp(json_string_value(v), words[i]) == 0) {
      *(uint8_t *)at(base, f->flag_slot) = (uint8_t)kinds[i];
      *(size_t *)at(base, f->count_slot) = 0;
      return BERTH_OK;
    }
  return devices_bad(path, err);
}

int berth_config_devices(const berth_config_field *f, json_t *v, void *base,
                         const char *path, json_t **norm, berth_errmsg *err) {
  if (json_is_string(v)) {
    int rc = devices_word(f, v, base, path, err);
    if (rc == BERTH_OK)
      *norm = json_incref(v);
    return rc;
  }
  json_t *list = json_is_integer(v) ? json_pack("[O]", v) : json_incref(v);
  if (!json_is_array(list) || json_array_size(list) == 0 ||
      json_array_size(list) > BERTH_MAX_GPUS) {
    json_decref(list);
    return devices_bad(path, err);
  }
  uint32_t *out = at(base, f->slot);
  size_t i;
  json_t *x;
  json_array_foreach(list, i, x) {
    json_int_t n = json_is_integer(x) ? json_integer_value(x) : -1;
    bool seen = false;
    for (size_t k = 0; k < i && n >= 0; k++)
      seen = seen || out[k] == (uint32_t)n;
    if (n < 0 || n > BERTH_GPU_INDEX_MAX || seen) {
      json_decref(list);
      char where[256];
      snprintf(where, sizeof where, "%.200s[%zu]", path, i);
      return seen ? berth_errf(err, BERTH_E_CONFIG,
                               "%s: GPU %" JSON_INTEGER_FORMAT
                               " is listed twice",
                               where, n)
                  : devices_bad(where, err);
    }
    out[i] = (uint32_t)n;
  }
  *(uint8_t *)at(base, f->flag_slot) = (uint8_t)BERTH_DEVICES_LIST;
  *(size_t *)at(base, f->count_slot) = json_array_size(list);
  *norm = list;
  return BERTH_OK;
}

/* ---- the document ------------------------------------------------------ */

static int gpus_self_check(berth_config *c, berth_errmsg *err) {
  if (c->n_gpus > BERTH_MAX_GPUS)
    return berth_errf(err, BERTH_E_CONFIG, "gpus: at most %d GPUs",
                      BERTH_MAX_GPUS);
  for (size_t i = 0; i < c->n_gpus; i++) {
    berth_gpu_config *g = &c->gpus[i];
    for (size_t k = 0; k < i; k++)
      if (c->gpus[k].index == g->index)
        return berth_errf(err, BERTH_E_CONFIG,
                          "gpus[%zu].index: GPU %u is listed twice", i,
                          (unsigned)g->index);
    if (g->budget == 0)
      g->budget = g->memory;
    else if (g->memory != 0 && g->budget > g->memory)
      return berth_errf(err, BERTH_E_CONFIG,
                        "gpus[%zu].budget: %" PRIu64
                        " bytes is more than the GPU's memory (%" PRIu64
                        " bytes)",
                        i, g->budget, g->memory);
  }
  return BERTH_OK;
}

static bool gpu_known(const berth_config *c, uint32_t index) {
  for (size_t i = 0; i < c->n_gpus; i++)
    if (c->gpus[i].index == index)
      return true;
  return false;
}

int berth_config_gpus_check(berth_config *c, berth_errmsg *err) {
  int rc = gpus_self_check(c, err);
  for (size_t m = 0; m < c->n_models && rc == BERTH_OK; m++) {
    const berth_model_config *mc = &c->models[m];
    if (mc->devices_kind == BERTH_DEVICES_ALL && c->n_gpus == 0)
      rc = berth_errf(err, BERTH_E_CONFIG,
                      "models[%zu].devices: all asks for GPUs, but gpus is "
                      "empty (berth serve lists them with nvidia-smi; give "
                      "them with --gpus or BERTH_GPUS, e.g. 0:80GiB)",
                      m);
    for (size_t k = 0;
         rc == BERTH_OK && mc->devices_kind == BERTH_DEVICES_LIST &&
         k < mc->n_devices;
         k++)
      if (!gpu_known(c, mc->devices[k]))
        rc = berth_errf(err, BERTH_E_CONFIG,
                        "models[%zu].devices[%zu]: GPU %u is not in gpus "
                        "(the server's GPUs: %zu listed; berth serve lists "
                        "them with nvidia-smi, or give --gpus / BERTH_GPUS)",
                        m, k, (unsigned)mc->devices[k], c->n_gpus);
  }
  return rc;
}
