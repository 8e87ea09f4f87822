/* Berth engine: the HTTP server transport (httpd.h): listener, connections,
 * protocol detection. HTTP/1.1 connections live in server_h1.c, HTTP/2
 * sessions in http2.c and request objects in httpd_req.c; this file owns
 * every socket.
 *
 * A connection reads into one fixed buffer (rbuf). Its first bytes pick the
 * protocol: the HTTP/2 preface hands the connection to http2.c, anything
 * else is HTTP/1.1. An HTTP/1.1 connection has at most one request in the
 * handler: while it is there, unparsed bytes wait in rbuf (reading goes on
 * until rbuf is full, so a disconnect is still seen), and parsing resumes
 * once the response is queued. A connection that must close (an error, or
 * `Connection: close`) shuts down its write side after the last response and
 * drains the peer for a moment (LINGER_MS) so that the response is not lost
 * to a TCP reset.
 */
#include "httpd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "buf.h"
#include "http1.h"
#include "http2.h"
#include "log.h"
#include "tls.h"
#include "server_int.h"

#define LINGER_MS 2000
#define DEFAULT_MAX_HEAD (16u * 1024)
#define DEFAULT_MAX_HEADERS 100
#define DEFAULT_MAX_BODY (64u * 1024 * 1024)

/* ---- server bookkeeping ---- */

static void srv_maybe_finish(berth_httpd *h);

static void on_flush_closed(berth_httpd *h) {
  h->flush_closed = true;
  srv_maybe_finish(h);
}

static void srv_maybe_finish(berth_httpd *h) {
  if (!h->closing || h->open_handles > 0)
    return;
  if (!h->flush_closed) { /* no connection is left: the output goes last */
    berth_flush_close(&h->flush, on_flush_closed);
    return;
  }
  void (*cb)(void *) = h->on_closed;
  void *arg = h->on_closed_arg;
  free(h->socket_path);
  free(h);
  if (cb != NULL)
    cb(arg);
}

static void on_listener_closed(uv_handle_t *handle) {
  berth_httpd *h = handle->data;
  h->open_handles--;
  srv_maybe_finish(h);
}

static void close_listener(berth_httpd *h) {
  if (!h->listener_open)
    return;
  h->listener_open = false;
  berth_server_unix_unlink(h); /* no new client can find it */
  uv_close((uv_handle_t *)&h->listener, on_listener_closed);
}

