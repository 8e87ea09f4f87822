/* Berth engine: HTTP/2 cleartext with prior knowledge (RFC 9113 3.3) on the
 * HTTP/1.1 port, over nghttp2's server session.
 *
 * server.c reads the socket and feeds every byte to berth_h2_session_recv;
 * nghttp2 calls back here per frame. A stream collects its header fields and
 * DATA under the same limits as HTTP/1.1 (431, 413); on END_STREAM it
 * becomes a berth_http_req for the handler. Answers may come in any order
 * and at any time: each is submitted with a data provider over the response
 * body, and nghttp2 does framing and flow control. Output is pulled from
 * nghttp2 (mem_send) into one buffer per write, at most one write in flight,
 * so a slow reader holds only what the windows allow.
 *
 * gRPC adds two things (berth_httpd_options.on_body): a streamed request,
 * which reaches the handler at the end of its head and whose DATA is then
 * handed over piece by piece, and a streamed answer (berth_http_stream_*):
 * a head, body chunks queued as they are produced (the data provider
 * defers while the queue is empty), and trailers after the last chunk
 * (http2_stream.c).
 */
#include "http2.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "http2_int.h"

#define H2_MAX_STREAMS 128
#define H2_STREAM_WINDOW (1 << 20)
#define H2_CONN_WINDOW (16 << 20)
#define H2_OUT_CHUNK (64u * 1024) /* bytes gathered per socket write */
/* Request bodies buffered at once per connection (streams not yet given to
 * the handler): max(4 bodies, 256 MiB); a stream beyond it gets 503. Not
 * flow-control backpressure: whole bodies are needed, so withholding window
 * could deadlock several half-sent uploads. */
#define H2_BODY_BUDGET_BODIES 4
#define H2_BODY_BUDGET_MIN ((size_t)256 << 20)

/* ---- streams ---- */

static void stream_free(h2_stream *st) {
  berth_h2_session *s = st->s;
  LIST_REMOVE(st, link);
  s->buffered -= st->body.len + st->held;
  berth_buf_free(&st->fields);
  berth_buf_free(&st->body);
  free(st->resp_body);
  while (!STAILQ_EMPTY(&st->queue)) {
    h2_chunk *c = STAILQ_FIRST(&st->queue);
    STAILQ_REMOVE_HEAD(&st->queue, link);
    free(c->data);
    free(c);
  }
  free(st->trailers);
  free(st);
}

static h2_stream *get_stream(berth_h2_session *s, int32_t id) {
  return nghttp2_session_get_stream_user_data(s->ng, id);
}

/* Data provider over the response body. */
static ssize_t h2_read_body(nghttp2_session *ng, int32_t stream_id,
                            uint8_t *buf, size_t length, uint32_t *data_flags,
                            nghttp2_data_source *source, void *user_data) {
  (void)ng;
  (void)stream_id;
  (void)user_data;
  h2_stream *st = source->ptr;
  size_t n = st->resp_len - st->resp_off;
  if (n > length)
    n = length;
  if (n > 0)
    memcpy(buf, st->resp_body + st->resp_off, n);
  st->resp_off += n;
  if (st->resp_off == st->resp_len) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    /* Trailers (gRPC's grpc-status) go here: set
     * NGHTTP2_DATA_FLAG_NO_END_STREAM as well and call
     * nghttp2_submit_trailer(ng, stream_id, nva, n); the trailers' HEADERS
     * frame then ends the stream. */
  }
  return (ssize_t)n;
}

/* Data provider of a streamed answer: the queued chunks, then EOF and the
 * trailers once the end is asked; deferred while the queue is empty. */
