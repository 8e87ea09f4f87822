/* Unit tests for codec_json.c and codec_json_encode.c: OIP v2 request decoding (every datatype,
 * nesting, ranges, limits, errors) and response encoding (shortest floats,
 * strings, requested outputs, id/parameters echo, buffer limits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <math.h>

#include "codec_json.h"

static const berth_json_limits lim = {64, 1 << 20, 64};

static int dec_lim(const char *json, const berth_json_limits *l,
                   berth_infer_request *r, berth_errmsg *err) {
  err->msg[0] = '\0';
  return berth_json_decode_infer_request(json, strlen(json), l, r, err);
}

static int dec(const char *json, berth_infer_request *r, berth_errmsg *err) {
  return dec_lim(json, &lim, r, err);
}

/* Decodes a request with one input and returns it (caller clears r). */
static const berth_tensor *dec_one(const char *json, berth_infer_request *r) {
  berth_errmsg err;
  int rc = dec(json, r, &err);
  if (rc != BERTH_OK)
    fail_msg("decode failed (%d): %s", rc, err.msg);
  assert_int_equal(r->n_inputs, 1);
  return &r->inputs[0];
}

/* Expects decoding to fail with status and a message containing want. */
static void expect_err_lim(const char *json, const berth_json_limits *l,
                           int status, const char *want) {
  berth_infer_request r;
  memset(&r, 0x5a, sizeof r);
  berth_errmsg err;
  int rc = dec_lim(json, l, &r, &err);
  if (rc != status)
    fail_msg("%s: got %d (%s), want %d", json, rc, err.msg, status);
  if (want != NULL && strstr(err.msg, want) == NULL)
    fail_msg("%s: message '%s' lacks '%s'", json, err.msg, want);
  berth_infer_request zero;
  memset(&zero, 0, sizeof zero);
  assert_memory_equal(&r, &zero, sizeof r); /* left zeroed */
}

static void expect_err(const char *json, int status, const char *want) {
  expect_err_lim(json, &lim, status, want);
}

/* Encodes the request's own inputs as the model's outputs. */
static char *encode_echo(const berth_infer_request *req, berth_buf *b, int *rc,
                         berth_errmsg *err) {
  berth_infer_response resp = {.outputs = req->inputs,
                               .n_outputs = req->n_inputs};
  berth_buf_init(b, 1 << 24);
  *rc = berth_json_encode_infer_response("m", "1", req, &resp, b, err);
  return b->data;
}

/* The text of outputs[0].data in an encoded response. */
static char *data_text(const char *json, char *dst, size_t cap) {
  const char *p = strstr(json, "\"data\":[");
  assert_non_null(p);
  p += 8;
  const char *e = strstr(p, "]}");
  assert_non_null(e);
  size_t n = (size_t)(e - p);
  assert_true(n < cap);
  memcpy(dst, p, n);
  dst[n] = '\0';
  return dst;
}

/* Decodes a one-input request, checks its bytes, re-encodes it and checks
 * the data text. */
static void round_trip(const char *dtype, const char *data, const void *bytes,
                       size_t nbytes, const char *text) {
  char json[1024];
  berth_infer_request r;
  berth_errmsg err;
  size_t count = 0; /* elements: commas + 1 (no test string holds a comma) */
  for (const char *p = data; *p; p++)
    count += *p == ',';
  count = strcmp(data, "[]") == 0 ? 0 : count + 1;
  snprintf(json, sizeof json,
           "{\"inputs\":[{\"name\":\"x\",\"shape\":[%zu],\"datatype\":\"%s\","
           "\"data\":%s}]}",
           count, dtype, data);
  const berth_tensor *t = dec_one(json, &r);
  assert_string_equal(berth_dtype_name(t->dtype), dtype);
  assert_int_equal(t->nbytes, nbytes);
  assert_false(t->data_borrowed);
  assert_memory_equal(t->data, bytes, nbytes);
  assert_int_equal(berth_tensor_check(t, &err), BERTH_OK);
  berth_buf b;
  int rc;
  encode_echo(&r, &b, &rc, &err);
  if (rc != BERTH_OK)
    fail_msg("encode failed: %s", err.msg);
  char got[1024];
  data_text(b.data, got, sizeof got);
  if (strcmp(got, text) != 0)
    fail_msg("%s %s: encoded [%s], want [%s]", dtype, data, got, text);
  berth_buf_free(&b);
  berth_infer_request_clear(&r);
}

static void test_bool(void **state) {
  (void)state;
  const uint8_t b[] = {1, 0, 1};
  round_trip("BOOL", "[true,false,true]", b, 3, "true,false,true");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"BOOL\","
             "\"data\":[true,1]}]}",
             BERTH_E_INVALID, "input 'x': element 1 must be true or false");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BOOL\","
             "\"data\":[\"true\"]}]}",
             BERTH_E_INVALID, "element 0");
}

static void test_unsigned(void **state) {
  (void)state;
  const uint8_t u8[] = {0, 7, 255};
  round_trip("UINT8", "[0,7,255]", u8, 3, "0,7,255");
  const uint8_t u16[] = {0, 0, 0xff, 0xff, 0x34, 0x12};
  round_trip("UINT16", "[0,65535,4660]", u16, 6, "0,65535,4660");
  const uint8_t u32[] = {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0};
  round_trip("UINT32", "[4294967295,1]", u32, 8, "4294967295,1");
  const uint64_t u64[] = {0, INT64_MAX, 10000000000000000000ULL, 5};
  round_trip("UINT64", "[0,9223372036854775807,1e19,5.0]", u64, 32,
             "0,9223372036854775807,10000000000000000000,5");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"UINT8\","
      "\"data\":[1,256]}]}",
      BERTH_E_INVALID,
      "input 'x': element 1 (256) is out of range for "
      "UINT8");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT32\","
      "\"data\":[-1]}]}",
      BERTH_E_INVALID, "out of range for UINT32");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT64\","
      "\"data\":[1.8446744073709552e19]}]}",
      BERTH_E_INVALID, "out of range for UINT64");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT16\","
      "\"data\":[65536.0]}]}",
      BERTH_E_INVALID, "out of range");
}