const char *berth_server_date(berth_httpd *h) {
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                  "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t now = time(NULL);
  if (now != h->date_sec || h->date[0] == '\0') {
    struct tm tm;
    if (gmtime_r(&now, &tm) != NULL && tm.tm_wday >= 0 && tm.tm_wday < 7 &&
        tm.tm_mon >= 0 && tm.tm_mon < 12)
      snprintf(h->date, sizeof h->date, "%s, %02d %s %04d %02d:%02d:%02d GMT",
               days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
               tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    h->date_sec = now;
  }
  return h->date;
}

/* ---- connection lifecycle ---- */

static void conn_free(berth_httpd_conn *c) {
  berth_httpd *h = c->srv;
  LIST_REMOVE(c, link);
  berth_out_free(c); /* callbacks first: they may reach c->h2 */
  if (c->h2 != NULL)
    berth_h2_session_free(c->h2);
  berth_h1_parser_free(c->parser);
  free(c->rbuf);
  free(c->cbuf);
  berth_buf_free(&c->tls_plain);
  berth_tls_conn_free(c->tls);
  free(c);
  h->open_handles--;
  srv_maybe_finish(h);
}

static void on_conn_handle_closed(uv_handle_t *handle) {
  berth_server_conn_unref(handle->data);
}

void berth_server_conn_unref(berth_httpd_conn *c) {
  if (--c->handles == 0)
    conn_free(c);
}

void berth_httpd_conn_close(berth_httpd_conn *c) {
  if (c->closing)
    return;
  c->closing = true;
  c->reading = false;
  c->srv->n_conns--;
  if (c->counted && c->srv->opts.budget != NULL) {
    c->counted = false;
    c->srv->opts.budget->open--;
  }
  if (c->cur != NULL) {
    berth_http_req *r = c->cur;
    c->cur = NULL;
    berth_httpd_req_gone(r);
  }
  if (c->h2 != NULL)
    berth_h2_session_detach(c->h2);
  berth_out_close(c);
  uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

/* The connection's one timer is armed lazily: a read or a head's start
 * or end only records a time, and the timer is restarted only when it
 * would fire later than the earliest deadline (an idle timeout, a head
 * deadline). Armed, it fires no later than header_timeout_ms after it was
 * armed, so a head deadline starting later never needs it moved; when it
 * fires early it re-arms for what is left (conn_arm). Restarting the
 * timer per read and per head (a heap removal and insertion each) was
 * ~3 % of berthd's time on keep-alive traffic. */
static uint64_t conn_due(const berth_httpd_conn *c, uint64_t now) {
  uint64_t idle = c->srv->opts.idle_timeout_ms;
  uint64_t head = c->srv->opts.header_timeout_ms;
  uint64_t due = idle > 0 ? c->active_at + idle : UINT64_MAX;
  if (c->head_deadline != 0 && c->head_deadline < due)
    due = c->head_deadline;
  if (head > 0 && now + head < due)
    due = now + head;
  return due;
}

static void on_idle_timer(uv_timer_t *t);

/* Arms the timer for conn_due unless it already fires no later. */
static void conn_arm(berth_httpd_conn *c) {
  if (c->lingering || c->closing)
    return;
  uint64_t now = uv_now(c->srv->loop);
  uint64_t due = conn_due(c, now);
  if (due == UINT64_MAX) {
    if (c->timer_due != 0)
      uv_timer_stop(&c->timer);
    c->timer_due = 0;
    return;
  }
  if (c->timer_due != 0 && c->timer_due <= due)
    return;
  uv_timer_start(&c->timer, on_idle_timer, due > now ? due - now : 1, 0);
  c->timer_due = due;
}

static void on_idle_timer(uv_timer_t *t) {
  berth_httpd_conn *c = t->data;
  c->timer_due = 0;
  if (c->lingering) {
    berth_httpd_conn_close(c);
    return;
  }
  uint64_t now = uv_now(c->srv->loop);
  if (c->head_deadline != 0 && now >= c->head_deadline) {
    c->head_deadline = 0;
    if (c->proto == PROTO_H1 && c->cur == NULL && !c->close_after_write)
      berth_server_h1_head_timeout(c); /* 408, then close */
    else
      berth_httpd_conn_close(c); /* TLS handshake or HTTP/2 preface */
    return;
  }
  uint64_t idle = c->srv->opts.idle_timeout_ms;
  if (idle == 0 || now < c->active_at + idle) {
    conn_arm(c); /* early: a deadline is still ahead */
    return;
  }
  bool busy = c->writes > 0 || (c->proto == PROTO_H1 && c->cur != NULL) ||
              (c->proto == PROTO_H2 && !berth_h2_session_idle(c->h2));
  if (busy) { /* idle for the timeout, but an answer is still owed */
    c->active_at = now;
    conn_arm(c);
    return;
  }
  berth_httpd_conn_close(c);
}

/* Bytes arrived: the idle timeout counts from now. */
static void conn_touch(berth_httpd_conn *c) {
  c->active_at = uv_now(c->srv->loop);
  conn_arm(c);
}

void berth_server_conn_head(berth_httpd_conn *c, bool start) {
  uint32_t limit = c->srv->opts.header_timeout_ms;
  if (start && (limit == 0 || c->head_deadline != 0))
    return; /* no deadline, or one is running: a byte does not restart it */
  if (!start && c->head_deadline == 0)
    return;
  c->head_deadline = start ? uv_now(c->srv->loop) + limit : 0;
  conn_arm(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)req;
  (void)status; /* the linger timer or the peer's EOF ends the connection */
}

/* The last response is written: shut our side, drain the peer briefly. */
void berth_server_conn_linger(berth_httpd_conn *c) {
  if (c->lingering || c->closing)
    return;
  c->lingering = true;
  c->roff = c->rlen = 0;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    berth_httpd_conn_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_idle_timer, LINGER_MS, 0);
  c->timer_due = uv_now(c->srv->loop) + LINGER_MS;
  berth_server_conn_update_reading(c);
}

/* ---- writing (queued, flushed once per loop iteration: flush.c) ---- */

size_t berth_server_conn_queued(const berth_httpd_conn *c) {
  return c->out.bytes;
}

void berth_server_conn_written(berth_httpd_conn *c, int status) {
  if (c->closing)
    return;
  if (status < 0) {
    berth_httpd_conn_close(c);
    return;
  }
  if (c->proto == PROTO_H1) {
    if (c->close_after_write && c->writes == 0)
      berth_server_conn_linger(c);
    else
      berth_server_h1_process(c); /* resumes after backpressure */
  }
}

/* Writes bufs; own0/own1 (may be NULL) are freed once written, in every case. */
int berth_server_conn_writev(berth_httpd_conn *c, uv_buf_t *bufs, unsigned n,
                             char *own0, char *own1, void (*cb)(void *, int),
                             void *arg) {
  if (c->closing) {
    free(own0);
    free(own1);
    return BERTH_E_IO;
  }
  uv_buf_t sealed;
  if (c->tls != NULL) {
    /* Encrypt everything into one owned buffer; the plaintext goes now. */
    berth_buf out;
    berth_buf_init(&out, SIZE_MAX / 2);
    berth_errmsg err;
    int rc = BERTH_OK;
    for (unsigned i = 0; i < n && rc == BERTH_OK; i++)
      if (bufs[i].len > 0)
        rc = berth_tls_write(c->tls, bufs[i].base, bufs[i].len, &out, &err);
    free(own0);
    free(own1);
    if (rc != BERTH_OK) {
      berth_buf_free(&out);
      berth_httpd_conn_close(c);
      return rc;
    }
    size_t len = 0;
    own0 = berth_buf_detach(&out, &len);
    own1 = NULL;
    sealed = uv_buf_init(own0, (unsigned)len);
    bufs = &sealed;
    n = 1;
    if (len == 0) { /* nothing to send (e.g. only empty buffers) */
      free(own0);
      if (cb != NULL)
        cb(arg, 0);
      return BERTH_OK;
    }
  }
  return berth_out_queue(c, bufs, n, own0, own1, cb, arg);
}

/* Writes TLS records produced by the handshake (already ciphertext). */
static void conn_write_raw(berth_httpd_conn *c, berth_buf *cipher) {
  if (cipher->len == 0)
    return;
  size_t len = 0;
  char *data = berth_buf_detach(cipher, &len);
  uv_buf_t b = uv_buf_init(data, (unsigned)len);
  berth_out_queue(c, &b, 1, data, NULL, NULL, NULL);
}

int berth_httpd_conn_write(berth_httpd_conn *c, char *data, size_t len,
                           void (*cb)(void *arg, int status), void *arg) {
  uv_buf_t b;
  b.base = data;
  b.len = len;
  return berth_server_conn_writev(c, &b, 1, data, NULL, cb, arg);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  berth_httpd_conn *c = handle->data;
  if (c->tls != NULL) {
    if (c->cbuf == NULL)
      c->cbuf = malloc(RBUF_SIZE);
    *buf = c->cbuf ? uv_buf_init(c->cbuf, RBUF_SIZE) : uv_buf_init(NULL, 0);
    return;
  }
  if (c->rbuf == NULL)
    c->rbuf = malloc(RBUF_SIZE);
  if (c->rbuf == NULL) {
    *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
    return;
  }
  if (c->roff == c->rlen) {
    c->roff = c->rlen = 0;
  } else if (c->rlen == RBUF_SIZE && c->roff > 0) {
    memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
    c->rlen -= c->roff;
    c->roff = 0;
  }
  *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(RBUF_SIZE - c->rlen));
}

