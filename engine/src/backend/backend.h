/* Berth engine: native backends — a model run in berthd's own process
 * through a framework's C API (ONNX Runtime today), with no Python worker.
 *
 * One interface for every framework: load a model file into a handle and
 * describe its signature, run one batch of input tensors into output
 * tensors, unload. The functions here know nothing of the loop, the
 * scheduler or the engine: native.c calls load and unload on the loop
 * thread and run on a thread of libuv's pool (docs/native.md).
 *
 * Ownership:
 *   berth_backend_load gives the caller the handle (berth_backend_unload
 *     frees it) and fills sig with owned arrays (berth_backend_sig_clear).
 *   berth_backend_run reads the inputs (borrowed; not modified) and fills
 *     *out with an owned result (berth_backend_result_free); its tensors'
 *     data may borrow from the framework's own buffers, which the result
 *     keeps alive until it is freed.
 *   A handle may run several batches at once from different threads (ONNX
 *     Runtime's sessions allow concurrent Run calls); load and unload must
 *     not overlap a run of the same handle.
 */
#ifndef BERTH_BACKEND_H
#define BERTH_BACKEND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"
#include "berth/tensor.h"
#include "config.h"

typedef struct berth_backend berth_backend; /* a loaded model */

/* What a loaded model takes and gives. */
typedef struct berth_backend_sig {
  berth_tensor_spec *inputs; /* owned array of n_inputs (names owned) */
  size_t n_inputs;
  berth_tensor_spec *outputs; /* owned array of n_outputs: the outputs the
                                 backend returns (non-tensor outputs of an
                                 ONNX graph are left out, as the Python
                                 runtime does) */
  size_t n_outputs;
  uint32_t max_batch_size; /* suggestion: 64 when every input and output
                              has a variable first dimension, else 0 */
  const char *platform;    /* static string, e.g. "onnx_onnxv1" */
} berth_backend_sig;

/* Where the framework's shared library lives and how to load a model. */
typedef struct berth_backend_opts {
  const char *library;  /* borrowed: path of the framework's shared library
                            (the config's native.onnxruntime); NULL: not
                            installed */
  const char *path;     /* borrowed: the model file, or a folder holding
                            model.onnx */
  const json_t *params; /* borrowed or NULL: the entry's parameters
                            (intra_op_threads, inter_op_threads,
                            allow_spinning) */
  int threads;          /* intra-op threads when params say none (0: the
                            framework's default) */
  const json_t *entry;  /* borrowed or NULL: the whole model entry (its
                            declared inputs name a tree model's input) */
} berth_backend_opts;

/* The result of one batch. */
typedef struct berth_backend_result {
  berth_tensor *outputs; /* owned array of n_outputs, in sig order */
  size_t n_outputs;
  void *keep; /* owned by the backend: what outputs borrow
                            (ops->release frees it) */
} berth_backend_result;

/* One framework's functions. */
typedef struct berth_backend_ops {
  const char *name;    /* "onnxruntime", "lightgbm": the config key under
                          native: */
  const char *runtime; /* the model entry's runtime it serves: "onnx",
                          "lightgbm" */
  /* Loads a model. BERTH_E_CONFIG when the library is missing or unusable
   * (the message names the fix), BERTH_E_MODEL when the model cannot be
   * loaded or has a signature the backend cannot serve, BERTH_E_NOMEM. */
  int (*load)(const berth_backend_opts *o, berth_backend **out,
              berth_backend_sig *sig, berth_errmsg *err);
  /* Runs one batch: inputs in any order, found by name (the engine checked
   * names, datatypes and shapes against sig). BERTH_E_INVALID when the
   * framework rejects the input (wrong shape or value), BERTH_E_MODEL for
   * other failures, BERTH_E_NOMEM. Thread-safe (see the top of the file). */
  int (*run)(berth_backend *b, const berth_tensor *inputs, size_t n_inputs,
             berth_backend_result *out, berth_errmsg *err);
  /* Releases what result->keep holds (any thread). */
  void (*release)(berth_backend *b, void *keep);
  /* Frees the handle. Safe with NULL. */
  void (*unload)(berth_backend *b);
} berth_backend_ops;

/* The backend that serves runtime (e.g. "onnx"), or NULL when none does. */
const berth_backend_ops *berth_backend_for(const char *runtime);
/* Frees what sig owns and zeroes it. */
void berth_backend_sig_clear(berth_backend_sig *sig);
/* Frees a result: its tensors, then what they borrow (ops->release). Safe
 * on a zeroed result. */
void berth_backend_result_free(const berth_backend_ops *ops, berth_backend *b,
                               berth_backend_result *r);

/* ort.c: ONNX Runtime through its C API, loaded with dlopen. */
extern const berth_backend_ops berth_backend_ort;
/* lgbm.c: LightGBM through its C API, loaded with dlopen. */
extern const berth_backend_ops berth_backend_lgbm;
/* xgb.c: XGBoost through its C API, loaded with dlopen. */
extern const berth_backend_ops berth_backend_xgb;

/* A framework's shared library, for berth_backend_open: the words of its
 * error messages. All static strings. */
typedef struct berth_backend_library {
  const char *framework; /* "LightGBM" */
  const char *a_model;   /* "a LightGBM model" */
  const char *key;       /* "lightgbm": the config key native.<key> and the
                            wheel's pip name */
  const char *file;      /* "lib_lightgbm.so" */
  const char *in_wheel;  /* "lightgbm/lib/lib_lightgbm.so": where the wheel
                            keeps it */
} berth_backend_library;

/* One function to find in the library: *slot receives its address. */
typedef struct berth_backend_symbol {
  const char *name;
  void **slot;
} berth_backend_symbol;

/* Opens the shared library at path (dlopen, RTLD_NOW | RTLD_LOCAL) and
 * fills every symbol's slot. On success *lib is the handle (kept open for
 * the life of the process). BERTH_E_CONFIG, with a message naming the fix,
 * when path is NULL or empty (not installed), cannot be opened, or lacks a
 * symbol (then nothing stays open). */
int berth_backend_open(const berth_backend_library *l, const char *path,
                       const berth_backend_symbol *syms, size_t n_syms,
                       void **lib, berth_errmsg *err);

/* The one input of a tree model: the entry's first declared input's name
 * (as the Python runtimes take it), else "input". Borrowed from entry, or
 * static. */
const char *berth_backend_input_name(const json_t *entry);
/* t's data, aligned for its element type: t->data itself when it is
 * (then *copy is NULL), else an aligned copy the caller frees (*copy).
 * NULL when out of memory. A request's tensor may start anywhere in the
 * body it came in, and the frameworks read whole elements (XGBoost
 * refuses a misaligned pointer). */
const void *berth_backend_aligned(const berth_tensor *t, void **copy);
/* The input called name among n, or the only one when n is 1 (the Python
 * runtimes take a lone input under any name); NULL otherwise. */
const berth_tensor *berth_backend_find_input(const berth_tensor *ts, size_t n,
                                             const char *name);

#endif
