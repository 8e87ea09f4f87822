/* Tests for a load's config override (repo_override.c): Triton's partial
 * configs with numbers as strings merge over the model's entry; keys that
 * would choose other files or code are not overrides; bad values name the
 * key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "repo_override.h"

#define BASE                                                                   \
  "{\"name\":\"m\",\"version\":\"1\",\"runtime\":\"python\","                  \
  "\"path\":\"/r/m/1/model.py\",\"class\":\"M\",\"instances\":1,"              \
  "\"max_batch_size\":0}"

static json_t *js(const char *text) {
  json_error_t e;
  json_t *v = json_loads(text, 0, &e);
  assert_non_null(v);
  return v;
}

static int merge(const char *over, json_t **out, berth_errmsg *err) {
  json_t *b = js(BASE), *o = js(over);
  int rc = berth_repo_override_entry(b, o, "m", 2, out, err); /* 2 GPUs */
  json_decref(b);
  json_decref(o);
  return rc;
}

static void test_is_override(void **state) {
  (void)state;
  const char *yes[] = {"{}", "{\"max_batch_size\":\"16\"}", "{\"name\":\"m\"}"};
  const char *no[] = {"{\"path\":\"/x\"}",
                      "{\"runtime\":\"onnx\"}",
                      "{\"class\":\"C\"}",
                      "{\"platform\":\"p\"}",
                      "[1]",
                      "\"s\""};
  for (size_t i = 0; i < 3; i++) {
    json_t *v = js(yes[i]);
    assert_true(berth_repo_is_override(v));
    json_decref(v);
  }
  for (size_t i = 0; i < 6; i++) {
    json_t *v = json_loads(no[i], JSON_DECODE_ANY, NULL);
    assert_false(berth_repo_is_override(v));
    json_decref(v);
  }
}

static void test_tritons_keys_merge(void **state) {
  (void)state;
  json_t *out;
  berth_errmsg err;
  assert_int_equal(
      merge("{\"name\":\"m\",\"max_batch_size\":\"16\","
            "\"instance_group\":[{\"count\":\"2\",\"kind\":\"KIND_CPU\"},"
            "{\"count\":1}],\"dynamic_batching\":{"
            "\"max_queue_delay_microseconds\":\"500\","
            "\"preferred_batch_size\":[\"4\",8]}}",
            &out, &err),
      BERTH_OK);
  assert_int_equal(json_integer_value(json_object_get(out, "max_batch_size")),
                   16);
  assert_int_equal(json_integer_value(json_object_get(out, "instances")), 3);
  assert_int_equal(
      json_integer_value(json_object_get(out, "max_queue_delay_us")), 500);
  json_t *p = json_object_get(out, "preferred_batch_sizes");
  assert_int_equal(json_array_size(p), 2);
  assert_int_equal(json_integer_value(json_array_get(p, 0)), 4);
  /* the files and code stay the model's */
  assert_string_equal(json_string_value(json_object_get(out, "path")),
                      "/r/m/1/model.py");
  assert_string_equal(json_string_value(json_object_get(out, "class")), "M");
  json_decref(out);
}