static void test_signed(void **state) {
  (void)state;
  const int8_t i8[] = {-128, 0, 127};
  round_trip("INT8", "[-128,0,127]", i8, 3, "-128,0,127");
  const int16_t i16[] = {-32768, 32767};
  round_trip("INT16", "[-32768,32767]", i16, 4, "-32768,32767");
  const int32_t i32[] = {INT32_MIN, INT32_MAX, -3};
  round_trip("INT32", "[-2147483648,2147483647,-3.0]", i32, 12,
             "-2147483648,2147483647,-3");
  const int64_t i64[] = {INT64_MIN, INT64_MAX, 0, -4611686018427387904LL};
  round_trip(
      "INT64",
      "[-9223372036854775808,9223372036854775807,-0.0,-4.611686018427387904e18]",
      i64, 32,
      "-9223372036854775808,9223372036854775807,0,"
      "-4611686018427387904");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT8\","
             "\"data\":[-129]}]}",
             BERTH_E_INVALID, "element 0 (-129) is out of range for INT8");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"INT32\","
      "\"data\":[1,2,2.5]}]}",
      BERTH_E_INVALID, "input 'x': element 2 (2.5) is not an integer");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT64\","
      "\"data\":[9.3e18]}]}",
      BERTH_E_INVALID, "out of range for INT64");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT64\","
      "\"data\":[9.223372036854775808e18]}]}",
      BERTH_E_INVALID, "out of range for INT64");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"INT16\","
      "\"data\":[1,\"2\"]}]}",
      BERTH_E_INVALID, "element 1 must be an integer");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"INT16\","
      "\"data\":[1,null]}]}",
      BERTH_E_INVALID, "element 1 must be an integer");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT16\","
      "\"data\":[true]}]}",
      BERTH_E_INVALID, "element 0 must be an integer");
  /* Integers past int64 (which jansson cannot hold) still reach UINT64
   * exactly, and are out of range everywhere else. */
  {
    const char *body = "{\"inputs\":[{\"name\":\"x\",\"shape\":[3],"
                       "\"datatype\":\"UINT64\",\"data\":[18446744073709551615,"
                       "9223372036854775808,0]}],\"parameters\":{\"s\":\"1e99 "
                       "99999999999999999999\"}}";
    berth_infer_request r;
    berth_errmsg err;
    assert_int_equal(
        berth_json_decode_infer_request(body, strlen(body), NULL, &r, &err),
        BERTH_OK);
    uint64_t got[3];
    memcpy(got, r.inputs[0].data, sizeof got);
    assert_true(got[0] == UINT64_MAX);
    assert_true(got[1] == (uint64_t)1 << 63);
    assert_true(got[2] == 0);
    /* a big number inside a string is left alone */
    assert_string_equal(json_string_value(json_object_get(r.parameters, "s")),
                        "1e99 99999999999999999999");
    berth_infer_request_clear(&r);
  }
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT64\","
      "\"data\":[9223372036854775808]}]}",
      BERTH_E_INVALID,
      "element 0 (9223372036854775808) is out of range for INT64");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT64\","
      "\"data\":[-9223372036854775809]}]}",
      BERTH_E_INVALID, "out of range for UINT64");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT64\","
      "\"data\":[18446744073709551616]}]}",
      BERTH_E_INVALID, "out of range for UINT64");
  /* strings stay strings, with or without a big integer elsewhere */
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"data\":[\"\\u0000abc\"]}],\"parameters\":{\"n\":"
             "99999999999999999999}}",
             BERTH_E_INVALID, "element 0 must be a number");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"UINT64\","
      "\"data\":[\"\\u000042\"]}]}",
      BERTH_E_INVALID, "element 0 must be an integer");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BYTES\","
      "\"data\":[99999999999999999999]}]}",
      BERTH_E_INVALID, "element 0 must be a string");
  /* an integer past the largest double is out of range, not infinity */
  {
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"inputs\":[{\"name\":\"x\",\"shape\":"
                     "[1],\"datatype\":\"FP64\",\"data\":[1");
    memset(body + n, '0', 320);
    strcpy(body + n + 320, "]}]}");
    expect_err(body, BERTH_E_INVALID, "out of range for FP64");
  }
  {
    berth_infer_request r;
    const berth_tensor *t = dec_one(
        "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"FP64\","
        "\"data\":[-99999999999999999999,12345678901234567890123]}]}",
        &r);
    double d[2];
    memcpy(d, t->data, sizeof d);
    assert_true(d[0] == -1e20 && d[1] == 12345678901234567890123.0);
    berth_infer_request_clear(&r);
  }
}

static void test_fp16(void **state) {
  (void)state;
  /* 1, 65504 (max), -0, 2^-14 (min normal), 2^-24 (min subnormal), 0.1 */
  const uint16_t h[] = {0x3C00, 0x7BFF, 0x8000, 0x0400, 0x0001, 0x2E66};
  round_trip("FP16",
             "[1.0,65504,-0.0,0.00006103515625,5.960464477539063e-8,0.1]", h,
             12, "1.0,65500.0,-0.0,0.00006104,6e-8,0.1");
  /* round to nearest even: ties, halfway below the smallest subnormal,
   * 65519 rounds down to the maximum */
  const uint16_t r[] = {0x3C00, 0x3C02, 0x0000, 0x0002, 0x7BFF, 0x8001};
  round_trip("FP16",
             "[1.00048828125,1.00146484375,2.98023223876953125e-8,"
             "8.94069671630859375e-8,65519,-5.9604644775390625e-8]",
             r, 12, "1.0,1.002,0.0,0.0000001,65500.0,-6e-8");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP16\","
             "\"data\":[65520]}]}",
             BERTH_E_INVALID, "element 0 (65520) is out of range for FP16");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP16\","
             "\"data\":[-1e300]}]}",
             BERTH_E_INVALID, "out of range for FP16");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP16\","
             "\"data\":[\"1\"]}]}",
             BERTH_E_INVALID, "element 0 must be a number");
}

static void test_bf16(void **state) {
  (void)state;
  /* 1, -2.5, max, 0.1 (0x3DCD), 1e-40 (subnormal), 3 as integer */
  const uint16_t b[] = {0x3F80, 0xC020, 0x7F7F, 0x3DCD, 0x0001, 0x4040};
  round_trip("BF16", "[1,-2.5,3.3895313892515355e38,0.1,1e-40,3]", b, 12,
             "1.0,-2.5,3.39e+38,0.1,9e-41,3.0");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BF16\","
             "\"data\":[3.4e38]}]}",
             BERTH_E_INVALID, "out of range for BF16");
}

static void test_fp32(void **state) {
  (void)state;
  const float f[] = {0.1f,   3.4028234663852886e38f,
                     1e-45f, 16777216.0f,
                     -0.0f,  0.7310586f,
                     1e21f,  1e-7f};
  round_trip("FP32",
             "[0.1,3.4028235e38,1.4e-45,16777217,-0.0,0.7310586,1e21,1e-7]", f,
             32,
             "0.1,3.4028235e+38,1e-45,16777216.0,-0.0,0.7310586,1e+21,"
             "0.0000001");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"data\":[3.5e38]}]}",
             BERTH_E_INVALID, "element 0 (3.5e+38) is out of range for FP32");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"data\":[[]]}]}",
             BERTH_E_INVALID, "needs 1 elements, data has 0");
}

