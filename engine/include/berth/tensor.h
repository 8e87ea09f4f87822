/* Berth engine: datatypes, shapes and tensors.
 *
 * A tensor's data is raw little-endian bytes in row-major order. BYTES
 * tensors hold each element as a 4-byte little-endian length followed by that
 * many bytes (the layout of Triton's binary extension and of the worker
 * protocol), so one encoding serves every path.
 */
#ifndef BERTH_TENSOR_H
#define BERTH_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

/* Values match the worker protocol's datatype byte (docs/worker-protocol.md)
 * and never change. */
typedef enum {
  BERTH_DT_INVALID = 0,
  BERTH_DT_BOOL = 1,
  BERTH_DT_UINT8 = 2,
  BERTH_DT_UINT16 = 3,
  BERTH_DT_UINT32 = 4,
  BERTH_DT_UINT64 = 5,
  BERTH_DT_INT8 = 6,
  BERTH_DT_INT16 = 7,
  BERTH_DT_INT32 = 8,
  BERTH_DT_INT64 = 9,
  BERTH_DT_FP16 = 10,
  BERTH_DT_FP32 = 11,
  BERTH_DT_FP64 = 12,
  BERTH_DT_BYTES = 13,
  BERTH_DT_BF16 = 14,
} berth_dtype;

#define BERTH_DT_COUNT 15

/* Most dimensions a tensor may have. */
#define BERTH_MAX_DIMS 8

/* Protocol name ("FP32") of a datatype; "INVALID" for unknown values. */
const char *berth_dtype_name(berth_dtype dt);
/* Datatype for a protocol name of len bytes (not NUL-terminated);
 * BERTH_DT_INVALID if it names none. */
berth_dtype berth_dtype_from_name(const char *name, size_t len);
/* Bytes per element; 0 for BYTES (variable) and INVALID. */
size_t berth_dtype_size(berth_dtype dt);

typedef struct berth_tensor {
  char *name;            /* owned, NUL-terminated */
  berth_dtype dtype;
  uint32_t ndim;         /* <= BERTH_MAX_DIMS */
  int64_t shape[BERTH_MAX_DIMS]; /* every dim >= 0 */
  uint8_t *data;         /* raw bytes, see top of file */
  size_t nbytes;         /* bytes at data */
  bool data_borrowed;    /* true: data points into a buffer owned elsewhere
                            that outlives the tensor; false: owned (free()) */
} berth_tensor;

/* Element count (product of shape) into *out; BERTH_E_INVALID on overflow
 * or a negative dimension. A 0-dim tensor has one element. */
int berth_shape_numel(const int64_t *shape, uint32_t ndim, uint64_t *out);

/* The shape's extent: the product of its dimensions with each 0 counted as
 * 1, i.e. what the shape would describe without its empty dimensions
 * ([9223372036854775807, 0] has extent 2^63 - 1 and no elements). Computed
 * with overflow-checked arithmetic. BERTH_E_INVALID when a dimension is
 * negative, ndim is over BERTH_MAX_DIMS, or the extent passes max (then
 * *out is not written). */
int berth_shape_extent(const int64_t *shape, uint32_t ndim, uint64_t max,
                       uint64_t *out);

/* Adds rows (>= 0) to the row counter *acc (>= 0), e.g. a model's queued
 * rows or a batch's rows. BERTH_E_INVALID, *acc unchanged, when rows is
 * negative or the sum would pass INT64_MAX. */
int berth_rows_add(int64_t *acc, int64_t rows);

/* Checks that nbytes agrees with shape and dtype (for BYTES: walks the
 * length prefixes, which must exactly cover nbytes and equal numel).
 * Returns BERTH_OK or BERTH_E_INVALID with a message naming the tensor. */
int berth_tensor_check(const berth_tensor *t, struct berth_errmsg *err);

/* Frees what the tensor owns (name; data unless borrowed) and zeroes it.
 * Safe on a zeroed tensor. */
void berth_tensor_clear(berth_tensor *t);
/* Clears n tensors then frees the array itself. Safe with NULL. */
void berth_tensors_free(berth_tensor *ts, size_t n);

#endif
