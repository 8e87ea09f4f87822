/* Berth engine: datatypes, shapes and tensor consistency checks.
 *
 * berth_tensor_check is the one place that decides whether a tensor's bytes
 * agree with its datatype and shape; every decoder (JSON, worker frames)
 * and encoder relies on it before reading data by shape.
 */
#include "berth/tensor.h"

#include <stdlib.h>
#include <string.h>

static const struct {
  const char *name;
  size_t size;
} dtype_table[BERTH_DT_COUNT] = {
    [BERTH_DT_INVALID] = {"INVALID", 0}, [BERTH_DT_BOOL] = {"BOOL", 1},
    [BERTH_DT_UINT8] = {"UINT8", 1},     [BERTH_DT_UINT16] = {"UINT16", 2},
    [BERTH_DT_UINT32] = {"UINT32", 4},   [BERTH_DT_UINT64] = {"UINT64", 8},
    [BERTH_DT_INT8] = {"INT8", 1},       [BERTH_DT_INT16] = {"INT16", 2},
    [BERTH_DT_INT32] = {"INT32", 4},     [BERTH_DT_INT64] = {"INT64", 8},
    [BERTH_DT_FP16] = {"FP16", 2},       [BERTH_DT_FP32] = {"FP32", 4},
    [BERTH_DT_FP64] = {"FP64", 8},       [BERTH_DT_BYTES] = {"BYTES", 0},
    [BERTH_DT_BF16] = {"BF16", 2},
};

static bool dtype_valid(berth_dtype dt) {
  return (int)dt > (int)BERTH_DT_INVALID && (int)dt < BERTH_DT_COUNT;
}

const char *berth_dtype_name(berth_dtype dt) {
  return dtype_valid(dt) ? dtype_table[dt].name : "INVALID";
}

berth_dtype berth_dtype_from_name(const char *name, size_t len) {
  if (name == NULL)
    return BERTH_DT_INVALID;
  for (int i = 1; i < BERTH_DT_COUNT; i++) {
    const char *n = dtype_table[i].name;
    if (strlen(n) == len && memcmp(n, name, len) == 0)
      return (berth_dtype)i;
  }
  return BERTH_DT_INVALID;
}

size_t berth_dtype_size(berth_dtype dt) {
  return dtype_valid(dt) ? dtype_table[dt].size : 0;
}

int berth_shape_numel(const int64_t *shape, uint32_t ndim, uint64_t *out) {
  if (ndim > BERTH_MAX_DIMS || (ndim > 0 && shape == NULL))
    return BERTH_E_INVALID;
  bool zero = false;
  for (uint32_t i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return BERTH_E_INVALID;
    if (shape[i] == 0)
      zero = true;
  }
  if (zero) { /* [huge, huge, 0] has no elements and does not overflow */
    *out = 0;
    return BERTH_OK;
  }
  uint64_t n = 1;
  for (uint32_t i = 0; i < ndim; i++) {
    uint64_t d = (uint64_t)shape[i];
    if (n > UINT64_MAX / d)
      return BERTH_E_INVALID;
    n *= d;
  }
  *out = n;
  return BERTH_OK;
}

int berth_shape_extent(const int64_t *shape, uint32_t ndim, uint64_t max,
                       uint64_t *out) {
  if (ndim > BERTH_MAX_DIMS || (ndim > 0 && shape == NULL))
    return BERTH_E_INVALID;
  uint64_t n = 1;
  for (uint32_t i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return BERTH_E_INVALID;
    uint64_t d = shape[i] == 0 ? 1 : (uint64_t)shape[i];
    if (__builtin_mul_overflow(n, d, &n) || n > max)
      return BERTH_E_INVALID;
  }
  *out = n;
  return BERTH_OK;
}

int berth_rows_add(int64_t *acc, int64_t rows) {
  int64_t sum;
  if (rows < 0 || *acc < 0 || __builtin_add_overflow(*acc, rows, &sum))
    return BERTH_E_INVALID;
  *acc = sum;
  return BERTH_OK;
}

/* Walks the u32 length prefixes of a BYTES tensor's data. */
static int check_bytes(const berth_tensor *t, uint64_t numel, berth_errmsg *err,
                       const char *name) {
  uint64_t count = 0;
  size_t off = 0;
  while (off < t->nbytes) {
    if (t->nbytes - off < 4)
      return berth_errf(err, BERTH_E_INVALID,
                        "tensor '%.100s': BYTES element %llu has a truncated "
                        "length prefix",
                        name, (unsigned long long)count);
    const uint8_t *p = t->data + off;
    uint32_t len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 24;
    off += 4;
    if (len > t->nbytes - off)
      return berth_errf(err, BERTH_E_INVALID,
                        "tensor '%.100s': BYTES element %llu claims %u bytes "
                        "but only %zu remain",
                        name, (unsigned long long)count, len, t->nbytes - off);
    off += len;
    count++;
  }
  if (count != numel)
    return berth_errf(err, BERTH_E_INVALID,
                      "tensor '%.100s': shape needs %llu BYTES elements, data "
                      "holds %llu",
                      name, (unsigned long long)numel,
                      (unsigned long long)count);
  return BERTH_OK;
}

int berth_tensor_check(const berth_tensor *t, berth_errmsg *err) {
  const char *name = t->name != NULL ? t->name : "?";
  if (!dtype_valid(t->dtype))
    return berth_errf(err, BERTH_E_INVALID,
                      "tensor '%.100s': invalid datatype %d", name,
                      (int)t->dtype);
  if (t->ndim > BERTH_MAX_DIMS)
    return berth_errf(err, BERTH_E_INVALID,
                      "tensor '%.100s': %u dimensions, at most %d allowed",
                      name, t->ndim, BERTH_MAX_DIMS);
  uint64_t numel;
  if (berth_shape_numel(t->shape, t->ndim, &numel) != BERTH_OK)
    return berth_errf(err, BERTH_E_INVALID,
                      "tensor '%.100s': shape has a negative dimension or too "
                      "many elements",
                      name);
  if (t->nbytes > 0 && t->data == NULL)
    return berth_errf(err, BERTH_E_INVALID, "tensor '%.100s': no data", name);
  if (t->dtype == BERTH_DT_BYTES)
    return check_bytes(t, numel, err, name);
  uint64_t size = berth_dtype_size(t->dtype);
  if (numel > UINT64_MAX / size || numel * size != (uint64_t)t->nbytes)
    return berth_errf(err, BERTH_E_INVALID,
                      "tensor '%.100s': shape needs %llu %s elements, data "
                      "holds %zu bytes",
                      name, (unsigned long long)numel,
                      berth_dtype_name(t->dtype), t->nbytes);
  if (t->dtype == BERTH_DT_BOOL) {
    for (size_t i = 0; i < t->nbytes; i++)
      if (t->data[i] > 1)
        return berth_errf(err, BERTH_E_INVALID,
                          "tensor '%.100s': BOOL element %zu is %u, not 0 or 1",
                          name, i, t->data[i]);
  }
  return BERTH_OK;
}

void berth_tensor_clear(berth_tensor *t) {
  if (t == NULL)
    return;
  free(t->name);
  if (!t->data_borrowed)
    free(t->data);
  memset(t, 0, sizeof *t);
}

void berth_tensors_free(berth_tensor *ts, size_t n) {
  if (ts == NULL)
    return;
  for (size_t i = 0; i < n; i++)
    berth_tensor_clear(&ts[i]);
  free(ts);
}
