/* Berth engine: Open Inference Protocol v2 JSON -> tensors (request
 * decoding).
 *
 * Decoding parses the body once with jansson (duplicate keys rejected,
 * nesting bounded before parsing) and converts each input's `data` (flat or
 * nested) straight into the tensor's little-endian bytes. Encoding (tensors
 * -> JSON text) is codec_json_encode.c; the common request shape has a
 * one-pass reader in codec_json_fast.c.
 */
#include "codec_json.h"
#include "numtext.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_INPUTS 64
#define DEFAULT_MAX_TENSOR_BYTES ((size_t)256 << 20)
#define DEFAULT_MAX_DEPTH 64
/* Longest name the worker protocol can carry. */
#define NAME_MAX_BYTES 65535
/* Names quoted in error messages are cut so the message stays readable. */
#define QN "%.100s"

/* ---- decoding --------------------------------------------------------- */

/* Conversion state for one input's `data`. */
typedef struct fill_ctx {
  const char *name; /* input name, for messages */
  berth_dtype dt;
  size_t esize;     /* bytes per element; 0 for BYTES */
  uint8_t *out;     /* numel * esize bytes (BYTES: the second pass) */
  size_t out_len;   /* BYTES: bytes written so far */
  uint64_t numel;   /* elements the shape asks for */
  uint64_t count;   /* leaves seen so far */
  size_t max_bytes; /* BYTES: limit on the encoded size */
  bool big_ints;    /* the body was re-read with big integers quoted */
  berth_errmsg *err;
} fill_ctx;

/* Integer datatypes' ranges: [lo, hi] exactly, and as doubles [dlo, dhi). */
typedef struct int_range {
  int64_t lo;
  uint64_t hi;
  double dlo, dhi;
} int_range;

static int_range range_of(berth_dtype dt) {
  switch (dt) {
  case BERTH_DT_UINT8:
    return (int_range){0, UINT8_MAX, 0, 0x1p8};
  case BERTH_DT_UINT16:
    return (int_range){0, UINT16_MAX, 0, 0x1p16};
  case BERTH_DT_UINT32:
    return (int_range){0, UINT32_MAX, 0, 0x1p32};
  case BERTH_DT_UINT64:
    return (int_range){0, UINT64_MAX, 0, 0x1p64};
  case BERTH_DT_INT8:
    return (int_range){INT8_MIN, INT8_MAX, -0x1p7, 0x1p7};
  case BERTH_DT_INT16:
    return (int_range){INT16_MIN, INT16_MAX, -0x1p15, 0x1p15};
  case BERTH_DT_INT32:
    return (int_range){INT32_MIN, INT32_MAX, -0x1p31, 0x1p31};
  default:
    return (int_range){INT64_MIN, INT64_MAX, -0x1p63, 0x1p63};
  }
}

static void put_le(uint8_t *dst, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = (uint8_t)(v >> (8 * i));
}

static int elem_error(fill_ctx *f, const char *what) {
  return berth_errf(f->err, BERTH_E_INVALID, "input '" QN "': element %llu %s",
                    f->name, (unsigned long long)f->count, what);
}

/* Shortest text of a double, for messages. */
static const char *dbl_text(double x, char buf[BERTH_NUM_MAX]) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  buf[berth_num_float_bits(buf, bits, 11, 53)] = '\0';
  return buf;
}

static int range_error(fill_ctx *f, json_t *v) {
  char num[BERTH_NUM_MAX];
  if (json_is_integer(v))
    snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
  else
    dbl_text(json_real_value(v), num);
  return berth_errf(f->err, BERTH_E_INVALID,
                    "input '" QN "': element %llu (%s) is out of range for %s",
                    f->name, (unsigned long long)f->count, num,
                    berth_dtype_name(f->dt));
}

/* An integer literal too large for jansson, which the decoder turned into
 * a string "\0<digits>" (see quote_big_ints); NULL otherwise. Only after
 * quoting, and only "-?[0-9]+": a string the client sent stays a string. */
