/* Berth engine: the LightGBM backend, through LightGBM's C API.
 *
 * The shared library comes from the lightgbm wheel (lightgbm/lib/
 * lib_lightgbm.so; the CLI passes it as native.lightgbm) and is opened with
 * dlopen at the first load. Its functions are plain C, declared here from
 * LightGBM's documented C API (include/LightGBM/c_api.h): every function
 * returns 0 on success and -1 on failure, LGBM_GetLastError() giving the
 * message of the calling thread's last failure.
 *
 * The model serves as the Python runtime (python/berth/runtimes/lightgbm.py)
 * does: input "input" (or the one declared) FP64 [-1, num_feature]; output
 * "predict" FP64, [-1] or [-1, num_class] when the model has several
 * classes; every iteration is used (Booster.predict's default for a model
 * loaded from a file); parameters.num_threads sets LightGBM's threads.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

#define LGBM_DTYPE_FLOAT64 1  /* C_API_DTYPE_FLOAT64 */
#define LGBM_PREDICT_NORMAL 0 /* C_API_PREDICT_NORMAL */

static struct {
  pthread_mutex_t lock;
  void *lib;
  int (*create)(const char *file, int *iterations, void **out);
  int (*num_feature)(void *h, int *out);
  int (*num_classes)(void *h, int *out);
  int (*calc_num_predict)(void *h, int rows, int type, int start, int num,
                          int64_t *out);
  int (*predict_mat)(void *h, const void *data, int dtype, int32_t rows,
                     int32_t cols, int row_major, int type, int start, int num,
                     const char *param, int64_t *out_len, double *out);
  int (*free_booster)(void *h);
  const char *(*last_error)(void);
} lg = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct berth_backend {
  void *booster;
  int features;
  int classes;
  char *input;    /* the input's name */
  char param[64]; /* "num_threads=N" or "" */
};

static int open_library(const char *path, berth_errmsg *err) {
  static const berth_backend_library lib = {"LightGBM", "a LightGBM model",
                                            "lightgbm", "lib_lightgbm.so",
                                            "lightgbm/lib/lib_lightgbm.so"};
  const berth_backend_symbol syms[] = {
      {"LGBM_BoosterCreateFromModelfile", (void **)&lg.create},
      {"LGBM_BoosterGetNumFeature", (void **)&lg.num_feature},
      {"LGBM_BoosterGetNumClasses", (void **)&lg.num_classes},
      {"LGBM_BoosterCalcNumPredict", (void **)&lg.calc_num_predict},
      {"LGBM_BoosterPredictForMat", (void **)&lg.predict_mat},
      {"LGBM_BoosterFree", (void **)&lg.free_booster},
      {"LGBM_GetLastError", (void **)&lg.last_error}};
  return berth_backend_open(&lib, path, syms, sizeof syms / sizeof syms[0],
                            &lg.lib, err);
}

static int lg_error(int rc, berth_errmsg *err, const char *what) {
  const char *msg = lg.last_error != NULL ? lg.last_error() : NULL;
  return berth_errf(err, rc, "%s%sLightGBM: %s", what ? what : "",
                    what ? ": " : "", msg ? msg : "unknown error");
}

static void lg_unload(berth_backend *b) {
  if (b == NULL)
    return;
  if (b->booster != NULL)
    lg.free_booster(b->booster);
  free(b->input);
  free(b);
}

static int spec(berth_tensor_spec *s, const char *name, int64_t dim) {
  s->name = strdup(name);
  s->dtype = BERTH_DT_FP64;
  s->ndim = dim > 0 ? 2 : 1;
  s->shape[0] = -1;
  s->shape[1] = dim;
  return s->name != NULL ? BERTH_OK : BERTH_E_NOMEM;
}

static int threads_param(berth_backend *b, const berth_backend_opts *o,
                         berth_errmsg *err) {
  json_t *v = o->params ? json_object_get(o->params, "num_threads") : NULL;
  long n = o->threads;
  if (v != NULL) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > 1024)
      return berth_errf(err, BERTH_E_CONFIG,
                        "parameters.num_threads: expected an integer from 0 "
                        "to 1024");
    if (json_integer_value(v) > 0)
      n = (long)json_integer_value(v);
  }
  if (n > 0)
    snprintf(b->param, sizeof b->param, "num_threads=%ld", n);
  return BERTH_OK;
}

