/* Tests for the HTTP transport (server.c, http2.c, httpd_req.c): a real
 * berth_httpd on 127.0.0.1, port 0, driven by blocking sockets from a client
 * thread (HTTP/1.1 by hand, HTTP/2 with nghttp2's client session). The loop
 * runs on the test's thread. Every wait is bounded: sockets time out after
 * 3 s and a watchdog ends the loop after 9 s. cmocka asserts only on the
 * loop thread: the client records its first failure in client_error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "http2.h"
#include "httpd.h"

#define MAX_BODY 1024
#define BERTH_TEST_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

enum { CMD_NONE, CMD_STOP_ACCEPTING, CMD_DONE };

static uv_loop_t loop;
static berth_httpd *srv;
static uint16_t port;
static uv_async_t cmd_async;
static uv_timer_t watchdog;
static uv_sem_t cmd_sem;
static atomic_int cmd;
static atomic_int aborted;
static atomic_int hang_seen;
static atomic_int gone_count;
static atomic_int closed_cb;
static atomic_int stream_gone;
static char client_error[512];

/* ---- server side (loop thread) ---- */

typedef struct {
  uv_timer_t timer;
  berth_http_req *req;
} deferred;

static void echo(berth_http_req *r, const char *prefix) {
  size_t ml, pl, bl, ql = 0;
  const char *m = berth_http_method(r, &ml);
  const char *p = berth_http_path(r, &pl);
  const char *b = berth_http_body(r, &bl);
  const char *q = berth_http_query(r, &ql);
  size_t cap = bl + ml + pl + 64;
  char *out = malloc(cap);
  if (out == NULL)
    return;
  int n = snprintf(out, cap, "%s%.*s %.*s %.*s", prefix, (int)ml, m, (int)pl, p,
                   (int)bl, b);
  char version[8], query[64];
  snprintf(version, sizeof version, "%d", berth_http_version(r));
  snprintf(query, sizeof query, "%.*s", q != NULL ? (int)ql : 1,
           q != NULL ? q : "-");
  berth_http_header_kv h[] = {{"content-type", "text/plain"},
                              {"x-version", version},
                              {"x-query", query},
                              {"x-bad", "evil\r\ninjected: 1"},
                              {"Content-Length", "9999"}};
  berth_http_respond_take(r, 200, h, 5, out, (size_t)n);
}

static void on_deferred_closed(uv_handle_t *h) { free(h->data); }

static void on_deferred(uv_timer_t *t) {
  deferred *d = t->data;
  echo(d->req, "slow:");
  berth_http_req_unref(d->req);
  uv_close((uv_handle_t *)t, on_deferred_closed);
}

static void on_hang_gone(berth_http_req *r, void *arg) {
  (void)arg;
  atomic_fetch_add(&gone_count, 1);
  berth_http_respond(r, 200, NULL, 0, "late", 4); /* a no-op now */
  berth_http_req_unref(r);
}

/* /stream: three chunks "c0".."c2", one per loop turn, then the end;
 * /streamhang: one chunk, then waits for the client to leave. */
typedef struct {
  uv_timer_t timer;
  berth_http_req *req;
  int i;
  bool hang;
} streamer;

static void on_stream_gone(berth_http_req *r, void *arg) {
  (void)r;
  (void)arg;
  atomic_fetch_add(&stream_gone, 1);
}

static void on_stream_tick(uv_timer_t *t) {
  streamer *s = t->data;
  bool over = berth_http_req_is_gone(s->req);
  if (!over && (!s->hang || s->i == 0)) {
    char *chunk = malloc(3);
    assert_non_null(chunk);
    memcpy(chunk, "c", 1);
    chunk[1] = (char)('0' + s->i++);
    assert_int_equal(berth_http_stream_send(s->req, chunk, 2), BERTH_OK);
    assert_true(berth_http_stream_queued(s->req) < 1024);
  }
  if (!over && !s->hang && s->i == 3) {
    assert_int_equal(berth_http_stream_end(s->req, NULL, 0), BERTH_OK);
    assert_int_equal(berth_http_stream_send(s->req, malloc(1), 1), BERTH_E_IO);
    over = true;
  }
  if (over) {
    berth_http_req_unref(s->req);
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, on_deferred_closed);
  }
}

