/* Berth engine: the ONNX Runtime backend, through ORT's C API.
 *
 * The shared library comes from the onnxruntime wheel (the CLI passes its
 * path as native.onnxruntime); it is opened with dlopen at the first load,
 * so berthd neither links against it nor needs it installed.
 *
 * No ONNX Runtime header is packaged for Debian 12 or shipped by a PyPI
 * package of the wheel's version, so the few entry points used here are
 * declared below. The facts they rest on, from ORT's documented C API
 * (include/onnxruntime/core/session/onnxruntime_c_api.h, read at ORT API
 * version 13): OrtGetApiBase() is the library's one exported function and
 * returns {GetApi(version), GetVersionString()}; GetApi returns the OrtApi
 * struct, a table of function pointers whose order ORT's ABI policy fixes
 * (new entries are only appended, so a newer library serves an older
 * version's table); the positions used are listed in ort_fn below; every
 * fallible function returns an OrtStatus pointer, NULL on success. At load
 * the table is checked by a round trip through CreateStatus,
 * GetErrorCode and GetErrorMessage.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"

/* The API version whose table layout is described here. */
#define ORT_API_VERSION_USED 13u

/* Positions in the OrtApi table (see the top of the file). */
enum ort_fn {
  F_CREATE_STATUS = 0,
  F_GET_ERROR_CODE = 1,
  F_GET_ERROR_MESSAGE = 2,
  F_CREATE_ENV = 3,
  F_CREATE_SESSION = 7,
  F_RUN = 9,
  F_CREATE_SESSION_OPTIONS = 10,
  F_SET_INTRA_OP_THREADS = 24,
  F_SET_INTER_OP_THREADS = 25,
  F_SESSION_INPUT_COUNT = 30,
  F_SESSION_OUTPUT_COUNT = 31,
  F_SESSION_INPUT_TYPE_INFO = 33,
  F_SESSION_OUTPUT_TYPE_INFO = 34,
  F_SESSION_INPUT_NAME = 36,
  F_SESSION_OUTPUT_NAME = 37,
  F_CREATE_TENSOR = 48,
  F_CREATE_TENSOR_WITH_DATA = 49,
  F_TENSOR_MUTABLE_DATA = 51,
  F_FILL_STRING_TENSOR = 52,
  F_STRING_DATA_LENGTH = 53,
  F_STRING_CONTENT = 54,
  F_CAST_TO_TENSOR_INFO = 55,
  F_ONNX_TYPE_OF_INFO = 56,
  F_ELEMENT_TYPE = 60,
  F_DIMS_COUNT = 61,
  F_DIMS = 62,
  F_TENSOR_TYPE_AND_SHAPE = 65,
  F_CREATE_CPU_MEMORY_INFO = 69,
  F_ALLOCATOR_FREE = 76,
  F_DEFAULT_ALLOCATOR = 78,
  F_RELEASE_ENV = 92,
  F_RELEASE_STATUS = 93,
  F_RELEASE_SESSION = 95,
  F_RELEASE_VALUE = 96,
  F_RELEASE_TYPE_INFO = 98,
  F_RELEASE_SHAPE_INFO = 99,
  F_RELEASE_SESSION_OPTIONS = 100,
  F_ADD_SESSION_CONFIG_ENTRY = 130,
  F_COUNT = 131
};

/* ONNX's element types (TensorProto.DataType) and value kinds. */
enum {
  OT_FLOAT = 1,
  OT_UINT8 = 2,
  OT_INT8 = 3,
  OT_UINT16 = 4,
  OT_INT16 = 5,
  OT_INT32 = 6,
  OT_INT64 = 7,
  OT_STRING = 8,
  OT_BOOL = 9,
  OT_FLOAT16 = 10,
  OT_DOUBLE = 11,
  OT_UINT32 = 12,
  OT_UINT64 = 13,
  OT_BFLOAT16 = 16,
  OT_COUNT = 17
};
#define ONNX_TYPE_TENSOR 1
#define ORT_INVALID_ARGUMENT 2

typedef void *st; /* OrtStatus*: NULL on success */
typedef void (*ort_any)(void);
typedef struct {
  const void *(*get_api)(uint32_t version);
  const char *(*version)(void);
} ort_api_base;

