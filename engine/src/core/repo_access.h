/* Berth engine: who may load what through the model repository API
 * (docs/security.md, "Model control modes and the path rule"): the control
 * mode, the served repository roots a load may name files in, and the
 * runtimes whose model files are code.
 */
#ifndef BERTH_REPO_ACCESS_H
#define BERTH_REPO_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* The served repositories: each a folder (anything under it may be named)
 * or one model file (only that file). */
typedef struct berth_repo_roots {
  char **given; /* owned: each root as configured, normalised */
  char **real;  /* owned: its realpath */
  size_t n;
} berth_repo_roots;

/* Resolves server.repositories. BERTH_E_CONFIG naming the entry when one
 * is not absolute or does not exist. Clear with berth_repo_roots_clear
 * (also after a failure). */
int berth_repo_roots_init(berth_repo_roots *r, char *const *paths, size_t n,
                          berth_errmsg *err);
void berth_repo_roots_clear(berth_repo_roots *r);

/* BERTH_OK when server.model_control_mode lets clients load and unload
 * (explicit); else BERTH_E_FORBIDDEN with a message naming the flag. */
int berth_repo_mode_allows(const berth_config *cfg, berth_errmsg *err);

/* The path rule for a path a request names (where: the key, for the
 * message). It must be absolute, without "..", lie inside a root as
 * written, and its realpath must lie inside a root's realpath (a symbolic
 * link out of the repository is refused). Nothing is opened; realpath is
 * called only for a path inside a root, so the answer for a path outside
 * says nothing of whether it exists. On success *resolved is the realpath
 * (malloc'd, the caller frees it). BERTH_E_FORBIDDEN outside,
 * BERTH_E_CONFIG for a path that does not exist inside. */
int berth_repo_path_check(const berth_repo_roots *r, const char *where,
                          const char *path, char **resolved, berth_errmsg *err);

/* true unless the runtime reads data only (onnx, xgboost, lightgbm): its
 * model files are code (pickles, .py files, MLflow pyfuncs, TensorFlow
 * graphs with file ops, Hugging Face and PyTorch checkpoints). */
bool berth_runtime_runs_code(const char *runtime);

/* Both rules for an entry from a request: the path rule on its "path"
 * (replaced in cfg->entry by its realpath), then the code rule (a runtime
 * that runs code needs trusted: the caller sent an admin token,
 * BERTH_E_FORBIDDEN otherwise). Sets cfg->quiet_errors when not trusted. */
int berth_repo_check_entry(const berth_repo_roots *roots,
                           berth_model_config *cfg, bool trusted,
                           berth_errmsg *err);

#endif
