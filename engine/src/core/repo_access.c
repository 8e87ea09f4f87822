/* Berth engine: the control mode, the served repository roots and the path
 * rule, and the runtimes that run code (repo_access.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "repo_access.h"

#define FLAG "--model-control-mode explicit"

int berth_repo_mode_allows(const berth_config *cfg, berth_errmsg *err) {
  const char *mode = cfg->model_control_mode ? cfg->model_control_mode : "none";
  if (strcmp(mode, "explicit") == 0)
    return BERTH_OK;
  return berth_errf(err, BERTH_E_FORBIDDEN,
                    "the repository load/unload API "
                    "is off (model control mode 'none', the default); start "
                    "berth with " FLAG " (server.model_control_mode: "
                    "explicit) to load and unload models of its "
                    "repositories");
}

/* "/a//b/./c/" -> "/a/b/c"; false for a relative path, a ".." segment, or
 * one longer than PATH_MAX. out has PATH_MAX bytes. */
static bool normalise(const char *path, char *out) {
  if (path[0] != '/')
    return false;
  size_t n = 0;
  const char *p = path;
  while (*p != '\0') {
    while (*p == '/')
      p++;
    const char *end = strchr(p, '/');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == 0)
      break;
    if (len == 2 && p[0] == '.' && p[1] == '.')
      return false;
    if (!(len == 1 && p[0] == '.')) {
      if (n + 1 + len + 1 > PATH_MAX)
        return false;
      out[n++] = '/';
      memcpy(out + n, p, len);
      n += len;
    }
    p += len;
  }
  if (n == 0)
    out[n++] = '/';
  out[n] = '\0';
  return true;
}

/* path is root, or lies under it. */
static bool inside(const char *root, const char *path) {
  size_t n = strlen(root);
  if (n == 1 && root[0] == '/')
    return true;
  return strncmp(root, path, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

void berth_repo_roots_clear(berth_repo_roots *r) {
  for (size_t i = 0; i < r->n; i++) {
    if (r->given != NULL)
      free(r->given[i]);
    if (r->real != NULL)
      free(r->real[i]);
  }
  free(r->given);
  free(r->real);
  memset(r, 0, sizeof *r);
}

int berth_repo_roots_init(berth_repo_roots *r, char *const *paths, size_t n,
                          berth_errmsg *err) {
  memset(r, 0, sizeof *r);
  if (n == 0)
    return BERTH_OK;
  r->given = calloc(n, sizeof *r->given);
  r->real = calloc(n, sizeof *r->real);
  if (r->given == NULL || r->real == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  r->n = n;
  char norm[PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    if (!normalise(paths[i], norm))
      return berth_errf(err, BERTH_E_CONFIG,
                        "server.repositories[%zu]: "
                        "expected an absolute path without '..', got "
                        "\"%.200s\"",
                        i, paths[i]);
    r->given[i] = strdup(norm);
    r->real[i] = realpath(norm, NULL);
    if (r->given[i] == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    if (r->real[i] == NULL)
      return berth_errf(err, BERTH_E_CONFIG,
                        "server.repositories[%zu]: "
                        "\"%.200s\": %s",
                        i, norm, strerror(errno));
  }
  return BERTH_OK;
}

int berth_repo_path_check(const berth_repo_roots *r, const char *where,
                          const char *path, char **resolved,
                          berth_errmsg *err) {
  char norm[PATH_MAX];
  *resolved = NULL;
  if (!normalise(path, norm))
    return berth_errf(err, BERTH_E_FORBIDDEN,
                      "%s: \"%.200s\" is refused: a "
                      "path in a load must be absolute, without '..' "
                      "segments, and inside a served repository",
                      where, path);
  bool lexical = false;
  for (size_t i = 0; i < r->n && !lexical; i++)
    lexical = inside(r->given[i], norm) || inside(r->real[i], norm);
  if (!lexical)
    return berth_errf(err, BERTH_E_FORBIDDEN,
                      "%s: \"%.200s\" is not inside "
                      "a served repository; a load may name only files of "
                      "the repositories berth serves (server.repositories: "
                      "%zu configured)",
                      where, path, r->n);
  char *real = realpath(norm, NULL);
  if (real == NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      "%s: \"%.200s\" does not exist in "
                      "the served repository",
                      where, path);
  for (size_t i = 0; i < r->n; i++) {
    if (inside(r->real[i], real)) {
      *resolved = real;
      return BERTH_OK;
    }
  }
  free(real);
  return berth_errf(err, BERTH_E_FORBIDDEN,
                    "%s: \"%.200s\" leads out of the "
                    "served repositories (a symbolic link); a load may name "
                    "only files inside them",
                    where, path);
}

bool berth_runtime_runs_code(const char *runtime) {
  static const char *const data_only[] = {"onnx", "xgboost", "lightgbm"};
  for (size_t i = 0; i < sizeof data_only / sizeof data_only[0]; i++)
    if (strcmp(runtime, data_only[i]) == 0)
      return false;
  return true;
}

/* The path rule and the code rule for an entry from a request
 * (docs/security.md): its path is resolved inside a served repository and
 * replaced by its realpath; a runtime that runs code needs a trusted
 * caller. */
int berth_repo_check_entry(const berth_repo_roots *roots,
                           berth_model_config *cfg, bool trusted,
                           berth_errmsg *err) {
  const char *path = json_string_value(json_object_get(cfg->entry, "path"));
  char *real = NULL;
  int rc = berth_repo_path_check(roots, "parameters.config.path",
                                 path ? path : "", &real, err);
  if (rc != BERTH_OK)
    return rc;
  json_t *s = json_string(real);
  free(real);
  if (s == NULL || json_object_set_new(cfg->entry, "path", s) != 0)
    return berth_errf(err, BERTH_E_CONFIG,
                      "parameters.config.path: the "
                      "resolved path is not UTF-8");
  if (!trusted && berth_runtime_runs_code(cfg->runtime))
    return berth_errf(err, BERTH_E_FORBIDDEN,
                      "parameters.config.runtime: "
                      "'%.64s' runs code from the model files (pickles, .py "
                      "files); loading such an entry from a request needs "
                      "an admin token: start berth with --admin-tokens-file "
                      "(or --admin-tokens-env) and send Authorization: "
                      "Bearer <admin token>; models of the served "
                      "repositories load by name without one",
                      cfg->runtime);
  cfg->quiet_errors = !trusted;
  return BERTH_OK;
}
