/* Berth engine: the Open Inference Protocol v2 over gRPC — protobuf <->
 * tensors (protoc-c's generated code does the wire format). The framing
 * and header helpers are in grpc_wire.c. See codec_grpc.h.
 *
 * Decoding unpacks with a bounded allocator: protobuf's compact forms can
 * expand many times when unpacked (a packed bool becomes an int, a 2-byte
 * empty sub-message a whole struct), so unpacking is refused past a budget
 * proportional to the message. Raw tensor bytes are taken over from the
 * unpacked message without a copy. Encoding points the generated structs at
 * the tensors' own bytes and packs once into the output buffer.
 */
#include "codec_grpc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_service.pb-c.h"

#define QN "%.100s"
#define NAME_MAX_BYTES 65535
#define DEFAULT_MAX_INPUTS 256
#define DEFAULT_MAX_TENSOR ((size_t)256 << 20)
#define DECODE_SLACK ((size_t)1 << 20)
#define DECODE_FACTOR 8

int berth_grpc_append_message(const ProtobufCMessage *m, berth_buf *out,
                              berth_errmsg *err) {
  size_t size = protobuf_c_message_get_packed_size(m);
  if (size > UINT32_MAX)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "response of %zu bytes is too large for "
                      "gRPC",
                      size);
  uint8_t *at = (uint8_t *)berth_buf_reserve(out, BERTH_GRPC_PREFIX + size);
  if (at == NULL)
    return berth_errf(
        err, out->len + size >= out->max ? BERTH_E_TOO_LARGE : BERTH_E_NOMEM,
        "response of %zu bytes exceeds the limit of %zu bytes, or memory", size,
        out->max);
  at[0] = 0;
  at[1] = (uint8_t)(size >> 24);
  at[2] = (uint8_t)(size >> 16);
  at[3] = (uint8_t)(size >> 8);
  at[4] = (uint8_t)size;
  size_t packed = protobuf_c_message_pack(m, at + BERTH_GRPC_PREFIX);
  berth_buf_commit(out, BERTH_GRPC_PREFIX + packed);
  return BERTH_OK;
}

/* ---- bounded unpacking ---------------------------------------------- */

typedef struct budget {
  size_t left;
  bool refused; /* an allocation went over the budget */
} budget;

static void *budget_alloc(void *data, size_t size) {
  budget *b = data;
  if (size > b->left) {
    b->refused = true;
    return NULL;
  }
  void *p = malloc(size ? size : 1);
  if (p != NULL)
    b->left -= size;
  return p;
}

static void budget_free(void *data, void *p) {
  (void)data;
  free(p); /* plain malloc blocks: the decoder may keep some and free() them */
}

static size_t decode_budget(size_t len) {
  return len > (SIZE_MAX - DECODE_SLACK) / DECODE_FACTOR
             ? SIZE_MAX
             : len * DECODE_FACTOR + DECODE_SLACK;
}

ProtobufCMessage *berth_grpc_unpack(const ProtobufCMessageDescriptor *desc,
                                    const uint8_t *msg, size_t len) {
  budget b = {decode_budget(len), false};
  ProtobufCAllocator alloc = {budget_alloc, budget_free, &b};
  return protobuf_c_message_unpack(desc, &alloc, len, msg);
}

/* ---- parameters ----------------------------------------------------- */

