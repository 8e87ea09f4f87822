/* Berth engine: the HTTP server transport's output queue, flushed once per
 * loop iteration (flush.h). The io_uring calls are in uring.c.
 */
#include "flush.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server_int.h"

#define URING_ENTRIES 512
#define FLUSH_ROUNDS 8 /* uring: submit/reap rounds per check at most */
#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

typedef struct out_batch { /* writev: one uv_write of a connection's items */
  uv_write_t req;
  berth_httpd_conn *conn;
  unsigned items;
} out_batch;

/* ---- items ---- */

static size_t item_left(const berth_out_item *it) {
  size_t n = 0;
  for (unsigned i = it->first; i < it->n; i++)
    n += it->bufs[i].len;
  return n - it->off;
}

/* Unlinks the head item of c's queue, frees it, then runs its callback. */
static void head_finish(berth_httpd_conn *c, int status) {
  berth_out_item *it = c->out.head;
  c->out.head = it->next;
  if (c->out.head == NULL)
    c->out.tail = NULL;
  c->out.bytes -= item_left(it);
  c->writes--;
  void (*cb)(void *, int) = it->cb;
  void *arg = it->arg;
  free(it->own[0]);
  free(it->own[1]);
  free(it);
  if (cb != NULL)
    cb(arg, status);
}

static void on_idle(uv_idle_t *h) { (void)h; /* on_check does the work */ }

void berth_out_mark(berth_httpd_conn *c) {
  berth_flush *f = &c->srv->flush;
  if (c->out.dirty || c->closing)
    return;
  c->out.dirty = true;
  LIST_INSERT_HEAD(&f->dirty, c, out.dirty_link);
  if (f->started && !f->idle_on && !f->closing) {
    f->idle_on = true; /* the loop must not block while c waits */
    uv_idle_start(&f->idle, on_idle);
  }
}

static void unmark(berth_httpd_conn *c) {
  if (!c->out.dirty)
    return;
  c->out.dirty = false;
  LIST_REMOVE(c, out.dirty_link);
}

static void on_batch_written(uv_write_t *req, int status);

/* Moves it's cursor past n written bytes (fewer than it holds). */
static void item_advance(berth_httpd_conn *c, berth_out_item *it, size_t n) {
  c->out.bytes -= n;
  while (n > 0) {
    size_t in_buf = it->bufs[it->first].len - it->off;
    if (n < in_buf) {
      it->off += n;
      return;
    }
    n -= in_buf;
    it->first++;
    it->off = 0;
  }
}

/* direct: it is written now. Most answers fit the socket's buffer and go
 * in one uv_try_write: no write request, no completion through the loop's
 * pending queue and no re-arm of the write watcher (libuv's epoll_ctl per
 * write). Such an item is marked written and completes in this turn's
 * check, never inside the caller. What the socket does not take, or
 * anything while libuv still holds an earlier write of c (uv_try_write
 * then says EAGAIN, which keeps the bytes in order), goes to uv_write. */
static int write_direct(berth_httpd_conn *c, berth_out_item *it) {
  size_t left = item_left(it);
  int n = uv_try_write((uv_stream_t *)&c->tcp, it->bufs, it->n);
  if (n >= 0 && (size_t)n == left) {
    c->out.bytes -= left;
    it->first = it->n;
    it->off = 0;
    it->written = true;
    berth_out_mark(c);
    return BERTH_OK;
  }
  if (n < 0 && n != UV_EAGAIN) {
    berth_httpd_conn_close(c);
    return BERTH_E_IO;
  }
  if (n > 0) {
    item_advance(c, it, (size_t)n);
    it->bufs[it->first].base += it->off; /* uv_write starts at the cursor */
    it->bufs[it->first].len -= it->off;
    it->off = 0;
  }
  out_batch *b = malloc(sizeof *b);
  if (b != NULL) {
    b->conn = c;
    b->items = 1;
    if (uv_write(&b->req, (uv_stream_t *)&c->tcp, it->bufs + it->first,
                 it->n - it->first, on_batch_written) == 0)
      return BERTH_OK;
  }
  free(b);
  berth_httpd_conn_close(c);
  return BERTH_E_IO;
}

/* direct: completes the items at the head that uv_try_write wrote; returns
 * how many. */
static unsigned finish_written(berth_httpd_conn *c) {
  unsigned k = 0;
  while (c->out.head != NULL && c->out.head->written && !c->closing) {
    head_finish(c, 0);
    k++;
  }
  return k;
}

