/* Tests for the config's GPU keys (config_devices.c): the gpus list, a
 * model's devices and gpu_memory, sizes with units, and the messages that
 * name the key path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

#define GIB (UINT64_C(1) << 30)

/* A document with the given gpus list (YAML flow, or "" for none) and one
 * model whose entry adds extra (YAML flow keys, or ""). */
static int doc(const char *gpus, const char *extra, berth_config *c,
               berth_errmsg *err) {
  char text[1024];
  snprintf(text, sizeof text,
           "%s%s%s"
           "models:\n  - {name: m, runtime: python, path: /m.py%s%s}\n",
           gpus[0] ? "gpus: " : "", gpus, gpus[0] ? "\n" : "",
           extra[0] ? ", " : "", extra);
  return berth_config_parse(text, strlen(text), c, err);
}

static void test_defaults(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  assert_int_equal(doc("", "", &c, &err), BERTH_OK);
  assert_int_equal(c.n_gpus, 0);
  assert_int_equal(c.models[0].devices_kind, BERTH_DEVICES_AUTO);
  assert_int_equal(c.models[0].gpu_memory, 0);
  /* absent keys stay out of the worker's entry */
  json_t *e = c.models[0].entry;
  assert_null(json_object_get(e, "devices"));
  assert_null(json_object_get(e, "gpu_memory"));
  berth_config_clear(&c);
}

static void test_gpus_and_units(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = doc("[{index: 0, memory: 16GiB, budget: \"12 GiB\"},"
               " {index: 3, memory: 80GB}, {index: 5}]",
               "devices: [3, 0], gpu_memory: 1.5GiB", &c, &err);
  assert_int_equal(rc, BERTH_OK);
  assert_int_equal(c.n_gpus, 3);
  assert_int_equal(c.gpus[0].index, 0);
  assert_int_equal(c.gpus[0].memory, 16 * GIB);
  assert_int_equal(c.gpus[0].budget, 12 * GIB);
  assert_int_equal(c.gpus[1].index, 3);
  assert_int_equal(c.gpus[1].memory, UINT64_C(80000000000));
  assert_int_equal(c.gpus[1].budget, UINT64_C(80000000000)); /* = memory */
  assert_int_equal(c.gpus[2].memory, 0);                     /* unknown */
  assert_int_equal(c.gpus[2].budget, 0);                     /* no limit */
  const berth_model_config *m = &c.models[0];
  assert_int_equal(m->devices_kind, BERTH_DEVICES_LIST);
  assert_int_equal(m->n_devices, 2);
  assert_int_equal(m->devices[0], 3);
  assert_int_equal(m->devices[1], 0);
  assert_int_equal(m->gpu_memory, 3 * GIB / 2);
  json_t *list = json_object_get(m->entry, "devices");
  assert_int_equal(json_array_size(list), 2);
  assert_int_equal(json_integer_value(json_array_get(list, 0)), 3);
  assert_int_equal(json_integer_value(json_object_get(m->entry, "gpu_memory")),
                   (json_int_t)(3 * GIB / 2));
  berth_config_clear(&c);
}

static void test_words(void **state) {
  (void)state;
  static const struct {
    const char *value;
    berth_devices_kind kind;
  } words[] = {{"cpu", BERTH_DEVICES_CPU},
               {"all", BERTH_DEVICES_ALL},
               {"auto", BERTH_DEVICES_AUTO},
               {"2", BERTH_DEVICES_LIST}};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    berth_config c;
    berth_errmsg err = {{0}};
    char extra[64];
    snprintf(extra, sizeof extra, "devices: %s", words[i].value);
    assert_int_equal(doc("[{index: 2, memory: 1024}]", extra, &c, &err),
                     BERTH_OK);
    assert_int_equal(c.models[0].devices_kind, words[i].kind);
    berth_config_clear(&c);
  }
}

typedef struct {
  const char *gpus;
  const char *extra;
  const char *msg; /* a part of the message */
} error_case;

