/* Tests for the ONNX Runtime backend (backend/ort.c) without a server, and
 * so under ASan and UBSan in `make test-asan`: the library named by
 * BERTH_TEST_ONNXRUNTIME (the Makefile passes the venv's onnxruntime wheel
 * library; unset: the tests that need it skip) loads two tiny ONNX graphs
 * that the tests write themselves — y = x + x on FP32 [N, 2], and an
 * Identity on a string tensor — describes them, runs batches, and refuses
 * a missing library, a bad file and a missing input with clear errors, and
 * takes parameters.allow_spinning as a boolean only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend.h"

/* ---- a small protobuf writer, enough for an ONNX ModelProto ------------ */

typedef struct pb {
  uint8_t b[1024];
  size_t n;
} pb;

static void varint(pb *p, uint64_t v) {
  while (v >= 0x80) {
    p->b[p->n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p->b[p->n++] = (uint8_t)v;
}

static void field_int(pb *p, unsigned field, uint64_t v) {
  varint(p, (uint64_t)field << 3);
  varint(p, v);
}

static void field_bytes(pb *p, unsigned field, const void *d, size_t len) {
  varint(p, ((uint64_t)field << 3) | 2);
  varint(p, len);
  memcpy(p->b + p->n, d, len);
  p->n += len;
}

static void field_str(pb *p, unsigned field, const char *s) {
  field_bytes(p, field, s, strlen(s));
}

static void field_msg(pb *p, unsigned field, const pb *m) {
  field_bytes(p, field, m->b, m->n);
}

/* ValueInfoProto: name, TypeProto.tensor_type {elem_type, shape [N, dim]}
 * (dim 0: [N] only). */
static void value_info(pb *out, const char *name, int elem, int dim) {
  pb d0 = {0}, d1 = {0}, shape = {0}, tensor = {0}, type = {0}, vi = {0};
  field_str(&d0, 2, "N"); /* dim_param */
  field_msg(&shape, 1, &d0);
  if (dim > 0) {
    field_int(&d1, 1, (uint64_t)dim); /* dim_value */
    field_msg(&shape, 1, &d1);
  }
  field_int(&tensor, 1, (uint64_t)elem);
  field_msg(&tensor, 2, &shape);
  field_msg(&type, 1, &tensor);
  field_str(&vi, 1, name);
  field_msg(&vi, 2, &type);
  *out = vi;
}

/* A one-node graph: op(in[, in]) -> out, written to path. */
static void write_model(const char *path, const char *op, int elem, int dim,
                        bool twice) {
  pb node = {0}, graph = {0}, opset = {0}, model = {0}, in = {0}, out = {0};
  field_str(&node, 1, "x");
  if (twice)
    field_str(&node, 1, "x");
  field_str(&node, 2, "y");
  field_str(&node, 4, op);
  field_msg(&graph, 1, &node);
  field_str(&graph, 2, "g");
  value_info(&in, "x", elem, dim);
  value_info(&out, "y", elem, dim);
  field_msg(&graph, 11, &in);
  field_msg(&graph, 12, &out);
  field_int(&opset, 2, 13);
  field_int(&model, 1, 8); /* ir_version */
  field_msg(&model, 7, &graph);
  field_msg(&model, 8, &opset);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(model.b, 1, model.n, f), model.n);
  fclose(f);
}

/* ---- fixtures ------------------------------------------------------------ */

static const char *library(void) {
  const char *lib = getenv("BERTH_TEST_ONNXRUNTIME");
  return lib != NULL && *lib != '\0' ? lib : NULL;
}

static char tmpdir[64];

static int make_dir(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/berth-ort-XXXXXX");
  return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int remove_dir(void **state) {
  (void)state;
  char p[128];
  const char *names[] = {"add.onnx", "words.onnx", "bad.onnx"};
  for (size_t i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s/%s", tmpdir, names[i]);
    unlink(p);
  }
  return rmdir(tmpdir);
}

static void path_of(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", tmpdir, name);
}

/* ---- tests --------------------------------------------------------------- */

static void test_no_library_names_the_fix(void **state) {
  (void)state;
  char path[128];
  path_of(path, sizeof path, "add.onnx");
  berth_backend_opts o = {.library = NULL, .path = path};
  berth_backend *b = (berth_backend *)1;
  berth_backend_sig sig;
  berth_errmsg err;
  /* first in the group: no library has been opened yet (one that is stays
   * open for the process) */
  assert_int_equal(berth_backend_ort.load(&o, &b, &sig, &err), BERTH_E_CONFIG);
  assert_null(b);
  assert_non_null(strstr(err.msg, "pip install onnxruntime"));
  o.library = "/nonexistent/libonnxruntime.so";
  assert_int_equal(berth_backend_ort.load(&o, &b, &sig, &err), BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "cannot open"));
}

static void test_add_graph_runs_a_batch(void **state) {
  (void)state;
  if (library() == NULL)
    skip();
  char path[128];
  path_of(path, sizeof path, "add.onnx");
  write_model(path, "Add", 1 /* FLOAT */, 2, true);
  berth_backend_opts o = {.library = library(), .path = path};
  berth_backend *b = NULL;
  berth_backend_sig sig;
  berth_errmsg err;
  assert_int_equal(berth_backend_ort.load(&o, &b, &sig, &err), BERTH_OK);
  assert_int_equal(sig.n_inputs, 1);
  assert_string_equal(sig.inputs[0].name, "x");
  assert_int_equal(sig.inputs[0].dtype, BERTH_DT_FP32);
  assert_int_equal(sig.inputs[0].ndim, 2);
  assert_int_equal(sig.inputs[0].shape[0], -1);
  assert_int_equal(sig.inputs[0].shape[1], 2);
  assert_int_equal(sig.n_outputs, 1);
  assert_string_equal(sig.outputs[0].name, "y");
  assert_int_equal(sig.max_batch_size, 64);
  assert_string_equal(sig.platform, "onnx_onnxv1");

  float data[6] = {1, 2, 3, 4, 5, 6.5f};
  berth_tensor in = {.name = "x",
                     .dtype = BERTH_DT_FP32,
                     .ndim = 2,
                     .shape = {3, 2},
                     .data = (uint8_t *)data,
                     .nbytes = sizeof data,
                     .data_borrowed = true};
  for (int round = 0; round < 3; round++) {
    berth_backend_result r;
    assert_int_equal(berth_backend_ort.run(b, &in, 1, &r, &err), BERTH_OK);
    assert_int_equal(r.n_outputs, 1);
    assert_string_equal(r.outputs[0].name, "y");
    assert_int_equal(r.outputs[0].dtype, BERTH_DT_FP32);
    assert_int_equal(r.outputs[0].shape[0], 3);
    assert_int_equal(r.outputs[0].nbytes, sizeof data);
    const float *y = (const float *)r.outputs[0].data;
    for (int i = 0; i < 6; i++)
      assert_true(y[i] == 2 * data[i]);
    berth_backend_result_free(&berth_backend_ort, b, &r);
  }

  /* data at an odd address (a binary tensor inside a request body): the
   * backend runs an aligned copy */
  uint8_t raw[sizeof data + 1];
  memcpy(raw + 1, data, sizeof data);
  berth_tensor odd = in;
  odd.data = raw + 1;
  berth_backend_result ro;
  assert_int_equal(berth_backend_ort.run(b, &odd, 1, &ro, &err), BERTH_OK);
  float y0;
  memcpy(&y0, ro.outputs[0].data, sizeof y0);
  assert_true(y0 == 2 * data[0]);
  berth_backend_result_free(&berth_backend_ort, b, &ro);

  /* an input the graph does not have: refused, as an input error */
  berth_tensor wrong = in;
  wrong.name = "z";
  berth_backend_result r;
  assert_int_equal(berth_backend_ort.run(b, &wrong, 1, &r, &err),
                   BERTH_E_INVALID);
  assert_null(r.outputs);
  berth_backend_sig_clear(&sig);
  berth_backend_ort.unload(b);
}

static void test_string_graph_round_trips(void **state) {
  (void)state;
  if (library() == NULL)
    skip();
  char path[128];
  path_of(path, sizeof path, "words.onnx");
  write_model(path, "Identity", 8 /* STRING */, 0, false);
  berth_backend_opts o = {.library = library(), .path = path};
  berth_backend *b = NULL;
  berth_backend_sig sig;
  berth_errmsg err;
  assert_int_equal(berth_backend_ort.load(&o, &b, &sig, &err), BERTH_OK);
  assert_int_equal(sig.inputs[0].dtype, BERTH_DT_BYTES);
  /* "ab", "", "caf\xc3\xa9" in berth's BYTES layout */
  uint8_t bytes[] = {2, 0, 0, 0, 'a', 'b', 0,   0,    0,   0,
                     5, 0, 0, 0, 'c', 'a', 'f', 0xc3, 0xa9};
  berth_tensor in = {.name = "x",
                     .dtype = BERTH_DT_BYTES,
                     .ndim = 1,
                     .shape = {3},
                     .data = bytes,
                     .nbytes = sizeof bytes,
                     .data_borrowed = true};
  berth_backend_result r;
  assert_int_equal(berth_backend_ort.run(b, &in, 1, &r, &err), BERTH_OK);
  assert_int_equal(r.outputs[0].dtype, BERTH_DT_BYTES);
  assert_int_equal(r.outputs[0].nbytes, sizeof bytes);
  assert_memory_equal(r.outputs[0].data, bytes, sizeof bytes);
  berth_errmsg check;
  assert_int_equal(berth_tensor_check(&r.outputs[0], &check), BERTH_OK);
  berth_backend_result_free(&berth_backend_ort, b, &r);
  berth_backend_sig_clear(&sig);
  berth_backend_ort.unload(b);
}

static void test_bad_file_is_a_model_error(void **state) {
  (void)state;
  if (library() == NULL)
    skip();
  char path[128];
  path_of(path, sizeof path, "bad.onnx");
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs("not an onnx graph\n", f);
  fclose(f);
  berth_backend_opts o = {.library = library(), .path = path};
  berth_backend *b = NULL;
  berth_backend_sig sig;
  berth_errmsg err;
  assert_int_equal(berth_backend_ort.load(&o, &b, &sig, &err), BERTH_E_MODEL);
  assert_null(b);
  assert_non_null(strstr(err.msg, "could not load it"));
  o.path = "/nonexistent/model.onnx";
  assert_int_equal(berth_backend_ort.load(&o, &b, &sig, &err), BERTH_E_MODEL);
  assert_non_null(strstr(err.msg, "no such file"));
}

/* parameters.allow_spinning: a boolean, either way a session that runs
 * (with two intra-op threads, a pool whose threads could spin); anything
 * else is a config error that names the parameter. */
static void test_allow_spinning_parameter(void **state) {
  (void)state;
  if (library() == NULL)
    skip();
  char path[128];
  path_of(path, sizeof path, "add.onnx");
  write_model(path, "Add", 1 /* FLOAT */, 2, true);
  const char *docs[] = {
      "{\"allow_spinning\": true}", "{\"allow_spinning\": false}",
      "{\"allow_spinning\": \"yes\"}", "{\"allow_spinning\": 1}"};
  for (size_t i = 0; i < 4; i++) {
    json_t *params = json_loads(docs[i], 0, NULL);
    assert_non_null(params);
    berth_backend_opts o = {
        .library = library(), .path = path, .params = params, .threads = 2};
    berth_backend *b = NULL;
    berth_backend_sig sig;
    berth_errmsg err;
    int rc = berth_backend_ort.load(&o, &b, &sig, &err);
    json_decref(params);
    if (i >= 2) {
      assert_int_equal(rc, BERTH_E_CONFIG);
      assert_null(b);
      assert_non_null(strstr(err.msg, "parameters.allow_spinning"));
      assert_non_null(strstr(err.msg, "true or false"));
      continue;
    }
    assert_int_equal(rc, BERTH_OK);
    float data[4] = {1, 2, 3, 4};
    berth_tensor in = {.name = "x",
                       .dtype = BERTH_DT_FP32,
                       .ndim = 2,
                       .shape = {2, 2},
                       .data = (uint8_t *)data,
                       .nbytes = sizeof data,
                       .data_borrowed = true};
    berth_backend_result r;
    assert_int_equal(berth_backend_ort.run(b, &in, 1, &r, &err), BERTH_OK);
    const float *y = (const float *)r.outputs[0].data;
    for (int k = 0; k < 4; k++)
      assert_true(y[k] == 2 * data[k]);
    berth_backend_result_free(&berth_backend_ort, b, &r);
    berth_backend_sig_clear(&sig);
    berth_backend_ort.unload(b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_library_names_the_fix),
      cmocka_unit_test(test_add_graph_runs_a_batch),
      cmocka_unit_test(test_string_graph_round_trips),
      cmocka_unit_test(test_bad_file_is_a_model_error),
      cmocka_unit_test(test_allow_spinning_parameter),
  };
  if (library() == NULL)
    fprintf(stderr, "BERTH_TEST_ONNXRUNTIME is not set: the tests that load "
                    "ONNX Runtime skip (make test-c and test-asan set it)\n");
  return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
