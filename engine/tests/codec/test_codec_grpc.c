/* Unit tests for codec_grpc.c: gRPC message framing, ModelInferRequest
 * decoding (raw and typed contents in every datatype, parameters, limits,
 * errors), ModelInferResponse encoding (requested outputs, raw contents,
 * parameters, the stream wrapper), grpc-message and grpc-timeout. The
 * protobuf messages are built and read with the same protoc-c code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec_grpc.h"
#include "grpc_service.pb-c.h"

typedef Inference__ModelInferRequest Req;
typedef Inference__ModelInferRequest__InferInputTensor In;

/* Packs a request into a malloc'd buffer. */
static uint8_t *pack(const Req *r, size_t *len) {
  *len = inference__model_infer_request__get_packed_size(r);
  uint8_t *b = malloc(*len + 1);
  assert_non_null(b);
  inference__model_infer_request__pack(r, b);
  return b;
}

static int decode_req(const Req *r, const berth_grpc_limits *lim,
                      berth_grpc_target *t, berth_infer_request *out,
                      berth_errmsg *err) {
  size_t len;
  uint8_t *b = pack(r, &len);
  err->msg[0] = '\0';
  int rc = berth_grpc_decode_infer_request(b, len, lim, t, out, err);
  free(b);
  return rc;
}

/* A request for model "m" with the given inputs. */
static Req request(In **inputs, size_t n) {
  Req r = INFERENCE__MODEL_INFER_REQUEST__INIT;
  r.model_name = "m";
  r.n_inputs = n;
  r.inputs = inputs;
  return r;
}

static In input(const char *name, const char *dt, int64_t *shape, size_t ndim) {
  In in = INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
  in.name = (char *)name;
  in.datatype = (char *)dt;
  in.shape = shape;
  in.n_shape = ndim;
  return in;
}

/* ---- framing ------------------------------------------------------- */

typedef struct got {
  int n;
  size_t lens[8];
  char data[8][64];
  int stop_after;
} got;

static int on_msg(void *arg, const uint8_t *msg, size_t len) {
  got *g = arg;
  assert_non_null(msg);
  g->lens[g->n] = len;
  memcpy(g->data[g->n], msg, len < 64 ? len : 64);
  g->n++;
  return g->stop_after && g->n == g->stop_after ? 7 : 0;
}

static void test_reader_pieces(void **state) {
  (void)state;
  const uint8_t wire[] = {0, 0, 0, 0, 3, 'a', 'b', 'c', 0,   0,
                          0, 0, 0, 0, 0, 0,   0,   2,   'x', 'y'};
  for (size_t step = 1; step <= sizeof wire; step++) {
    berth_grpc_reader r;
    berth_grpc_reader_init(&r, 100);
    got g = {0};
    berth_errmsg err;
    for (size_t off = 0; off < sizeof wire; off += step) {
      size_t n = sizeof wire - off < step ? sizeof wire - off : step;
      assert_int_equal(
          berth_grpc_reader_feed(&r, wire + off, n, on_msg, &g, &err),
          BERTH_OK);
      if (off + n < sizeof wire && off + n > 5 && off + n < 8)
        assert_int_equal(berth_grpc_reader_held(&r), off + n);
    }
    assert_int_equal(g.n, 3);
    assert_int_equal(g.lens[0], 3);
    assert_memory_equal(g.data[0], "abc", 3);
    assert_int_equal(g.lens[1], 0);
    assert_int_equal(g.lens[2], 2);
    assert_memory_equal(g.data[2], "xy", 2);
    assert_true(berth_grpc_reader_idle(&r));
    assert_int_equal(berth_grpc_reader_held(&r), 0);
    berth_grpc_reader_free(&r);
  }
}

