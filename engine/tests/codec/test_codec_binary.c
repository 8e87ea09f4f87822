/* Unit tests for codec_binary.c: Triton's binary tensor extension — the
 * head length header, request decoding (binary, mixed, every check), the
 * output preferences and the binary response encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec_binary.h"

static const berth_json_limits lim = {64, 1 << 20, 64};

/* A body: head text followed by n raw bytes. */
typedef struct body {
  char data[4096];
  size_t len, head_len;
} body;

static void make(body *b, const char *head, const void *bin, size_t n) {
  b->head_len = strlen(head);
  assert_true(b->head_len + n <= sizeof b->data);
  memcpy(b->data, head, b->head_len);
  if (n > 0)
    memcpy(b->data + b->head_len, bin, n);
  b->len = b->head_len + n;
}

static int dec(const body *b, berth_infer_request *r, berth_errmsg *err) {
  err->msg[0] = '\0';
  return berth_binary_decode_infer_request(b->data, b->len, b->head_len, &lim,
                                           r, err);
}

static void expect_err(const char *head, const void *bin, size_t n, int status,
                       const char *want) {
  body b;
  make(&b, head, bin, n);
  berth_infer_request r;
  memset(&r, 0x5a, sizeof r);
  berth_errmsg err;
  int rc = dec(&b, &r, &err);
  if (rc != status)
    fail_msg("%s: got %d (%s), want %d", head, rc, err.msg, status);
  if (want != NULL && strstr(err.msg, want) == NULL)
    fail_msg("%s: message '%s' lacks '%s'", head, err.msg, want);
  berth_infer_request zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&r, &zero, sizeof r); /* left zeroed */
}

/* ---- head length ------------------------------------------------------ */

