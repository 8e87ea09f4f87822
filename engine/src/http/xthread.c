/* Berth engine: what crosses between the network loops and the engine loop
 * (loops_int.h): the queues, the messages, and the request pairs.
 *
 * A network loop's listener hands each request to berth_xt_net_handle,
 * which copies its head into an engine request (the body moves, not
 * copied), ties the two with a link and posts XM_REQ. On the engine loop
 * the caller's handler gets the copy; its answer (berth_http_respond*,
 * berth_http_stream_*) becomes XM_RESPOND / XM_BEGIN / XM_SEND / XM_END,
 * which the network loop replays on the network request. A client that
 * leaves makes the network request gone: XM_GONE makes the copy gone on
 * the engine loop (on_gone runs there). Streamed request bodies (gRPC) go
 * as XM_BODY to the caller's on_body.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loops_int.h"

/* ---- queues ---- */

static void on_xq_readable(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  berth_xq *q = h->data;
  uint64_t n;
  /* reset the counter first: a post after this wakes the loop again */
  while (read(q->efd, &n, sizeof n) < 0 && errno == EINTR)
    ;
  q->cb(q);
}

int berth_xq_init(berth_xq *q, uv_loop_t *loop, berth_xq_cb cb, void *data) {
  q->head = q->tail = NULL;
  q->closed = false;
  q->cb = cb;
  q->data = data;
  q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (q->efd < 0)
    return BERTH_E_IO;
  if (uv_mutex_init(&q->mu) != 0) {
    close(q->efd);
    return BERTH_E_NOMEM;
  }
  if (uv_poll_init(loop, &q->poll, q->efd) != 0) {
    uv_mutex_destroy(&q->mu);
    close(q->efd);
    return BERTH_E_IO;
  }
  q->poll.data = q;
  /* fails only on bad arguments (libuv registers the fd at the loop's
   * next iteration) */
  (void)uv_poll_start(&q->poll, UV_READABLE, on_xq_readable);
  return BERTH_OK;
}

bool berth_xq_post(berth_xq *q, berth_xmsg *m) {
  m->next = NULL;
  uv_mutex_lock(&q->mu);
  if (q->closed) {
    uv_mutex_unlock(&q->mu);
    return false;
  }
  bool was_empty = q->head == NULL;
  if (was_empty)
    q->head = m;
  else
    q->tail->next = m;
  q->tail = m;
  /* under the lock: the consumer cannot close the eventfd meanwhile */
  if (was_empty) {
    uint64_t one = 1;
    while (write(q->efd, &one, sizeof one) < 0 && errno == EINTR)
      ;
  }
  uv_mutex_unlock(&q->mu);
  return true;
}

berth_xmsg *berth_xq_take(berth_xq *q) {
  uv_mutex_lock(&q->mu);
  berth_xmsg *m = q->head;
  q->head = q->tail = NULL;
  uv_mutex_unlock(&q->mu);
  return m;
}

void berth_xq_close(berth_xq *q, uv_close_cb cb) {
  uv_mutex_lock(&q->mu);
  q->closed = true;
  uv_mutex_unlock(&q->mu);
  uv_close((uv_handle_t *)&q->poll, cb);
}

void berth_xq_destroy(berth_xq *q) {
  berth_xmsg *m = berth_xq_take(q);
  while (m != NULL) {
    berth_xmsg *next = m->next;
    berth_xmsg_free(m);
    m = next;
  }
  uv_mutex_destroy(&q->mu);
  close(q->efd);
}

/* ---- links and messages ---- */

void berth_xlink_unref(berth_xlink *l) {
  if (l != NULL && atomic_fetch_sub(&l->refs, 1) == 1)
    free(l);
}

berth_xmsg *berth_xmsg_new(int kind, berth_xlink *l) {
  berth_xmsg *m = calloc(1, sizeof *m);
  if (m == NULL)
    return NULL;
  m->kind = kind;
  m->link = l;
  if (l != NULL)
    atomic_fetch_add(&l->refs, 1);
  return m;
}