static const error_case errors[] = {
    {"", "devices: gpu",
     "models[0].devices: expected auto, cpu, all, or a list"},
    {"", "devices: []", "models[0].devices: expected auto, cpu, all"},
    {"[{index: 0}]", "devices: [0, 0]",
     "models[0].devices[1]: GPU 0 is listed twice"},
    {"[{index: 0}]", "devices: [0, -1]", "models[0].devices[1]: expected"},
    {"[{index: 0}]", "devices: [1024]", "models[0].devices[0]: expected"},
    {"[{index: 0}]", "devices: [\"0\"]", "models[0].devices[0]: expected"},
    {"", "devices: [0]", "models[0].devices[0]: GPU 0 is not in gpus"},
    {"[{index: 1}]", "devices: [0, 1]",
     "models[0].devices[0]: GPU 0 is not in gpus"},
    {"", "devices: all",
     "models[0].devices: all asks for GPUs, but gpus is "
     "empty"},
    {"", "gpu_memory: 16G", "models[0].gpu_memory: expected a size in bytes"},
    {"", "gpu_memory: -5", "models[0].gpu_memory: expected a size in bytes"},
    {"", "gpu_memory: 1.5", "models[0].gpu_memory: expected a size"},
    {"", "gpu_memory: 2PiB", "models[0].gpu_memory: expected a size"},
    {"", "gpu_memory: \"GiB\"", "got \"GiB\""},
    {"[{index: 0}, {index: 0}]", "", "gpus[1].index: GPU 0 is listed twice"},
    {"[{index: 0, memory: 1GiB, budget: 2GiB}]", "",
     "gpus[0].budget: 2147483648 bytes is more than the GPU's memory"},
    {"[{index: 0, budget: 0}]", "",
     "gpus[0].budget: expected a size in bytes "
     "from 1"},
    {"[{index: 0, memory: lots}]", "", "gpus[0].memory: expected a size"},
    {"[{memory: 1GiB}]", "", "gpus[0].index: required"},
    {"[{index: 0, kind: gpu}]", "", "gpus[0].kind: unknown key"},
    {"{index: 0}", "", "gpus: expected a list of mappings"},
};

static void test_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
    berth_config c;
    berth_errmsg err = {{0}};
    int rc = doc(errors[i].gpus, errors[i].extra, &c, &err);
    if (rc != BERTH_E_CONFIG || strstr(err.msg, errors[i].msg) == NULL)
      fail_msg("case %zu (%s | %s): rc %d, message \"%s\"", i, errors[i].gpus,
               errors[i].extra, rc, err.msg);
  }
}

static void test_model_entry(void **state) {
  (void)state;
  /* a model loaded at run time: devices are checked against the GPUs when
   * its workers are placed, not here */
  json_t *entry =
      json_pack("{s:s, s:s, s:s, s:[i], s:s}", "name", "m", "runtime", "python",
                "path", "/m.py", "devices", 7, "gpu_memory", "512MiB");
  berth_model_config m;
  berth_errmsg err = {{0}};
  assert_int_equal(berth_config_parse_model_entry(entry, "", &m, &err),
                   BERTH_OK);
  assert_int_equal(m.devices_kind, BERTH_DEVICES_LIST);
  assert_int_equal(m.devices[0], 7);
  assert_int_equal(m.gpu_memory, UINT64_C(512) << 20);
  berth_config_model_clear(&m);
  json_object_set_new(entry, "devices", json_string("GPU"));
  assert_int_equal(
      berth_config_parse_model_entry(entry, "parameters.config", &m, &err),
      BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "parameters.config.devices: expected"));
  json_decref(entry);
}

static void test_schema(void **state) {
  (void)state;
  json_t *schema = berth_config_schema_json();
  assert_non_null(schema);
  json_t *gpus = json_object_get(schema, "gpus");
  assert_string_equal(json_string_value(json_object_get(gpus, "type")), "list");
  json_t *mem = json_object_get(json_object_get(gpus, "keys"), "memory");
  assert_string_equal(json_string_value(json_object_get(mem, "type")), "bytes");
  json_decref(schema);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),    cmocka_unit_test(test_gpus_and_units),
      cmocka_unit_test(test_words),       cmocka_unit_test(test_errors),
      cmocka_unit_test(test_model_entry), cmocka_unit_test(test_schema),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
