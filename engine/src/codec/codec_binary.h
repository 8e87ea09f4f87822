/* Berth engine: Triton's binary tensor data extension over HTTP.
 *
 * A request that uses it carries the header
 * `Inference-Header-Content-Length: N`: the body's first N bytes are the OIP
 * JSON head, the rest is the concatenation of the binary inputs' bytes in
 * the order the head lists them. An input whose parameters hold
 * `binary_data_size: S` takes the next S bytes, raw little-endian in
 * row-major order (BOOL: one byte, 0 or 1; BYTES: each element a 4-byte
 * little-endian length and then its bytes), and has no `data`. Other inputs
 * carry JSON `data` as usual; both kinds may be mixed.
 *
 * An answer uses it when an output is asked for as binary (the output's
 * `parameters.binary_data: true`, or the request's
 * `parameters.binary_data_output: true` for every output that does not say
 * otherwise): the JSON head then lists such outputs with
 * `parameters.binary_data_size` and no `data`, and their bytes follow the
 * head in the head's order.
 *
 * Decoders here validate everything about the document (sizes adding up
 * exactly, each binary size matching its shape and datatype, BOOL bytes,
 * BYTES length prefixes) and nothing about a model (signature.c).
 */
#ifndef BERTH_CODEC_BINARY_H
#define BERTH_CODEC_BINARY_H

#include <stdbool.h>
#include <stddef.h>

#include "berth/error.h"
#include "buf.h"
#include "codec_json.h"
#include "infer.h"

/* Reads an Inference-Header-Content-Length value (vlen bytes, decimal
 * digits only) into *head_len; it must not exceed body_len. BERTH_E_INVALID
 * with a message otherwise. */
int berth_binary_parse_head_length(const char *v, size_t vlen, size_t body_len,
                                   size_t *head_len, berth_errmsg *err);

/* Decodes a request body of len bytes whose first head_len bytes are the
 * JSON head. On success fills *out (caller clears it with
 * berth_infer_request_clear); the binary inputs' tensors BORROW their bytes
 * from body (data_borrowed), so body must outlive *out. On failure returns
 * BERTH_E_PARSE, BERTH_E_INVALID or BERTH_E_TOO_LARGE with a message naming
 * the input, and leaves *out zeroed. limits as for the JSON decoder; its
 * max_tensor_bytes also bounds each binary input. */
int berth_binary_decode_infer_request(const char *body, size_t len,
                                      size_t head_len,
                                      const berth_json_limits *limits,
                                      berth_infer_request *out,
                                      berth_errmsg *err);

/* How the answer's outputs are to be written, read from a decoded request:
 * takes the protocol-level `binary_data_output` out of req->parameters (so
 * the model never sees it; parameters left empty become NULL) into
 * *binary_default, and checks each requested output's `binary_data` (a
 * boolean when present). A `classification` output parameter is
 * BERTH_E_UNSUPPORTED. Works on requests from either decoder. */
int berth_binary_output_prefs(berth_infer_request *req, bool *binary_default,
                              berth_errmsg *err);

/* True when the answer to req has at least one binary output. */
bool berth_binary_wanted(const berth_infer_request *req, bool binary_default);

/* Encodes an answer with binary outputs: the JSON head (as
 * berth_json_encode_infer_response writes it, binary outputs carrying
 * parameters.binary_data_size instead of data; JSON outputs first, then the
 * binary ones, each group in the requested order) followed by the binary
 * outputs' bytes in the head's order. *head_len gets the head's length, for
 * the response's Inference-Header-Content-Length. Output selection and
 * errors as for the JSON encoder. Appends to out; on failure out is left as
 * it was. */
int berth_binary_encode_infer_response(const char *model_name,
                                       const char *model_version,
                                       const berth_infer_request *req,
                                       bool binary_default,
                                       const berth_infer_response *resp,
                                       berth_buf *out, size_t *head_len,
                                       berth_errmsg *err);

#endif