static void test_reader_errors(void **state) {
  (void)state;
  berth_errmsg err;
  got g = {0};
  berth_grpc_reader r;
  berth_grpc_reader_init(&r, 4);
  const uint8_t big[] = {0, 0, 0, 0, 5};
  assert_int_equal(berth_grpc_reader_feed(&r, big, 5, on_msg, &g, &err),
                   BERTH_E_TOO_LARGE);
  assert_non_null(strstr(err.msg, "limit"));
  berth_grpc_reader_free(&r);

  berth_grpc_reader_init(&r, 4);
  const uint8_t zipped[] = {1, 0, 0, 0, 1, 'a'};
  assert_int_equal(berth_grpc_reader_feed(&r, zipped, 6, on_msg, &g, &err),
                   BERTH_E_UNSUPPORTED);
  berth_grpc_reader_free(&r);

  berth_grpc_reader_init(&r, 4);
  const uint8_t bad[] = {9, 0, 0, 0, 1, 'a'};
  assert_int_equal(berth_grpc_reader_feed(&r, bad, 6, on_msg, &g, &err),
                   BERTH_E_PARSE);
  berth_grpc_reader_free(&r);

  /* the callback's status stops the feed */
  berth_grpc_reader_init(&r, 4);
  got s = {.stop_after = 1};
  const uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
  assert_int_equal(
      berth_grpc_reader_feed(&r, two, sizeof two, on_msg, &s, &err), 7);
  assert_int_equal(s.n, 1);
  berth_grpc_reader_free(&r);
  assert_int_equal(g.n, 0);
}

/* A call with grpc-encoding gzip: a message flagged compressed is inflated
 * (in whatever pieces it arrives), one not flagged passes as it is, and the
 * inflated size is bounded by the message limit. */
static void test_reader_compressed(void **state) {
  (void)state;
  char *z;
  size_t zn;
  berth_errmsg err;
  assert_int_equal(
      berth_deflate(BERTH_ENC_GZIP, (const uint8_t *)"hello", 5, &z, &zn, &err),
      BERTH_OK);
  uint8_t wire[128];
  size_t w = 0;
  wire[w++] = 1;
  wire[w++] = 0;
  wire[w++] = 0;
  wire[w++] = (uint8_t)(zn >> 8);
  wire[w++] = (uint8_t)zn;
  memcpy(wire + w, z, zn);
  w += zn;
  const uint8_t plain[] = {0, 0, 0, 0, 2, 'o', 'k'};
  memcpy(wire + w, plain, sizeof plain);
  w += sizeof plain;
  for (size_t step = 1; step <= w; step += 7) {
    berth_grpc_reader r;
    berth_grpc_reader_init(&r, 100);
    r.encoding = BERTH_ENC_GZIP;
    got g = {0};
    for (size_t off = 0; off < w; off += step) {
      size_t n = w - off < step ? w - off : step;
      assert_int_equal(
          berth_grpc_reader_feed(&r, wire + off, n, on_msg, &g, &err),
          BERTH_OK);
    }
    assert_int_equal(g.n, 2);
    assert_int_equal(g.lens[0], 5);
    assert_memory_equal(g.data[0], "hello", 5);
    assert_int_equal(g.lens[1], 2);
    berth_grpc_reader_free(&r);
  }
  /* inflating past the limit, and a corrupt message */
  berth_grpc_reader r;
  got g = {0};
  char *bz;
  size_t bzn;
  char big[4096];
  memset(big, 'a', sizeof big);
  assert_int_equal(berth_deflate(BERTH_ENC_GZIP, (const uint8_t *)big,
                                 sizeof big, &bz, &bzn, &err),
                   BERTH_OK);
  berth_grpc_reader_init(&r, 1000); /* bzn < 1000 < 4096 */
  r.encoding = BERTH_ENC_GZIP;
  assert_true(bzn < 1000);
  uint8_t head[5] = {1, 0, 0, (uint8_t)(bzn >> 8), (uint8_t)bzn};
  assert_int_equal(berth_grpc_reader_feed(&r, head, 5, on_msg, &g, &err),
                   BERTH_OK);
  assert_int_equal(
      berth_grpc_reader_feed(&r, (const uint8_t *)bz, bzn, on_msg, &g, &err),
      BERTH_E_TOO_LARGE);
  assert_non_null(strstr(err.msg, "grpc_max_message_bytes"));
  berth_grpc_reader_free(&r);
  berth_grpc_reader_init(&r, 100);
  r.encoding = BERTH_ENC_DEFLATE;
  const uint8_t junk[] = {1, 0, 0, 0, 3, 'x', 'y', 'z'};
  assert_int_equal(
      berth_grpc_reader_feed(&r, junk, sizeof junk, on_msg, &g, &err),
      BERTH_E_PARSE);
  berth_grpc_reader_free(&r);
  assert_int_equal(g.n, 0);
  free(z);
  free(bz);
}

