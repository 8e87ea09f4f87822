/* Berth engine: the HTTP server transport's output queue (flush.c) and its
 * io_uring submission path (uring.c).
 *
 * Every byte a connection sends (responses, HTTP/2 frames, TLS records)
 * is queued on the connection as an item, in order, and the queues of all
 * connections are flushed once at the end of the loop iteration (a
 * uv_check; a uv_idle keeps the loop from blocking while anything waits):
 *
 *   writev  one uv_write per connection per iteration, whatever number of
 *           responses it queued (HTTP/1.1 pipelining, HTTP/2 streams);
 *   uring   one IORING_OP_SENDMSG per connection, all of them submitted
 *           with one io_uring_enter; the completions are read from the
 *           ring at once (a socket with room completes inline) or when
 *           an eventfd registered for the later ones turns readable (a
 *           uv_poll).
 *
 * A connection has at most one write in flight; items queued meanwhile go
 * with the next one, and the unwritten tail of a partial write is sent
 * again first. An item's bytes live until its completion; its callback runs
 * then, with 0 or a negative libuv status (UV_ECANCELED when the
 * connection closed first).
 *
 *   direct  (the default) each item is written when it is queued, one
 *           writev per answer: uv_try_write, so an answer the socket takes
 *           whole costs no write request and no re-arm of libuv's write
 *           watcher (an epoll_ctl); it is marked written and completes in
 *           the turn's check. The rest of a partial write, and anything
 *           queued behind a write libuv still holds, goes to uv_write.
 *
 * writev also starts with uv_try_write and hands only the rest to
 * uv_write.
 *
 * State lives on the server (berth_httpd) and its connections: one flush
 * state per server, on the server's loop, no globals.
 */
#ifndef BERTH_HTTP_FLUSH_H
#define BERTH_HTTP_FLUSH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <uv.h>

#include "berth/error.h"

typedef struct berth_httpd berth_httpd;
typedef struct berth_httpd_conn berth_httpd_conn;

/* server.write_path. direct: each item is handed to uv_write as it is
 * queued (one writev per answer), no end-of-iteration flush. */
enum {
  BERTH_WRITE_DIRECT = 0,
  BERTH_WRITE_WRITEV = 1,
  BERTH_WRITE_URING = 2,
  BERTH_WRITE_AUTO = 3
};

/* One queued write. own[] are freed, and cb runs, once it is written or
 * dropped. bufs point into own[] or into static storage. */
typedef struct berth_out_item {
  struct berth_out_item *next;
  char *own[2];
  void (*cb)(void *, int);
  void *arg;
  unsigned n;     /* bufs */
  unsigned first; /* first buf not fully written */
  size_t off;     /* bytes of bufs[first] already written */
  bool written;   /* direct: all written by uv_try_write; completes in the
                     loop turn's check */
  uv_buf_t bufs[];
} berth_out_item;

/* A connection's output (embedded in berth_httpd_conn). */
typedef struct berth_out {
  berth_out_item *head, *tail; /* FIFO: in flight first, then queued */
  size_t bytes;                /* not yet confirmed written */
  bool dirty;                  /* on the server's dirty list */
  bool inflight;               /* a write of the head items is in flight */
  bool wait_pollout;           /* uring: the last send said EAGAIN */
  LIST_ENTRY(berth_httpd_conn) dirty_link;
  /* uring: the in-flight send's header and vector (kept until completion) */
  struct msghdr msg;
  struct iovec *iov;
  unsigned iov_cap;
} berth_out;

struct berth_uring; /* uring.c */

