/* Tests for a connection's deadlines (server.c: the idle timeout and the
 * request head's deadline, kept on one lazily armed timer): a real
 * berth_httpd on 127.0.0.1, port 0, short timeouts, blocking client sockets
 * on a client thread. The timeouts are short (idle 3 s, head 150 ms) and
 * the waits long (sockets time out after 6 s): each check asks that
 * something happens at all, or that it has not happened at a point well
 * before its deadline, never how fast. The loop runs on the test's thread;
 * a watchdog ends it after 20 s. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

#include "httpd.h"

#define IDLE_MS 3000
#define HEAD_MS 150
#define REQ "GET /x HTTP/1.1\r\nHost: t\r\n\r\n"

static uv_loop_t loop;
static berth_httpd *srv;
static uint16_t port;
static uv_async_t done_async;
static uv_timer_t watchdog;
static atomic_int aborted;
static char client_error[512];

static void handler(berth_http_req *r, void *data) {
  (void)data;
  berth_http_header_kv h[] = {{"content-type", "text/plain"}};
  berth_http_respond(r, 200, h, 1, "ok", 2);
}

static void finish(void) {
  if (srv != NULL)
    berth_httpd_close(srv, NULL, NULL);
  srv = NULL;
  if (!uv_is_closing((uv_handle_t *)&done_async))
    uv_close((uv_handle_t *)&done_async, NULL);
  if (!uv_is_closing((uv_handle_t *)&watchdog))
    uv_close((uv_handle_t *)&watchdog, NULL);
}

static void on_done(uv_async_t *a) {
  (void)a;
  finish();
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  atomic_store(&aborted, 1);
  finish();
}

/* ---- client side (its own thread; records its first failure) ---- */

static void client_fail(const char *what) {
  if (client_error[0] == '\0')
    snprintf(client_error, sizeof client_error, "%s (errno %d)", what, errno);
}

static int dial(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct timeval tv = {.tv_sec = 6};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static bool send_all(int fd, const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
    if (w <= 0)
      return false;
    s += w;
    n -= (size_t)w;
  }
  return true;
}

/* Reads one answer (head and its 2-byte or short body) into buf; the
 * status code, or -1 on EOF, error or timeout before a whole head. */
static int read_answer(int fd, char *buf, size_t cap) {
  size_t len = 0;
  while (len + 1 < cap) {
    ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
    if (r <= 0)
      return -1;
    len += (size_t)r;
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    const char *cl = strstr(buf, "Content-Length: ");
    if (end != NULL && cl != NULL &&
        len >= (size_t)(end + 4 - buf) + (size_t)atoi(cl + 16))
      break;
  }
  int status = 0;
  return sscanf(buf, "HTTP/1.1 %d", &status) == 1 ? status : -1;
}

/* True when the server closed fd (EOF) within the socket timeout. */
static bool closed_by_server(int fd) {
  char b[512];
  for (;;) {
    ssize_t r = recv(fd, b, sizeof b, 0);
    if (r == 0)
      return true;
    if (r < 0)
      return errno == ECONNRESET;
  }
}

