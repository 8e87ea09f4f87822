/* Berth engine: releasing a decoded inference request and its response.
 * Memory for one request is released here, in one place. */
#include "infer.h"

#include <stdlib.h>
#include <string.h>

void berth_infer_request_clear(berth_infer_request *r) {
  if (r == NULL)
    return;
  free(r->id);
  json_decref(r->parameters);
  berth_tensors_free(r->inputs, r->n_inputs);
  if (r->outputs != NULL) {
    for (size_t i = 0; i < r->n_outputs; i++) {
      free(r->outputs[i].name);
      json_decref(r->outputs[i].parameters);
    }
    free(r->outputs);
  }
  memset(r, 0, sizeof *r);
}

void berth_infer_response_clear(berth_infer_response *r) {
  if (r == NULL)
    return;
  berth_tensors_free(r->outputs, r->n_outputs);
  json_decref(r->parameters);
  memset(r, 0, sizeof *r);
}
