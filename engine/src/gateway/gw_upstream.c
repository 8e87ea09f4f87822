/* Berth engine, gateway mode: the HTTP/2 client to one replica
 * (gw_upstream.h). */
#include "gw_upstream.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "buf.h"

#define UP_MAX_FIELDS 100
#define UP_OUT_CHUNK (256u << 10)
#define UP_READ_BYTES (64u << 10)
#define UP_BACKOFF_MIN_MS 100u
#define UP_BACKOFF_MAX_MS 5000u
#define UP_STREAM_WINDOW (1 << 20)
#define UP_CONN_WINDOW (16 << 20)

typedef enum { C_IDLE = 0, C_CONNECTING, C_READY, C_CLOSING } conn_state;

typedef struct gw_conn gw_conn;

/* A header block being received: copies, NUL-terminated. */
typedef struct hdr_list {
  berth_http_header_kv kv[UP_MAX_FIELDS];
  size_t n;
} hdr_list;

struct berth_gw_ustream {
  berth_gw_up *up;
  gw_conn *conn; /* NULL while waiting for a connection */
  int32_t id;
  TAILQ_ENTRY(berth_gw_ustream) link; /* up->pending or conn->streams */
  nghttp2_nv *nva;                    /* owned copy while pending */
  size_t n_nva;
  berth_gw_body *body; /* borrowed, NULL: no body */
  size_t sent;
  bool deferred;  /* the body provider waits for more bytes */
  bool cancelled; /* no callbacks */
  bool got_head;
  bool ended; /* END_STREAM seen */
  int status;
  berth_gw_stream_cbs cbs;
  void *ud;
  hdr_list hdrs;
};

TAILQ_HEAD(ustream_list, berth_gw_ustream);

struct gw_conn {
  berth_gw_up *up;
  uv_tcp_t tcp;
  uv_connect_t creq;
  nghttp2_session *ng;
  conn_state st;
  bool in_recv, writing, want_close;
  uint64_t not_before_ms;
  uint32_t backoff_ms;
  struct ustream_list streams;
  size_t n_streams;
};

struct berth_gw_up {
  uv_loop_t *loop;
  struct sockaddr_storage addr;
  unsigned n_conns;
  gw_conn *conns;
  struct ustream_list pending;
  size_t n_pending;
  bool closing;
  unsigned open_handles;
};

typedef struct up_write {
  uv_write_t w;
  gw_conn *c;
  char *bytes;
} up_write;

static void conn_flush(gw_conn *c);
static void conn_fail(gw_conn *c, const char *why);

/* ---- streams ------------------------------------------------------------ */

static void hdrs_clear(hdr_list *h) {
  for (size_t i = 0; i < h->n; i++) {
    free((char *)h->kv[i].name);
    free((char *)h->kv[i].value);
  }
  h->n = 0;
}

static void stream_free(berth_gw_ustream *s) {
  hdrs_clear(&s->hdrs);
  free(s->nva);
  free(s);
}

/* Ends s: its on_close (unless cancelled), then frees it. s is unlinked. */
static void stream_finish(berth_gw_ustream *s, bool ok, const char *why) {
  if (!s->cancelled && s->cbs.on_close != NULL) {
    s->cancelled = true;
    s->cbs.on_close(s->ud, ok, ok ? s->hdrs.kv : NULL, ok ? s->hdrs.n : 0, why);
  }
  stream_free(s);
}