static const char *big_literal(const fill_ctx *f, json_t *v) {
  if (!f->big_ints || !json_is_string(v) || json_string_length(v) < 2)
    return NULL;
  const char *s = json_string_value(v);
  if (s[0] != '\0')
    return NULL;
  size_t n = json_string_length(v), i = s[1] == '-' ? 2 : 1;
  if (i == n)
    return NULL;
  for (; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return NULL;
  return s + 1;
}

static int big_range_error(fill_ctx *f, const char *digits) {
  return berth_errf(f->err, BERTH_E_INVALID,
                    "input '" QN "': element %llu (%.40s) is out of range for "
                    "%s",
                    f->name, (unsigned long long)f->count, digits,
                    berth_dtype_name(f->dt));
}

static int put_int(fill_ctx *f, json_t *v, uint8_t *dst) {
  int_range r = range_of(f->dt);
  uint64_t bits;
  const char *big = big_literal(f, v);
  if (big != NULL) {
    /* Only UINT64 holds integers beyond int64's range. */
    char *end = (char *)big;
    errno = 0;
    unsigned long long u = big[0] == '-' ? 0 : strtoull(big, &end, 10);
    if (big[0] == '-' || errno == ERANGE || *end != '\0' || u > r.hi)
      return big_range_error(f, big);
    bits = (uint64_t)u;
  } else if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    if (x < r.lo || (x > 0 && (uint64_t)x > r.hi))
      return range_error(f, v);
    bits = (uint64_t)x;
  } else if (json_is_real(v)) {
    double x = json_real_value(v);
    char num[BERTH_NUM_MAX];
    if (x != floor(x))
      return berth_errf(f->err, BERTH_E_INVALID,
                        "input '" QN "': element %llu (%s) is not an integer",
                        f->name, (unsigned long long)f->count,
                        dbl_text(x, num));
    if (!(x >= r.dlo && x < r.dhi))
      return range_error(f, v);
    bits = f->dt == BERTH_DT_UINT64 ? (uint64_t)x : (uint64_t)(int64_t)x;
  } else {
    return elem_error(f, "must be an integer");
  }
  put_le(dst, bits, f->esize);
  return BERTH_OK;
}

static int put_float(fill_ctx *f, json_t *v, uint8_t *dst) {
  double x;
  const char *big = big_literal(f, v);
  if (big != NULL) {
    x = strtod(big, NULL);
    if (isinf(x)) /* more digits than any double: jansson says overflow */
      return big_range_error(f, big);
  } else if (json_is_real(v))
    x = json_real_value(v);
  else if (json_is_integer(v))
    x = (double)json_integer_value(v);
  else
    return elem_error(f, "must be a number");
  uint64_t bits;
  switch (f->dt) {
  case BERTH_DT_FP64:
    memcpy(&bits, &x, sizeof bits);
    break;
  case BERTH_DT_FP32: {
    if (fabs(x) >= 0x1.ffffffp127) /* would round to infinity */
      return range_error(f, v);
    float y = (float)x;
    uint32_t b32;
    memcpy(&b32, &y, sizeof b32);
    bits = b32;
    break;
  }
  case BERTH_DT_FP16:
    bits = berth_num_narrow(x, 5, 10);
    if ((bits & 0x7FFF) == 0x7C00)
      return range_error(f, v);
    break;
  default: /* BF16 */
    bits = berth_num_narrow(x, 8, 7);
    if ((bits & 0x7FFF) == 0x7F80)
      return range_error(f, v);
    break;
  }
  put_le(dst, bits, f->esize);
  return BERTH_OK;
}

/* Converts one leaf of `data` into element f->count. */
static int put_elem(fill_ctx *f, json_t *v, uint8_t *dst) {
  switch (f->dt) {
  case BERTH_DT_BOOL:
    if (!json_is_boolean(v))
      return elem_error(f, "must be true or false");
    *dst = json_is_true(v) ? 1 : 0;
    return BERTH_OK;
  case BERTH_DT_FP16:
  case BERTH_DT_BF16:
  case BERTH_DT_FP32:
  case BERTH_DT_FP64:
    return put_float(f, v, dst);
  default:
    return put_int(f, v, dst);
  }
}