static const berth_dtype dtype_of_onnx[OT_COUNT] = {
    [OT_FLOAT] = BERTH_DT_FP32,    [OT_UINT8] = BERTH_DT_UINT8,
    [OT_INT8] = BERTH_DT_INT8,     [OT_UINT16] = BERTH_DT_UINT16,
    [OT_INT16] = BERTH_DT_INT16,   [OT_INT32] = BERTH_DT_INT32,
    [OT_INT64] = BERTH_DT_INT64,   [OT_STRING] = BERTH_DT_BYTES,
    [OT_BOOL] = BERTH_DT_BOOL,     [OT_FLOAT16] = BERTH_DT_FP16,
    [OT_DOUBLE] = BERTH_DT_FP64,   [OT_UINT32] = BERTH_DT_UINT32,
    [OT_UINT64] = BERTH_DT_UINT64, [OT_BFLOAT16] = BERTH_DT_BF16,
};

static int onnx_of_dtype(berth_dtype d) {
  for (int i = 0; i < OT_COUNT; i++)
    if (dtype_of_onnx[i] == d && d != BERTH_DT_INVALID)
      return i;
  return 0;
}

/* The process's one ONNX Runtime: a library can be opened once, and ORT
 * wants one environment per process. Set up on the loop thread at the
 * first load and kept until exit (a library with thread pools is never
 * closed while the process runs). */
static struct {
  pthread_mutex_t lock;
  void *lib;
  const ort_any *api;
  void *env;      /* OrtEnv* */
  void *cpu_info; /* OrtMemoryInfo*: CPU memory the caller owns */
  void *alloc;    /* OrtAllocator*: ORT's default CPU allocator */
  char version[32];
} ort = {.lock = PTHREAD_MUTEX_INITIALIZER};

#define CALL(fn, type, ...) ((type)ort.api[fn])(__VA_ARGS__)

/* Writes status's message into err and frees status; returns rc (or
 * BERTH_E_INVALID when ORT calls it an invalid argument and rc is
 * BERTH_E_MODEL during a run). */
static int take_status(st s, int rc, berth_errmsg *err, const char *what) {
  int code = CALL(F_GET_ERROR_CODE, int (*)(const void *), s);
  const char *msg = CALL(F_GET_ERROR_MESSAGE, const char *(*)(const void *), s);
  if (rc == BERTH_E_MODEL && code == ORT_INVALID_ARGUMENT && what == NULL)
    rc = BERTH_E_INVALID;
  berth_errf(err, rc, "%s%sONNX Runtime: %s", what ? what : "",
             what ? ": " : "", msg ? msg : "unknown error");
  CALL(F_RELEASE_STATUS, void (*)(void *), s);
  return rc;
}

/* The table answers as the layout says: a status made with a code and a
 * message gives both back. */
static bool api_sane(void) {
  st s =
      CALL(F_CREATE_STATUS, st(*)(int, const char *), 7, "berth layout check");
  if (s == NULL)
    return false;
  int code = CALL(F_GET_ERROR_CODE, int (*)(const void *), s);
  const char *m = CALL(F_GET_ERROR_MESSAGE, const char *(*)(const void *), s);
  bool ok = code == 7 && m != NULL && strcmp(m, "berth layout check") == 0;
  CALL(F_RELEASE_STATUS, void (*)(void *), s);
  return ok;
}

static int open_library(const char *path, berth_errmsg *err) {
  static const berth_backend_library library = {
      "ONNX Runtime", "an ONNX model", "onnxruntime", "libonnxruntime.so",
      "onnxruntime/capi/libonnxruntime.so.*"};
  const ort_api_base *(*base_fn)(void) = NULL;
  const berth_backend_symbol syms[] = {{"OrtGetApiBase", (void **)&base_fn}};
  void *lib = NULL;
  int rc = berth_backend_open(&library, path, syms, 1, &lib, err);
  if (rc != BERTH_OK)
    return rc;
  const ort_api_base *base = base_fn != NULL ? base_fn() : NULL;
  const ort_any *api =
      base != NULL ? base->get_api(ORT_API_VERSION_USED) : NULL;
  if (api == NULL) {
    dlclose(lib);
    return berth_errf(err, BERTH_E_CONFIG,
                      "native.onnxruntime: '%.200s' is not an ONNX Runtime "
                      "library of API version %u or later",
                      path, ORT_API_VERSION_USED);
  }
  ort.lib = lib;
  ort.api = api;
  snprintf(ort.version, sizeof ort.version, "%s",
           base->version != NULL ? base->version() : "?");
  if (!api_sane())
    return berth_errf(err, BERTH_E_CONFIG,
                      "native.onnxruntime: ONNX Runtime %s's C API does not "
                      "have the layout berth expects; use backend: python",
                      ort.version);
  return BERTH_OK;
}