ssize_t berth_h2_read_stream(nghttp2_session *ng, int32_t stream_id,
                             uint8_t *buf, size_t length, uint32_t *data_flags,
                             nghttp2_data_source *source, void *user_data) {
  (void)user_data;
  h2_stream *st = source->ptr;
  size_t n = 0;
  while (n < length && !STAILQ_EMPTY(&st->queue)) {
    h2_chunk *c = STAILQ_FIRST(&st->queue);
    size_t take = c->len - c->off;
    if (take > length - n)
      take = length - n;
    memcpy(buf + n, c->data + c->off, take);
    c->off += take;
    n += take;
    st->q_bytes -= take;
    if (c->off == c->len) {
      STAILQ_REMOVE_HEAD(&st->queue, link);
      free(c->data);
      free(c);
    }
  }
  if (STAILQ_EMPTY(&st->queue) && st->resp_ending) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (st->n_trailers > 0) {
      *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      int rv =
          nghttp2_submit_trailer(ng, stream_id, st->trailers, st->n_trailers);
      free(st->trailers); /* nghttp2 copied them */
      st->trailers = NULL;
      st->n_trailers = 0;
      if (rv != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets the stream */
    }
    return (ssize_t)n;
  }
  if (n == 0) {
    st->resp_deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return (ssize_t)n;
}

/* Connection-specific fields are forbidden in HTTP/2; the transport writes
 * content-length and date itself. */
static bool is_skipped_field(const char *name) {
  static const char *const skip[] = {
      "connection", "keep-alive", "proxy-connection", "transfer-encoding",
      "upgrade",    "te",         "content-length",   "date"};
  for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
    if (strcasecmp(name, skip[i]) == 0)
      return true;
  return false;
}

/* Builds the header list of an answer into *nva (pointing into *mem and
 * the caller's strings, valid until both are freed): :status, the
 * handler's fields (lower-cased; invalid and connection-specific ones
 * dropped), content-length when length is not NULL, date when with_date. */
int berth_h2_build_nva(berth_h2_session *s, int status,
                       const berth_http_header_kv *headers, size_t n,
                       const char *length, bool with_date, char status_text[8],
                       nghttp2_nv **nva_out, char **mem_out, size_t *k_out) {
  size_t names = 0;
  for (size_t i = 0; i < n; i++)
    if (headers[i].name != NULL)
      names += strlen(headers[i].name) + 1;
  nghttp2_nv *nva = malloc((n + 3) * sizeof *nva);
  char *lower = malloc(names + 1);
  if (nva == NULL || lower == NULL) {
    free(nva);
    free(lower);
    return BERTH_E_NOMEM;
  }
  size_t k = 0;
  if (status > 0) {
    /* callers pass 200..599; "% 1000" only shows the compiler it fits */
    snprintf(status_text, 8, "%d", status % 1000);
    nva[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status_text, 7,
                            strlen(status_text), NGHTTP2_NV_FLAG_NONE};
  }
  char *p = lower;
  for (size_t i = 0; i < n; i++) {
    const char *name = headers[i].name, *value = headers[i].value;
    if (name == NULL || value == NULL || !berth_http_is_token(name) ||
        !berth_http_is_field_value(value) || is_skipped_field(name))
      continue;
    size_t nl = strlen(name);
    for (size_t j = 0; j < nl; j++)
      p[j] = (name[j] >= 'A' && name[j] <= 'Z') ? (char)(name[j] - 'A' + 'a')
                                                : name[j];
    nva[k++] = (nghttp2_nv){(uint8_t *)p, (uint8_t *)(uintptr_t)value, nl,
                            strlen(value), NGHTTP2_NV_FLAG_NONE};
    p += nl + 1;
  }
  if (length != NULL)
    nva[k++] =
        (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)(uintptr_t)length,
                     14, strlen(length), NGHTTP2_NV_FLAG_NONE};
  if (with_date) {
    const char *date = berth_httpd_conn_date(s->conn);
    nva[k++] = (nghttp2_nv){(uint8_t *)"date", (uint8_t *)(uintptr_t)date, 4,
                            strlen(date), NGHTTP2_NV_FLAG_NONE};
  }
  *nva_out = nva;
  *mem_out = lower;
  *k_out = k;
  return BERTH_OK;
}

/* Submits a response on st; takes body. */
static void h2_submit(h2_stream *st, int status,
                      const berth_http_header_kv *headers, size_t n, char *body,
                      size_t body_len) {
  berth_h2_session *s = st->s;
  st->answered = true;
  if (status < 200 || status > 599)
    status = 500;
  size_t content_length = body_len;
  if (st->head_req || status == 204 || status == 304) {
    free(body);
    body = NULL;
    body_len = 0;
  }
  free(st->resp_body);
  st->resp_body = body;
  st->resp_len = body_len;
  st->resp_off = 0;

  char status_text[8], length_text[24];
  snprintf(length_text, sizeof length_text, "%zu", content_length);
  nghttp2_nv *nva;
  char *mem;
  size_t k;
  if (berth_h2_build_nva(s, status, headers, n,
                         status != 204 && status != 304 ? length_text : NULL,
                         true, status_text, &nva, &mem, &k) != BERTH_OK) {
    nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
    return;
  }
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = h2_read_body};
  int rv = nghttp2_submit_response(s->ng, st->id, nva, k,
                                   body_len > 0 ? &prd : NULL);
  free(nva);
  free(mem);
  if (rv != 0)
    nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
}

