/* Fuzz target: the OIP v2 JSON request decoder and the response encoder
 * (codec_json.c).
 *
 * The input is decoded as a request body under small limits. When it
 * decodes, its inputs are encoded back as a response, which must be valid
 * JSON whose "outputs", read again as request "inputs", decode to the very
 * same bytes (the encoder's numbers are exact at every width). The input is
 * also written as a JSON string, which must parse back. The encoder also
 * runs against a small buffer maximum, which must leave the buffer as it
 * was. Where the one-pass decoder (codec_json_fast.c) takes the input, the
 * full one must decode it to the same request. Any broken promise traps. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_json.h"
#include "shape_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const berth_json_limits limits = {16, 1 << 16, 32};

/* The appended string literal is valid JSON. */
static void check_string(const uint8_t *data, size_t size) {
  berth_buf b;
  berth_buf_init(&b, 8 * size + 16);
  if (berth_json_append_string(&b, (const char *)data, size) != BERTH_OK)
    __builtin_trap();
  json_t *s = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  if (!json_is_string(s))
    __builtin_trap();
  json_t *orig = json_stringn((const char *)data, size); /* NULL: not UTF-8 */
  if (orig != NULL && !json_equal(orig, s))
    __builtin_trap();
  json_decref(orig);
  json_decref(s);
  berth_buf_free(&b);
}

/* Re-reads an encoded response's outputs as request inputs; they must
 * decode to the bytes of the original tensors. */
static void check_round_trip(const berth_buf *b,
                             const berth_infer_request *req) {
  json_t *doc = json_loadb(b->data, b->len, JSON_ALLOW_NUL, NULL);
  if (doc == NULL)
    __builtin_trap();
  json_t *again = json_pack("{s:O}", "inputs", json_object_get(doc, "outputs"));
  char *text = again ? json_dumps(again, JSON_COMPACT) : NULL;
  if (text == NULL)
    __builtin_trap();
  berth_infer_request r2;
  berth_errmsg err;
  if (berth_json_decode_infer_request(text, strlen(text), &limits, &r2, &err) !=
          BERTH_OK ||
      r2.n_inputs != req->n_inputs)
    __builtin_trap();
  for (size_t i = 0; i < r2.n_inputs; i++) {
    const berth_tensor *a = &req->inputs[i], *c = &r2.inputs[i];
    if (strcmp(a->name, c->name) != 0 || a->dtype != c->dtype ||
        a->ndim != c->ndim || a->nbytes != c->nbytes ||
        memcmp(a->shape, c->shape, a->ndim * sizeof a->shape[0]) != 0 ||
        (a->nbytes && memcmp(a->data, c->data, a->nbytes) != 0))
      __builtin_trap();
  }
  berth_infer_request_clear(&r2);
  free(text);
  json_decref(again);
  json_decref(doc);
}

/* jansson cannot read integers past INT64_MAX back, so such UINT64 values
 * (from reals like 1e19) skip the round trip. */
static bool has_big_uint64(const berth_infer_request *req) {
  for (size_t i = 0; i < req->n_inputs; i++) {
    const berth_tensor *t = &req->inputs[i];
    if (t->dtype != BERTH_DT_UINT64)
      continue;
    for (size_t j = 7; j < t->nbytes; j += 8)
      if (t->data[j] & 0x80)
        return true;
  }
  return false;
}

static void check_encode(const berth_infer_request *req, size_t small) {
  berth_infer_response resp = {.outputs = req->inputs,
                               .n_outputs = req->n_inputs,
                               .parameters = req->parameters};
  berth_errmsg err;
  berth_buf b;
  berth_buf_init(&b, 1 << 24);
  /* as asked: the request's own outputs list may name missing tensors */
  int rc = berth_json_encode_infer_response("m", "1", req, &resp, &b, &err);
  if (rc != BERTH_OK && (b.len != 0 || rc != BERTH_E_INVALID))
    __builtin_trap();
  berth_buf_reset(&b);
  if (berth_json_encode_infer_response("m", NULL, NULL, &resp, &b, &err) !=
      BERTH_OK)
    __builtin_trap();
  if (!has_big_uint64(req))
    check_round_trip(&b, req);
  size_t full = b.len;
  berth_buf_free(&b);
  /* a prefix "x" then the response, under a maximum that cuts it anywhere
   * or fits it exactly */
  const size_t maxima[2] = {1 + small % (full + 1), 1 + full};
  for (int k = 0; k < 2; k++) {
    berth_buf_init(&b, maxima[k]);
    berth_buf_append(&b, "x", 1);
    rc = berth_json_encode_infer_response("m", NULL, NULL, &resp, &b, &err);
    if ((rc == BERTH_OK) != (1 + full <= b.max) ||
        (rc != BERTH_OK && (rc != BERTH_E_TOO_LARGE || b.len != 1)) ||
        (rc == BERTH_OK && b.len != 1 + full))
      __builtin_trap();
    berth_buf_free(&b);
  }
}

/* Where the one-pass decoder takes a body, the full decoder must give the
 * same request (codec_json_fast.c promises a strict subset). */
static void check_fast(const uint8_t *data, size_t size) {
  berth_infer_request a, b;
  berth_errmsg err;
  if (berth_json_decode_fast((const char *)data, size, &limits, &a) !=
      BERTH_OK) {
    if (a.inputs != NULL || a.id != NULL || a.n_inputs != 0)
      __builtin_trap();
    return;
  }
  if (berth_json_decode_full((const char *)data, size, &limits, &b, &err) !=
          BERTH_OK ||
      a.n_inputs != b.n_inputs || (a.id == NULL) != (b.id == NULL) ||
      (a.id != NULL && strcmp(a.id, b.id) != 0) || b.parameters != NULL ||
      b.n_outputs != 0)
    __builtin_trap();
  for (size_t i = 0; i < a.n_inputs; i++) {
    const berth_tensor *x = &a.inputs[i], *y = &b.inputs[i];
    if (strcmp(x->name, y->name) != 0 || x->dtype != y->dtype ||
        x->ndim != y->ndim || x->nbytes != y->nbytes ||
        memcmp(x->shape, y->shape, x->ndim * sizeof x->shape[0]) != 0 ||
        (x->nbytes && memcmp(x->data, y->data, x->nbytes) != 0))
      __builtin_trap();
  }
  berth_infer_request_clear(&a);
  berth_infer_request_clear(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_string(data, size);
  check_fast(data, size);
  berth_infer_request req;
  berth_errmsg err;
  err.msg[0] = '\0';
  int rc = berth_json_decode_infer_request((const char *)data, size, &limits,
                                           &req, &err);
  if (rc != BERTH_OK) {
    if (err.msg[0] == '\0' || req.inputs != NULL || req.id != NULL)
      __builtin_trap();
    return 0;
  }
  for (size_t i = 0; i < req.n_inputs; i++) {
    if (berth_tensor_check(&req.inputs[i], &err) != BERTH_OK)
      __builtin_trap();
    fuzz_check_shape_math(&req.inputs[i]);
  }
  check_encode(&req, size * 7);
  berth_infer_request_clear(&req);
  return 0;
}
