/* Berth engine: Open Inference Protocol v2 JSON <-> tensors.
 *
 * Decoding validates everything about the document itself (JSON syntax,
 * field types, datatype names, shape values, element count == product of
 * shape, every element representable in the datatype, UTF-8 text for BYTES)
 * but nothing about a model: signature checks live in signature.c.
 * Decoding is codec_json.c (and codec_json_fast.c), encoding
 * codec_json_encode.c.
 */
#ifndef BERTH_CODEC_JSON_H
#define BERTH_CODEC_JSON_H

#include <stddef.h>

#include "berth/error.h"
#include "buf.h"
#include "infer.h"
#include "text.h"

/* Limits a decoder enforces; the body size itself is bounded by the
 * frontend before the decoder sees it. NULL limits, or a zero field, mean
 * the defaults (64 inputs, 256 MiB, depth 64). max_inputs also bounds the
 * request's "outputs" list. */
typedef struct berth_json_limits {
  size_t max_inputs;       /* inputs per request (e.g. 64) */
  size_t max_tensor_bytes; /* decoded bytes per tensor */
  size_t max_depth;        /* JSON nesting (e.g. 64) */
} berth_json_limits;

/* Decodes an OIP infer request body (body need not be NUL-terminated).
 * On success fills *out (caller clears it with berth_infer_request_clear).
 * On failure returns BERTH_E_PARSE (not JSON) or BERTH_E_INVALID (JSON but
 * not a valid request) or BERTH_E_TOO_LARGE, with a message naming the field
 * or input, and leaves *out zeroed. An input using the binary extension
 * (parameters.binary_data_size) is BERTH_E_UNSUPPORTED here. */
int berth_json_decode_infer_request(const char *body, size_t len,
                                    const berth_json_limits *limits,
                                    berth_infer_request *out,
                                    berth_errmsg *err);

/* The two decoders behind berth_json_decode_infer_request, for tests and
 * fuzzing. _fast (codec_json_fast.c) reads the common request shape
 * ({"id"?, "inputs": [{"name", "shape", "datatype", "data"}]} with ASCII
 * names and numeric data) in one pass, without a jansson document; it
 * returns BERTH_E_UNSUPPORTED, without a message and with *out zeroed, for
 * any body it does not take, errors included. Where it succeeds, _full
 * gives the same request. limits: as above, NULL for the defaults. */
int berth_json_decode_fast(const char *body, size_t len,
                           const berth_json_limits *limits,
                           berth_infer_request *out);
int berth_json_decode_full(const char *body, size_t len,
                           const berth_json_limits *limits,
                           berth_infer_request *out, berth_errmsg *err);

/* Encodes an OIP infer response:
 * {"model_name":..,"model_version":..,"id":..,"parameters":..,"outputs":[..]}
 * id and parameters are omitted when NULL. Only outputs named in req's
 * outputs list are written (all when the list is empty); a requested output
 * the model did not produce is BERTH_E_INVALID. Floats use the shortest text
 * that round-trips for their width; NaN and infinities as NaN, Infinity,
 * -Infinity. BYTES elements must be valid UTF-8 (else BERTH_E_UNSUPPORTED
 * naming the output). Appends to out. */
int berth_json_encode_infer_response(const char *model_name,
                                     const char *model_version,
                                     const berth_infer_request *req,
                                     const berth_infer_response *resp,
                                     berth_buf *out, berth_errmsg *err);

/* Appends one tensor as an OIP JSON tensor {"name","datatype","shape",
 * "data"} (flat data, the same number text as responses). A BYTES element
 * that is not UTF-8 is BERTH_E_UNSUPPORTED naming the tensor; out then holds
 * a partial tensor that the caller cuts off. The tensor must have passed
 * berth_tensor_check. */
int berth_json_append_tensor(berth_buf *out, const berth_tensor *t,
                             berth_errmsg *err);

/* Appends {"error":"<msg>"} with msg JSON-escaped. */
int berth_json_encode_error(const char *msg, berth_buf *out);

#endif