static bool rbuf_has_room(const berth_httpd_conn *c) {
  if (c->tls != NULL && c->tls_plain_off < c->tls_plain.len)
    return false; /* decrypted bytes still wait for room */
  return c->rlen - c->roff < RBUF_SIZE;
}

/* Moves decrypted bytes into rbuf as far as they fit; true if any moved. */
bool berth_server_tls_move_plain(berth_httpd_conn *c) {
  size_t pending = c->tls_plain.len - c->tls_plain_off;
  if (pending == 0)
    return false;
  if (c->rbuf == NULL && (c->rbuf = malloc(RBUF_SIZE)) == NULL)
    return false;
  if (c->roff > 0) {
    memmove(c->rbuf, c->rbuf + c->roff, c->rlen - c->roff);
    c->rlen -= c->roff;
    c->roff = 0;
  }
  size_t room = RBUF_SIZE - c->rlen;
  size_t n = pending < room ? pending : room;
  if (n == 0)
    return false;
  memcpy(c->rbuf + c->rlen, c->tls_plain.data + c->tls_plain_off, n);
  c->rlen += n;
  c->tls_plain_off += n;
  if (c->tls_plain_off == c->tls_plain.len) {
    berth_buf_reset(&c->tls_plain);
    c->tls_plain_off = 0;
  }
  return true;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void conn_input(berth_httpd_conn *c);

void berth_server_conn_update_reading(berth_httpd_conn *c) {
  bool want;
  if (c->closing)
    return;
  if (c->lingering)
    want = true;
  else if (c->proto == PROTO_H2)
    want = true;
  else
    want = !c->close_after_write && rbuf_has_room(c) &&
           berth_server_conn_queued(c) < WRITE_HIGH_WATER;
  if (want == c->reading)
    return;
  if (want) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
      berth_httpd_conn_close(c);
      return;
    }
  } else {
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
  c->reading = want;
}