void berth_xmsg_free(berth_xmsg *m) {
  free(m->data);
  free(m->headers);
  berth_xlink_unref(m->link);
  free(m);
}

/* Copies n header fields into one owned block; false on no memory. */
static bool copy_headers(berth_xmsg *m, const berth_http_header_kv *h,
                         size_t n) {
  if (n == 0)
    return true;
  size_t size = n * sizeof *h;
  for (size_t i = 0; i < n; i++)
    size += strlen(h[i].name) + strlen(h[i].value) + 2;
  berth_http_header_kv *out = malloc(size);
  if (out == NULL)
    return false;
  char *p = (char *)(out + n);
  for (size_t i = 0; i < n; i++) {
    size_t nl = strlen(h[i].name) + 1, vl = strlen(h[i].value) + 1;
    memcpy(p, h[i].name, nl);
    out[i].name = p;
    p += nl;
    memcpy(p, h[i].value, vl);
    out[i].value = p;
    p += vl;
  }
  m->headers = out;
  m->n = n;
  return true;
}

void berth_xt_post_net(berth_netloop *nl, berth_xmsg *m) {
  if (!berth_xq_post(&nl->in, m))
    berth_xmsg_free(m); /* the loop has ended: nobody is left to answer */
}

/* ---- the network side ---- */

/* The network request is answered: the link lets go of it. */
static void net_detach(berth_xlink *l) {
  berth_http_req *nreq = l->nreq;
  if (nreq == NULL)
    return;
  l->nreq = NULL;
  berth_http_req_on_gone(nreq, NULL, NULL);
  berth_http_req_set_user(nreq, NULL);
  berth_http_req_unref(nreq);
  berth_xlink_unref(l); /* the network side's reference */
}

static void net_on_gone(berth_http_req *nreq, void *arg) {
  berth_xlink *l = arg;
  l->nreq = NULL;
  berth_http_req_set_user(nreq, NULL);
  berth_http_req_unref(nreq);
  berth_xmsg *m = calloc(1, sizeof *m);
  if (m == NULL) {
    /* The engine copy then stays open until its handler answers (the
     * answer is dropped): no memory for the news. */
    berth_xlink_unref(l);
    return;
  }
  m->kind = XM_GONE;
  m->link = l; /* the network side's reference moves to the message */
  berth_xq_post(&l->nl->pool->in, m);
}

static void eng_respond(berth_http_req *r, int status,
                        const berth_http_header_kv *headers, size_t n,
                        char *body, size_t body_len);

/* The engine copy of nreq: its head copied, its body moved. */
static berth_http_req *copy_req(berth_http_req *nreq, berth_xlink *l) {
  berth_httpd_req_init in = {
      .version = nreq->version,
      .method = nreq->method,
      .method_len = nreq->method_len,
      .target = nreq->path,
      .target_len =
          nreq->path_len + (nreq->query != NULL ? nreq->query_len + 1 : 0),
      .fields = nreq->fields,
      .n_fields = nreq->n_fields,
      .body = nreq->body,
      .body_len = nreq->body_len,
      .peer = nreq->peer,
      .respond = eng_respond,
      .link = l,
  };
  nreq->body = NULL;
  nreq->body_len = 0;
  berth_http_req *e = berth_httpd_req_new(&in);
  if (e != NULL) {
    e->xthread = true;
    e->received_ns = nreq->received_ns;
  }
  return e;
}