/* ---- decoding: raw contents ---------------------------------------- */

static void test_decode_raw(void **state) {
  (void)state;
  int64_t s22[] = {2, 2}, s2[] = {2};
  In a = input("x", "FP32", s22, 2), b = input("s", "BYTES", s2, 1);
  In *ins[] = {&a, &b};
  Req r = request(ins, 2);
  r.model_version = "3";
  r.id = "req-1";
  float f[4] = {1.5f, -2.0f, 0.25f, 8.0f};
  uint8_t bytes[] = {2, 0, 0, 0, 'h', 'i', 0, 0, 0, 0};
  ProtobufCBinaryData raw[2] = {{sizeof f, (uint8_t *)f},
                                {sizeof bytes, bytes}};
  r.n_raw_input_contents = 2;
  r.raw_input_contents = raw;
  berth_grpc_target t;
  berth_infer_request out;
  berth_errmsg err;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_OK);
  assert_string_equal(t.model_name, "m");
  assert_string_equal(t.model_version, "3");
  assert_string_equal(out.id, "req-1");
  assert_int_equal(out.n_inputs, 2);
  assert_string_equal(out.inputs[0].name, "x");
  assert_int_equal(out.inputs[0].dtype, BERTH_DT_FP32);
  assert_int_equal(out.inputs[0].ndim, 2);
  assert_int_equal(out.inputs[0].nbytes, 16);
  assert_memory_equal(out.inputs[0].data, f, 16);
  assert_int_equal(out.inputs[1].dtype, BERTH_DT_BYTES);
  assert_memory_equal(out.inputs[1].data, bytes, sizeof bytes);
  assert_null(out.parameters);
  assert_int_equal(out.n_outputs, 0);
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);

  /* no version, no id */
  r.model_version = "";
  r.id = "";
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_OK);
  assert_null(t.model_version);
  assert_null(out.id);
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);

  /* wrong size */
  raw[0].len = 12;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "'x'"));
  assert_non_null(strstr(err.msg, "raw_input_contents"));
  assert_null(out.inputs);
  assert_null(t.model_name);
  raw[0].len = 16;

  /* BYTES: a prefix past the end, and one element short */
  bytes[0] = 9;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  bytes[0] = 2;
  raw[1].len = 6;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "BYTES"));
  raw[1].len = sizeof bytes;

  /* one raw entry for two inputs */
  r.n_raw_input_contents = 1;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "one per input"));
  r.n_raw_input_contents = 2;

  /* raw and typed contents mixed */
  Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
  c.n_fp32_contents = 4;
  c.fp32_contents = f;
  a.contents = &c;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "one form"));
  a.contents = NULL;

  /* the tensor limit */
  berth_grpc_limits small = {.max_tensor_bytes = 8};
  assert_int_equal(decode_req(&r, &small, &t, &out, &err), BERTH_E_TOO_LARGE);

  /* BOOL values other than 0 and 1 */
  int64_t s3[] = {3};
  In bl = input("b", "BOOL", s3, 1);
  In *one[] = {&bl};
  Req rb = request(one, 1);
  uint8_t bv[3] = {1, 0, 2};
  ProtobufCBinaryData braw = {3, bv};
  rb.n_raw_input_contents = 1;
  rb.raw_input_contents = &braw;
  assert_int_equal(decode_req(&rb, NULL, &t, &out, &err), BERTH_E_INVALID);
  bv[2] = 1;
  assert_int_equal(decode_req(&rb, NULL, &t, &out, &err), BERTH_OK);
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);

  /* FP16 and BF16 travel raw */
  In h = input("h", "FP16", s3, 1);
  In *hs[] = {&h};
  Req rh = request(hs, 1);
  uint8_t hv[6] = {0, 0x3c, 0, 0xc0, 0, 0};
  ProtobufCBinaryData hraw = {6, hv};
  rh.n_raw_input_contents = 1;
  rh.raw_input_contents = &hraw;
  assert_int_equal(decode_req(&rh, NULL, &t, &out, &err), BERTH_OK);
  assert_int_equal(out.inputs[0].dtype, BERTH_DT_FP16);
  assert_memory_equal(out.inputs[0].data, hv, 6);
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);
}

