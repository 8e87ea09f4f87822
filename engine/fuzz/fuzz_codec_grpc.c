/* Fuzz target: the gRPC side of the OIP codec (codec_grpc.c) — the
 * protobuf ModelInferRequest decoder, the response encoder, the message
 * framing reader and the header helpers.
 *
 * The input is decoded as a ModelInferRequest under small limits. When it
 * decodes, every tensor must pass berth_tensor_check; the inputs are then
 * encoded back as a response, which must unpack, and whose raw contents,
 * sent again as a request's raw_input_contents, must decode to the very
 * same tensors. The input is also cut into gRPC messages, once whole and
 * once in pieces, and both readings must agree. Any broken promise traps. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_grpc.h"
#include "grpc_service.pb-c.h"
#include "shape_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const berth_grpc_limits limits = {16, 1 << 16, 1 << 20};

static bool same_tensors(const berth_infer_request *a,
                         const berth_infer_request *b) {
  if (a->n_inputs != b->n_inputs)
    return false;
  for (size_t i = 0; i < a->n_inputs; i++) {
    const berth_tensor *x = &a->inputs[i], *y = &b->inputs[i];
    if (strcmp(x->name, y->name) != 0 || x->dtype != y->dtype ||
        x->ndim != y->ndim || x->nbytes != y->nbytes ||
        memcmp(x->shape, y->shape, x->ndim * sizeof x->shape[0]) != 0 ||
        (x->nbytes > 0 && memcmp(x->data, y->data, x->nbytes) != 0))
      return false;
  }
  return true;
}

/* Encodes req's inputs as a response, reads it back, and sends its raw
 * contents again as a request. */
static void check_round_trip(const berth_infer_request *req) {
  berth_infer_response resp = {req->inputs, req->n_inputs, req->parameters};
  berth_infer_request plain = *req;
  plain.n_outputs = 0; /* every output, in order */
  berth_grpc_answer a = {"m", "1", &plain, &resp, false};
  berth_buf out;
  berth_buf_init(&out, 1 << 22);
  berth_errmsg err;
  if (berth_grpc_encode_infer_response(&a, &out, &err) != BERTH_OK ||
      out.len < 5)
    __builtin_trap();
  Inference__ModelInferResponse *m = inference__model_infer_response__unpack(
      NULL, out.len - 5, (uint8_t *)out.data + 5);
  if (m == NULL || m->n_outputs != req->n_inputs ||
      m->n_raw_output_contents != req->n_inputs)
    __builtin_trap();
  typedef Inference__ModelInferRequest__InferInputTensor In_t;
  In_t *ins = calloc(m->n_outputs + 1, sizeof *ins);
  In_t **inp = calloc(m->n_outputs + 1, sizeof *inp);
  if (ins == NULL || inp == NULL)
    __builtin_trap();
  for (size_t i = 0; i < m->n_outputs; i++) {
    inference__model_infer_request__infer_input_tensor__init(&ins[i]);
    ins[i].name = m->outputs[i]->name;
    ins[i].datatype = m->outputs[i]->datatype;
    ins[i].n_shape = m->outputs[i]->n_shape;
    ins[i].shape = m->outputs[i]->shape;
    inp[i] = &ins[i];
  }
  Inference__ModelInferRequest r = INFERENCE__MODEL_INFER_REQUEST__INIT;
  r.model_name = "m";
  r.n_inputs = m->n_outputs;
  r.inputs = inp;
  r.n_raw_input_contents = m->n_raw_output_contents;
  r.raw_input_contents = m->raw_output_contents;
  size_t len = inference__model_infer_request__get_packed_size(&r);
  uint8_t *buf = malloc(len + 1);
  if (buf == NULL)
    __builtin_trap();
  inference__model_infer_request__pack(&r, buf);
  berth_grpc_target t;
  berth_infer_request again;
  if (req->n_inputs > 0) {
    if (berth_grpc_decode_infer_request(buf, len, &limits, &t, &again, &err) !=
            BERTH_OK ||
        !same_tensors(req, &again))
      __builtin_trap();
    berth_infer_request_clear(&again);
    berth_grpc_target_clear(&t);
  }
  free(buf);
  free(ins);
  free(inp);
  inference__model_infer_response__free_unpacked(m, NULL);
  berth_buf_free(&out);
}

typedef struct tally {
  size_t n;
  uint64_t sum;
} tally;

static int count(void *arg, const uint8_t *msg, size_t len) {
  tally *t = arg;
  t->n++;
  for (size_t i = 0; i < len; i++)
    t->sum = t->sum * 31 + msg[i];
  t->sum += len;
  return 0;
}

/* Whole or in pieces, the reader finds the same messages and errors. */
static void check_reader(const uint8_t *data, size_t size) {
  size_t step = size > 0 ? (size_t)data[0] % 7 + 1 : 1;
  berth_grpc_reader a, b;
  berth_grpc_reader_init(&a, 4096);
  berth_grpc_reader_init(&b, 4096);
  /* the call's grpc-encoding, from the last byte: compressed messages are
   * inflated (to at most the limit) */
  berth_encoding enc =
      size > 0 ? (berth_encoding)(data[size - 1] % 3) : BERTH_ENC_IDENTITY;
  a.encoding = b.encoding = enc;
  tally ta = {0, 0}, tb = {0, 0};
  berth_errmsg err;
  int ra = berth_grpc_reader_feed(&a, data, size, count, &ta, &err);
  int rb = BERTH_OK;
  for (size_t off = 0; off < size && rb == BERTH_OK; off += step) {
    size_t n = size - off < step ? size - off : step;
    rb = berth_grpc_reader_feed(&b, data + off, n, count, &tb, &err);
  }
  if (ra != rb || ta.n != tb.n || ta.sum != tb.sum ||
      (ra == BERTH_OK &&
       berth_grpc_reader_held(&a) != berth_grpc_reader_held(&b)))
    __builtin_trap();
  berth_grpc_reader_free(&a);
  berth_grpc_reader_free(&b);
}

static void check_headers(const uint8_t *data, size_t size) {
  char text[256], out[128];
  size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
  memcpy(text, data, n);
  text[n] = '\0';
  berth_grpc_percent_encode(text, out, sizeof out);
  for (const char *p = out; *p != '\0'; p++)
    if (*p < 0x20 || *p > 0x7e)
      __builtin_trap();
  uint64_t ns;
  (void)berth_grpc_parse_timeout(text, n < 12 ? n : 12, &ns);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  berth_grpc_target t;
  berth_infer_request req;
  berth_errmsg err;
  int rc = berth_grpc_decode_infer_request(data, size, &limits, &t, &req, &err);
  if (rc == BERTH_OK) {
    if (t.model_name == NULL || t.model_name[0] == '\0')
      __builtin_trap();
    for (size_t i = 0; i < req.n_inputs; i++) {
      if (berth_tensor_check(&req.inputs[i], &err) != BERTH_OK)
        __builtin_trap();
      fuzz_check_shape_math(&req.inputs[i]);
    }
    check_round_trip(&req);
    berth_infer_request_clear(&req);
    berth_grpc_target_clear(&t);
  } else if (req.inputs != NULL || t.model_name != NULL || err.msg[0] == '\0') {
    __builtin_trap();
  }
  check_reader(data, size);
  check_headers(data, size);
  return 0;
}