static void start_h2(berth_httpd_conn *c) {
  berth_errmsg err;
  c->proto = PROTO_H2;
  berth_server_conn_head(c, false); /* the preface is complete */
  c->h2 = berth_h2_session_new(c, &err);
  if (c->h2 == NULL) {
    berth_httpd_conn_close(c);
    return;
  }
  if (c->srv->draining)
    berth_h2_session_goaway(c->h2);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  berth_httpd_conn *c = stream->data;
  if (nread == 0 || c->closing)
    return;
  if (nread < 0) {
    /* EOF or error. A request still in the handler is gone: its client
     * left. A response being written to a client that only half-closed
     * still gets a chance to finish. */
    if (nread == UV_EOF && c->proto == PROTO_H1 && c->cur == NULL &&
        c->writes > 0 && !c->lingering) {
      c->close_after_write = true;
      berth_server_conn_update_reading(c);
      return;
    }
    berth_httpd_conn_close(c);
    return;
  }
  if (c->lingering) {
    c->roff = c->rlen = 0; /* discard */
    return;
  }
  if (c->proto == PROTO_DETECT) /* TLS handshake, preface or first head */
    berth_server_conn_head(c, true);
  conn_touch(c);
  if (c->tls != NULL) {
    berth_buf cipher;
    berth_buf_init(&cipher, SIZE_MAX / 2);
    berth_errmsg err;
    int rc = berth_tls_feed(c->tls, c->cbuf, (size_t)nread, &c->tls_plain,
                            &cipher, &err);
    conn_write_raw(c, &cipher);
    berth_buf_free(&cipher);
    if (rc != BERTH_OK || c->closing) {
      if (!c->closing)
        berth_httpd_conn_close(c);
      return;
    }
    if (c->proto == PROTO_DETECT && berth_tls_ready(c->tls)) {
      const char *alpn = berth_tls_alpn(c->tls);
      if (alpn != NULL && strcmp(alpn, "h2") == 0) {
        start_h2(c);
        if (c->closing)
          return;
      } else if (alpn != NULL) {
        c->proto = PROTO_H1;
        /* handshake done; the first head's deadline starts with its byte */
        berth_server_conn_head(c, false);
      }
    }
    do {
      if (!berth_server_tls_move_plain(c))
        break;
      conn_input(c);
    } while (!c->closing && (c->proto == PROTO_H2 || c->proto == PROTO_DETECT));
    return;
  }
  c->rlen += (size_t)nread;
  conn_input(c);
}

/* Parses what rbuf holds: protocol detection, then HTTP/2 or HTTP/1.1. */
static void conn_input(berth_httpd_conn *c) {
  if (c->proto == PROTO_DETECT) {
    size_t have = c->rlen - c->roff;
    size_t n = have < BERTH_H2_PREFACE_LEN ? have : BERTH_H2_PREFACE_LEN;
    if (memcmp(c->rbuf + c->roff, BERTH_H2_PREFACE, n) != 0)
      c->proto = PROTO_H1;
    else if (n == BERTH_H2_PREFACE_LEN)
      start_h2(c);
    else
      return; /* a prefix of the preface: wait for more */
    if (c->closing)
      return;
  }
  if (c->proto == PROTO_H2) {
    int rc = berth_h2_session_recv(c->h2, c->rbuf + c->roff, c->rlen - c->roff);
    c->roff = c->rlen = 0;
    if (rc < 0)
      berth_httpd_conn_close(c);
    return;
  }
  berth_server_h1_process(c);
}

