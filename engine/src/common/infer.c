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
  if (r->input_shm != NULL) {
    for (size_t i = 0; i < r->n_inputs; i++)
      free(r->input_shm[i].region);
    free(r->input_shm);
  }
  if (r->hold_release != NULL)
    r->hold_release(r->hold);
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

/* A non-negative integer member of params, or 0 when absent. */
static int shm_uint(const json_t *params, const char *key, const char *what,
                    uint64_t *out, bool *present, berth_errmsg *err) {
  json_t *v = json_object_get(params, key);
  *present = v != NULL;
  if (v == NULL) {
    *out = 0;
    return BERTH_OK;
  }
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "%s: parameters.%s must be a "
                      "non-negative integer",
                      what, key);
  *out = (uint64_t)json_integer_value(v);
  return BERTH_OK;
}

int berth_shm_params(const json_t *params, const char *what, berth_shm_ref *ref,
                     berth_errmsg *err) {
  memset(ref, 0, sizeof *ref);
  json_t *name = json_is_object(params)
                     ? json_object_get(params, "shared_memory_region")
                     : NULL;
  if (name == NULL)
    return BERTH_OK;
  if (!json_is_string(name) || json_string_length(name) == 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "%s: parameters."
                      "shared_memory_region must be a region's name",
                      what);
  bool has_off = false, has_size = false;
  int rc = shm_uint(params, "shared_memory_offset", what, &ref->offset,
                    &has_off, err);
  if (rc == BERTH_OK)
    rc = shm_uint(params, "shared_memory_byte_size", what, &ref->byte_size,
                  &has_size, err);
  if (rc != BERTH_OK)
    return rc;
  if (!has_size)
    return berth_errf(err, BERTH_E_INVALID,
                      "%s: parameters."
                      "shared_memory_byte_size is required with "
                      "shared_memory_region",
                      what);
  ref->region = strdup(json_string_value(name));
  if (ref->region == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  return BERTH_OK;
}

bool berth_output_in_shm(const berth_infer_request *r, const char *name) {
  for (size_t i = 0; i < r->n_outputs; i++)
    if (strcmp(r->outputs[i].name, name) == 0)
      return json_is_object(r->outputs[i].parameters) &&
             json_object_get(r->outputs[i].parameters,
                             "shared_memory_region") != NULL;
  return false;
}