/* ---- decoding: typed contents -------------------------------------- */

static berth_infer_request typed_ok(In *in) {
  In *ins[] = {in};
  Req r = request(ins, 1);
  berth_grpc_target t;
  berth_infer_request out;
  berth_errmsg err;
  int rc = decode_req(&r, NULL, &t, &out, &err);
  if (rc != BERTH_OK)
    fail_msg("decode failed: %s", err.msg);
  berth_grpc_target_clear(&t);
  return out;
}

static int typed_rc(In *in, berth_errmsg *err) {
  In *ins[] = {in};
  Req r = request(ins, 1);
  berth_grpc_target t;
  berth_infer_request out;
  return decode_req(&r, NULL, &t, &out, err);
}

static void test_decode_typed(void **state) {
  (void)state;
  int64_t s3[] = {3};
  berth_errmsg err;
  Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
  In in = input("v", "INT8", s3, 1);
  in.contents = &c;

  int32_t i8[] = {-128, 127, 5};
  c.n_int_contents = 3;
  c.int_contents = i8;
  berth_infer_request out = typed_ok(&in);
  assert_int_equal(out.inputs[0].nbytes, 3);
  assert_int_equal((int8_t)out.inputs[0].data[0], -128);
  assert_int_equal((int8_t)out.inputs[0].data[1], 127);
  berth_infer_request_clear(&out);
  i8[0] = -129;
  assert_int_equal(typed_rc(&in, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "out of range"));

  in.datatype = "INT16";
  i8[0] = -32768;
  out = typed_ok(&in);
  int16_t w;
  memcpy(&w, out.inputs[0].data, 2);
  assert_int_equal(w, -32768);
  berth_infer_request_clear(&out);

  in.datatype = "INT32";
  i8[0] = INT32_MIN;
  out = typed_ok(&in);
  assert_int_equal(out.inputs[0].nbytes, 12);
  assert_memory_equal(out.inputs[0].data, i8, 12);
  berth_infer_request_clear(&out);

  /* INT32 data in the wrong member */
  c.n_int_contents = 0;
  uint32_t u[] = {1, 65535, 3};
  c.n_uint_contents = 3;
  c.uint_contents = u;
  assert_int_equal(typed_rc(&in, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "int_contents"));

  in.datatype = "UINT16";
  out = typed_ok(&in);
  uint16_t uw;
  memcpy(&uw, out.inputs[0].data + 2, 2);
  assert_int_equal(uw, 65535);
  berth_infer_request_clear(&out);
  u[1] = 65536;
  assert_int_equal(typed_rc(&in, &err), BERTH_E_INVALID);
  in.datatype = "UINT32";
  out = typed_ok(&in);
  assert_memory_equal(out.inputs[0].data, u, 12);
  berth_infer_request_clear(&out);
  in.datatype = "UINT8";
  assert_int_equal(typed_rc(&in, &err), BERTH_E_INVALID);
  c.n_uint_contents = 0;

  in.datatype = "BOOL";
  protobuf_c_boolean bo[] = {1, 0, 1};
  c.n_bool_contents = 3;
  c.bool_contents = bo;
  out = typed_ok(&in);
  assert_memory_equal(out.inputs[0].data, "\1\0\1", 3);
  berth_infer_request_clear(&out);
  c.n_bool_contents = 0;

  in.datatype = "INT64";
  int64_t l[] = {INT64_MIN, 0, INT64_MAX};
  c.n_int64_contents = 3;
  c.int64_contents = l;
  out = typed_ok(&in);
  assert_memory_equal(out.inputs[0].data, l, 24);
  berth_infer_request_clear(&out);
  c.n_int64_contents = 0;

  in.datatype = "UINT64";
  uint64_t ul[] = {UINT64_MAX, 0, 1};
  c.n_uint64_contents = 3;
  c.uint64_contents = ul;
  out = typed_ok(&in);
  assert_memory_equal(out.inputs[0].data, ul, 24);
  berth_infer_request_clear(&out);
  c.n_uint64_contents = 0;

  in.datatype = "FP32";
  float fl[] = {0.5f, -1.0f, 3.0f};
  c.n_fp32_contents = 3;
  c.fp32_contents = fl;
  out = typed_ok(&in);
  assert_memory_equal(out.inputs[0].data, fl, 12);
  berth_infer_request_clear(&out);
  c.n_fp32_contents = 0;

  in.datatype = "FP64";
  double d[] = {0.1, -2.5, 1e300};
  c.n_fp64_contents = 3;
  c.fp64_contents = d;
  out = typed_ok(&in);
  assert_memory_equal(out.inputs[0].data, d, 24);
  berth_infer_request_clear(&out);
  /* element count */
  c.n_fp64_contents = 2;
  assert_int_equal(typed_rc(&in, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "needs 3"));
  c.n_fp64_contents = 0;
  assert_int_equal(typed_rc(&in, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "no data"));

  in.datatype = "BYTES";
  ProtobufCBinaryData bs[3] = {
      {2, (uint8_t *)"hi"}, {0, NULL}, {3, (uint8_t *)"\xe2\x9c\x93"}};
  c.n_bytes_contents = 3;
  c.bytes_contents = bs;
  out = typed_ok(&in);
  assert_int_equal(out.inputs[0].nbytes, 4 + 2 + 4 + 4 + 3);
  assert_memory_equal(out.inputs[0].data,
                      "\2\0\0\0hi\0\0\0\0\3\0\0\0\xe2\x9c\x93", 17);
  berth_infer_request_clear(&out);
  c.n_bytes_contents = 0;

  in.datatype = "FP16";
  assert_int_equal(typed_rc(&in, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "raw_input_contents"));

  /* empty tensors need no data */
  int64_t s0[] = {0, 4};
  In e = input("e", "FP16", s0, 2);
  out = typed_ok(&e);
  assert_int_equal(out.inputs[0].nbytes, 0);
  assert_non_null(out.inputs[0].data);
  berth_infer_request_clear(&out);
}

