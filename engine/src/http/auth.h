/* Berth engine: bearer-token authentication.
 *
 * Tokens come from files (one token a line; blank lines and lines starting
 * with '#' ignored) or from environment variables (tokens separated by
 * commas), read once at start. Two sets: inference tokens, which open every
 * endpoint but the admin ones, and admin tokens, which open everything
 * (repository load and unload included). With no token configured at all,
 * authentication is off. Comparisons take the same time whatever matches.
 */
#ifndef BERTH_AUTH_H
#define BERTH_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "berth/error.h"

typedef struct berth_auth {
  char **tokens; /* owned */
  size_t n_tokens;
  char **admin_tokens; /* owned */
  size_t n_admin;
  bool health_open; /* health endpoints need no token */
} berth_auth;

typedef struct berth_auth_sources {
  const char *tokens_file; /* each may be NULL */
  const char *tokens_env;  /* the variable's NAME */
  const char *admin_tokens_file;
  const char *admin_tokens_env;
  bool health_open;
} berth_auth_sources;

/* Reads the tokens. BERTH_E_CONFIG naming the file or variable when one is
 * named but cannot be read or holds no token. */
int berth_auth_load(const berth_auth_sources *src, berth_auth *out,
                    berth_errmsg *err);
void berth_auth_clear(berth_auth *a);
bool berth_auth_enabled(const berth_auth *a);

typedef enum {
  BERTH_AUTH_ALLOW = 0,
  BERTH_AUTH_UNAUTHENTICATED, /* no or unknown token: 401 / UNAUTHENTICATED */
  BERTH_AUTH_FORBIDDEN,       /* a valid token without the right: 403 /
                                 PERMISSION_DENIED */
} berth_auth_result;

/* Checks an Authorization header value ("Bearer <token>", len bytes; NULL
 * when absent). admin: the endpoint needs an admin token. health: the
 * endpoint is a health probe. */
berth_auth_result berth_auth_check(const berth_auth *a, const char *header,
                                   size_t len, bool admin, bool health);

/* true when header ("Bearer <token>", len bytes, or NULL) carries one of
 * the admin tokens; false whenever none is configured. The repository
 * lets only such callers load entries whose runtime runs code. */
bool berth_auth_is_admin(const berth_auth *a, const char *header, size_t len);

#endif
