/* Tests for signature.c without a server: the shape bound of an input
 * without elements (overflow-safe, never reaching a worker), negative
 * dimensions, and the answer to a zero-row request formed from the
 * declared outputs. The model is a bare struct. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"

typedef struct fixture {
  berth_engine e;
  berth_model_config mc;
  berth_model m;
  berth_tensor_spec out[2];
  berth_tensor in;
  berth_infer_request r;
} fixture;

static void setup(fixture *f) {
  memset(f, 0, sizeof *f);
  f->e.cfg.max_body_bytes = 1000;
  f->mc.name = "m";
  f->m.engine = &f->e;
  f->m.cfg = &f->mc;
  f->out[0] = (berth_tensor_spec){
      .name = "y", .dtype = BERTH_DT_FP32, .ndim = 2, .shape = {-1, 3}};
  f->out[1] = (berth_tensor_spec){
      .name = "z", .dtype = BERTH_DT_INT64, .ndim = 1, .shape = {-1}};
  f->m.outputs = f->out;
  f->m.n_outputs = 2;
  f->in = (berth_tensor){.name = "x", .dtype = BERTH_DT_FP32, .ndim = 2};
  f->r.inputs = &f->in;
  f->r.n_inputs = 1;
}

static int check_shape(fixture *f, int64_t d0, int64_t d1, berth_errmsg *err) {
  f->in.shape[0] = d0;
  f->in.shape[1] = d1;
  return berth_signature_check(&f->m, &f->r, err);
}

static void test_extent_bound(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  berth_errmsg err = {{0}};
  assert_int_equal(check_shape(&f, INT64_MAX, 0, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "[9223372036854775807,0]"));
  assert_non_null(strstr(err.msg, "max_body_bytes"));
  assert_int_equal(check_shape(&f, 0, INT64_MAX, &err), BERTH_E_INVALID);
  assert_int_equal(check_shape(&f, 1001, 0, &err), BERTH_E_INVALID);
  assert_int_equal(check_shape(&f, 1000, 0, &err), BERTH_OK); /* at the bound */
  assert_int_equal(check_shape(&f, 0, 4, &err), BERTH_OK);
  assert_int_equal(check_shape(&f, -1, 4, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "dimension 0 is -1"));
  /* the gRPC limit counts when it is the larger one */
  f.e.cfg.grpc_max_message_bytes = 5000;
  assert_int_equal(berth_signature_max_extent(&f.e.cfg), 5000);
  assert_int_equal(check_shape(&f, 4000, 0, &err), BERTH_OK);
  assert_int_equal(check_shape(&f, 5001, 0, &err), BERTH_E_INVALID);
  /* three absurd dimensions whose product wraps 2^64 */
  f.in.ndim = 3;
  f.in.shape[0] = 1ll << 32;
  f.in.shape[1] = 1ll << 32;
  f.in.shape[2] = 0;
  assert_int_equal(berth_signature_check(&f.m, &f.r, &err), BERTH_E_INVALID);
}

static void test_zero_rows_answer(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  berth_errmsg err = {{0}};
  berth_infer_response resp;
  assert_int_equal(berth_signature_zero_rows(&f.m, &f.r, NULL, &err), BERTH_OK);
  assert_int_equal(berth_signature_zero_rows(&f.m, &f.r, &resp, &err),
                   BERTH_OK);
  assert_int_equal(resp.n_outputs, 2);
  assert_string_equal(resp.outputs[0].name, "y");
  assert_int_equal(resp.outputs[0].ndim, 2);
  assert_int_equal(resp.outputs[0].shape[0], 0);
  assert_int_equal(resp.outputs[0].shape[1], 3);
  assert_int_equal(resp.outputs[0].nbytes, 0);
  assert_int_equal(berth_tensor_check(&resp.outputs[0], &err), BERTH_OK);
  assert_int_equal(resp.outputs[1].dtype, BERTH_DT_INT64);
  assert_int_equal(resp.outputs[1].shape[0], 0);
  berth_infer_response_clear(&resp);
  /* only the requested output */
  berth_output_request want = {.name = "z"};
  f.r.outputs = &want;
  f.r.n_outputs = 1;
  assert_int_equal(berth_signature_zero_rows(&f.m, &f.r, &resp, &err),
                   BERTH_OK);
  assert_int_equal(resp.n_outputs, 1);
  assert_string_equal(resp.outputs[0].name, "z");
  berth_infer_response_clear(&resp);
}

static void test_zero_rows_refused(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  berth_errmsg err = {{0}};
  berth_infer_response resp;
  f.out[0].shape[1] = -1; /* a width the model decides */
  assert_int_equal(berth_signature_zero_rows(&f.m, &f.r, NULL, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "output 'y'"));
  assert_int_equal(berth_signature_zero_rows(&f.m, &f.r, &resp, &err),
                   BERTH_E_INVALID);
  berth_infer_response_clear(&resp); /* whatever was built is freed */
  f.m.n_outputs = 0;                 /* no declared outputs */
  assert_int_equal(berth_signature_zero_rows(&f.m, &f.r, NULL, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "declares no outputs"));
}

/* An input marked optional may be left out; a required one may not; an
 * optional one that is sent is checked like any other. */
static void test_optional_inputs(void **state) {
  (void)state;
  fixture f;
  setup(&f);
  berth_errmsg err = {{0}};
  berth_tensor_spec ins[2] = {
      {.name = "x", .dtype = BERTH_DT_FP32, .ndim = 2, .shape = {-1, 4}},
      {.name = "seed",
       .dtype = BERTH_DT_INT64,
       .ndim = 1,
       .shape = {1},
       .optional = true},
  };
  f.m.inputs = ins;
  f.m.n_inputs = 2;
  f.m.signature_known = true;
  assert_int_equal(check_shape(&f, 2, 4, &err), BERTH_OK); /* seed left out */
  ins[0].optional = false;
  ins[1].optional = false;
  assert_int_equal(check_shape(&f, 2, 4, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "missing input 'seed'"));
  ins[1].optional = true;
  berth_tensor two[2] = {
      f.in, {.name = "seed", .dtype = BERTH_DT_FP32, .ndim = 1, .shape = {1}}};
  two[0].shape[0] = 2;
  two[0].shape[1] = 4;
  f.r.inputs = two;
  f.r.n_inputs = 2;
  assert_int_equal(berth_signature_check(&f.m, &f.r, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "'seed' has datatype FP32"));
  two[1].dtype = BERTH_DT_INT64;
  assert_int_equal(berth_signature_check(&f.m, &f.r, &err), BERTH_OK);
  /* the required one stays required */
  f.r.inputs = &two[1];
  f.r.n_inputs = 1;
  assert_int_equal(berth_signature_check(&f.m, &f.r, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "missing input 'x'"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_optional_inputs),
      cmocka_unit_test(test_extent_bound),
      cmocka_unit_test(test_zero_rows_answer),
      cmocka_unit_test(test_zero_rows_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