/* True when nothing arrived and fd is still open after ms. */
static bool still_open_after(int fd, int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  fd_set set;
  FD_ZERO(&set);
  FD_SET(fd, &set);
  return select(fd + 1, &set, NULL, NULL, &tv) == 0;
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void *client_idle(void *arg) {
  (void)arg;
  char buf[1024];

  /* 1. A keep-alive connection that goes quiet is closed by the idle
   * timeout; it is not cut at the head deadline, which only a head in
   * progress has (the timer fires then, finds no head, and waits on). */
  int fd = dial();
  if (fd < 0 || !send_all(fd, REQ) || read_answer(fd, buf, sizeof buf) != 200)
    client_fail("1: the first request was not answered 200");
  else if (!still_open_after(fd, 4 * HEAD_MS))
    client_fail(
        "1: an idle keep-alive connection was closed at the head deadline");
  else if (!closed_by_server(fd))
    client_fail("1: the idle timeout did not close the connection");
  if (fd >= 0)
    close(fd);

  /* 2. Requests that come slower than the head deadline but faster than
   * the idle timeout are each answered on one connection. */
  fd = dial();
  for (int i = 0; fd >= 0 && i < 3 && client_error[0] == '\0'; i++) {
    if (!send_all(fd, REQ) || read_answer(fd, buf, sizeof buf) != 200)
      client_fail("2: a request after a pause was not answered 200");
    sleep_ms(3 * HEAD_MS);
  }
  if (fd < 0)
    client_fail("2: connect");
  else
    close(fd);
  uv_async_send(&done_async);
  return NULL;
}

/* Runs with an idle timeout longer than the sockets' 6 s: a 408 read here
 * can only come from the head deadline. */
static void *client_head(void *arg) {
  (void)arg;
  char buf[1024];
  int fd;

  /* 3. A head that starts a while after an answer (the timer armed for
   * the first request already, its head deadline passed) and never ends
   * gets 408 and the connection closes. */
  fd = dial();
  if (fd < 0 || !send_all(fd, REQ) || read_answer(fd, buf, sizeof buf) != 200)
    client_fail("3: the first request was not answered 200");
  else if (sleep_ms(3 * HEAD_MS), !send_all(fd, "GET /slow HTTP/1.1\r\nHost:"))
    client_fail("3: send the partial head");
  else if (read_answer(fd, buf, sizeof buf) != 408)
    client_fail("3: a head that never ends did not get 408");
  else if (!closed_by_server(fd))
    client_fail("3: the connection stayed open after the 408");
  if (fd >= 0)
    close(fd);

  /* 4. Bytes that keep coming do not restart the head deadline: a head
   * trickled a byte at a time still gets 408. */
  fd = dial();
  if (fd < 0 || !send_all(fd, "GET /slow HTTP/1.1\r\nX-Slow: "))
    client_fail("4: connect and send the head's start");
  int status = 0;
  for (int i = 0; fd >= 0 && i < 40 && status == 0; i++) {
    if (!send_all(fd, "a"))
      break; /* closed: the 408 is read below */
    if (!still_open_after(fd, HEAD_MS / 3))
      status = read_answer(fd, buf, sizeof buf);
  }
  if (fd >= 0 && status == 0)
    status = read_answer(fd, buf, sizeof buf);
  if (fd >= 0 && status != 408)
    client_fail("4: a trickled head did not get 408");
  if (fd >= 0)
    close(fd);

  uv_async_send(&done_async);
  return NULL;
}

static void run(uint32_t idle_ms, void *(*client)(void *)) {
  atomic_store(&aborted, 0);
  client_error[0] = '\0';
  assert_int_equal(uv_loop_init(&loop), 0);
  berth_httpd_options o = {.host = "127.0.0.1",
                           .port = 0,
                           .max_body_bytes = 1024,
                           .max_head_bytes = 4096,
                           .max_headers = 20,
                           .idle_timeout_ms = idle_ms,
                           .header_timeout_ms = HEAD_MS,
                           .handler = handler};
  berth_errmsg err = {{0}};
  assert_int_equal(berth_httpd_start(&loop, &o, &srv, &err), BERTH_OK);
  port = berth_httpd_port(srv);
  uv_async_init(&loop, &done_async, on_done);
  uv_timer_init(&loop, &watchdog);
  uv_timer_start(&watchdog, on_watchdog, 20000, 0);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, client, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  if (client_error[0] != '\0')
    fail_msg("%s", client_error);
  assert_false(atomic_load(&aborted));
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_idle_timeout(void **state) {
  (void)state;
  run(IDLE_MS, client_idle);
}

static void test_head_deadline(void **state) {
  (void)state;
  run(60000, client_head);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idle_timeout),
      cmocka_unit_test(test_head_deadline),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