static ssize_t body_read(nghttp2_session *ng, int32_t id, uint8_t *buf,
                         size_t len, uint32_t *flags, nghttp2_data_source *src,
                         void *user) {
  berth_gw_ustream *s = src->ptr;
  if (s->cancelled || s->body == NULL)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  const berth_gw_body *b = s->body;
  size_t left = b->len > s->sent ? b->len - s->sent : 0;
  size_t n = left < len ? left : len;
  if (n > 0)
    memcpy(buf, b->data + s->sent, n);
  s->sent += n;
  if (s->sent >= b->len) {
    if (b->eof) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    } else if (n == 0) {
      s->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return (ssize_t)n;
}

/* Submits s on c (s unlinked); false: nghttp2 refused it. */
static bool stream_start(gw_conn *c, berth_gw_ustream *s) {
  nghttp2_data_provider dp = {.source.ptr = s, .read_callback = body_read};
  int32_t id = nghttp2_submit_request(c->ng, NULL, s->nva, s->n_nva,
                                      s->body != NULL ? &dp : NULL, s);
  free(s->nva);
  s->nva = NULL;
  if (id < 0)
    return false;
  s->id = id;
  s->conn = c;
  TAILQ_INSERT_TAIL(&c->streams, s, link);
  c->n_streams++;
  return true;
}

/* ---- nghttp2 callbacks ------------------------------------------------- */

static berth_gw_ustream *stream_of(nghttp2_session *ng, int32_t id) {
  return nghttp2_session_get_stream_user_data(ng, id);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame,
                     const uint8_t *name, size_t nl, const uint8_t *value,
                     size_t vl, uint8_t flags, void *user) {
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  berth_gw_ustream *s = stream_of(ng, frame->hd.stream_id);
  if (s == NULL)
    return 0;
  if (nl == 7 && memcmp(name, ":status", 7) == 0) {
    int st = 0;
    for (size_t i = 0; i < vl && i < 3; i++)
      st = st * 10 + (value[i] - '0');
    s->status = st;
    return 0;
  }
  if (nl > 0 && name[0] == ':')
    return 0;
  if (s->hdrs.n >= UP_MAX_FIELDS)
    return 0; /* dropped beyond the bound */
  char *n = strndup((const char *)name, nl);
  char *v = strndup((const char *)value, vl);
  if (n == NULL || v == NULL) {
    free(n);
    free(v);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  s->hdrs.kv[s->hdrs.n++] = (berth_http_header_kv){n, v};
  return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame,
                         void *user) {
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
    return 0;
  berth_gw_ustream *s = stream_of(ng, frame->hd.stream_id);
  if (s == NULL)
    return 0;
  bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (end)
    s->ended = true;
  if (frame->hd.type != NGHTTP2_HEADERS || s->got_head)
    return 0; /* trailers stay in hdrs until the close */
  if (s->status < 200) {
    hdrs_clear(&s->hdrs); /* an interim (1xx) answer */
    s->status = 0;
    return 0;
  }
  s->got_head = true;
  if (!s->cancelled && s->cbs.on_head != NULL)
    s->cbs.on_head(s->ud, s->status, s->hdrs.kv, s->hdrs.n, end);
  hdrs_clear(&s->hdrs);
  return 0;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t id,
                   const uint8_t *data, size_t len, void *user) {
  berth_gw_ustream *s = stream_of(ng, id);
  if (s != NULL && !s->cancelled && s->cbs.on_data != NULL)
    s->cbs.on_data(s->ud, (const char *)data, len);
  return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code,
                           void *user) {
  gw_conn *c = user;
  berth_gw_ustream *s = stream_of(ng, id);
  if (s == NULL)
    return 0;
  nghttp2_session_set_stream_user_data(ng, id, NULL);
  TAILQ_REMOVE(&c->streams, s, link);
  c->n_streams--;
  char why[96];
  bool ok = code == NGHTTP2_NO_ERROR && s->ended;
  snprintf(why, sizeof why, "the replica reset the stream (%s)",
           nghttp2_http2_strerror(code));
  stream_finish(s, ok, why);
  return 0;
}

/* ---- connections --------------------------------------------------------- */

static uint64_t now_ms(const berth_gw_up *u) { return uv_now(u->loop); }

static void up_maybe_free(berth_gw_up *u) {
  if (u->closing && u->open_handles == 0) {
    free(u->conns);
    free(u);
  }
}

static void on_conn_closed(uv_handle_t *h) {
  gw_conn *c = h->data;
  c->st = C_IDLE;
  c->up->open_handles--;
  up_maybe_free(c->up);
}

static bool any_live(const berth_gw_up *u) {
  for (unsigned i = 0; i < u->n_conns; i++)
    if (u->conns[i].st == C_CONNECTING || u->conns[i].st == C_READY)
      return true;
  return false;
}

/* No connection is up or coming: the waiting streams fail. */
static void pending_fail_if_hopeless(berth_gw_up *u, const char *why) {
  if (any_live(u))
    return;
  berth_gw_ustream *s;
  while ((s = TAILQ_FIRST(&u->pending)) != NULL) {
    TAILQ_REMOVE(&u->pending, s, link);
    u->n_pending--;
    stream_finish(s, false, why);
  }
}

static void conn_fail(gw_conn *c, const char *why) {
  if (c->st == C_IDLE || c->st == C_CLOSING)
    return;
  c->st = C_CLOSING;
  berth_gw_ustream *s;
  while ((s = TAILQ_FIRST(&c->streams)) != NULL) {
    TAILQ_REMOVE(&c->streams, s, link);
    c->n_streams--;
    if (c->ng != NULL)
      nghttp2_session_set_stream_user_data(c->ng, s->id, NULL);
    stream_finish(s, false, why);
  }
  if (c->ng != NULL && !c->in_recv) {
    nghttp2_session_del(c->ng);
    c->ng = NULL;
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  pending_fail_if_hopeless(c->up, why);
}

static void on_written(uv_write_t *w, int status) {
  up_write *uw = (up_write *)w;
  gw_conn *c = uw->c;
  free(uw->bytes);
  free(uw);
  c->writing = false;
  if (status < 0)
    conn_fail(c, "cannot write to the replica");
  else
    conn_flush(c);
}

static void conn_flush(gw_conn *c) {
  if (c->st != C_READY || c->writing || c->in_recv || c->ng == NULL)
    return;
  berth_buf out;
  berth_buf_init(&out, SIZE_MAX / 2);
  for (;;) {
    const uint8_t *data = NULL;
    ssize_t n = nghttp2_session_mem_send(c->ng, &data);
    if (n < 0 || (n > 0 && berth_buf_append(&out, data, (size_t)n) != 0)) {
      berth_buf_free(&out);
      conn_fail(c, "HTTP/2 error towards the replica");
      return;
    }
    if (n == 0 || out.len >= UP_OUT_CHUNK)
      break;
  }
  if (out.len == 0) {
    berth_buf_free(&out);
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng))
      conn_fail(c, "the replica ended the connection");
    return;
  }
  up_write *uw = calloc(1, sizeof *uw);
  if (uw == NULL) {
    berth_buf_free(&out);
    conn_fail(c, "out of memory");
    return;
  }
  size_t len = 0;
  uw->c = c;
  uw->bytes = berth_buf_detach(&out, &len);
  uv_buf_t b = uv_buf_init(uw->bytes, (unsigned)len);
  c->writing = true;
  if (uv_write(&uw->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    c->writing = false;
    free(uw->bytes);
    free(uw);
    conn_fail(c, "cannot write to the replica");
  }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  b->base = malloc(UP_READ_BYTES);
  b->len = b->base != NULL ? UP_READ_BYTES : 0;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b) {
  gw_conn *c = st->data;
  if (n < 0) {
    free(b->base);
    conn_fail(c, n == UV_EOF ? "the replica closed the connection"
                             : "connection to the replica lost");
    return;
  }
  if (n > 0 && c->st == C_READY && c->ng != NULL) {
    c->in_recv = true;
    ssize_t rv =
        nghttp2_session_mem_recv(c->ng, (const uint8_t *)b->base, (size_t)n);
    c->in_recv = false;
    free(b->base);
    if (rv < 0)
      conn_fail(c, "HTTP/2 protocol error from the replica");
    else if (c->st == C_CLOSING && c->ng != NULL) {
      nghttp2_session_del(c->ng);
      c->ng = NULL;
    } else
      conn_flush(c);
    return;
  }
  free(b->base);
}

static int session_new(gw_conn *c) {
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb) != 0)
    return -1;
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  int rv = nghttp2_session_client_new(&c->ng, cb, c);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0)
    return -1;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, UP_STREAM_WINDOW}};
  if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
      nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                            UP_CONN_WINDOW) != 0) {
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    return -1;
  }
  return 0;
}