int berth_out_queue(berth_httpd_conn *c, const uv_buf_t *bufs, unsigned n,
                    char *own0, char *own1, void (*cb)(void *, int),
                    void *arg) {
  berth_out_item *it =
      c->closing ? NULL : malloc(sizeof *it + (size_t)n * sizeof(uv_buf_t));
  if (it == NULL) {
    free(own0);
    free(own1);
    if (c->closing)
      return BERTH_E_IO;
    berth_httpd_conn_close(c);
    return BERTH_E_NOMEM;
  }
  it->next = NULL;
  it->own[0] = own0;
  it->own[1] = own1;
  it->cb = cb;
  it->arg = arg;
  it->n = n;
  it->first = 0;
  it->off = 0;
  it->written = false;
  if (n > 0)
    memcpy(it->bufs, bufs, (size_t)n * sizeof(uv_buf_t));
  if (c->out.tail != NULL)
    c->out.tail->next = it;
  else
    c->out.head = it;
  c->out.tail = it;
  c->out.bytes += item_left(it);
  c->writes++;
  if (c->srv->flush.mode == BERTH_WRITE_DIRECT)
    return write_direct(c, it);
  berth_out_mark(c);
  return BERTH_OK;
}

unsigned berth_out_consume(berth_httpd_conn *c, size_t written) {
  unsigned done = 0;
  while (c->out.head != NULL) {
    berth_out_item *it = c->out.head;
    size_t left = item_left(it);
    if (written >= left) {
      written -= left;
      head_finish(c, 0);
      done++;
      continue;
    }
    if (written == 0)
      break;
    c->out.bytes -= written; /* a partial write: move the item's cursor */
    while (written > 0) {
      size_t in_buf = it->bufs[it->first].len - it->off;
      if (written < in_buf) {
        it->off += written;
        written = 0;
      } else {
        written -= in_buf;
        it->first++;
        it->off = 0;
      }
    }
    break;
  }
  return done;
}

void berth_out_fail_all(berth_httpd_conn *c, int status) {
  while (c->out.head != NULL)
    head_finish(c, c->out.head->written ? 0 : status);
}

unsigned berth_out_gather(berth_httpd_conn *c, unsigned max, size_t *len) {
  unsigned nv = 0;
  *len = 0;
  for (berth_out_item *it = c->out.head; it != NULL && nv < max;
       it = it->next) {
    for (unsigned i = it->first; i < it->n && nv < max; i++) {
      size_t skip = i == it->first ? it->off : 0;
      if (it->bufs[i].len <= skip)
        continue;
      if (nv == c->out.iov_cap) {
        unsigned cap = c->out.iov_cap ? c->out.iov_cap * 2 : 16;
        struct iovec *v = realloc(c->out.iov, cap * sizeof *v);
        if (v == NULL)
          return nv; /* send what fits; the rest goes next time */
        c->out.iov = v;
        c->out.iov_cap = cap;
      }
      c->out.iov[nv].iov_base = it->bufs[i].base + skip;
      c->out.iov[nv].iov_len = it->bufs[i].len - skip;
      *len += it->bufs[i].len - skip;
      nv++;
    }
  }
  return nv;
}

/* ---- writev: one uv_write per connection per iteration ---- */

static void on_batch_written(uv_write_t *req, int status) {
  out_batch *b = (out_batch *)req;
  berth_httpd_conn *c = b->conn;
  unsigned items = b->items;
  free(b);
  c->out.inflight = false;
  if (c->srv->flush.mode == BERTH_WRITE_DIRECT)
    finish_written(c); /* written before this one, in order */
  for (unsigned i = 0; i < items && c->out.head != NULL; i++)
    head_finish(c, status);
  if (c->srv->flush.mode == BERTH_WRITE_DIRECT)
    finish_written(c); /* written after this one while it waited */
  if (c->out.head != NULL && status == 0 &&
      c->srv->flush.mode != BERTH_WRITE_DIRECT)
    berth_out_mark(c);
  berth_server_conn_written(c, status);
}

