/* Unit tests for the browser-facing checks (http_guard.h): which
 * Content-Type, Host and Origin values pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http_guard.h"

static bool ct(const char *v) {
  return berth_guard_content_type_ok(v, v != NULL ? strlen(v) : 0);
}

static void content_types(void **state) {
  (void)state;
  assert_true(ct(NULL)); /* tritonclient's HTTP client sends none */
  assert_true(ct("application/json"));
  assert_true(ct("Application/JSON"));
  assert_true(ct("application/json; charset=utf-8"));
  assert_true(ct("application/json;charset=UTF-8"));
  assert_true(ct("  application/json  "));
  assert_true(ct("application/octet-stream"));
  assert_true(ct("application/octet-stream ; foo=bar"));
  /* what an HTML form or a simple cross-site fetch can send */
  assert_false(ct("text/plain"));
  assert_false(ct("text/plain; charset=utf-8"));
  assert_false(ct("application/x-www-form-urlencoded"));
  assert_false(ct("multipart/form-data; boundary=x"));
  /* near misses */
  assert_false(ct(""));
  assert_false(ct("   "));
  assert_false(ct("application/jsonx"));
  assert_false(ct("application/json5"));
  assert_false(ct("application/json, text/plain"));
  assert_false(ct("application/json text/plain"));
  assert_false(ct("application"));
  assert_false(ct("application/"));
  assert_false(ct("/json"));
  assert_false(ct("text/json"));
  assert_false(ct("application/vnd.api+json"));
  /* a NUL inside the value ends nothing: the length counts */
  assert_false(berth_guard_content_type_ok("application/json\0x", 18));
}

static bool host(const berth_http_guard *g, const char *h) {
  return berth_guard_host_ok(g, h, h != NULL ? strlen(h) : 0);
}

static void hosts_by_default(void **state) {
  (void)state;
  berth_http_guard g = {0};
  assert_true(host(&g, NULL)); /* HTTP/1.0 without Host */
  assert_true(host(&g, ""));
  assert_true(host(&g, "localhost"));
  assert_true(host(&g, "localhost:8080"));
  assert_true(host(&g, "LOCALHOST:8080"));
  assert_true(host(&g, "localhost.:8080"));
  assert_true(host(&g, "dashboard.localhost:8080"));
  assert_true(host(&g, "127.0.0.1:8080"));
  assert_true(host(&g, "127.1.2.3"));
  assert_true(host(&g, "[::1]:8080"));
  assert_true(host(&g, "[::1]"));
  assert_true(host(&g, "10.0.0.7:8080")); /* a pod's IP (probes) */
  assert_true(host(&g, "[fd00::7]:8080"));
  /* names that DNS could point anywhere */
  assert_false(host(&g, "evil.example"));
  assert_false(host(&g, "evil.example:8080"));
  assert_false(host(&g, "localhost.evil.example"));
  assert_false(host(&g, "evillocalhost"));
  assert_false(host(&g, "127.0.0.1.evil.example"));
  assert_false(host(&g, "2130706433")); /* not a dotted quad */
  assert_false(host(&g, "0x7f.1"));
  /* malformed */
  assert_false(host(&g, "::1")); /* IPv6 without brackets */
  assert_false(host(&g, "[::1"));
  assert_false(host(&g, "[::1]x"));
  assert_false(host(&g, "[evil.example]"));
  assert_false(host(&g, "localhost:80:80"));
  assert_false(host(&g, "localhost:abc"));
  assert_false(host(&g, "localhost:123456"));
  assert_false(host(&g, "localhost:99999"));
  assert_false(host(&g, "user@localhost"));
  assert_false(host(&g, "localhost/path"));
  assert_false(host(&g, "local host"));
  assert_false(berth_guard_host_ok(&g, "localhost\0.evil", 15));
}

static void hosts_configured(void **state) {
  (void)state;
  char *names[] = {"berth.internal", "*.svc.cluster.local",
                   "Models.Example:9000", NULL};
  berth_http_guard g = {.allowed_hosts = names, .n_allowed_hosts = 3};
  assert_true(host(&g, "berth.internal"));
  assert_true(host(&g, "BERTH.internal:8080"));
  assert_true(host(&g, "berth.internal.:8080"));
  assert_true(host(&g, "berth.ns.svc.cluster.local:8080"));
  assert_true(host(&g, "models.example:8080")); /* the port is ignored */
  assert_false(host(&g, "svc.cluster.local"));  /* the wildcard is subdomains */
  assert_false(host(&g, "berth.internal.evil.example"));
  assert_false(host(&g, "xberth.internal"));
  assert_false(host(&g, "evil.example"));
  char *any[] = {"*", NULL};
  berth_http_guard all = {.allowed_hosts = any, .n_allowed_hosts = 1};
  assert_true(host(&all, "evil.example:8080"));
  assert_true(host(&all, "berth.default.svc"));
  assert_false(host(&all, "a b")); /* still a well-formed Host */
}

