/* Berth engine: Open Inference Protocol v2 tensors -> JSON (response
 * encoding). JSON string escaping is common/text.c.
 *
 * Encoding writes JSON text directly into a berth_buf, with no JSON tree on
 * the hot path. Numbers are written by numtext.c (shortest round-trip float
 * text). Decoding is codec_json.c.
 */
#include "codec_json.h"
#include "numtext.h"
#include "text.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Names quoted in error messages are cut so the message stays readable. */
#define QN "%.100s"

/* ---- JSON strings ----------------------------------------------------- */

static bool utf8_valid(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    size_t k = berth_utf8_seq(s + i, n - i);
    if (k == 0)
      return false;
    i += k;
  }
  return true;
}

int berth_json_encode_error(const char *msg, berth_buf *out) {
  size_t start = out->len;
  if (msg == NULL)
    msg = "";
  int rc = berth_buf_append(out, "{\"error\":", 9);
  if (rc == BERTH_OK)
    rc = berth_json_append_string(out, msg, strlen(msg));
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "}", 1);
  if (rc != BERTH_OK)
    berth_buf_truncate(out, start);
  return rc;
}

/* ---- encoding --------------------------------------------------------- */

static uint64_t get_le(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Writes element i of a fixed-size tensor as JSON text; returns length
 * (at most BERTH_NUM_MAX - 1). */
typedef size_t (*elem_writer)(char *dst, const uint8_t *src);

static size_t w_bool(char *d, const uint8_t *s) {
  if (*s) {
    memcpy(d, "true", 4);
    return 4;
  }
  memcpy(d, "false", 5);
  return 5;
}
static size_t w_u8(char *d, const uint8_t *s) { return berth_num_u64(d, *s); }
static size_t w_u16(char *d, const uint8_t *s) {
  return berth_num_u64(d, get_le(s, 2));
}
static size_t w_u32(char *d, const uint8_t *s) {
  return berth_num_u64(d, get_le(s, 4));
}
static size_t w_u64(char *d, const uint8_t *s) {
  return berth_num_u64(d, get_le(s, 8));
}
static size_t w_i8(char *d, const uint8_t *s) {
  return berth_num_i64(d, (int8_t)*s);
}
static size_t w_i16(char *d, const uint8_t *s) {
  return berth_num_i64(d, (int16_t)get_le(s, 2));
}
static size_t w_i32(char *d, const uint8_t *s) {
  return berth_num_i64(d, (int32_t)get_le(s, 4));
}
static size_t w_i64(char *d, const uint8_t *s) {
  return berth_num_i64(d, (int64_t)get_le(s, 8));
}
static size_t w_fp16(char *d, const uint8_t *s) {
  return berth_num_float_bits(d, get_le(s, 2), 5, 11);
}
static size_t w_bf16(char *d, const uint8_t *s) {
  return berth_num_float_bits(d, get_le(s, 2), 8, 8);
}
static size_t w_fp32(char *d, const uint8_t *s) {
  return berth_num_float_bits(d, get_le(s, 4), 8, 24);
}
static size_t w_fp64(char *d, const uint8_t *s) {
  return berth_num_float_bits(d, get_le(s, 8), 11, 53);
}

static elem_writer writer_for(berth_dtype dt) {
  switch (dt) {
  case BERTH_DT_BOOL:
    return w_bool;
  case BERTH_DT_UINT8:
    return w_u8;
  case BERTH_DT_UINT16:
    return w_u16;
  case BERTH_DT_UINT32:
    return w_u32;
  case BERTH_DT_UINT64:
    return w_u64;
  case BERTH_DT_INT8:
    return w_i8;
  case BERTH_DT_INT16:
    return w_i16;
  case BERTH_DT_INT32:
    return w_i32;
  case BERTH_DT_INT64:
    return w_i64;
  case BERTH_DT_FP16:
    return w_fp16;
  case BERTH_DT_BF16:
    return w_bf16;
  case BERTH_DT_FP32:
    return w_fp32;
  case BERTH_DT_FP64:
    return w_fp64;
  default:
    return NULL;
  }
}

#define SMALL_ELEMS 32

/* Writes the comma-separated elements of a fixed-size tensor. Works in
 * chunks written straight into reserved space; near the buffer's maximum it
 * falls back to exact appends so the limit is never overshot. */
static int write_fixed(berth_buf *out, const berth_tensor *t) {
  elem_writer w = writer_for(t->dtype);
  size_t es = berth_dtype_size(t->dtype), n = t->nbytes / es, i = 0;
  if (n <= SMALL_ELEMS) {
    /* a small tensor (the common answer of one row) is written on the
     * stack and appended exactly: reserving its worst case (40 bytes an
     * element) grew a typical answer's buffer past 1 KiB, and glibc then
     * consolidated its free lists on every answer */
    char tmp[SMALL_ELEMS * BERTH_NUM_MAX];
    char *q = tmp;
    for (; i < n; i++) {
      if (i > 0)
        *q++ = ',';
      q += w(q, t->data + i * es);
    }
    return berth_buf_append(out, tmp, (size_t)(q - tmp));
  }
  while (i < n) {
    size_t chunk = n - i < 1024 ? n - i : 1024;
    char *p = berth_buf_reserve(out, chunk * BERTH_NUM_MAX);
    if (p == NULL)
      break;
    char *q = p;
    for (size_t end = i + chunk; i < end; i++) {
      if (i > 0)
        *q++ = ',';
      q += w(q, t->data + i * es);
    }
    berth_buf_commit(out, (size_t)(q - p));
  }
  for (; i < n; i++) { /* slow path near the limit */
    char tmp[BERTH_NUM_MAX];
    size_t k = 0;
    if (i > 0)
      tmp[k++] = ',';
    k += w(tmp + k, t->data + i * es);
    int rc = berth_buf_append(out, tmp, k);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

/* BYTES elements as JSON strings; they must be UTF-8 text. */
static int write_bytes(berth_buf *out, const berth_tensor *t,
                       berth_errmsg *err) {
  size_t off = 0;
  for (uint64_t i = 0; off < t->nbytes; i++) {
    size_t len = (size_t)get_le(t->data + off, 4); /* checked by tensor_check */
    const uint8_t *s = t->data + off + 4;
    off += 4 + len;
    if (!utf8_valid(s, len))
      return berth_errf(err, BERTH_E_UNSUPPORTED,
                        "output '" QN "' holds non-UTF-8 bytes (element %llu); "
                        "JSON can only carry text, request it as binary data",
                        t->name, (unsigned long long)i);
    int rc = i > 0 ? berth_buf_append(out, ",", 1) : BERTH_OK;
    if (rc == BERTH_OK)
      rc = berth_json_append_string(out, (const char *)s, len);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

/* shm: the output went into a shared-memory region; only its metadata
 * is written (no "data"), as Triton does. */
static int write_output_as(berth_buf *out, const berth_tensor *t, bool shm,
                           berth_errmsg *err) {
  int rc = berth_buf_append(out, "{\"name\":", 8);
  if (rc == BERTH_OK)
    rc = berth_json_append_string(out, t->name, strlen(t->name));
  if (rc == BERTH_OK) /* appended piece by piece: printf was ~1.5 % of a
                        small request's time in berthd */
    rc = berth_buf_append(out, ",\"datatype\":\"", 13);
  if (rc == BERTH_OK) {
    const char *dt = berth_dtype_name(t->dtype);
    rc = berth_buf_append(out, dt, strlen(dt));
  }
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\",\"shape\":[", 11);
  for (uint32_t d = 0; d < t->ndim && rc == BERTH_OK; d++) {
    char tmp[24];
    size_t k = 0;
    if (d > 0)
      tmp[k++] = ',';
    k += berth_num_i64(tmp + k, t->shape[d]);
    rc = berth_buf_append(out, tmp, k);
  }
  if (shm)
    return rc == BERTH_OK ? berth_buf_append(out, "]}", 2) : rc;
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "],\"data\":[", 10);
  if (rc == BERTH_OK)
    rc = t->dtype == BERTH_DT_BYTES ? write_bytes(out, t, err)
                                    : write_fixed(out, t);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "]}", 2);
  return rc;
}

static int write_output(berth_buf *out, const berth_tensor *t,
                        berth_errmsg *err) {
  return write_output_as(out, t, false, err);
}

int berth_json_append_tensor(berth_buf *out, const berth_tensor *t,
                             berth_errmsg *err) {
  return write_output(out, t, err);
}

static const berth_tensor *find_output(const berth_infer_response *resp,
                                       const char *name) {
  for (size_t i = 0; i < resp->n_outputs; i++)
    if (resp->outputs[i].name != NULL &&
        strcmp(resp->outputs[i].name, name) == 0)
      return &resp->outputs[i];
  return NULL;
}

/* The tensors to write, in order: the requested ones or all. *sel is a
 * malloc'd array of n pointers, each checked by berth_tensor_check. */
static int select_outputs(const berth_infer_request *req,
                          const berth_infer_response *resp,
                          const berth_tensor ***sel, size_t *n,
                          berth_errmsg *err) {
  bool all = req == NULL || req->n_outputs == 0;
  size_t count = all ? resp->n_outputs : req->n_outputs;
  const berth_tensor **v = malloc((count ? count : 1) * sizeof *v);
  if (v == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < count; i++) {
    int rc = BERTH_OK;
    if (all) {
      v[i] = &resp->outputs[i];
    } else {
      const char *want = req->outputs[i].name;
      v[i] = want != NULL ? find_output(resp, want) : NULL;
      if (v[i] == NULL)
        rc = berth_errf(err, BERTH_E_INVALID,
                        "requested output '" QN "' is "
                        "not an output of this model",
                        want ? want : "");
    }
    if (rc == BERTH_OK && v[i]->name == NULL)
      rc = berth_errf(err, BERTH_E_INTERNAL, "output %zu has no name", i);
    else if (rc == BERTH_OK && berth_tensor_check(v[i], err) != BERTH_OK)
      rc = BERTH_E_INTERNAL;
    if (rc != BERTH_OK) {
      free(v);
      return rc;
    }
  }
  *sel = v;
  *n = count;
  return BERTH_OK;
}

/* Appends a compact dump of a JSON value. */
static int write_json_value(berth_buf *out, const json_t *v,
                            berth_errmsg *err) {
  const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
  size_t need = json_dumpb(v, NULL, 0, flags);
  if (need == 0)
    return berth_errf(err, BERTH_E_INTERNAL,
                      "response parameters cannot be "
                      "written as JSON");
  char *p = berth_buf_reserve(out, need);
  if (p == NULL)
    return berth_errf(
        err, out->len + need > out->max ? BERTH_E_TOO_LARGE : BERTH_E_NOMEM,
        "response too large");
  if (json_dumpb(v, p, need, flags) != need)
    return berth_errf(err, BERTH_E_INTERNAL,
                      "response parameters changed "
                      "while being written");
  berth_buf_commit(out, need);
  return BERTH_OK;
}

/* "model_name", "model_version", "id" and "parameters" members. */
static int write_head(const char *model_name, const char *model_version,
                      const berth_infer_request *req,
                      const berth_infer_response *resp, berth_buf *out,
                      berth_errmsg *err) {
  int rc = berth_buf_append(out, "{", 1);
  if (rc == BERTH_OK && model_name != NULL) {
    rc = berth_buf_append(out, "\"model_name\":", 13);
    if (rc == BERTH_OK)
      rc = berth_json_append_string(out, model_name, strlen(model_name));
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, ",", 1);
  }
  if (rc == BERTH_OK && model_version != NULL) {
    rc = berth_buf_append(out, "\"model_version\":", 16);
    if (rc == BERTH_OK)
      rc = berth_json_append_string(out, model_version, strlen(model_version));
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, ",", 1);
  }
  if (rc == BERTH_OK && req != NULL && req->id != NULL) {
    rc = berth_buf_append(out, "\"id\":", 5);
    if (rc == BERTH_OK)
      rc = berth_json_append_string(out, req->id, strlen(req->id));
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, ",", 1);
  }
  if (rc == BERTH_OK && resp->parameters != NULL) {
    rc = berth_buf_append(out, "\"parameters\":", 13);
    if (rc == BERTH_OK)
      rc = write_json_value(out, resp->parameters, err);
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, ",", 1);
  }
  return rc;
}