static void flush_writev(berth_httpd_conn *c) {
  size_t len = 0;
  unsigned nv = berth_out_gather(c, UINT_MAX, &len);
  unsigned items = 0;
  for (berth_out_item *it = c->out.head; it != NULL; it = it->next)
    items++;
  if (len != c->out.bytes) { /* no memory for the whole vector */
    berth_httpd_conn_close(c);
    return;
  }
  if (nv == 0) { /* only empty items */
    for (unsigned i = 0; i < items; i++)
      head_finish(c, 0);
    berth_server_conn_written(c, 0);
    return;
  }
  /* As in write_direct: what the socket takes now needs no write request */
  int n =
      uv_try_write((uv_stream_t *)&c->tcp, (const uv_buf_t *)c->out.iov, nv);
  if (n < 0 && n != UV_EAGAIN) {
    berth_out_fail_all(c, n);
    berth_server_conn_written(c, n);
    return;
  }
  if (n > 0) {
    berth_out_consume(c, (size_t)n); /* runs the written items' callbacks */
    if (c->closing)
      return;
    if (c->out.head == NULL) {
      berth_server_conn_written(c, 0);
      return;
    }
    items = 0; /* the rest, from its cursor (callbacks may have queued more) */
    for (berth_out_item *it = c->out.head; it != NULL; it = it->next)
      items++;
    nv = berth_out_gather(c, UINT_MAX, &len);
    if (len != c->out.bytes) {
      berth_httpd_conn_close(c);
      return;
    }
  }
  out_batch *b = malloc(sizeof *b);
  if (b == NULL) {
    berth_httpd_conn_close(c);
    return;
  }
  b->conn = c;
  b->items = items;
  /* uv_buf_t and struct iovec have the same layout on Unix (uv-unix.h) */
  if (uv_write(&b->req, (uv_stream_t *)&c->tcp, (const uv_buf_t *)c->out.iov,
               nv, on_batch_written) != 0) {
    free(b);
    berth_httpd_conn_close(c);
    return;
  }
  c->out.inflight = true;
}

/* ---- io_uring: one submit for every connection ---- */

/* Queues c's send; false when the ring has no room (c is marked again). */
static bool flush_uring(berth_flush *f, berth_httpd_conn *c) {
  size_t len = 0;
  unsigned nv = berth_out_gather(c, IOV_MAX, &len);
  if (nv == 0) {
    if (c->out.bytes == 0) {
      unsigned items = 0; /* only empty items */
      for (berth_out_item *it = c->out.head; it != NULL; it = it->next)
        items++;
      for (unsigned i = 0; i < items; i++)
        head_finish(c, 0);
      berth_server_conn_written(c, 0);
      return true;
    }
    berth_httpd_conn_close(c); /* no memory for the vector */
    return true;
  }
  int fd = -1;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) {
    berth_httpd_conn_close(c);
    return true;
  }
  memset(&c->out.msg, 0, sizeof c->out.msg);
  c->out.msg.msg_iov = c->out.iov;
  c->out.msg.msg_iovlen = nv;
  if (!berth_uring_send(f->ring, c, fd)) {
    berth_out_mark(c);
    return false;
  }
  c->out.inflight = true;
  if (f->sends++ == 0) /* the loop lives until every send has completed */
    uv_ref((uv_handle_t *)&f->poll);
  return true;
}

void berth_out_done(berth_httpd_conn *c, int res) {
  berth_flush *f = &c->srv->flush;
  c->out.inflight = false;
  if (--f->sends == 0 && !f->closing)
    uv_unref((uv_handle_t *)&f->poll);
  if (c->closing) { /* cancelled or finished after the close */
    berth_out_fail_all(c, UV_ECANCELED);
    berth_server_conn_unref(c);
    return;
  }
  if (res == -EAGAIN || res == -EINTR) {
    c->out.wait_pollout = res == -EAGAIN; /* wait for room, then again */
    berth_out_mark(c);
    return;
  }
  c->out.wait_pollout = false;
  if (res < 0) {
    berth_out_fail_all(c, res); /* libuv's status numbers are -errno */
    berth_server_conn_written(c, res);
    return;
  }
  berth_out_consume(c, (size_t)res);
  if (c->out.head != NULL)
    berth_out_mark(c);
  berth_server_conn_written(c, 0);
}

/* Pops c off the dirty list and starts its write; false: ring full. */
static bool flush_one(berth_flush *f, berth_httpd_conn *c) {
  unmark(c);
  if (f->mode == BERTH_WRITE_DIRECT) {
    if (finish_written(c) > 0)
      berth_server_conn_written(c, 0);
    return true;
  }
  if (c->closing || c->out.inflight || c->out.head == NULL)
    return true;
  if (f->mode == BERTH_WRITE_URING)
    return flush_uring(f, c);
  flush_writev(c);
  return true;
}

static void idle_update(berth_flush *f) {
  bool want = !LIST_EMPTY(&f->dirty) && !f->closing;
  if (want == f->idle_on)
    return;
  f->idle_on = want;
  if (want)
    uv_idle_start(&f->idle, on_idle);
  else
    uv_idle_stop(&f->idle);
}

static void on_check(uv_check_t *h) {
  berth_flush *f = h->data;
  for (int round = 0; round < FLUSH_ROUNDS; round++) {
    bool any = false;
    berth_httpd_conn *c;
    while ((c = LIST_FIRST(&f->dirty)) != NULL) {
      any = true;
      if (!flush_one(f, c))
        break;
    }
    if (f->ring == NULL)
      break;
    if (any)
      berth_uring_submit(f->ring); /* the one io_uring_enter */
    berth_uring_reap(f->ring);     /* inline completions: no syscall */
    if (LIST_EMPTY(&f->dirty))
      break;
  }
  idle_update(f);
}

