/* Berth engine: the XGBoost backend, through XGBoost's C API.
 *
 * The shared library comes from the xgboost wheel (xgboost/lib/
 * libxgboost.so; the CLI passes it as native.xgboost) and is opened with
 * dlopen at the first load. Its functions are plain C, declared here from
 * XGBoost's documented C API (include/xgboost/c_api.h): each returns 0 on
 * success and -1 on failure, XGBGetLastError() giving the message;
 * bst_ulong is uint64_t. XGBoosterPredictFromDense takes the input as a
 * JSON array interface (NumPy's __array_interface__: data pointer, shape,
 * typestr "<f4") and a JSON config, the one Booster.inplace_predict sends,
 * and returns a buffer XGBoost owns (copied at once).
 *
 * Served as the Python runtime (python/berth/runtimes/xgboost.py) serves a
 * plain Booster: input "input" (or the declared name) FP32
 * [-1, num_feature]; output "predict" FP32, [-1] or [-1, k] (the shape of
 * a probe row's answer). A model saved from the scikit-learn wrapper is
 * refused: the wrapper derives labels, probabilities and the iteration
 * range in Python, so backend: python serves it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

static struct {
  pthread_mutex_t lock;
  void *lib;
  int (*create)(const void *const *dmats, uint64_t len, void **out);
  int (*load_model)(void *h, const char *file);
  int (*free_booster)(void *h);
  int (*num_feature)(void *h, uint64_t *out);
  int (*get_attr)(void *h, const char *key, const char **out, int *success);
  int (*set_param)(void *h, const char *name, const char *value);
  int (*predict_dense)(void *h, const char *array, const char *config,
                       void *proxy, const uint64_t **shape, uint64_t *dim,
                       const float **result);
  const char *(*last_error)(void);
} xg = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct berth_backend {
  void *booster;
  uint64_t features;
  char *input;
  uint32_t out_ndim; /* 1: [N]; 2: [N, k] */
  int64_t out_k;
};

static const char predict_config[] =
    "{\"type\": 0, \"training\": false, \"iteration_begin\": 0, "
    "\"iteration_end\": 0, \"missing\": NaN, \"strict_shape\": false, "
    "\"cache_id\": 0}";

static int open_library(const char *path, berth_errmsg *err) {
  static const berth_backend_library lib = {"XGBoost", "an XGBoost model",
                                            "xgboost", "libxgboost.so",
                                            "xgboost/lib/libxgboost.so"};
  const berth_backend_symbol syms[] = {
      {"XGBoosterCreate", (void **)&xg.create},
      {"XGBoosterLoadModel", (void **)&xg.load_model},
      {"XGBoosterFree", (void **)&xg.free_booster},
      {"XGBoosterGetNumFeature", (void **)&xg.num_feature},
      {"XGBoosterGetAttr", (void **)&xg.get_attr},
      {"XGBoosterSetParam", (void **)&xg.set_param},
      {"XGBoosterPredictFromDense", (void **)&xg.predict_dense},
      {"XGBGetLastError", (void **)&xg.last_error}};
  return berth_backend_open(&lib, path, syms, sizeof syms / sizeof syms[0],
                            &xg.lib, err);
}

static int xg_error(int rc, berth_errmsg *err, const char *what) {
  const char *msg = xg.last_error != NULL ? xg.last_error() : NULL;
  char first[300] = "unknown error";
  if (msg != NULL) /* its first line: later ones are a C++ stack */
    snprintf(first, sizeof first, "%.*s", (int)strcspn(msg, "\n"), msg);
  return berth_errf(err, rc, "%s%sXGBoost: %s", what ? what : "",
                    what ? ": " : "", first);
}

static void xg_unload(berth_backend *b) {
  if (b == NULL)
    return;
  if (b->booster != NULL)
    xg.free_booster(b->booster);
  free(b->input);
  free(b);
}

/* Predicts rows x cols floats at data; the shape, dims and result borrow XGBoost's
 * thread-local buffers. */