/* Opens the library and makes the environment, once. */
static int ort_setup(const char *path, berth_errmsg *err) {
  if (ort.env != NULL)
    return BERTH_OK;
  int rc = ort.api == NULL ? open_library(path, err) : BERTH_OK;
  if (rc != BERTH_OK)
    return rc;
  st s = CALL(F_CREATE_ENV, st(*)(int, const char *, void **), 3 /* error */,
              "berth", &ort.env);
  if (s == NULL)
    s = CALL(F_CREATE_CPU_MEMORY_INFO, st(*)(int, int, void **),
             0 /* device allocator */, 0 /* default memory */, &ort.cpu_info);
  if (s == NULL)
    s = CALL(F_DEFAULT_ALLOCATOR, st(*)(void **), &ort.alloc);
  if (s != NULL)
    return take_status(s, BERTH_E_CONFIG, err, "native.onnxruntime");
  return BERTH_OK;
}

/* ---- a loaded model ------------------------------------------------------ */

struct berth_backend {
  void *session; /* OrtSession* */
  char **in_names;
  int *in_types; /* ONNX element type per input */
  size_t n_in;
  char **out_names;
  size_t n_out;
};

static void names_free(char **names, size_t n) {
  for (size_t i = 0; names != NULL && i < n; i++)
    free(names[i]);
  free(names);
}

static void ort_unload(berth_backend *b) {
  if (b == NULL)
    return;
  if (b->session != NULL)
    CALL(F_RELEASE_SESSION, void (*)(void *), b->session);
  names_free(b->in_names, b->n_in);
  names_free(b->out_names, b->n_out);
  free(b->in_types);
  free(b);
}

/* The model file: path itself, or model.onnx in the folder path, or the
 * folder's one .onnx file. */
static int model_file(const char *path, char *out, size_t cap,
                      berth_errmsg *err) {
  struct stat sb;
  if (stat(path, &sb) != 0)
    return berth_errf(err, BERTH_E_MODEL, "%.300s: no such file", path);
  if (!S_ISDIR(sb.st_mode)) {
    snprintf(out, cap, "%s", path);
    return BERTH_OK;
  }
  snprintf(out, cap, "%s/model.onnx", path);
  if (stat(out, &sb) == 0)
    return BERTH_OK;
  return berth_errf(err, BERTH_E_MODEL,
                    "%.300s: a folder without model.onnx (name the file in "
                    "the entry's path)",
                    path);
}

/* Reads one input's or output's name, type and shape. kind_ok false: it is
 * not a tensor of a type berth carries. */
static int describe(berth_backend *b, bool input, size_t i, char **name,
                    berth_tensor_spec *spec, int *onnx_type, bool *kind_ok,
                    berth_errmsg *err) {
  st s = CALL(input ? F_SESSION_INPUT_NAME : F_SESSION_OUTPUT_NAME,
              st(*)(const void *, size_t, void *, char **), b->session, i,
              ort.alloc, name);
  void *ti = NULL, *shape_info = NULL;
  int kind = 0;
  *kind_ok = false;
  if (s == NULL)
    s = CALL(input ? F_SESSION_INPUT_TYPE_INFO : F_SESSION_OUTPUT_TYPE_INFO,
             st(*)(const void *, size_t, void **), b->session, i, &ti);
  if (s == NULL)
    s = CALL(F_ONNX_TYPE_OF_INFO, st(*)(const void *, int *), ti, &kind);
  if (s == NULL && kind == ONNX_TYPE_TENSOR)
    s = CALL(F_CAST_TO_TENSOR_INFO, st(*)(const void *, void **), ti,
             &shape_info);
  size_t nd = 0;
  if (s == NULL && shape_info != NULL)
    s = CALL(F_ELEMENT_TYPE, st(*)(const void *, int *), shape_info, onnx_type);
  if (s == NULL && shape_info != NULL)
    s = CALL(F_DIMS_COUNT, st(*)(const void *, size_t *), shape_info, &nd);
  if (s == NULL && shape_info != NULL && nd <= BERTH_MAX_DIMS)
    s = CALL(F_DIMS, st(*)(const void *, int64_t *, size_t), shape_info,
             spec->shape, nd);
  if (s == NULL && shape_info != NULL && nd <= BERTH_MAX_DIMS &&
      *onnx_type > 0 && *onnx_type < OT_COUNT &&
      dtype_of_onnx[*onnx_type] != BERTH_DT_INVALID) {
    *kind_ok = true;
    spec->dtype = dtype_of_onnx[*onnx_type];
    spec->ndim = (uint32_t)nd;
    for (size_t k = 0; k < nd; k++)
      if (spec->shape[k] < 0)
        spec->shape[k] = -1; /* symbolic or unknown */
  }
  if (ti != NULL)
    CALL(F_RELEASE_TYPE_INFO, void (*)(void *), ti);
  return s == NULL ? BERTH_OK : take_status(s, BERTH_E_MODEL, err, "signature");
}