static void test_head_length(void **state) {
  (void)state;
  size_t n = 99;
  berth_errmsg err;
  assert_int_equal(berth_binary_parse_head_length("42", 2, 100, &n, &err),
                   BERTH_OK);
  assert_int_equal(n, 42);
  assert_int_equal(berth_binary_parse_head_length("100", 3, 100, &n, &err),
                   BERTH_OK);
  assert_int_equal(berth_binary_parse_head_length("101", 3, 100, &n, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "only 100 bytes"));
  assert_int_equal(berth_binary_parse_head_length("", 0, 100, &n, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_binary_parse_head_length("-1", 2, 100, &n, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_binary_parse_head_length("1 ", 2, 100, &n, &err),
                   BERTH_E_INVALID);
  assert_int_equal(
      berth_binary_parse_head_length("99999999999999999999", 20, 100, &n, &err),
      BERTH_E_INVALID);
}

/* ---- decoding ----------------------------------------------------------- */

static void test_fp32_borrowed(void **state) {
  (void)state;
  float v[4] = {1.5f, -2.0f, 0.25f, 1e30f};
  body b;
  make(&b,
       "{\"id\":\"r1\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
       "\"shape\":[2,2],\"parameters\":{\"binary_data_size\":16}}]}",
       v, sizeof v);
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(dec(&b, &r, &err), BERTH_OK);
  assert_string_equal(r.id, "r1");
  assert_int_equal(r.n_inputs, 1);
  const berth_tensor *t = &r.inputs[0];
  assert_string_equal(t->name, "x");
  assert_int_equal(t->dtype, BERTH_DT_FP32);
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->shape[0], 2);
  assert_int_equal(t->shape[1], 2);
  assert_int_equal(t->nbytes, 16);
  assert_true(t->data_borrowed);
  /* no copy: the tensor points into the body */
  assert_ptr_equal(t->data, (const uint8_t *)b.data + b.head_len);
  assert_memory_equal(t->data, v, sizeof v);
  berth_infer_request_clear(&r);
}

static void test_mixed_inputs_keep_order(void **state) {
  (void)state;
  int64_t a[3] = {7, -8, 9};
  uint8_t c[2] = {250, 3};
  uint8_t bin[26];
  memcpy(bin, a, 24);
  memcpy(bin + 24, c, 2);
  body b;
  make(&b,
       "{\"inputs\":["
       "{\"name\":\"a\",\"datatype\":\"INT64\",\"shape\":[3],"
       "\"parameters\":{\"binary_data_size\":24}},"
       "{\"name\":\"j\",\"datatype\":\"FP64\",\"shape\":[2],"
       "\"data\":[0.1,2]},"
       "{\"name\":\"c\",\"datatype\":\"UINT8\",\"shape\":[1,2],"
       "\"parameters\":{\"binary_data_size\":2,\"other\":1}}],"
       "\"outputs\":[{\"name\":\"y\"}],\"parameters\":{\"k\":1}}",
       bin, sizeof bin);
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(dec(&b, &r, &err), BERTH_OK);
  assert_int_equal(r.n_inputs, 3);
  assert_string_equal(r.inputs[0].name, "a");
  assert_string_equal(r.inputs[1].name, "j");
  assert_string_equal(r.inputs[2].name, "c");
  assert_memory_equal(r.inputs[0].data, a, 24);
  assert_false(r.inputs[1].data_borrowed);
  double j[2];
  memcpy(j, r.inputs[1].data, sizeof j);
  assert_true(j[0] == 0.1 && j[1] == 2.0);
  assert_memory_equal(r.inputs[2].data, c, 2);
  assert_int_equal(r.n_outputs, 1);
  assert_string_equal(r.outputs[0].name, "y");
  assert_int_equal(json_integer_value(json_object_get(r.parameters, "k")), 1);
  berth_infer_request_clear(&r);
}

static void test_bytes_and_bool(void **state) {
  (void)state;
  uint8_t bin[] = {2, 0, 0, 0, 'h',  'i', 0,   0, 0, 0,
                   3, 0, 0, 0, 0xff, 0,   'z', 1, 0};
  body b;
  make(&b,
       "{\"inputs\":[{\"name\":\"s\",\"datatype\":\"BYTES\",\"shape\":[3],"
       "\"parameters\":{\"binary_data_size\":17}},"
       "{\"name\":\"f\",\"datatype\":\"BOOL\",\"shape\":[2],"
       "\"parameters\":{\"binary_data_size\":2}}]}",
       bin, sizeof bin);
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(dec(&b, &r, &err), BERTH_OK);
  assert_int_equal(r.inputs[0].nbytes, 17);
  assert_int_equal(r.inputs[1].nbytes, 2);
  assert_int_equal(r.inputs[1].data[0], 1);
  berth_infer_request_clear(&r);
}

static void test_decode_errors(void **state) {
  (void)state;
  uint8_t z[64] = {0};
  const char *in1 = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                    "\"shape\":[2],\"parameters\":{\"binary_data_size\":8}}]}";
  /* sizes must add up exactly */
  expect_err(in1, z, 12, BERTH_E_INVALID, "add up to 8");
  expect_err(in1, z, 4, BERTH_E_INVALID, "only 4 bytes");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],"
             "\"data\":[1,2]}]}",
             z, 3, BERTH_E_INVALID, "add up to 0");
  /* size against shape and datatype */
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[3],"
             "\"parameters\":{\"binary_data_size\":8}}]}",
             z, 8, BERTH_E_INVALID, "take 12 bytes");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":-8}}]}",
             z, 0, BERTH_E_INVALID, "non-negative integer");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":\"8\"}}]}",
             z, 8, BERTH_E_INVALID, "non-negative integer");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],"
             "\"data\":[1,2],\"parameters\":{\"binary_data_size\":8}}]}",
             z, 8, BERTH_E_INVALID, "both data and");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP33\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":8}}]}",
             z, 8, BERTH_E_INVALID, "unknown datatype");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[-2],"
      "\"parameters\":{\"binary_data_size\":8}}]}",
      z, 8, BERTH_E_INVALID, "shape");
  expect_err("{\"inputs\":[{\"name\":\"\",\"datatype\":\"FP32\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":8}}]}",
             z, 8, BERTH_E_INVALID, "inputs[0].name");
  /* a too-large binary input */
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"UINT8\","
             "\"shape\":[2000000],\"parameters\":{\"binary_data_size\":"
             "2000000}}]}",
             z, 8, BERTH_E_TOO_LARGE, "limit");
  /* BYTES prefixes and BOOL values */
  uint8_t bad_bytes[6] = {9, 0, 0, 0, 'a', 'b'};
  expect_err(
      "{\"inputs\":[{\"name\":\"s\",\"datatype\":\"BYTES\",\"shape\":[1],"
      "\"parameters\":{\"binary_data_size\":6}}]}",
      bad_bytes, 6, BERTH_E_INVALID, "claims 9 bytes");
  uint8_t two_elems[10] = {1, 0, 0, 0, 'a', 1, 0, 0, 0, 'b'};
  expect_err(
      "{\"inputs\":[{\"name\":\"s\",\"datatype\":\"BYTES\",\"shape\":[3],"
      "\"parameters\":{\"binary_data_size\":10}}]}",
      two_elems, 10, BERTH_E_INVALID, "holds 2");
  uint8_t bools[2] = {1, 2};
  expect_err("{\"inputs\":[{\"name\":\"f\",\"datatype\":\"BOOL\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":2}}]}",
             bools, 2, BERTH_E_INVALID, "not 0 or 1");
  /* the JSON part, with the client's indices */
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":8}},{\"name\":\"y\","
             "\"datatype\":\"FP32\",\"shape\":[2],\"data\":7}]}",
             z, 8, BERTH_E_INVALID, "inputs[1].data");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2],"
             "\"parameters\":{\"binary_data_size\":8}},{\"name\":\"x\","
             "\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}",
             z, 8, BERTH_E_INVALID, "appears twice");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],"
             "\"parameters\":{\"binary_data_size\":4}},{\"name\":\"x\","
             "\"datatype\":\"FP32\",\"shape\":[1],\"parameters\":"
             "{\"binary_data_size\":4}}]}",
             z, 8, BERTH_E_INVALID, "appears twice");
  /* the head itself */
  expect_err("{\"inputs\":[", z, 4, BERTH_E_PARSE, "not valid JSON");
  expect_err("[1]", z, 0, BERTH_E_INVALID, "must be an object");
  char deep[200] = "{\"inputs\":";
  for (int i = 0; i < 70; i++)
    strcat(deep, "[");
  expect_err(deep, z, 0, BERTH_E_INVALID, "nesting");
  body b;
  make(&b, "{}", NULL, 0);
  b.head_len = 0;
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(dec(&b, &r, &err), BERTH_E_PARSE);
}

