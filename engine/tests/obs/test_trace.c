/* Unit tests for tracing: W3C traceparent parsing and formatting, the OTLP
 * endpoint URL, the OTLP protobuf encoding (decoded back with protobuf-c),
 * the tracing config section, and the OTLP/HTTP client against a small
 * libuv server that answers 200, 503, or never. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "engine.h"
#include "otlp_export.h"
#include "http_url.h"
#include "otlp_trace.pb-c.h"
#include "trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define SID "00f067aa0ba902b7"

static int parse(const char *s, berth_traceparent *tp) {
  return berth_traceparent_parse(s, strlen(s), tp);
}

static void traceparent_valid(void **state) {
  (void)state;
  berth_traceparent tp;
  assert_int_equal(parse("00-" TID "-" SID "-01", &tp), BERTH_OK);
  assert_int_equal(tp.trace_id[0], 0x4b);
  assert_int_equal(tp.trace_id[15], 0x36);
  assert_int_equal(tp.span_id[0], 0x00);
  assert_int_equal(tp.span_id[7], 0xb7);
  assert_int_equal(tp.flags, 1);
  char out[BERTH_TRACEPARENT_LEN + 1];
  berth_traceparent_format(&tp, out);
  assert_string_equal(out, "00-" TID "-" SID "-01");
  /* surrounding blanks are not part of the value */
  assert_int_equal(parse(" \t00-" TID "-" SID "-00 ", &tp), BERTH_OK);
  assert_int_equal(tp.flags, 0);
  /* unknown flag bits are kept */
  assert_int_equal(parse("00-" TID "-" SID "-ff", &tp), BERTH_OK);
  assert_int_equal(tp.flags, 0xff);
  /* a later version: read as 00, extra fields after '-' allowed */
  assert_int_equal(parse("01-" TID "-" SID "-01", &tp), BERTH_OK);
  assert_int_equal(parse("cc-" TID "-" SID "-01-what-ever", &tp), BERTH_OK);
  assert_int_equal(tp.flags, 1);
}

static void traceparent_invalid(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "00",
      "00-" TID "-" SID "-0",   /* short */
      "00-" TID "-" SID "-01-", /* 00: exactly 55 */
      "00-" TID "-" SID "-01-x",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-" SID "-01", /* upper case */
      "00-" TID "-00F067AA0BA902B7-01",
      "00-" TID "-" SID "-0A",
      "0A-" TID "-" SID "-01",
      "ff-" TID "-" SID "-01", /* forbidden */
      "00-00000000000000000000000000000000-" SID "-01",
      "00-" TID "-0000000000000000-01",
      "00_" TID "-" SID "-01",
      "00-" TID "_" SID "-01",
      "00-" TID "-" SID "_01",
      "00-" TID "x" SID "-01x",
      "00-4bf92f3577b34da6a3ce929d0e0e473g-" SID "-01",
      "01-" TID "-" SID "-01x", /* later: '-' after */
      "00 " TID "-" SID "-01",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    berth_traceparent tp;
    memset(&tp, 0xaa, sizeof tp);
    if (parse(bad[i], &tp) != BERTH_E_INVALID)
      fail_msg("accepted '%s'", bad[i]);
    assert_int_equal(tp.flags, 0); /* zeroed */
  }
  berth_traceparent tp;
  assert_int_equal(berth_traceparent_parse(NULL, 0, &tp), BERTH_E_INVALID);
  /* not NUL-terminated: only len bytes count */
  char buf[64];
  memcpy(buf, "00-" TID "-" SID "-01zzzz", 60);
  assert_int_equal(berth_traceparent_parse(buf, 55, &tp), BERTH_OK);
  assert_int_equal(berth_traceparent_parse(buf, 56, &tp), BERTH_E_INVALID);
}

