/* Unit tests for the HTTP/1.1 request parser (http1.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http1.h"

static const berth_h1_limits lim = {
    .max_head_bytes = 1024, .max_headers = 8, .max_body_bytes = 64};

/* What one parse of a whole input produced. */
typedef struct {
  int rc;          /* last return: BERTH_H1_DONE or a negative status */
  int http_status; /* on error */
  size_t consumed; /* bytes of input used */
  int head_done;   /* HEAD_DONE events seen */
  char method[16];
  char target[128];
  int minor;
  char body[128];
  size_t body_len;
  size_t n_headers;
  bool keep_alive;
  bool expect_continue;
  char err[BERTH_ERRMSG_SIZE];
} result;

/* Feeds s in pieces of `step` bytes (0 = all at once) until DONE or error. */
static result parse_steps(berth_h1_parser *p, const char *s, size_t len,
                          size_t step) {
  result r;
  memset(&r, 0, sizeof r);
  r.rc = BERTH_H1_NEED_MORE;
  size_t off = 0;
  while (off <= len) {
    size_t n = step == 0 ? len - off : (len - off < step ? len - off : step);
    size_t used = 0;
    berth_errmsg err = {{0}};
    int rc = berth_h1_parse(p, s + off, n, &used, &r.http_status, &err);
    assert_true(used <= n);
    off += used;
    if (rc < 0) {
      r.rc = rc;
      snprintf(r.err, sizeof r.err, "%s", err.msg);
      break;
    }
    if (rc == BERTH_H1_HEAD_DONE) {
      r.head_done++;
      continue;
    }
    if (rc == BERTH_H1_DONE) {
      r.rc = rc;
      const berth_h1_request *q = berth_h1_parser_request(p);
      snprintf(r.method, sizeof r.method, "%.*s", (int)q->method_len,
               q->method);
      snprintf(r.target, sizeof r.target, "%.*s", (int)q->target_len,
               q->target);
      r.minor = q->version_minor;
      assert_true(q->body_len < sizeof r.body);
      memcpy(r.body, q->body, q->body_len);
      r.body_len = q->body_len;
      r.n_headers = q->n_headers;
      r.keep_alive = q->keep_alive;
      r.expect_continue = q->expect_continue;
      break;
    }
    assert_int_equal(rc, BERTH_H1_NEED_MORE);
    assert_int_equal(used, n); /* NEED_MORE takes everything */
    if (off == len)
      break;
  }
  r.consumed = off;
  return r;
}

static result parse_str(const char *s) {
  berth_h1_parser *p = berth_h1_parser_new(&lim);
  assert_non_null(p);
  result r = parse_steps(p, s, strlen(s), 0);
  berth_h1_parser_free(p);
  return r;
}

static void expect_status(const char *s, int status) {
  result r = parse_str(s);
  if (r.rc >= 0)
    fail_msg("expected %d, parsed fine: %s", status, s);
  if (r.http_status != status)
    fail_msg("expected %d, got %d (%s): %s", status, r.http_status, r.err, s);
}

static void test_simple_get(void **state) {
  (void)state;
  const char *s =
      "GET /v2/health/live?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
  result r = parse_str(s);
  assert_int_equal(r.rc, BERTH_H1_DONE);
  assert_string_equal(r.method, "GET");
  assert_string_equal(r.target, "/v2/health/live?x=1");
  assert_int_equal(r.minor, 1);
  assert_int_equal(r.n_headers, 2);
  assert_int_equal(r.body_len, 0);
  assert_true(r.keep_alive);
  assert_false(r.expect_continue);
  assert_int_equal(r.head_done, 0);
  assert_int_equal(r.consumed, strlen(s));
}