static void h2_submit_error(h2_stream *st, int status, const char *msg) {
  static const berth_http_header_kv json[1] = {
      {"content-type", "application/json"}};
  char text[160];
  int len =
      snprintf(text, sizeof text, "{\"error\": \"%s\"}", msg); /* msg is ours */
  char *body = len > 0 ? malloc((size_t)len) : NULL;
  if (body != NULL)
    memcpy(body, text, (size_t)len);
  st->s->buffered -= st->body.len;
  berth_buf_free(&st->body);
  h2_submit(st, status, json, 1, body, body != NULL ? (size_t)len : 0);
}

void berth_h2_stream_resume(h2_stream *st) {
  if (st->resp_deferred) {
    st->resp_deferred = false;
    nghttp2_session_resume_data(st->s->ng, st->id);
  }
}

static void h2_respond(berth_http_req *r, int status,
                       const berth_http_header_kv *headers, size_t n,
                       char *body, size_t body_len) {
  h2_stream *st = r->link;
  berth_h2_session *s = st->s;
  st->req = NULL;
  if (st->resp_begun) { /* a streamed answer: end it, without trailers */
    free(body);
    st->answered = true;
    st->resp_ending = true;
    berth_h2_stream_resume(st);
  } else {
    h2_submit(st, status, headers, n, body, body_len);
  }
  berth_httpd_req_release(r);
  berth_h2_flush(s);
}

static void h2_dispatch(h2_stream *st) {
  berth_h2_session *s = st->s;
  st->dispatched = true;
  berth_h1_header *fields = malloc((st->n_fields + 1) * sizeof *fields);
  if (fields == NULL) {
    h2_submit_error(st, 503, "out of memory");
    return;
  }
  berth_httpd_req_init in = {.version = 20,
                             .peer = berth_httpd_conn_peer(s->conn),
                             .respond = h2_respond,
                             .link = st};
  size_t nf = 0;
  const char *authority = NULL;
  size_t authority_len = 0;
  bool has_host = false;
  for (size_t off = 0; off < st->fields.len;) {
    const char *name = st->fields.data + off;
    size_t nl = strlen(name);
    const char *value = name + nl + 1;
    size_t vl = strlen(value);
    off += nl + vl + 2;
    if (strcmp(name, ":method") == 0) {
      in.method = value;
      in.method_len = vl;
    } else if (strcmp(name, ":path") == 0) {
      in.target = value;
      in.target_len = vl;
    } else if (strcmp(name, ":authority") == 0) {
      authority = value;
      authority_len = vl;
    } else if (name[0] != ':' && nf < st->n_fields) {
      has_host = has_host || strcmp(name, "host") == 0;
      fields[nf++] = (berth_h1_header){name, nl, value, vl};
    }
  }
  if (authority != NULL && !has_host) /* handlers see one Host either way */
    fields[nf++] = (berth_h1_header){"host", 4, authority, authority_len};
  if (in.method == NULL || in.target == NULL || in.target[0] != '/') {
    free(fields);
    h2_submit_error(st, 400, "request needs :method and an absolute :path");
    return;
  }
  in.fields = fields;
  in.n_fields = nf;
  s->buffered -= st->body.len;
  in.body = berth_buf_detach(&st->body, &in.body_len);
  berth_http_req *r = berth_httpd_req_new(&in);
  free(fields);
  berth_buf_reset(&st->fields);
  if (r == NULL) {
    h2_submit_error(st, 503, "out of memory");
    return;
  }
  st->req = r;
  s->opts->handler(r, s->opts->handler_data);
}

