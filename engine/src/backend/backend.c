/* Berth engine: what every native backend shares (backend.h): the table
 * of backends by runtime, opening a framework's library, and freeing
 * signatures and results. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

const berth_backend_ops *berth_backend_for(const char *runtime) {
  static const berth_backend_ops *const all[] = {
      &berth_backend_ort, &berth_backend_lgbm, &berth_backend_xgb};
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

const char *berth_backend_input_name(const json_t *entry) {
  json_t *in = entry != NULL ? json_object_get(entry, "inputs") : NULL;
  const char *name =
      json_string_value(json_object_get(json_array_get(in, 0), "name"));
  return name != NULL ? name : "input";
}

const berth_tensor *berth_backend_find_input(const berth_tensor *ts, size_t n,
                                             const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(ts[i].name, name) == 0)
      return &ts[i];
  return n == 1 ? &ts[0] : NULL;
}

const void *berth_backend_aligned(const berth_tensor *t, void **copy) {
  size_t size = berth_dtype_size(t->dtype);
  *copy = NULL;
  if (size <= 1 || (uintptr_t)t->data % size == 0)
    return t->data;
  *copy = malloc(t->nbytes ? t->nbytes : 1); /* malloc: max_align_t */
  if (*copy != NULL && t->nbytes > 0)
    memcpy(*copy, t->data, t->nbytes);
  return *copy;
}

int berth_backend_open(const berth_backend_library *l, const char *path,
                       const berth_backend_symbol *syms, size_t n_syms,
                       void **lib, berth_errmsg *err) {
  *lib = NULL;
  if (path == NULL || *path == '\0')
    return berth_errf(err, BERTH_E_CONFIG,
                      "backend: native for %s needs %s's shared library, and "
                      "none was found: install the %s wheel (pip install %s) "
                      "in berth's environment, set native.%s in the config "
                      "to the path of %s, or use backend: python",
                      l->a_model, l->framework, l->key, l->key, l->key,
                      l->file);
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      "native.%s: cannot open '%.200s' (%.200s): point it at "
                      "the %s wheel's %s, or use backend: python",
                      l->key, path, dlerror(), l->key, l->in_wheel);
  for (size_t i = 0; i < n_syms; i++) {
    *syms[i].slot = dlsym(h, syms[i].name);
    if (*syms[i].slot == NULL) {
      dlclose(h);
      return berth_errf(err, BERTH_E_CONFIG,
                        "native.%s: '%.200s' is not %s's C library (it has "
                        "no %s)",
                        l->key, path, l->framework, syms[i].name);
    }
  }
  *lib = h;
  return BERTH_OK;
}
