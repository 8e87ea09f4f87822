/* Tests for the `pipelines:` list of the engine document
 * (pipeline_config.c): a valid sequence, ensemble and switch parse into the
 * expected graph; each class of mistake is refused with its key path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "pipeline.h"

/* Three models: tok (declared BYTES text -> INT64 ids), clf (declared ids ->
 * FP32 scores), free (no signature). */
#define MODELS                                                                 \
  "models:\n"                                                                  \
  "  - {name: tok, runtime: python, path: /t.py,\n"                            \
  "     inputs: [{name: text, datatype: BYTES, shape: [-1]}],\n"               \
  "     outputs: [{name: ids, datatype: INT64, shape: [-1, 8]}]}\n"            \
  "  - {name: clf, runtime: sklearn, path: /c.joblib,\n"                       \
  "     inputs: [{name: ids, datatype: INT64, shape: [-1, 8]}],\n"             \
  "     outputs: [{name: scores, datatype: FP32, shape: [-1, 2]}]}\n"          \
  "  - {name: free, runtime: python, path: /f.py}\n"

static int parse(const char *pipelines, berth_config *c, berth_errmsg *err) {
  char text[8192];
  snprintf(text, sizeof text, "%spipelines:\n%s", MODELS, pipelines);
  return berth_config_parse(text, strlen(text), c, err);
}

static void expect_error(const char *pipelines, const char *msg) {
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = parse(pipelines, &c, &err);
  if (rc != BERTH_E_CONFIG || strstr(err.msg, msg) == NULL)
    fail_msg("expected an error with \"%s\", got rc %d: %s", msg, rc, err.msg);
}

static void test_sequence(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = parse("  - name: seq\n"
                 "    steps:\n"
                 "      - {name: a, model: tok}\n"
                 "      - {name: b, model: clf}\n"
                 "      - {name: c, model: free}\n",
                 &c, &err);
  assert_int_equal(rc, BERTH_OK);
  assert_int_equal(c.n_pipelines, 1);
  berth_pipeline_config *p = &c.pipelines[0];
  assert_string_equal(p->name, "seq");
  assert_int_equal(p->n_steps, 3);
  assert_false(p->steps[0].wired);
  assert_int_equal(p->steps[0].from, -1);
  assert_int_equal(p->steps[0].n_deps, 0);
  assert_int_equal(p->steps[2].n_deps, 1);
  assert_int_equal(p->steps[2].deps[0], 1);
  assert_int_equal(p->n_outputs, 0);
  berth_config_clear(&c);
}

static void test_ensemble_and_switch(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = parse(
      "  - name: ens\n"
      "    inputs: [{name: text, datatype: BYTES, shape: [-1]}]\n"
      "    steps:\n"
      "      - {name: mix, model: free, inputs: {a: one.scores, b: two.x}}\n"
      "      - {name: one, model: clf, inputs: {ids: tk.ids}}\n"
      "      - {name: tk, model: tok, inputs: {text: $text}}\n"
      "      - name: two\n"
      "        inputs: {text: $text}\n"
      "        switch:\n"
      "          header: X-Tier\n"
      "          cases: [{equals: gold, model: free}, {in: [1, 2], model: free},\n"
      "                  {lt: 0.5, model: free}]\n"
      "          default: free\n"
      "    outputs: {scores: one.scores, mixed: mix.out}\n",
      &c, &err);
  assert_int_equal(rc, BERTH_OK);
  berth_pipeline_config *p = &c.pipelines[0];
  assert_int_equal(p->n_steps, 4);
  /* mix reads one and two: it waits for both */
  assert_int_equal(p->steps[0].n_deps, 2);
  assert_non_null(p->steps[3].sw);
  assert_int_equal(p->steps[3].sw->on, BERTH_PIPE_ON_HEADER);
  assert_string_equal(p->steps[3].sw->name, "x-tier"); /* lower-cased */
  assert_int_equal(p->steps[3].sw->n_cases, 3);
  assert_int_equal(p->steps[3].sw->cases[1].op, BERTH_PIPE_IN);
  assert_string_equal(p->steps[3].sw->dflt, "free");
  assert_int_equal(p->n_outputs, 2);
  assert_int_equal(p->outputs[0].step, 1);
  berth_config_clear(&c);
}

