/* Unit tests for bearer-token authentication. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"

static char *write_tmp(const char *text) {
  char *path = strdup("/tmp/berth-auth-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static size_t len_of(const char *h) { return h != NULL ? strlen(h) : 0; }

#define CHECK(a, h, admin, health)                                             \
  berth_auth_check((a), (h), len_of(h), (admin), (health))

static void off_without_tokens(void **state) {
  (void)state;
  berth_auth a;
  berth_errmsg err;
  berth_auth_sources src = {0};
  assert_int_equal(berth_auth_load(&src, &a, &err), BERTH_OK);
  assert_false(berth_auth_enabled(&a));
  assert_int_equal(CHECK(&a, NULL, true, false), BERTH_AUTH_ALLOW);
  berth_auth_clear(&a);
}

static void file_and_env_tokens(void **state) {
  (void)state;
  char *users = write_tmp("# users\nalpha\n\n  beta  \n");
  char *admins = write_tmp("root-token\n");
  setenv("BERTH_TEST_TOKENS", "gamma,delta", 1);
  berth_auth_sources src = {.tokens_file = users,
                            .tokens_env = "BERTH_TEST_TOKENS",
                            .admin_tokens_file = admins,
                            .health_open = true};
  berth_auth a;
  berth_errmsg err;
  assert_int_equal(berth_auth_load(&src, &a, &err), BERTH_OK);
  assert_int_equal(a.n_tokens, 4);
  assert_int_equal(CHECK(&a, "Bearer alpha", false, false), BERTH_AUTH_ALLOW);
  assert_int_equal(CHECK(&a, "bearer beta", false, false), BERTH_AUTH_ALLOW);
  assert_int_equal(CHECK(&a, "Bearer delta", false, false), BERTH_AUTH_ALLOW);
  assert_int_equal(CHECK(&a, "Bearer alph", false, false),
                   BERTH_AUTH_UNAUTHENTICATED);
  assert_int_equal(CHECK(&a, "Bearer alphaa", false, false),
                   BERTH_AUTH_UNAUTHENTICATED);
  assert_int_equal(CHECK(&a, "Basic alpha", false, false),
                   BERTH_AUTH_UNAUTHENTICATED);
  assert_int_equal(CHECK(&a, NULL, false, false), BERTH_AUTH_UNAUTHENTICATED);
  /* admin endpoints */
  assert_int_equal(CHECK(&a, "Bearer alpha", true, false),
                   BERTH_AUTH_FORBIDDEN);
  assert_int_equal(CHECK(&a, "Bearer root-token", true, false),
                   BERTH_AUTH_ALLOW);
  assert_int_equal(CHECK(&a, "Bearer root-token", false, false),
                   BERTH_AUTH_ALLOW);
  /* health stays open when asked */
  assert_int_equal(CHECK(&a, NULL, false, true), BERTH_AUTH_ALLOW);
  berth_auth_clear(&a);
  unlink(users);
  unlink(admins);
  free(users);
  free(admins);
}

static void bad_sources_are_config_errors(void **state) {
  (void)state;
  berth_auth a;
  berth_errmsg err;
  berth_auth_sources missing = {.tokens_file = "/nonexistent/tokens"};
  assert_int_equal(berth_auth_load(&missing, &a, &err), BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "/nonexistent/tokens"));
  unsetenv("BERTH_TEST_UNSET");
  berth_auth_sources unset = {.tokens_env = "BERTH_TEST_UNSET"};
  assert_int_equal(berth_auth_load(&unset, &a, &err), BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "BERTH_TEST_UNSET"));
  char *empty = write_tmp("# nothing\n\n");
  berth_auth_sources none = {.admin_tokens_file = empty};
  assert_int_equal(berth_auth_load(&none, &a, &err), BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "no token"));
  unlink(empty);
  free(empty);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(off_without_tokens),
      cmocka_unit_test(file_and_env_tokens),
      cmocka_unit_test(bad_sources_are_config_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