static void test_decode_errors(void **state) {
  (void)state;
  berth_grpc_target t;
  berth_infer_request out;
  berth_errmsg err;
  /* not protobuf: a field with wire type 7 */
  const uint8_t junk[] = {0x0f, 0x01, 0x02};
  assert_int_equal(
      berth_grpc_decode_infer_request(junk, sizeof junk, NULL, &t, &out, &err),
      BERTH_E_PARSE);
  /* truncated length-delimited field */
  const uint8_t cut[] = {0x0a, 0x05, 'm'};
  assert_int_equal(
      berth_grpc_decode_infer_request(cut, sizeof cut, NULL, &t, &out, &err),
      BERTH_E_PARSE);
  /* the empty message has no model */
  assert_int_equal(berth_grpc_decode_infer_request((const uint8_t *)"", 0, NULL,
                                                   &t, &out, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "model_name"));

  int64_t neg[] = {2, -1}, many[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  In a = input("x", "FP32", neg, 2);
  In *ins[] = {&a};
  Req r = request(ins, 1);
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "negative"));
  a.shape = many;
  a.n_shape = 9;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "dimensions"));
  a.n_shape = 1;
  a.datatype = "FLOAT";
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "unknown datatype"));
  a.datatype = "FP32";
  a.name = "";
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  a.name = "x";
  /* the same input twice */
  int64_t s1[] = {1};
  float one = 1.0f;
  Inference__InferTensorContents c = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
  c.n_fp32_contents = 1;
  c.fp32_contents = &one;
  a.shape = s1;
  a.contents = &c;
  In *twice[] = {&a, &a};
  Req r2 = request(twice, 2);
  assert_int_equal(decode_req(&r2, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "twice"));
  /* too many inputs */
  berth_grpc_limits lim = {.max_inputs = 1};
  assert_int_equal(decode_req(&r2, &lim, &t, &out, &err), BERTH_E_TOO_LARGE);

  /* unpacking memory: many tiny inputs cost more than the budget */
  size_t n = 2000;
  uint8_t *many_in = malloc(n * 2 + 3);
  assert_non_null(many_in);
  many_in[0] = 0x0a;
  many_in[1] = 1;
  many_in[2] = 'm';
  for (size_t i = 0; i < n; i++) {
    many_in[3 + 2 * i] = 0x2a; /* field 5, length-delimited */
    many_in[4 + 2 * i] = 0;
  }
  berth_grpc_limits tight = {.max_inputs = 100000, .max_decode_bytes = 4096};
  assert_int_equal(berth_grpc_decode_infer_request(many_in, n * 2 + 3, &tight,
                                                   &t, &out, &err),
                   BERTH_E_TOO_LARGE);
  assert_non_null(strstr(err.msg, "memory"));
  free(many_in);
}