void berth_xt_net_handle(berth_http_req *nreq, void *arg) {
  berth_netchild *ch = arg;
  berth_xlink *l = calloc(1, sizeof *l);
  berth_xmsg *m = calloc(1, sizeof *m);
  berth_http_req *e = l != NULL && m != NULL ? copy_req(nreq, l) : NULL;
  if (e == NULL) {
    static const berth_http_header_kv none[1] = {{NULL, NULL}};
    free(l);
    free(m);
    berth_http_respond(nreq, 503, none, 0, NULL, 0);
    return;
  }
  /* the network side, the engine side and the XM_REQ message */
  atomic_init(&l->refs, 3);
  l->group = ch->group;
  l->nl = ch->nl;
  l->nreq = nreq;
  l->ereq = e;
  berth_http_req_ref(nreq);
  berth_http_req_set_user(nreq, l);
  berth_http_req_on_gone(nreq, net_on_gone, l);
  atomic_fetch_add(&ch->nl->requests, 1);
  m->kind = XM_REQ;
  m->link = l;
  berth_xq_post(&ch->nl->pool->in, m); /* open while any loop runs */
}

size_t berth_xt_net_on_body(berth_http_req *nreq, const char *data, size_t len,
                            bool end, void *arg) {
  (void)arg;
  berth_xlink *l = berth_http_req_user(nreq);
  if (l == NULL)
    return 0;
  berth_xmsg *m = berth_xmsg_new(XM_BODY, l);
  if (m != NULL && len > 0 && (m->data = malloc(len)) == NULL) {
    berth_xmsg_free(m);
    m = NULL;
  }
  if (m == NULL)
    return SIZE_MAX / 2; /* over any budget: the stream is reset */
  if (len > 0)
    memcpy(m->data, data, len);
  m->len = len;
  m->end = end;
  atomic_fetch_add(&l->inflight, len);
  berth_xq_post(&l->nl->pool->in, m);
  return atomic_load(&l->held) + atomic_load(&l->inflight);
}

static void net_begin(berth_xlink *l, berth_xmsg *m) {
  if (berth_http_stream_begin(l->nreq, m->status, m->headers, m->n) == BERTH_OK)
    return;
  static const berth_http_header_kv none[1] = {{NULL, NULL}};
  berth_http_respond(l->nreq, 500, none, 0, NULL, 0);
  net_detach(l);
}

void berth_xt_net_msg(berth_xmsg *m) {
  berth_xlink *l = m->link;
  if (m->kind == XM_SEND)
    atomic_fetch_sub(&l->pending, m->len);
  if (l->nreq == NULL)
    return; /* gone: the engine learns it from XM_GONE */
  switch (m->kind) {
  case XM_RESPOND:
    berth_http_respond_take(l->nreq, m->status, m->headers, m->n, m->data,
                            m->len);
    m->data = NULL;
    net_detach(l);
    break;
  case XM_BEGIN:
    net_begin(l, m);
    break;
  case XM_SEND: {
    berth_http_req *nreq = l->nreq;
    berth_http_req_ref(nreq); /* the send may make it gone (and freed) */
    berth_http_stream_send(nreq, m->data, m->len);
    m->data = NULL;
    if (!berth_http_req_is_gone(nreq))
      atomic_store(&l->netq, berth_http_stream_queued(nreq));
    berth_http_req_unref(nreq);
    break;
  }
  case XM_END:
    berth_http_stream_end(l->nreq, m->headers, m->n);
    net_detach(l);
    break;
  default:
    break;
  }
}

/* ---- the engine side ---- */

void berth_xt_eng_msg(berth_xmsg *m) {
  berth_xlink *l = m->link;
  berth_http_req *r = l->ereq;
  const berth_httpd_options *o = &l->group->opts;
  switch (m->kind) {
  case XM_REQ:
    o->handler(r, o->handler_data);
    break;
  case XM_BODY:
    atomic_fetch_sub(&l->inflight, m->len);
    if (r != NULL && !r->answered && !r->gone && o->on_body != NULL)
      atomic_store(&l->held, o->on_body(r, m->data != NULL ? m->data : "",
                                        m->len, m->end, o->handler_data));
    break;
  case XM_GONE:
    if (r != NULL) {
      l->ereq = NULL;
      berth_httpd_req_gone(r); /* on_gone runs here */
      berth_xlink_unref(l);    /* the engine side's reference */
    }
    break;
  default:
    break;
  }
}

