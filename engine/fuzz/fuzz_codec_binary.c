/* Fuzz target: the binary tensor extension's decoder and encoder
 * (codec_binary.c).
 *
 * Input: two bytes giving the JSON head's length (little-endian, taken
 * modulo the rest's size + 1), then the body. When the body decodes:
 * every input passes berth_tensor_check, binary inputs point inside the
 * body, and the inputs encoded back as an all-binary answer must read back
 * (head "outputs" taken as "inputs") to the very same tensors. The request's
 * own output selection is encoded too, and must either succeed or leave the
 * buffer as it was. Any broken promise traps. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_binary.h"
#include "shape_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const berth_json_limits limits = {16, 1 << 16, 32};

static bool same_tensors(const berth_infer_request *a,
                         const berth_infer_request *b) {
  if (a->n_inputs != b->n_inputs)
    return false;
  for (size_t i = 0; i < a->n_inputs; i++) {
    const berth_tensor *x = &a->inputs[i], *y = &b->inputs[i];
    if (strcmp(x->name, y->name) != 0 || x->dtype != y->dtype ||
        x->ndim != y->ndim || x->nbytes != y->nbytes ||
        memcmp(x->shape, y->shape, x->ndim * sizeof x->shape[0]) != 0 ||
        (x->nbytes && memcmp(x->data, y->data, x->nbytes) != 0))
      return false;
  }
  return true;
}

/* Encodes req's inputs as an all-binary answer and decodes it again. */
static void check_round_trip(const berth_infer_request *req) {
  berth_infer_response resp = {.outputs = req->inputs,
                               .n_outputs = req->n_inputs};
  berth_infer_request all = {0};
  berth_buf out;
  berth_buf_init(&out, 1 << 22);
  size_t head = 0;
  berth_errmsg err;
  if (berth_binary_encode_infer_response("m", "1", &all, true, &resp, &out,
                                         &head, &err) != BERTH_OK ||
      head > out.len)
    __builtin_trap();
  json_t *doc = json_loadb(out.data, head, JSON_ALLOW_NUL, NULL);
  json_t *again =
      doc ? json_pack("{s:O}", "inputs", json_object_get(doc, "outputs"))
          : NULL;
  char *text = again ? json_dumps(again, JSON_COMPACT) : NULL;
  if (text == NULL)
    __builtin_trap();
  size_t tl = strlen(text), bl = out.len - head;
  char *body = malloc(tl + bl + 1);
  if (body == NULL)
    __builtin_trap();
  memcpy(body, text, tl);
  memcpy(body + tl, out.data + head, bl);
  berth_infer_request r2;
  if (berth_binary_decode_infer_request(body, tl + bl, tl, &limits, &r2,
                                        &err) != BERTH_OK ||
      !same_tensors(req, &r2))
    __builtin_trap();
  berth_infer_request_clear(&r2);
  free(body);
  free(text);
  json_decref(again);
  json_decref(doc);
  berth_buf_free(&out);
}

/* The request's own output choices over its inputs as the answer. */
static void check_selected(berth_infer_request *req) {
  bool dflt = false;
  berth_errmsg err;
  if (berth_binary_output_prefs(req, &dflt, &err) != BERTH_OK)
    return;
  (void)berth_binary_wanted(req, dflt);
  berth_infer_response resp = {.outputs = req->inputs,
                               .n_outputs = req->n_inputs};
  berth_buf out;
  berth_buf_init(&out, 1 << 22);
  berth_buf_append(&out, "ab", 2);
  size_t head = 0;
  int rc = berth_binary_encode_infer_response("m", "1", req, dflt, &resp, &out,
                                              &head, &err);
  if (rc == BERTH_OK ? head + 2 > out.len : out.len != 2)
    __builtin_trap();
  berth_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  size_t body_len = size - 2;
  size_t head_len = ((size_t)data[0] | (size_t)data[1] << 8) % (body_len + 1);
  /* a copy of exactly body_len bytes, so that reads past it are caught */
  char *body = malloc(body_len ? body_len : 1);
  if (body == NULL)
    return 0;
  memcpy(body, data + 2, body_len);
  berth_infer_request req;
  berth_errmsg err;
  if (berth_binary_decode_infer_request(body, body_len, head_len, &limits, &req,
                                        &err) == BERTH_OK) {
    for (size_t i = 0; i < req.n_inputs; i++) {
      const berth_tensor *t = &req.inputs[i];
      if (berth_tensor_check(t, &err) != BERTH_OK)
        __builtin_trap();
      fuzz_check_shape_math(t);
      if (t->data_borrowed &&
          (t->data < (const uint8_t *)body + head_len ||
           t->data + t->nbytes > (const uint8_t *)body + body_len))
        __builtin_trap();
    }
    check_round_trip(&req);
    check_selected(&req);
    berth_infer_request_clear(&req);
  }
  free(body);
  return 0;
}