/* ---- parameters and outputs ---------------------------------------- */

static void test_parameters_and_outputs(void **state) {
  (void)state;
  Inference__InferParameter pb = INFERENCE__INFER_PARAMETER__INIT, pi = pb,
                            ps = pb, pd = pb, pu = pb, pn = pb;
  pb.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
  pb.bool_param = 1;
  pi.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
  pi.int64_param = -7;
  ps.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
  ps.string_param = "blue";
  pd.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM;
  pd.double_param = 0.5;
  pu.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM;
  pu.uint64_param = UINT64_MAX;
  typedef Inference__ModelInferRequest__ParametersEntry E;
  E e[6] = {INFERENCE__MODEL_INFER_REQUEST__PARAMETERS_ENTRY__INIT};
  const char *keys[6] = {"b", "i", "s", "d", "u", "n"};
  Inference__InferParameter *vals[6] = {&pb, &pi, &ps, &pd, &pu, &pn};
  E *ep[6];
  for (int i = 0; i < 6; i++) {
    inference__model_infer_request__parameters_entry__init(&e[i]);
    e[i].key = (char *)keys[i];
    e[i].value = vals[i];
    ep[i] = &e[i];
  }
  typedef Inference__ModelInferRequest__InferRequestedOutputTensor O;
  O o1 = INFERENCE__MODEL_INFER_REQUEST__INFER_REQUESTED_OUTPUT_TENSOR__INIT,
    o2 = o1;
  o1.name = "second";
  o2.name = "first";
  O *os[] = {&o1, &o2};
  Req r = request(NULL, 0);
  r.n_parameters = 6;
  r.parameters = ep;
  r.n_outputs = 2;
  r.outputs = os;
  berth_grpc_target t;
  berth_infer_request out;
  berth_errmsg err;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_OK);
  assert_true(json_is_true(json_object_get(out.parameters, "b")));
  assert_int_equal(json_integer_value(json_object_get(out.parameters, "i")),
                   -7);
  assert_string_equal(json_string_value(json_object_get(out.parameters, "s")),
                      "blue");
  assert_true(json_real_value(json_object_get(out.parameters, "d")) == 0.5);
  assert_true(json_is_real(json_object_get(out.parameters, "u")));
  assert_true(json_is_null(json_object_get(out.parameters, "n")));
  assert_int_equal(out.n_outputs, 2);
  assert_string_equal(out.outputs[0].name, "second");
  assert_string_equal(out.outputs[1].name, "first");
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);

  ps.string_param = "bad \xff utf-8";
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "UTF-8"));
  ps.string_param = "blue";
  o2.name = "second";
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "twice"));
}

/* ---- encoding ------------------------------------------------------- */