static void url_parsing(void **state) {
  (void)state;
  char host[256], path[1024];
  uint16_t port;
  berth_errmsg err;
  assert_int_equal(berth_http_parse_url("http://127.0.0.1:4318/v1/traces", host,
                                        sizeof host, &port, path, sizeof path,
                                        &err),
                   BERTH_OK);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 4318);
  assert_string_equal(path, "/v1/traces");
  assert_int_equal(berth_http_parse_url("http://collector", host, sizeof host,
                                        &port, path, sizeof path, &err),
                   BERTH_OK);
  assert_string_equal(host, "collector");
  assert_int_equal(port, 80);
  assert_string_equal(path, "/v1/traces"); /* the OTLP default path */
  assert_int_equal(berth_http_parse_url("http://[::1]:4318/", host, sizeof host,
                                        &port, path, sizeof path, &err),
                   BERTH_OK);
  assert_string_equal(host, "::1");
  assert_string_equal(path, "/v1/traces");
  assert_int_equal(berth_http_parse_url("http://h:1/custom/otlp", host,
                                        sizeof host, &port, path, sizeof path,
                                        &err),
                   BERTH_OK);
  assert_string_equal(path, "/custom/otlp");
  static const char *const bad[] = {
      "https://h:4318", "h:4318",         "http://",      "http://:4318",
      "http://h:0",     "http://h:65536", "http://h:x",   "http://h:4318x",
      "http://[::1",    "http://u@h:1",   "http://h/a b", "grpc://h:4317",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (berth_http_parse_url(bad[i], host, sizeof host, &port, path,
                             sizeof path, &err) != BERTH_E_CONFIG)
      fail_msg("accepted '%s'", bad[i]);
}

static berth_trace_record *record(const char *model, bool queued, bool sent,
                                  int status) {
  berth_trace_record *r = calloc(1, sizeof *r);
  assert_non_null(r);
  memset(r->trace_id, 0x11, 16);
  memset(r->span_id, 0x22, 8);
  memset(r->parent_id, 0x33, 8);
  memset(r->queue_id, 0x44, 8);
  memset(r->worker_id, 0x55, 8);
  r->has_parent = true;
  r->queued = queued;
  r->sent = sent;
  r->flags = 1;
  r->name = "POST /v2/models/{model_name}/infer";
  r->protocol = "rest";
  r->status = status;
  r->start_ns = 1000;
  r->queue_start_ns = 1100;
  r->queue_end_ns = 1200;
  r->worker_start_ns = 1300;
  r->worker_end_ns = 1400;
  r->end_ns = 1500;
  r->batch_size = 3;
  r->model = (char *)model;
  r->version = "7";
  return r;
}

static const Berth__Otlp__AnyValue *attr(const Berth__Otlp__Span *s,
                                         const char *key) {
  for (size_t i = 0; i < s->n_attributes; i++)
    if (strcmp(s->attributes[i]->key, key) == 0)
      return s->attributes[i]->value;
  return NULL;
}

static void otlp_encoding(void **state) {
  (void)state;
  berth_trace_record *r1 = record("iris", true, true, BERTH_OK);
  berth_trace_record *r2 = record("other", true, false, BERTH_E_TIMEOUT);
  r2->has_parent = false;
  const berth_trace_record *recs[2] = {r1, r2};
  assert_int_equal(berth_trace_record_spans(r1), 3);
  assert_int_equal(berth_trace_record_spans(r2), 2);
  uint8_t *buf = NULL;
  size_t len = 0;
  assert_int_equal(berth_otlp_encode(recs, 2, "svc", &buf, &len), BERTH_OK);
  Berth__Otlp__ExportTraceServiceRequest *req =
      berth__otlp__export_trace_service_request__unpack(NULL, len, buf);
  assert_non_null(req);
  assert_int_equal(req->n_resource_spans, 1);
  Berth__Otlp__ResourceSpans *rs = req->resource_spans[0];
  assert_string_equal(rs->resource->attributes[0]->key, "service.name");
  assert_string_equal(rs->resource->attributes[0]->value->string_value, "svc");
  assert_int_equal(rs->n_scope_spans, 1);
  assert_string_equal(rs->scope_spans[0]->scope->name, "berth");
  assert_int_equal(rs->scope_spans[0]->n_spans, 5);
  Berth__Otlp__Span **sp = rs->scope_spans[0]->spans;
  /* r1: server (parent = caller), queue and worker (parent = server) */
  assert_int_equal(sp[0]->kind, BERTH__OTLP__SPAN__SPAN_KIND__SPAN_KIND_SERVER);
  assert_int_equal(sp[0]->trace_id.len, 16);
  assert_int_equal(sp[0]->span_id.len, 8);
  assert_memory_equal(sp[0]->parent_span_id.data, r1->parent_id, 8);
  assert_int_equal(sp[0]->start_time_unix_nano, 1000);
  assert_int_equal(sp[0]->end_time_unix_nano, 1500);
  assert_null(sp[0]->status);
  assert_string_equal(attr(sp[0], "berth.model")->string_value, "iris");
  assert_string_equal(attr(sp[0], "berth.model_version")->string_value, "7");
  assert_int_equal(attr(sp[0], "berth.batch_size")->int_value, 3);
  assert_string_equal(attr(sp[0], "berth.protocol")->string_value, "rest");
  assert_string_equal(attr(sp[0], "berth.status")->string_value, "OK");
  assert_string_equal(sp[1]->name, "queue");
  assert_memory_equal(sp[1]->parent_span_id.data, r1->span_id, 8);
  assert_memory_equal(sp[1]->span_id.data, r1->queue_id, 8);
  assert_int_equal(sp[1]->start_time_unix_nano, 1100);
  assert_int_equal(sp[1]->end_time_unix_nano, 1200);
  assert_string_equal(sp[2]->name, "worker");
  assert_memory_equal(sp[2]->parent_span_id.data, r1->span_id, 8);
  assert_int_equal(sp[2]->start_time_unix_nano, 1300);
  assert_int_equal(attr(sp[2], "berth.batch_size")->int_value, 3);
  /* r2: a root server span with an error status, and its queue span */
  assert_int_equal(sp[3]->parent_span_id.len, 0);
  assert_non_null(sp[3]->status);
  assert_int_equal(sp[3]->status->code,
                   BERTH__OTLP__STATUS__STATUS_CODE__STATUS_CODE_ERROR);
  assert_string_equal(attr(sp[3], "berth.status")->string_value, "TIMEOUT");
  assert_string_equal(sp[4]->name, "queue");
  berth__otlp__export_trace_service_request__free_unpacked(req, NULL);
  free(buf);
  free(r1);
  free(r2);
}

