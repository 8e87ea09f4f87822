/* Berth engine: streamed answers on HTTP/2 (berth_http_stream_*, httpd.h):
 * a head, body chunks queued as they are produced and handed to nghttp2 by
 * the data provider in http2.c, and trailers after the last chunk. The
 * session, its streams and the nghttp2 callbacks are http2.c.
 */
#include "http2.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "http2_int.h"

/* ---- streamed answers (httpd.h) ---- */

/* The request's live stream, or NULL (with *rc set) when it has none. */
static h2_stream *stream_of(berth_http_req *r, int *rc) {
  *rc = BERTH_OK;
  if (r->version != 20) {
    *rc = BERTH_E_UNSUPPORTED;
    return NULL;
  }
  if (r->answered || r->gone || r->link == NULL) {
    *rc = BERTH_E_IO;
    return NULL;
  }
  h2_stream *st = r->link;
  if (st->s->detached) {
    *rc = BERTH_E_IO;
    return NULL;
  }
  return st;
}

int berth_http_stream_begin(berth_http_req *r, int status,
                            const berth_http_header_kv *headers, size_t n) {
  if (r->xthread)
    return berth_xt_stream_begin(r, status, headers, n);
  if (r->version != 20)
    return berth_h1_stream_begin(r, status, headers, n);
  int rc;
  h2_stream *st = stream_of(r, &rc);
  if (st == NULL)
    return rc;
  if (st->resp_begun)
    return BERTH_E_INVALID;
  berth_h2_session *s = st->s;
  char status_text[8];
  nghttp2_nv *nva;
  char *mem;
  size_t k;
  if (status < 200 || status > 599)
    status = 500;
  if (berth_h2_build_nva(s, status, headers, n, NULL, true, status_text, &nva,
                         &mem, &k) != BERTH_OK)
    return BERTH_E_NOMEM;
  nghttp2_data_provider prd = {.source.ptr = st,
                               .read_callback = berth_h2_read_stream};
  int rv = nghttp2_submit_response(s->ng, st->id, nva, k, &prd);
  free(nva);
  free(mem);
  if (rv != 0)
    return BERTH_E_IO;
  st->resp_begun = true;
  berth_h2_flush(s);
  return BERTH_OK;
}

int berth_http_stream_send(berth_http_req *r, char *data, size_t len) {
  if (r->xthread)
    return berth_xt_stream_send(r, data, len);
  if (r->version != 20)
    return berth_h1_stream_send(r, data, len);
  int rc;
  h2_stream *st = stream_of(r, &rc);
  if (st != NULL && !st->resp_begun)
    rc = BERTH_E_INVALID;
  h2_chunk *c = rc == BERTH_OK && len > 0 ? malloc(sizeof *c) : NULL;
  if (rc != BERTH_OK || len == 0 || c == NULL) {
    free(data);
    return rc != BERTH_OK ? rc : len == 0 ? BERTH_OK : BERTH_E_NOMEM;
  }
  *c = (h2_chunk){.data = data, .len = len, .off = 0};
  st->q_bytes += len;
  STAILQ_INSERT_TAIL(&st->queue, c, link);
  berth_h2_stream_resume(st);
  berth_h2_flush(st->s);
  return BERTH_OK;
}

size_t berth_http_stream_queued(const berth_http_req *r) {
  if (r->xthread)
    return berth_xt_stream_queued(r);
  if (r->version != 20)
    return berth_h1_stream_queued(r);
  if (r->gone || r->link == NULL)
    return 0;
  const h2_stream *st = r->link;
  return st->q_bytes;
}

/* Copies trailers into one owned block of nghttp2_nv and strings. */
static int copy_trailers(h2_stream *st, const berth_http_header_kv *t,
                         size_t n) {
  char status_text[8];
  nghttp2_nv *nva;
  char *mem;
  size_t k;
  if (berth_h2_build_nva(st->s, 0, t, n, NULL, false, status_text, &nva, &mem,
                         &k) != BERTH_OK)
    return BERTH_E_NOMEM;
  size_t strings = 0;
  for (size_t i = 0; i < k; i++)
    strings += nva[i].namelen + nva[i].valuelen;
  nghttp2_nv *block = malloc(k * sizeof *block + strings + 1);
  if (block == NULL) {
    free(nva);
    free(mem);
    return BERTH_E_NOMEM;
  }
  uint8_t *p = (uint8_t *)(block + k);
  for (size_t i = 0; i < k; i++) {
    block[i] = nva[i];
    memcpy(p, nva[i].name, nva[i].namelen);
    block[i].name = p;
    p += nva[i].namelen;
    memcpy(p, nva[i].value, nva[i].valuelen);
    block[i].value = p;
    p += nva[i].valuelen;
  }
  free(nva);
  free(mem);
  free(st->trailers);
  st->trailers = block;
  st->n_trailers = k;
  return BERTH_OK;
}

int berth_http_stream_end(berth_http_req *r,
                          const berth_http_header_kv *trailers, size_t n) {
  if (r->xthread)
    return berth_xt_stream_end(r, trailers, n);
  if (r->version != 20)
    return berth_h1_stream_end(r); /* HTTP/1.1 sends no trailers */
  int rc;
  h2_stream *st = stream_of(r, &rc);
  if (st == NULL)
    return rc;
  berth_h2_session *s = st->s;
  if (!st->resp_begun) { /* Trailers-Only: one HEADERS frame ends the stream */
    char status_text[8];
    nghttp2_nv *nva;
    char *mem;
    size_t k;
    rc = berth_h2_build_nva(s, 200, trailers, n, NULL, false, status_text, &nva,
                            &mem, &k);
    if (rc == BERTH_OK) {
      if (nghttp2_submit_response(s->ng, st->id, nva, k, NULL) != 0)
        rc = BERTH_E_IO;
      free(nva);
      free(mem);
    }
  } else if (n > 0) {
    rc = copy_trailers(st, trailers, n);
  }
  if (rc != BERTH_OK)
    nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
  st->answered = true;
  st->resp_ending = true;
  st->req = NULL;
  r->answered = true;
  berth_h2_stream_resume(st);
  berth_httpd_req_release(r);
  berth_h2_flush(s);
  return rc;
}