static void test_fp64(void **state) {
  (void)state;
  const double d[] = {0.1, 1e308, 5e-324, -0.0, 3, 2.0 / 3, 1e21, 123.456};
  round_trip("FP64",
             "[0.1,1e308,5e-324,-0.0,3,0.6666666666666666,1e21,123.456]", d, 64,
             "0.1,1e+308,5e-324,-0.0,3.0,0.6666666666666666,1e+21,123.456");
  const double big[] = {9007199254740993.0, 1e-300};
  round_trip("FP64", "[9007199254740993,1e-300]", big, 16,
             "9007199254740992.0,1e-300");
}

static void test_bytes(void **state) {
  (void)state;
  const uint8_t b[] = {5, 0, 0, 0, 'h',  'e',  'l',  'l', 'o', 0,
                       0, 0, 0, 3, 0,    0,    0,    'a', 0,   'b',
                       4, 0, 0, 0, 0xF0, 0x9F, 0x98, 0x80};
  round_trip("BYTES", "[\"hello\",\"\",\"a\\u0000b\",\"\\ud83d\\ude00\"]", b,
             sizeof b, "\"hello\",\"\",\"a\\u0000b\",\"\xF0\x9F\x98\x80\"");
  round_trip("BYTES", "[]", "", 0, "");
  berth_infer_request r;
  const berth_tensor *t = dec_one(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,1],\"datatype\":\"BYTES\","
      "\"data\":[[\"a\"],[\"bc\"]]}]}",
      &r);
  const uint8_t nested[] = {1, 0, 0, 0, 'a', 2, 0, 0, 0, 'b', 'c'};
  assert_int_equal(t->nbytes, sizeof nested);
  assert_memory_equal(t->data, nested, sizeof nested);
  berth_infer_request_clear(&r);
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BYTES\","
      "\"data\":[[[[[[[[[\"a\"]]]]]]]]]}]}",
      BERTH_E_INVALID, "nested more than 8 levels");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":\"BYTES\","
      "\"data\":[\"a\",3]}]}",
      BERTH_E_INVALID, "element 1 must be a string");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"BYTES\","
      "\"data\":[\"a\",\"b\"]}]}",
      BERTH_E_INVALID, "shape [3] needs 3 elements, data has 2");
}

static void test_nested(void **state) {
  (void)state;
  berth_infer_request r;
  const berth_tensor *t = dec_one(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,2,2],\"datatype\":\"INT32\","
      "\"data\":[[[1,2],[3,4]],[[5,6],[7,8]]]}]}",
      &r);
  assert_int_equal(t->ndim, 3);
  for (int i = 0; i < 8; i++) {
    int32_t v;
    memcpy(&v, t->data + 4 * i, 4);
    assert_int_equal(v, i + 1);
  }
  berth_infer_request_clear(&r);
  /* 0-dim tensor with one element; empty tensor */
  t = dec_one("{\"inputs\":[{\"name\":\"s\",\"shape\":[],\"datatype\":\"FP64\","
              "\"data\":[2.5]}]}",
              &r);
  assert_int_equal(t->ndim, 0);
  assert_int_equal(t->nbytes, 8);
  berth_infer_request_clear(&r);
  t = dec_one(
      "{\"inputs\":[{\"name\":\"e\",\"shape\":[0,3],\"datatype\":\"FP32\","
      "\"data\":[]}]}",
      &r);
  assert_int_equal(t->nbytes, 0);
  berth_infer_request_clear(&r);
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"FP32\","
      "\"data\":[[1,2,3],[4,5]]}]}",
      BERTH_E_INVALID,
      "input 'x': shape [2,3] needs 6 elements, data "
      "has 5");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,3],\"datatype\":\"FP32\","
      "\"data\":[1,2,3,4,5,6,7]}]}",
      BERTH_E_INVALID, "needs 6 elements, data has 7");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"data\":[[[[[[[[[1]]]]]]]]]}]}",
             BERTH_E_INVALID, "nested more than 8 levels");
}

static void test_request_fields(void **state) {
  (void)state;
  berth_infer_request r;
  berth_errmsg err;
  int rc = dec("{\"id\":\"req-7\",\"parameters\":{\"a\":1},\"inputs\":["
               "{\"name\":\"a\",\"shape\":[1],\"datatype\":\"INT8\","
               "\"parameters\":{\"note\":true},\"data\":[1]},"
               "{\"name\":\"b\",\"shape\":[1],\"datatype\":\"BOOL\","
               "\"data\":[false]}],\"outputs\":[{\"name\":\"y\","
               "\"parameters\":{\"binary_data\":false}},{\"name\":\"z\"}],"
               "\"unknown\":1}",
               &r, &err);
  assert_int_equal(rc, BERTH_OK);
  assert_string_equal(r.id, "req-7");
  assert_true(json_is_object(r.parameters));
  assert_int_equal(json_integer_value(json_object_get(r.parameters, "a")), 1);
  assert_int_equal(r.n_inputs, 2);
  assert_string_equal(r.inputs[1].name, "b");
  assert_int_equal(r.n_outputs, 2);
  assert_string_equal(r.outputs[0].name, "y");
  assert_true(json_is_object(r.outputs[0].parameters));
  assert_null(r.outputs[1].parameters);
  berth_infer_request_clear(&r);
  berth_infer_request_clear(&r); /* idempotent on a zeroed struct */
  rc = dec("{\"inputs\":[]}", &r, &err);
  assert_int_equal(rc, BERTH_OK);
  assert_null(r.inputs);
  assert_null(r.id);
  assert_null(r.parameters);
  berth_infer_request_clear(&r);
}