static void config_section(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err;
  const char *base = "models: [{name: m, runtime: sklearn, path: /x}]\n";
  assert_int_equal(berth_config_parse(base, strlen(base), &c, &err), BERTH_OK);
  assert_null(c.trace_endpoint); /* off by default */
  assert_string_equal(c.trace_service_name, "berth");
  assert_true(c.trace_sample_rate == 1.0);
  assert_int_equal(c.trace_max_queue_size, 2048);
  assert_int_equal(c.trace_flush_interval_ms, 1000);
  assert_int_equal(c.trace_export_timeout_ms, 10000);
  berth_config_clear(&c);
  const char *on = "tracing: {endpoint: 'http://127.0.0.1:4318', "
                   "service_name: svc, sample_rate: 0.25}\n"
                   "models: [{name: m, runtime: sklearn, path: /x}]\n";
  assert_int_equal(berth_config_parse(on, strlen(on), &c, &err), BERTH_OK);
  assert_string_equal(c.trace_endpoint, "http://127.0.0.1:4318");
  assert_string_equal(c.trace_service_name, "svc");
  assert_true(c.trace_sample_rate == 0.25);
  berth_config_clear(&c);
  static const char *const bad[] = {
      "tracing: {endpoint: 'https://h:1'}\n",
      "tracing: {endpoint: 'http://h:70000'}\n",
      "tracing: {sample_rate: 1.5}\n",
      "tracing: {max_queue_size: 0}\n",
      "tracing: {flush_interval_ms: 1}\n",
      "tracing: {nope: 1}\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char doc[512];
    snprintf(doc, sizeof doc, "%s%s", bad[i], base);
    assert_int_equal(berth_config_parse(doc, strlen(doc), &c, &err),
                     BERTH_E_CONFIG);
    if (strstr(err.msg, "tracing.") == NULL)
      fail_msg("'%s': %s", bad[i], err.msg);
  }
}

static void http_answer(void **state) {
  (void)state;
  bool done;
  const char *a = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
  assert_int_equal(berth_otlp_http_answer(a, strlen(a), &done), 200);
  assert_true(done);
  assert_int_equal(berth_otlp_http_answer(a, strlen(a) - 1, &done), 200);
  assert_false(done); /* body not all there */
  const char *b = "HTTP/1.0 503 Busy\r\ncontent-length:  0\r\n\r\n";
  assert_int_equal(berth_otlp_http_answer(b, strlen(b), &done), 503);
  assert_true(done);
  const char *c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
  assert_int_equal(berth_otlp_http_answer(c, strlen(c), &done), 200);
  assert_false(done); /* no length: wait for the end of the connection */
  const char *d =
      "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n";
  assert_int_equal(berth_otlp_http_answer(d, strlen(d), &done), 200);
  assert_false(done);
  assert_int_equal(berth_otlp_http_answer("HTTP/1.1 20", 11, &done), -1);
  assert_int_equal(berth_otlp_http_answer("HTTP/2 200 OK\r\n", 15, &done), -1);
  assert_int_equal(berth_otlp_http_answer("SSH-2.0-OpenSSH", 15, &done), -1);
  assert_int_equal(berth_otlp_http_answer("HTTP/1.1 2x0 OK", 15, &done), -1);
}

