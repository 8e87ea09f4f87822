/* Tests for berth_config_schema_json (berthd --print-limits): the bounds it
 * renders are the ones berth_config_parse enforces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

/* schema[section]["keys"][key], or schema[section] when key is NULL. */
static json_t *field(json_t *schema, const char *section, const char *key) {
  json_t *s = json_object_get(schema, section);
  assert_non_null(s);
  if (key == NULL)
    return s;
  json_t *f = json_object_get(json_object_get(s, "keys"), key);
  assert_non_null(f);
  return f;
}

/* f["keys"][key]: a field of a mapping or of a list's elements. */
static json_t *sub(json_t *f, const char *key) {
  json_t *g = json_object_get(json_object_get(f, "keys"), key);
  assert_non_null(g);
  return g;
}

static json_int_t num(json_t *f, const char *key) {
  json_t *v = json_object_get(f, key);
  assert_true(json_is_integer(v));
  return json_integer_value(v);
}

/* A one-model document with `key: value` in its entry parses or not. */
static int model_with(const char *key, long long value) {
  char text[256];
  snprintf(text, sizeof text,
           "{\"models\": [{\"name\": \"m\", \"runtime\": \"sklearn\", "
           "\"path\": \"/m.joblib\", \"%s\": %lld}]}",
           key, value);
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = berth_config_parse(text, strlen(text), &c, &err);
  if (rc == BERTH_OK)
    berth_config_clear(&c);
  return rc;
}

static void test_model_bounds(void **state) {
  (void)state;
  json_t *schema = berth_config_schema_json();
  assert_non_null(schema);
  static const char *const keys[] = {"instances", "max_batch_size",
                                     "max_queue_delay_us", "max_queue_size",
                                     "timeout_us"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    json_t *f = field(schema, "models", keys[i]);
    assert_string_equal(json_string_value(json_object_get(f, "type")),
                        "integer");
    json_int_t lo = num(f, "min"), hi = num(f, "max");
    assert_int_equal(model_with(keys[i], lo), BERTH_OK);
    assert_int_equal(model_with(keys[i], hi), BERTH_OK);
    assert_int_equal(model_with(keys[i], hi + 1), BERTH_E_CONFIG);
    if (lo > 0)
      assert_int_equal(model_with(keys[i], lo - 1), BERTH_E_CONFIG);
  }
  assert_int_equal(num(field(schema, "models", "instances"), "max"), 256);
  assert_int_equal(num(field(schema, "models", "max_batch_size"), "max"),
                   1048576);
  assert_int_equal(num(field(schema, "models", "timeout_us"), "max"),
                   INT64_C(3600000000));
  json_t *sizes = field(schema, "models", "preferred_batch_sizes");
  assert_int_equal(num(sizes, "min"), 1);
  assert_int_equal(num(sizes, "max"), 1048576);
  json_decref(schema);
}

static void test_sections(void **state) {
  (void)state;
  json_t *schema = berth_config_schema_json();
  assert_non_null(schema);
  json_t *port = field(schema, "server", "http_port");
  assert_int_equal(num(port, "min"), 0);
  assert_int_equal(num(port, "max"), 65535);
  assert_int_equal(num(port, "default"), 8080);
  json_t *models = field(schema, "models", NULL);
  assert_true(json_is_true(json_object_get(models, "required")));
  assert_int_equal(num(models, "min_items"), 1);
  json_t *level = json_object_get(field(schema, "log", "level"), "choices");
  assert_int_equal(json_array_size(level), 4);
  assert_string_equal(json_string_value(json_array_get(level, 0)), "debug");
  json_t *dt = sub(field(schema, "models", "inputs"), "datatype");
  assert_int_equal(json_array_size(json_object_get(dt, "choices")), 14);
  json_t *weight = sub(field(schema, "routes", "split"), "weight");
  assert_true(json_is_real(json_object_get(weight, "max")));
  /* every key a model entry takes is listed, and no other */
  json_t *keys = json_object_get(field(schema, "models", NULL), "keys");
  assert_int_equal(json_object_size(keys), 22);
  assert_non_null(json_object_get(keys, "backend")); /* docs/native.md */
  assert_non_null(json_object_get(keys, "devices"));
  assert_non_null(json_object_get(keys, "gpu_memory"));
  assert_non_null(json_object_get(keys, "autoscaling"));
  assert_non_null(json_object_get(keys, "payload_log"));
  assert_non_null(json_object_get(keys, "decoupled"));
  assert_non_null(json_object_get(keys, "sequence_batching"));
  json_t *as = json_object_get(json_object_get(keys, "autoscaling"), "keys");
  assert_int_equal(json_object_size(as), 9);
  assert_int_equal(num(json_object_get(as, "stable_window_s"), "default"), 60);
  json_t *budget = field(schema, "memory_budget", NULL);
  assert_string_equal(json_string_value(json_object_get(budget, "type")),
                      "bytes");
  json_decref(schema);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_model_bounds),
      cmocka_unit_test(test_sections),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