static void test_structure_errors(void **state) {
  (void)state;
  expect_err("{\"inputs\":[", BERTH_E_PARSE, "line 1");
  expect_err("", BERTH_E_PARSE, NULL);
  expect_err("[1]", BERTH_E_INVALID, "must be a JSON object");
  expect_err("{}", BERTH_E_INVALID, "inputs must be an array");
  expect_err("{\"inputs\":{}}", BERTH_E_INVALID, "inputs must be an array");
  expect_err("{\"inputs\":[], \"inputs\":[]}", BERTH_E_PARSE, "duplicate");
  expect_err("{\"inputs\":[1]}", BERTH_E_INVALID,
             "inputs[0] must be an object");
  expect_err("{\"inputs\":[{\"shape\":[1]}]}", BERTH_E_INVALID,
             "inputs[0].name must be a non-empty string");
  expect_err("{\"inputs\":[{\"name\":\"\"}]}", BERTH_E_INVALID,
             "inputs[0].name must be a non-empty string");
  expect_err("{\"inputs\":[{\"name\":\"a\\u0000b\"}]}", BERTH_E_INVALID,
             "contains NUL");
  const char *ok = "{\"name\":\"a\",\"shape\":[1],\"datatype\":\"INT8\","
                   "\"data\":[1]}";
  char json[512];
  snprintf(json, sizeof json,
           "{\"inputs\":[%s,{\"name\":\"b\",\"shape\":[-1],"
           "\"datatype\":\"INT8\",\"data\":[1]}]}",
           ok);
  expect_err(json, BERTH_E_INVALID,
             "inputs[1].shape must be an array of non-negative integers");
  snprintf(json, sizeof json,
           "{\"inputs\":[%s,{\"name\":\"b\",\"shape\":[1.0],"
           "\"datatype\":\"INT8\",\"data\":[1]}]}",
           ok);
  expect_err(json, BERTH_E_INVALID, "inputs[1].shape must be an array");
  snprintf(json, sizeof json,
           "{\"inputs\":[%s,{\"name\":\"b\",\"shape\":3,"
           "\"datatype\":\"INT8\",\"data\":[1]}]}",
           ok);
  expect_err(json, BERTH_E_INVALID, "inputs[1].shape must be an array");
  snprintf(json, sizeof json, "{\"inputs\":[%s,%s]}", ok, ok);
  expect_err(json, BERTH_E_INVALID, "input 'a' appears twice");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,1,1,1,1,1,1,1,1],"
             "\"datatype\":\"INT8\",\"data\":[1]}]}",
             BERTH_E_INVALID, "9 dimensions");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP33\","
             "\"data\":[1]}]}",
             BERTH_E_INVALID, "input 'x': unknown datatype 'FP33'");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":5,"
             "\"data\":[1]}]}",
             BERTH_E_INVALID, "inputs[0].datatype must be a string");
  expect_err(
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT8\"}]}",
      BERTH_E_INVALID, "inputs[0].data must be an array");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT8\","
             "\"data\":1}]}",
             BERTH_E_INVALID, "inputs[0].data must be an array");
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"INT8\","
             "\"parameters\":[],\"data\":[1]}]}",
             BERTH_E_INVALID, "inputs[0].parameters must be an object");
  expect_err("{\"id\":5,\"inputs\":[]}", BERTH_E_INVALID,
             "id must be a string");
  expect_err("{\"id\":\"a\\u0000\",\"inputs\":[]}", BERTH_E_INVALID,
             "id contains NUL");
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(berth_json_decode_infer_request(NULL, 0, NULL, &r, &err),
                   BERTH_E_PARSE);
  expect_err("{\"parameters\":[],\"inputs\":[]}", BERTH_E_INVALID,
             "parameters must be an object");
  expect_err("{\"inputs\":[],\"outputs\":{}}", BERTH_E_INVALID,
             "outputs must be an array");
  expect_err("{\"inputs\":[],\"outputs\":[\"y\"]}", BERTH_E_INVALID,
             "outputs[0] must be an object");
  expect_err("{\"inputs\":[],\"outputs\":[{\"name\":7}]}", BERTH_E_INVALID,
             "outputs[0].name must be a non-empty string");
  expect_err("{\"inputs\":[],\"outputs\":[{\"name\":\"y\"},{\"name\":\"y\"}]}",
             BERTH_E_INVALID, "output 'y' is requested twice");
  expect_err("{\"inputs\":[],\"outputs\":[{\"name\":\"y\",\"parameters\":1}]}",
             BERTH_E_INVALID, "outputs[0].parameters must be an object");
}

static void test_binary_extension_refused(void **state) {
  (void)state;
  expect_err("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
             "\"parameters\":{\"binary_data_size\":4}}]}",
             BERTH_E_UNSUPPORTED, "input 'x': binary tensor data");
}

static void test_limits(void **state) {
  (void)state;
  berth_json_limits l = {2, 16, 6};
  expect_err_lim(
      "{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"INT8\","
      "\"data\":[1]},{\"name\":\"b\",\"shape\":[1],\"datatype\":"
      "\"INT8\",\"data\":[1]},{\"name\":\"c\",\"shape\":[1],"
      "\"datatype\":\"INT8\",\"data\":[1]}]}",
      &l, BERTH_E_TOO_LARGE, "3 inputs; the limit is 2");
  expect_err_lim(
      "{\"inputs\":[],\"outputs\":[{\"name\":\"a\"},{\"name\":\"b\"},"
      "{\"name\":\"c\"}]}",
      &l, BERTH_E_TOO_LARGE, "3 outputs");
  expect_err_lim(
      "{\"inputs\":[{\"name\":\"a\",\"shape\":[5],\"datatype\":\"FP32\","
      "\"data\":[1,2,3,4,5]}]}",
      &l, BERTH_E_TOO_LARGE, "limit of 16 bytes");
  /* a shape that claims too much is refused before any allocation */
  expect_err_lim("{\"inputs\":[{\"name\":\"a\",\"shape\":[1000000000000],"
                 "\"datatype\":\"FP64\",\"data\":[1]}]}",
                 &l, BERTH_E_TOO_LARGE, "a");
  expect_err_lim(
      "{\"inputs\":[{\"name\":\"a\",\"shape\":[4611686018427387904,8],"
      "\"datatype\":\"FP64\",\"data\":[1]}]}",
      &l, BERTH_E_TOO_LARGE, "too many elements");
  expect_err_lim(
      "{\"inputs\":[{\"name\":\"a\",\"shape\":[2],\"datatype\":\"BYTES\","
      "\"data\":[\"12345678\",\"1234\"]}]}",
      &l, BERTH_E_TOO_LARGE, "limit of 16 bytes");
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(
      dec_lim("{\"inputs\":[{\"name\":\"a\",\"shape\":[2],"
              "\"datatype\":\"BYTES\",\"data\":[\"1234\",\"1234\"]}]}",
              &l, &r, &err),
      BERTH_OK); /* exactly 16 bytes */
  berth_infer_request_clear(&r);
  expect_err_lim("{\"inputs\":[],\"parameters\":{\"a\":{\"b\":{\"c\":{\"d\":"
                 "{\"e\":{\"f\":{}}}}}}}}",
                 &l, BERTH_E_INVALID, "deeper than 6");
  /* brackets inside strings do not count */
  assert_int_equal(
      dec_lim("{\"inputs\":[],\"id\":\"[[[[[[[[[[\\\"{{{{{{{\"}", &l, &r, &err),
      BERTH_OK);
  assert_string_equal(r.id, "[[[[[[[[[[\"{{{{{{{");
  berth_infer_request_clear(&r);
  /* NULL limits and zero fields mean defaults */
  assert_int_equal(
      berth_json_decode_infer_request("{\"inputs\":[]}", 13, NULL, &r, &err),
      BERTH_OK);
  berth_json_limits zero = {0, 0, 0};
  assert_int_equal(dec_lim("{\"inputs\":[]}", &zero, &r, &err), BERTH_OK);
  char deep[300];
  memset(deep, '[', 100);
  memset(deep + 100, ']', 100);
  deep[200] = '\0';
  expect_err_lim(deep, &zero, BERTH_E_INVALID, "deeper than 64");
}