static void test_errors(void **state) {
  (void)state;
  expect_error("  - name: p\n    steps: [{name: a, model: nope}]\n",
               "pipelines[0].steps[0].model: unknown model \"nope\"");
  expect_error(
      "  - name: p\n    steps: [{name: a, model: free, inputs: {x: b.y}}]\n",
      "pipelines[0].steps[0].inputs.x: unknown step \"b\"");
  expect_error(
      "  - name: p\n    steps: [{name: a, model: free, inputs: {x: nodot}}]\n",
      "pipelines[0].steps[0].inputs.x: \"nodot\" is not a reference");
  expect_error("  - name: p\n"
               "    steps:\n"
               "      - {name: a, model: free, inputs: {x: b.y}}\n"
               "      - {name: b, model: free, inputs: {x: a.y}}\n",
               "pipelines[0].steps: the steps form a cycle (a -> b -> a)");
  expect_error(
      "  - name: p\n    steps: [{name: a, model: free, inputs: {x: a.y}}]\n",
      "pipelines[0].steps[0].inputs.x: a step cannot read its own output");
  expect_error(
      "  - name: p\n    steps: [{name: a, model: free}, {name: a, model: tok}]\n",
      "pipelines[0].steps[1].name: duplicate step name \"a\"");
  expect_error("  - name: p\n    steps: [{name: a.b, model: free}]\n",
               "pipelines[0].steps[0].name: required");
  expect_error("  - name: tok\n    steps: [{name: a, model: free}]\n",
               "pipelines[0].name: \"tok\" is also a model's name");
  expect_error("  - name: p\n    steps: [{name: a, model: free, bogus: 1}]\n",
               "pipelines[0].steps[0].bogus: unknown key");
  expect_error(
      "  - name: p\n    steps: [{name: a}]\n",
      "pipelines[0].steps[0]: give the step either a model or a switch");
  expect_error("  - name: p\n    steps: []\n",
               "pipelines[0].steps: required: a non-empty list");
  /* declared signatures: unknown outputs and datatype mismatches */
  expect_error(
      "  - name: p\n    steps: [{name: a, model: tok},\n"
      "            {name: b, model: clf, inputs: {ids: a.idz}}]\n",
      "pipelines[0].steps[1].inputs.ids: step \"a\" (model tok) has no "
      "output \"idz\"");
  expect_error(
      "  - name: p\n    steps: [{name: a, model: clf},\n"
      "            {name: b, model: clf, inputs: {ids: a.scores}}]\n",
      "output \"scores\" of step \"a\" is FP32 but what reads it takes "
      "INT64");
  expect_error(
      "  - name: p\n    inputs: [{name: text, datatype: BYTES, shape: [-1, 2]}]\n"
      "    steps: [{name: a, model: tok, inputs: {text: $text}}]\n",
      "pipelines[0].steps[0].inputs.text: input \"text\" has shape "
      "[-1, 2] but what reads it takes [-1]");
  expect_error(
      "  - name: p\n    steps: [{name: a, model: tok, inputs: {txt: $text}}]\n",
      "pipelines[0].steps[0].inputs.txt: model tok has no input \"txt\"");
  expect_error(
      "  - name: p\n    inputs: [{name: text, datatype: BYTES, shape: [-1]}]\n"
      "    steps: [{name: a, model: tok, inputs: {text: $other}}]\n",
      "pipelines[0].steps[0].inputs.text: the pipeline has no input "
      "\"other\"");
  expect_error("  - name: p\n    steps: [{name: a, model: tok}]\n"
               "    outputs: {o: a.nope}\n",
               "pipelines[0].outputs.o: step \"a\" (model tok) has no output "
               "\"nope\"");
  /* switches */
  expect_error("  - name: p\n    steps: [{name: a, switch: {body: x, "
               "cases: [{equals: 1, model: free}]}}]\n",
               "pipelines[0].steps[0].switch.body: unknown key");
  expect_error(
      "  - name: p\n    steps: [{name: a, switch: {header: x, input: y, "
      "cases: [{equals: 1, model: free}]}}]\n",
      "pipelines[0].steps[0].switch: give one of input, header or "
      "parameter");
  expect_error("  - name: p\n    steps: [{name: a, switch: {header: x, "
               "cases: [{equals: 1, lt: 2, model: free}]}}]\n",
               "pipelines[0].steps[0].switch.cases[0]: give one test");
  expect_error("  - name: p\n    steps: [{name: a, switch: {header: x, "
               "cases: [{lt: a, model: free}]}}]\n",
               "pipelines[0].steps[0].switch.cases[0].lt: expected a number");
  expect_error("  - name: p\n    steps: [{name: a, switch: {header: x, "
               "cases: [{equals: 1, model: free}], default: gone}}]\n",
               "pipelines[0].steps[0].switch.default: unknown model \"gone\"");
  expect_error("  - name: p\n    steps: [{name: a, model: free}]\n"
               "  - name: p\n    steps: [{name: a, model: free}]\n",
               "pipelines[1].name: duplicate pipeline \"p\"");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sequence),
      cmocka_unit_test(test_ensemble_and_switch),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
