/* Unit tests for wp_gather.c: the scatter-gather frame must be, byte for
 * byte, the frame the copying encoder writes (header + tensors_encode of
 * the concatenated tensors), whatever the split into parts and copy_max;
 * referenced pieces point into the caller's parts; bad arguments fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker_proto.h"
#include "wp_gather.h"

#define NJOBS 3

/* Three jobs' worth of an FP32 [rows, 5] input, a BYTES [rows] input and an
 * empty UINT8 [rows, 0] input; job k has k + 1 rows (job 2 has 300 rows of
 * FP32 so that its part is over the default copy_max). */
typedef struct fixture {
  float *f[NJOBS];
  uint8_t *bytes[NJOBS];
  size_t f_len[NJOBS], b_len[NJOBS];
  int64_t rows[NJOBS];
  berth_tensor heads[3];
  berth_wp_piece parts[3 * NJOBS];
  berth_tensor joined[3]; /* the concatenation, for the copying encoder */
} fixture;

static void fixture_init(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  int64_t total = 0;
  size_t f_total = 0, b_total = 0;
  for (int k = 0; k < NJOBS; k++) {
    fx->rows[k] = k == 2 ? 300 : k + 1;
    total += fx->rows[k];
    fx->f_len[k] = (size_t)fx->rows[k] * 5 * sizeof(float);
    fx->f[k] = malloc(fx->f_len[k]);
    assert_non_null(fx->f[k]);
    for (int64_t i = 0; i < fx->rows[k] * 5; i++)
      fx->f[k][i] = (float)(k * 1000 + i) * 0.25f;
    /* each row one element "k" repeated (row % 4) times */
    fx->b_len[k] = 0;
    for (int64_t r = 0; r < fx->rows[k]; r++)
      fx->b_len[k] += 4 + (size_t)(r % 4);
    fx->bytes[k] = malloc(fx->b_len[k]);
    assert_non_null(fx->bytes[k]);
    uint8_t *p = fx->bytes[k];
    for (int64_t r = 0; r < fx->rows[k]; r++) {
      uint32_t len = (uint32_t)(r % 4);
      memcpy(p, &len, 4);
      memset(p + 4, 'a' + k, len);
      p += 4 + len;
    }
    fx->parts[0 * NJOBS + k] =
        (berth_wp_piece){(const uint8_t *)fx->f[k], fx->f_len[k]};
    fx->parts[1 * NJOBS + k] = (berth_wp_piece){fx->bytes[k], fx->b_len[k]};
    fx->parts[2 * NJOBS + k] = (berth_wp_piece){NULL, 0};
    f_total += fx->f_len[k];
    b_total += fx->b_len[k];
  }
  fx->heads[0] = (berth_tensor){.name = "INPUT0",
                                .dtype = BERTH_DT_FP32,
                                .ndim = 2,
                                .shape = {total, 5},
                                .nbytes = f_total,
                                .data_borrowed = true};
  fx->heads[1] = (berth_tensor){.name = "text",
                                .dtype = BERTH_DT_BYTES,
                                .ndim = 1,
                                .shape = {total},
                                .nbytes = b_total,
                                .data_borrowed = true};
  fx->heads[2] = (berth_tensor){.name = "nothing",
                                .dtype = BERTH_DT_UINT8,
                                .ndim = 2,
                                .shape = {total, 0},
                                .data_borrowed = true};
  for (int i = 0; i < 3; i++) {
    fx->joined[i] = fx->heads[i];
    size_t off = 0;
    fx->joined[i].data = malloc(fx->heads[i].nbytes ? fx->heads[i].nbytes : 1);
    assert_non_null(fx->joined[i].data);
    for (int k = 0; k < NJOBS; k++) {
      const berth_wp_piece *q = &fx->parts[i * NJOBS + k];
      if (q->len)
        memcpy(fx->joined[i].data + off, q->data, q->len);
      off += q->len;
    }
  }
}

static void fixture_free(fixture *fx) {
  for (int k = 0; k < NJOBS; k++) {
    free(fx->f[k]);
    free(fx->bytes[k]);
  }
  for (int i = 0; i < 3; i++)
    free(fx->joined[i].data);
}

/* The frame the copying encoder writes. */
static uint8_t *reference_frame(const berth_tensor *ts, size_t n,
                                const char *params, uint64_t id, size_t *len) {
  size_t plen = params ? strlen(params) : 0;
  size_t payload;
  assert_int_equal(berth_wp_tensors_size(ts, n, plen, &payload), BERTH_OK);
  uint8_t *buf = malloc(BERTH_WP_HEADER_SIZE + payload);
  assert_non_null(buf);
  berth_wp_header h = {.length = (uint32_t)payload,
                       .type = BERTH_WP_INFER,
                       .flags = 0,
                       .id = id};
  berth_wp_header_encode(buf, &h);
  size_t written = 0;
  assert_int_equal(berth_wp_tensors_encode(ts, n, params, plen,
                                           buf + BERTH_WP_HEADER_SIZE, payload,
                                           &written),
                   BERTH_OK);
  assert_int_equal(written, payload);
  *len = BERTH_WP_HEADER_SIZE + payload;
  return buf;
}