/* Hands the waiting streams to ready connections. */
static void dispatch_pending(berth_gw_up *u) {
  berth_gw_ustream *s;
  while ((s = TAILQ_FIRST(&u->pending)) != NULL) {
    gw_conn *best = NULL;
    for (unsigned i = 0; i < u->n_conns; i++) {
      gw_conn *c = &u->conns[i];
      if (c->st == C_READY && (best == NULL || c->n_streams < best->n_streams))
        best = c;
    }
    if (best == NULL)
      return;
    TAILQ_REMOVE(&u->pending, s, link);
    u->n_pending--;
    if (!stream_start(best, s))
      stream_finish(s, false, "cannot open a stream to the replica");
  }
}

static void on_connect(uv_connect_t *req, int status) {
  gw_conn *c = req->data;
  berth_gw_up *u = c->up;
  if (c->st != C_CONNECTING)
    return; /* closed meanwhile */
  if (status == 0 && session_new(c) == 0 &&
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) {
    c->st = C_READY;
    c->backoff_ms = 0;
    dispatch_pending(u);
    for (unsigned i = 0; i < u->n_conns; i++)
      conn_flush(&u->conns[i]);
    return;
  }
  c->backoff_ms = c->backoff_ms == 0                       ? UP_BACKOFF_MIN_MS
                  : c->backoff_ms >= UP_BACKOFF_MAX_MS / 2 ? UP_BACKOFF_MAX_MS
                                                           : c->backoff_ms * 2;
  c->not_before_ms = now_ms(u) + c->backoff_ms;
  conn_fail(c, status < 0 ? "cannot connect to the replica"
                          : "cannot set up HTTP/2 towards the replica");
}