static void test_encode_response(void **state) {
  (void)state;
  float y[2] = {1.0f, 2.0f};
  uint8_t txt[] = {1, 0, 0, 0, 'z'};
  berth_tensor outs[2] = {{.name = "y",
                           .dtype = BERTH_DT_FP32,
                           .ndim = 1,
                           .shape = {2},
                           .data = (uint8_t *)y,
                           .nbytes = 8,
                           .data_borrowed = true},
                          {.name = "label",
                           .dtype = BERTH_DT_BYTES,
                           .ndim = 1,
                           .shape = {1},
                           .data = txt,
                           .nbytes = 5,
                           .data_borrowed = true}};
  berth_infer_response resp = {outs, 2,
                               json_pack("{s:i, s:s, s:b, s:f, s:[i]}", "n", 3,
                                         "s", "x", "b", 1, "f", 0.25, "list",
                                         1)};
  berth_output_request want[1] = {{"label", NULL}};
  berth_infer_request req = {.id = "abc", .outputs = want, .n_outputs = 1};
  berth_grpc_answer a = {"m", "2", &req, &resp, false};
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  berth_errmsg err;
  assert_int_equal(berth_grpc_encode_infer_response(&a, &out, &err), BERTH_OK);
  assert_int_equal(out.data[0], 0);
  size_t len = (size_t)(uint8_t)out.data[1] << 24 |
               (size_t)(uint8_t)out.data[2] << 16 |
               (size_t)(uint8_t)out.data[3] << 8 | (uint8_t)out.data[4];
  assert_int_equal(len + 5, out.len);
  Inference__ModelInferResponse *m = inference__model_infer_response__unpack(
      NULL, len, (uint8_t *)out.data + 5);
  assert_non_null(m);
  assert_string_equal(m->model_name, "m");
  assert_string_equal(m->model_version, "2");
  assert_string_equal(m->id, "abc");
  assert_int_equal(m->n_outputs, 1);
  assert_string_equal(m->outputs[0]->name, "label");
  assert_string_equal(m->outputs[0]->datatype, "BYTES");
  assert_int_equal(m->outputs[0]->n_shape, 1);
  assert_int_equal(m->n_raw_output_contents, 1);
  assert_memory_equal(m->raw_output_contents[0].data, txt, 5);
  assert_int_equal(m->n_parameters, 5);
  for (size_t i = 0; i < m->n_parameters; i++) {
    Inference__InferParameter *p = m->parameters[i]->value;
    const char *k = m->parameters[i]->key;
    if (strcmp(k, "n") == 0)
      assert_int_equal(p->int64_param, 3);
    else if (strcmp(k, "s") == 0)
      assert_string_equal(p->string_param, "x");
    else if (strcmp(k, "b") == 0)
      assert_true(p->bool_param);
    else if (strcmp(k, "f") == 0)
      assert_true(p->double_param == 0.25);
    else
      assert_string_equal(p->string_param, "[1]");
  }
  inference__model_infer_response__free_unpacked(m, NULL);

  /* all outputs, in the model's order, wrapped for a stream */
  berth_buf_reset(&out);
  req.n_outputs = 0;
  a.stream = true;
  assert_int_equal(berth_grpc_encode_infer_response(&a, &out, &err), BERTH_OK);
  Inference__ModelStreamInferResponse *s =
      inference__model_stream_infer_response__unpack(NULL, out.len - 5,
                                                     (uint8_t *)out.data + 5);
  assert_non_null(s);
  assert_string_equal(s->error_message, "");
  assert_non_null(s->infer_response);
  assert_int_equal(s->infer_response->n_outputs, 2);
  assert_string_equal(s->infer_response->outputs[0]->name, "y");
  assert_memory_equal(s->infer_response->raw_output_contents[0].data, y, 8);
  inference__model_stream_infer_response__free_unpacked(s, NULL);

  /* a requested output the model did not produce */
  berth_buf_reset(&out);
  want[0].name = "nope";
  req.n_outputs = 1;
  assert_int_equal(berth_grpc_encode_infer_response(&a, &out, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "nope"));

  /* the buffer's limit */
  berth_buf small;
  berth_buf_init(&small, 16);
  req.n_outputs = 0;
  assert_int_equal(berth_grpc_encode_infer_response(&a, &small, &err),
                   BERTH_E_TOO_LARGE);
  berth_buf_free(&small);

  /* an error on a stream, its message made valid UTF-8 */
  berth_buf_reset(&out);
  assert_int_equal(berth_grpc_encode_stream_error("bad \xc3 input", &out),
                   BERTH_OK);
  s = inference__model_stream_infer_response__unpack(NULL, out.len - 5,
                                                     (uint8_t *)out.data + 5);
  assert_non_null(s);
  assert_string_equal(s->error_message, "bad ? input");
  assert_null(s->infer_response);
  inference__model_stream_infer_response__free_unpacked(s, NULL);
  berth_buf_free(&out);
  json_decref(resp.parameters);
}

/* ---- headers --------------------------------------------------------- */

