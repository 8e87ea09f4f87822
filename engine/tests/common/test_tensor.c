/* Unit tests for tensor.c: datatype table, element counts, consistency
 * checks and release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "berth/tensor.h"

static void test_dtype_names(void **state) {
  (void)state;
  for (int i = 1; i < BERTH_DT_COUNT; i++) {
    const char *n = berth_dtype_name((berth_dtype)i);
    assert_int_equal(berth_dtype_from_name(n, strlen(n)), i);
  }
  assert_string_equal(berth_dtype_name(BERTH_DT_FP32), "FP32");
  assert_string_equal(berth_dtype_name(BERTH_DT_BF16), "BF16");
  assert_string_equal(berth_dtype_name(BERTH_DT_INVALID), "INVALID");
  assert_string_equal(berth_dtype_name((berth_dtype)99), "INVALID");
  assert_string_equal(berth_dtype_name((berth_dtype)-1), "INVALID");
  assert_int_equal(berth_dtype_from_name("FP3", 3), BERTH_DT_INVALID);
  assert_int_equal(berth_dtype_from_name("FP32X", 5), BERTH_DT_INVALID);
  assert_int_equal(berth_dtype_from_name("fp32", 4), BERTH_DT_INVALID);
  assert_int_equal(berth_dtype_from_name("FP32", 4), BERTH_DT_FP32);
  assert_int_equal(berth_dtype_from_name("FP32junk", 4), BERTH_DT_FP32);
  assert_int_equal(berth_dtype_from_name("INVALID", 7), BERTH_DT_INVALID);
  assert_int_equal(berth_dtype_from_name(NULL, 0), BERTH_DT_INVALID);
  assert_int_equal(berth_dtype_from_name("", 0), BERTH_DT_INVALID);
}

static void test_dtype_sizes(void **state) {
  (void)state;
  assert_int_equal(berth_dtype_size(BERTH_DT_BOOL), 1);
  assert_int_equal(berth_dtype_size(BERTH_DT_UINT8), 1);
  assert_int_equal(berth_dtype_size(BERTH_DT_UINT16), 2);
  assert_int_equal(berth_dtype_size(BERTH_DT_UINT32), 4);
  assert_int_equal(berth_dtype_size(BERTH_DT_UINT64), 8);
  assert_int_equal(berth_dtype_size(BERTH_DT_INT8), 1);
  assert_int_equal(berth_dtype_size(BERTH_DT_INT16), 2);
  assert_int_equal(berth_dtype_size(BERTH_DT_INT32), 4);
  assert_int_equal(berth_dtype_size(BERTH_DT_INT64), 8);
  assert_int_equal(berth_dtype_size(BERTH_DT_FP16), 2);
  assert_int_equal(berth_dtype_size(BERTH_DT_BF16), 2);
  assert_int_equal(berth_dtype_size(BERTH_DT_FP32), 4);
  assert_int_equal(berth_dtype_size(BERTH_DT_FP64), 8);
  assert_int_equal(berth_dtype_size(BERTH_DT_BYTES), 0);
  assert_int_equal(berth_dtype_size(BERTH_DT_INVALID), 0);
  assert_int_equal(berth_dtype_size((berth_dtype)15), 0);
}

static void test_numel(void **state) {
  (void)state;
  uint64_t n = 99;
  assert_int_equal(berth_shape_numel(NULL, 0, &n), BERTH_OK);
  assert_int_equal(n, 1);
  int64_t s[BERTH_MAX_DIMS + 1] = {2, 3, 4};
  assert_int_equal(berth_shape_numel(s, 3, &n), BERTH_OK);
  assert_int_equal(n, 24);
  s[1] = 0;
  assert_int_equal(berth_shape_numel(s, 3, &n), BERTH_OK);
  assert_int_equal(n, 0);
  s[1] = -1;
  assert_int_equal(berth_shape_numel(s, 3, &n), BERTH_E_INVALID);
  /* overflow, and zero after huge dims (no overflow then) */
  int64_t big[3] = {INT64_MAX, INT64_MAX, 2};
  assert_int_equal(berth_shape_numel(big, 3, &n), BERTH_E_INVALID);
  big[2] = 0;
  assert_int_equal(berth_shape_numel(big, 3, &n), BERTH_OK);
  assert_int_equal(n, 0);
  int64_t edge[2] = {INT64_MAX, 2}; /* 2^64 - 2 fits */
  assert_int_equal(berth_shape_numel(edge, 2, &n), BERTH_OK);
  assert_true(n == (uint64_t)INT64_MAX * 2);
  int64_t over[3] = {INT64_MAX, 2, 2};
  assert_int_equal(berth_shape_numel(over, 3, &n), BERTH_E_INVALID);
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_int_equal(berth_shape_numel(nine, 9, &n), BERTH_E_INVALID);
  assert_int_equal(berth_shape_numel(nine, 8, &n), BERTH_OK);
  assert_int_equal(berth_shape_numel(NULL, 2, &n), BERTH_E_INVALID);
}