static int too_deep(fill_ctx *f) {
  return berth_errf(f->err, BERTH_E_INVALID,
                    "input '" QN "': data is nested more than %d levels deep",
                    f->name, BERTH_MAX_DIMS);
}

/* Flattens `data` row-major into f->out; counts every leaf, converts only
 * the first numel (a count mismatch is reported by the caller). */
static int fill_fixed(fill_ctx *f, json_t *arr, unsigned depth) {
  if (depth > BERTH_MAX_DIMS)
    return too_deep(f);
  size_t n = json_array_size(arr);
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(arr, i);
    if (json_is_array(v)) {
      int rc = fill_fixed(f, v, depth + 1);
      if (rc != BERTH_OK)
        return rc;
      continue;
    }
    if (f->count < f->numel) {
      int rc = put_elem(f, v, f->out + f->count * f->esize);
      if (rc != BERTH_OK)
        return rc;
    }
    f->count++;
  }
  return BERTH_OK;
}

/* BYTES, two passes: sizing (f->out NULL: checks types, counts leaves and
 * bytes against the limit) then copying each string behind its u32 length. */
static int fill_bytes(fill_ctx *f, json_t *arr, unsigned depth) {
  if (depth > BERTH_MAX_DIMS)
    return too_deep(f);
  size_t n = json_array_size(arr);
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(arr, i);
    if (json_is_array(v)) {
      int rc = fill_bytes(f, v, depth + 1);
      if (rc != BERTH_OK)
        return rc;
      continue;
    }
    if (!json_is_string(v) || big_literal(f, v) != NULL)
      return elem_error(f, "must be a string");
    size_t len = json_string_length(v);
    if (len > UINT32_MAX || len + 4 > f->max_bytes - f->out_len)
      return berth_errf(f->err, BERTH_E_TOO_LARGE,
                        "input '" QN "': data exceeds the limit of %zu bytes",
                        f->name, f->max_bytes);
    if (f->out != NULL) {
      put_le(f->out + f->out_len, len, 4);
      memcpy(f->out + f->out_len + 4, json_string_value(v), len);
    }
    f->out_len += 4 + len;
    f->count++;
  }
  return BERTH_OK;
}

/* "[2,3]" for messages. */
static void shape_text(const berth_tensor *t, char *dst, size_t cap) {
  size_t n = (size_t)snprintf(dst, cap, "[");
  for (uint32_t i = 0; i < t->ndim && n < cap; i++)
    n += (size_t)snprintf(dst + n, cap - n, "%s%lld", i ? "," : "",
                          (long long)t->shape[i]);
  if (n < cap)
    snprintf(dst + n, cap - n, "]");
}

static int count_error(fill_ctx *f, const berth_tensor *t) {
  char shape[BERTH_MAX_DIMS * 21 + 3];
  shape_text(t, shape, sizeof shape);
  return berth_errf(
      f->err, BERTH_E_INVALID,
      "input '" QN "': shape %s needs %llu elements, data has %llu", f->name,
      shape, (unsigned long long)f->numel, (unsigned long long)f->count);
}