/* A server's flush state (embedded in berth_httpd). */
typedef struct berth_flush {
  uv_check_t check;
  uv_idle_t idle;
  uv_poll_t poll; /* the ring's completion eventfd (uring only) */
  int open;       /* uv handles not yet closed */
  bool started;   /* handles initialised */
  bool closing;
  bool idle_on;
  int mode;       /* BERTH_WRITE_WRITEV or BERTH_WRITE_URING */
  unsigned sends; /* uring sends in flight (poll is ref'd while any) */
  struct berth_uring *ring;
  berth_httpd *h; /* the server this is embedded in */
  LIST_HEAD(berth_out_dirty, berth_httpd_conn) dirty;
  void (*on_closed)(berth_httpd *);
} berth_flush;

/* Picks the write path for `want` (BERTH_WRITE_*): direct and writev are
 * taken as asked; auto takes io_uring when
 * the kernel allows it, else writev; uring without io_uring is an error
 * (err says why). Creates the ring; no uv handle yet. */
int berth_flush_setup(berth_flush *f, int want, const char *addr,
                      berth_errmsg *err);
/* Starts the uv handles on loop (after the listener is up). */
void berth_flush_start(berth_flush *f, uv_loop_t *loop, berth_httpd *h);
/* Frees what setup made when the server never started. */
void berth_flush_abandon(berth_flush *f);
/* Closes the handles and the ring once no connection is left; on_closed
 * runs when they are closed. */
void berth_flush_close(berth_flush *f, void (*on_closed)(berth_httpd *));
/* The path in use, for logs: "direct", "writev" or "uring". */
const char *berth_flush_mode_name(const berth_flush *f);

/* Queues bufs on c; takes own0/own1 in every case. BERTH_OK, or an error
 * after which c is closing (the buffers are freed, cb is not called). */
int berth_out_queue(berth_httpd_conn *c, const uv_buf_t *bufs, unsigned n,
                    char *own0, char *own1, void (*cb)(void *, int), void *arg);
/* c is closing: stops its pending output (an in-flight uring write is
 * cancelled; c is freed after its completion: see server.c). */
void berth_out_close(berth_httpd_conn *c);
/* c is being freed: drops what is left, each item's callback with
 * UV_ECANCELED. */
void berth_out_free(berth_httpd_conn *c);

/* ---- for flush.c and uring.c ---- */

/* Consumes `written` bytes from the head of c's queue (their items are
 * freed, callbacks called with 0); returns the number of items done. */
unsigned berth_out_consume(berth_httpd_conn *c, size_t written);
/* Ends the head items of c's in-flight write: status < 0 fails them all
 * (callbacks with status). */
void berth_out_fail_all(berth_httpd_conn *c, int status);
/* Fills c->out.iov from the queue (at most max entries); returns the count
 * and the bytes in *len. */
unsigned berth_out_gather(berth_httpd_conn *c, unsigned max, size_t *len);
/* Puts c on its server's dirty list (flushed at the end of the iteration). */
void berth_out_mark(berth_httpd_conn *c);

/* uring.c: NULL when io_uring is not available (err says why). */
struct berth_uring *berth_uring_new(unsigned entries, berth_errmsg *err);
void berth_uring_free(struct berth_uring *u);
/* The fd that turns readable when a completion came after its submit. */
int berth_uring_fd(const struct berth_uring *u);
/* Clears that fd's readiness (before reaping). */
void berth_uring_ack(struct berth_uring *u);
/* Queues a send of c's gathered iovecs (c->out.msg). false: the ring is
 * full even after a submit (c stays dirty). */
bool berth_uring_send(struct berth_uring *u, berth_httpd_conn *c, int fd);
/* Queues a cancel of c's in-flight send and submits at once. */
void berth_uring_cancel(struct berth_uring *u, berth_httpd_conn *c);
/* Submits what is queued (one io_uring_enter). */
void berth_uring_submit(struct berth_uring *u);
/* Reaps the completions ready now; each one goes to berth_out_done. */
void berth_uring_reap(struct berth_uring *u);
/* Whether the build has io_uring support. */
bool berth_uring_built(void);

/* flush.c: the completion of c's in-flight uring send (res: bytes or
 * -errno). */
void berth_out_done(berth_httpd_conn *c, int res);

#endif