static void test_too_many_inputs(void **state) {
  (void)state;
  berth_json_limits small = {2, 1 << 20, 64};
  const char *head = "{\"inputs\":[{},{},{}]}";
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(berth_binary_decode_infer_request(
                       head, strlen(head), strlen(head), &small, &r, &err),
                   BERTH_E_TOO_LARGE);
}

/* ---- output preferences ------------------------------------------------- */

static void decode_json(const char *text, berth_infer_request *r) {
  berth_errmsg err;
  if (berth_json_decode_infer_request(text, strlen(text), &lim, r, &err) !=
      BERTH_OK)
    fail_msg("decode: %s", err.msg);
}

static void test_output_prefs(void **state) {
  (void)state;
  berth_infer_request r;
  berth_errmsg err;
  bool dflt = false;
  decode_json("{\"inputs\":[],\"parameters\":{\"binary_data_output\":true}}",
              &r);
  assert_int_equal(berth_binary_output_prefs(&r, &dflt, &err), BERTH_OK);
  assert_true(dflt);
  assert_null(r.parameters); /* emptied: the model sees none */
  assert_true(berth_binary_wanted(&r, dflt));
  berth_infer_request_clear(&r);

  decode_json("{\"inputs\":[],\"parameters\":{\"binary_data_output\":true,"
              "\"k\":2},\"outputs\":[{\"name\":\"a\",\"parameters\":"
              "{\"binary_data\":false}},{\"name\":\"b\"}]}",
              &r);
  assert_int_equal(berth_binary_output_prefs(&r, &dflt, &err), BERTH_OK);
  assert_true(dflt);
  assert_int_equal(json_object_size(r.parameters), 1);
  assert_true(berth_binary_wanted(&r, dflt)); /* b takes the default */
  assert_false(berth_binary_wanted(&r, false));
  berth_infer_request_clear(&r);

  decode_json("{\"inputs\":[],\"outputs\":[{\"name\":\"a\",\"parameters\":"
              "{\"binary_data\":true}}]}",
              &r);
  assert_int_equal(berth_binary_output_prefs(&r, &dflt, &err), BERTH_OK);
  assert_false(dflt);
  assert_true(berth_binary_wanted(&r, dflt));
  berth_infer_request_clear(&r);

  decode_json("{\"inputs\":[],\"parameters\":{\"binary_data_output\":1}}", &r);
  assert_int_equal(berth_binary_output_prefs(&r, &dflt, &err), BERTH_E_INVALID);
  berth_infer_request_clear(&r);
  decode_json("{\"inputs\":[],\"outputs\":[{\"name\":\"a\",\"parameters\":"
              "{\"binary_data\":\"yes\"}}]}",
              &r);
  assert_int_equal(berth_binary_output_prefs(&r, &dflt, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "output 'a'"));
  berth_infer_request_clear(&r);
  decode_json("{\"inputs\":[],\"outputs\":[{\"name\":\"a\",\"parameters\":"
              "{\"classification\":3}}]}",
              &r);
  assert_int_equal(berth_binary_output_prefs(&r, &dflt, &err),
                   BERTH_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, "classification"));
  berth_infer_request_clear(&r);
}

