/* Berth engine: model files sent in a load request (repo_files.h). */
#include "repo_files.h"

#include <jansson.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdint.h>

bool berth_repo_is_file_key(const char *key) {
  return key != NULL && strncmp(key, "file:", 5) == 0;
}

int berth_repo_files_forbidden(berth_errmsg *err) {
  return berth_errf(err, BERTH_E_FORBIDDEN,
                    "parameters \"file:...\" (model files in the request) "
                    "are code to the server; sending them needs an admin "
                    "token: start berth with --admin-tokens-file (or "
                    "--admin-tokens-env) and send Authorization: Bearer "
                    "<admin token>");
}

/* Checks one relative path: components neither empty, "." nor "..", none
 * longer than BERTH_REPO_FILE_NAME_MAX. */
static int check_rel(const char *rel, berth_errmsg *err) {
  if (rel[0] == '\0')
    return berth_errf(err, BERTH_E_CONFIG,
                      "invalid file path \"file:\": the path is empty");
  if (rel[0] == '/')
    return berth_errf(
        err, BERTH_E_CONFIG,
        "invalid file path \"file:%.200s\": the path must be relative to the "
        "model's folder",
        rel);
  const char *p = rel;
  while (*p != '\0') {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || (n == 1 && p[0] == '.') ||
        (n == 2 && p[0] == '.' && p[1] == '.'))
      return berth_errf(
          err, BERTH_E_CONFIG,
          "invalid file path \"file:%.200s\": empty, \".\" and \"..\" path "
          "components are not allowed",
          rel);
    if (n > BERTH_REPO_FILE_NAME_MAX)
      return berth_errf(
          err, BERTH_E_CONFIG,
          "invalid file path \"file:%.64s...\": a path component is longer than "
          "%d bytes",
          rel, BERTH_REPO_FILE_NAME_MAX);
    if (slash == NULL)
      break;
    p = slash + 1;
    if (*p == '\0')
      return berth_errf(
          err, BERTH_E_CONFIG,
          "invalid file path \"file:%.200s\": the path names a folder, not a "
          "file",
          rel);
  }
  return BERTH_OK;
}

int berth_repo_files_check_key(const char *key, berth_errmsg *err) {
  if (!berth_repo_is_file_key(key)) /* the callers check; stay safe anyway */
    return berth_errf(err, BERTH_E_CONFIG,
                      "\"%.40s\" is not a \"file:<path>\" parameter",
                      key != NULL ? key : "");
  return check_rel(key + 5, err);
}

int berth_repo_files_add(berth_repo_files *f, const char *key, const void *data,
                         size_t len, size_t max_total, berth_errmsg *err) {
  int rc = berth_repo_files_check_key(key, err);
  if (rc != BERTH_OK)
    return rc;
  const char *rel = key + 5;
  if (rc != BERTH_OK)
    return rc;
  for (size_t i = 0; i < f->n; i++)
    if (strcmp(f->v[i].rel, rel) == 0)
      return berth_errf(err, BERTH_E_CONFIG, "\"file:%.200s\" is given twice",
                        rel);
  if (len > max_total || f->total > max_total - len)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "the files of the load request pass "
                      "server.max_body_bytes (%zu bytes) in total",
                      max_total);
  if (f->n == f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 4;
    berth_repo_file *v = realloc(f->v, cap * sizeof *v);
    if (v == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    f->v = v;
    f->cap = cap;
  }
  berth_repo_file x = {strdup(rel), len ? malloc(len) : NULL, len};
  if (x.rel == NULL || (len > 0 && x.data == NULL)) {
    free(x.rel);
    free(x.data);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  if (len > 0)
    memcpy(x.data, data, len);
  f->v[f->n++] = x;
  f->total += len;
  return BERTH_OK;
}

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* Strict base64 (RFC 4648, padded) into out (at least 3 * len / 4 bytes);
 * -1 when s is not base64, else the decoded length. */
static long b64_decode(const char *s, size_t len, unsigned char *out) {
  if (len % 4 != 0)
    return -1;
  size_t o = 0;
  for (size_t i = 0; i < len; i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      unsigned char c = (unsigned char)s[i + k];
      bool last = i + 4 == len;
      if (c == '=' && last && k >= 2 && (k == 3 || s[i + 3] == '=')) {
        v[k] = 0;
        pad++;
        continue;
      }
      v[k] = pad ? -1 : b64_value(c);
      if (v[k] < 0)
        return -1;
    }
    uint32_t w = ((uint32_t)v[0] << 18) | ((uint32_t)v[1] << 12) |
                 ((uint32_t)v[2] << 6) | (uint32_t)v[3];
    out[o++] = (unsigned char)(w >> 16);
    if (pad < 2)
      out[o++] = (unsigned char)(w >> 8);
    if (pad < 1)
      out[o++] = (unsigned char)w;
  }
  return (long)o;
}