/* ---- the HTTP client against a libuv server ----------------------------- */

typedef enum { ANSWER_200_KEEPALIVE, ANSWER_503, ANSWER_NEVER } answer_mode;

typedef struct peer {
  uv_tcp_t tcp;
  char got[65536];
  size_t got_len;
  answer_mode mode;
  uv_write_t wr;
} peer;

typedef struct fixture {
  uv_loop_t loop;
  uv_tcp_t listener;
  answer_mode mode;
  peer *p;
  int done_calls;
  bool ok;
  char msg[256];
  bool closed;
} fixture;

/* The peer's memory is the fixture's (freed at the end of the test). */
static void peer_closed(uv_handle_t *h) { (void)h; }

static void on_peer_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf) {
  peer *p = h->data;
  (void)s;
  *buf =
      uv_buf_init(p->got + p->got_len, (unsigned)(sizeof p->got - p->got_len));
}

static void on_peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  peer *p = s->data;
  (void)buf;
  if (n < 0) {
    if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, peer_closed);
    return;
  }
  p->got_len += (size_t)n;
  const char *end = memmem(p->got, p->got_len, "\r\n\r\n", 4);
  if (end == NULL || p->mode == ANSWER_NEVER)
    return;
  const char *cl = strstr(p->got, "Content-Length: ");
  size_t want = cl ? strtoul(cl + 16, NULL, 10) : 0;
  if (p->got_len - (size_t)(end + 4 - p->got) < want)
    return;
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: "
                           "application/x-protobuf\r\nContent-Length: 2\r\n"
                           "\r\nxx";
  static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
                             "Connection: close\r\n\r\n";
  uv_buf_t b = p->mode == ANSWER_503
                   ? uv_buf_init((char *)busy, sizeof busy - 1)
                   : uv_buf_init((char *)ok, sizeof ok - 1);
  uv_try_write(s, &b, 1);
  if (p->mode == ANSWER_503)
    uv_close((uv_handle_t *)s, peer_closed);
  /* 200: the connection stays open (the client must not wait for EOF) */
}

static void on_connection(uv_stream_t *server, int status) {
  fixture *f = server->data;
  assert_int_equal(status, 0);
  peer *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->mode = f->mode;
  uv_tcp_init(&f->loop, &p->tcp);
  p->tcp.data = p;
  assert_int_equal(uv_accept(server, (uv_stream_t *)&p->tcp), 0);
  f->p = p;
  uv_read_start((uv_stream_t *)&p->tcp, on_peer_alloc, on_peer_read);
}

static void on_posted(void *arg, bool ok, const char *msg) {
  fixture *f = arg;
  f->done_calls++;
  f->ok = ok;
  snprintf(f->msg, sizeof f->msg, "%s", msg);
}

static void client_closed(void *arg) { ((fixture *)arg)->closed = true; }

static void post_once(answer_mode mode, bool *ok, char *msg) {
  fixture f;
  memset(&f, 0, sizeof f);
  f.mode = mode;
  uv_loop_init(&f.loop);
  uv_tcp_init(&f.loop, &f.listener);
  f.listener.data = &f;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  assert_int_equal(uv_tcp_bind(&f.listener, (const struct sockaddr *)&addr, 0),
                   0);
  assert_int_equal(uv_listen((uv_stream_t *)&f.listener, 8, on_connection), 0);
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  uv_tcp_getsockname(&f.listener, (struct sockaddr *)&ss, &sl);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/traces",
           (unsigned)ntohs(((struct sockaddr_in *)&ss)->sin_port));
  berth_otlp_client *c = NULL;
  berth_errmsg err;
  assert_int_equal(berth_otlp_client_new(&f.loop, url, 300, &c, &err),
                   BERTH_OK);
  uint8_t *body = malloc(5);
  memcpy(body, "hello", 5);
  assert_int_equal(berth_otlp_post(c, body, 5, on_posted, &f), BERTH_OK);
  assert_true(berth_otlp_busy(c));
  /* a second POST while one is in flight is refused */
  uint8_t *more = malloc(1);
  assert_int_equal(berth_otlp_post(c, more, 1, on_posted, &f),
                   BERTH_E_UNAVAILABLE);
  assert_int_equal(f.done_calls, 0); /* never from inside post */
  while (f.done_calls == 0)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_int_equal(f.done_calls, 1);
  assert_false(berth_otlp_busy(c));
  /* what the server saw */
  assert_non_null(f.p);
  assert_non_null(strstr(f.p->got, "POST /v1/traces HTTP/1.1\r\n"));
  assert_non_null(strstr(f.p->got, "Content-Type: application/x-protobuf\r\n"));
  assert_non_null(strstr(f.p->got, "Content-Length: 5\r\n"));
  assert_memory_equal(f.p->got + f.p->got_len - 5, "hello", 5);
  berth_otlp_client_close(c, client_closed, &f);
  /* the peer closes itself when the client's side goes (EOF) */
  uv_close((uv_handle_t *)&f.listener, NULL);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  assert_true(f.closed);
  assert_int_equal(uv_loop_close(&f.loop), 0);
  free(f.p);
  *ok = f.ok;
  snprintf(msg, 256, "%s", f.msg);
}