static void start_stream(berth_http_req *r, bool hang) {
  streamer *s = calloc(1, sizeof *s);
  assert_non_null(s);
  berth_http_req_ref(r);
  s->req = r;
  s->hang = hang;
  s->timer.data = s;
  if (hang)
    berth_http_req_on_gone(r, on_stream_gone, NULL);
  berth_http_header_kv h[] = {{"content-type", "text/event-stream"},
                              {"Content-Length", "5"}};
  assert_int_equal(berth_http_stream_send(r, malloc(1), 1), BERTH_E_INVALID);
  assert_int_equal(berth_http_stream_begin(r, 200, h, 2), BERTH_OK);
  uv_timer_init(&loop, &s->timer);
  uv_timer_start(&s->timer, on_stream_tick, 5, 5);
}

static void handler(berth_http_req *r, void *data) {
  (void)data;
  size_t pl;
  const char *p = berth_http_path(r, &pl);
  if (pl == 5 && memcmp(p, "/slow", 5) == 0) {
    deferred *d = malloc(sizeof *d);
    assert_non_null(d);
    berth_http_req_ref(r);
    d->req = r;
    d->timer.data = d;
    uv_timer_init(&loop, &d->timer);
    uv_timer_start(&d->timer, on_deferred, 40, 0);
    return;
  }
  if (pl == 7 && memcmp(p, "/stream", 7) == 0) {
    start_stream(r, false);
    return;
  }
  if (pl == 14 && memcmp(p, "/streamrespond", 14) == 0) {
    /* after a streamed head, an ordinary answer is the last chunk */
    berth_http_header_kv h[] = {{"content-type", "text/event-stream"}};
    berth_http_req_ref(r);
    assert_int_equal(berth_http_stream_begin(r, 200, h, 1), BERTH_OK);
    berth_http_respond(r, 500, NULL, 0, "done", 4);
    assert_int_equal(berth_http_stream_end(r, NULL, 0), BERTH_E_IO);
    berth_http_req_unref(r);
    return;
  }
  if (pl == 11 && memcmp(p, "/streamhang", 11) == 0) {
    start_stream(r, true);
    return;
  }
  if (pl == 5 && memcmp(p, "/hang", 5) == 0) {
    berth_http_req_ref(r);
    berth_http_req_on_gone(r, on_hang_gone, NULL);
    atomic_fetch_add(&hang_seen, 1);
    return;
  }
  echo(r, "");
}

static void on_server_closed(void *arg) {
  (void)arg;
  atomic_fetch_add(&closed_cb, 1);
}

static void finish(void) {
  if (srv != NULL)
    berth_httpd_close(srv, on_server_closed, NULL);
  srv = NULL;
  if (!uv_is_closing((uv_handle_t *)&cmd_async))
    uv_close((uv_handle_t *)&cmd_async, NULL);
  if (!uv_is_closing((uv_handle_t *)&watchdog))
    uv_close((uv_handle_t *)&watchdog, NULL);
}

static void on_cmd(uv_async_t *a) {
  (void)a;
  int c = atomic_exchange(&cmd, CMD_NONE);
  if (c == CMD_STOP_ACCEPTING) {
    berth_httpd_stop_accepting(srv);
    uv_sem_post(&cmd_sem);
  } else if (c == CMD_DONE) {
    finish();
  }
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  atomic_store(&aborted, 1);
  finish();
}

/* ---- client side (thread) ---- */

static void client_fail(int line, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void client_fail(int line, const char *fmt, ...) {
  if (client_error[0] != '\0')
    return;
  int k = snprintf(client_error, sizeof client_error, "line %d: ", line);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(client_error + k, sizeof client_error - (size_t)k, fmt, ap);
  va_end(ap);
}

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      client_fail(__LINE__, __VA_ARGS__);                                      \
      return -1;                                                               \
    }                                                                          \
  } while (0)

typedef struct {
  int fd;
  char buf[65536];
  size_t len;
} conn;

typedef struct {
  int status;
  char head[4096];
  char body[4096];
  size_t body_len;
} response;

static int client_connect(conn *c) {
  c->len = 0;
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(c->fd >= 0, "socket: %s", strerror(errno));
  struct timeval tv = {.tv_sec = 3};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
    int e = errno;
    close(c->fd);
    c->fd = -1;
    errno = e;
    return -1;
  }
  return 0;
}

static int send_all(conn *c, const char *s, size_t n) {
  while (n > 0) {
    ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
    CHECK(k > 0, "send: %s", strerror(errno));
    s += k;
    n -= (size_t)k;
  }
  return 0;
}

static int send_str(conn *c, const char *s) {
  return send_all(c, s, strlen(s));
}

static int fill(conn *c) {
  CHECK(c->len < sizeof c->buf, "client buffer full");
  ssize_t k = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  CHECK(k > 0, "recv: %s", k == 0 ? "connection closed" : strerror(errno));
  c->len += (size_t)k;
  return 0;
}