/* ---- nghttp2 callbacks ---- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame,
                            void *user_data) {
  berth_h2_session *s = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  h2_stream *st = calloc(1, sizeof *st);
  if (st == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM */
  st->s = s;
  st->id = frame->hd.stream_id;
  st->streaming = s->opts->on_body != NULL && !s->opts->stream_grpc_only;
  berth_buf_init(&st->fields, s->opts->max_head_bytes);
  berth_buf_init(&st->body, s->opts->max_body_bytes);
  STAILQ_INIT(&st->queue);
  LIST_INSERT_HEAD(&s->streams, st, link);
  if (nghttp2_session_set_stream_user_data(ng, st->id, st) != 0) {
    stream_free(st);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user_data) {
  (void)flags;
  berth_h2_session *s = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS ||
      frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* request trailers are ignored */
  h2_stream *st = get_stream(s, frame->hd.stream_id);
  if (st == NULL || st->err_status != 0)
    return 0;
  /* nghttp2's HTTP messaging checks already refused NUL, CR and LF */
  if (memchr(name, '\0', namelen) != NULL ||
      memchr(value, '\0', valuelen) != NULL) {
    st->err_status = 400;
    return 0;
  }
  if (namelen > 0 && name[0] != ':' && ++st->n_fields > s->opts->max_headers) {
    st->err_status = 431;
    return 0;
  }
  int rc = berth_buf_append(&st->fields, name, namelen);
  if (rc == BERTH_OK)
    rc = berth_buf_append(&st->fields, "", 1);
  if (rc == BERTH_OK)
    rc = berth_buf_append(&st->fields, value, valuelen);
  if (rc == BERTH_OK)
    rc = berth_buf_append(&st->fields, "", 1);
  if (rc != BERTH_OK) {
    st->err_status = rc == BERTH_E_TOO_LARGE ? 431 : 503;
    return 0;
  }
  if (namelen == 7 && memcmp(name, ":method", 7) == 0)
    st->head_req = valuelen == 4 && memcmp(value, "HEAD", 4) == 0;
  if (namelen == 12 && memcmp(name, "content-type", 12) == 0 &&
      s->opts->on_body != NULL && s->opts->stream_grpc_only)
    st->streaming =
        valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0;
  if (namelen == 14 && memcmp(name, "content-length", 14) == 0 &&
      !st->streaming) {
    uint64_t v = 0;
    for (size_t i = 0;
         i < valuelen && v <= s->opts->max_body_bytes && v < UINT64_MAX / 10;
         i++)
      if (value[i] >= '0' && value[i] <= '9')
        v = v * 10 + (uint64_t)(value[i] - '0');
    if (v > s->opts->max_body_bytes)
      st->err_status = 413;
  }
  (void)ng;
  return 0;
}

static const char *status_message(int status) {
  switch (status) {
  case 413:
    return "request body too large";
  case 431:
    return "request header fields too large";
  case 400:
    return "malformed request";
  default:
    return "out of memory";
  }
}

/* Hands streamed body bytes to the handler and keeps the connection's
 * upload budget: a stream whose handler holds more than the budget allows
 * is reset. */