int berth_json_encode_infer_response(const char *model_name,
                                     const char *model_version,
                                     const berth_infer_request *req,
                                     const berth_infer_response *resp,
                                     berth_buf *out, berth_errmsg *err) {
  size_t start = out->len;
  const berth_tensor **sel = NULL;
  size_t n = 0;
  if (resp == NULL)
    return berth_errf(err, BERTH_E_INTERNAL, "no response to encode");
  int rc = select_outputs(req, resp, &sel, &n, err);
  if (rc != BERTH_OK)
    return rc;
  rc = write_head(model_name, model_version, req, resp, out, err);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\"outputs\":[", 11);
  for (size_t i = 0; i < n && rc == BERTH_OK; i++) {
    if (i > 0)
      rc = berth_buf_append(out, ",", 1);
    if (rc == BERTH_OK)
      rc = write_output_as(
          out, sel[i], req != NULL && berth_output_in_shm(req, sel[i]->name),
          err);
  }
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "]}", 2);
  free(sel);
  if (rc != BERTH_OK) {
    if (rc == BERTH_E_TOO_LARGE)
      berth_errf(err, rc, "response exceeds the limit of %zu bytes", out->max);
    else if (rc == BERTH_E_NOMEM)
      berth_errf(err, rc, "out of memory");
    berth_buf_truncate(out, start);
  }
  return rc;
}