static void conn_connect(gw_conn *c) {
  berth_gw_up *u = c->up;
  if (uv_tcp_init(u->loop, &c->tcp) != 0)
    return;
  u->open_handles++;
  c->tcp.data = c;
  c->creq.data = c;
  c->st = C_CONNECTING;
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&u->addr,
                     on_connect) != 0) {
    c->backoff_ms = UP_BACKOFF_MAX_MS;
    c->not_before_ms = now_ms(u) + c->backoff_ms;
    c->st = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  }
}

/* Starts connecting every idle connection whose backoff is over. */
static void pool_warm(berth_gw_up *u) {
  uint64_t now = now_ms(u);
  for (unsigned i = 0; i < u->n_conns; i++)
    if (u->conns[i].st == C_IDLE && now >= u->conns[i].not_before_ms)
      conn_connect(&u->conns[i]);
}

/* ---- API ----------------------------------------------------------------- */

berth_gw_up *berth_gw_up_new(uv_loop_t *loop, const char *host, uint16_t port,
                             unsigned n_conns) {
  berth_gw_up *u = calloc(1, sizeof *u);
  if (u == NULL)
    return NULL;
  u->conns = calloc(n_conns ? n_conns : 1, sizeof *u->conns);
  if (u->conns == NULL ||
      (uv_ip4_addr(host, port, (struct sockaddr_in *)&u->addr) != 0 &&
       uv_ip6_addr(host, port, (struct sockaddr_in6 *)&u->addr) != 0)) {
    free(u->conns);
    free(u);
    return NULL;
  }
  u->loop = loop;
  u->n_conns = n_conns ? n_conns : 1;
  TAILQ_INIT(&u->pending);
  for (unsigned i = 0; i < u->n_conns; i++) {
    u->conns[i].up = u;
    TAILQ_INIT(&u->conns[i].streams);
  }
  return u;
}

void berth_gw_up_close(berth_gw_up *u) {
  if (u == NULL || u->closing)
    return;
  u->closing = true;
  berth_gw_ustream *s;
  while ((s = TAILQ_FIRST(&u->pending)) != NULL) {
    TAILQ_REMOVE(&u->pending, s, link);
    u->n_pending--;
    stream_finish(s, false, "the gateway is closing");
  }
  for (unsigned i = 0; i < u->n_conns; i++)
    conn_fail(&u->conns[i], "the gateway is closing");
  up_maybe_free(u);
}