/* instance_group's kind and gpus become devices (docs/gpus.md). */
static void test_instance_group_devices(void **state) {
  (void)state;
  json_t *out;
  berth_errmsg err;
  /* count per listed GPU: 2 x [1, 0] + 1 x [0] = 5 on GPUs 1 and 0 */
  assert_int_equal(
      merge("{\"instance_group\":[{\"count\":2,\"kind\":\"KIND_GPU\","
            "\"gpus\":[1,\"0\"]},{\"count\":1,\"gpus\":[0]}]}",
            &out, &err),
      BERTH_OK);
  assert_int_equal(json_integer_value(json_object_get(out, "instances")), 5);
  json_t *d = json_object_get(out, "devices");
  assert_int_equal(json_array_size(d), 2);
  assert_int_equal(json_integer_value(json_array_get(d, 0)), 1);
  assert_int_equal(json_integer_value(json_array_get(d, 1)), 0);
  json_decref(out);
  /* KIND_GPU without gpus: every GPU, count per GPU (2 known) */
  assert_int_equal(
      merge("{\"instance_group\":[{\"count\":3,\"kind\":\"KIND_GPU\"}]}", &out,
            &err),
      BERTH_OK);
  assert_int_equal(json_integer_value(json_object_get(out, "instances")), 6);
  assert_string_equal(json_string_value(json_object_get(out, "devices")),
                      "all");
  json_decref(out);
  assert_int_equal(
      merge("{\"instance_group\":[{\"count\":2,\"kind\":\"KIND_CPU\"}]}", &out,
            &err),
      BERTH_OK);
  assert_string_equal(json_string_value(json_object_get(out, "devices")),
                      "cpu");
  json_decref(out);
  /* KIND_AUTO (or none) leaves devices as they were */
  assert_int_equal(merge("{\"instance_group\":[{\"count\":2}]}", &out, &err),
                   BERTH_OK);
  assert_null(json_object_get(out, "devices"));
  json_decref(out);
  /* Berth's own keys pass through (the entry's parse checks them) */
  assert_int_equal(
      merge("{\"devices\":[0],\"gpu_memory\":\"2GiB\"}", &out, &err), BERTH_OK);
  assert_string_equal(json_string_value(json_object_get(out, "gpu_memory")),
                      "2GiB");
  json_decref(out);
}

static void test_bad_overrides_name_the_key(void **state) {
  (void)state;
  struct {
    const char *over, *word;
  } cases[] = {
      {"{\"max_batch_size\":\"sixteen\"}", "parameters.config.max_batch_size"},
      {"{\"max_batch_size\":\"1.5\"}", "max_batch_size"},
      {"{\"max_batch_size\":\"99999999999999999999\"}", "max_batch_size"},
      {"{\"name\":\"other\"}", "parameters.config.name"},
      {"{\"input\":[]}", "parameters.config.input"},
      {"{\"instance_group\":[{\"count\":0}]}", "instance_group[0].count"},
      {"{\"instance_group\":[]}", "instance_group"},
      {"{\"instance_group\":[{\"count\":1,\"kind\":\"GPU\"}]}",
       "instance_group[0].kind: expected KIND_AUTO"},
      {"{\"instance_group\":[{\"count\":1,\"kind\":\"KIND_CPU\","
       "\"gpus\":[0]}]}",
       "instance_group[0].gpus: a KIND_CPU group runs on no GPU"},
      {"{\"instance_group\":[{\"count\":1,\"gpus\":[]}]}",
       "instance_group[0].gpus: expected a non-empty list"},
      {"{\"instance_group\":[{\"count\":1,\"gpus\":[\"x\"]}]}",
       "instance_group[0].gpus[0]: expected an integer"},
      {"{\"instance_group\":[{\"count\":1,\"kind\":\"KIND_CPU\"},"
       "{\"count\":1,\"kind\":\"KIND_GPU\"}]}",
       "KIND_CPU and KIND_GPU groups in one model are not supported"},
      {"{\"dynamic_batching\":{\"priority_levels\":2}}",
       "dynamic_batching.priority_levels"},
      {"{\"dynamic_batching\":{\"preferred_batch_size\":[\"x\"]}}",
       "preferred_batch_size[0]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    json_t *out = (json_t *)1;
    berth_errmsg err = {{0}};
    assert_int_equal(merge(cases[i].over, &out, &err), BERTH_E_CONFIG);
    assert_null(out);
    assert_non_null(strstr(err.msg, cases[i].word));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_is_override),
      cmocka_unit_test(test_tritons_keys_merge),
      cmocka_unit_test(test_instance_group_devices),
      cmocka_unit_test(test_bad_overrides_name_the_key),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