/* Reads one response (Content-Length framed). */
static int read_response(conn *c, response *r) {
  char *end;
  while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
    if (fill(c) != 0)
      return -1;
  size_t head_len = (size_t)(end - c->buf) + 4;
  CHECK(head_len < sizeof r->head, "head too long");
  memcpy(r->head, c->buf, head_len);
  r->head[head_len] = '\0';
  CHECK(sscanf(r->head, "HTTP/1.1 %d ", &r->status) == 1, "bad status line: %s",
        r->head);
  size_t cl = 0;
  const char *h = strcasestr(r->head, "\r\nContent-Length: ");
  if (h != NULL)
    cl = strtoul(h + 18, NULL, 10);
  CHECK(cl < sizeof r->body, "body too long");
  while (c->len < head_len + cl)
    if (fill(c) != 0)
      return -1;
  memcpy(r->body, c->buf + head_len, cl);
  r->body[cl] = '\0';
  r->body_len = cl;
  memmove(c->buf, c->buf + head_len + cl, c->len - head_len - cl);
  c->len -= head_len + cl;
  return 0;
}

static int expect_eof(conn *c) {
  CHECK(c->len == 0, "unexpected bytes before EOF");
  char b[256];
  ssize_t k = recv(c->fd, b, sizeof b, 0);
  CHECK(k == 0, "expected EOF, got %zd (%s)", k,
        k < 0 ? strerror(errno) : "data");
  close(c->fd);
  c->fd = -1;
  return 0;
}

static int get_ok(conn *c, const char *req, const char *want_body) {
  response r;
  if (send_str(c, req) != 0 || read_response(c, &r) != 0)
    return -1;
  CHECK(r.status == 200, "status %d for %s", r.status, req);
  CHECK(strcmp(r.body, want_body) == 0, "body '%s', want '%s'", r.body,
        want_body);
  return 0;
}

static int test_h1_keepalive_pipelining(void) {
  conn c;
  CHECK(client_connect(&c) == 0, "connect: %s", strerror(errno));
  response r;
  CHECK(send_str(&c, "GET /a?x=1 HTTP/1.1\r\nHost: t\r\n\r\n") == 0, "send");
  if (read_response(&c, &r) != 0)
    return -1;
  CHECK(r.status == 200 && strcmp(r.body, "GET /a ") == 0, "got %d '%s'",
        r.status, r.body);
  CHECK(strstr(r.head, "\r\ncontent-type: text/plain\r\n") != NULL, "head: %s",
        r.head);
  CHECK(strstr(r.head, "\r\nx-version: 11\r\n") != NULL, "head: %s", r.head);
  CHECK(strstr(r.head, "\r\nx-query: x=1\r\n") != NULL, "head: %s", r.head);
  CHECK(strstr(r.head, "injected") == NULL, "header injection: %s", r.head);
  CHECK(strstr(r.head, "9999") == NULL, "handler Content-Length kept: %s",
        r.head);
  CHECK(strstr(r.head, "\r\nDate: ") != NULL, "no Date: %s", r.head);
  CHECK(strstr(r.head, "Connection") == NULL, "head: %s", r.head);
  /* keep-alive: the same connection again, with a body */
  if (get_ok(&c, "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz",
             "POST /b xyz") != 0)
    return -1;
  /* pipelining, one asynchronous in the middle: answers stay in order */
  CHECK(send_str(
            &c,
            "GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
            "POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            "POST /p3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            "2\r\nhi\r\n0\r\n\r\n") == 0,
        "send");
  const char *want[] = {"GET /p1 ", "slow:POST /slow abc", "POST /p3 hi"};
  for (int i = 0; i < 3; i++) {
    if (read_response(&c, &r) != 0)
      return -1;
    CHECK(r.status == 200 && strcmp(r.body, want[i]) == 0,
          "pipelined %d: %d '%s'", i, r.status, r.body);
  }
  /* HEAD: the length of what GET would send, no body */
  CHECK(send_str(&c, "HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n") == 0, "send");
  char *end;
  while ((end = memmem(c.buf, c.len, "\r\n\r\n", 4)) == NULL)
    if (fill(&c) != 0)
      return -1;
  CHECK(strstr(c.buf, "Content-Length: 8\r\n") != NULL, "HEAD: %.*s",
        (int)c.len, c.buf);
  size_t hl = (size_t)(end + 4 - c.buf);
  memmove(c.buf, c.buf + hl, c.len - hl);
  c.len -= hl;
  /* Connection: close is honoured */
  CHECK(send_str(
            &c, "GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n") ==
            0,
        "send");
  if (read_response(&c, &r) != 0)
    return -1;
  CHECK(strstr(r.head, "\r\nConnection: close\r\n") != NULL, "head: %s",
        r.head);
  return expect_eof(&c);
}