int berth_repo_files_add_base64(berth_repo_files *f, const char *key,
                                const char *b64, size_t b64_len,
                                size_t max_total, berth_errmsg *err) {
  unsigned char *buf = malloc(b64_len / 4 * 3 + 1);
  if (buf == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  long n = b64_decode(b64, b64_len, buf);
  int rc = n < 0 ? berth_errf(err, BERTH_E_CONFIG,
                              "parameters \"%.200s\": expected the file's "
                              "contents as base64 text",
                              key)
                 : berth_repo_files_add(f, key, buf, (size_t)n, max_total, err);
  free(buf);
  return rc;
}

void berth_repo_files_clear(berth_repo_files *f) {
  for (size_t i = 0; i < f->n; i++) {
    free(f->v[i].rel);
    free(f->v[i].data);
  }
  free(f->v);
  *f = (berth_repo_files){0};
}

/* Creates the folders above dir/rel (mode 0700) and writes the file
 * (0600, never following a link, never over an existing file). */
static int write_one(const char *dir, const berth_repo_file *x,
                     berth_errmsg *err) {
  size_t n = strlen(dir) + 1 + strlen(x->rel) + 1;
  char *path = malloc(n);
  if (path == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  snprintf(path, n, "%s/%s", dir, x->rel);
  int rc = BERTH_OK;
  for (char *s = path + strlen(dir) + 1; rc == BERTH_OK && *s != '\0'; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
      rc = berth_errf(err, BERTH_E_IO, "\"file:%.200s\": %s", x->rel,
                      strerror(errno));
    *s = '/';
  }
  int fd =
      rc == BERTH_OK
          ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                 0600)
          : -1;
  if (rc == BERTH_OK && fd < 0)
    rc = berth_errf(err, BERTH_E_IO, "\"file:%.200s\": %s", x->rel,
                    strerror(errno));
  for (size_t off = 0; rc == BERTH_OK && off < x->len;) {
    ssize_t w = write(fd, x->data + off, x->len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      rc = berth_errf(err, BERTH_E_IO, "\"file:%.200s\": %s", x->rel,
                      w < 0 ? strerror(errno) : "short write");
    else
      off += (size_t)w;
  }
  if (fd >= 0 && close(fd) != 0 && rc == BERTH_OK)
    rc = berth_errf(err, BERTH_E_IO, "\"file:%.200s\": %s", x->rel,
                    strerror(errno));
  free(path);
  return rc;
}

/* The parent of the private folders: $TMPDIR when absolute, else /tmp;
 * refused when it lies inside a served repository. */
static int base_dir(char *const *roots, size_t n_roots, char **real,
                    berth_errmsg *err) {
  const char *t = getenv("TMPDIR");
  if (t == NULL || t[0] != '/')
    t = "/tmp";
  *real = realpath(t, NULL);
  if (*real == NULL)
    return berth_errf(err, BERTH_E_IO,
                      "the folder for model files (%.200s): %s", t,
                      strerror(errno));
  size_t rl = strlen(*real);
  for (size_t i = 0; i < n_roots; i++) {
    size_t n = strlen(roots[i]);
    bool inside = strncmp(*real, roots[i], n) == 0 &&
                  (rl == n || (*real)[n] == '/' || strcmp(roots[i], "/") == 0);
    if (inside) {
      free(*real);
      *real = NULL;
      return berth_errf(err, BERTH_E_IO,
                        "the folder for model files (%.200s, from TMPDIR) "
                        "lies inside a served repository; set TMPDIR to "
                        "another folder",
                        t);
    }
  }
  return BERTH_OK;
}

int berth_repo_files_write(const berth_repo_files *f, char *const *roots,
                           size_t n_roots, char **dir, berth_errmsg *err) {
  *dir = NULL;
  char *base = NULL;
  int rc = base_dir(roots, n_roots, &base, err);
  if (rc != BERTH_OK)
    return rc;
  size_t n = strlen(base) + sizeof "/berth-load-XXXXXX";
  char *d = malloc(n);
  if (d == NULL) {
    free(base);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  snprintf(d, n, "%s/berth-load-XXXXXX", base);
  free(base);
  if (mkdtemp(d) == NULL) { /* mode 0700 */
    rc = berth_errf(err, BERTH_E_IO, "%s: %s", d, strerror(errno));
    free(d);
    return rc;
  }
  for (size_t i = 0; rc == BERTH_OK && i < f->n; i++)
    rc = write_one(d, &f->v[i], err);
  if (rc != BERTH_OK) {
    berth_repo_files_remove(d);
    free(d);
    return rc;
  }
  *dir = d;
  return BERTH_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path); /* best effort: what cannot be removed stays */
  return 0;
}

void berth_repo_files_remove(const char *dir) {
  if (dir != NULL)
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int berth_repo_files_entry(const json_t *parsed, const char *dir, json_t **out,
                           berth_errmsg *err) {
  *out = NULL;
  if (!json_is_object(parsed))
    return berth_errf(err, BERTH_E_CONFIG,
                      "parameters.config: expected a whole model entry "
                      "(runtime, ...) with file: parameters");
  if (json_object_get(parsed, "path") != NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      "parameters.config.path: not with file: parameters "
                      "(the files are the model's folder)");
  char ver[64] = "1";
  const json_t *v = json_object_get(parsed, "version");
  if (json_is_string(v))
    snprintf(ver, sizeof ver, "%s", json_string_value(v));
  else if (json_is_integer(v))
    snprintf(ver, sizeof ver, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
  size_t n = strlen(dir) + 1 + strlen(ver) + 1;
  char *path = malloc(n);
  if (path == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  snprintf(path, n, "%s/%s", dir, ver);
  struct stat st;
  bool versioned = strchr(ver, '/') == NULL && strcmp(ver, "..") != 0 &&
                   lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
  json_t *copy = json_deep_copy(parsed);
  if (copy == NULL ||
      json_object_set_new(copy, "path", json_string(versioned ? path : dir)) !=
          0) {
    json_decref(copy);
    free(path);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  free(path);
  *out = copy;
  return BERTH_OK;
}