static void on_ring(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  berth_flush *f = p->data;
  berth_uring_ack(f->ring);
  berth_uring_reap(f->ring); /* what is dirtied now flushes in on_check */
  idle_update(f);
}

/* ---- setup and teardown ---- */

int berth_flush_setup(berth_flush *f, int want, const char *addr,
                      berth_errmsg *err) {
  memset(f, 0, sizeof *f);
  LIST_INIT(&f->dirty);
  f->mode =
      want == BERTH_WRITE_DIRECT ? BERTH_WRITE_DIRECT : BERTH_WRITE_WRITEV;
  if (want == BERTH_WRITE_WRITEV || want == BERTH_WRITE_DIRECT)
    return BERTH_OK;
  berth_errmsg why;
  f->ring = berth_uring_new(URING_ENTRIES, &why);
  if (f->ring != NULL) {
    f->mode = BERTH_WRITE_URING;
    return BERTH_OK;
  }
  if (want == BERTH_WRITE_URING)
    return berth_errf(err, BERTH_E_CONFIG,
                      "%s: server.write_path is uring but %s; use auto (falls "
                      "back to writev) or writev",
                      addr, why.msg);
  berth_log_kv(BERTH_LOG_DEBUG, "io_uring not available: writing with writev",
               "reason", why.msg, "listener", addr, NULL);
  return BERTH_OK;
}

void berth_flush_start(berth_flush *f, uv_loop_t *loop, berth_httpd *h) {
  f->h = h;
  uv_check_init(loop, &f->check);
  uv_idle_init(loop, &f->idle);
  f->check.data = f;
  f->idle.data = f;
  f->open = 2;
  uv_check_start(&f->check, on_check);
  uv_unref((uv_handle_t *)&f->check);
  if (f->ring != NULL) {
    if (uv_poll_init(loop, &f->poll, berth_uring_fd(f->ring)) == 0) {
      f->poll.data = f;
      f->open++;
      uv_poll_start(&f->poll, UV_READABLE, on_ring);
      uv_unref((uv_handle_t *)&f->poll);
    } else { /* completions would never be seen: fall back */
      berth_uring_free(f->ring);
      f->ring = NULL;
      f->mode = BERTH_WRITE_WRITEV;
    }
  }
  f->started = true;
  berth_log_kv(BERTH_LOG_DEBUG, "http server output", "write_path",
               berth_flush_mode_name(f), "listener", h->addr, NULL);
  if (!LIST_EMPTY(&f->dirty))
    idle_update(f);
}

void berth_flush_abandon(berth_flush *f) {
  berth_uring_free(f->ring);
  f->ring = NULL;
}

static void on_flush_handle_closed(uv_handle_t *handle) {
  berth_flush *f = handle->data;
  if (--f->open > 0)
    return;
  berth_flush_abandon(f);
  f->on_closed(f->h);
}

void berth_flush_close(berth_flush *f, void (*on_closed)(berth_httpd *)) {
  if (f->closing)
    return;
  f->closing = true;
  f->on_closed = on_closed;
  if (!f->started) {
    berth_flush_abandon(f);
    on_closed(f->h);
    return;
  }
  uv_close((uv_handle_t *)&f->check, on_flush_handle_closed);
  uv_close((uv_handle_t *)&f->idle, on_flush_handle_closed);
  if (f->ring != NULL)
    uv_close((uv_handle_t *)&f->poll, on_flush_handle_closed);
}

int berth_httpd_write_path(const char *name) {
  if (name != NULL && strcmp(name, "writev") == 0)
    return BERTH_WRITE_WRITEV;
  if (name != NULL && strcmp(name, "uring") == 0)
    return BERTH_WRITE_URING;
  if (name != NULL && strcmp(name, "auto") == 0)
    return BERTH_WRITE_AUTO;
  return BERTH_WRITE_DIRECT;
}

const char *berth_flush_mode_name(const berth_flush *f) {
  return f->mode == BERTH_WRITE_URING    ? "uring"
         : f->mode == BERTH_WRITE_WRITEV ? "writev"
                                         : "direct";
}

/* ---- per connection ---- */

void berth_out_close(berth_httpd_conn *c) {
  unmark(c);
  berth_flush *f = &c->srv->flush;
  if (c->out.inflight && f->mode == BERTH_WRITE_URING) {
    c->handles++; /* freed after the completion (berth_out_done) */
    berth_uring_cancel(f->ring, c);
  }
}

void berth_out_free(berth_httpd_conn *c) {
  unmark(c);
  berth_out_fail_all(c, UV_ECANCELED);
  free(c->out.iov);
  c->out.iov = NULL;
  c->out.iov_cap = 0;
}