/* Converts `data` into t->data / t->nbytes (t's dtype and shape are set). */
static int decode_data(json_t *data, berth_tensor *t, size_t max_bytes,
                       bool big_ints, berth_errmsg *err) {
  fill_ctx f = {.name = t->name,
                .dt = t->dtype,
                .err = err,
                .esize = berth_dtype_size(t->dtype),
                .max_bytes = max_bytes,
                .big_ints = big_ints};
  if (berth_shape_numel(t->shape, t->ndim, &f.numel) != BERTH_OK)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "input '" QN "': shape has too many elements", t->name);
  if (t->dtype == BERTH_DT_BYTES) {
    int rc = fill_bytes(&f, data, 1);
    if (rc != BERTH_OK)
      return rc;
    if (f.count != f.numel)
      return count_error(&f, t);
    t->nbytes = f.out_len;
    t->data = malloc(f.out_len ? f.out_len : 1);
    if (t->data == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    f.out = t->data;
    f.out_len = 0;
    f.count = 0;
    return fill_bytes(&f, data, 1);
  }
  if (f.numel > max_bytes / f.esize)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "input '" QN
                      "': %llu %s elements exceed the limit of %zu "
                      "bytes",
                      t->name, (unsigned long long)f.numel,
                      berth_dtype_name(t->dtype), max_bytes);
  t->nbytes = (size_t)f.numel * f.esize;
  t->data = malloc(t->nbytes ? t->nbytes : 1);
  if (t->data == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  f.out = t->data;
  int rc = fill_fixed(&f, data, 1);
  if (rc == BERTH_OK && f.count != f.numel)
    rc = count_error(&f, t);
  return rc;
}

/* A name field: non-empty string without NUL, at most NAME_MAX_BYTES;
 * *out gets a malloc'd copy. what is the field path for messages. */
static int dup_name(json_t *v, const char *what, size_t idx, char **out,
                    berth_errmsg *err) {
  if (!json_is_string(v) || json_string_length(v) == 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "%s[%zu].name must be a non-empty "
                      "string",
                      what, idx);
  size_t len = json_string_length(v);
  const char *s = json_string_value(v);
  if (len > NAME_MAX_BYTES)
    return berth_errf(err, BERTH_E_INVALID,
                      "%s[%zu].name is longer than %d "
                      "bytes",
                      what, idx, NAME_MAX_BYTES);
  if (memchr(s, '\0', len) != NULL)
    return berth_errf(err, BERTH_E_INVALID, "%s[%zu].name contains NUL", what,
                      idx);
  *out = malloc(len + 1);
  if (*out == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  memcpy(*out, s, len + 1);
  return BERTH_OK;
}

static int decode_shape(json_t *v, size_t idx, berth_tensor *t,
                        berth_errmsg *err) {
  if (!json_is_array(v))
    return berth_errf(err, BERTH_E_INVALID,
                      "inputs[%zu].shape must be an array "
                      "of non-negative integers",
                      idx);
  size_t n = json_array_size(v);
  if (n > BERTH_MAX_DIMS)
    return berth_errf(err, BERTH_E_INVALID,
                      "inputs[%zu].shape has %zu "
                      "dimensions; at most %d are allowed",
                      idx, n, BERTH_MAX_DIMS);
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_array_get(v, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return berth_errf(err, BERTH_E_INVALID,
                        "inputs[%zu].shape must be an "
                        "array of non-negative integers",
                        idx);
    t->shape[i] = json_integer_value(d);
  }
  t->ndim = (uint32_t)n;
  return BERTH_OK;
}

/* The input's datatype and parameters (which may ask for the binary
 * extension, not handled here). */
static int decode_type(json_t *in, size_t idx, berth_tensor *t,
                       berth_errmsg *err) {
  json_t *v = json_object_get(in, "datatype");
  if (!json_is_string(v))
    return berth_errf(err, BERTH_E_INVALID,
                      "inputs[%zu].datatype must be a "
                      "string",
                      idx);
  t->dtype = berth_dtype_from_name(json_string_value(v), json_string_length(v));
  if (t->dtype == BERTH_DT_INVALID)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': unknown datatype "
                      "'%.40s'",
                      t->name, json_string_value(v));
  json_t *params = json_object_get(in, "parameters");
  if (params != NULL && !json_is_object(params))
    return berth_errf(err, BERTH_E_INVALID,
                      "inputs[%zu].parameters must be an "
                      "object",
                      idx);
  if (json_object_get(params, "binary_data_size") != NULL)
    return berth_errf(err, BERTH_E_UNSUPPORTED,
                      "input '" QN "': binary tensor "
                      "data (parameters.binary_data_size) is not supported "
                      "here; send the data in JSON",
                      t->name);
  return BERTH_OK;
}