static void test_headers_trimmed(void **state) {
  (void)state;
  berth_h1_parser *p = berth_h1_parser_new(&lim);
  const char *s = "GET / HTTP/1.1\r\nHost:a\r\nX-Thing: \t spaced  value \t\r\n"
                  "Empty:\r\n\r\n";
  result r = parse_steps(p, s, strlen(s), 0);
  assert_int_equal(r.rc, BERTH_H1_DONE);
  const berth_h1_request *q = berth_h1_parser_request(p);
  const berth_h1_header *h = berth_h1_find_header(q, "x-THING");
  assert_non_null(h);
  assert_int_equal(h->value_len, strlen("spaced  value"));
  assert_memory_equal(h->value, "spaced  value", h->value_len);
  h = berth_h1_find_header(q, "host");
  assert_non_null(h);
  assert_int_equal(h->value_len, 1);
  h = berth_h1_find_header(q, "empty");
  assert_non_null(h);
  assert_int_equal(h->value_len, 0);
  assert_null(berth_h1_find_header(q, "missing"));
  assert_null(berth_h1_find_header(q, "host2"));
  berth_h1_parser_free(p);
}

static void test_post_body(void **state) {
  (void)state;
  const char *s =
      "POST /infer HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
  result r = parse_str(s);
  assert_int_equal(r.rc, BERTH_H1_DONE);
  assert_int_equal(r.head_done, 1);
  assert_int_equal(r.body_len, 11);
  assert_memory_equal(r.body, "hello world", 11);
  assert_int_equal(r.consumed, strlen(s));
}

static const char *split_inputs[] = {
    "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabcde",
    "POST /a HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n3\nabc\n2;x=y\nde\n0\n\n",
    ("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     "3;ext=1;q=\"a b\"\r\nabc\r\n2 ; e\r\nde\r\n0\r\nTrailer-A: 1\r\nB: 2\r\n\r\n"),
    "\r\n\r\nGET /x HTTP/1.0\r\n\r\n",
};

static void test_split_every_boundary(void **state) {
  (void)state;
  for (size_t k = 0; k < sizeof split_inputs / sizeof split_inputs[0]; k++) {
    const char *s = split_inputs[k];
    size_t len = strlen(s);
    berth_h1_parser *p = berth_h1_parser_new(&lim);
    result whole = parse_steps(p, s, len, 0);
    berth_h1_parser_free(p);
    assert_int_equal(whole.rc, BERTH_H1_DONE);
    assert_int_equal(whole.consumed, len);
    /* byte by byte */
    p = berth_h1_parser_new(&lim);
    result one = parse_steps(p, s, len, 1);
    berth_h1_parser_free(p);
    assert_int_equal(one.rc, BERTH_H1_DONE);
    assert_int_equal(one.body_len, whole.body_len);
    assert_memory_equal(one.body, whole.body, whole.body_len);
    /* every two-piece split */
    for (size_t cut = 0; cut <= len; cut++) {
      p = berth_h1_parser_new(&lim);
      size_t used = 0, off = 0;
      int st = 0, rc;
      do {
        rc = berth_h1_parse(p, s + off, cut - off, &used, &st, NULL);
        off += used;
      } while (rc == BERTH_H1_HEAD_DONE);
      if (rc != BERTH_H1_DONE) {
        assert_int_equal(rc, BERTH_H1_NEED_MORE);
        assert_int_equal(off, cut);
        do {
          rc = berth_h1_parse(p, s + off, len - off, &used, &st, NULL);
          off += used;
        } while (rc == BERTH_H1_HEAD_DONE);
      }
      assert_int_equal(rc, BERTH_H1_DONE);
      assert_int_equal(off, len);
      const berth_h1_request *q = berth_h1_parser_request(p);
      assert_int_equal(q->body_len, whole.body_len);
      assert_memory_equal(q->body, whole.body, whole.body_len);
      berth_h1_parser_free(p);
    }
  }
}

