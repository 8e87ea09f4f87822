/* Unit tests for worker_proto.c: frame headers and tensor-set payloads,
 * round trips, every malformation the spec forbids, and truncation at every
 * byte offset (run under ASan, a read past the end would be caught). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker_proto.h"

static void test_header_round_trip(void **state) {
  (void)state;
  berth_wp_header h = {.length = 0x01020304,
                       .type = BERTH_WP_RESULT,
                       .flags = 0,
                       .id = 0x1122334455667788ULL};
  uint8_t b[BERTH_WP_HEADER_SIZE];
  berth_wp_header_encode(b, &h);
  const uint8_t want[16] = {4,    3,    2,    1,    5,    0,    0,    0,
                            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
  assert_memory_equal(b, want, 16);
  berth_wp_header d;
  berth_errmsg err;
  assert_int_equal(berth_wp_header_decode(b, 0x01020304, &d, &err), BERTH_OK);
  assert_int_equal(d.length, h.length);
  assert_int_equal(d.type, h.type);
  assert_int_equal(d.flags, 0);
  assert_true(d.id == h.id);
  assert_int_equal(berth_wp_header_decode(b, 0x01020303, &d, &err),
                   BERTH_E_TOO_LARGE);
  for (uint16_t t = BERTH_WP_LOAD; t <= BERTH_WP_CANCEL; t++) {
    h.type = t;
    berth_wp_header_encode(b, &h);
    assert_int_equal(berth_wp_header_decode(b, UINT32_MAX, &d, &err), BERTH_OK);
  }
}

static void test_header_rejects(void **state) {
  (void)state;
  berth_wp_header h = {.length = 0, .type = 0, .flags = 0, .id = 0};
  uint8_t b[BERTH_WP_HEADER_SIZE];
  berth_wp_header d = {.length = 77};
  berth_errmsg err;
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_E_PARSE);
  assert_int_equal(d.length, 77); /* untouched on failure */
  h.type = BERTH_WP_CANCEL + 1;   /* the first unknown type */
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_E_PARSE);
  h.type = 0xFFFF;
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_E_PARSE);
  h.type = BERTH_WP_INFER;
  h.flags = 1;
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_E_PARSE);
  assert_non_null(strstr(err.msg, "flags"));
  /* version 3: RESULT and ERROR may say the model kept its inputs */
  h.type = BERTH_WP_RESULT;
  h.flags = BERTH_WP_FLAG_KEPT_INPUTS;
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_OK);
  assert_int_equal(d.flags, BERTH_WP_FLAG_KEPT_INPUTS);
  h.type = BERTH_WP_ERROR;
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_OK);
  h.flags = 2;
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_E_PARSE);
  h.type = BERTH_WP_READY;
  h.flags = BERTH_WP_FLAG_KEPT_INPUTS;
  berth_wp_header_encode(b, &h);
  assert_int_equal(berth_wp_header_decode(b, 100, &d, &err), BERTH_E_PARSE);
}

/* One FP32 [2] tensor "a" in shared memory at off (a hand-made record). */
static size_t shm_payload(uint8_t *buf, uint64_t off, uint64_t data_len,
                          uint8_t dtype) {
  berth_tensor t = {.name = "a", .dtype = dtype, .ndim = 1, .shape = {2}};
  t.nbytes = (size_t)data_len;
  memset(buf, 0, 8);
  buf[0] = 1; /* one tensor, no parameters */
  size_t n = 8 + berth_wp_tensor_head_encode_at(&t, BERTH_WP_LOC_SHM, buf + 8);
  for (int i = 0; i < 8; i++)
    buf[n + i] = (uint8_t)(off >> (8 * i));
  return n + 8;
}