static int lg_load(const berth_backend_opts *o, berth_backend **out,
                   berth_backend_sig *sig, berth_errmsg *err) {
  *out = NULL;
  memset(sig, 0, sizeof *sig);
  pthread_mutex_lock(&lg.lock);
  int rc = lg.lib == NULL ? open_library(o->library, err) : BERTH_OK;
  pthread_mutex_unlock(&lg.lock);
  if (rc != BERTH_OK)
    return rc;
  berth_backend *b = calloc(1, sizeof *b);
  if (b == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int iterations = 0;
  char what[400];
  snprintf(what, sizeof what, "%.300s: LightGBM could not load it", o->path);
  if (lg.create(o->path, &iterations, &b->booster) != 0)
    rc = lg_error(BERTH_E_MODEL, err, what);
  else if (lg.num_feature(b->booster, &b->features) != 0 ||
           lg.num_classes(b->booster, &b->classes) != 0)
    rc = lg_error(BERTH_E_MODEL, err, what);
  if (rc == BERTH_OK)
    rc = threads_param(b, o, err);
  if (rc == BERTH_OK &&
      (b->input = strdup(berth_backend_input_name(o->entry))) == NULL)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc == BERTH_OK) {
    sig->inputs = calloc(1, sizeof *sig->inputs);
    sig->outputs = calloc(1, sizeof *sig->outputs);
    if (sig->inputs == NULL || sig->outputs == NULL ||
        spec(sig->inputs, b->input, b->features > 0 ? b->features : -1) ||
        spec(sig->outputs, "predict", b->classes > 1 ? b->classes : 0))
      rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
    sig->n_inputs = sig->inputs != NULL;
    sig->n_outputs = sig->outputs != NULL;
  }
  if (rc != BERTH_OK) {
    lg_unload(b);
    berth_backend_sig_clear(sig);
    return rc;
  }
  sig->platform = "lightgbm_lightgbm";
  sig->max_batch_size = 64;
  *out = b;
  return BERTH_OK;
}

static int lg_run(berth_backend *b, const berth_tensor *inputs, size_t n,
                  berth_backend_result *out, berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  const berth_tensor *x = berth_backend_find_input(inputs, n, b->input);
  if (x == NULL || x->dtype != BERTH_DT_FP64 || x->ndim != 2 ||
      x->shape[0] > INT32_MAX || x->shape[1] > INT32_MAX)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '%s': expected FP64 [rows, %d]", b->input,
                      b->features);
  int rows = (int)x->shape[0];
  int64_t want = 0, got = 0;
  if (lg.calc_num_predict(b->booster, rows, LGBM_PREDICT_NORMAL, 0, -1,
                          &want) != 0)
    return lg_error(BERTH_E_MODEL, err, NULL);
  out->outputs = calloc(1, sizeof *out->outputs);
  double *res = malloc(want > 0 ? (size_t)want * sizeof *res : 1);
  if (out->outputs == NULL || res == NULL) {
    free(out->outputs);
    free(res);
    out->outputs = NULL;
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  out->n_outputs = 1;
  berth_tensor *t = &out->outputs[0];
  t->data = (uint8_t *)res;
  t->name = strdup("predict");
  void *copy = NULL;
  const void *data = berth_backend_aligned(x, &copy);
  int failed = data == NULL ||
               lg.predict_mat(b->booster, data, LGBM_DTYPE_FLOAT64, rows,
                              (int32_t)x->shape[1], 1, LGBM_PREDICT_NORMAL, 0,
                              -1, b->param, &got, res) != 0;
  free(copy);
  if (failed || got != want || t->name == NULL) {
    int rc = t->name == NULL ? berth_errf(err, BERTH_E_NOMEM, "out of memory")
             : got != want && got != 0
                 ? berth_errf(err, BERTH_E_MODEL,
                              "LightGBM gave %lld values for %lld expected",
                              (long long)got, (long long)want)
                 : lg_error(BERTH_E_INVALID, err, NULL);
    berth_backend_result_free(&berth_backend_lgbm, b, out);
    return rc;
  }
  t->dtype = BERTH_DT_FP64;
  t->shape[0] = rows;
  t->ndim = b->classes > 1 ? 2 : 1;
  t->shape[1] = b->classes;
  t->nbytes = (size_t)want * sizeof *res;
  return BERTH_OK;
}

static void lg_release(berth_backend *b, void *keep) {
  (void)b;
  (void)keep; /* results are owned copies */
}

const berth_backend_ops berth_backend_lgbm = {.name = "lightgbm",
                                              .runtime = "lightgbm",
                                              .load = lg_load,
                                              .run = lg_run,
                                              .release = lg_release,
                                              .unload = lg_unload};