/* Concatenates the frame's pieces; checks each borrowed piece points either
 * into the arena or at one of the parts. */
static uint8_t *flatten(const berth_wp_frame *f, const fixture *fx,
                        size_t *n_referenced) {
  uint8_t *out = malloc(f->length ? f->length : 1);
  assert_non_null(out);
  size_t off = 0;
  *n_referenced = 0;
  for (size_t i = 0; i < f->n_pieces; i++) {
    const berth_wp_piece *q = &f->pieces[i];
    assert_true(q->len > 0);
    bool from_part = false;
    for (size_t k = 0; k < 3 * NJOBS; k++)
      if (q->data == fx->parts[k].data && q->len == fx->parts[k].len)
        from_part = true;
    if (from_part)
      (*n_referenced)++;
    else
      assert_true(q->data >= f->arena);
    assert_true(off + q->len <= f->length);
    memcpy(out + off, q->data, q->len);
    off += q->len;
  }
  assert_int_equal(off, f->length);
  return out;
}

static void check_same(size_t copy_max, const char *params,
                       size_t want_referenced) {
  fixture fx;
  fixture_init(&fx);
  size_t ref_len;
  uint8_t *ref = reference_frame(fx.joined, 3, params, 77, &ref_len);
  berth_wp_frame f;
  size_t plen = params ? strlen(params) : 0;
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 77, fx.heads, 3,
                                         fx.parts, NJOBS, params, plen,
                                         copy_max),
                   BERTH_OK);
  assert_int_equal(f.length, ref_len);
  size_t n_referenced;
  uint8_t *got = flatten(&f, &fx, &n_referenced);
  assert_memory_equal(got, ref, ref_len);
  assert_int_equal(n_referenced, want_referenced);
  /* the frame decodes to the batch */
  berth_wp_header h;
  berth_errmsg err;
  assert_int_equal(berth_wp_header_decode(got, UINT32_MAX, &h, &err), BERTH_OK);
  assert_int_equal(h.length, ref_len - BERTH_WP_HEADER_SIZE);
  free(got);
  free(ref);
  berth_wp_frame_free(&f);
  assert_null(f.arena);
  fixture_free(&fx);
}

static void test_copy_everything(void **state) {
  (void)state;
  check_same(SIZE_MAX, NULL, 0);
  check_same(SIZE_MAX, "{\"a\":1}", 0);
}

static void test_reference_everything(void **state) {
  (void)state;
  /* every non-empty part: FP32 x3 and BYTES x3 (job 0's first BYTES row is
   * empty but its length prefix is not) */
  check_same(0, NULL, 6);
  check_same(0, "{\"temperature\":0.5}", 6);
}

static void test_default_threshold(void **state) {
  (void)state;
  /* only job 2's FP32 part (300 * 5 * 4 = 6000 bytes) and its BYTES part
   * (300 rows, 4 + 1.5 bytes each on average = 1650) are over 1024 */
  check_same(BERTH_WP_COPY_MAX, NULL, 2);
}

static void test_empty_set(void **state) {
  (void)state;
  berth_wp_frame f;
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 1, NULL, 0, NULL,
                                         0, NULL, 0, BERTH_WP_COPY_MAX),
                   BERTH_OK);
  assert_int_equal(f.length, BERTH_WP_HEADER_SIZE + 8);
  assert_int_equal(f.n_pieces, 1);
  size_t ref_len;
  uint8_t *ref = reference_frame(NULL, 0, NULL, 1, &ref_len);
  assert_memory_equal(f.pieces[0].data, ref, ref_len);
  free(ref);
  berth_wp_frame_free(&f);
}