static void test_shared_memory_records(void **state) {
  (void)state;
  _Alignas(8) uint8_t region[256];
  for (int i = 0; i < 256; i++)
    region[i] = (uint8_t)i;
  uint8_t buf[64];
  berth_tensor *ts;
  size_t n, plen;
  const char *params;
  berth_errmsg err;
  berth_wp_region g = {region, 64, 256};
  size_t len = shm_payload(buf, 128, 8, BERTH_DT_FP32);
  assert_int_equal(berth_wp_tensors_decode_region(buf, len, &g, &ts, &n,
                                                  &params, &plen, &err),
                   BERTH_OK);
  assert_ptr_equal(ts[0].data, region + 128); /* borrowed, not copied */
  assert_true(ts[0].data_borrowed);
  berth_tensors_free(ts, n);
  /* without a region the location is unknown */
  assert_int_equal(
      berth_wp_tensors_decode(buf, len, &ts, &n, &params, &plen, &err),
      BERTH_E_PARSE);
  assert_non_null(strstr(err.msg, "location"));
  /* offsets outside lo..hi, unaligned, wrapping, or data past hi */
  const uint64_t bad[] = {
      0, 56, 132, 252, 256, UINT64_MAX - 3, UINT64_MAX & ~(uint64_t)7};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    len = shm_payload(buf, bad[i], 8, BERTH_DT_FP32);
    assert_int_equal(berth_wp_tensors_decode_region(buf, len, &g, &ts, &n,
                                                    &params, &plen, &err),
                     BERTH_E_PARSE);
  }
  /* the offset itself cut off */
  len = shm_payload(buf, 128, 8, BERTH_DT_FP32);
  assert_int_equal(berth_wp_tensors_decode_region(buf, len - 1, &g, &ts, &n,
                                                  &params, &plen, &err),
                   BERTH_E_PARSE);
  /* data_len must still match the shape */
  len = shm_payload(buf, 128, 12, BERTH_DT_FP32);
  assert_int_equal(berth_wp_tensors_decode_region(buf, len, &g, &ts, &n,
                                                  &params, &plen, &err),
                   BERTH_E_PARSE);
  /* BYTES is copied out of the region (the worker could change its length
   * prefixes after the check); two elements "\x01" and "" */
  uint8_t *at = region + 192;
  memset(at, 0, 16);
  at[0] = 1;
  at[4] = 0x7F;
  len = shm_payload(buf, 192, 9, BERTH_DT_BYTES);
  assert_int_equal(berth_wp_tensors_decode_region(buf, len, &g, &ts, &n,
                                                  &params, &plen, &err),
                   BERTH_OK);
  assert_false(ts[0].data_borrowed);
  assert_ptr_not_equal(ts[0].data, at);
  assert_memory_equal(ts[0].data, at, 9);
  berth_tensors_free(ts, n);
  at[0] = 200; /* prefixes that overrun the data: refused */
  assert_int_equal(berth_wp_tensors_decode_region(buf, len, &g, &ts, &n,
                                                  &params, &plen, &err),
                   BERTH_E_PARSE);
}

/* Four tensors covering fixed, 0-dim, empty and BYTES data. */
typedef struct fixture {
  float f[6];
  int64_t i;
  uint8_t bytes[10]; /* "hi", "" */
  berth_tensor ts[4];
} fixture;

static void fixture_init(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  for (int k = 0; k < 6; k++)
    fx->f[k] = (float)k * 0.5f;
  fx->i = -42;
  const uint8_t b[10] = {2, 0, 0, 0, 'h', 'i', 0, 0, 0, 0};
  memcpy(fx->bytes, b, sizeof b);
  fx->ts[0] = (berth_tensor){.name = "input_0",
                             .dtype = BERTH_DT_FP32,
                             .ndim = 2,
                             .shape = {2, 3},
                             .data = (uint8_t *)fx->f,
                             .nbytes = 24,
                             .data_borrowed = true};
  fx->ts[1] = (berth_tensor){.name = "scalar",
                             .dtype = BERTH_DT_INT64,
                             .ndim = 0,
                             .data = (uint8_t *)&fx->i,
                             .nbytes = 8,
                             .data_borrowed = true};
  fx->ts[2] = (berth_tensor){.name = "empty",
                             .dtype = BERTH_DT_UINT8,
                             .ndim = 3,
                             .shape = {4, 0, 7},
                             .data_borrowed = true};
  fx->ts[3] = (berth_tensor){.name = "t\xc3\xa9xt",
                             .dtype = BERTH_DT_BYTES,
                             .ndim = 1,
                             .shape = {2},
                             .data = fx->bytes,
                             .nbytes = 10,
                             .data_borrowed = true};
}

/* Encodes ts into a malloc'd buffer of exactly the payload size. */
static uint8_t *encode_n(const berth_tensor *ts, size_t n, const char *params,
                         size_t plen, size_t *len) {
  assert_int_equal(berth_wp_tensors_size(ts, n, plen, len), BERTH_OK);
  uint8_t *buf = malloc(*len);
  assert_non_null(buf);
  size_t written = 0;
  assert_int_equal(
      berth_wp_tensors_encode(ts, n, params, plen, buf, *len, &written),
      BERTH_OK);
  assert_int_equal(written, *len);
  return buf;
}