static void client_ok(void **state) {
  (void)state;
  bool ok;
  char msg[256];
  post_once(ANSWER_200_KEEPALIVE, &ok, msg);
  assert_true(ok);
}

static void client_http_error(void **state) {
  (void)state;
  bool ok;
  char msg[256];
  post_once(ANSWER_503, &ok, msg);
  assert_false(ok);
  assert_non_null(strstr(msg, "HTTP 503"));
}

static void client_timeout(void **state) {
  (void)state;
  bool ok;
  char msg[256];
  post_once(ANSWER_NEVER, &ok, msg);
  assert_false(ok);
  assert_non_null(strstr(msg, "did not answer within 300 ms"));
}

static void client_refused(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  /* a port nothing listens on: bind one, then close it */
  uv_tcp_t t;
  uv_tcp_init(&loop, &t);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_bind(&t, (const struct sockaddr *)&addr, 0);
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &sl);
  unsigned port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
  berth_otlp_client *c = NULL;
  berth_errmsg err;
  assert_int_equal(berth_otlp_client_new(&loop, url, 2000, &c, &err), BERTH_OK);
  fixture f;
  memset(&f, 0, sizeof f);
  assert_int_equal(berth_otlp_post(c, malloc(1), 1, on_posted, &f), BERTH_OK);
  while (f.done_calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  assert_false(f.ok);
  assert_non_null(strstr(f.msg, "connecting to 127.0.0.1"));
  berth_otlp_client_close(c, client_closed, &f);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(f.closed);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void close_with_post_pending(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  berth_otlp_client *c = NULL;
  berth_errmsg err;
  assert_int_equal(
      berth_otlp_client_new(&loop, "http://127.0.0.1:9", 1000, &c, &err),
      BERTH_OK);
  fixture f;
  memset(&f, 0, sizeof f);
  assert_int_equal(berth_otlp_post(c, malloc(3), 3, on_posted, &f), BERTH_OK);
  berth_otlp_client_close(c, client_closed, &f); /* before it started */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(f.done_calls, 1);
  assert_false(f.ok);
  assert_true(f.closed);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the tracer: sampling, ids, the bounded buffer ----------------------- */

static berth_config tracer_config(const char *endpoint, double rate,
                                  uint32_t cap) {
  berth_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.trace_endpoint = (char *)endpoint;
  cfg.trace_service_name = "t";
  cfg.trace_sample_rate = rate;
  cfg.trace_max_queue_size = cap;
  cfg.trace_flush_interval_ms = 3600000; /* only the close exports */
  cfg.trace_export_timeout_ms = 2000;
  return cfg;
}

static void tracer_off_without_endpoint(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  berth_config cfg = tracer_config(NULL, 1, 8);
  berth_tracer *t = (berth_tracer *)&cfg; /* must be overwritten */
  berth_errmsg err;
  assert_int_equal(berth_tracer_create(&loop, &cfg, &t, &err), BERTH_OK);
  assert_null(t);
  assert_null(berth_trace_begin(NULL, NULL, 0, "x", "rest", 1));
  berth_trace_counters c = berth_tracer_counters(NULL);
  assert_int_equal(c.spans_dropped + c.spans_exported, 0);
  berth_tracer_close(NULL);
  berth_tracer_free(NULL);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void tracer_sampling_and_buffer(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  /* port 9 (discard): nothing listens, the final export fails */
  berth_config cfg = tracer_config("http://127.0.0.1:9/v1/traces", 0, 2);
  berth_tracer *t = NULL;
  berth_errmsg err;
  assert_int_equal(berth_tracer_create(&loop, &cfg, &t, &err), BERTH_OK);
  assert_non_null(t);
  const char *sampled = "00-" TID "-" SID "-01";
  const char *unsampled = "00-" TID "-" SID "-00";
  /* rate 0: no new traces, but a sampled caller is followed */
  assert_null(berth_trace_begin(t, NULL, 0, "x", "rest", 1));
  assert_null(berth_trace_begin(t, "bad", 3, "x", "rest", 1));
  assert_null(berth_trace_begin(t, unsampled, 55, "x", "rest", 1));
  berth_model_config mcfg = {.name = "m", .version = "2"};
  berth_model model;
  memset(&model, 0, sizeof model);
  model.cfg = &mcfg;
  for (int i = 0; i < 5; i++) {
    berth_job job;
    memset(&job, 0, sizeof job);
    job.model = &model;
    job.trace = berth_trace_begin(t, sampled, 55, "x", "rest", uv_hrtime());
    assert_non_null(job.trace);
    char tp[BERTH_TRACEPARENT_LEN + 1];
    berth_trace_ctx_traceparent(job.trace, tp);
    assert_memory_equal(tp, "00-" TID "-", 36); /* the caller's trace */
    assert_memory_not_equal(tp + 36, SID, 16);  /* a span of its own */
    assert_memory_equal(tp + 52, "-01", 3);
    berth_trace_answered(job.trace, BERTH_OK);
    berth_trace_job_finish(&job, BERTH_E_INTERNAL);
    assert_null(job.trace);
    berth_trace_job_finish(&job, BERTH_OK); /* NULL-safe */
  }
  /* two buffered, three dropped (one span each: never queued) */
  berth_trace_counters c = berth_tracer_counters(t);
  assert_int_equal(c.spans_dropped, 3);
  assert_int_equal(c.spans_exported, 0);
  berth_tracer_close(t);
  assert_null(berth_trace_begin(t, sampled, 55, "x", "rest", 1));
  uv_run(&loop, UV_RUN_DEFAULT); /* the last POST fails: refused */
  c = berth_tracer_counters(t);
  assert_int_equal(c.spans_dropped, 5);
  berth_tracer_free(t);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void tracer_new_trace_ids(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  berth_config cfg = tracer_config("http://127.0.0.1:9", 1, 4);
  berth_tracer *t = NULL;
  berth_errmsg err;
  assert_int_equal(berth_tracer_create(&loop, &cfg, &t, &err), BERTH_OK);
  char a[BERTH_TRACEPARENT_LEN + 1], b[BERTH_TRACEPARENT_LEN + 1];
  berth_trace_ctx *x = berth_trace_begin(t, NULL, 0, "x", "grpc", 1);
  berth_trace_ctx *y = berth_trace_begin(t, NULL, 0, "x", "grpc", 1);
  assert_non_null(x);
  assert_non_null(y);
  berth_trace_ctx_traceparent(x, a);
  berth_trace_ctx_traceparent(y, b);
  berth_traceparent pa, pb;
  assert_int_equal(parse(a, &pa), BERTH_OK); /* valid: non-zero ids */
  assert_int_equal(parse(b, &pb), BERTH_OK);
  assert_memory_not_equal(pa.trace_id, pb.trace_id, 16);
  assert_int_equal(pa.flags, 1);
  berth_job j;
  memset(&j, 0, sizeof j); /* no model: empty names */
  j.trace = x;
  berth_trace_job_finish(&j, BERTH_E_IO);
  j.trace = y;
  berth_trace_job_finish(&j, BERTH_E_IO);
  berth_tracer_close(t);
  uv_run(&loop, UV_RUN_DEFAULT);
  berth_tracer_free(t);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(traceparent_valid),
      cmocka_unit_test(traceparent_invalid),
      cmocka_unit_test(url_parsing),
      cmocka_unit_test(otlp_encoding),
      cmocka_unit_test(config_section),
      cmocka_unit_test(http_answer),
      cmocka_unit_test(client_ok),
      cmocka_unit_test(client_http_error),
      cmocka_unit_test(client_timeout),
      cmocka_unit_test(client_refused),
      cmocka_unit_test(close_with_post_pending),
      cmocka_unit_test(tracer_off_without_endpoint),
      cmocka_unit_test(tracer_sampling_and_buffer),
      cmocka_unit_test(tracer_new_trace_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