/* Copies an ORT-allocated name into a malloc'd one. */
static char *own_name(char *ort_name) {
  char *copy = ort_name != NULL ? strdup(ort_name) : NULL;
  if (ort_name != NULL)
    (void)CALL(F_ALLOCATOR_FREE, st(*)(void *, void *), ort.alloc, ort_name);
  return copy;
}

static int read_inputs(berth_backend *b, berth_backend_sig *sig,
                       const char *file, berth_errmsg *err) {
  st s = CALL(F_SESSION_INPUT_COUNT, st(*)(const void *, size_t *), b->session,
              &b->n_in);
  if (s != NULL)
    return take_status(s, BERTH_E_MODEL, err, "signature");
  b->in_names = calloc(b->n_in ? b->n_in : 1, sizeof *b->in_names);
  b->in_types = calloc(b->n_in ? b->n_in : 1, sizeof *b->in_types);
  sig->inputs = calloc(b->n_in ? b->n_in : 1, sizeof *sig->inputs);
  if (b->in_names == NULL || b->in_types == NULL || sig->inputs == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < b->n_in; i++) {
    char *raw = NULL;
    bool ok;
    berth_tensor_spec *sp = &sig->inputs[sig->n_inputs];
    int rc = describe(b, true, i, &raw, sp, &b->in_types[i], &ok, err);
    b->in_names[i] = own_name(raw);
    if (rc != BERTH_OK)
      return rc;
    if (b->in_names[i] == NULL || (sp->name = strdup(b->in_names[i])) == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    sig->n_inputs++;
    if (!ok)
      return berth_errf(err, BERTH_E_MODEL,
                        "%.300s: input '%.100s' is not a tensor of a type "
                        "berth carries (or has over %d dimensions)",
                        file, b->in_names[i], BERTH_MAX_DIMS);
  }
  return BERTH_OK;
}

static int read_outputs(berth_backend *b, berth_backend_sig *sig,
                        const char *file, berth_errmsg *err) {
  size_t n = 0;
  st s = CALL(F_SESSION_OUTPUT_COUNT, st(*)(const void *, size_t *), b->session,
              &n);
  if (s != NULL)
    return take_status(s, BERTH_E_MODEL, err, "signature");
  b->out_names = calloc(n ? n : 1, sizeof *b->out_names);
  sig->outputs = calloc(n ? n : 1, sizeof *sig->outputs);
  if (b->out_names == NULL || sig->outputs == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    char *raw = NULL;
    bool ok;
    int type = 0;
    berth_tensor_spec *sp = &sig->outputs[sig->n_outputs];
    int rc = describe(b, false, i, &raw, sp, &type, &ok, err);
    char *name = own_name(raw);
    if (rc != BERTH_OK || !ok) { /* not a tensor: left out */
      free(name);
      memset(sp, 0, sizeof *sp);
      if (rc != BERTH_OK)
        return rc;
      continue;
    }
    if (name == NULL || (sp->name = strdup(name)) == NULL) {
      free(name);
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    }
    b->out_names[b->n_out++] = name;
    sig->n_outputs++;
  }
  if (b->n_out == 0)
    return berth_errf(err, BERTH_E_MODEL,
                      "%.300s: the graph has no tensor "
                      "outputs",
                      file);
  return BERTH_OK;
}

static int thread_param(const json_t *params, const char *key, int *out,
                        berth_errmsg *err) {
  json_t *v = params != NULL ? json_object_get(params, key) : NULL;
  *out = 0;
  if (v == NULL)
    return BERTH_OK;
  if (!json_is_integer(v) || json_integer_value(v) < 0 ||
      json_integer_value(v) > 1024)
    return berth_errf(err, BERTH_E_CONFIG,
                      "parameters.%s: expected an integer from 0 to 1024", key);
  *out = (int)json_integer_value(v);
  return BERTH_OK;
}

/* parameters.allow_spinning: whether ONNX Runtime's pool threads spin
 * waiting for more work once a batch is done, rather than sleep (ORT's own
 * default is to spin). Off unless the entry says true: berthd's event loop
 * parses and encodes every request on the same cores, and a thread that
 * spins after each batch takes CPU from it (docs/native.md, "Threads"). */
static int spin_param(const json_t *params, bool *out, berth_errmsg *err) {
  json_t *v = params != NULL ? json_object_get(params, "allow_spinning") : NULL;
  *out = false;
  if (v == NULL)
    return BERTH_OK;
  if (!json_is_boolean(v))
    return berth_errf(err, BERTH_E_CONFIG,
                      "parameters.allow_spinning: expected true or false");
  *out = json_is_true(v);
  return BERTH_OK;
}

/* The session options a model's parameters ask for (opts from
 * CreateSessionOptions). */
static st set_options(void *opts, int intra, int inter, bool spin) {
  st s = NULL;
  if (intra > 0)
    s = CALL(F_SET_INTRA_OP_THREADS, st(*)(void *, int), opts, intra);
  if (s == NULL && inter > 0)
    s = CALL(F_SET_INTER_OP_THREADS, st(*)(void *, int), opts, inter);
  const char *keys[] = {"session.intra_op.allow_spinning",
                        "session.inter_op.allow_spinning"};
  for (size_t i = 0; s == NULL && i < 2; i++)
    s = CALL(F_ADD_SESSION_CONFIG_ENTRY,
             st(*)(void *, const char *, const char *), opts, keys[i],
             spin ? "1" : "0");
  return s;
}

static int make_session(berth_backend *b, const char *file,
                        const json_t *params, int threads, berth_errmsg *err) {
  int intra, inter;
  bool spin;
  int rc = thread_param(params, "intra_op_threads", &intra, err);
  if (intra == 0)
    intra = threads;
  if (rc == BERTH_OK)
    rc = thread_param(params, "inter_op_threads", &inter, err);
  if (rc == BERTH_OK)
    rc = spin_param(params, &spin, err);
  if (rc != BERTH_OK)
    return rc;
  void *opts = NULL;
  st s = CALL(F_CREATE_SESSION_OPTIONS, st(*)(void **), &opts);
  if (s == NULL)
    s = set_options(opts, intra, inter, spin);
  if (s == NULL)
    s = CALL(F_CREATE_SESSION,
             st(*)(const void *, const char *, const void *, void **), ort.env,
             file, opts, &b->session);
  if (opts != NULL)
    CALL(F_RELEASE_SESSION_OPTIONS, void (*)(void *), opts);
  if (s != NULL) {
    char what[400];
    snprintf(what, sizeof what, "%.300s: ONNX Runtime could not load it", file);
    return take_status(s, BERTH_E_MODEL, err, what);
  }
  return BERTH_OK;
}

static int ort_load(const berth_backend_opts *o, berth_backend **out,
                    berth_backend_sig *sig, berth_errmsg *err) {
  *out = NULL;
  memset(sig, 0, sizeof *sig);
  pthread_mutex_lock(&ort.lock);
  int rc = ort_setup(o->library, err);
  pthread_mutex_unlock(&ort.lock);
  if (rc != BERTH_OK)
    return rc;
  char file[4096];
  rc = model_file(o->path, file, sizeof file, err);
  if (rc != BERTH_OK)
    return rc;
  berth_backend *b = calloc(1, sizeof *b);
  if (b == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  rc = make_session(b, file, o->params, o->threads, err);
  if (rc == BERTH_OK)
    rc = read_inputs(b, sig, file, err);
  if (rc == BERTH_OK)
    rc = read_outputs(b, sig, file, err);
  if (rc != BERTH_OK) {
    ort_unload(b);
    berth_backend_sig_clear(sig);
    return rc;
  }
  sig->platform = "onnx_onnxv1";
  bool any = true;
  for (size_t i = 0; i < sig->n_inputs; i++)
    any = any && sig->inputs[i].ndim > 0 && sig->inputs[i].shape[0] == -1;
  for (size_t i = 0; i < sig->n_outputs; i++)
    any = any && sig->outputs[i].ndim > 0 && sig->outputs[i].shape[0] == -1;
  sig->max_batch_size = any ? 64 : 0;
  *out = b;
  return BERTH_OK;
}

/* ---- running a batch ----------------------------------------------------- */

/* A BYTES tensor as an ORT string tensor (ORT copies the strings). */
static st string_value(const berth_tensor *t, void **value) {
  uint64_t n = 0;
  (void)berth_shape_numel(t->shape, t->ndim, &n); /* checked by the engine */
  const char **ptrs = calloc(n ? n : 1, sizeof *ptrs);
  char *copy = malloc(t->nbytes + n + 1);
  if (ptrs == NULL || copy == NULL) {
    free(ptrs);
    free(copy);
    return CALL(F_CREATE_STATUS, st(*)(int, const char *), 1, "out of memory");
  }
  size_t off = 0, w = 0;
  for (uint64_t e = 0; e < n; e++) {
    uint32_t len;
    memcpy(&len, t->data + off, 4);
    off += 4;
    memcpy(copy + w, t->data + off, len);
    ptrs[e] = copy + w;
    w += len;
    copy[w++] = '\0';
    off += len;
  }
  st s = CALL(F_CREATE_TENSOR,
              st(*)(void *, const int64_t *, size_t, int, void **), ort.alloc,
              t->shape, (size_t)t->ndim, OT_STRING, value);
  if (s == NULL)
    s = CALL(F_FILL_STRING_TENSOR, st(*)(void *, const char *const *, size_t),
             *value, ptrs, (size_t)n);
  free(ptrs);
  free(copy);
  return s;
}

static const berth_tensor *find(const berth_tensor *ts, size_t n,
                                const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(ts[i].name, name) == 0)
      return &ts[i];
  return NULL;
}

/* ins[i]'s aligned copy when its data was not aligned (freed after the
 * run), else NULL. */
static st make_inputs(berth_backend *b, const berth_tensor *inputs, size_t n,
                      void **values, void **copies) {
  for (size_t i = 0; i < b->n_in; i++) {
    const berth_tensor *t = find(inputs, n, b->in_names[i]);
    if (t == NULL || onnx_of_dtype(t->dtype) != b->in_types[i])
      return CALL(F_CREATE_STATUS, st(*)(int, const char *),
                  ORT_INVALID_ARGUMENT,
                  "an input is missing or has the wrong datatype");
    st s;
    const void *data = t->dtype == BERTH_DT_BYTES
                           ? t->data
                           : berth_backend_aligned(t, &copies[i]);
    if (data == NULL)
      s = CALL(F_CREATE_STATUS, st(*)(int, const char *), 1, "out of memory");
    else if (t->dtype == BERTH_DT_BYTES)
      s = string_value(t, &values[i]);
    else
      s = CALL(F_CREATE_TENSOR_WITH_DATA,
               st(*)(const void *, void *, size_t, const int64_t *, size_t, int,
                     void **),
               ort.cpu_info, (void *)data, t->nbytes, t->shape, (size_t)t->ndim,
               b->in_types[i], &values[i]);
    if (s != NULL)
      return s;
  }
  return NULL;
}

/* ORT's string tensor as berth's BYTES layout (an owned copy). */
static st string_output(void *value, berth_tensor *t, uint64_t n) {
  size_t len = 0;
  st s = CALL(F_STRING_DATA_LENGTH, st(*)(const void *, size_t *), value, &len);
  if (s != NULL)
    return s;
  char *chars = malloc(len ? len : 1);
  size_t *offs = calloc(n ? n : 1, sizeof *offs);
  t->data = malloc(len + 4 * n + 1);
  if (chars == NULL || offs == NULL || t->data == NULL) {
    free(chars);
    free(offs);
    return CALL(F_CREATE_STATUS, st(*)(int, const char *), 1, "out of memory");
  }
  s = CALL(F_STRING_CONTENT,
           st(*)(const void *, void *, size_t, size_t *, size_t), value, chars,
           len, offs, (size_t)n);
  size_t w = 0;
  for (uint64_t e = 0; s == NULL && e < n; e++) {
    size_t end = e + 1 < n ? offs[e + 1] : len;
    uint32_t l = (uint32_t)(end - offs[e]);
    memcpy(t->data + w, &l, 4);
    memcpy(t->data + w + 4, chars + offs[e], l);
    w += 4 + l;
  }
  t->nbytes = w;
  free(chars);
  free(offs);
  return s;
}

/* Describes output value i into t (data borrowed from value, or an owned
 * copy for strings). */
static st take_output(berth_backend *b, size_t i, void *value,
                      berth_tensor *t) {
  void *info = NULL;
  int type = 0;
  size_t nd = 0;
  st s =
      CALL(F_TENSOR_TYPE_AND_SHAPE, st(*)(const void *, void **), value, &info);
  if (s == NULL)
    s = CALL(F_ELEMENT_TYPE, st(*)(const void *, int *), info, &type);
  if (s == NULL)
    s = CALL(F_DIMS_COUNT, st(*)(const void *, size_t *), info, &nd);
  if (s == NULL && nd > BERTH_MAX_DIMS)
    s = CALL(F_CREATE_STATUS, st(*)(int, const char *), 1,
             "an output has too many dimensions");
  if (s == NULL)
    s = CALL(F_DIMS, st(*)(const void *, int64_t *, size_t), info, t->shape,
             nd);
  if (info != NULL)
    CALL(F_RELEASE_SHAPE_INFO, void (*)(void *), info);
  if (s != NULL)
    return s;
  t->name = strdup(b->out_names[i]);
  t->ndim = (uint32_t)nd;
  t->dtype =
      type > 0 && type < OT_COUNT ? dtype_of_onnx[type] : BERTH_DT_INVALID;
  uint64_t n = 0;
  if (t->name == NULL || t->dtype == BERTH_DT_INVALID ||
      berth_shape_numel(t->shape, t->ndim, &n) != BERTH_OK)
    return CALL(F_CREATE_STATUS, st(*)(int, const char *), 1,
                "an output has an unknown type or a bad shape");
  if (t->dtype == BERTH_DT_BYTES)
    return string_output(value, t, n);
  void *data = NULL;
  s = CALL(F_TENSOR_MUTABLE_DATA, st(*)(void *, void **), value, &data);
  t->data = data;
  t->data_borrowed = true;
  t->nbytes = (size_t)n * berth_dtype_size(t->dtype);
  return s;
}

static void release_values(void **values, size_t n) {
  for (size_t i = 0; values != NULL && i < n; i++)
    if (values[i] != NULL)
      CALL(F_RELEASE_VALUE, void (*)(void *), values[i]);
  free(values);
}

static int ort_run(berth_backend *b, const berth_tensor *inputs, size_t n,
                   berth_backend_result *out, berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  void **ins = calloc(b->n_in ? b->n_in : 1, sizeof *ins);
  void **copies = calloc(b->n_in ? b->n_in : 1, sizeof *copies);
  void **outs = calloc(b->n_out, sizeof *outs);
  out->outputs = calloc(b->n_out, sizeof *out->outputs);
  if (ins == NULL || copies == NULL || outs == NULL || out->outputs == NULL) {
    free(ins);
    free(copies);
    free(outs);
    free(out->outputs);
    out->outputs = NULL;
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  st s = make_inputs(b, inputs, n, ins, copies);
  if (s == NULL)
    s = CALL(F_RUN,
             st(*)(void *, const void *, const char *const *,
                   const void *const *, size_t, const char *const *, size_t,
                   void **),
             b->session, NULL, (const char *const *)b->in_names,
             (const void *const *)ins, b->n_in,
             (const char *const *)b->out_names, b->n_out, outs);
  release_values(ins, b->n_in);
  for (size_t i = 0; i < b->n_in; i++)
    free(copies[i]);
  free(copies);
  out->keep = outs;
  out->n_outputs = b->n_out;
  for (size_t i = 0; s == NULL && i < b->n_out; i++)
    s = take_output(b, i, outs[i], &out->outputs[i]);
  if (s != NULL) {
    int rc = take_status(s, BERTH_E_MODEL, err, NULL);
    berth_backend_result_free(&berth_backend_ort, b, out);
    return rc;
  }
  return BERTH_OK;
}

static void ort_release(berth_backend *b, void *keep) {
  release_values(keep, b->n_out);
}

const berth_backend_ops berth_backend_ort = {.name = "onnxruntime",
                                             .runtime = "onnx",
                                             .load = ort_load,
                                             .run = ort_run,
                                             .release = ort_release,
                                             .unload = ort_unload};
