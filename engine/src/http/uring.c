/* Berth engine: the io_uring calls of the output queue (flush.h). Built with
 * liburing when meson finds it (BERTH_HAVE_URING); without it every call
 * says io_uring is not available and the server writes with writev.
 *
 * A send's user_data is its connection; the cancels and the POLL_ADD
 * linked before a send that met EAGAIN carry 0 and are ignored.
 */
#include "flush.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

#ifdef BERTH_HAVE_URING

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Completions are announced through an eventfd registered with the ring
 * (every completion counts it up; the loop reads it once per wake-up).
 * Not the "async" registration: that one signals only completions posted
 * by io_uring's worker threads, and a send that waits for room in the
 * socket completes from the submitting thread's task work, unannounced: a
 * loop with nothing else to wake it (a network loop, docs/threads.md)
 * never saw a large answer finish. */
struct berth_uring {
  struct io_uring ring;
  int efd;
};

bool berth_uring_built(void) { return true; }

struct berth_uring *berth_uring_new(unsigned entries, berth_errmsg *err) {
  struct berth_uring *u = calloc(1, sizeof *u);
  if (u == NULL) {
    berth_errf(err, BERTH_E_NOMEM, "io_uring: out of memory");
    return NULL;
  }
  int rc = io_uring_queue_init(entries, &u->ring, 0);
  if (rc < 0) {
    free(u);
    berth_errf(err, BERTH_E_UNSUPPORTED, "io_uring is not available (%s)",
               strerror(-rc));
    return NULL;
  }
  struct io_uring_probe *p = io_uring_get_probe_ring(&u->ring);
  bool ok = p != NULL && io_uring_opcode_supported(p, IORING_OP_SENDMSG) &&
            io_uring_opcode_supported(p, IORING_OP_ASYNC_CANCEL) &&
            io_uring_opcode_supported(p, IORING_OP_POLL_ADD) &&
            (u->ring.features & IORING_FEAT_NODROP) != 0;
  if (p != NULL)
    io_uring_free_probe(p);
  if (!ok) {
    io_uring_queue_exit(&u->ring);
    free(u);
    berth_errf(err, BERTH_E_UNSUPPORTED,
               "io_uring lacks sendmsg, cancel, poll or no-drop completions "
               "on this kernel");
    return NULL;
  }
  u->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  rc = u->efd < 0 ? -errno : io_uring_register_eventfd(&u->ring, u->efd);
  if (rc < 0) {
    if (u->efd >= 0)
      close(u->efd);
    io_uring_queue_exit(&u->ring);
    free(u);
    berth_errf(err, BERTH_E_UNSUPPORTED,
               "io_uring cannot announce completions on an eventfd (%s)",
               strerror(-rc));
    return NULL;
  }
  return u;
}

void berth_uring_free(struct berth_uring *u) {
  if (u == NULL)
    return;
  io_uring_queue_exit(&u->ring);
  close(u->efd);
  free(u);
}

int berth_uring_fd(const struct berth_uring *u) { return u->efd; }

void berth_uring_ack(struct berth_uring *u) {
  uint64_t n;
  while (read(u->efd, &n, sizeof n) < 0 && errno == EINTR)
    ;
}

static struct io_uring_sqe *get_sqe(struct berth_uring *u) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (sqe == NULL) { /* full: hand what is queued to the kernel first */
    io_uring_submit(&u->ring);
    sqe = io_uring_get_sqe(&u->ring);
  }
  return sqe;
}

bool berth_uring_send(struct berth_uring *u, berth_httpd_conn *c, int fd) {
  if (io_uring_sq_space_left(&u->ring) < 2)
    io_uring_submit(&u->ring);
  if (io_uring_sq_space_left(&u->ring) < 2)
    return false;
  if (c->out.wait_pollout) { /* wait for room, then send */
    struct io_uring_sqe *p = io_uring_get_sqe(&u->ring);
    io_uring_prep_poll_add(p, fd, POLLOUT);
    io_uring_sqe_set_data64(p, 0);
    p->flags |= IOSQE_IO_LINK;
  }
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  io_uring_prep_sendmsg(sqe, fd, &c->out.msg, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, c);
  return true;
}

void berth_uring_cancel(struct berth_uring *u, berth_httpd_conn *c) {
  struct io_uring_sqe *sqe = get_sqe(u);
  if (sqe == NULL)
    return; /* the close of the socket's last reference ends the send */
  io_uring_prep_cancel(sqe, c, 0);
  io_uring_sqe_set_data64(sqe, 0);
  io_uring_submit(&u->ring);
}

void berth_uring_submit(struct berth_uring *u) {
  int rc;
  do
    rc = io_uring_submit(&u->ring);
  while (rc == -EINTR);
}

void berth_uring_reap(struct berth_uring *u) {
  for (;;) {
    struct io_uring_cqe *cqe = NULL;
    if (io_uring_peek_cqe(&u->ring, &cqe) != 0 || cqe == NULL)
      return;
    berth_httpd_conn *c = io_uring_cqe_get_data(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(&u->ring, cqe); /* before the callback may submit */
    if (c != NULL)
      berth_out_done(c, res);
  }
}

#else /* no liburing at build time */

struct berth_uring {
  int unused;
};

bool berth_uring_built(void) { return false; }

struct berth_uring *berth_uring_new(unsigned entries, berth_errmsg *err) {
  (void)entries;
  berth_errf(err, BERTH_E_UNSUPPORTED,
             "this berthd was built without liburing");
  return NULL;
}

void berth_uring_free(struct berth_uring *u) { free(u); }

int berth_uring_fd(const struct berth_uring *u) {
  (void)u;
  return -1;
}

bool berth_uring_send(struct berth_uring *u, berth_httpd_conn *c, int fd) {
  (void)u;
  (void)c;
  (void)fd;
  return false;
}

void berth_uring_cancel(struct berth_uring *u, berth_httpd_conn *c) {
  (void)u;
  (void)c;
}

void berth_uring_submit(struct berth_uring *u) { (void)u; }

void berth_uring_ack(struct berth_uring *u) { (void)u; }

void berth_uring_reap(struct berth_uring *u) { (void)u; }

#endif
