/* Berth engine: one decoded inference request and its answer, independent of
 * the wire format (JSON today, binary extension and protobuf later).
 */
#ifndef BERTH_INFER_H
#define BERTH_INFER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/tensor.h"

/* One entry of the request's "outputs" list. */
typedef struct berth_output_request {
  char *name;         /* owned */
  json_t *parameters; /* owned reference or NULL */
} berth_output_request;

/* Where an input's bytes are, when the request names a registered
 * shared-memory region for it (Triton's shared-memory extension: the
 * input's parameters shared_memory_region, shared_memory_offset,
 * shared_memory_byte_size). */
typedef struct berth_shm_ref {
  char *region; /* owned; NULL: the input carries its own data */
  uint64_t offset;
  uint64_t byte_size;
} berth_shm_ref;

typedef struct berth_infer_request {
  char *id;             /* owned or NULL when the request had none */
  json_t *parameters;   /* owned reference to a JSON object, or NULL */
  berth_tensor *inputs; /* owned array of n_inputs */
  size_t n_inputs;
  berth_output_request *outputs; /* owned array; NULL/0 = every output */
  size_t n_outputs;
  berth_shm_ref *input_shm;         /* owned array of n_inputs, or NULL when no
                                   input names a region; the frontend points
                                   those inputs' data into the region */
  void (*hold_release)(void *hold); /* called by berth_infer_request_clear,
                                   after the inputs are cleared (e.g. to drop
                                   the regions they borrow from); may be NULL */
  void *hold;
} berth_infer_request;

/* Reads Triton's shared-memory parameters from params (an object or NULL)
 * into *ref. *ref->region stays NULL when params names no region.
 * BERTH_E_INVALID with a message naming what (e.g. "input 'x'") when the
 * members have the wrong types or the byte size is missing. */
int berth_shm_params(const json_t *params, const char *what, berth_shm_ref *ref,
                     struct berth_errmsg *err);

/* Whether the request asks for output name to be written into a region. */
bool berth_output_in_shm(const berth_infer_request *r, const char *name);

/* Frees everything the request owns and zeroes it. Safe on a zeroed struct. */
void berth_infer_request_clear(berth_infer_request *r);

/* A model's answer to one request. */
typedef struct berth_infer_response {
  berth_tensor *outputs; /* owned array */
  size_t n_outputs;
  json_t *parameters; /* owned reference or NULL */
} berth_infer_response;

void berth_infer_response_clear(berth_infer_response *r);

#endif