/* A name longer than the worker protocol can carry is refused. */
static void test_long_name(void **state) {
  (void)state;
  size_t n = 65536;
  char *json = malloc(n + 200);
  assert_non_null(json);
  strcpy(json, "{\"inputs\":[{\"name\":\"");
  size_t off = strlen(json);
  memset(json + off, 'n', n);
  strcpy(json + off + n,
         "\",\"shape\":[1],\"datatype\":\"INT8\",\"data\":[1]}]}");
  expect_err(json, BERTH_E_INVALID, "longer than 65535 bytes");
  memmove(json + off + n - 1, json + off + n, strlen(json + off + n) + 1);
  berth_infer_request r;
  berth_errmsg err;
  assert_int_equal(dec(json, &r, &err), BERTH_OK);
  assert_int_equal(strlen(r.inputs[0].name), 65535);
  berth_infer_request_clear(&r);
  free(json);
}

/* ---- encoder ---- */

static berth_tensor fp32_tensor(const char *name, float *v, int n) {
  berth_tensor t = {.name = (char *)name,
                    .dtype = BERTH_DT_FP32,
                    .ndim = 1,
                    .shape = {n},
                    .data = (uint8_t *)v,
                    .nbytes = (size_t)n * 4,
                    .data_borrowed = true};
  return t;
}

static void test_encode_response(void **state) {
  (void)state;
  float a[2] = {1.5f, -2.0f}, b[1] = {0.25f};
  berth_tensor outs[2] = {fp32_tensor("a", a, 2), fp32_tensor("b", b, 1)};
  berth_infer_response resp = {.outputs = outs,
                               .n_outputs = 2,
                               .parameters = json_pack("{s:i}", "k", 3)};
  berth_infer_request req = {.id = "r1"};
  berth_buf buf;
  berth_buf_init(&buf, 1 << 20);
  berth_errmsg err;
  assert_int_equal(
      berth_json_encode_infer_response("mdl", "2", &req, &resp, &buf, &err),
      BERTH_OK);
  assert_string_equal(
      buf.data,
      "{\"model_name\":\"mdl\",\"model_version\":\"2\",\"id\":\"r1\","
      "\"parameters\":{\"k\":3},\"outputs\":["
      "{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[2],\"data\":[1.5,-2.0]},"
      "{\"name\":\"b\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[0.25]}]}");
  /* requested outputs pick and order; NULL id/parameters/version omitted */
  berth_output_request want[1] = {{.name = "b"}};
  req = (berth_infer_request){.outputs = want, .n_outputs = 1};
  json_decref(resp.parameters);
  resp.parameters = NULL;
  berth_buf_reset(&buf);
  assert_int_equal(
      berth_json_encode_infer_response("mdl", NULL, &req, &resp, &buf, &err),
      BERTH_OK);
  assert_string_equal(buf.data,
                      "{\"model_name\":\"mdl\",\"outputs\":[{\"name\":"
                      "\"b\",\"datatype\":\"FP32\",\"shape\":[1],"
                      "\"data\":[0.25]}]}");
  /* a requested output the model lacks: error, buffer unchanged */
  berth_buf_reset(&buf);
  berth_buf_append(&buf, "prefix", 6);
  berth_output_request missing[2] = {{.name = "a"}, {.name = "z"}};
  req.outputs = missing;
  req.n_outputs = 2;
  assert_int_equal(
      berth_json_encode_infer_response("mdl", "1", &req, &resp, &buf, &err),
      BERTH_E_INVALID);
  assert_string_equal(err.msg,
                      "requested output 'z' is not an output of this model");
  assert_string_equal(buf.data, "prefix");
  /* NULL request: every output, model order */
  berth_buf_reset(&buf);
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_OK);
  assert_non_null(strstr(buf.data, "\"name\":\"a\""));
  assert_true(strstr(buf.data, "\"a\"") < strstr(buf.data, "\"b\""));
  /* inconsistent tensor: internal error */
  outs[1].nbytes = 3;
  berth_buf_reset(&buf);
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_E_INTERNAL);
  assert_int_equal(buf.len, 0);
  berth_buf_free(&buf);
}

static void test_encode_special_floats(void **state) {
  (void)state;
  float f[4] = {NAN, INFINITY, -INFINITY, 1e-40f};
  uint16_t h[4] = {0x7E00, 0x7C00, 0xFC00, 0x3555};
  uint16_t bf[3] = {0x7FC0, 0xFF80, 0x3EAB};
  double d[3] = {NAN, -INFINITY, 1.0 / 3};
  berth_tensor outs[4] = {
      fp32_tensor("f", f, 4),
      {.name = "h",
       .dtype = BERTH_DT_FP16,
       .ndim = 1,
       .shape = {4},
       .data = (uint8_t *)h,
       .nbytes = 8},
      {.name = "bf",
       .dtype = BERTH_DT_BF16,
       .ndim = 1,
       .shape = {3},
       .data = (uint8_t *)bf,
       .nbytes = 6},
      {.name = "d",
       .dtype = BERTH_DT_FP64,
       .ndim = 1,
       .shape = {3},
       .data = (uint8_t *)d,
       .nbytes = 24},
  };
  berth_infer_response resp = {.outputs = outs, .n_outputs = 4};
  berth_buf buf;
  berth_buf_init(&buf, 1 << 20);
  berth_errmsg err;
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_OK);
  assert_non_null(strstr(buf.data, "\"data\":[NaN,Infinity,-Infinity,1e-40]"));
  assert_non_null(strstr(buf.data, "\"data\":[NaN,Infinity,-Infinity,0.3333]"));
  assert_non_null(strstr(buf.data, "\"data\":[NaN,-Infinity,0.334]"));
  assert_non_null(
      strstr(buf.data, "\"data\":[NaN,-Infinity,0.3333333333333333]"));
  berth_buf_free(&buf);
}

static void test_encode_bytes_utf8(void **state) {
  (void)state;
  uint8_t good[] = {3, 0, 0, 0, 'a', '"', '\n', 2, 0, 0, 0, 0xC3, 0xA9};
  uint8_t bad[] = {2, 0, 0, 0, 0xC3, 0x28};
  berth_tensor t = {.name = "y",
                    .dtype = BERTH_DT_BYTES,
                    .ndim = 1,
                    .shape = {2},
                    .data = good,
                    .nbytes = sizeof good};
  berth_infer_response resp = {.outputs = &t, .n_outputs = 1};
  berth_buf buf;
  berth_buf_init(&buf, 1 << 20);
  berth_errmsg err;
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_OK);
  assert_non_null(strstr(buf.data, "\"data\":[\"a\\\"\\n\",\"\xC3\xA9\"]"));
  t.data = bad;
  t.nbytes = sizeof bad;
  t.shape[0] = 1;
  berth_buf_reset(&buf);
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_E_UNSUPPORTED);
  assert_non_null(strstr(err.msg, "output 'y' holds non-UTF-8 bytes"));
  assert_int_equal(buf.len, 0);
  berth_buf_free(&buf);
}