/* An input whose bytes are in a shared-memory region: recorded in
 * req->input_shm; the frontend maps the bytes in (the tensor has none). */
static int decode_shm_input(json_t *params, size_t idx,
                            berth_infer_request *req, berth_errmsg *err) {
  if (req->input_shm == NULL) {
    req->input_shm = calloc(req->n_inputs, sizeof *req->input_shm);
    if (req->input_shm == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  char what[300];
  snprintf(what, sizeof what, "input '%.256s'", req->inputs[idx].name);
  return berth_shm_params(params, what, &req->input_shm[idx], err);
}

static int decode_input(json_t *in, size_t idx, const berth_json_limits *lim,
                        bool big_ints, berth_infer_request *req,
                        berth_errmsg *err) {
  berth_tensor *t = &req->inputs[idx];
  if (!json_is_object(in))
    return berth_errf(err, BERTH_E_INVALID, "inputs[%zu] must be an object",
                      idx);
  int rc = dup_name(json_object_get(in, "name"), "inputs", idx, &t->name, err);
  if (rc != BERTH_OK)
    return rc;
  for (size_t i = 0; i < idx; i++)
    if (strcmp(req->inputs[i].name, t->name) == 0)
      return berth_errf(err, BERTH_E_INVALID,
                        "input '" QN "' appears twice "
                        "(inputs[%zu] and inputs[%zu])",
                        t->name, i, idx);
  rc = decode_shape(json_object_get(in, "shape"), idx, t, err);
  if (rc == BERTH_OK)
    rc = decode_type(in, idx, t, err);
  if (rc != BERTH_OK)
    return rc;
  json_t *data = json_object_get(in, "data");
  json_t *params = json_object_get(in, "parameters");
  if (json_object_get(params, "shared_memory_region") != NULL) {
    if (data != NULL)
      return berth_errf(err, BERTH_E_INVALID,
                        "input '" QN "' names a shared "
                        "memory region and has data; send one of them",
                        t->name);
    return decode_shm_input(params, idx, req, err);
  }
  if (!json_is_array(data))
    return berth_errf(err, BERTH_E_INVALID, "inputs[%zu].data must be an array",
                      idx);
  return decode_data(data, t, lim->max_tensor_bytes, big_ints, err);
}

static int decode_inputs(json_t *root, const berth_json_limits *lim,
                         bool big_ints, berth_infer_request *req,
                         berth_errmsg *err) {
  json_t *inputs = json_object_get(root, "inputs");
  if (!json_is_array(inputs))
    return berth_errf(err, BERTH_E_INVALID, "inputs must be an array");
  size_t n = json_array_size(inputs);
  if (n > lim->max_inputs)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "request has %zu inputs; the "
                      "limit is %zu",
                      n, lim->max_inputs);
  if (n == 0)
    return BERTH_OK;
  req->inputs = calloc(n, sizeof *req->inputs);
  if (req->inputs == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  req->n_inputs = n;
  for (size_t i = 0; i < n; i++) {
    int rc =
        decode_input(json_array_get(inputs, i), i, lim, big_ints, req, err);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

static int decode_outputs(json_t *root, const berth_json_limits *lim,
                          berth_infer_request *req, berth_errmsg *err) {
  json_t *outs = json_object_get(root, "outputs");
  if (outs == NULL)
    return BERTH_OK;
  if (!json_is_array(outs))
    return berth_errf(err, BERTH_E_INVALID, "outputs must be an array");
  size_t n = json_array_size(outs);
  if (n > lim->max_inputs)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "request names %zu outputs; the "
                      "limit is %zu",
                      n, lim->max_inputs);
  if (n == 0)
    return BERTH_OK;
  req->outputs = calloc(n, sizeof *req->outputs);
  if (req->outputs == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  req->n_outputs = n;
  for (size_t i = 0; i < n; i++) {
    json_t *o = json_array_get(outs, i);
    berth_output_request *r = &req->outputs[i];
    if (!json_is_object(o))
      return berth_errf(err, BERTH_E_INVALID, "outputs[%zu] must be an object",
                        i);
    int rc = dup_name(json_object_get(o, "name"), "outputs", i, &r->name, err);
    if (rc != BERTH_OK)
      return rc;
    for (size_t j = 0; j < i; j++)
      if (strcmp(req->outputs[j].name, r->name) == 0)
        return berth_errf(err, BERTH_E_INVALID,
                          "output '" QN "' is requested "
                          "twice",
                          r->name);
    json_t *p = json_object_get(o, "parameters");
    if (p != NULL && !json_is_object(p))
      return berth_errf(err, BERTH_E_INVALID,
                        "outputs[%zu].parameters must be "
                        "an object",
                        i);
    r->parameters = json_incref(p);
  }
  return BERTH_OK;
}

static int decode_root(json_t *root, const berth_json_limits *lim,
                       bool big_ints, berth_infer_request *req,
                       berth_errmsg *err) {
  if (!json_is_object(root))
    return berth_errf(err, BERTH_E_INVALID, "request must be a JSON object");
  json_t *id = json_object_get(root, "id");
  if (id != NULL) {
    if (!json_is_string(id))
      return berth_errf(err, BERTH_E_INVALID, "id must be a string");
    size_t len = json_string_length(id);
    if (memchr(json_string_value(id), '\0', len) != NULL)
      return berth_errf(err, BERTH_E_INVALID, "id contains NUL");
    req->id = malloc(len + 1);
    if (req->id == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    memcpy(req->id, json_string_value(id), len + 1);
  }
  json_t *params = json_object_get(root, "parameters");
  if (params != NULL && !json_is_object(params))
    return berth_errf(err, BERTH_E_INVALID, "parameters must be an object");
  req->parameters = json_incref(params);
  int rc = decode_inputs(root, lim, big_ints, req, err);
  if (rc == BERTH_OK)
    rc = decode_outputs(root, lim, req, err);
  return rc;
}

/* Rejects nesting deeper than max before jansson builds anything. */
static int check_depth(const char *s, size_t n, size_t max, berth_errmsg *err) {
  size_t depth = 0;
  for (size_t i = 0; i < n; i++) {
    switch (s[i]) {
    case '"': /* skip the string, escapes included */
      for (i++; i < n && s[i] != '"'; i++)
        if (s[i] == '\\')
          i++;
      break;
    case '[':
    case '{':
      if (++depth > max)
        return berth_errf(err, BERTH_E_INVALID,
                          "JSON nesting is deeper than "
                          "%zu levels (byte %zu)",
                          max, i);
      break;
    case ']':
    case '}':
      if (depth > 0)
        depth--;
      break;
    default:
      break;
    }
  }
  return BERTH_OK;
}

/* jansson stores integers as long long and refuses larger literals, but
 * UINT64 data needs them. When it refused one, the body is copied with every
 * integer literal outside strings that does not fit int64 written as a
 * string "\u0000<digits>", which put_int and put_float read back exactly. */
static bool fits_int64(const char *p, size_t n) {
  bool neg = p[0] == '-';
  const char *d = p + neg;
  size_t nd = n - neg;
  while (nd > 1 && *d == '0') {
    d++;
    nd--;
  }
  const char *lim = neg ? "9223372036854775808" : "9223372036854775807";
  if (nd != 19)
    return nd < 19;
  return memcmp(d, lim, 19) <= 0;
}

static int quote_big_ints(const char *body, size_t len, berth_buf *out) {
  size_t i = 0;
  while (i < len) {
    char ch = body[i];
    if (ch == '"') {
      size_t j = i + 1;
      while (j < len && body[j] != '"')
        j += body[j] == '\\' ? 2 : 1;
      j = j < len ? j + 1 : len;
      if (berth_buf_append(out, body + i, j - i) != BERTH_OK)
        return BERTH_E_NOMEM;
      i = j;
      continue;
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) {
      size_t j = i + (ch == '-');
      bool integral = true;
      while (j < len && ((body[j] >= '0' && body[j] <= '9') || body[j] == '.' ||
                         body[j] == 'e' || body[j] == 'E' ||
                         ((body[j] == '+' || body[j] == '-') &&
                          (body[j - 1] == 'e' || body[j - 1] == 'E')))) {
        if (body[j] == '.' || body[j] == 'e' || body[j] == 'E')
          integral = false;
        j++;
      }
      bool quote = integral && j - i > (size_t)(ch == '-') &&
                   !fits_int64(body + i, j - i);
      int rc = quote ? berth_buf_append(out, "\"\\u0000", 7) : BERTH_OK;
      if (rc == BERTH_OK)
        rc = berth_buf_append(out, body + i, j - i);
      if (rc == BERTH_OK && quote)
        rc = berth_buf_append(out, "\"", 1);
      if (rc != BERTH_OK)
        return BERTH_E_NOMEM;
      i = j;
      continue;
    }
    if (berth_buf_append(out, body + i, 1) != BERTH_OK)
      return BERTH_E_NOMEM;
    i++;
  }
  return BERTH_OK;
}

static berth_json_limits resolve_limits(const berth_json_limits *limits) {
  berth_json_limits lim = {DEFAULT_MAX_INPUTS, DEFAULT_MAX_TENSOR_BYTES,
                           DEFAULT_MAX_DEPTH};
  if (limits != NULL) { /* a zero field keeps its default */
    if (limits->max_inputs)
      lim.max_inputs = limits->max_inputs;
    if (limits->max_tensor_bytes)
      lim.max_tensor_bytes = limits->max_tensor_bytes;
    if (limits->max_depth)
      lim.max_depth = limits->max_depth;
  }
  return lim;
}

int berth_json_decode_infer_request(const char *body, size_t len,
                                    const berth_json_limits *limits,
                                    berth_infer_request *out,
                                    berth_errmsg *err) {
  berth_json_limits lim = resolve_limits(limits);
  if (berth_json_decode_fast(body, len, &lim, out) == BERTH_OK)
    return BERTH_OK;
  return berth_json_decode_full(body, len, &lim, out, err);
}

int berth_json_decode_full(const char *body, size_t len,
                           const berth_json_limits *limits,
                           berth_infer_request *out, berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  berth_json_limits lim = resolve_limits(limits);
  if (body == NULL)
    return berth_errf(err, BERTH_E_PARSE, "request body is empty");
  int rc = check_depth(body, len, lim.max_depth, err);
  if (rc != BERTH_OK)
    return rc;
  json_error_t jerr;
  json_t *root =
      json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
  bool big_ints = false;
  if (root == NULL && (strstr(jerr.text, "too big integer") != NULL ||
                       strstr(jerr.text, "too big negative integer") != NULL)) {
    berth_buf quoted;
    berth_buf_init(&quoted, len + len / 2 + 64);
    if (quote_big_ints(body, len, &quoted) == BERTH_OK) {
      root = json_loadb(quoted.data, quoted.len,
                        JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
      big_ints = true;
    }
    berth_buf_free(&quoted);
  }
  if (root == NULL)
    return berth_errf(err, BERTH_E_PARSE,
                      "request is not valid JSON: %s "
                      "(line %d, column %d, byte %d)",
                      jerr.text, jerr.line, jerr.column, jerr.position);
  berth_infer_request req = {0};
  rc = decode_root(root, &lim, big_ints, &req, err);
  json_decref(root);
  if (rc != BERTH_OK) {
    berth_infer_request_clear(&req);
    return rc;
  }
  *out = req;
  return BERTH_OK;
}