static void test_pipelining(void **state) {
  (void)state;
  const char *s =
      "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
      "POST /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\nq\r\n0\r\n\r\n"
      "GET /4 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
  const char *targets[] = {"/1", "/2", "/3", "/4"};
  const char *bodies[] = {"", "xyz", "q", ""};
  for (size_t step = 0; step <= 7; step += 7) {
    berth_h1_parser *p = berth_h1_parser_new(&lim);
    size_t off = 0, len = strlen(s);
    for (int i = 0; i < 4; i++) {
      result r = parse_steps(p, s + off, len - off, step);
      assert_int_equal(r.rc, BERTH_H1_DONE);
      assert_string_equal(r.target, targets[i]);
      assert_int_equal(r.body_len, strlen(bodies[i]));
      assert_memory_equal(r.body, bodies[i], r.body_len);
      assert_true(r.keep_alive == (i != 3));
      off += r.consumed;
      /* DONE is sticky until next */
      size_t used = 99;
      assert_int_equal(berth_h1_parse(p, s + off, len - off, &used, NULL, NULL),
                       BERTH_H1_DONE);
      assert_int_equal(used, 0);
      berth_h1_parser_next(p);
    }
    assert_int_equal(off, len);
    berth_h1_parser_free(p);
  }
}

static void test_take_body(void **state) {
  (void)state;
  berth_h1_parser *p = berth_h1_parser_new(&lim);
  const char *s = "PUT /t HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
                  "GET /n HTTP/1.1\r\nHost: h\r\n\r\n";
  result r = parse_steps(p, s, strlen(s), 0);
  assert_int_equal(r.rc, BERTH_H1_DONE);
  size_t n = 0;
  char *b = berth_h1_parser_take_body(p, &n);
  assert_non_null(b);
  assert_int_equal(n, 4);
  assert_memory_equal(b, "body", 4);
  assert_int_equal(berth_h1_parser_request(p)->body_len, 0);
  assert_null(berth_h1_parser_take_body(p, &n));
  berth_h1_parser_next(p);
  result r2 = parse_steps(p, s + r.consumed, strlen(s) - r.consumed, 0);
  assert_int_equal(r2.rc, BERTH_H1_DONE);
  assert_string_equal(r2.target, "/n");
  free(b);
  berth_h1_parser_free(p);
}

static void test_chunked(void **state) {
  (void)state;
  result r = parse_str(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
      "A\r\n0123456789\r\n00000001;a=\"x;y\"\r\n!\r\n0;last\r\n"
      "X-Checksum: abc\r\n\r\n");
  assert_int_equal(r.rc, BERTH_H1_DONE);
  assert_int_equal(r.body_len, 11);
  assert_memory_equal(r.body, "0123456789!", 11);
  assert_int_equal(r.head_done, 1);
  /* chunked split across header lines */
  r = parse_str("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n"
                "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  assert_int_equal(r.rc, BERTH_H1_DONE);
  assert_int_equal(r.body_len, 0);
  /* malformations */
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "x\r\n\r\n",
      400);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      ";a\r\n\r\n",
      400);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabcX\r\n0\r\n\r\n",
      400);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\rabc\r\n0\r\n\r\n",
      400);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3 x\r\nabc\r\n0\r\n\r\n",
      400);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1;\x01\r\na\r\n0\r\n\r\n",
      400);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n folded: x\r\n\r\n",
      400);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\nA: b\rc\r\n\r\n",
      400);
}