/* ---- listener ---- */

static void format_peer(berth_httpd_conn *c) {
  struct sockaddr_storage ss;
  int len = (int)sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  snprintf(c->peer, sizeof c->peer, "unknown");
  if (c->srv->is_unix) {
    snprintf(c->peer, sizeof c->peer, "unix");
    return;
  }
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
    return;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    uv_ip4_name(a, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "%s:%u", ip,
             (unsigned)ntohs(a->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    uv_ip6_name(a, ip, sizeof ip);
    snprintf(c->peer, sizeof c->peer, "[%s]:%u", ip,
             (unsigned)ntohs(a->sin6_port));
  }
}

static void on_connection(uv_stream_t *server, int status);

static void on_reject_closed(uv_handle_t *handle) {
  berth_httpd *h = handle->data;
  h->reject_busy = false;
  h->open_handles--;
  if (h->accept_stalled && h->listener_open) {
    h->accept_stalled = false;
    on_connection((uv_stream_t *)&h->listener, 0);
  }
  srv_maybe_finish(h);
}

/* Out of memory for a connection: libuv keeps the accepted socket until
 * uv_accept, and stops listening meanwhile, so take it and close it. */
static void reject_connection(berth_httpd *h) {
  if (h->reject_busy) {
    h->accept_stalled = true; /* on_reject_closed comes back for it */
    return;
  }
  h->reject_busy = true;
  h->open_handles++;
  if (h->is_unix)
    uv_pipe_init(h->loop, &h->reject_pipe, 0);
  else
    uv_tcp_init(h->loop, &h->reject);
  h->reject.data = h;
  uv_accept((uv_stream_t *)&h->listener, (uv_stream_t *)&h->reject);
  uv_close((uv_handle_t *)&h->reject, on_reject_closed);
}

/* Takes a place in the connection budget, or says the budget is spent: the
 * connection is refused (logged once per burst, counted). The count is
 * atomic: listeners on several network loops share it. */
static bool over_budget(berth_httpd *h) {
  berth_httpd_conn_budget *b = h->opts.budget;
  if (b == NULL)
    return false;
  size_t was = atomic_fetch_add(&b->open, 1);
  if (b->max == 0 || was < b->max) {
    if (atomic_load(&b->refusing) && atomic_exchange(&b->refusing, false)) {
      char n[24];
      snprintf(n, sizeof n, "%llu",
               (unsigned long long)atomic_load(&b->refused));
      berth_log_kv(BERTH_LOG_INFO, "accepting connections again",
                   "refused_total", n, NULL);
    }
    return false;
  }
  atomic_fetch_sub(&b->open, 1);
  atomic_fetch_add(&b->refused, 1);
  if (!atomic_exchange(&b->refusing, true)) {
    char n[24];
    snprintf(n, sizeof n, "%zu", b->max);
    berth_log_kv(BERTH_LOG_WARNING,
                 "connection limit reached: new connections are closed at "
                 "once until some end (server.max_connections)",
                 "max_connections", n, "listener", h->addr, NULL);
  }
  return true;
}

static void on_connection(uv_stream_t *server, int status) {
  berth_httpd *h = server->data;
  if (status < 0 || h->closing)
    return;
  if (over_budget(h)) {
    reject_connection(h);
    return;
  }
  berth_httpd_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    if (h->opts.budget != NULL)
      atomic_fetch_sub(&h->opts.budget->open, 1); /* over_budget took it */
    reject_connection(h);
    return;
  }
  c->srv = h;
  c->counted = h->opts.budget != NULL; /* over_budget took the place */
  if (h->is_unix)
    uv_pipe_init(h->loop, &c->pipe, 0);
  else
    uv_tcp_init(h->loop, &c->tcp);
  uv_timer_init(h->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles = 2;
  LIST_INSERT_HEAD(&h->conns, c, link);
  h->n_conns++;
  h->open_handles++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    berth_httpd_conn_close(c);
    return;
  }
  if (!h->is_unix)
    uv_tcp_nodelay(&c->tcp, 1);
  if (h->opts.tls != NULL) {
    c->tls = berth_tls_conn_new(h->opts.tls);
    berth_buf_init(&c->tls_plain, (size_t)RBUF_SIZE * 4 + 64 * 1024);
    if (c->tls == NULL) {
      berth_httpd_conn_close(c);
      return;
    }
  }
  format_peer(c);
  conn_touch(c);
  berth_server_conn_update_reading(c);
}

