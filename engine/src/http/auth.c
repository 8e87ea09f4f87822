/* Berth engine: bearer-token authentication (see auth.h). */
#include "auth.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TOKENS 4096
#define MAX_TOKEN_LEN 4096

static int add_token(char ***list, size_t *n, const char *p, size_t len,
                     const char *where, berth_errmsg *err) {
  while (len > 0 && (p[0] == ' ' || p[0] == '\t')) {
    p++;
    len--;
  }
  while (len > 0 &&
         (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r'))
    len--;
  if (len == 0 || p[0] == '#')
    return BERTH_OK;
  if (len > MAX_TOKEN_LEN || *n >= MAX_TOKENS)
    return berth_errf(err, BERTH_E_CONFIG,
                      "%s: tokens are limited to %d of at most %d bytes", where,
                      MAX_TOKENS, MAX_TOKEN_LEN);
  char **grown = realloc(*list, (*n + 1) * sizeof *grown);
  if (grown == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  *list = grown;
  grown[*n] = strndup(p, len);
  if (grown[*n] == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  (*n)++;
  return BERTH_OK;
}

static int split_into(char ***list, size_t *n, const char *text, size_t len,
                      char sep, const char *where, berth_errmsg *err) {
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || text[i] == sep || text[i] == '\n') {
      int rc = add_token(list, n, text + start, i - start, where, err);
      if (rc != BERTH_OK)
        return rc;
      start = i + 1;
    }
  }
  return BERTH_OK;
}

static int load_file(const char *path, char ***list, size_t *n,
                     berth_errmsg *err) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return berth_errf(err, BERTH_E_CONFIG, "cannot read token file %s: %s",
                      path, strerror(errno));
  char *text = malloc(1 << 20);
  if (text == NULL) {
    fclose(f);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  size_t len = fread(text, 1, 1 << 20, f);
  bool more = fgetc(f) != EOF;
  fclose(f);
  int rc = more ? berth_errf(err, BERTH_E_CONFIG,
                             "token file %s is larger than 1 MiB", path)
                : split_into(list, n, text, len, '\n', path, err);
  free(text);
  return rc;
}

static int load_env(const char *name, char ***list, size_t *n,
                    berth_errmsg *err) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0')
    return berth_errf(err, BERTH_E_CONFIG,
                      "environment variable %s (named as a token source) is "
                      "not set",
                      name);
  char where[160];
  snprintf(where, sizeof where, "environment variable %s", name);
  return split_into(list, n, v, strlen(v), ',', where, err);
}

static int load_set(const char *file, const char *env, char ***list, size_t *n,
                    const char *what, berth_errmsg *err) {
  int rc = BERTH_OK;
  if (file != NULL)
    rc = load_file(file, list, n, err);
  if (rc == BERTH_OK && env != NULL)
    rc = load_env(env, list, n, err);
  if (rc == BERTH_OK && (file != NULL || env != NULL) && *n == 0)
    rc = berth_errf(err, BERTH_E_CONFIG, "the %s sources hold no token", what);
  return rc;
}

int berth_auth_load(const berth_auth_sources *src, berth_auth *out,
                    berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  out->health_open = src->health_open;
  int rc = load_set(src->tokens_file, src->tokens_env, &out->tokens,
                    &out->n_tokens, "token", err);
  if (rc == BERTH_OK)
    rc = load_set(src->admin_tokens_file, src->admin_tokens_env,
                  &out->admin_tokens, &out->n_admin, "admin token", err);
  if (rc != BERTH_OK)
    berth_auth_clear(out);
  return rc;
}

static void free_list(char **l, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (l[i] != NULL) {
      volatile char *p = l[i];
      for (size_t k = 0; p[k] != '\0'; k++)
        p[k] = 0;
    }
    free(l[i]);
  }
  free(l);
}

void berth_auth_clear(berth_auth *a) {
  free_list(a->tokens, a->n_tokens);
  free_list(a->admin_tokens, a->n_admin);
  memset(a, 0, sizeof *a);
}

bool berth_auth_enabled(const berth_auth *a) {
  return a->n_tokens > 0 || a->n_admin > 0;
}

/* Compares without an early exit on the first differing byte. */
static bool same(const char *tok, const char *p, size_t len) {
  size_t tl = strlen(tok);
  unsigned diff = (unsigned)(tl ^ len);
  for (size_t i = 0; i < len; i++)
    diff |= (unsigned char)p[i] ^ (unsigned char)(i < tl ? tok[i] : 0);
  return diff == 0;
}

static bool in_list(char **l, size_t n, const char *p, size_t len) {
  bool found = false;
  for (size_t i = 0; i < n; i++)
    found |= same(l[i], p, len);
  return found;
}

berth_auth_result berth_auth_check(const berth_auth *a, const char *header,
                                   size_t len, bool admin, bool health) {
  if (!berth_auth_enabled(a) || (health && a->health_open))
    return BERTH_AUTH_ALLOW;
  if (header == NULL || len < 7 || strncasecmp(header, "Bearer ", 7) != 0)
    return BERTH_AUTH_UNAUTHENTICATED;
  const char *tok = header + 7;
  size_t tl = len - 7;
  while (tl > 0 && *tok == ' ') {
    tok++;
    tl--;
  }
  bool is_admin = in_list(a->admin_tokens, a->n_admin, tok, tl);
  bool is_user = in_list(a->tokens, a->n_tokens, tok, tl);
  if (is_admin)
    return BERTH_AUTH_ALLOW;
  if (!is_user)
    return BERTH_AUTH_UNAUTHENTICATED;
  return admin ? BERTH_AUTH_FORBIDDEN : BERTH_AUTH_ALLOW;
}

bool berth_auth_is_admin(const berth_auth *a, const char *header, size_t len) {
  if (a->n_admin == 0 || header == NULL || len < 7 ||
      strncasecmp(header, "Bearer ", 7) != 0)
    return false;
  const char *tok = header + 7;
  size_t tl = len - 7;
  while (tl > 0 && *tok == ' ') {
    tok++;
    tl--;
  }
  return in_list(a->admin_tokens, a->n_admin, tok, tl);
}