static void test_rejects(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  berth_wp_frame f;
  /* parts that do not add up to the head's nbytes */
  fx.parts[0].len -= 4;
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 1, fx.heads, 3,
                                         fx.parts, NJOBS, NULL, 0, 0),
                   BERTH_E_INVALID);
  assert_null(f.arena);
  fx.parts[0].len += 4;
  /* a non-empty part without data */
  const uint8_t *keep = fx.parts[1].data;
  fx.parts[1].data = NULL;
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 1, fx.heads, 3,
                                         fx.parts, NJOBS, NULL, 0, 0),
                   BERTH_E_INVALID);
  fx.parts[1].data = keep;
  /* parameters length without text; heads missing */
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 1, fx.heads, 3,
                                         fx.parts, NJOBS, NULL, 3, 0),
                   BERTH_E_INVALID);
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 1, NULL, 3,
                                         fx.parts, NJOBS, NULL, 0, 0),
                   BERTH_E_INVALID);
  /* a tensor name the encoder refuses */
  fx.heads[0].name = "";
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 1, fx.heads, 3,
                                         fx.parts, NJOBS, NULL, 0, 0),
                   BERTH_E_INVALID);
  fx.heads[0].name = "INPUT0";
  /* still fine after the failures */
  assert_int_equal(berth_wp_frame_gather(&f, BERTH_WP_INFER, 1, fx.heads, 3,
                                         fx.parts, NJOBS, NULL, 0, 0),
                   BERTH_OK);
  berth_wp_frame_free(&f);
  fixture_free(&fx);
}

/* The fixture's jobs as requests (job 1's inputs in reverse order: they are
 * found by name). */
static void fixture_requests(fixture *fx, berth_tensor ins[NJOBS][3],
                             berth_infer_request reqs[NJOBS]) {
  for (int k = 0; k < NJOBS; k++) {
    for (int i = 0; i < 3; i++) {
      int at = k == 1 ? 2 - i : i;
      ins[k][at] = fx->heads[i];
      ins[k][at].shape[0] = fx->rows[k];
      ins[k][at].data = (uint8_t *)(uintptr_t)fx->parts[i * NJOBS + k].data;
      ins[k][at].nbytes = fx->parts[i * NJOBS + k].len;
    }
    memset(&reqs[k], 0, sizeof reqs[k]);
    reqs[k].inputs = ins[k];
    reqs[k].n_inputs = 3;
  }
}

static void test_batch_of_requests(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  berth_tensor ins[NJOBS][3];
  berth_infer_request reqs[NJOBS];
  fixture_requests(&fx, ins, reqs);
  const berth_infer_request *ptrs[NJOBS] = {&reqs[0], &reqs[1], &reqs[2]};
  int64_t rows = fx.rows[0] + fx.rows[1] + fx.rows[2];
  const char *params = "{\"k\":[1,2]}";
  berth_wp_frame f;
  assert_int_equal(berth_wp_frame_gather_batch(&f, 9, ptrs, NJOBS, rows, params,
                                               strlen(params)),
                   BERTH_OK);
  size_t ref_len;
  uint8_t *ref = reference_frame(fx.joined, 3, params, 9, &ref_len);
  size_t n_referenced;
  uint8_t *got = flatten(&f, &fx, &n_referenced);
  assert_int_equal(f.length, ref_len);
  assert_memory_equal(got, ref, ref_len);
  assert_int_equal(n_referenced, 2); /* job 2's FP32 and BYTES parts */
  free(got);
  free(ref);
  berth_wp_frame_free(&f);

  /* a batch of one: the request's inputs as they are */
  assert_int_equal(
      berth_wp_frame_gather_batch(&f, 3, ptrs, 1, fx.rows[0], NULL, 0),
      BERTH_OK);
  ref = reference_frame(ins[0], 3, NULL, 3, &ref_len);
  got = flatten(&f, &fx, &n_referenced);
  assert_memory_equal(got, ref, ref_len);
  free(got);
  free(ref);
  berth_wp_frame_free(&f);

  /* a request without one of the first request's inputs */
  ins[2][1].name = "other";
  assert_int_equal(
      berth_wp_frame_gather_batch(&f, 3, ptrs, NJOBS, rows, NULL, 0),
      BERTH_E_INVALID);
  assert_null(f.arena);
  assert_int_equal(berth_wp_frame_gather_batch(&f, 3, NULL, 0, 0, NULL, 0),
                   BERTH_E_INVALID);
  fixture_free(&fx);
}

/* Decodes frame bytes (header skipped) with the region and compares the
 * tensors with the fixture's concatenation. */
static void check_decoded(const uint8_t *frame, size_t len, const fixture *fx,
                          const berth_wp_region *g) {
  berth_tensor *ts;
  size_t n, plen;
  const char *params;
  berth_errmsg err;
  assert_int_equal(berth_wp_tensors_decode_region(
                       frame + BERTH_WP_HEADER_SIZE, len - BERTH_WP_HEADER_SIZE,
                       g, &ts, &n, &params, &plen, &err),
                   BERTH_OK);
  assert_int_equal(n, 3);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(ts[i].name, fx->joined[i].name);
    assert_int_equal(ts[i].dtype, fx->joined[i].dtype);
    assert_int_equal(ts[i].ndim, fx->joined[i].ndim);
    assert_memory_equal(ts[i].shape, fx->joined[i].shape,
                        ts[i].ndim * sizeof(int64_t));
    assert_int_equal(ts[i].nbytes, fx->joined[i].nbytes);
    if (ts[i].nbytes > 0)
      assert_memory_equal(ts[i].data, fx->joined[i].data, ts[i].nbytes);
  }
  berth_tensors_free(ts, n);
}

