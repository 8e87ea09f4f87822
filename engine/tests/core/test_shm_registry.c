/* Tests for the shared-memory region registry: keys, bounds (overflow-safe),
 * limits, double register, unregister while held, and an object unlinked
 * after register staying mapped. Uses real POSIX shm objects named after
 * the test's pid. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm_registry.h"

static char key[64];

static int make_object(void **state) {
  (void)state;
  snprintf(key, sizeof key, "/berth-test-shm-%ld", (long)getpid());
  int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0 || ftruncate(fd, 10000) != 0)
    return -1;
  close(fd);
  return 0;
}

static int drop_object(void **state) {
  (void)state;
  shm_unlink(key);
  return 0;
}

static void test_keys(void **state) {
  (void)state;
  assert_true(berth_shm_key_valid("/abc"));
  assert_true(berth_shm_key_valid("/a.b_c-1"));
  assert_false(berth_shm_key_valid("abc"));
  assert_false(berth_shm_key_valid("/"));
  assert_false(berth_shm_key_valid("/.."));
  assert_false(berth_shm_key_valid("/."));
  assert_false(berth_shm_key_valid("/../etc/passwd"));
  assert_false(berth_shm_key_valid("/a/b"));
  assert_false(berth_shm_key_valid(NULL));
}

static void test_register_and_acquire(void **state) {
  (void)state;
  berth_shm_registry *r = berth_shm_registry_new(4, 1 << 20);
  assert_non_null(r);
  berth_errmsg err;
  /* an offset that is not page aligned */
  assert_int_equal(berth_shm_register(r, "a", key, 5000, 100, &err), BERTH_OK);
  assert_int_equal(berth_shm_count(r), 1);
  assert_int_equal(berth_shm_total_bytes(r), 100);
  assert_int_equal(berth_shm_register(r, "a", key, 0, 10, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "already in manager"));
  berth_shm_region *g = NULL;
  uint8_t *p = NULL;
  assert_int_equal(berth_shm_acquire(r, "a", 10, 90, &g, &p, &err), BERTH_OK);
  p[0] = 42;
  assert_int_equal(berth_shm_acquire(r, "a", 10, 91, &g, &p, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_shm_acquire(r, "a", UINT64_MAX, 2, &g, &p, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_shm_acquire(r, "b", 0, 1, &g, &p, &err),
                   BERTH_E_INVALID);
  /* the byte landed in the object at offset 5010 */
  int fd = shm_open(key, O_RDONLY, 0);
  assert_true(fd >= 0);
  uint8_t b = 0;
  assert_int_equal(pread(fd, &b, 1, 5010), 1);
  close(fd);
  assert_int_equal(b, 42);
  /* unregister while held: the mapping stays for the holder */
  assert_int_equal(berth_shm_unregister(r, "a", &err), BERTH_OK);
  assert_null(berth_shm_find(r, "a"));
  assert_int_equal(berth_shm_total_bytes(r), 0);
  assert_int_equal(berth_shm_acquire(r, "a", 0, 1, &g, &p, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_shm_unregister(r, "a", &err), BERTH_E_NOT_FOUND);
  berth_shm_release(g); /* the first acquire's; failed ones took none */
  berth_shm_registry_free(r);
}

static void test_held_outlives_unregister(void **state) {
  (void)state;
  berth_shm_registry *r = berth_shm_registry_new(4, 1 << 20);
  berth_errmsg err;
  assert_int_equal(berth_shm_register(r, "a", key, 0, 64, &err), BERTH_OK);
  berth_shm_region *g = NULL;
  uint8_t *p = NULL;
  assert_int_equal(berth_shm_acquire(r, "a", 0, 64, &g, &p, &err), BERTH_OK);
  assert_int_equal(berth_shm_unregister(r, NULL, &err), BERTH_OK);
  memset(p, 7, 64); /* still mapped (ASan would see a use after unmap) */
  berth_shm_release(g);
  berth_shm_registry_free(r);
}

static void test_bounds_and_limits(void **state) {
  (void)state;
  berth_shm_registry *r = berth_shm_registry_new(2, 300);
  berth_errmsg err;
  assert_int_equal(berth_shm_register(r, "x", key, 9999, 2, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_shm_register(r, "x", key, UINT64_MAX, 2, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_shm_register(r, "x", key, 2, UINT64_MAX, &err),
                   BERTH_E_TOO_LARGE); /* the byte limit comes first */
  assert_int_equal(berth_shm_register(r, "x", key, 0, 0, &err),
                   BERTH_E_INVALID);
  assert_int_equal(
      berth_shm_register(r, "x", "/berth-no-such-object-here", 0, 1, &err),
      BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "no shared memory object"));
  assert_int_equal(berth_shm_register(r, "x", "/../etc/passwd", 0, 1, &err),
                   BERTH_E_INVALID);
  assert_int_equal(berth_shm_register(r, "x", key, 0, 200, &err), BERTH_OK);
  assert_int_equal(berth_shm_register(r, "y", key, 0, 101, &err),
                   BERTH_E_TOO_LARGE);
  assert_int_equal(berth_shm_register(r, "y", key, 0, 100, &err), BERTH_OK);
  assert_int_equal(berth_shm_register(r, "z", key, 0, 1, &err),
                   BERTH_E_TOO_LARGE); /* two regions at most */
  berth_shm_registry_free(r);
}

static void test_unlinked_stays_mapped(void **state) {
  (void)state;
  berth_shm_registry *r = berth_shm_registry_new(4, 1 << 20);
  berth_errmsg err;
  assert_int_equal(berth_shm_register(r, "a", key, 0, 16, &err), BERTH_OK);
  shm_unlink(key);
  berth_shm_region *g = NULL;
  uint8_t *p = NULL;
  assert_int_equal(berth_shm_acquire(r, "a", 0, 16, &g, &p, &err), BERTH_OK);
  memset(p, 1, 16);
  berth_shm_release(g);
  berth_shm_registry_free(r);
  assert_int_equal(make_object(NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keys),
      cmocka_unit_test_setup_teardown(test_register_and_acquire, make_object,
                                      drop_object),
      cmocka_unit_test_setup_teardown(test_held_outlives_unregister,
                                      make_object, drop_object),
      cmocka_unit_test_setup_teardown(test_bounds_and_limits, make_object,
                                      drop_object),
      cmocka_unit_test_setup_teardown(test_unlinked_stays_mapped, make_object,
                                      drop_object),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
