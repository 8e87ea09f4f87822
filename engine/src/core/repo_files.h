/* Berth engine: model files sent in a load request (Triton's "file:<path>"
 * parameters; docs/security.md, "Model files in a load request"). Only a
 * caller with an admin token may send them: files from a request are code
 * (pickles, .py files). They are written into a fresh private folder the
 * server owns (mkdtemp under $TMPDIR, else /tmp; mode 0700; never inside a
 * served repository) and removed with the model version's config.
 */
#ifndef BERTH_REPO_FILES_H
#define BERTH_REPO_FILES_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "berth/error.h"

/* The longest component of a file's path (Linux's NAME_MAX is 255). */
#define BERTH_REPO_FILE_NAME_MAX 255

typedef struct berth_repo_file {
  char *rel;           /* owned: the path relative to the model's folder */
  unsigned char *data; /* owned: the contents (NULL when empty) */
  size_t len;
} berth_repo_file;

/* The files of one request; zero-initialise, berth_repo_files_clear frees. */
typedef struct berth_repo_files {
  berth_repo_file *v; /* owned array */
  size_t n, cap;
  size_t total; /* bytes of contents */
} berth_repo_files;

/* Whether key is a file parameter ("file:..."). */
bool berth_repo_is_file_key(const char *key);

/* The refusal for a caller without an admin token (BERTH_E_FORBIDDEN,
 * naming --admin-tokens-file), in err. */
int berth_repo_files_forbidden(berth_errmsg *err);

/* The path rule of berth_repo_files_add alone (nothing is copied): checked
 * before the token, so that a bad path gets the same answer from anyone. */
int berth_repo_files_check_key(const char *key, berth_errmsg *err);

/* Adds the file of key ("file:1/model.onnx") with a copy of data. The path
 * must be relative, without "." or ".." components, empty components or
 * components over BERTH_REPO_FILE_NAME_MAX bytes, and not given twice:
 * BERTH_E_CONFIG naming it. BERTH_E_TOO_LARGE when the contents of all
 * files pass max_total bytes; BERTH_E_NOMEM. */
int berth_repo_files_add(berth_repo_files *f, const char *key, const void *data,
                         size_t len, size_t max_total, berth_errmsg *err);

/* As berth_repo_files_add with the contents given as base64 text (REST
 * JSON). BERTH_E_CONFIG for text that is not base64. */
int berth_repo_files_add_base64(berth_repo_files *f, const char *key,
                                const char *b64, size_t b64_len,
                                size_t max_total, berth_errmsg *err);

void berth_repo_files_clear(berth_repo_files *f);

/* Writes the files into a new private folder (*dir, malloc'd, the caller
 * frees it and removes the folder with berth_repo_files_remove). The
 * folder must not lie inside any of roots[0..n_roots) (the served
 * repositories' realpaths). BERTH_E_IO with the reason; nothing is left
 * behind on failure. */
int berth_repo_files_write(const berth_repo_files *f, char *const *roots,
                           size_t n_roots, char **dir, berth_errmsg *err);

/* Removes a folder written by berth_repo_files_write and everything in it
 * (symbolic links are removed, never followed). */
void berth_repo_files_remove(const char *dir);

/* The entry to load the written files with: a copy of parsed (a whole
 * model entry, borrowed) whose path is dir/<version> when the files made
 * that folder (Triton's layout: "file:1/model.onnx"), else dir. A path in
 * parsed is refused (BERTH_E_CONFIG: the files are the model's folder).
 * *out is a new reference. */
int berth_repo_files_entry(const json_t *parsed, const char *dir, json_t **out,
                           berth_errmsg *err);

#endif