static void test_batch_in_shared_memory(void **state) {
  (void)state;
  fixture fx;
  fixture_init(&fx);
  berth_tensor ins[NJOBS][3];
  berth_infer_request reqs[NJOBS];
  fixture_requests(&fx, ins, reqs);
  const berth_infer_request *ptrs[NJOBS] = {&reqs[0], &reqs[1], &reqs[2]};
  int64_t rows = fx.rows[0] + fx.rows[1] + fx.rows[2];
  uint8_t *region = aligned_alloc(64, 16384);
  assert_non_null(region);
  memset(region, 0xEE, 16384);
  berth_wp_shm shm = {.base = region, .lo = 0, .hi = 8192, .threshold = 1024};
  berth_wp_frame f;
  assert_int_equal(
      berth_wp_frame_gather_batch_shm(&f, 4, ptrs, NJOBS, rows, NULL, 0, &shm),
      BERTH_OK);
  /* FP32 (6060 bytes) at 0, BYTES at the next 64-byte boundary; the empty
   * input stays in the frame */
  size_t f32 = fx.joined[0].nbytes, by = fx.joined[1].nbytes;
  assert_int_equal(shm.placed, 2);
  assert_int_equal(shm.used, 6080 + by);
  assert_memory_equal(region, fx.joined[0].data, f32);
  assert_memory_equal(region + 6080, fx.joined[1].data, by);
  size_t n_referenced;
  uint8_t *got = flatten(&f, &fx, &n_referenced);
  assert_int_equal(n_referenced, 0);
  berth_wp_region g = {region, 0, 8192};
  check_decoded(got, f.length, &fx, &g);
  /* the same bytes without a region, or a region that excludes them, are
   * a protocol error */
  berth_tensor *ts;
  size_t n, plen;
  const char *params;
  berth_errmsg err;
  const uint8_t *payload = got + BERTH_WP_HEADER_SIZE;
  size_t plen_all = f.length - BERTH_WP_HEADER_SIZE;
  assert_int_equal(
      berth_wp_tensors_decode(payload, plen_all, &ts, &n, &params, &plen, &err),
      BERTH_E_PARSE);
  g = (berth_wp_region){region, 64, 8192};
  assert_int_equal(berth_wp_tensors_decode_region(payload, plen_all, &g, &ts,
                                                  &n, &params, &plen, &err),
                   BERTH_E_PARSE);
  g = (berth_wp_region){region, 0, 6080 + by - 1};
  assert_int_equal(berth_wp_tensors_decode_region(payload, plen_all, &g, &ts,
                                                  &n, &params, &plen, &err),
                   BERTH_E_PARSE);
  free(got);
  berth_wp_frame_free(&f);

  /* a region too small for the FP32 input: it goes in the frame, BYTES
   * still fits */
  shm.hi = 4096;
  assert_int_equal(
      berth_wp_frame_gather_batch_shm(&f, 4, ptrs, NJOBS, rows, NULL, 0, &shm),
      BERTH_OK);
  assert_int_equal(shm.placed, 1);
  assert_memory_equal(region, fx.joined[1].data, by);
  got = flatten(&f, &fx, &n_referenced);
  g = (berth_wp_region){region, 0, 4096};
  check_decoded(got, f.length, &fx, &g);
  free(got);
  berth_wp_frame_free(&f);

  /* nothing over the threshold: exactly the inline frame */
  shm.threshold = 1u << 20;
  assert_int_equal(
      berth_wp_frame_gather_batch_shm(&f, 9, ptrs, NJOBS, rows, NULL, 0, &shm),
      BERTH_OK);
  assert_int_equal(shm.placed, 0);
  size_t ref_len;
  uint8_t *ref = reference_frame(fx.joined, 3, NULL, 9, &ref_len);
  got = flatten(&f, &fx, &n_referenced);
  assert_int_equal(f.length, ref_len);
  assert_memory_equal(got, ref, ref_len);
  free(got);
  free(ref);
  berth_wp_frame_free(&f);
  free(region);
  fixture_free(&fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batch_in_shared_memory),
      cmocka_unit_test(test_copy_everything),
      cmocka_unit_test(test_reference_everything),
      cmocka_unit_test(test_default_threshold),
      cmocka_unit_test(test_empty_set),
      cmocka_unit_test(test_rejects),
      cmocka_unit_test(test_batch_of_requests),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
