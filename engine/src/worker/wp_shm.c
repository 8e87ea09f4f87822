/* Berth engine: a worker's shared memory region (see wp_shm.h). */
#include "wp_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

int berth_shm_region_create(berth_shm_region *r, size_t size,
                            berth_errmsg *err) {
  memset(r, 0, sizeof *r);
  r->fd = -1;
  if (size < 4096 || (size & 127) != 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "shared memory size %zu is not a multiple of 128 of "
                      "at least 4096",
                      size);
  int fd = memfd_create("berth-worker", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return berth_errf(err, BERTH_E_IO, "memfd_create: %s", strerror(errno));
  const char *what = "ftruncate";
  int ok = ftruncate(fd, (off_t)size) == 0;
  if (ok) {
    what = "sealing";
    ok = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0;
  }
  void *base = MAP_FAILED;
  if (ok) {
    what = "mmap";
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ok = base != MAP_FAILED;
  }
  if (!ok) {
    int e = errno;
    close(fd);
    return berth_errf(err, BERTH_E_IO, "shared memory %s: %s", what,
                      strerror(e));
  }
  r->base = base;
  r->size = size;
  r->split = size / 2;
  r->fd = fd;
  return BERTH_OK;
}

void berth_shm_region_close_fd(berth_shm_region *r) {
  if (r->fd >= 0)
    close(r->fd);
  r->fd = -1;
}

void berth_shm_region_free(berth_shm_region *r) {
  berth_shm_region_close_fd(r);
  if (r->base != NULL)
    munmap(r->base, r->size);
  r->base = NULL;
  r->size = r->split = 0;
}

ssize_t berth_shm_send_fd(int sock, const void *data, size_t len, int fd) {
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {.iov_base = (void *)(uintptr_t)data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov,
                       .msg_iovlen = 1,
                       .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 0;
  return n;
}