static void test_encode_integers_and_bool(void **state) {
  (void)state;
  uint64_t u[2] = {UINT64_MAX, 0};
  int16_t i[3] = {-32768, 0, 7};
  uint8_t b[2] = {0, 1};
  berth_tensor outs[3] = {
      {.name = "u",
       .dtype = BERTH_DT_UINT64,
       .ndim = 1,
       .shape = {2},
       .data = (uint8_t *)u,
       .nbytes = 16},
      {.name = "i",
       .dtype = BERTH_DT_INT16,
       .ndim = 2,
       .shape = {1, 3},
       .data = (uint8_t *)i,
       .nbytes = 6},
      {.name = "b", .dtype = BERTH_DT_BOOL, .ndim = 0, .data = b, .nbytes = 1},
  };
  berth_infer_response resp = {.outputs = outs, .n_outputs = 3};
  berth_buf buf;
  berth_buf_init(&buf, 1 << 20);
  berth_errmsg err;
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_OK);
  assert_non_null(strstr(buf.data, "\"data\":[18446744073709551615,0]"));
  assert_non_null(strstr(buf.data, "\"shape\":[1,3],\"data\":[-32768,0,7]"));
  assert_non_null(strstr(buf.data, "\"shape\":[],\"data\":[false]"));
  berth_buf_free(&buf);
}

/* The buffer's maximum is honoured exactly, chunked path included. */
static void test_encode_buffer_limit(void **state) {
  (void)state;
  enum { N = 5000 };
  float *v = malloc(N * sizeof *v);
  assert_non_null(v);
  for (int k = 0; k < N; k++)
    v[k] = (float)k / 7.0f;
  berth_tensor t = fp32_tensor("big", v, N);
  berth_infer_response resp = {.outputs = &t, .n_outputs = 1};
  berth_buf buf;
  berth_buf_init(&buf, 1 << 24);
  berth_errmsg err;
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_OK);
  size_t need = buf.len;
  char *want = strdup(buf.data);
  assert_non_null(want);
  berth_buf_free(&buf);
  berth_buf_init(&buf, need);
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_OK);
  assert_string_equal(buf.data, want);
  berth_buf_free(&buf);
  berth_buf_init(&buf, need - 1);
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_E_TOO_LARGE);
  assert_int_equal(buf.len, 0);
  berth_buf_free(&buf);
  free(want);
  free(v);
}

static void test_append_string(void **state) {
  (void)state;
  berth_buf b;
  berth_buf_init(&b, 1 << 16);
  const char in[] = "q\"b\\s/\x01\x1f\x7f\t\r\b\f\xc3\xa9"
                    "\xff"             /* invalid byte */
                    "\xc0\x80"         /* overlong NUL */
                    "\xed\xa0\x80"     /* surrogate */
                    "\xf0\x9f\x98\x80" /* U+1F600 */
                    "\xe2\x82";        /* truncated */
  assert_int_equal(berth_json_append_string(&b, in, sizeof in - 1), BERTH_OK);
  assert_string_equal(b.data,
                      "\"q\\\"b\\\\s/\\u0001\\u001f\x7f\\t\\r\\b\\f\xc3\xa9"
                      "\xef\xbf\xbd"
                      "\xef\xbf\xbd\xef\xbf\xbd"
                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                      "\xf0\x9f\x98\x80"
                      "\xef\xbf\xbd\xef\xbf\xbd\"");
  /* the edges of RFC 3629: overlong 3- and 4-byte forms, past U+10FFFF,
   * and the largest code points that are fine */
  berth_buf_reset(&b);
  const char edges[] = "\xe0\x9f\xbf|\xe0\xa0\x80|\xf0\x8f\xbf\xbf|"
                       "\xf4\x90\x80\x80|\xf4\x8f\xbf\xbf|\xef\xbf\xbf";
  assert_int_equal(berth_json_append_string(&b, edges, sizeof edges - 1),
                   BERTH_OK);
  assert_string_equal(b.data,
                      "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xe0\xa0\x80|"
                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                      "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                      "\xf4\x8f\xbf\xbf|\xef\xbf\xbf\"");
  berth_buf_reset(&b);
  assert_int_equal(berth_json_encode_error(NULL, &b), BERTH_OK);
  assert_string_equal(b.data, "{\"error\":\"\"}");
  berth_buf_reset(&b);
  assert_int_equal(berth_json_append_string(&b, "a\0b", 3), BERTH_OK);
  assert_string_equal(b.data, "\"a\\u0000b\"");
  berth_buf_reset(&b);
  assert_int_equal(berth_json_encode_error("bad \"x\"\n", &b), BERTH_OK);
  assert_string_equal(b.data, "{\"error\":\"bad \\\"x\\\"\\n\"}");
  berth_buf_free(&b);
  berth_buf_init(&b, 5);
  assert_int_equal(berth_json_append_string(&b, "abcdef", 6),
                   BERTH_E_TOO_LARGE);
  assert_int_equal(b.len, 0);
  assert_int_equal(berth_json_encode_error("abcdef", &b), BERTH_E_TOO_LARGE);
  assert_int_equal(b.len, 0);
  berth_buf_free(&b);
}

/* Encoding then decoding again gives the same bytes, for random values of
 * every datatype: the encoder's text is exact for each width. */
/* A response built on the heap is released by berth_infer_response_clear. */
static void test_response_clear(void **state) {
  (void)state;
  berth_infer_response r = {.n_outputs = 2,
                            .parameters = json_pack("{s:s}", "a", "b")};
  r.outputs = calloc(2, sizeof *r.outputs);
  assert_non_null(r.outputs);
  r.outputs[0].name = strdup("y");
  r.outputs[0].data = malloc(4);
  r.outputs[0].nbytes = 4;
  berth_infer_response_clear(&r);
  assert_null(r.outputs);
  assert_int_equal(r.n_outputs, 0);
  assert_null(r.parameters);
  berth_infer_response_clear(&r);
  berth_infer_response_clear(NULL);
  berth_infer_request_clear(NULL);
}