static void test_transfer_encoding(void **state) {
  (void)state;
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
                501);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      501);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                "Transfer-Encoding: chunked\r\n\r\n",
                501);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n",
                400);
  /* CL + TE in either order */
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                "Content-Length: 3\r\n\r\n",
                400);
  /* TE in HTTP/1.0 */
  expect_status(
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

static void test_content_length(void **state) {
  (void)state;
  /* identical duplicates are accepted (RFC 9110 8.6) */
  result r = parse_str("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                       "Content-Length: 2, 2\r\n\r\nok");
  assert_int_equal(r.rc, BERTH_H1_DONE);
  assert_memory_equal(r.body, "ok", 2);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                "Content-Length: 3\r\n\r\nabc",
                400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 3\r\n\r\nabc",
                400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
                400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\na",
                400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n",
                400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n",
                400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ,\r\n\r\n", 400);
  /* zero-length body: DONE straight after the head */
  r = parse_str("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(r.rc, BERTH_H1_DONE);
  assert_int_equal(r.head_done, 0);
}

static void test_limits(void **state) {
  (void)state;
  /* body: from Content-Length, before any body byte */
  berth_h1_parser *p = berth_h1_parser_new(&lim);
  const char *s = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n";
  size_t used = 0;
  int st = 0;
  berth_errmsg err;
  assert_int_equal(berth_h1_parse(p, s, strlen(s), &used, &st, &err),
                   BERTH_E_TOO_LARGE);
  assert_int_equal(st, 413);
  /* sticky */
  st = 0;
  assert_int_equal(berth_h1_parse(p, "x", 1, &used, &st, &err),
                   BERTH_E_TOO_LARGE);
  assert_int_equal(st, 413);
  berth_h1_parser_free(p);
  expect_status("POST / HTTP/1.1\r\nHost: h\r\n"
                "Content-Length: 99999999999999999999999999\r\n\r\n",
                413);
  /* exactly the maximum is fine */
  char big[512];
  snprintf(big, sizeof big,
           "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 64\r\n\r\n%64s", "x");
  assert_int_equal(parse_str(big).rc, BERTH_H1_DONE);
  /* chunked: while de-chunking, in one chunk or across several */
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
      413);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "20\r\n01234567890123456789012345678901\r\n"
      "20\r\n01234567890123456789012345678901\r\n1\r\n",
      413);
  expect_status(
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
      "fffffffffffffffffffffff\r\n",
      413);
  /* head too large */
  char head[2048];
  int n = snprintf(head, sizeof head,
                   "GET / HTTP/1.1\r\nHost: h\r\nX: %1100s\r\n\r\n", "v");
  assert_true(n > 0);
  expect_status(head, 431);
  /* a request line that never ends */
  memset(head, 'a', sizeof head - 1);
  head[sizeof head - 1] = '\0';
  expect_status(head, 431);
  /* too many header fields: 8 allowed, 9 rejected */
  char many[1024] = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 7; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), "H%d: v\r\n", i);
  strcat(many, "\r\n");
  assert_int_equal(parse_str(many).rc, BERTH_H1_DONE);
  many[strlen(many) - 2] = '\0';
  strcat(many, "H9: v\r\n\r\n");
  expect_status(many, 431);
  /* trailers count against the head limit */
  char tr[2048];
  snprintf(tr, sizeof tr,
           "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           "0\r\nT: %1100s\r\n\r\n",
           "v");
  expect_status(tr, 431);
}