static void deliver_body(h2_stream *st, const char *data, size_t len,
                         bool end) {
  berth_h2_session *s = st->s;
  size_t held =
      s->opts->on_body(st->req, data, len, end, s->opts->handler_data);
  if (st->req == NULL) /* answered meanwhile: nothing is held any more */
    held = 0;
  s->buffered = s->buffered - st->held + held;
  st->held = held;
  if (s->buffered > s->budget && !st->reset) {
    st->reset = true;
    nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame,
                         void *user_data) {
  (void)ng;
  berth_h2_session *s = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
    return 0;
  h2_stream *st = get_stream(s, frame->hd.stream_id);
  if (st != NULL && st->streaming) {
    if (frame->hd.type == NGHTTP2_HEADERS &&
        frame->headers.cat == NGHTTP2_HCAT_REQUEST && !st->dispatched &&
        !st->answered) {
      if (st->err_status != 0) {
        h2_submit_error(st, st->err_status, status_message(st->err_status));
        return 0;
      }
      h2_dispatch(st);
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->req != NULL &&
        !st->body_ended) {
      st->body_ended = true;
      deliver_body(st, NULL, 0, true);
    }
    return 0;
  }
  if (st == NULL || st->answered || st->dispatched)
    return 0;
  if (st->err_status != 0) {
    h2_submit_error(st, st->err_status, status_message(st->err_status));
    return 0;
  }
  if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
    h2_dispatch(st);
  return 0;
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags,
                              int32_t stream_id, const uint8_t *data,
                              size_t len, void *user_data) {
  (void)flags;
  berth_h2_session *s = user_data;
  h2_stream *st = get_stream(s, stream_id);
  if (st == NULL)
    return 0;
  if (st->streaming && st->req != NULL && !st->body_ended &&
      st->err_status == 0 && !st->reset) {
    deliver_body(st, (const char *)data, len, false);
    return 0;
  }
  if (st->err_status != 0 || (st->streaming && st->dispatched)) {
    /* Answered early (413...): the rest is discarded, flow-control credit
     * still returned. A client that keeps uploading well past our complete
     * answer is asked to stop (RFC 9113 8.1: RST_STREAM NO_ERROR). Not at
     * once: curl 7.88 reports such a reset as a failed transfer. */
    st->discarded += len;
    if (st->discarded > H2_STREAM_WINDOW && !st->reset &&
        nghttp2_session_get_stream_local_close(ng, stream_id) == 1) {
      st->reset = true;
      nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, stream_id,
                                NGHTTP2_NO_ERROR);
    }
    return 0;
  }
  if (st->answered || st->dispatched)
    return 0;
  int rc = len > s->budget - s->buffered
               ? BERTH_E_OVERLOAD
               : berth_buf_append(&st->body, data, len);
  if (rc == BERTH_OK) {
    s->buffered += len;
    return 0;
  }
  st->err_status = rc == BERTH_E_TOO_LARGE ? 413 : 503;
  h2_submit_error(st, st->err_status,
                  rc == BERTH_E_OVERLOAD
                      ? "too many uploads at once on this connection"
                      : status_message(st->err_status));
  return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id,
                           uint32_t error_code, void *user_data) {
  (void)error_code;
  berth_h2_session *s = user_data;
  if (s->freeing)
    return 0;
  h2_stream *st = get_stream(s, stream_id);
  if (st == NULL)
    return 0;
  nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
  if (st->req != NULL) {
    berth_http_req *r = st->req;
    st->req = NULL;
    berth_httpd_req_gone(r);
  }
  stream_free(st);
  return 0;
}

/* ---- output ---- */

static void h2_on_written(void *arg, int status) {
  berth_h2_session *s = arg;
  s->writing = false;
  if (status < 0 || s->detached)
    return;
  berth_h2_flush(s);
}

/* ---- corked output (httpd.h: berth_httpd_cork) ----
 * While corked, a session's flush only puts it on this list; the uncork
 * flushes each listed session once, so the answers of one batch that go to
 * one connection leave in one write. Per thread: each network loop
 * (loops.c) corks its own sessions. */

static _Thread_local unsigned cork_depth; /* per loop thread */
static _Thread_local LIST_HEAD(h2_corked_list, berth_h2_session)
    corked_sessions = LIST_HEAD_INITIALIZER(corked_sessions);

void berth_httpd_cork(void) { cork_depth++; }

void berth_httpd_uncork(void) {
  if (cork_depth == 0 || --cork_depth > 0)
    return;
  while (!LIST_EMPTY(&corked_sessions)) {
    berth_h2_session *s = LIST_FIRST(&corked_sessions);
    LIST_REMOVE(s, corked_link);
    s->corked = false;
    berth_h2_flush(s); /* may close s's connection, not another's */
  }
}

static void uncork_session(berth_h2_session *s) {
  if (s->corked) {
    LIST_REMOVE(s, corked_link);
    s->corked = false;
  }
}

/* Moves what nghttp2 has to send into one socket write; closes the
 * connection when the session is over. */