static int predict(berth_backend *b, const void *data, int64_t rows,
                   int64_t cols, const uint64_t **shape, uint64_t *dim,
                   const float **res) {
  char array[256];
  snprintf(array, sizeof array,
           "{\"data\": [%" PRIuPTR ", true], \"strides\": null, "
           "\"descr\": [[\"\", \"<f4\"]], \"typestr\": \"<f4\", "
           "\"shape\": [%lld, %lld], \"version\": 3}",
           (uintptr_t)data, (long long)rows, (long long)cols);
  return xg.predict_dense(b->booster, array, predict_config, NULL, shape, dim,
                          res);
}

static int sklearn_model(berth_backend *b, const char *path,
                         berth_errmsg *err) {
  const char *attr = NULL;
  int found = 0;
  if (xg.get_attr(b->booster, "scikit_learn", &attr, &found) != 0 || !found)
    return BERTH_OK;
  return berth_errf(err, BERTH_E_CONFIG,
                    "%.300s: saved from XGBoost's scikit-learn wrapper, "
                    "whose labels, probabilities and iteration range come "
                    "from Python: serve it with backend: python",
                    path);
}

static int set_threads(berth_backend *b, const berth_backend_opts *o,
                       berth_errmsg *err) {
  json_t *v = o->params ? json_object_get(o->params, "nthread") : NULL;
  long n = o->threads;
  if (v != NULL) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > 1024)
      return berth_errf(err, BERTH_E_CONFIG,
                        "parameters.nthread: expected an integer from 0 to "
                        "1024");
    if (json_integer_value(v) > 0)
      n = (long)json_integer_value(v);
  }
  char value[32];
  snprintf(value, sizeof value, "%ld", n);
  if (n > 0 && xg.set_param(b->booster, "nthread", value) != 0)
    return xg_error(BERTH_E_MODEL, err, "nthread");
  return BERTH_OK;
}

