/* Berth engine: what every native backend shares (backend.h): the table
 * of backends by runtime, and freeing signatures and results. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"

const berth_backend_ops *berth_backend_for(const char *runtime) {
  static const berth_backend_ops *const all[] = {&berth_backend_ort,
                                                 &berth_backend_lgbm};
  for (size_t i = 0; runtime != NULL && i < sizeof all / sizeof all[0]; i++)
    if (strcmp(runtime, all[i]->runtime) == 0)
      return all[i];
  return NULL;
}

static void specs_clear(berth_tensor_spec *s, size_t n) {
  for (size_t i = 0; s != NULL && i < n; i++)
    free(s[i].name);
  free(s);
}

void berth_backend_sig_clear(berth_backend_sig *sig) {
  specs_clear(sig->inputs, sig->n_inputs);
  specs_clear(sig->outputs, sig->n_outputs);
  memset(sig, 0, sizeof *sig);
}

void berth_backend_result_free(const berth_backend_ops *ops, berth_backend *b,
                               berth_backend_result *r) {
  berth_tensors_free(r->outputs, r->n_outputs);
  if (r->keep != NULL)
    ops->release(b, r->keep);
  memset(r, 0, sizeof *r);
}
