/* Berth engine: one decoded inference request and its answer, independent of
 * the wire format (JSON today, binary extension and protobuf later).
 */
#ifndef BERTH_INFER_H
#define BERTH_INFER_H

#include <jansson.h>
#include <stddef.h>

#include "berth/tensor.h"

/* One entry of the request's "outputs" list. */
typedef struct berth_output_request {
  char *name;            /* owned */
  json_t *parameters;    /* owned reference or NULL */
} berth_output_request;

typedef struct berth_infer_request {
  char *id;                     /* owned or NULL when the request had none */
  json_t *parameters;           /* owned reference to a JSON object, or NULL */
  berth_tensor *inputs;         /* owned array of n_inputs */
  size_t n_inputs;
  berth_output_request *outputs; /* owned array; NULL/0 = every output */
  size_t n_outputs;
} berth_infer_request;

/* Frees everything the request owns and zeroes it. Safe on a zeroed struct. */
void berth_infer_request_clear(berth_infer_request *r);

/* A model's answer to one request. */
typedef struct berth_infer_response {
  berth_tensor *outputs;        /* owned array */
  size_t n_outputs;
  json_t *parameters;           /* owned reference or NULL */
} berth_infer_response;

void berth_infer_response_clear(berth_infer_response *r);

#endif