/* ---- encoding ----------------------------------------------------------- */

static uint8_t y_data[8] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}; /* 1.0f 2.0f */
static uint8_t s_data[7] = {3, 0, 0, 0, 'a', 0xff, 'c'};      /* not UTF-8 */
static uint8_t n_data[2] = {5, 6};

static void response(berth_tensor outs[3], berth_infer_response *resp) {
  memset(outs, 0, 3 * sizeof *outs);
  outs[0] = (berth_tensor){.name = "y",
                           .dtype = BERTH_DT_FP32,
                           .ndim = 2,
                           .shape = {1, 2},
                           .data = y_data,
                           .nbytes = 8,
                           .data_borrowed = true};
  outs[1] = (berth_tensor){.name = "s",
                           .dtype = BERTH_DT_BYTES,
                           .ndim = 1,
                           .shape = {1},
                           .data = s_data,
                           .nbytes = 7,
                           .data_borrowed = true};
  outs[2] = (berth_tensor){.name = "n",
                           .dtype = BERTH_DT_UINT8,
                           .ndim = 1,
                           .shape = {2},
                           .data = n_data,
                           .nbytes = 2,
                           .data_borrowed = true};
  *resp = (berth_infer_response){.outputs = outs, .n_outputs = 3};
}

static void test_encode_all_binary(void **state) {
  (void)state;
  berth_tensor outs[3];
  berth_infer_response resp;
  response(outs, &resp);
  berth_infer_request r = {.id = "q"};
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  size_t head = 0;
  berth_errmsg err;
  assert_int_equal(berth_binary_encode_infer_response("m", "1", &r, true, &resp,
                                                      &out, &head, &err),
                   BERTH_OK);
  assert_int_equal(out.len, head + 8 + 7 + 2);
  json_t *doc = json_loadb(out.data, head, 0, NULL);
  assert_non_null(doc);
  assert_string_equal(json_string_value(json_object_get(doc, "model_name")),
                      "m");
  assert_string_equal(json_string_value(json_object_get(doc, "id")), "q");
  json_t *o = json_object_get(doc, "outputs");
  assert_int_equal(json_array_size(o), 3);
  const char *names[3] = {"y", "s", "n"};
  size_t sizes[3] = {8, 7, 2};
  for (size_t i = 0; i < 3; i++) {
    json_t *x = json_array_get(o, i);
    assert_string_equal(json_string_value(json_object_get(x, "name")),
                        names[i]);
    assert_null(json_object_get(x, "data"));
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(x, "parameters"), "binary_data_size")),
                     sizes[i]);
  }
  json_decref(doc);
  assert_memory_equal(out.data + head, y_data, 8);
  assert_memory_equal(out.data + head + 8, s_data, 7);
  assert_memory_equal(out.data + head + 15, n_data, 2);
  berth_buf_free(&out);
}

static void test_encode_mixed(void **state) {
  (void)state;
  berth_tensor outs[3];
  berth_infer_response resp;
  response(outs, &resp);
  resp.parameters = json_pack("{s:i}", "p", 3);
  berth_infer_request r;
  decode_json("{\"inputs\":[],\"outputs\":[{\"name\":\"s\",\"parameters\":"
              "{\"binary_data\":true}},{\"name\":\"y\"},{\"name\":\"n\"}]}",
              &r);
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  berth_buf_append(&out, "XY", 2); /* appends after what is there */
  size_t head = 0;
  berth_errmsg err;
  assert_int_equal(berth_binary_encode_infer_response("m", "1", &r, false,
                                                      &resp, &out, &head, &err),
                   BERTH_OK);
  assert_int_equal(out.len, 2 + head + 7);
  json_t *doc = json_loadb(out.data + 2, head, 0, NULL);
  assert_non_null(doc);
  assert_int_equal(json_integer_value(json_object_get(
                       json_object_get(doc, "parameters"), "p")),
                   3);
  json_t *o = json_object_get(doc, "outputs");
  assert_int_equal(json_array_size(o), 3);
  /* JSON outputs first, in the requested order, then the binary one */
  json_t *y = json_array_get(o, 0), *n = json_array_get(o, 1);
  assert_string_equal(json_string_value(json_object_get(y, "name")), "y");
  assert_true(json_real_value(json_array_get(json_object_get(y, "data"), 1)) ==
              2.0);
  assert_string_equal(json_string_value(json_object_get(n, "name")), "n");
  json_t *s = json_array_get(o, 2);
  assert_string_equal(json_string_value(json_object_get(s, "name")), "s");
  assert_null(json_object_get(s, "data"));
  json_decref(doc);
  assert_memory_equal(out.data + 2 + head, s_data, 7);
  berth_buf_free(&out);
  json_decref(resp.parameters);
  berth_infer_request_clear(&r);
}

