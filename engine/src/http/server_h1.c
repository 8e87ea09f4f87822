/* Berth engine: HTTP/1.1 connections of the HTTP server transport: parsing
 * requests out of the connection's read buffer, handing them to the handler
 * one at a time, and writing the responses (head, body, error documents).
 * The sockets, the listener and protocol detection are server.c.
 */
#include "httpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "numtext.h"
#include "http1.h"
#include "http2.h"
#include "tls.h"
#include "server_int.h"

#define MAX_RESPONSE_HEAD (1u << 20)

/* ---- HTTP/1.1 ---- */

/* Headers the transport writes itself, and hop-by-hop ones. */
static bool is_transport_header(const char *name) {
#define SKIP(s)                                                                \
  { s, sizeof s - 1 }
  static const struct {
    const char *name;
    size_t len;
  } skip[] = {SKIP("content-length"),    SKIP("connection"), SKIP("date"),
              SKIP("transfer-encoding"), SKIP("keep-alive"), SKIP("upgrade")};
#undef SKIP
  size_t len = strlen(name); /* the length first: most names differ in it */
  for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
    if (len == skip[i].len && strcasecmp(name, skip[i].name) == 0)
      return true;
  return false;
}

static int buf_puts(berth_buf *b, const char *s) {
  return berth_buf_append(b, s, strlen(s));
}

/* "HTTP/1.1 200 OK\r\n" without printf: every answer's head is written on
 * the event loop, where vfprintf was ~7 % of berthd's user time (W1). */
static int put_status_line(berth_buf *b, int status) {
  if (status < 100 || status > 999)
    return berth_buf_printf(b, "HTTP/1.1 %d %s\r\n", status,
                            berth_http_reason(status));
  char line[13] = "HTTP/1.1 ";
  line[9] = (char)('0' + status / 100);
  line[10] = (char)('0' + status / 10 % 10);
  line[11] = (char)('0' + status % 10);
  line[12] = ' ';
  int rc = berth_buf_append(b, line, sizeof line);
  if (rc == BERTH_OK)
    rc = buf_puts(b, berth_http_reason(status));
  return rc == BERTH_OK ? berth_buf_append(b, "\r\n", 2) : rc;
}

/* "Name: <decimal>\r\n". */
static int put_number_header(berth_buf *b, const char *name, size_t value) {
  char num[BERTH_NUM_MAX];
  size_t k = berth_num_u64(num, (uint64_t)value);
  int rc = buf_puts(b, name);
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, num, k);
  return rc == BERTH_OK ? berth_buf_append(b, "\r\n", 2) : rc;
}

/* body_len for a streamed answer's head (no Content-Length). */
#define H1_STREAMED SIZE_MAX

/* Formats a response head; NULL on failure. body_len H1_STREAMED: a
 * streamed answer, chunked on HTTP/1.1, delimited by the close on 1.0. */
static char *h1_format_head(berth_httpd_conn *c, int status,
                            const berth_http_header_kv *headers, size_t n,
                            size_t body_len, bool keep, size_t *len) {
  berth_buf b;
  berth_buf_init(&b, MAX_RESPONSE_HEAD);
  int rc = put_status_line(&b, status);
  for (size_t i = 0; i < n && rc == BERTH_OK; i++) {
    const berth_http_header_kv *kv = &headers[i];
    if (kv->name == NULL || kv->value == NULL ||
        !berth_http_is_token(kv->name) ||
        !berth_http_is_field_value(kv->value) || is_transport_header(kv->name))
      continue; /* never let a handler break the framing */
    rc = buf_puts(&b, kv->name);
    if (rc == BERTH_OK)
      rc = berth_buf_append(&b, ": ", 2);
    if (rc == BERTH_OK)
      rc = buf_puts(&b, kv->value);
    if (rc == BERTH_OK)
      rc = berth_buf_append(&b, "\r\n", 2);
  }
  if (rc == BERTH_OK && body_len == H1_STREAMED && c->cur_version == 11)
    rc = buf_puts(&b, "Transfer-Encoding: chunked\r\n");
  else if (rc == BERTH_OK && body_len != H1_STREAMED && status != 204 &&
           status != 304)
    rc = put_number_header(&b, "Content-Length: ", body_len);
  if (rc == BERTH_OK)
    rc = buf_puts(&b, "Date: ");
  if (rc == BERTH_OK)
    rc = buf_puts(&b, berth_server_date(c->srv));
  if (rc == BERTH_OK)
    rc = berth_buf_append(&b, "\r\n", 2);
  if (rc == BERTH_OK && !keep)
    rc = buf_puts(&b, "Connection: close\r\n");
  else if (rc == BERTH_OK && c->cur_version == 10)
    rc = buf_puts(&b, "Connection: keep-alive\r\n");
  if (rc == BERTH_OK)
    rc = berth_buf_append(&b, "\r\n", 2);
  if (rc != BERTH_OK) {
    berth_buf_free(&b);
    return NULL;
  }
  return berth_buf_detach(&b, len);
}

