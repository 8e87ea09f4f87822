/* Berth engine: the Open Inference Protocol v2 over gRPC — protobuf <->
 * tensors (codec_grpc.c), and gRPC's length-prefixed message framing and
 * header helpers (grpc_wire.c).
 *
 * The messages are those of proto/grpc_service.proto, compiled by protoc-c
 * at build time. Decoding validates everything about the message itself
 * (protobuf wire format, datatype names, shapes, element count ==
 * product(shape), raw contents length == numel * element size, BYTES
 * length prefixes, value ranges of typed contents, UTF-8 of string
 * parameters) but nothing about a model: signature checks live in
 * signature.c, as for JSON.
 *
 * Nothing here touches the network or the engine, so the decoders can be
 * unit-tested and fuzzed alone.
 */
#ifndef BERTH_CODEC_GRPC_H
#define BERTH_CODEC_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "berth/error.h"
#include "buf.h"
#include "compress.h"
#include "infer.h"

/* ---- framing: 1 byte compressed flag, 4 bytes big-endian length ---- */

#define BERTH_GRPC_PREFIX 5

/* Reassembles gRPC messages from the bytes of one stream, in whatever
 * pieces they arrive. A message is handed over as soon as it is complete;
 * only an incomplete one is buffered (at most max_message bytes). */
typedef struct berth_grpc_reader {
  size_t max_message; /* a longer message is BERTH_E_TOO_LARGE */
  uint8_t head[BERTH_GRPC_PREFIX];
  size_t head_len;         /* prefix bytes seen of the current message */
  size_t want;             /* its length, once head_len == BERTH_GRPC_PREFIX */
  berth_buf body;          /* its bytes so far, when it spans several feeds */
  berth_encoding encoding; /* the call's grpc-encoding (identity unless set
                              after init): messages flagged compressed are
                              inflated with it, to at most max_message */
  bool compressed;         /* the current message's flag */
} berth_grpc_reader;

/* Called once per complete message; msg is valid during the call only.
 * A non-zero return stops the feed and is returned by it. */
typedef int (*berth_grpc_message_cb)(void *arg, const uint8_t *msg, size_t len);

void berth_grpc_reader_init(berth_grpc_reader *r, size_t max_message);
/* Feeds len bytes. Returns BERTH_OK, the callback's non-zero status, or:
 * BERTH_E_TOO_LARGE (a message longer than max_message, compressed or once
 * inflated), BERTH_E_UNSUPPORTED (a compressed message on a call whose
 * grpc-encoding is identity), BERTH_E_PARSE (a corrupt compressed message),
 * BERTH_E_NOMEM;
 * err says which. After an error the reader must not be fed again. */
int berth_grpc_reader_feed(berth_grpc_reader *r, const uint8_t *data,
                           size_t len, berth_grpc_message_cb cb, void *arg,
                           berth_errmsg *err);
/* Bytes of an incomplete message held right now. */
size_t berth_grpc_reader_held(const berth_grpc_reader *r);
/* True between messages (nothing of a next one seen). */
bool berth_grpc_reader_idle(const berth_grpc_reader *r);
void berth_grpc_reader_free(berth_grpc_reader *r);

/* Appends the 5-byte prefix for an uncompressed message of len bytes
 * (BERTH_E_TOO_LARGE when len does not fit 32 bits). */
int berth_grpc_append_prefix(berth_buf *out, size_t len);

/* Appends message m, framed (prefix and packed bytes). BERTH_E_TOO_LARGE
 * when it does not fit gRPC's 32-bit length or out's maximum. */
int berth_grpc_append_message(const ProtobufCMessage *m, berth_buf *out,
                              berth_errmsg *err);

/* Unpacks msg as a message of type desc, allocating at most 8 times len
 * plus 1 MiB; NULL when msg is not such a message or costs more. The
 * caller frees the result with protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *berth_grpc_unpack(const ProtobufCMessageDescriptor *desc,
                                    const uint8_t *msg, size_t len);

/* ---- ModelInferRequest -> berth_infer_request ---- */

/* NULL limits, or a zero field, mean the defaults: 256 inputs (and
 * requested outputs), tensors of 256 MiB, and protobuf decoding memory of
 * 8 times the message plus 1 MiB. */
typedef struct berth_grpc_limits {
  size_t max_inputs;
  size_t max_tensor_bytes; /* decoded bytes per tensor */
  size_t max_decode_bytes; /* what unpacking the message may allocate */
} berth_grpc_limits;

/* Where a request goes: owned strings, version NULL when the request left
 * it empty (the newest version). */
typedef struct berth_grpc_target {
  char *model_name;
  char *model_version;
} berth_grpc_target;

void berth_grpc_target_clear(berth_grpc_target *t);

/* Decodes a serialized ModelInferRequest. On success fills *target and
 * *out (the caller clears both). On failure returns BERTH_E_PARSE (not a
 * valid protobuf message), BERTH_E_INVALID (a valid message but not a valid
 * request) or BERTH_E_TOO_LARGE, with a message naming the field or input,
 * and leaves both zeroed.
 *
 * Tensors come either all from raw_input_contents (one entry per input, in
 * order; the data is taken over without a copy) or from each input's typed
 * contents; the two forms cannot be mixed. Parameters (request, input and
 * requested-output ones) become JSON values: bool, integer, string, real;
 * a uint64 above INT64_MAX becomes a real. */
int berth_grpc_decode_infer_request(const uint8_t *msg, size_t len,
                                    const berth_grpc_limits *limits,
                                    berth_grpc_target *target,
                                    berth_infer_request *out,
                                    berth_errmsg *err);

/* ---- berth_infer_response -> ModelInferResponse ---- */

typedef struct berth_grpc_answer {
  const char *model_name;
  const char *model_version;
  const berth_infer_request *req; /* id and the requested outputs */
  const berth_infer_response *resp;
  bool stream; /* wrap it in a ModelStreamInferResponse */
} berth_grpc_answer;

/* Appends one framed message (prefix and bytes): the model's outputs with
 * their data in raw_output_contents, as Triton answers. Only the outputs
 * named in req's outputs list are written, in that order (all, in the
 * model's order, when the list is empty); a requested output the model did
 * not produce is BERTH_E_INVALID. Response parameters become
 * InferParameters (bool, int64, uint64, double, string; other JSON values
 * as their JSON text). */
int berth_grpc_encode_infer_response(const berth_grpc_answer *a, berth_buf *out,
                                     berth_errmsg *err);

/* Appends one framed ModelStreamInferResponse carrying only error_message
 * (invalid UTF-8 in msg is replaced). */
int berth_grpc_encode_stream_error(const char *msg, berth_buf *out);

/* Percent-encodes msg for the grpc-message trailer (bytes outside
 * 0x20..0x7e, and '%', become %XX) into out, NUL-terminated, cut at a
 * character boundary to fit cap. */
void berth_grpc_percent_encode(const char *msg, char *out, size_t cap);

/* Copies msg into out (cap bytes, NUL-terminated) as valid UTF-8: each
 * byte that is not part of a valid sequence becomes '?'. */
void berth_grpc_utf8_clean(const char *msg, char *out, size_t cap);

/* Parses a grpc-timeout value ("1*8 digits" then H, M, S, m, u or n) into
 * nanoseconds; false when it is malformed. */
bool berth_grpc_parse_timeout(const char *v, size_t len, uint64_t *ns);

#endif