void berth_h2_flush(berth_h2_session *s) {
  if (s->detached || s->writing || s->in_recv)
    return;
  if (cork_depth > 0) {
    if (!s->corked) {
      s->corked = true;
      LIST_INSERT_HEAD(&corked_sessions, s, corked_link);
    }
    return;
  }
  berth_buf out;
  berth_buf_init(&out, SIZE_MAX / 2);
  for (;;) {
    const uint8_t *data = NULL;
    ssize_t n = nghttp2_session_mem_send(s->ng, &data);
    if (n < 0) {
      berth_buf_free(&out);
      berth_httpd_conn_close(s->conn);
      return;
    }
    if (n == 0)
      break;
    if (berth_buf_append(&out, data, (size_t)n) != BERTH_OK) {
      berth_buf_free(&out);
      berth_httpd_conn_close(s->conn);
      return;
    }
    if (out.len >= H2_OUT_CHUNK)
      break;
  }
  if (out.len > 0) {
    size_t len = 0;
    char *bytes = berth_buf_detach(&out, &len);
    s->writing = true;
    berth_httpd_conn_write(s->conn, bytes, len, h2_on_written, s);
    return;
  }
  berth_buf_free(&out);
  if (!nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng))
    berth_httpd_conn_close(s->conn);
}

/* ---- session API (http2.h) ---- */

berth_h2_session *berth_h2_session_new(berth_httpd_conn *c, berth_errmsg *err) {
  berth_h2_session *s = calloc(1, sizeof *s);
  if (s == NULL) {
    berth_errf(err, BERTH_E_NOMEM, "http2: out of memory");
    return NULL;
  }
  LIST_INIT(&s->streams);
  s->conn = c;
  s->opts = berth_httpd_conn_options(c);
  s->budget = s->opts->max_body_bytes > SIZE_MAX / H2_BODY_BUDGET_BODIES
                  ? SIZE_MAX
                  : s->opts->max_body_bytes * H2_BODY_BUDGET_BODIES;
  if (s->budget < H2_BODY_BUDGET_MIN)
    s->budget = H2_BODY_BUDGET_MIN;
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    free(s);
    berth_errf(err, BERTH_E_NOMEM, "http2: out of memory");
    return NULL;
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs,
                                                          on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs,
                                                            on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  int rv = nghttp2_session_server_new(&s->ng, cbs, s);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    free(s);
    berth_errf(err, BERTH_E_NOMEM, "http2: %s", nghttp2_strerror(rv));
    return NULL;
  }
  size_t list = s->opts->max_head_bytes + 32 * (s->opts->max_headers + 4);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       list > UINT32_MAX ? UINT32_MAX : (uint32_t)list},
  };
  rv = nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv,
                               sizeof iv / sizeof iv[0]);
  if (rv == 0)
    rv = nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0,
                                               H2_CONN_WINDOW);
  if (rv != 0) {
    nghttp2_session_del(s->ng);
    free(s);
    berth_errf(err, BERTH_E_INTERNAL, "http2: %s", nghttp2_strerror(rv));
    return NULL;
  }
  return s;
}

int berth_h2_session_recv(berth_h2_session *s, const char *data, size_t len) {
  if (s->detached)
    return BERTH_E_IO;
  s->in_recv = true;
  ssize_t rv = nghttp2_session_mem_recv(s->ng, (const uint8_t *)data, len);
  s->in_recv = false;
  if (rv < 0)
    return BERTH_E_PARSE;
  berth_h2_flush(s);
  return BERTH_OK;
}

void berth_h2_session_goaway(berth_h2_session *s) {
  if (s->goaway_sent || s->detached)
    return;
  s->goaway_sent = true;
  nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(s->ng),
                        NGHTTP2_NO_ERROR, NULL, 0);
  berth_h2_flush(s);
}

bool berth_h2_session_idle(const berth_h2_session *s) {
  if (s == NULL)
    return true;
  const h2_stream *st;
  LIST_FOREACH(st, &s->streams, link)
  if (st->req != NULL ||
      (st->answered &&
       nghttp2_session_get_stream_local_close(s->ng, st->id) == 0))
    return false; /* in the handler, or an answer still being sent */
  return true;
}

void berth_h2_session_detach(berth_h2_session *s) {
  if (s->detached)
    return;
  s->detached = true;
  uncork_session(s); /* a detached session is never flushed */
  h2_stream *st;
  LIST_FOREACH(st, &s->streams, link) {
    if (st->req != NULL) {
      berth_http_req *r = st->req;
      st->req = NULL;
      berth_httpd_req_gone(r);
    }
  }
}

void berth_h2_session_free(berth_h2_session *s) {
  if (s == NULL)
    return;
  berth_h2_session_detach(s);
  s->freeing = true;
  nghttp2_session_del(s->ng);
  while (!LIST_EMPTY(&s->streams))
    stream_free(LIST_FIRST(&s->streams));
  free(s);
}