static void test_percent_and_timeout(void **state) {
  (void)state;
  char out[64];
  berth_grpc_percent_encode("model 'x': 100% \xe2\x9c\x93\n", out, sizeof out);
  assert_string_equal(out, "model 'x': 100%25 %E2%9C%93%0A");
  berth_grpc_percent_encode("abc\xe2\x9c\x93", out, 8); /* no half characters */
  assert_string_equal(out, "abc");
  berth_grpc_percent_encode("a\xffz", out, sizeof out);
  assert_string_equal(out, "a?z");

  uint64_t ns = 0;
  assert_true(berth_grpc_parse_timeout("100m", 4, &ns));
  assert_int_equal(ns, 100000000);
  assert_true(berth_grpc_parse_timeout("2S", 2, &ns));
  assert_int_equal(ns, 2000000000);
  assert_true(berth_grpc_parse_timeout("5u", 2, &ns));
  assert_int_equal(ns, 5000);
  assert_true(berth_grpc_parse_timeout("7n", 2, &ns));
  assert_int_equal(ns, 7);
  assert_true(berth_grpc_parse_timeout("1M", 2, &ns));
  assert_int_equal(ns, 60000000000);
  assert_true(berth_grpc_parse_timeout("99999999H", 9, &ns));
  assert_true(ns == UINT64_MAX);
  assert_false(berth_grpc_parse_timeout("123456789S", 10, &ns));
  assert_false(berth_grpc_parse_timeout("S", 1, &ns));
  assert_false(berth_grpc_parse_timeout("10x", 3, &ns));
  assert_false(berth_grpc_parse_timeout("1-S", 3, &ns));
}

/* Inputs naming a shared-memory region: no contents, no raw entry (the
 * raw entries are those of the other inputs, in order); the region is
 * recorded for the frontend. */
static void test_shared_memory_inputs(void **state) {
  (void)state;
  typedef Inference__ModelInferRequest__InferInputTensor__ParametersEntry PE;
  Inference__InferParameter pr = INFERENCE__INFER_PARAMETER__INIT, ps = pr,
                            po = pr;
  pr.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
  pr.string_param = "in";
  ps.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
  ps.int64_param = 8;
  po.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
  po.int64_param = 4;
  PE e[3];
  PE *ep[3];
  const char *keys[3] = {"shared_memory_region", "shared_memory_byte_size",
                         "shared_memory_offset"};
  Inference__InferParameter *vals[3] = {&pr, &ps, &po};
  for (int i = 0; i < 3; i++) {
    inference__model_infer_request__infer_input_tensor__parameters_entry__init(
        &e[i]);
    e[i].key = (char *)keys[i];
    e[i].value = vals[i];
    ep[i] = &e[i];
  }
  int64_t s2[] = {2};
  In a = input("a", "INT32", s2, 1), b = input("b", "INT32", s2, 1);
  a.n_parameters = 3;
  a.parameters = ep;
  In *ins[] = {&a, &b};
  Req r = request(ins, 2);
  int32_t v[2] = {5, 6};
  ProtobufCBinaryData raw[2] = {{sizeof v, (uint8_t *)v},
                                {sizeof v, (uint8_t *)v}};
  r.n_raw_input_contents = 1;
  r.raw_input_contents = raw;
  berth_grpc_target t;
  berth_infer_request out;
  berth_errmsg err;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_OK);
  assert_non_null(out.input_shm);
  assert_string_equal(out.input_shm[0].region, "in");
  assert_int_equal(out.input_shm[0].byte_size, 8);
  assert_int_equal(out.input_shm[0].offset, 4);
  assert_null(out.input_shm[1].region);
  assert_null(out.inputs[0].data);
  assert_int_equal(out.inputs[1].nbytes, 8);
  assert_memory_equal(out.inputs[1].data, v, 8);
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);
  /* one raw entry per input, shared-memory ones included: refused */
  r.n_raw_input_contents = 2;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "not in shared memory"));
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);
  /* a byte size that is not a number */
  ps.parameter_choice_case =
      INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
  ps.string_param = "8";
  r.n_raw_input_contents = 1;
  assert_int_equal(decode_req(&r, NULL, &t, &out, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "shared_memory_byte_size"));
  berth_infer_request_clear(&out);
  berth_grpc_target_clear(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reader_pieces),
      cmocka_unit_test(test_reader_errors),
      cmocka_unit_test(test_reader_compressed),
      cmocka_unit_test(test_decode_raw),
      cmocka_unit_test(test_shared_memory_inputs),
      cmocka_unit_test(test_decode_typed),
      cmocka_unit_test(test_decode_errors),
      cmocka_unit_test(test_parameters_and_outputs),
      cmocka_unit_test(test_encode_response),
      cmocka_unit_test(test_percent_and_timeout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
