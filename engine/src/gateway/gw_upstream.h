/* Berth engine, gateway mode: the HTTP/2 client to one replica — a small
 * pool of kept-alive h2c connections (prior knowledge, libuv TCP, nghttp2),
 * many streams per connection, reconnects with backoff (100 ms doubling to
 * 5 s after each failed connect).
 *
 * A request is a berth_gw_ustream: its head (pseudo-headers first), a body
 * source that the caller owns and may grow (gRPC streams its DATA), and
 * callbacks for the answer. Callbacks never run inside berth_gw_up_submit.
 *
 * Ownership: berth_gw_up is created and closed by gateway.c; closing fails
 * every open stream (on_close with ok false) and frees itself once its
 * handles are closed. A stream belongs to this module: it is freed after
 * on_close, or at berth_gw_ustream_cancel (no callback after that). The
 * body source must stay valid until then.
 */
#ifndef BERTH_GW_UPSTREAM_H
#define BERTH_GW_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "berth/error.h"
#include "httpd.h"

typedef struct berth_gw_up berth_gw_up;
typedef struct berth_gw_ustream berth_gw_ustream;

/* The request body: data[0..len) so far; eof once the last byte is in.
 * The caller may realloc data (and update it) between calls. */
typedef struct berth_gw_body {
  const char *data;
  size_t len;
  bool eof;
} berth_gw_body;

typedef struct berth_gw_stream_cbs {
  /* The response head (status >= 200; headers without pseudo-headers,
   * valid during the call). end: the head ended the stream (gRPC's
   * Trailers-Only). */
  void (*on_head)(void *ud, int status, const berth_http_header_kv *h, size_t n,
                  bool end);
  /* Body bytes (valid during the call). */
  void (*on_data)(void *ud, const char *data, size_t len);
  /* The stream is over. ok: it ended cleanly; trailers (n, may be 0)
   * follow the body. !ok: it failed (why: a short reason); whether the
   * replica had sent a head is what on_head told. */
  void (*on_close)(void *ud, bool ok, const berth_http_header_kv *trailers,
                   size_t n, const char *why);
} berth_gw_stream_cbs;

berth_gw_up *berth_gw_up_new(uv_loop_t *loop, const char *host, uint16_t port,
                             unsigned n_conns);
/* Fails every stream, closes the connections, frees itself later. */
void berth_gw_up_close(berth_gw_up *u);
/* Open streams (submitted or waiting for a connection). */
size_t berth_gw_up_streams(const berth_gw_up *u);

/* Sends a request: h (n fields, pseudo-headers :method, :scheme, :path,
 * :authority first; names lower-case), body (NULL: none). NULL with err
 * when no connection can be made now (every connection is waiting out a
 * backoff) or out of memory; nothing was sent then. */
berth_gw_ustream *berth_gw_up_submit(berth_gw_up *u,
                                     const berth_http_header_kv *h, size_t n,
                                     berth_gw_body *body,
                                     const berth_gw_stream_cbs *cbs, void *ud,
                                     berth_errmsg *err);
/* The body grew (or reached eof): send on. */
void berth_gw_ustream_resume(berth_gw_ustream *s);
/* Body bytes already handed to the connection. */
size_t berth_gw_ustream_sent(const berth_gw_ustream *s);
/* The caller dropped the first n bytes of its body (already sent). */
void berth_gw_ustream_rebase(berth_gw_ustream *s, size_t n);
/* Resets the stream (CANCEL); no callback runs afterwards. */
void berth_gw_ustream_cancel(berth_gw_ustream *s);

#endif