static uint8_t *encode(const berth_tensor *ts, size_t n, const char *params,
                       size_t *len) {
  return encode_n(ts, n, params, params ? strlen(params) : 0, len);
}

static int decode(const uint8_t *buf, size_t len, berth_tensor **ts, size_t *n,
                  berth_errmsg *err) {
  const char *params;
  size_t plen;
  return berth_wp_tensors_decode(buf, len, ts, n, &params, &plen, err);
}

static void test_tensors_round_trip(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  const char *params = "{\"temperature\":0.5}";
  size_t len;
  uint8_t *buf = encode(fx.ts, 4, params, &len);
  assert_int_equal(len % 8, 0);
  berth_tensor *out = NULL;
  size_t n = 0;
  const char *p = NULL;
  size_t plen = 0;
  berth_errmsg err = {{0}};
  assert_int_equal(berth_wp_tensors_decode(buf, len, &out, &n, &p, &plen, &err),
                   BERTH_OK);
  assert_int_equal(n, 4);
  assert_int_equal(plen, strlen(params));
  assert_memory_equal(p, params, plen);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(out[i].name, fx.ts[i].name);
    assert_ptr_not_equal(out[i].name, fx.ts[i].name);
    assert_int_equal(out[i].dtype, fx.ts[i].dtype);
    assert_int_equal(out[i].ndim, fx.ts[i].ndim);
    for (uint32_t d = 0; d < out[i].ndim; d++)
      assert_true(out[i].shape[d] == fx.ts[i].shape[d]);
    assert_int_equal(out[i].nbytes, fx.ts[i].nbytes);
    assert_true(out[i].data_borrowed);
    assert_true(out[i].data >= buf && out[i].data <= buf + len);
    assert_int_equal((size_t)(out[i].data - buf) % 8, 0);
    if (out[i].nbytes)
      assert_memory_equal(out[i].data, fx.ts[i].data, out[i].nbytes);
  }
  berth_tensors_free(out, n);
  free(buf);
}

static void test_empty_set(void **state) {
  (void)state;
  size_t len;
  uint8_t *buf = encode(NULL, 0, NULL, &len);
  assert_int_equal(len, 8);
  berth_tensor *out = (berth_tensor *)1;
  size_t n = 9;
  const char *p = "x";
  size_t plen = 9;
  berth_errmsg err;
  assert_int_equal(berth_wp_tensors_decode(buf, len, &out, &n, &p, &plen, &err),
                   BERTH_OK);
  assert_null(out);
  assert_int_equal(n, 0);
  assert_null(p);
  assert_int_equal(plen, 0);
  free(buf);
}

static void test_encode_rejects(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  size_t size;
  uint8_t buf[512];
  size_t w;
  assert_int_equal(berth_wp_tensors_size(fx.ts, 4, 0, &size), BERTH_OK);
  assert_int_equal(
      berth_wp_tensors_encode(fx.ts, 4, NULL, 0, buf, size - 1, &w),
      BERTH_E_INVALID);
  berth_tensor t = fx.ts[0];
  t.name = "";
  assert_int_not_equal(berth_wp_tensors_size(&t, 1, 0, &size), BERTH_OK);
  t.name = NULL;
  assert_int_not_equal(berth_wp_tensors_size(&t, 1, 0, &size), BERTH_OK);
  char *longname = malloc(65537);
  assert_non_null(longname);
  memset(longname, 'a', 65536);
  longname[65536] = '\0';
  t.name = longname;
  assert_int_not_equal(berth_wp_tensors_size(&t, 1, 0, &size), BERTH_OK);
  longname[65535] = '\0'; /* 65535 bytes is the maximum and fine */
  assert_int_equal(berth_wp_tensors_size(&t, 1, 0, &size), BERTH_OK);
  free(longname);
  t = fx.ts[0];
  t.ndim = 9;
  assert_int_not_equal(berth_wp_tensors_size(&t, 1, 0, &size), BERTH_OK);
  t = fx.ts[0];
  t.nbytes = 20; /* disagrees with the shape */
  assert_int_equal(berth_wp_tensors_encode(&t, 1, NULL, 0, buf, sizeof buf, &w),
                   BERTH_E_INVALID);
  t = fx.ts[0];
  t.nbytes = SIZE_MAX - 3;
  assert_int_equal(berth_wp_tensors_size(&t, 1, 0, &size), BERTH_E_TOO_LARGE);
  assert_int_equal(berth_wp_tensors_size(fx.ts, 1, SIZE_MAX - 2, &size),
                   BERTH_E_TOO_LARGE);
}