static void test_extent(void **state) {
  (void)state;
  uint64_t n = 7;
  int64_t absurd[2] = {INT64_MAX, 0};
  assert_int_equal(berth_shape_extent(absurd, 2, UINT64_MAX, &n), BERTH_OK);
  assert_true(n == (uint64_t)INT64_MAX);
  n = 7;
  assert_int_equal(berth_shape_extent(absurd, 2, 1u << 26, &n),
                   BERTH_E_INVALID);
  assert_int_equal(n, 7);                      /* untouched on failure */
  int64_t wrap[3] = {INT64_MAX, INT64_MAX, 0}; /* product wraps uint64 */
  assert_int_equal(berth_shape_extent(wrap, 3, UINT64_MAX, &n),
                   BERTH_E_INVALID);
  int64_t wrap2[4] = {1ll << 32, 0, 1ll << 32, 0}; /* exactly 2^64 */
  assert_int_equal(berth_shape_extent(wrap2, 4, UINT64_MAX, &n),
                   BERTH_E_INVALID);
  int64_t rows0[2] = {0, 4};
  assert_int_equal(berth_shape_extent(rows0, 2, 4, &n), BERTH_OK);
  assert_int_equal(n, 4);
  assert_int_equal(berth_shape_extent(rows0, 2, 3, &n), BERTH_E_INVALID);
  int64_t neg[2] = {-1, 0};
  assert_int_equal(berth_shape_extent(neg, 2, UINT64_MAX, &n), BERTH_E_INVALID);
  assert_int_equal(berth_shape_extent(NULL, 0, 1, &n), BERTH_OK);
  assert_int_equal(n, 1); /* a scalar */
  assert_int_equal(berth_shape_extent(NULL, 1, 1, &n), BERTH_E_INVALID);
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  assert_int_equal(berth_shape_extent(nine, 9, 10, &n), BERTH_E_INVALID);
}

static void test_rows_add(void **state) {
  (void)state;
  int64_t acc = 0;
  assert_int_equal(berth_rows_add(&acc, 5), BERTH_OK);
  assert_int_equal(acc, 5);
  assert_int_equal(berth_rows_add(&acc, 0), BERTH_OK);
  assert_int_equal(acc, 5);
  assert_int_equal(berth_rows_add(&acc, -1), BERTH_E_INVALID);
  assert_int_equal(acc, 5);
  assert_int_equal(berth_rows_add(&acc, INT64_MAX), BERTH_E_INVALID);
  assert_int_equal(acc, 5); /* unchanged on overflow */
  assert_int_equal(berth_rows_add(&acc, INT64_MAX - 5), BERTH_OK);
  assert_true(acc == INT64_MAX);
  assert_int_equal(berth_rows_add(&acc, 1), BERTH_E_INVALID);
  acc = -3;
  assert_int_equal(berth_rows_add(&acc, 1), BERTH_E_INVALID);
}

static berth_tensor make(berth_dtype dt, uint32_t ndim, const int64_t *shape,
                         uint8_t *data, size_t nbytes) {
  berth_tensor t = {.name = "t",
                    .dtype = dt,
                    .ndim = ndim,
                    .data = data,
                    .nbytes = nbytes,
                    .data_borrowed = true};
  for (uint32_t i = 0; i < ndim; i++)
    t.shape[i] = shape[i];
  return t;
}