/* Queues a response to the current request; takes body. keep=false closes
 * the connection after it. */
static void h1_send(berth_httpd_conn *c, int status,
                    const berth_http_header_kv *headers, size_t n, char *body,
                    size_t body_len, bool keep) {
  size_t head_len = 0;
  char *head = h1_format_head(c, status, headers, n, body_len, keep, &head_len);
  if (head == NULL) {
    free(body);
    static const berth_http_header_kv none[1] = {{NULL, NULL}};
    head = h1_format_head(c, 500, none, 0, 0, false, &head_len);
    body = NULL;
    body_len = 0;
    keep = false;
    if (head == NULL) {
      berth_httpd_conn_close(c);
      return;
    }
  }
  if (c->cur_head || status == 204 || status == 304) {
    free(body);
    body = NULL;
    body_len = 0;
  }
  if (!keep)
    c->close_after_write = true;
  uv_buf_t bufs[2];
  bufs[0].base = head;
  bufs[0].len = head_len; /* size_t on Unix; uv_buf_init would cut at 4 GiB */
  bufs[1].base = body;
  bufs[1].len = body_len;
  berth_server_conn_writev(c, bufs, body_len > 0 ? 2 : 1, head, body, NULL,
                           NULL);
}

/* {"error": "<msg>"} with JSON escaping; NULL on allocation failure. */
static char *json_error(const char *msg, size_t *len) {
  berth_buf b;
  berth_buf_init(&b, 4096);
  int rc = buf_puts(&b, "{\"error\": \"");
  for (const char *s = msg; *s != '\0' && rc == BERTH_OK; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      rc = berth_buf_printf(&b, "\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f)
      rc = berth_buf_printf(&b, "\\u%04x", ch);
    else
      rc = berth_buf_append(&b, s, 1);
  }
  if (rc == BERTH_OK)
    rc = buf_puts(&b, "\"}");
  if (rc != BERTH_OK) {
    berth_buf_free(&b);
    return NULL;
  }
  return berth_buf_detach(&b, len);
}

static void h1_send_error(berth_httpd_conn *c, int status, const char *msg) {
  static const berth_http_header_kv json[1] = {
      {"Content-Type", "application/json"}};
  size_t len = 0;
  char *body = json_error(msg, &len);
  c->cur_head = false;
  c->cur_version = 11;
  h1_send(c, status, json, 1, body, body != NULL ? len : 0, false);
}

void berth_server_h1_head_timeout(berth_httpd_conn *c) {
  h1_send_error(c, 408,
                "the request head was not complete within "
                "server.header_timeout_ms of its first byte");
  if (c->writes == 0 && !c->closing)
    berth_server_conn_linger(c);
  else
    berth_server_conn_update_reading(c);
}

static void h1_stream_finish(berth_httpd_conn *c, berth_http_req *r);

static void h1_respond(berth_http_req *r, int status,
                       const berth_http_header_kv *headers, size_t n,
                       char *body, size_t body_len) {
  berth_httpd_conn *c = r->link;
  if (c->cur_stream) { /* after a streamed head: the body is the last chunk */
    (void)status;
    (void)headers;
    (void)n;
    r->answered = false; /* berth_h1_stream_send checks it */
    berth_h1_stream_send(r, body, body_len);
    h1_stream_finish(c, r);
    return;
  }
  c->cur = NULL;
  bool keep = c->cur_keep_alive && !c->srv->draining;
  if (status < 200 || status > 599)
    status = 500;
  h1_send(c, status, headers, n, body, body_len, keep);
  berth_httpd_req_release(r);
  if (!c->in_process)
    berth_server_h1_process(c);
}

/* ---- streamed answers (http2.h: berth_h1_stream_*) ---- */

/* The connection of a request that may still stream, or NULL (*rc set). */
static berth_httpd_conn *h1_stream_conn(const berth_http_req *r, int *rc) {
  *rc = BERTH_OK;
  if (r->answered || r->gone || r->link == NULL) {
    *rc = BERTH_E_IO;
    return NULL;
  }
  berth_httpd_conn *c = r->link;
  if (c->closing || c->cur != r) {
    *rc = BERTH_E_IO;
    return NULL;
  }
  return c;
}

int berth_h1_stream_begin(berth_http_req *r, int status,
                          const berth_http_header_kv *headers, size_t n) {
  int rc;
  berth_httpd_conn *c = h1_stream_conn(r, &rc);
  if (c == NULL)
    return rc;
  if (c->cur_stream)
    return BERTH_E_INVALID;
  if (status < 200 || status > 599 || status == 204 || status == 304)
    status = 500;
  /* HTTP/1.0 has no chunks: the close ends the body. */
  bool keep = c->cur_keep_alive && c->cur_version == 11;
  size_t head_len = 0;
  char *head =
      h1_format_head(c, status, headers, n, H1_STREAMED, keep, &head_len);
  if (head == NULL)
    return BERTH_E_NOMEM;
  c->cur_stream = true;
  c->cur_keep_alive = keep;
  uv_buf_t b;
  b.base = head;
  b.len = head_len;
  return berth_server_conn_writev(c, &b, 1, head, NULL, NULL, NULL);
}

int berth_h1_stream_send(berth_http_req *r, char *data, size_t len) {
  int rc;
  berth_httpd_conn *c = h1_stream_conn(r, &rc);
  if (c != NULL && !c->cur_stream)
    rc = BERTH_E_INVALID;
  if (rc != BERTH_OK || len == 0 || c->cur_head) {
    free(data);
    return rc;
  }
  if (c->cur_version != 11) { /* HTTP/1.0: the bytes as they are */
    uv_buf_t b;
    b.base = data;
    b.len = len;
    return berth_server_conn_writev(c, &b, 1, data, NULL, NULL, NULL);
  }
  char *size = malloc(24);
  if (size == NULL) {
    free(data);
    berth_httpd_conn_close(c);
    return BERTH_E_NOMEM;
  }
  static char crlf[] = "\r\n";
  int k = snprintf(size, 24, "%zx\r\n", len);
  uv_buf_t bufs[3];
  bufs[0].base = size;
  bufs[0].len = (size_t)k;
  bufs[1].base = data;
  bufs[1].len = len;
  bufs[2].base = crlf;
  bufs[2].len = 2;
  return berth_server_conn_writev(c, bufs, 3, size, data, NULL, NULL);
}

/* The last chunk: the request is answered; the connection goes on with
 * the next request, or closes once everything is written. */
static void h1_stream_finish(berth_httpd_conn *c, berth_http_req *r) {
  static char last[] = "0\r\n\r\n";
  if (c->cur_version == 11 && !c->cur_head) {
    uv_buf_t b = uv_buf_init(last, sizeof last - 1);
    berth_server_conn_writev(c, &b, 1, NULL, NULL, NULL, NULL);
  }
  if (c->closing) { /* the write failed: the request is gone already */
    return;
  }
  bool keep = c->cur_keep_alive && !c->srv->draining;
  c->cur = NULL;
  c->cur_stream = false;
  r->answered = true;
  if (!keep)
    c->close_after_write = true;
  berth_httpd_req_release(r);
  if (c->close_after_write && c->writes == 0)
    berth_server_conn_linger(c);
  else if (!c->in_process)
    berth_server_h1_process(c);
}

int berth_h1_stream_end(berth_http_req *r) {
  int rc;
  berth_httpd_conn *c = h1_stream_conn(r, &rc);
  if (c == NULL)
    return rc;
  if (!c->cur_stream) { /* no head yet: an empty 200 answer */
    static const berth_http_header_kv none[1] = {{NULL, NULL}};
    berth_http_respond_take(r, 200, none, 0, NULL, 0);
    return BERTH_OK;
  }
  h1_stream_finish(c, r);
  return BERTH_OK;
}

size_t berth_h1_stream_queued(const berth_http_req *r) {
  int rc;
  berth_httpd_conn *c = h1_stream_conn(r, &rc);
  if (c == NULL)
    return 0;
  return berth_server_conn_queued(c);
}

static void h1_dispatch(berth_httpd_conn *c) {
  const berth_h1_request *q = berth_h1_parser_request(c->parser);
  berth_httpd_req_init in = {.version = q->version_minor == 1 ? 11 : 10,
                             .method = q->method,
                             .method_len = q->method_len,
                             .target = q->target,
                             .target_len = q->target_len,
                             .fields = q->headers,
                             .n_fields = q->n_headers,
                             .peer = c->peer,
                             .respond = h1_respond,
                             .link = c};
  c->cur_keep_alive = q->keep_alive;
  c->cur_head = q->method_len == 4 && memcmp(q->method, "HEAD", 4) == 0;
  c->cur_version = in.version;
  c->cur_stream = false;
  in.body = berth_h1_parser_take_body(c->parser, &in.body_len);
  berth_http_req *r = berth_httpd_req_new(&in);
  berth_h1_parser_next(c->parser);
  if (r == NULL) {
    h1_send_error(c, 503, "out of memory");
    return;
  }
  c->cur = r;
  c->srv->opts.handler(r, c->srv->opts.handler_data);
}

void berth_server_h1_process(berth_httpd_conn *c) {
  if (c->in_process || c->closing || c->lingering)
    return;
  c->in_process = true;
  if (c->parser == NULL) {
    c->parser = berth_h1_parser_new(&c->srv->limits);
    if (c->parser == NULL) {
      c->in_process = false;
      berth_httpd_conn_close(c);
      return;
    }
  }
  static char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";
  if (c->tls != NULL)
    berth_server_tls_move_plain(c);
  while (!c->closing && c->cur == NULL && !c->close_after_write &&
         c->roff < c->rlen && berth_server_conn_queued(c) < WRITE_HIGH_WATER) {
    size_t used = 0;
    int status = 400;
    berth_errmsg err;
    if (!c->h1_body) /* a head starts (or goes on): its deadline runs */
      berth_server_conn_head(c, true);
    int rc = berth_h1_parse(c->parser, c->rbuf + c->roff, c->rlen - c->roff,
                            &used, &status, &err);
    c->roff += used;
    if (rc < 0) {
      berth_server_conn_head(c, false);
      h1_send_error(c, status, err.msg);
      break;
    }
    if (rc == BERTH_H1_HEAD_DONE || rc == BERTH_H1_DONE) {
      berth_server_conn_head(c, false);
      c->h1_body = rc == BERTH_H1_HEAD_DONE;
    }
    if (rc == BERTH_H1_HEAD_DONE) {
      if (berth_h1_parser_request(c->parser)->expect_continue) {
        uv_buf_t b = uv_buf_init(continue_100, sizeof continue_100 - 1);
        berth_server_conn_writev(c, &b, 1, NULL, NULL, NULL, NULL);
      }
    } else if (rc == BERTH_H1_DONE) {
      h1_dispatch(c);
    }
    if (c->tls != NULL && c->roff == c->rlen)
      berth_server_tls_move_plain(c);
  }
  if (c->roff == c->rlen)
    c->roff = c->rlen = 0;
  c->in_process = false;
  if (c->closing)
    return;
  if (c->close_after_write && c->writes == 0)
    berth_server_conn_linger(c);
  else
    berth_server_conn_update_reading(c);
}