static berth_guard_origin origin(const berth_http_guard *g, const char *o,
                                 const char *h) {
  return berth_guard_origin_check(g, o, o != NULL ? strlen(o) : 0, h,
                                  h != NULL ? strlen(h) : 0);
}

static void origins_by_default(void **state) {
  (void)state;
  berth_http_guard g = {0};
  assert_int_equal(origin(&g, NULL, "localhost:8080"),
                   BERTH_GUARD_ORIGIN_ABSENT);
  /* the dashboard's own origin */
  assert_int_equal(origin(&g, "http://127.0.0.1:8080", "127.0.0.1:8080"),
                   BERTH_GUARD_ORIGIN_SAME);
  assert_int_equal(origin(&g, "http://LocalHost:8080", "localhost:8080"),
                   BERTH_GUARD_ORIGIN_SAME);
  assert_int_equal(origin(&g, "http://[::1]:8080", "[::1]:8080"),
                   BERTH_GUARD_ORIGIN_SAME);
  assert_int_equal(origin(&g, "http://localhost", "localhost:80"),
                   BERTH_GUARD_ORIGIN_SAME);
  assert_int_equal(origin(&g, "http://localhost:80", "localhost"),
                   BERTH_GUARD_ORIGIN_SAME);
  /* behind a TLS proxy: https origin, Host without a port */
  assert_int_equal(origin(&g, "https://berth.example", "berth.example"),
                   BERTH_GUARD_ORIGIN_SAME);
  /* another port on the same machine is another site */
  assert_int_equal(origin(&g, "http://localhost:3000", "localhost:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "http://localhost", "localhost:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "https://localhost", "localhost:80"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "http://evil.example", "127.0.0.1:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "null", "127.0.0.1:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "http://127.0.0.1:8080", NULL),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "http://127.0.0.1:8080/", "127.0.0.1:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "127.0.0.1:8080", "127.0.0.1:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "", "127.0.0.1:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "http://user@127.0.0.1:8080", "127.0.0.1:8080"),
                   BERTH_GUARD_ORIGIN_FOREIGN);
}

static void origins_configured(void **state) {
  (void)state;
  char *list[] = {"https://app.example", "http://localhost:3000", "null", NULL};
  berth_http_guard g = {.cors_origins = list, .n_cors_origins = 3};
  const char *h = "127.0.0.1:8080";
  assert_int_equal(origin(&g, "https://app.example", h),
                   BERTH_GUARD_ORIGIN_LISTED);
  assert_int_equal(origin(&g, "HTTPS://APP.example:443", h),
                   BERTH_GUARD_ORIGIN_LISTED);
  assert_int_equal(origin(&g, "http://localhost:3000", h),
                   BERTH_GUARD_ORIGIN_LISTED);
  assert_int_equal(origin(&g, "null", h), BERTH_GUARD_ORIGIN_LISTED);
  assert_int_equal(origin(&g, "http://app.example", h),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "https://app.example:8443", h),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "https://evil.app.example", h),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  assert_int_equal(origin(&g, "http://localhost:3001", h),
                   BERTH_GUARD_ORIGIN_FOREIGN);
  char *any[] = {"*", NULL};
  berth_http_guard all = {.cors_origins = any, .n_cors_origins = 1};
  assert_int_equal(origin(&all, "https://whatever.example", h),
                   BERTH_GUARD_ORIGIN_LISTED);
  assert_int_equal(origin(&all, "http://127.0.0.1:8080", h),
                   BERTH_GUARD_ORIGIN_SAME);
}

static void cors_headers(void **state) {
  (void)state;
  berth_http_header_kv h[BERTH_GUARD_CORS_HEADERS];
  size_t n = berth_http_guard_cors_headers("https://app.example", h);
  assert_int_equal(n, BERTH_GUARD_CORS_HEADERS);
  assert_string_equal(h[0].name, "access-control-allow-origin");
  assert_string_equal(h[0].value, "https://app.example");
  assert_string_equal(h[1].name, "vary");
  assert_string_equal(h[1].value, "Origin");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(content_types),
      cmocka_unit_test(hosts_by_default),
      cmocka_unit_test(hosts_configured),
      cmocka_unit_test(origins_by_default),
      cmocka_unit_test(origins_configured),
      cmocka_unit_test(cors_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