size_t berth_gw_up_streams(const berth_gw_up *u) {
  size_t n = u->n_pending;
  for (unsigned i = 0; i < u->n_conns; i++)
    n += u->conns[i].n_streams;
  return n;
}

/* A copy of h as nghttp2 name-value pairs in one allocation. */
static nghttp2_nv *nva_copy(const berth_http_header_kv *h, size_t n) {
  size_t bytes = n * sizeof(nghttp2_nv);
  for (size_t i = 0; i < n; i++)
    bytes += strlen(h[i].name) + strlen(h[i].value) + 2;
  nghttp2_nv *nv = malloc(bytes ? bytes : 1);
  if (nv == NULL)
    return NULL;
  char *p = (char *)(nv + n);
  for (size_t i = 0; i < n; i++) {
    size_t nl = strlen(h[i].name), vl = strlen(h[i].value);
    memcpy(p, h[i].name, nl + 1);
    nv[i].name = (uint8_t *)p;
    nv[i].namelen = nl;
    p += nl + 1;
    memcpy(p, h[i].value, vl + 1);
    nv[i].value = (uint8_t *)p;
    nv[i].valuelen = vl;
    p += vl + 1;
    nv[i].flags = NGHTTP2_NV_FLAG_NONE;
  }
  return nv;
}

berth_gw_ustream *berth_gw_up_submit(berth_gw_up *u,
                                     const berth_http_header_kv *h, size_t n,
                                     berth_gw_body *body,
                                     const berth_gw_stream_cbs *cbs, void *ud,
                                     berth_errmsg *err) {
  if (u->closing) {
    berth_errf(err, BERTH_E_UNAVAILABLE, "the replica was removed");
    return NULL;
  }
  pool_warm(u);
  gw_conn *best = NULL;
  for (unsigned i = 0; i < u->n_conns; i++) {
    gw_conn *c = &u->conns[i];
    if (c->st == C_READY && (best == NULL || c->n_streams < best->n_streams))
      best = c;
  }
  if (best == NULL && !any_live(u)) {
    berth_errf(err, BERTH_E_UNAVAILABLE,
               "cannot connect to the replica (reconnecting)");
    return NULL;
  }
  berth_gw_ustream *s = calloc(1, sizeof *s);
  if (s == NULL || (s->nva = nva_copy(h, n)) == NULL) {
    free(s);
    berth_errf(err, BERTH_E_NOMEM, "out of memory");
    return NULL;
  }
  s->up = u;
  s->n_nva = n;
  s->body = body;
  s->cbs = *cbs;
  s->ud = ud;
  if (best == NULL) {
    TAILQ_INSERT_TAIL(&u->pending, s, link);
    u->n_pending++;
    return s;
  }
  if (!stream_start(best, s)) {
    stream_free(s);
    berth_errf(err, BERTH_E_UNAVAILABLE, "cannot open a stream to the replica");
    return NULL;
  }
  conn_flush(best);
  return s;
}

void berth_gw_ustream_resume(berth_gw_ustream *s) {
  if (s->conn == NULL || !s->deferred || s->cancelled)
    return;
  s->deferred = false;
  if (s->conn->ng != NULL)
    nghttp2_session_resume_data(s->conn->ng, s->id);
  conn_flush(s->conn);
}

size_t berth_gw_ustream_sent(const berth_gw_ustream *s) { return s->sent; }

void berth_gw_ustream_rebase(berth_gw_ustream *s, size_t n) {
  s->sent = n <= s->sent ? s->sent - n : 0;
}

void berth_gw_ustream_cancel(berth_gw_ustream *s) {
  if (s == NULL || s->cancelled)
    return;
  s->cancelled = true;
  s->body = NULL;
  if (s->conn == NULL) {
    TAILQ_REMOVE(&s->up->pending, s, link);
    s->up->n_pending--;
    stream_free(s);
    return;
  }
  gw_conn *c = s->conn;
  if (c->ng != NULL) {
    nghttp2_submit_rst_stream(c->ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
    conn_flush(c);
  }
}