static void test_random_round_trip(void **state) {
  (void)state;
  enum { N = 4000 };
  static const berth_dtype dts[] = {
      BERTH_DT_BOOL, BERTH_DT_UINT8, BERTH_DT_UINT16, BERTH_DT_UINT32,
      BERTH_DT_INT8, BERTH_DT_INT16, BERTH_DT_INT32,  BERTH_DT_INT64,
      BERTH_DT_FP16, BERTH_DT_BF16,  BERTH_DT_FP32,   BERTH_DT_FP64};
  enum { NT = sizeof dts / sizeof dts[0] };
  berth_tensor ts[NT];
  uint64_t s = 0x243F6A8885A308D3ULL;
  for (size_t k = 0; k < NT; k++) {
    size_t es = berth_dtype_size(dts[k]);
    uint8_t *d = malloc(N * es);
    assert_non_null(d);
    for (size_t j = 0; j < N * es; j++) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      d[j] = (uint8_t)s;
    }
    for (size_t j = 0; j < N; j++) { /* keep values finite and BOOL 0/1 */
      uint8_t *e = d + j * es;
      if (dts[k] == BERTH_DT_BOOL)
        e[0] &= 1;
      else if (dts[k] == BERTH_DT_FP16 && (e[1] & 0x7C) == 0x7C)
        e[1] ^= 0x40;
      else if ((dts[k] == BERTH_DT_BF16 || dts[k] == BERTH_DT_FP32) &&
               (e[es - 1] & 0x7F) == 0x7F)
        e[es - 1] ^= 0x40;
      else if (dts[k] == BERTH_DT_FP64 && (e[7] & 0x7F) == 0x7F)
        e[7] ^= 0x40;
    }
    char name[8];
    snprintf(name, sizeof name, "t%zu", k);
    ts[k] = (berth_tensor){.name = strdup(name),
                           .dtype = dts[k],
                           .ndim = 2,
                           .shape = {N / 4, 4},
                           .data = d,
                           .nbytes = N * es};
  }
  berth_infer_response resp = {.outputs = ts, .n_outputs = NT};
  berth_buf buf;
  berth_buf_init(&buf, 1 << 26);
  berth_errmsg err;
  assert_int_equal(
      berth_json_encode_infer_response("m", "1", NULL, &resp, &buf, &err),
      BERTH_OK);
  /* the response's "outputs" are valid request "inputs" */
  json_error_t jerr;
  json_t *doc = json_loadb(buf.data, buf.len, 0, &jerr);
  if (doc == NULL)
    fail_msg("encoder wrote invalid JSON: %s at %d", jerr.text, jerr.position);
  json_t *req = json_pack("{s:O}", "inputs", json_object_get(doc, "outputs"));
  char *text = json_dumps(req, JSON_COMPACT);
  assert_non_null(text);
  berth_json_limits big = {64, 1 << 26, 64};
  berth_infer_request r;
  int rc = dec_lim(text, &big, &r, &err);
  if (rc != BERTH_OK)
    fail_msg("re-decode failed: %s", err.msg);
  assert_int_equal(r.n_inputs, NT);
  for (size_t k = 0; k < NT; k++) {
    assert_int_equal(r.inputs[k].nbytes, ts[k].nbytes);
    assert_memory_equal(r.inputs[k].data, ts[k].data, ts[k].nbytes);
  }
  berth_infer_request_clear(&r);
  free(text);
  json_decref(req);
  json_decref(doc);
  berth_buf_free(&buf);
  for (size_t k = 0; k < NT; k++) /* ts is on the stack: clear, not free */
    berth_tensor_clear(&ts[k]);
}

/* The one-pass decoder takes the common request shape and gives what the
 * full decoder gives; it declines everything else without a message. */
static void same_request(const char *json) {
  berth_infer_request a, b;
  berth_errmsg err;
  assert_int_equal(berth_json_decode_fast(json, strlen(json), &lim, &a),
                   BERTH_OK);
  assert_int_equal(berth_json_decode_full(json, strlen(json), &lim, &b, &err),
                   BERTH_OK);
  assert_int_equal(a.n_inputs, b.n_inputs);
  assert_true((a.id == NULL) == (b.id == NULL));
  if (a.id != NULL)
    assert_string_equal(a.id, b.id);
  for (size_t i = 0; i < a.n_inputs; i++) {
    const berth_tensor *x = &a.inputs[i], *y = &b.inputs[i];
    assert_string_equal(x->name, y->name);
    assert_int_equal(x->dtype, y->dtype);
    assert_int_equal(x->ndim, y->ndim);
    assert_memory_equal(x->shape, y->shape, sizeof x->shape[0] * x->ndim);
    assert_int_equal(x->nbytes, y->nbytes);
    assert_memory_equal(x->data, y->data, x->nbytes);
  }
  berth_infer_request_clear(&a);
  berth_infer_request_clear(&b);
}

/* Either declined (the full decoder then decides) or the same request. */
static void same_or_declined(const char *json) {
  berth_infer_request a;
  int rc = berth_json_decode_fast(json, strlen(json), &lim, &a);
  if (rc == BERTH_E_UNSUPPORTED)
    return;
  assert_int_equal(rc, BERTH_OK);
  berth_infer_request_clear(&a);
  same_request(json);
}

static void declined(const char *json) {
  berth_infer_request a;
  assert_int_equal(berth_json_decode_fast(json, strlen(json), &lim, &a),
                   BERTH_E_UNSUPPORTED);
  assert_null(a.inputs);
  assert_null(a.id);
}

/* Many decimals as clients print them (17, 16, 9 and 6 significant digits,
 * FP32 values widened, tiny and huge exponents): the fast decoder's numbers
 * are bit for bit the full decoder's (strtod's). */
static void test_fast_decoder_numbers(void **state) {
  (void)state;
  enum { N = 4000 };
  static char body[N * 40 + 200];
  static const int digits[] = {17, 16, 9, 6, 15};
  uint64_t seed = 0x9E3779B97F4A7C15u;
  for (int round = 0; round < 10; round++) {
    size_t n = (size_t)snprintf(body, sizeof body,
                                "{\"inputs\":[{\"name\":\"x\",\"shape\":[%d],"
                                "\"datatype\":\"%s\",\"data\":[",
                                N, round < 6 ? "FP64" : "FP32");
    for (int i = 0; i < N; i++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      double x;
      if (round % 2 == 0) { /* an FP32 value, the W2 body's kind */
        float f = (float)((double)(seed >> 11) / 0x1p53 * 8.0 - 4.0);
        x = f;
      } else { /* any magnitude from 1e-30 to 1e30 */
        double mant = (double)(seed >> 11) / 0x1p53;
        int e = (int)((seed >> 3) % 61) - 30;
        x = mant * pow(10.0, e);
      }
      n += (size_t)snprintf(body + n, sizeof body - n, "%s", i ? "," : "");
      n += (size_t)snprintf(body + n, sizeof body - n,
                            (seed >> 6) & 1 ? "%.*g" : "%.*e",
                            digits[(seed >> 7) % 5], x);
    }
    snprintf(body + n, sizeof body - n, "]}]}");
    same_request(body);
  }
  /* lexemes at the one-pass conversion's edges (digits, zeros, exponents) */
  static const char *const edge[] = {"0",
                                     "-0",
                                     "0.0",
                                     "-0.0",
                                     "0e0",
                                     "0E+1",
                                     "1e22",
                                     "1e23",
                                     "1e-22",
                                     "1e-23",
                                     "1e1000",
                                     "1e-1000",
                                     "1.5e-45",
                                     "7e-46",
                                     "3.4028234e38",
                                     "123456789012345678",
                                     "1234567890123456789",
                                     "-9223372036854775808",
                                     "9007199254740993",
                                     "0.000000000000000000001",
                                     "1.2345678901234567890123",
                                     "98765432109876543.21e-5",
                                     "4.9e-324",
                                     "2.2250738585072011e-308"};
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
    for (int f32 = 0; f32 < 2; f32++) {
      snprintf(body, sizeof body,
               "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],"
               "\"datatype\":\"%s\",\"data\":[%s,1]}]}",
               f32 ? "FP32" : "FP64", edge[i]);
      same_or_declined(body);
    }
}