static void on_failed_start_closed(uv_handle_t *handle) {
  berth_httpd *h = handle->data;
  berth_flush_abandon(&h->flush);
  free(h->socket_path);
  free(h);
}

static void apply_defaults(berth_httpd *h) {
  if (h->opts.max_head_bytes == 0)
    h->opts.max_head_bytes = DEFAULT_MAX_HEAD;
  if (h->opts.max_headers == 0)
    h->opts.max_headers = DEFAULT_MAX_HEADERS;
  if (h->opts.max_body_bytes == 0)
    h->opts.max_body_bytes = DEFAULT_MAX_BODY;
  h->limits.max_head_bytes = h->opts.max_head_bytes;
  h->limits.max_headers = h->opts.max_headers;
  h->limits.max_body_bytes = h->opts.max_body_bytes;
}

static int start_unix(uv_loop_t *loop, const berth_httpd_options *opts,
                      berth_httpd **out, berth_errmsg *err) {
  berth_httpd *h = calloc(1, sizeof *h);
  if (h == NULL || (h->socket_path = strdup(opts->socket_path)) == NULL) {
    free(h);
    return berth_errf(err, BERTH_E_NOMEM, "http server: out of memory");
  }
  h->loop = loop;
  h->opts = *opts;
  h->is_unix = true;
  snprintf(h->host, sizeof h->host, "unix");
  h->opts.host = h->host;
  h->opts.socket_path = h->socket_path;
  h->opts.tls = NULL; /* local clients only: plain HTTP/1.1 and h2c */
  apply_defaults(h);
  snprintf(h->addr, sizeof h->addr, "unix:%.80s", h->socket_path);
  int rc = berth_flush_setup(&h->flush, opts->write_path, h->addr, err);
  if (rc == BERTH_OK && (rc = uv_pipe_init(loop, &h->listener_pipe, 0)) != 0)
    rc = berth_errf(err, BERTH_E_IO, "%s: %s", h->addr, uv_strerror(rc));
  if (rc != BERTH_OK) {
    berth_flush_abandon(&h->flush);
    free(h->socket_path);
    free(h);
    return rc;
  }
  h->listener_pipe.data = h;
  rc = berth_server_unix_listen(h, on_connection, err);
  if (rc != BERTH_OK) {
    uv_close((uv_handle_t *)&h->listener_pipe, on_failed_start_closed);
    return rc;
  }
  h->listener_open = true;
  h->open_handles = 1;
  berth_flush_start(&h->flush, loop, h);
  *out = h;
  return BERTH_OK;
}

int berth_httpd_start(uv_loop_t *loop, const berth_httpd_options *opts,
                      berth_httpd **out, berth_errmsg *err) {
  *out = NULL;
  if (opts != NULL && opts->handler != NULL && opts->socket_path != NULL)
    return start_unix(loop, opts, out, err);
  if (berth_httpd_network_loops() > 1) /* loops.c */
    return berth_netgroup_start(loop, opts, out, err);
  return berth_server_start_tcp(loop, opts, false, out, err);
}

int berth_server_parse_addr(const char *host, uint16_t port,
                            berth_sockaddr *addr, bool *v6, berth_errmsg *err) {
  *v6 = false;
  if (uv_ip4_addr(host, port, &addr->v4) == 0)
    return BERTH_OK;
  if (uv_ip6_addr(host, port, &addr->v6) != 0)
    return berth_errf(err, BERTH_E_CONFIG,
                      "%s: not a numeric IPv4 or IPv6 address", host);
  *v6 = true;
  return BERTH_OK;
}