/* One FP32 tensor "x" of shape [2] with params "{}":
 *  0 n_tensors  4 params_len  8 "{}"  10 pad  16 dtype  17 ndim
 *  18 name_len  20 reserved  24 shape[0]  32 data_len  40 "x"  41 pad
 *  48 data  56 end */
static uint8_t *one_tensor(size_t *len) {
  static float f[2] = {1.0f, 2.0f};
  berth_tensor t = {.name = "x",
                    .dtype = BERTH_DT_FP32,
                    .ndim = 1,
                    .shape = {2},
                    .data = (uint8_t *)f,
                    .nbytes = 8,
                    .data_borrowed = true};
  uint8_t *buf = encode(&t, 1, "{}", len);
  assert_int_equal(*len, 56);
  return buf;
}

static void expect_reject(uint8_t *buf, size_t len, const char *why) {
  berth_tensor *ts = NULL;
  size_t n = 0;
  berth_errmsg err = {{0}};
  int rc = decode(buf, len, &ts, &n, &err);
  if (rc == BERTH_OK)
    fail_msg("accepted a payload with %s", why);
  assert_int_equal(rc, BERTH_E_PARSE);
  assert_null(ts);
  assert_int_equal(n, 0);
  assert_true(err.msg[0] != '\0');
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void test_malformed(void **state) {
  (void)state;
  size_t len;
  uint8_t *good = one_tensor(&len);
  uint8_t b[64];
  assert_true(len + 8 <= sizeof b);
  berth_tensor *ts;
  size_t n;
  berth_errmsg err;
  assert_int_equal(decode(good, len, &ts, &n, &err), BERTH_OK);
  berth_tensors_free(ts, n);
#define MUTATE(stmt, why)                                                      \
  do {                                                                         \
    memcpy(b, good, len);                                                      \
    stmt;                                                                      \
    expect_reject(b, len, why);                                                \
  } while (0)
  MUTATE(put32(b, 2), "more tensors than present");
  MUTATE(put32(b, 0), "fewer tensors than present");
  MUTATE(put32(b, UINT32_MAX), "a huge tensor count");
  MUTATE(put32(b + 4, 100), "params_len past the end");
  MUTATE(put32(b + 4, UINT32_MAX), "a huge params_len");
  MUTATE(b[12] = 1, "non-zero padding after params");
  MUTATE(b[16] = 0, "datatype 0");
  MUTATE(b[16] = 15, "datatype 15");
  MUTATE(b[16] = BERTH_DT_FP64, "data_len not matching the datatype");
  MUTATE(b[17] = 9, "ndim 9");
  MUTATE(b[17] = 2, "ndim past the record");
  MUTATE(b[17] = 0, "ndim 0 with 2 elements of data");
  MUTATE((b[18] = 0, b[19] = 0), "an empty name");
  MUTATE(b[18] = 2, "name_len into the padding");
  MUTATE(b[18] = 0xff, "name_len past the end");
  MUTATE(b[20] = 1, "non-zero reserved");
  MUTATE(b[23] = 0x80, "non-zero reserved high byte");
  MUTATE(put64(b + 24, (uint64_t)-2), "a negative dimension");
  MUTATE(put64(b + 24, 3), "a shape needing more data");
  MUTATE(put64(b + 24, 1ULL << 62), "a shape overflowing the byte count");
  MUTATE(put64(b + 32, 16), "data_len past the end");
  MUTATE(put64(b + 32, UINT64_MAX), "a huge data_len");
  MUTATE(put64(b + 32, 4), "data_len shorter than the shape");
  MUTATE(b[40] = 0, "a NUL in the name");
  MUTATE(b[40] = 0xff, "a non-UTF-8 name");
  MUTATE(b[40] = 0xc3, "a truncated UTF-8 sequence");
  MUTATE(b[40] = 0x80, "a lone continuation byte");
  MUTATE((b[18] = 4, memcpy(b + 40, "\xf4\x90\x80\x80", 4)),
         "a code point past U+10FFFF");
  MUTATE((b[18] = 3, memcpy(b + 40, "\xed\xa0\x80", 3)), "a surrogate");
  MUTATE((b[18] = 3, memcpy(b + 40, "\xe0\x80\xaf", 3)), "an overlong form");
  memcpy(b, good, len); /* a 4-byte character is a fine name */
  b[18] = 4;
  memcpy(b + 40, "\xf0\x9f\x98\x80", 4);
  assert_int_equal(decode(b, len, &ts, &n, &err), BERTH_OK);
  assert_string_equal(ts[0].name, "\xf0\x9f\x98\x80");
  berth_tensors_free(ts, n);
  MUTATE(b[44] = 1, "non-zero padding after the name");
  memcpy(b, good, len);
  b[len] = 0;
  expect_reject(b, len + 1, "one trailing byte");
  memset(b + len, 0, 8);
  expect_reject(b, len + 8, "trailing padding");
#undef MUTATE
  free(good);
}

static void test_malformed_data(void **state) {
  (void)state;
  berth_tensor *ts;
  size_t n;
  berth_errmsg err;
  /* BOOL of 3 elements: padding after data, values 0/1 only */
  uint8_t bv[3] = {1, 0, 1};
  berth_tensor bt = {.name = "b",
                     .dtype = BERTH_DT_BOOL,
                     .ndim = 1,
                     .shape = {3},
                     .data = bv,
                     .nbytes = 3,
                     .data_borrowed = true};
  size_t len;
  uint8_t *buf = encode(&bt, 1, NULL, &len);
  /* 0 hdr 8: rec 8 shape 8 len 8 name "b" pad -> data at 40, pad at 43 */
  assert_int_equal(len, 48);
  buf[45] = 7;
  expect_reject(buf, len, "non-zero padding after data");
  buf[45] = 0;
  buf[41] = 2;
  expect_reject(buf, len, "a BOOL of 2");
  free(buf);
  /* BYTES whose prefixes do not match the shape or the length */
  uint8_t sd[9] = {1, 0, 0, 0, 'a', 0, 0, 0, 0};
  berth_tensor st = {.name = "s",
                     .dtype = BERTH_DT_BYTES,
                     .ndim = 1,
                     .shape = {2},
                     .data = sd,
                     .nbytes = 9,
                     .data_borrowed = true};
  buf = encode(&st, 1, NULL, &len);
  assert_int_equal(decode(buf, len, &ts, &n, &err), BERTH_OK);
  berth_tensors_free(ts, n);
  buf[40 + 5] = 9; /* second length now runs past data_len */
  expect_reject(buf, len, "a BYTES length past data_len");
  buf[40 + 5] = 0;
  put64(buf + 16, 3);
  expect_reject(buf, len, "BYTES count below the shape");
  free(buf);
}

static void test_duplicate_names(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  fx.ts[2].name = "scalar";
  size_t len;
  uint8_t *buf = encode(fx.ts, 4, NULL, &len);
  expect_reject(buf, len, "two tensors named alike");
  free(buf);
}

/* Every proper prefix of a valid payload is rejected, read from a buffer
 * of exactly that size. */
static void test_truncation(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  size_t len;
  uint8_t *full = encode(fx.ts, 4, "{\"a\":1}", &len);
  for (size_t cut = 0; cut < len; cut++) {
    uint8_t *b = malloc(cut ? cut : 1);
    assert_non_null(b);
    memcpy(b, full, cut);
    expect_reject(b, cut, "a truncated payload");
    free(b);
  }
  expect_reject(NULL, 0, "no bytes");
  free(full);
}

/* Flipping any single byte never crashes; if accepted, the result still
 * re-encodes to the same bytes (the format has one encoding). */
static void test_byte_flips(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  size_t len;
  uint8_t *full = encode(fx.ts, 4, "{}", &len);
  uint8_t *b = malloc(len);
  assert_non_null(b);
  for (size_t i = 0; i < len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      memcpy(b, full, len);
      b[i] ^= (uint8_t)(1u << bit);
      berth_tensor *ts;
      size_t n;
      const char *p;
      size_t plen;
      berth_errmsg err;
      if (berth_wp_tensors_decode(b, len, &ts, &n, &p, &plen, &err) != BERTH_OK)
        continue;
      size_t len2;
      uint8_t *again = encode_n(ts, n, p, plen, &len2);
      assert_int_equal(len2, len);
      assert_memory_equal(again, b, len);
      free(again);
      berth_tensors_free(ts, n);
    }
  }
  free(b);
  free(full);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_round_trip),
      cmocka_unit_test(test_header_rejects),
      cmocka_unit_test(test_shared_memory_records),
      cmocka_unit_test(test_tensors_round_trip),
      cmocka_unit_test(test_empty_set),
      cmocka_unit_test(test_encode_rejects),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_malformed_data),
      cmocka_unit_test(test_duplicate_names),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_byte_flips),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