static int param_to_json(json_t *obj, const char *key,
                         const Inference__InferParameter *p, const char *where,
                         berth_errmsg *err) {
  json_t *v = NULL;
  switch (p != NULL ? p->parameter_choice_case
                    : INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE__NOT_SET) {
  case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM:
    v = json_boolean(p->bool_param);
    break;
  case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM:
    v = json_integer(p->int64_param);
    break;
  case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM:
    v = json_stringn(p->string_param, strlen(p->string_param));
    if (v == NULL)
      return berth_errf(err, BERTH_E_INVALID,
                        "%s parameter '" QN "' is not valid UTF-8", where, key);
    break;
  case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM:
    if (!isfinite(p->double_param))
      return berth_errf(err, BERTH_E_INVALID,
                        "%s parameter '" QN "' is not a finite "
                        "number",
                        where, key);
    v = json_real(p->double_param);
    break;
  case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM:
    v = p->uint64_param <= INT64_MAX ? json_integer((json_int_t)p->uint64_param)
                                     : json_real((double)p->uint64_param);
    break;
  default:
    v = json_null();
    break;
  }
  if (v == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (json_object_set_new(obj, key, v) != 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "%s parameter name '" QN "' is not valid "
                      "UTF-8",
                      where, key);
  return BERTH_OK;
}

/* Every generated map entry type is {base, key, value}: one loop for all. */
#define PARAMS_TO_JSON(n, entries, where, outp, err, rc)                       \
  do {                                                                         \
    if ((n) == 0)                                                              \
      break;                                                                   \
    *(outp) = json_object();                                                   \
    if (*(outp) == NULL) {                                                     \
      rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");                    \
      break;                                                                   \
    }                                                                          \
    for (size_t k_ = 0; k_ < (n) && rc == BERTH_OK; k_++)                      \
      rc = param_to_json(*(outp), (entries)[k_]->key, (entries)[k_]->value,    \
                         where, err);                                          \
  } while (0)

/* ---- decoding ------------------------------------------------------- */

static int check_name(const char *s, const char *what, size_t idx,
                      berth_errmsg *err) {
  size_t len = strlen(s);
  if (len == 0)
    return berth_errf(err, BERTH_E_INVALID, "%s[%zu].name must not be empty",
                      what, idx);
  if (len > NAME_MAX_BYTES)
    return berth_errf(err, BERTH_E_INVALID,
                      "%s[%zu].name is longer than %d bytes", what, idx,
                      NAME_MAX_BYTES);
  return BERTH_OK;
}

static size_t contents_count(const Inference__InferTensorContents *c) {
  return c->n_bool_contents + c->n_int_contents + c->n_int64_contents +
         c->n_uint_contents + c->n_uint64_contents + c->n_fp32_contents +
         c->n_fp64_contents + c->n_bytes_contents;
}

/* The typed member a datatype uses, its name and element count. */
static const char *contents_member(berth_dtype dt,
                                   const Inference__InferTensorContents *c,
                                   size_t *n) {
  switch (dt) {
  case BERTH_DT_BOOL:
    *n = c->n_bool_contents;
    return "bool_contents";
  case BERTH_DT_INT8:
  case BERTH_DT_INT16:
  case BERTH_DT_INT32:
    *n = c->n_int_contents;
    return "int_contents";
  case BERTH_DT_INT64:
    *n = c->n_int64_contents;
    return "int64_contents";
  case BERTH_DT_UINT8:
  case BERTH_DT_UINT16:
  case BERTH_DT_UINT32:
    *n = c->n_uint_contents;
    return "uint_contents";
  case BERTH_DT_UINT64:
    *n = c->n_uint64_contents;
    return "uint64_contents";
  case BERTH_DT_FP32:
    *n = c->n_fp32_contents;
    return "fp32_contents";
  case BERTH_DT_FP64:
    *n = c->n_fp64_contents;
    return "fp64_contents";
  case BERTH_DT_BYTES:
    *n = c->n_bytes_contents;
    return "bytes_contents";
  default:
    *n = 0;
    return NULL;
  }
}

static int range_error(const berth_tensor *t, size_t i, long long v,
                       berth_errmsg *err) {
  return berth_errf(err, BERTH_E_INVALID,
                    "input '" QN "': element %zu (%lld) is out of "
                    "range for %s",
                    t->name, i, v, berth_dtype_name(t->dtype));
}

/* Fills t->data from typed contents (count already checked == numel). */
static int fill_typed(berth_tensor *t, const Inference__InferTensorContents *c,
                      size_t numel, size_t max_bytes, berth_errmsg *err) {
  size_t esize = berth_dtype_size(t->dtype), nbytes = 0;
  if (t->dtype == BERTH_DT_BYTES) {
    for (size_t i = 0; i < numel; i++) {
      size_t l = c->bytes_contents[i].len;
      if (l > UINT32_MAX || max_bytes - nbytes < 4 ||
          l > max_bytes - nbytes - 4)
        return berth_errf(err, BERTH_E_TOO_LARGE,
                          "input '" QN "': BYTES data exceeds "
                          "the limit of %zu bytes",
                          t->name, max_bytes);
      nbytes += 4 + l;
    }
  } else {
    if (numel > max_bytes / esize)
      return berth_errf(err, BERTH_E_TOO_LARGE,
                        "input '" QN "': %zu %s elements "
                        "exceed the limit of %zu bytes",
                        t->name, numel, berth_dtype_name(t->dtype), max_bytes);
    nbytes = numel * esize;
  }
  uint8_t *d = malloc(nbytes ? nbytes : 1);
  if (d == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  t->data = d;
  t->nbytes = nbytes;
  const void *same = NULL; /* members as wide as the datatype: one copy */
  switch (t->dtype) {
  case BERTH_DT_INT32:
    same = c->int_contents;
    break;
  case BERTH_DT_INT64:
    same = c->int64_contents;
    break;
  case BERTH_DT_UINT32:
    same = c->uint_contents;
    break;
  case BERTH_DT_UINT64:
    same = c->uint64_contents;
    break;
  case BERTH_DT_FP32:
    same = c->fp32_contents;
    break;
  case BERTH_DT_FP64:
    same = c->fp64_contents;
    break;
  default:
    break;
  }
  if (same != NULL || numel == 0) {
    if (nbytes > 0)
      memcpy(d, same, nbytes); /* little-endian host, as the engine assumes */
    return BERTH_OK;
  }
  for (size_t i = 0; i < numel; i++) {
    switch (t->dtype) {
    case BERTH_DT_BOOL:
      d[i] = c->bool_contents[i] ? 1 : 0;
      break;
    case BERTH_DT_INT8: {
      int32_t v = c->int_contents[i];
      if (v < INT8_MIN || v > INT8_MAX)
        return range_error(t, i, v, err);
      d[i] = (uint8_t)(int8_t)v;
      break;
    }
    case BERTH_DT_INT16: {
      int32_t v = c->int_contents[i];
      if (v < INT16_MIN || v > INT16_MAX)
        return range_error(t, i, v, err);
      int16_t w = (int16_t)v;
      memcpy(d + 2 * i, &w, 2);
      break;
    }
    case BERTH_DT_UINT8: {
      uint32_t v = c->uint_contents[i];
      if (v > UINT8_MAX)
        return range_error(t, i, v, err);
      d[i] = (uint8_t)v;
      break;
    }
    case BERTH_DT_UINT16: {
      uint32_t v = c->uint_contents[i];
      if (v > UINT16_MAX)
        return range_error(t, i, v, err);
      uint16_t w = (uint16_t)v;
      memcpy(d + 2 * i, &w, 2);
      break;
    }
    case BERTH_DT_BYTES: {
      const ProtobufCBinaryData *b = &c->bytes_contents[i];
      uint32_t l = (uint32_t)b->len;
      uint8_t p[4] = {(uint8_t)l, (uint8_t)(l >> 8), (uint8_t)(l >> 16),
                      (uint8_t)(l >> 24)};
      memcpy(d, p, 4);
      if (l > 0)
        memcpy(d + 4, b->data, l);
      d += 4 + l;
      break;
    }
    default:
      return berth_errf(err, BERTH_E_INTERNAL,
                        "input '" QN "': no typed contents for %s", t->name,
                        berth_dtype_name(t->dtype));
    }
  }
  return BERTH_OK;
}

/* One input: name, datatype, shape, then its data from raw (when not NULL)
 * or from its typed contents. */
static int decode_head(Inference__ModelInferRequest__InferInputTensor *in,
                       size_t idx, berth_tensor *t, berth_errmsg *err) {
  int rc = check_name(in->name, "inputs", idx, err);
  if (rc != BERTH_OK)
    return rc;
  t->name = strdup(in->name);
  if (t->name == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  t->dtype = berth_dtype_from_name(in->datatype, strlen(in->datatype));
  if (t->dtype == BERTH_DT_INVALID)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': unknown datatype '%.40s'", t->name,
                      in->datatype);
  if (in->n_shape > BERTH_MAX_DIMS)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': shape has %zu dimensions; "
                      "at most %d are allowed",
                      t->name, in->n_shape, BERTH_MAX_DIMS);
  for (size_t i = 0; i < in->n_shape; i++) {
    if (in->shape[i] < 0)
      return berth_errf(err, BERTH_E_INVALID,
                        "input '" QN "': shape dimension %zu is "
                        "negative (%lld)",
                        t->name, i, (long long)in->shape[i]);
    t->shape[i] = in->shape[i];
  }
  t->ndim = (uint32_t)in->n_shape;
  return BERTH_OK;
}

static int decode_input(Inference__ModelInferRequest__InferInputTensor *in,
                        size_t idx, ProtobufCBinaryData *raw, size_t max_bytes,
                        berth_tensor *t, berth_errmsg *err) {
  int rc = decode_head(in, idx, t, err);
  if (rc != BERTH_OK)
    return rc;
  uint64_t numel;
  if (berth_shape_numel(t->shape, t->ndim, &numel) != BERTH_OK ||
      numel > SIZE_MAX / 16)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "input '" QN "': shape has too many "
                      "elements",
                      t->name);
  if (raw != NULL) {
    if (raw->len > max_bytes)
      return berth_errf(err, BERTH_E_TOO_LARGE,
                        "input '" QN "': %zu bytes of raw "
                        "contents exceed the limit of %zu bytes",
                        t->name, raw->len, max_bytes);
    if (raw->len > 0 && raw->data != NULL) {
      t->data = raw->data; /* taken over: a plain malloc block */
      raw->data = NULL;
    } else {
      t->data = malloc(1);
      if (t->data == NULL)
        return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    }
    t->nbytes = raw->len;
    raw->len = 0;
    if (berth_tensor_check(t, err) != BERTH_OK) {
      size_t esize = berth_dtype_size(t->dtype);
      if (t->dtype == BERTH_DT_BYTES || t->dtype == BERTH_DT_BOOL)
        return BERTH_E_INVALID; /* its message explains the prefixes or values */
      return berth_errf(
          err, BERTH_E_INVALID,
          "input '" QN "': shape needs %llu %s "
          "elements (%llu bytes), raw_input_contents holds %zu bytes",
          t->name, (unsigned long long)numel, berth_dtype_name(t->dtype),
          (unsigned long long)(numel * esize), t->nbytes);
    }
    return BERTH_OK;
  }
  const Inference__InferTensorContents *c = in->contents;
  static const Inference__InferTensorContents none =
      INFERENCE__INFER_TENSOR_CONTENTS__INIT;
  if (c == NULL)
    c = &none;
  size_t n = 0;
  const char *member = contents_member(t->dtype, c, &n);
  if (member == NULL) {
    if (numel == 0 && contents_count(c) == 0)
      return fill_typed(t, c, 0, max_bytes, err);
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': %s has no typed contents "
                      "member; send it in raw_input_contents",
                      t->name, berth_dtype_name(t->dtype));
  }
  if (contents_count(c) != n)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': %s data belongs in "
                      "contents.%s, and only there",
                      t->name, berth_dtype_name(t->dtype), member);
  if (n != numel) {
    if (n == 0)
      return berth_errf(err, BERTH_E_INVALID,
                        "input '" QN "' has no data: fill "
                        "contents.%s or raw_input_contents",
                        t->name, member);
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': shape needs %llu elements, "
                      "contents.%s holds %zu",
                      t->name, (unsigned long long)numel, member, n);
  }
  return fill_typed(t, c, n, max_bytes, err);
}

