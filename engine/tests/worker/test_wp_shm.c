/* Unit tests for wp_shm.c: the region is a sealed memfd of the asked size
 * that the receiving end of a socket gets with the bytes it rode on, and
 * maps to the same memory; bad sizes are refused; free is idempotent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "wp_shm.h"

/* Receives up to cap bytes and one descriptor (or -1). */
static ssize_t recv_fd(int sock, uint8_t *buf, size_t cap, int *fd) {
  union {
    char b[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = buf, .iov_len = cap};
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.b,
                       .msg_controllen = sizeof ctl.b};
  ssize_t n = recvmsg(sock, &msg, 0);
  *fd = -1;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (n > 0 && c != NULL && c->cmsg_type == SCM_RIGHTS)
    memcpy(fd, CMSG_DATA(c), sizeof *fd);
  return n;
}

static void test_region_passes_and_maps(void **state) {
  (void)state;
  berth_shm_region r;
  berth_errmsg err;
  assert_int_equal(berth_shm_region_create(&r, 1 << 16, &err), BERTH_OK);
  assert_int_equal(r.size, 1 << 16);
  assert_int_equal(r.split, 1 << 15);
  assert_true(r.fd >= 0);
  /* sealed: neither side can change its size */
  assert_int_not_equal(ftruncate(r.fd, 4096), 0);
  assert_int_not_equal(ftruncate(r.fd, 1 << 20), 0);
  memcpy(r.base + 100, "engine", 6);
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  assert_int_equal(berth_shm_send_fd(sv[0], "frame", 5, r.fd), 5);
  berth_shm_region_close_fd(&r);
  assert_int_equal(r.fd, -1);
  uint8_t buf[16];
  int fd;
  assert_int_equal(recv_fd(sv[1], buf, sizeof buf, &fd), 5);
  assert_memory_equal(buf, "frame", 5);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  assert_int_equal(st.st_size, 1 << 16);
  uint8_t *mine =
      mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  assert_true(mine != MAP_FAILED);
  assert_memory_equal(mine + 100, "engine", 6);
  memcpy(mine + (1 << 15), "worker", 6);
  assert_memory_equal(r.base + (1 << 15), "worker", 6);
  munmap(mine, 1 << 16);
  close(fd);
  /* a full socket: nothing sent, 0 */
  int one = 4096;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
  uint8_t big[1 << 16];
  memset(big, 1, sizeof big);
  ssize_t n;
  int guard = 0;
  berth_shm_region r2;
  assert_int_equal(berth_shm_region_create(&r2, 4096, &err), BERTH_OK);
  while ((n = berth_shm_send_fd(sv[0], big, sizeof big, r2.fd)) > 0 &&
         guard++ < 1000) {
  }
  assert_int_equal(n, 0);
  close(sv[0]);
  close(sv[1]);
  berth_shm_region_free(&r2);
  berth_shm_region_free(&r);
  berth_shm_region_free(&r); /* idempotent */
  assert_null(r.base);
}

static void test_bad_sizes(void **state) {
  (void)state;
  berth_shm_region r;
  berth_errmsg err;
  assert_int_equal(berth_shm_region_create(&r, 0, &err), BERTH_E_INVALID);
  assert_int_equal(r.fd, -1);
  assert_int_equal(berth_shm_region_create(&r, 4000, &err), BERTH_E_INVALID);
  assert_int_equal(berth_shm_region_create(&r, 4096 + 1, &err),
                   BERTH_E_INVALID);
  assert_non_null(strstr(err.msg, "multiple of 128"));
  berth_shm_region_free(&r); /* zeroed with fd -1: nothing to do */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_region_passes_and_maps),
      cmocka_unit_test(test_bad_sizes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