int berth_server_start_tcp(uv_loop_t *loop, const berth_httpd_options *opts,
                           bool reuseport, berth_httpd **out,
                           berth_errmsg *err) {
  *out = NULL;
  if (opts == NULL || opts->handler == NULL || opts->host == NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      "http server: host and handler are required");
  berth_sockaddr addr;
  bool v6 = false;
  int prc = berth_server_parse_addr(opts->host, opts->port, &addr, &v6, err);
  if (prc != BERTH_OK)
    return prc;
  if (strlen(opts->host) >= sizeof((berth_httpd *)0)->host)
    return berth_errf(err, BERTH_E_CONFIG, "%s: address too long", opts->host);
  berth_httpd *h = calloc(1, sizeof *h);
  if (h == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "http server: out of memory");
  h->loop = loop;
  h->opts = *opts;
  snprintf(h->host, sizeof h->host, "%s", opts->host);
  h->opts.host = h->host;
  apply_defaults(h);
  snprintf(h->addr, sizeof h->addr, v6 ? "[%s]:%u" : "%s:%u", h->host,
           (unsigned)opts->port);
  int rc = berth_flush_setup(&h->flush, opts->write_path, h->addr, err);
  if (rc == BERTH_OK) {
    int uvrc = reuseport
                   ? uv_tcp_init_ex(loop, &h->listener, v6 ? AF_INET6 : AF_INET)
                   : uv_tcp_init(loop, &h->listener);
    if (uvrc != 0) {
      rc = berth_errf(err, BERTH_E_IO, "%s: %s", h->addr, uv_strerror(uvrc));
    } else if (reuseport) { /* one listener per network loop (loops.c) */
      uv_os_fd_t fd;
      int one = 1;
      if (uv_fileno((uv_handle_t *)&h->listener, &fd) != 0 ||
          setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        berth_errf(err, BERTH_E_IO, "%s: SO_REUSEPORT: %s", h->addr,
                   strerror(errno));
        h->listener.data = h; /* on_failed_start_closed frees h */
        uv_close((uv_handle_t *)&h->listener, on_failed_start_closed);
        return BERTH_E_IO;
      }
    }
  }
  if (rc != BERTH_OK) {
    berth_flush_abandon(&h->flush);
    free(h);
    return rc;
  }
  h->listener.data = h;
  rc = uv_tcp_bind(&h->listener, &addr.sa, 0); /* libuv sets SO_REUSEADDR */
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&h->listener, 511, on_connection);
  if (rc != 0) {
    berth_errf(err, BERTH_E_IO, "%s: %s", h->addr, uv_strerror(rc));
    uv_close((uv_handle_t *)&h->listener, on_failed_start_closed);
    return BERTH_E_IO;
  }
  union {
    struct sockaddr_storage ss;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
  } bound;
  int blen = (int)sizeof bound;
  if (uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound.ss, &blen) ==
      0)
    h->port = ntohs(bound.ss.ss_family == AF_INET6 ? bound.v6.sin6_port
                                                   : bound.v4.sin_port);
  h->listener_open = true;
  h->open_handles = 1;
  berth_flush_start(&h->flush, loop, h);
  *out = h;
  return BERTH_OK;
}

uint16_t berth_httpd_port(const berth_httpd *h) {
  return h->group != NULL ? berth_netgroup_port(h->group) : h->port;
}

size_t berth_httpd_connections(const berth_httpd *h) {
  return h->group != NULL ? berth_netgroup_connections(h->group)
                          : atomic_load(&h->n_conns);
}

void berth_httpd_stop_accepting(berth_httpd *h) {
  if (h->group != NULL) {
    berth_netgroup_stop_accepting(h->group);
    return;
  }
  if (h->draining)
    return;
  h->draining = true;
  close_listener(h);
  berth_httpd_conn *c;
  LIST_FOREACH(c, &h->conns, link)
  if (!c->closing && c->h2 != NULL)
    berth_h2_session_goaway(c->h2);
}

void berth_httpd_close(berth_httpd *h, void (*on_closed)(void *), void *arg) {
  if (h->group != NULL) {
    berth_netgroup_close(h, on_closed, arg);
    return;
  }
  if (h->closing)
    return;
  h->closing = true;
  h->draining = true;
  h->on_closed = on_closed;
  h->on_closed_arg = arg;
  close_listener(h);
  berth_httpd_conn *c;
  LIST_FOREACH(c, &h->conns, link)
  berth_httpd_conn_close(c);
  srv_maybe_finish(h);
}

/* ---- for http2.c ---- */

const berth_httpd_options *berth_httpd_conn_options(const berth_httpd_conn *c) {
  return &c->srv->opts;
}

const char *berth_httpd_conn_peer(const berth_httpd_conn *c) { return c->peer; }

bool berth_httpd_conn_draining(const berth_httpd_conn *c) {
  return c->srv->draining;
}

const char *berth_httpd_conn_date(berth_httpd_conn *c) {
  return berth_server_date(c->srv);
}