/* The engine copy is answered (httpd_req.c: r->answered is set). */
static void eng_respond(berth_http_req *r, int status,
                        const berth_http_header_kv *headers, size_t n,
                        char *body, size_t body_len) {
  berth_xlink *l = r->link;
  berth_xmsg *m = calloc(1, sizeof *m);
  if (m != NULL && !copy_headers(m, headers, n)) {
    free(body); /* no memory for the answer: 503 without a body */
    body = NULL;
    body_len = 0;
    status = 503;
  }
  l->ereq = NULL;
  berth_httpd_req_release(r);
  if (m == NULL) { /* the client waits until it leaves */
    free(body);
    berth_xlink_unref(l);
    return;
  }
  m->kind = XM_RESPOND;
  m->link = l; /* the engine side's reference moves to the message */
  m->status = status;
  m->data = body;
  m->len = body_len;
  berth_xt_post_net(l->nl, m);
}

/* The request's link while it may still answer, else NULL (*rc set). */
static berth_xlink *live(const berth_http_req *r, int *rc) {
  *rc = BERTH_OK;
  if (r->answered || r->gone || r->link == NULL) {
    *rc = BERTH_E_IO;
    return NULL;
  }
  return r->link;
}

int berth_xt_stream_begin(berth_http_req *r, int status,
                          const berth_http_header_kv *headers, size_t n) {
  int rc;
  berth_xlink *l = live(r, &rc);
  if (l == NULL)
    return rc;
  if (l->begun)
    return BERTH_E_INVALID;
  berth_xmsg *m = berth_xmsg_new(XM_BEGIN, l);
  if (m == NULL || !copy_headers(m, headers, n)) {
    if (m != NULL)
      berth_xmsg_free(m);
    return BERTH_E_NOMEM;
  }
  m->status = status;
  l->begun = true;
  berth_xt_post_net(l->nl, m);
  return BERTH_OK;
}

int berth_xt_stream_send(berth_http_req *r, char *data, size_t len) {
  int rc;
  berth_xlink *l = live(r, &rc);
  if (l != NULL && !l->begun)
    rc = BERTH_E_INVALID;
  berth_xmsg *m = rc == BERTH_OK && len > 0 ? berth_xmsg_new(XM_SEND, l) : NULL;
  if (m == NULL) {
    free(data);
    return rc != BERTH_OK ? rc : len == 0 ? BERTH_OK : BERTH_E_NOMEM;
  }
  m->data = data;
  m->len = len;
  atomic_fetch_add(&l->pending, len);
  berth_xt_post_net(l->nl, m);
  return BERTH_OK;
}

int berth_xt_stream_end(berth_http_req *r, const berth_http_header_kv *trailers,
                        size_t n) {
  int rc;
  berth_xlink *l = live(r, &rc);
  if (l == NULL)
    return rc;
  berth_xmsg *m = calloc(1, sizeof *m);
  if (m != NULL && !copy_headers(m, trailers, n)) {
    free(m);
    m = NULL;
    rc = BERTH_E_NOMEM; /* ends without trailers */
  }
  if (m == NULL && (m = calloc(1, sizeof *m)) == NULL) {
    berth_http_respond(r, 500, NULL, 0, NULL, 0);
    return BERTH_E_NOMEM;
  }
  m->kind = XM_END;
  m->link = l; /* the engine side's reference moves to the message */
  r->answered = true;
  l->ereq = NULL;
  berth_httpd_req_release(r);
  berth_xt_post_net(l->nl, m);
  return rc;
}

size_t berth_xt_stream_queued(const berth_http_req *r) {
  if (r->gone || r->link == NULL)
    return 0;
  const berth_xlink *l = r->link;
  return atomic_load(&l->pending) + atomic_load(&l->netq);
}