static void test_check_fixed(void **state) {
  (void)state;
  berth_errmsg err = {{0}};
  uint8_t data[64] = {0};
  int64_t s23[2] = {2, 3};
  berth_tensor t = make(BERTH_DT_FP32, 2, s23, data, 24);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_OK);
  t.nbytes = 20;
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "'t'"));
  t = make(BERTH_DT_FP32, 0, NULL, data, 4); /* scalar */
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_OK);
  int64_t s0[1] = {0};
  t = make(BERTH_DT_INT64, 1, s0, NULL, 0);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_OK);
  t = make(BERTH_DT_INT64, 1, s23, NULL, 8);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  t = make(BERTH_DT_INVALID, 1, s0, data, 0);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  t = make((berth_dtype)77, 1, s0, data, 0);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  t = make(BERTH_DT_UINT8, 1, s0, data, 0);
  t.ndim = 9;
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  int64_t neg[1] = {-2};
  t = make(BERTH_DT_UINT8, 1, neg, data, 0);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  /* numel * size overflowing 64 bits must not wrap to nbytes */
  int64_t huge[2] = {INT64_MAX, 2};
  t = make(BERTH_DT_FP64, 2, huge, data, 0);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  t = make(BERTH_DT_FP64, 2, huge, data, 0);
  t.name = NULL; /* a message without a name still works */
  assert_int_equal(berth_tensor_check(&t, NULL), BERTH_E_INVALID);
}

static void test_check_bool(void **state) {
  (void)state;
  berth_errmsg err = {{0}};
  uint8_t data[3] = {0, 1, 1};
  int64_t s[1] = {3};
  berth_tensor t = make(BERTH_DT_BOOL, 1, s, data, 3);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_OK);
  data[2] = 2;
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "BOOL"));
}

static void test_check_bytes(void **state) {
  (void)state;
  berth_errmsg err = {{0}};
  /* "ab", "", "xyz" */
  uint8_t d[] = {2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0, 3, 0, 0, 0, 'x', 'y', 'z'};
  int64_t s[2] = {1, 3};
  berth_tensor t = make(BERTH_DT_BYTES, 2, s, d, sizeof d);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_OK);
  for (size_t cut = 0; cut < sizeof d; cut++) { /* every truncation fails */
    t.nbytes = cut;
    assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  }
  t.nbytes = sizeof d;
  s[1] = 2;
  t = make(BERTH_DT_BYTES, 2, s, d, sizeof d);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "holds 3"));
  uint8_t big[] = {0xff, 0xff, 0xff, 0xff, 'a'}; /* length past the end */
  int64_t one[1] = {1};
  t = make(BERTH_DT_BYTES, 1, one, big, sizeof big);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_E_INVALID);
  int64_t zero[1] = {0};
  t = make(BERTH_DT_BYTES, 1, zero, NULL, 0);
  assert_int_equal(berth_tensor_check(&t, &err), BERTH_OK);
}

static void test_clear_and_free(void **state) {
  (void)state;
  berth_tensor zero = {0};
  berth_tensor_clear(&zero);
  berth_tensor_clear(NULL);
  berth_tensors_free(NULL, 3);
  berth_tensor *ts = calloc(3, sizeof *ts);
  assert_non_null(ts);
  static uint8_t borrowed[8];
  ts[0].name = strdup("a");
  ts[0].data = malloc(16);
  ts[1].name = strdup("b");
  ts[1].data = borrowed; /* must not be freed */
  ts[1].data_borrowed = true;
  berth_tensor_clear(&ts[0]);
  assert_null(ts[0].name);
  assert_null(ts[0].data);
  assert_int_equal(ts[0].nbytes, 0);
  berth_tensors_free(ts, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dtype_names),    cmocka_unit_test(test_dtype_sizes),
      cmocka_unit_test(test_numel),          cmocka_unit_test(test_extent),
      cmocka_unit_test(test_rows_add),       cmocka_unit_test(test_check_fixed),
      cmocka_unit_test(test_check_bool),     cmocka_unit_test(test_check_bytes),
      cmocka_unit_test(test_clear_and_free),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