static int test_h1_http10(void) {
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  if (get_ok(&c, "GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
             "GET /k ") != 0)
    return -1;
  response r;
  CHECK(send_str(&c, "GET /old HTTP/1.0\r\n\r\n") == 0, "send");
  if (read_response(&c, &r) != 0)
    return -1;
  CHECK(r.status == 200 && strstr(r.head, "Connection: close") != NULL,
        "head: %s", r.head);
  return expect_eof(&c);
}

static int expect_error(const char *req, int status) {
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  response r;
  if (send_str(&c, req) != 0 || read_response(&c, &r) != 0)
    return -1;
  CHECK(r.status == status, "want %d, got %d for %.40s", status, r.status, req);
  CHECK(strstr(r.head, "Content-Type: application/json") != NULL, "head: %s",
        r.head);
  CHECK(strstr(r.head, "Connection: close") != NULL, "head: %s", r.head);
  CHECK(strncmp(r.body, "{\"error\": \"", 11) == 0, "body: %s", r.body);
  return expect_eof(&c);
}

static int test_h1_errors(void) {
  if (expect_error(
          "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n", 413))
    return -1;
  if (expect_error(
          "POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
          "500\r\n",
          413))
    return -1;
  char many[4096] = "GET / HTTP/1.1\r\nHost: t\r\n";
  for (int i = 0; i < 30; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), "X-%d: y\r\n", i);
  strcat(many, "\r\n");
  if (expect_error(many, 431))
    return -1;
  if (expect_error("GARBAGE\r\n\r\n", 400))
    return -1;
  if (expect_error(
          "GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501))
    return -1;
  /* 413 while the client keeps sending its body: the answer still arrives */
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  char body[1500];
  memset(body, 'b', sizeof body);
  response r;
  if (send_str(
          &c,
          "POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 1500\r\n\r\n") ||
      send_all(&c, body, sizeof body) || read_response(&c, &r))
    return -1;
  CHECK(r.status == 413, "status %d", r.status);
  close(c.fd);
  return 0;
}

static int test_h1_expect(void) {
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  CHECK(send_str(&c, "POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                     "Content-Length: 5\r\n\r\n") == 0,
        "send");
  response r;
  if (read_response(&c, &r) != 0)
    return -1;
  CHECK(r.status == 100, "want 100 Continue, got %d", r.status);
  if (send_str(&c, "hello") != 0 || read_response(&c, &r) != 0)
    return -1;
  CHECK(r.status == 200 && strcmp(r.body, "POST /e hello") == 0, "got '%s'",
        r.body);
  close(c.fd);
  return 0;
}

static int test_h1_gone(void) {
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  CHECK(send_str(&c, "GET /hang HTTP/1.1\r\nHost: t\r\n\r\n") == 0, "send");
  for (int i = 0; i < 200 && atomic_load(&hang_seen) == 0; i++)
    usleep(10000);
  CHECK(atomic_load(&hang_seen) == 1, "handler never saw /hang");
  close(c.fd);
  for (int i = 0; i < 200 && atomic_load(&gone_count) == 0; i++)
    usleep(10000);
  CHECK(atomic_load(&gone_count) == 1, "on_gone not called");
  return 0;
}

/* Reads until want (the whole streamed body) has arrived after the head;
 * checks the head for chunked framing (chunked) or none (HTTP/1.0). */
static int read_streamed(conn *c, bool chunked, const char *want) {
  char *end;
  while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
    if (fill(c) != 0)
      return -1;
  size_t head_len = (size_t)(end - c->buf) + 4;
  char head[1024];
  CHECK(head_len < sizeof head, "head too long");
  memcpy(head, c->buf, head_len);
  head[head_len] = '\0';
  CHECK(strstr(head, " 200 ") != NULL, "status: %s", head);
  CHECK(strcasestr(head, "content-length") == NULL, "length on a stream: %s",
        head);
  CHECK(strcasestr(head, "content-type: text/event-stream") != NULL,
        "no content type: %s", head);
  CHECK((strstr(head, "Transfer-Encoding: chunked\r\n") != NULL) == chunked,
        "framing: %s", head);
  size_t wl = strlen(want);
  while (c->len < head_len + wl)
    if (fill(c) != 0)
      return -1;
  CHECK(memcmp(c->buf + head_len, want, wl) == 0, "body '%.*s', want '%s'",
        (int)(c->len - head_len), c->buf + head_len, want);
  memmove(c->buf, c->buf + head_len + wl, c->len - head_len - wl);
  c->len -= head_len + wl;
  return 0;
}

static int test_h1_stream(void) {
  static const char chunks[] = "2\r\nc0\r\n2\r\nc1\r\n2\r\nc2\r\n0\r\n\r\n";
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  /* kept alive after the last chunk: the next request is answered */
  CHECK(send_str(&c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n") == 0, "send");
  if (read_streamed(&c, true, chunks) != 0)
    return -1;
  if (get_ok(&c, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n", "GET /a ") != 0)
    return -1;
  /* Connection: close: the connection ends after the last chunk */
  CHECK(send_str(&c, "GET /stream HTTP/1.1\r\nHost: t\r\n"
                     "Connection: close\r\n\r\n") == 0,
        "send");
  if (read_streamed(&c, true, chunks) != 0 || expect_eof(&c) != 0)
    return -1;
  /* HTTP/1.0: the bytes as they are, the close ends them */
  CHECK(client_connect(&c) == 0, "connect");
  CHECK(send_str(&c, "GET /stream HTTP/1.0\r\n\r\n") == 0, "send");
  if (read_streamed(&c, false, "c0c1c2") != 0 || expect_eof(&c) != 0)
    return -1;
  CHECK(client_connect(&c) == 0, "connect");
  CHECK(send_str(&c, "GET /streamrespond HTTP/1.1\r\nHost: t\r\n\r\n") == 0,
        "send");
  if (read_streamed(&c, true, "4\r\ndone\r\n0\r\n\r\n") != 0 ||
      get_ok(&c, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n", "GET /b ") != 0)
    return -1;
  close(c.fd);
  /* a client leaving mid-stream: the handler learns it */
  CHECK(client_connect(&c) == 0, "connect");
  CHECK(send_str(&c, "GET /streamhang HTTP/1.1\r\nHost: t\r\n\r\n") == 0,
        "send");
  if (read_streamed(&c, true, "2\r\nc0\r\n") != 0)
    return -1;
  close(c.fd);
  for (int i = 0; i < 300 && atomic_load(&stream_gone) == 0; i++)
    usleep(10000);
  CHECK(atomic_load(&stream_gone) == 1, "on_gone not called mid-stream");
  return 0;
}

/* ---- HTTP/2 client ---- */

#define H2_STREAMS 40

typedef struct {
  int32_t id;
  int status;
  char body[256];
  size_t body_len;
  bool closed;
  int order;
  const char *upload;
  size_t upload_len, upload_off;
} h2_req;

typedef struct {
  conn *c;
  h2_req reqs[H2_STREAMS + 3];
  int n, open, closed_seq;
  bool failed;
} h2_client;

static h2_req *h2_find(h2_client *hc, int32_t id) {
  for (int i = 0; i < hc->n; i++)
    if (hc->reqs[i].id == id)
      return &hc->reqs[i];
  return NULL;
}

static ssize_t h2c_send(nghttp2_session *s, const uint8_t *data, size_t len,
                        int flags, void *ud) {
  (void)s;
  (void)flags;
  h2_client *hc = ud;
  if (send_all(hc->c, (const char *)data, len) != 0) {
    hc->failed = true;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return (ssize_t)len;
}

static int h2c_header(nghttp2_session *s, const nghttp2_frame *f,
                      const uint8_t *name, size_t nl, const uint8_t *value,
                      size_t vl, uint8_t flags, void *ud) {
  (void)s;
  (void)flags;
  h2_req *r = h2_find(ud, f->hd.stream_id);
  if (r != NULL && nl == 7 && memcmp(name, ":status", 7) == 0)
    r->status = atoi((const char *)value);
  (void)vl;
  return 0;
}

static int h2c_data(nghttp2_session *s, uint8_t flags, int32_t id,
                    const uint8_t *data, size_t len, void *ud) {
  (void)s;
  (void)flags;
  h2_req *r = h2_find(ud, id);
  if (r != NULL && r->body_len + len < sizeof r->body) {
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
  }
  return 0;
}

static int h2c_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud) {
  (void)s;
  (void)err;
  h2_client *hc = ud;
  h2_req *r = h2_find(hc, id);
  if (r != NULL && !r->closed) {
    r->closed = true;
    r->order = hc->closed_seq++;
    hc->open--;
  }
  return 0;
}

static ssize_t h2c_upload(nghttp2_session *s, int32_t id, uint8_t *buf,
                          size_t len, uint32_t *flags, nghttp2_data_source *src,
                          void *ud) {
  (void)s;
  (void)id;
  (void)ud;
  h2_req *r = src->ptr;
  size_t n = r->upload_len - r->upload_off;
  if (n > len)
    n = len;
  memcpy(buf, r->upload + r->upload_off, n);
  r->upload_off += n;
  if (r->upload_off == r->upload_len)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static h2_req *h2_submit(nghttp2_session *s, h2_client *hc, const char *method,
                         const char *path, const char *upload,
                         size_t upload_len) {
  h2_req *r = &hc->reqs[hc->n];
  memset(r, 0, sizeof *r);
  r->upload = upload;
  r->upload_len = upload_len;
  nghttp2_nv nva[] = {
      {(uint8_t *)":method", (uint8_t *)(uintptr_t)method, 7, strlen(method),
       0},
      {(uint8_t *)":path", (uint8_t *)(uintptr_t)path, 5, strlen(path), 0},
      {(uint8_t *)":scheme", (uint8_t *)"http", 7, 4, 0},
      {(uint8_t *)":authority", (uint8_t *)"t", 10, 1, 0},
  };
  nghttp2_data_provider prd = {.source.ptr = r, .read_callback = h2c_upload};
  r->id =
      nghttp2_submit_request(s, NULL, nva, 4, upload != NULL ? &prd : NULL, r);
  if (r->id < 0)
    return NULL;
  hc->n++;
  hc->open++;
  return r;
}

static int test_h2(void) {
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  h2_client hc;
  memset(&hc, 0, sizeof hc);
  hc.c = &c;
  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_send_callback(cbs, h2c_send);
  nghttp2_session_callbacks_set_on_header_callback(cbs, h2c_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2c_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2c_close);
  nghttp2_session *s;
  CHECK(nghttp2_session_client_new(&s, cbs, &hc) == 0, "client session");
  nghttp2_session_callbacks_del(cbs);
  nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0);
  static char big[MAX_BODY + 500];
  memset(big, 'z', sizeof big);
  h2_req *slow = h2_submit(s, &hc, "POST", "/slow", "h2body", 6);
  h2_req *fast = h2_submit(s, &hc, "GET", "/fast?q=1", NULL, 0);
  h2_req *toobig = h2_submit(s, &hc, "POST", "/big", big, sizeof big);
  for (int i = 0; i < H2_STREAMS; i++)
    h2_submit(s, &hc, "GET", "/many", NULL, 0);
  int rc = -1;
  if (slow == NULL || fast == NULL || toobig == NULL) {
    CHECK(0, "submit");
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (hc.open > 0) {
    if (nghttp2_session_send(s) != 0 || hc.failed)
      break;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (t1.tv_sec - t0.tv_sec > 5)
      break;
    if (hc.open == 0)
      break;
    if (fill(&c) != 0)
      break;
    ssize_t n = nghttp2_session_mem_recv(s, (const uint8_t *)c.buf, c.len);
    c.len = 0;
    if (n < 0)
      break;
  }
  if (hc.open != 0) {
    CHECK(0, "HTTP/2: %d streams unanswered", hc.open);
  }
  slow->body[slow->body_len] = '\0';
  fast->body[fast->body_len] = '\0';
  if (slow->status != 200 ||
      strcmp(slow->body, "slow:POST /slow h2body") != 0) {
    CHECK(0, "h2 slow: %d '%s'", slow->status, slow->body);
  }
  if (fast->status != 200 || strcmp(fast->body, "GET /fast ") != 0) {
    CHECK(0, "h2 fast: %d '%s'", fast->status, fast->body);
  }
  if (!(fast->order < slow->order)) {
    CHECK(0, "h2 answers not out of order");
  }
  if (toobig->status != 413) {
    CHECK(0, "h2 too big: %d", toobig->status);
  }
  for (int i = 3; i < hc.n; i++) {
    hc.reqs[i].body[hc.reqs[i].body_len] = '\0';
    if (hc.reqs[i].status != 200 ||
        strcmp(hc.reqs[i].body, "GET /many ") != 0) {
      CHECK(0, "h2 stream %d: %d", hc.reqs[i].id, hc.reqs[i].status);
    }
  }
  rc = 0;
  nghttp2_session_del(s);
  close(c.fd);
  return rc;
}

static int send_cmd(int which) {
  CHECK(!atomic_load(&aborted), "watchdog fired");
  atomic_store(&cmd, which);
  uv_async_send(&cmd_async);
  return 0;
}

/* Reads HTTP/2 frames until EOF; *goaway tells whether a GOAWAY came. */
static int h2_read_until_eof(conn *c, bool *goaway) {
  for (;;) {
    while (c->len >= 9) {
      size_t flen = ((size_t)(unsigned char)c->buf[0] << 16) |
                    ((size_t)(unsigned char)c->buf[1] << 8) |
                    (unsigned char)c->buf[2];
      if (c->len < 9 + flen)
        break;
      if (c->buf[3] == 0x07)
        *goaway = true;
      memmove(c->buf, c->buf + 9 + flen, c->len - 9 - flen);
      c->len -= 9 + flen;
    }
    ssize_t k = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (k == 0)
      break;
    CHECK(k > 0, "recv: %s", strerror(errno));
    c->len += (size_t)k;
  }
  close(c->fd);
  return 0;
}

static int test_stop_accepting(void) {
  /* an idle HTTP/2 connection, open before the stop */
  conn h2;
  CHECK(client_connect(&h2) == 0, "connect");
  static const char settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
  if (send_str(&h2, BERTH_TEST_PREFACE) != 0 || send_all(&h2, settings, 9) != 0)
    return -1;
  conn c;
  CHECK(client_connect(&c) == 0, "connect");
  if (get_ok(&c, "GET /before HTTP/1.1\r\nHost: t\r\n\r\n", "GET /before ") !=
      0)
    return -1;
  if (send_cmd(CMD_STOP_ACCEPTING) != 0)
    return -1;
  uv_sem_wait(&cmd_sem);
  /* the open connection still works, its answer closes it */
  response r;
  CHECK(send_str(&c, "GET /after HTTP/1.1\r\nHost: t\r\n\r\n") == 0, "send");
  if (read_response(&c, &r) != 0)
    return -1;
  CHECK(r.status == 200 && strstr(r.head, "Connection: close") != NULL,
        "head %s", r.head);
  if (expect_eof(&c) != 0)
    return -1;
  conn d;
  CHECK(client_connect(&d) != 0, "connected after stop_accepting");
  bool goaway = false;
  if (h2_read_until_eof(&h2, &goaway) != 0)
    return -1;
  CHECK(goaway, "no GOAWAY on the HTTP/2 connection");
  return 0;
}

static void *client_main(void *arg) {
  (void)arg;
  int rc = test_h1_keepalive_pipelining();
  if (rc == 0)
    rc = test_h1_http10();
  if (rc == 0)
    rc = test_h1_errors();
  if (rc == 0)
    rc = test_h1_expect();
  if (rc == 0)
    rc = test_h2();
  if (rc == 0)
    rc = test_h1_gone();
  if (rc == 0)
    rc = test_h1_stream();
  if (rc == 0)
    rc = test_stop_accepting();
  if (!atomic_load(&aborted)) {
    atomic_store(&cmd, CMD_DONE);
    uv_async_send(&cmd_async);
  }
  return NULL;
}

/* Runs every client scenario against a server on n network loops
 * (httpd.h: the handler stays on this loop, the sockets move to the loops'
 * threads) and the given write path (server.write_path); false when that
 * path cannot start here. */
static bool run_transport(unsigned n, int write_path) {
  atomic_store(&cmd, CMD_NONE);
  atomic_store(&aborted, 0);
  atomic_store(&hang_seen, 0);
  atomic_store(&gone_count, 0);
  atomic_store(&closed_cb, 0);
  atomic_store(&stream_gone, 0);
  client_error[0] = '\0';
  berth_httpd_set_network_loops(n);
  assert_int_equal(uv_loop_init(&loop), 0);
  berth_httpd_options o = {.host = "127.0.0.1",
                           .write_path = write_path,
                           .port = 0,
                           .max_body_bytes = MAX_BODY,
                           .max_head_bytes = 4096,
                           .max_headers = 20,
                           .idle_timeout_ms = 5000,
                           .handler = handler};
  berth_errmsg err = {{0}};
  int rc = berth_httpd_start(&loop, &o, &srv, &err);
  if (rc == BERTH_E_CONFIG && write_path == 2) { /* no io_uring here */
    berth_httpd_set_network_loops(1);
    assert_int_equal(uv_loop_close(&loop), 0);
    return false;
  }
  assert_int_equal(rc, BERTH_OK);
  port = berth_httpd_port(srv);
  assert_true(port != 0);

  /* the same port again: a clear error naming the address */
  berth_httpd *dup = NULL;
  o.port = port;
  assert_int_equal(berth_httpd_start(&loop, &o, &dup, &err), BERTH_E_IO);
  assert_null(dup);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%u: address already in use",
           (unsigned)port);
  assert_string_equal(err.msg, want);
  o.host = "localhost";
  assert_int_equal(berth_httpd_start(&loop, &o, &dup, &err), BERTH_E_CONFIG);

  uv_async_init(&loop, &cmd_async, on_cmd);
  uv_timer_init(&loop, &watchdog);
  uv_timer_start(&watchdog, on_watchdog, 9000, 0);
  uv_sem_init(&cmd_sem, 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, client_main, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  if (client_error[0] != '\0')
    fail_msg("%s", client_error);
  assert_false(atomic_load(&aborted));
  assert_int_equal(atomic_load(&closed_cb), 1);
  assert_int_equal(atomic_load(&gone_count), 1);
  assert_int_equal(uv_loop_close(&loop), 0);
  uv_sem_destroy(&cmd_sem);
  berth_httpd_set_network_loops(1);
  return true;
}

static void test_transport_direct(void **state) {
  (void)state;
  assert_true(run_transport(1, 0));
}

static void test_transport_writev(void **state) {
  (void)state;
  assert_true(run_transport(1, 1));
}

static void test_transport_uring(void **state) {
  (void)state;
  if (!run_transport(1, 2))
    skip();
}

static void test_transport_network_loops(void **state) {
  (void)state;
  assert_true(run_transport(2, 0));
  assert_true(run_transport(3, 1));
  if (!run_transport(2, 2))
    skip();
}

/* Notes: set, read, replaced, cut, unset; many long ones leave the
 * request's own block for the heap, and every pointer handed out stays
 * valid until the request goes (ASan checks the frees). */
static void test_request_notes(void **state) {
  (void)state;
  berth_h1_header host = {"host", 4, "a", 1};
  berth_httpd_req_init in = {.version = 11,
                             .method = "GET",
                             .method_len = 3,
                             .target = "/x?y",
                             .target_len = 4,
                             .fields = &host,
                             .n_fields = 1,
                             .peer = "t"};
  berth_http_req *r = berth_httpd_req_new(&in);
  assert_non_null(r);
  assert_null(berth_http_req_note(r, BERTH_HTTP_NOTE_REQUEST_ID));
  berth_http_req_set_note(r, BERTH_HTTP_NOTE_REQUEST_ID, "abc", 3);
  berth_http_req_set_note(r, BERTH_HTTP_NOTE_MODEL, "iris", 4);
  const char *first = berth_http_req_note(r, BERTH_HTTP_NOTE_REQUEST_ID);
  assert_string_equal(first, "abc");
  assert_string_equal(berth_http_req_note(r, BERTH_HTTP_NOTE_MODEL), "iris");
  berth_http_req_set_note(r, BERTH_HTTP_NOTE_REQUEST_ID, "de\0f", 4);
  assert_string_equal(berth_http_req_note(r, BERTH_HTTP_NOTE_REQUEST_ID), "de");
  assert_string_equal(first, "abc"); /* the old text is still there */
  char big[600];
  memset(big, 'v', sizeof big);
  for (int i = 0; i < 4; i++) /* past the inline room: on the heap */
    berth_http_req_set_note(r, BERTH_HTTP_NOTE_VERSION, big, sizeof big);
  const char *v = berth_http_req_note(r, BERTH_HTTP_NOTE_VERSION);
  assert_int_equal(strlen(v), BERTH_HTTP_NOTE_MAX); /* cut */
  assert_string_equal(berth_http_req_note(r, BERTH_HTTP_NOTE_MODEL), "iris");
  berth_http_req_set_note(r, BERTH_HTTP_NOTE_MODEL, "", 0); /* unset */
  assert_null(berth_http_req_note(r, BERTH_HTTP_NOTE_MODEL));
  berth_http_req_set_note(r, BERTH_HTTP_NOTE_COUNT, "x", 1); /* ignored */
  assert_null(berth_http_req_note(r, BERTH_HTTP_NOTE_COUNT));
  assert_int_equal(r->path_len, 2); /* "/x", then the query */
  berth_httpd_req_release(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request_notes),
      cmocka_unit_test(test_transport_direct),
      cmocka_unit_test(test_transport_writev),
      cmocka_unit_test(test_transport_uring),
      cmocka_unit_test(test_transport_network_loops),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