static void test_malformed(void **state) {
  (void)state;
  expect_status("GET\r\n\r\n", 400);
  expect_status("GET /\r\n\r\n", 400);
  expect_status("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400);
  expect_status("GET / http/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status("GET / HTTP/1.12\r\nHost: h\r\n\r\n", 400);
  expect_status("GET / HTTP/1\r\nHost: h\r\n\r\n", 400);
  expect_status("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status("GET http://example.com/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status("GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\n: novalue\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nName : x\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nName\t: x\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fz\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\rz\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\rHost: h\r\n\r\n", 400);
  expect_status(
      "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
      400);
  /* Host rules */
  expect_status("GET / HTTP/1.1\r\n\r\n", 400);
  expect_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  /* versions */
  expect_status("GET / HTTP/2.0\r\n\r\n", 505);
  expect_status("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505);
  expect_status("GET / HTTP/0.9\r\n\r\n", 505);
  expect_status("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
  /* obs-text in values is allowed; OPTIONS * too */
  assert_int_equal(
      parse_str("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n").rc,
      BERTH_H1_DONE);
  assert_int_equal(parse_str("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").rc,
                   BERTH_H1_DONE);
}

static void test_obs_fold(void **state) {
  (void)state;
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  continued\r\n\r\n",
                400);
  expect_status("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tcontinued\r\n\r\n",
                400);
  expect_status("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400);
}

static void test_keep_alive(void **state) {
  (void)state;
  assert_false(parse_str("GET / HTTP/1.0\r\n\r\n").keep_alive);
  result r = parse_str("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  assert_int_equal(r.minor, 0);
  assert_true(r.keep_alive);
  assert_false(
      parse_str("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n")
          .keep_alive);
  assert_true(parse_str("GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
  assert_false(
      parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
          .keep_alive);
  assert_false(
      parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: te, CLOSE\r\n\r\n")
          .keep_alive);
  assert_false(parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: x\r\n"
                         "Connection: close\r\n\r\n")
                   .keep_alive);
  assert_true(
      parse_str("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n")
          .keep_alive);
}

static void test_expect(void **state) {
  (void)state;
  berth_h1_parser *p = berth_h1_parser_new(&lim);
  const char *head = "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n"
                     "Content-Length: 2\r\n\r\n";
  size_t used = 0;
  int st = 0;
  assert_int_equal(berth_h1_parse(p, head, strlen(head), &used, &st, NULL),
                   BERTH_H1_HEAD_DONE);
  assert_int_equal(used, strlen(head));
  const berth_h1_request *q = berth_h1_parser_request(p);
  assert_true(q->expect_continue);
  assert_int_equal(q->method_len, 4);
  assert_int_equal(berth_h1_parse(p, "o", 1, &used, &st, NULL),
                   BERTH_H1_NEED_MORE);
  assert_int_equal(berth_h1_parse(p, "", 0, &used, &st, NULL),
                   BERTH_H1_NEED_MORE);
  assert_int_equal(berth_h1_parse(p, "kGET", 4, &used, &st, NULL),
                   BERTH_H1_DONE);
  assert_int_equal(used, 1);
  assert_memory_equal(q->body, "ok", 2);
  assert_true(q->expect_continue);
  berth_h1_parser_free(p);
  /* ignored in HTTP/1.0; other expectations ignored */
  assert_false(parse_str("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
                   .expect_continue);
  assert_false(parse_str("POST / HTTP/1.1\r\nHost: h\r\nExpect: other\r\n\r\n")
                   .expect_continue);
  /* 413 comes before any 100 Continue */
  expect_status("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                "Content-Length: 1000\r\n\r\n",
                413);
}

static void test_leading_empty_lines(void **state) {
  (void)state;
  result r = parse_str("\r\n\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n");
  assert_int_equal(r.rc, BERTH_H1_DONE);
  assert_string_equal(r.target, "/x");
}

static void test_reason(void **state) {
  (void)state;
  assert_string_equal(berth_http_reason(200), "OK");
  assert_string_equal(berth_http_reason(404), "Not Found");
  assert_string_equal(berth_http_reason(413), "Content Too Large");
  assert_string_equal(berth_http_reason(431),
                      "Request Header Fields Too Large");
  assert_string_equal(berth_http_reason(999), "Unknown");
}

static void test_default_limits(void **state) {
  (void)state;
  berth_h1_parser *p = berth_h1_parser_new(NULL);
  assert_non_null(p);
  const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  result r = parse_steps(p, s, strlen(s), 3);
  assert_int_equal(r.rc, BERTH_H1_DONE);
  berth_h1_parser_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_simple_get),
      cmocka_unit_test(test_headers_trimmed),
      cmocka_unit_test(test_post_body),
      cmocka_unit_test(test_split_every_boundary),
      cmocka_unit_test(test_pipelining),
      cmocka_unit_test(test_take_body),
      cmocka_unit_test(test_chunked),
      cmocka_unit_test(test_transfer_encoding),
      cmocka_unit_test(test_content_length),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_obs_fold),
      cmocka_unit_test(test_keep_alive),
      cmocka_unit_test(test_expect),
      cmocka_unit_test(test_leading_empty_lines),
      cmocka_unit_test(test_reason),
      cmocka_unit_test(test_default_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
