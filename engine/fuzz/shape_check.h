/* Shared by the fuzz targets of the request decoders: the shape arithmetic
 * the engine relies on before queueing (berth_shape_extent, berth_rows_add,
 * tensor.h) must agree with the same sums and products done in 128 bits,
 * for every shape a decoder lets through. Any disagreement traps. */
#ifndef BERTH_FUZZ_SHAPE_CHECK_H
#define BERTH_FUZZ_SHAPE_CHECK_H

#include <stdint.h>

#include "berth/tensor.h"

static inline void fuzz_check_shape_math(const berth_tensor *t) {
  unsigned __int128 ref = 1;
  int ok = 1;
  for (uint32_t i = 0; i < t->ndim; i++) {
    if (t->shape[i] < 0)
      __builtin_trap(); /* decoders refuse negative dimensions */
    ref *= t->shape[i] == 0 ? 1u : (unsigned __int128)t->shape[i];
    if (ref > UINT64_MAX) {
      ok = 0;
      ref = (unsigned __int128)UINT64_MAX + 1; /* stays over */
    }
  }
  uint64_t ext = 0;
  int rc = berth_shape_extent(t->shape, t->ndim, UINT64_MAX, &ext);
  if ((rc == BERTH_OK) != ok || (ok && ext != (uint64_t)ref))
    __builtin_trap();
  if (ok && ext > 1 &&
      berth_shape_extent(t->shape, t->ndim, ext - 1, &ext) == BERTH_OK)
    __builtin_trap(); /* the bound is inclusive and exact */
  if (t->ndim > 0) {
    int64_t acc = t->shape[0];
    __int128 sum = (__int128)t->shape[0] * 2;
    rc = berth_rows_add(&acc, t->shape[0]);
    if ((rc == BERTH_OK) != (sum <= INT64_MAX) ||
        (rc == BERTH_OK && acc != (int64_t)sum) ||
        (rc != BERTH_OK && acc != t->shape[0]))
      __builtin_trap();
  }
}

#endif