static void test_encode_errors_leave_buffer(void **state) {
  (void)state;
  berth_tensor outs[3];
  berth_infer_response resp;
  response(outs, &resp);
  berth_infer_request r;
  berth_errmsg err;
  size_t head = 77;
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  berth_buf_append(&out, "keep", 4);
  decode_json("{\"inputs\":[],\"outputs\":[{\"name\":\"nope\"}]}", &r);
  assert_int_equal(berth_binary_encode_infer_response("m", "1", &r, true, &resp,
                                                      &out, &head, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "nope"));
  assert_int_equal(out.len, 4);
  assert_int_equal(head, 77);
  berth_infer_request_clear(&r);
  /* a JSON output that cannot be JSON (non-UTF-8 BYTES) */
  decode_json("{\"inputs\":[],\"outputs\":[{\"name\":\"s\"},{\"name\":\"y\","
              "\"parameters\":{\"binary_data\":true}}]}",
              &r);
  assert_int_equal(berth_binary_encode_infer_response("m", "1", &r, false,
                                                      &resp, &out, &head, &err),
                   BERTH_E_UNSUPPORTED);
  assert_int_equal(out.len, 4);
  berth_infer_request_clear(&r);
  /* over the buffer's maximum: every size up to the full answer */
  berth_infer_request all = {0};
  berth_buf big;
  berth_buf_init(&big, 1 << 20);
  assert_int_equal(berth_binary_encode_infer_response("m", "1", &all, true,
                                                      &resp, &big, &head, &err),
                   BERTH_OK);
  for (size_t max = 0; max < big.len; max++) {
    berth_buf small;
    berth_buf_init(&small, max);
    assert_int_equal(berth_binary_encode_infer_response(
                         "m", "1", &all, true, &resp, &small, &head, &err),
                     BERTH_E_TOO_LARGE);
    assert_int_equal(small.len, 0);
    berth_buf_free(&small);
  }
  berth_buf_free(&big);
  /* a broken output tensor */
  outs[2].nbytes = 3;
  assert_int_equal(berth_binary_encode_infer_response("m", "1", &all, true,
                                                      &resp, &out, &head, &err),
                   BERTH_E_INTERNAL);
  assert_int_equal(out.len, 4);
  berth_buf_free(&out);
}

/* A decoded binary request encodes back to the same bytes. */
static void test_round_trip(void **state) {
  (void)state;
  uint8_t bin[8 + 9];
  memcpy(bin, y_data, 8);
  memcpy(bin + 8, (uint8_t[]){5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'}, 9);
  body b;
  make(&b,
       "{\"inputs\":[{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[1,2],"
       "\"parameters\":{\"binary_data_size\":8}},{\"name\":\"s\","
       "\"datatype\":\"BYTES\",\"shape\":[1],\"parameters\":"
       "{\"binary_data_size\":9}}]}",
       bin, sizeof bin);
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(dec(&b, &r, &err), BERTH_OK);
  berth_infer_response resp = {.outputs = r.inputs, .n_outputs = r.n_inputs};
  berth_infer_request all = {0};
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  size_t head = 0;
  assert_int_equal(berth_binary_encode_infer_response(NULL, NULL, &all, true,
                                                      &resp, &out, &head, &err),
                   BERTH_OK);
  assert_int_equal(out.len - head, sizeof bin);
  assert_memory_equal(out.data + head, bin, sizeof bin);
  berth_buf_free(&out);
  berth_infer_request_clear(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_head_length),
      cmocka_unit_test(test_fp32_borrowed),
      cmocka_unit_test(test_mixed_inputs_keep_order),
      cmocka_unit_test(test_bytes_and_bool),
      cmocka_unit_test(test_decode_errors),
      cmocka_unit_test(test_too_many_inputs),
      cmocka_unit_test(test_output_prefs),
      cmocka_unit_test(test_encode_all_binary),
      cmocka_unit_test(test_encode_mixed),
      cmocka_unit_test(test_encode_errors_leave_buffer),
      cmocka_unit_test(test_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