/* The output's shape: what a row of zeros gives. */
static int probe(berth_backend *b, berth_errmsg *err) {
  size_t cols = b->features > 0 ? (size_t)b->features : 1;
  float *zeros = calloc(cols, sizeof *zeros);
  if (zeros == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  const uint64_t *shape = NULL;
  uint64_t dim = 0;
  const float *res = NULL;
  int rc = predict(b, zeros, 1, (int64_t)cols, &shape, &dim, &res);
  free(zeros);
  if (rc != 0)
    return xg_error(BERTH_E_MODEL, err, "a probe row");
  if (dim < 1 || dim > 2)
    return berth_errf(err, BERTH_E_MODEL,
                      "XGBoost answers with %llu dimensions; berth serves 1 "
                      "or 2 natively: use backend: python",
                      (unsigned long long)dim);
  b->out_ndim = (uint32_t)dim;
  b->out_k = dim == 2 ? (int64_t)shape[1] : 0;
  return BERTH_OK;
}

static int make_sig(berth_backend *b, berth_backend_sig *sig,
                    berth_errmsg *err) {
  sig->inputs = calloc(1, sizeof *sig->inputs);
  sig->outputs = calloc(1, sizeof *sig->outputs);
  if (sig->inputs == NULL || sig->outputs == NULL ||
      (sig->inputs->name = strdup(b->input)) == NULL ||
      (sig->outputs->name = strdup("predict")) == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  sig->n_inputs = sig->n_outputs = 1;
  *sig->inputs = (berth_tensor_spec){
      .name = sig->inputs->name,
      .dtype = BERTH_DT_FP32,
      .ndim = 2,
      .shape = {-1, b->features > 0 ? (int64_t)b->features : -1}};
  *sig->outputs = (berth_tensor_spec){.name = sig->outputs->name,
                                      .dtype = BERTH_DT_FP32,
                                      .ndim = b->out_ndim,
                                      .shape = {-1, b->out_k}};
  sig->platform = "xgboost_xgboost";
  sig->max_batch_size = 64;
  return BERTH_OK;
}

static int xg_load(const berth_backend_opts *o, berth_backend **out,
                   berth_backend_sig *sig, berth_errmsg *err) {
  *out = NULL;
  memset(sig, 0, sizeof *sig);
  pthread_mutex_lock(&xg.lock);
  int rc = xg.lib == NULL ? open_library(o->library, err) : BERTH_OK;
  pthread_mutex_unlock(&xg.lock);
  if (rc != BERTH_OK)
    return rc;
  berth_backend *b = calloc(1, sizeof *b);
  if (b == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  char what[400];
  snprintf(what, sizeof what, "%.300s: XGBoost could not load it", o->path);
  if (xg.create(NULL, 0, &b->booster) != 0 ||
      xg.load_model(b->booster, o->path) != 0 ||
      xg.num_feature(b->booster, &b->features) != 0)
    rc = xg_error(BERTH_E_MODEL, err, what);
  if (rc == BERTH_OK)
    rc = sklearn_model(b, o->path, err);
  if (rc == BERTH_OK)
    rc = set_threads(b, o, err);
  const char *name = berth_backend_input_name(o->entry);
  if (rc == BERTH_OK && (b->input = strdup(name)) == NULL)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc == BERTH_OK)
    rc = probe(b, err);
  if (rc == BERTH_OK)
    rc = make_sig(b, sig, err);
  if (rc != BERTH_OK) {
    xg_unload(b);
    berth_backend_sig_clear(sig);
    return rc;
  }
  *out = b;
  return BERTH_OK;
}

static int xg_run(berth_backend *b, const berth_tensor *inputs, size_t n,
                  berth_backend_result *out, berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  const berth_tensor *x = berth_backend_find_input(inputs, n, b->input);
  if (x == NULL || x->dtype != BERTH_DT_FP32 || x->ndim != 2)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '%s': expected FP32 [rows, %llu]", b->input,
                      (unsigned long long)b->features);
  const uint64_t *shape = NULL;
  uint64_t dim = 0;
  const float *res = NULL;
  void *copy = NULL;
  const void *data = berth_backend_aligned(x, &copy);
  if (data == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  int failed = predict(b, data, x->shape[0], x->shape[1], &shape, &dim, &res);
  free(copy);
  if (failed != 0)
    return xg_error(BERTH_E_INVALID, err, NULL);
  uint64_t count = 1;
  for (uint64_t i = 0; i < dim && i < BERTH_MAX_DIMS; i++)
    count *= shape[i];
  if (dim != b->out_ndim || shape[0] != (uint64_t)x->shape[0])
    return berth_errf(err, BERTH_E_MODEL,
                      "XGBoost answered %llu rows in %llu dimensions for "
                      "%lld rows",
                      (unsigned long long)shape[0], (unsigned long long)dim,
                      (long long)x->shape[0]);
  out->outputs = calloc(1, sizeof *out->outputs);
  float *owned = malloc(count ? count * sizeof *owned : 1);
  char *name = strdup("predict");
  if (out->outputs == NULL || owned == NULL || name == NULL) {
    free(out->outputs);
    free(owned);
    free(name);
    out->outputs = NULL;
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  memcpy(owned, res, count * sizeof *owned);
  out->n_outputs = 1;
  out->outputs[0] = (berth_tensor){.name = name,
                                   .dtype = BERTH_DT_FP32,
                                   .ndim = (uint32_t)dim,
                                   .shape = {x->shape[0], b->out_k},
                                   .data = (uint8_t *)owned,
                                   .nbytes = count * sizeof *owned};
  return BERTH_OK;
}

static void xg_release(berth_backend *b, void *keep) {
  (void)b;
  (void)keep; /* results are owned copies */
}

const berth_backend_ops berth_backend_xgb = {.name = "xgboost",
                                             .runtime = "xgboost",
                                             .load = xg_load,
                                             .run = xg_run,
                                             .release = xg_release,
                                             .unload = xg_unload};