static void test_fast_decoder(void **state) {
  (void)state;
  same_request("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],"
               "\"datatype\":\"FP32\",\"data\":[0.1,-2.5e3,7,-0]}]}");
  same_request(" {\"id\" : \"r 1\", \"inputs\": [ {\"data\": [[1, 2], [3, 4]],"
               " \"datatype\": \"INT8\", \"shape\": [2, 2], \"name\": \"a\"},"
               "{\"name\":\"b\",\"shape\":[2],\"datatype\":\"FP64\","
               "\"data\":[1e-320,123456789012345678]} ] }\n");
  same_request("{\"inputs\":[{\"name\":\"u\",\"shape\":[3],\"datatype\":"
               "\"UINT32\",\"data\":[0,4294967295,[7]]}]}");
  same_request(
      "{\"inputs\":[{\"name\":\"f\",\"shape\":[9],\"datatype\":"
      "\"FP64\",\"data\":[-0.3905502259731293,0.1,9007199254740993,"
      "1.7976931348623157e308,4.9e-324,-0.0,0.000123e-3,1e22,1e23]}]}");
  same_request("{\"inputs\":[{\"name\":\"e\",\"shape\":[0],\"datatype\":"
               "\"INT64\",\"data\":[]}]}");
  /* what the full decoder refuses or the fast one leaves to it */
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":"
           "\"FP32\",\"data\":[1]}]}"); /* count */
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"INT8\",\"data\":[128]}]}"); /* range */
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"INT32\",\"data\":[1.0]}]}"); /* a real for an integer */
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[1e39]}]}"); /* FP32 overflow */
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[01]}]}"); /* not JSON */
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[1]}]} x"); /* trailing bytes */
  declined("{\"inputs\":[{\"name\":\"x\",\"name\":\"y\",\"shape\":[1],"
           "\"datatype\":\"FP32\",\"data\":[1]}]}"); /* duplicate key */
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[1]},{\"name\":\"x\",\"shape\":[1],"
           "\"datatype\":\"FP32\",\"data\":[1]}]}"); /* duplicate input */
  declined("{\"inputs\":[{\"name\":\"x\\u0041\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[1]}]}"); /* an escape */
  declined("{\"inputs\":[{\"name\":\"t\",\"shape\":[1],\"datatype\":"
           "\"BYTES\",\"data\":[\"a\"]}]}");
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[1]}],\"parameters\":{\"a\":1}}");
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[1],\"parameters\":{}}]}");
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":"
           "\"FP32\",\"data\":[1]}],\"outputs\":[{\"name\":\"y\"}]}");
  declined("{\"inputs\":[{\"name\":\"x\",\"shape\":[-1],\"datatype\":"
           "\"FP32\",\"data\":[1]}]}");
  /* data the first pass steps over by its brackets, the strict parse
   * refuses: each is left to the full decoder */
  static const char *const loose[] = {
      "[1,,2]", "[1 2]", "[,1]",     "[1,]",   "[1e]", "[--1]", "[1.]",
      "[.5]",   "[+1]",  "[[1],2]]", "[[1,2]", "[1]]", "[e1]",  "[1,-]"};
  for (size_t i = 0; i < sizeof loose / sizeof *loose; i++) {
    char req[256];
    snprintf(req, sizeof req,
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[2],\"datatype\":"
             "\"FP32\",\"data\":%s}]}",
             loose[i]);
    declined(req);
  }
  declined("[1]");
  declined("");
}

/* An input naming a shared-memory region carries no data: the decoder
 * records the region (the frontend maps the bytes in); bad parameters and
 * a region with data are refused. */
static void test_shared_memory_inputs(void **state) {
  (void)state;
  berth_infer_request r = {0};
  berth_errmsg err;
  assert_int_equal(
      dec("{\"inputs\":[{\"name\":\"a\",\"datatype\":\"INT32\",\"shape\":[2],"
          "\"parameters\":{\"shared_memory_region\":\"in\","
          "\"shared_memory_byte_size\":8,\"shared_memory_offset\":16}},"
          "{\"name\":\"b\",\"datatype\":\"INT32\",\"shape\":[1],"
          "\"data\":[1]}]}",
          &r, &err),
      BERTH_OK);
  assert_non_null(r.input_shm);
  assert_string_equal(r.input_shm[0].region, "in");
  assert_int_equal(r.input_shm[0].offset, 16);
  assert_int_equal(r.input_shm[0].byte_size, 8);
  assert_null(r.input_shm[1].region);
  assert_null(r.inputs[0].data);
  berth_infer_request_clear(&r);
  const char *bad[] = {
      "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"INT32\",\"shape\":[1],"
      "\"data\":[1],\"parameters\":{\"shared_memory_region\":\"in\","
      "\"shared_memory_byte_size\":4}}]}",
      "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"INT32\",\"shape\":[1],"
      "\"parameters\":{\"shared_memory_region\":\"in\"}}]}",
      "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"INT32\",\"shape\":[1],"
      "\"parameters\":{\"shared_memory_region\":\"in\","
      "\"shared_memory_byte_size\":-4}}]}",
      "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"INT32\",\"shape\":[1],"
      "\"parameters\":{\"shared_memory_region\":5,"
      "\"shared_memory_byte_size\":4}}]}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(dec(bad[i], &r, &err), BERTH_E_INVALID);
    assert_non_null(strstr(err.msg, "input 'a'"));
    berth_infer_request_clear(&r);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bool),
      cmocka_unit_test(test_shared_memory_inputs),
      cmocka_unit_test(test_fast_decoder),
      cmocka_unit_test(test_fast_decoder_numbers),
      cmocka_unit_test(test_unsigned),
      cmocka_unit_test(test_signed),
      cmocka_unit_test(test_fp16),
      cmocka_unit_test(test_bf16),
      cmocka_unit_test(test_fp32),
      cmocka_unit_test(test_fp64),
      cmocka_unit_test(test_bytes),
      cmocka_unit_test(test_nested),
      cmocka_unit_test(test_request_fields),
      cmocka_unit_test(test_structure_errors),
      cmocka_unit_test(test_binary_extension_refused),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_long_name),
      cmocka_unit_test(test_encode_response),
      cmocka_unit_test(test_encode_special_floats),
      cmocka_unit_test(test_encode_bytes_utf8),
      cmocka_unit_test(test_encode_integers_and_bool),
      cmocka_unit_test(test_encode_buffer_limit),
      cmocka_unit_test(test_append_string),
      cmocka_unit_test(test_response_clear),
      cmocka_unit_test(test_random_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