static int decode_outputs(Inference__ModelInferRequest *m, size_t max_outputs,
                          berth_infer_request *out, berth_errmsg *err) {
  if (m->n_outputs == 0)
    return BERTH_OK;
  if (m->n_outputs > max_outputs)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "request names %zu outputs; the limit is "
                      "%zu",
                      m->n_outputs, max_outputs);
  out->outputs = calloc(m->n_outputs, sizeof *out->outputs);
  if (out->outputs == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  out->n_outputs = m->n_outputs;
  for (size_t i = 0; i < m->n_outputs; i++) {
    Inference__ModelInferRequest__InferRequestedOutputTensor *o = m->outputs[i];
    int rc = check_name(o->name, "outputs", i, err);
    if (rc != BERTH_OK)
      return rc;
    for (size_t k = 0; k < i; k++)
      if (strcmp(out->outputs[k].name, o->name) == 0)
        return berth_errf(err, BERTH_E_INVALID,
                          "output '" QN "' is requested twice", o->name);
    out->outputs[i].name = strdup(o->name);
    if (out->outputs[i].name == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    PARAMS_TO_JSON(o->n_parameters, o->parameters, "output",
                   &out->outputs[i].parameters, err, rc);
    if (rc != BERTH_OK)
      return rc;
    if (json_object_get(out->outputs[i].parameters, "classification") != NULL)
      return berth_errf(err, BERTH_E_UNSUPPORTED,
                        "output '" QN "': the classification extension is "
                        "not supported; request the output itself",
                        o->name);
  }
  return BERTH_OK;
}

/* The inputs that name a shared-memory region (their parameters), into
 * out->input_shm (left NULL when none does); *n_shm counts them. */
static int decode_shm_refs(Inference__ModelInferRequest *m,
                           berth_infer_request *out, size_t *n_shm,
                           berth_errmsg *err) {
  for (size_t i = 0; i < m->n_inputs; i++) {
    Inference__ModelInferRequest__InferInputTensor *in = m->inputs[i];
    json_t *params = NULL;
    int rc = BERTH_OK;
    PARAMS_TO_JSON(in->n_parameters, in->parameters, "input", &params, err, rc);
    if (rc == BERTH_OK &&
        json_object_get(params, "shared_memory_region") != NULL) {
      if (out->input_shm == NULL)
        out->input_shm = calloc(m->n_inputs, sizeof *out->input_shm);
      if (out->input_shm == NULL) {
        rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
      } else {
        char what[300];
        snprintf(what, sizeof what, "input '%.256s'", in->name);
        rc = berth_shm_params(params, what, &out->input_shm[i], err);
        *n_shm += 1;
      }
    }
    json_decref(params);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

static int decode_request(Inference__ModelInferRequest *m,
                          const berth_grpc_limits *lim,
                          berth_grpc_target *target, berth_infer_request *out,
                          berth_errmsg *err) {
  if (m->model_name[0] == '\0')
    return berth_errf(err, BERTH_E_INVALID, "model_name must not be empty");
  target->model_name = strdup(m->model_name);
  if (target->model_name == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (m->model_version[0] != '\0') {
    target->model_version = strdup(m->model_version);
    if (target->model_version == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  if (m->id[0] != '\0') {
    out->id = strdup(m->id);
    if (out->id == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  int rc = BERTH_OK;
  PARAMS_TO_JSON(m->n_parameters, m->parameters, "request", &out->parameters,
                 err, rc);
  if (rc != BERTH_OK)
    return rc;
  if (m->n_inputs > lim->max_inputs)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "request has %zu inputs; the limit is %zu", m->n_inputs,
                      lim->max_inputs);
  if (m->n_inputs > 0) {
    out->inputs = calloc(m->n_inputs, sizeof *out->inputs);
    if (out->inputs == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    out->n_inputs = m->n_inputs;
  }
  size_t n_shm = 0;
  rc = decode_shm_refs(m, out, &n_shm, err);
  if (rc != BERTH_OK)
    return rc;
  bool raw = m->n_raw_input_contents > 0;
  /* Triton's order: an input with typed contents beside raw contents is
   * the error named first, before the count of raw entries */
  for (size_t i = 0; raw && i < m->n_inputs; i++) {
    Inference__ModelInferRequest__InferInputTensor *in = m->inputs[i];
    bool in_shm = out->input_shm != NULL && out->input_shm[i].region != NULL;
    if (!in_shm && in->contents != NULL && contents_count(in->contents) > 0)
      return berth_errf(
          err, BERTH_E_INVALID,
          "contents field must not be specified "
          "when using raw_input_contents for '" QN "' for model '" QN
          "' (send every input in one form: all raw or all typed)",
          in->name, m->model_name != NULL ? m->model_name : "");
  }
  if (raw && m->n_raw_input_contents != m->n_inputs - n_shm)
    return berth_errf(
        err, BERTH_E_INVALID,
        "raw_input_contents has %zu entries for %zu "
        "inputs; it needs one per input not in shared memory, in order",
        m->n_raw_input_contents, m->n_inputs - n_shm);
  for (size_t i = 0, r = 0; i < m->n_inputs; i++) {
    Inference__ModelInferRequest__InferInputTensor *in = m->inputs[i];
    if (out->input_shm != NULL && out->input_shm[i].region != NULL) {
      if (in->contents != NULL && contents_count(in->contents) > 0)
        return berth_errf(err, BERTH_E_INVALID,
                          "input '" QN "' names a shared memory "
                          "region and has contents; send one of them",
                          in->name);
      rc = decode_head(in, i, &out->inputs[i], err);
    } else {
      if (raw && in->contents != NULL && contents_count(in->contents) > 0)
        return berth_errf(
            err, BERTH_E_INVALID,
            "contents field must not be specified "
            "when using raw_input_contents for '" QN "' for model '" QN
            "' (send every input in one form: all raw or all typed)",
            in->name, m->model_name != NULL ? m->model_name : "");
      rc = decode_input(in, i, raw ? &m->raw_input_contents[r++] : NULL,
                        lim->max_tensor_bytes, &out->inputs[i], err);
    }
    if (rc != BERTH_OK)
      return rc;
    for (size_t k = 0; k < i; k++)
      if (strcmp(out->inputs[k].name, out->inputs[i].name) == 0)
        return berth_errf(err, BERTH_E_INVALID,
                          "input '" QN "' appears twice "
                          "(inputs[%zu] and inputs[%zu])",
                          in->name, k, i);
  }
  return decode_outputs(m, lim->max_inputs, out, err);
}

void berth_grpc_target_clear(berth_grpc_target *t) {
  if (t == NULL)
    return;
  free(t->model_name);
  free(t->model_version);
  memset(t, 0, sizeof *t);
}

int berth_grpc_decode_infer_request(const uint8_t *msg, size_t len,
                                    const berth_grpc_limits *limits,
                                    berth_grpc_target *target,
                                    berth_infer_request *out,
                                    berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  memset(target, 0, sizeof *target);
  berth_grpc_limits lim = {DEFAULT_MAX_INPUTS, DEFAULT_MAX_TENSOR, 0};
  if (limits != NULL) {
    if (limits->max_inputs > 0)
      lim.max_inputs = limits->max_inputs;
    if (limits->max_tensor_bytes > 0)
      lim.max_tensor_bytes = limits->max_tensor_bytes;
    lim.max_decode_bytes = limits->max_decode_bytes;
  }
  if (lim.max_decode_bytes == 0)
    lim.max_decode_bytes = decode_budget(len);
  budget b = {lim.max_decode_bytes, false};
  ProtobufCAllocator alloc = {budget_alloc, budget_free, &b};
  Inference__ModelInferRequest *m =
      inference__model_infer_request__unpack(&alloc, len, msg);
  if (m == NULL) {
    if (b.refused)
      return berth_errf(err, BERTH_E_TOO_LARGE,
                        "ModelInferRequest needs more than %zu "
                        "bytes of memory to decode",
                        lim.max_decode_bytes);
    return berth_errf(err, BERTH_E_PARSE,
                      "the message is not a valid ModelInferRequest "
                      "(protobuf wire format)");
  }
  int rc = decode_request(m, &lim, target, out, err);
  inference__model_infer_request__free_unpacked(m, &alloc);
  if (rc != BERTH_OK) {
    berth_infer_request_clear(out);
    berth_grpc_target_clear(target);
  }
  return rc;
}

/* ---- encoding ------------------------------------------------------- */

typedef Inference__ModelInferResponse__ParametersEntry resp_entry;

/* Response parameters as map entries; strings borrowed from params, or
 * JSON text kept in *texts (freed by the caller with free()). */
static int json_to_params(json_t *params, resp_entry ***entries, size_t *n,
                          Inference__InferParameter **values, char ***texts) {
  *entries = NULL;
  *values = NULL;
  *texts = NULL;
  *n = 0;
  size_t count = json_is_object(params) ? json_object_size(params) : 0;
  if (count == 0)
    return BERTH_OK;
  resp_entry *e = calloc(count, sizeof *e);
  resp_entry **ep = calloc(count, sizeof *ep);
  Inference__InferParameter *v = calloc(count, sizeof *v);
  char **t = calloc(count, sizeof *t);
  *entries = ep;
  *values = v;
  *texts = t;
  if (e == NULL || ep == NULL || v == NULL || t == NULL) {
    free(e);
    return BERTH_E_NOMEM;
  }
  const char *key;
  json_t *val;
  size_t i = 0;
  json_object_foreach(params, key, val) {
    inference__model_infer_response__parameters_entry__init(&e[i]);
    inference__infer_parameter__init(&v[i]);
    e[i].key = (char *)(uintptr_t)key;
    e[i].value = &v[i];
    if (json_is_boolean(val)) {
      v[i].parameter_choice_case =
          INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
      v[i].bool_param = json_is_true(val);
    } else if (json_is_integer(val)) {
      v[i].parameter_choice_case =
          INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
      v[i].int64_param = json_integer_value(val);
    } else if (json_is_real(val)) {
      v[i].parameter_choice_case =
          INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM;
      v[i].double_param = json_real_value(val);
    } else {
      v[i].parameter_choice_case =
          INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
      if (json_is_string(val)) {
        v[i].string_param = (char *)(uintptr_t)json_string_value(val);
      } else {
        t[i] = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
        if (t[i] == NULL) {
          *n = i;
          ep[i] = &e[i];
          return BERTH_E_NOMEM;
        }
        v[i].string_param = t[i];
      }
    }
    ep[i] = &e[i];
    i++;
  }
  *n = i;
  return BERTH_OK;
}

static void free_params(resp_entry **entries, size_t n,
                        Inference__InferParameter *values, char **texts) {
  if (texts != NULL)
    for (size_t i = 0; i < n; i++)
      free(texts[i]);
  free(texts);
  free(entries != NULL ? entries[0] : NULL); /* the entries' one array */
  free(entries);
  free(values);
}

/* Indexes of the outputs to write, in order, into sel (n_sel of them). */
static int select_outputs(const berth_grpc_answer *a, size_t *sel,
                          size_t *n_sel, berth_errmsg *err) {
  const berth_infer_response *r = a->resp;
  if (a->req == NULL || a->req->n_outputs == 0) {
    for (size_t i = 0; i < r->n_outputs; i++)
      sel[i] = i;
    *n_sel = r->n_outputs;
    return BERTH_OK;
  }
  for (size_t k = 0; k < a->req->n_outputs; k++) {
    const char *want = a->req->outputs[k].name;
    size_t i = 0;
    while (i < r->n_outputs && strcmp(r->outputs[i].name, want) != 0)
      i++;
    if (i == r->n_outputs)
      return berth_errf(err, BERTH_E_INVALID,
                        "requested output '" QN "' is not among "
                        "the model's outputs",
                        want);
    sel[k] = i;
  }
  *n_sel = a->req->n_outputs;
  return BERTH_OK;
}

int berth_grpc_encode_infer_response(const berth_grpc_answer *a, berth_buf *out,
                                     berth_errmsg *err) {
  if (a == NULL || a->resp == NULL)
    return berth_errf(err, BERTH_E_INTERNAL, "no response to encode");
  const berth_infer_response *r = a->resp;
  size_t cap = r->n_outputs;
  if (a->req != NULL && a->req->n_outputs > cap)
    cap = a->req->n_outputs;
  size_t *sel = calloc(cap ? cap : 1, sizeof *sel);
  Inference__ModelInferResponse__InferOutputTensor *ot =
      calloc(cap ? cap : 1, sizeof *ot);
  Inference__ModelInferResponse__InferOutputTensor **otp =
      calloc(cap ? cap : 1, sizeof *otp);
  ProtobufCBinaryData *raw = calloc(cap ? cap : 1, sizeof *raw);
  resp_entry **entries = NULL;
  Inference__InferParameter *values = NULL;
  char **texts = NULL;
  size_t n_params = 0, n_sel = 0;
  int rc = BERTH_OK;
  if (sel == NULL || ot == NULL || otp == NULL || raw == NULL)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc == BERTH_OK)
    rc = select_outputs(a, sel, &n_sel, err);
  if (rc == BERTH_OK && json_to_params(r->parameters, &entries, &n_params,
                                       &values, &texts) != BERTH_OK)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc == BERTH_OK) {
    Inference__ModelInferResponse m = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    m.model_name = (char *)(uintptr_t)(a->model_name ? a->model_name : "");
    m.model_version =
        (char *)(uintptr_t)(a->model_version ? a->model_version : "");
    if (a->req != NULL && a->req->id != NULL)
      m.id = a->req->id;
    m.n_parameters = n_params;
    m.parameters = entries;
    for (size_t k = 0; k < n_sel; k++) {
      const berth_tensor *t = &r->outputs[sel[k]];
      inference__model_infer_response__infer_output_tensor__init(&ot[k]);
      ot[k].name = t->name;
      ot[k].datatype = (char *)(uintptr_t)berth_dtype_name(t->dtype);
      ot[k].n_shape = t->ndim;
      ot[k].shape = (int64_t *)(uintptr_t)t->shape;
      otp[k] = &ot[k];
      /* an output written into a shared-memory region: metadata, and an
       * empty raw entry that keeps the others at their indexes */
      bool shm = a->req != NULL && berth_output_in_shm(a->req, t->name);
      raw[k].len = shm ? 0 : t->nbytes;
      raw[k].data = shm ? NULL : t->data;
    }
    m.n_outputs = n_sel;
    m.outputs = otp;
    m.n_raw_output_contents = n_sel;
    m.raw_output_contents = raw;
    if (a->stream) {
      Inference__ModelStreamInferResponse s =
          INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
      s.infer_response = &m;
      rc = berth_grpc_append_message(&s.base, out, err);
    } else {
      rc = berth_grpc_append_message(&m.base, out, err);
    }
  }
  free_params(entries, n_params, values, texts);
  free(sel);
  free(ot);
  free(otp);
  free(raw);
  return rc;
}

int berth_grpc_encode_stream_error(const char *msg, berth_buf *out) {
  char clean[BERTH_ERRMSG_SIZE + 64];
  berth_grpc_utf8_clean(msg != NULL ? msg : "error", clean, sizeof clean);
  Inference__ModelStreamInferResponse s =
      INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
  s.error_message = clean;
  berth_errmsg err;
  return berth_grpc_append_message(&s.base, out, &err);
}
