/* Berth engine: the HTTP/2 session's structures, shared by http2.c (the
 * session, its streams, nghttp2 callbacks, output) and http2_stream.c
 * (streamed answers). Internal to those two files.
 */
#ifndef BERTH_HTTP2_INT_H
#define BERTH_HTTP2_INT_H

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include <sys/queue.h>

#include "http2.h"

/* One queued piece of a streamed answer. */
typedef struct h2_chunk {
  STAILQ_ENTRY(h2_chunk) link; /* the stream's queue */
  char *data;                  /* owned */
  size_t len, off;
} h2_chunk;

typedef struct h2_stream {
  berth_h2_session *s;
  LIST_ENTRY(h2_stream) link; /* the session's streams */
  int32_t id;
  berth_buf fields;    /* "name\0value\0"..., max = max_head_bytes */
  size_t n_fields;     /* regular (non-pseudo) fields */
  berth_buf body;      /* max = max_body_bytes */
  int err_status;      /* 413/431/503 decided before the handler */
  bool head_req;       /* :method HEAD */
  bool dispatched;     /* given to the handler */
  bool answered;       /* a response is submitted */
  bool reset;          /* we sent RST_STREAM */
  size_t discarded;    /* DATA bytes dropped after an early answer */
  berth_http_req *req; /* in the handler, not answered */
  char *resp_body;     /* owned; sent by h2_read_body */
  size_t resp_len, resp_off;
  /* streamed request (opts->on_body) */
  bool streaming;
  bool body_ended; /* on_body(end) delivered */
  size_t held;     /* what the handler said it buffers */
  /* streamed answer (berth_http_stream_*) */
  bool resp_begun;
  bool resp_ending;   /* end asked: trailers after the queue */
  bool resp_deferred; /* the data provider waits for more */
  STAILQ_HEAD(h2_chunk_queue, h2_chunk) queue; /* owned chunks */
  size_t q_bytes;       /* queued and not yet taken by nghttp2 */
  nghttp2_nv *trailers; /* owned block (names and values inside) */
  size_t n_trailers;
} h2_stream;

struct berth_h2_session {
  berth_httpd_conn *conn;
  const berth_httpd_options *opts;
  nghttp2_session *ng;
  LIST_HEAD(h2_stream_list, h2_stream) streams; /* owned */
  bool writing;  /* a socket write is in flight */
  bool in_recv;  /* inside nghttp2_session_mem_recv: no mem_send now */
  bool detached; /* the connection is closing */
  bool freeing;
  bool goaway_sent;
  size_t buffered; /* request body bytes held by undispatched streams */
  size_t budget;   /* ... at most this (503 beyond) */
  bool corked;     /* its flush waits for berth_httpd_uncork (httpd.h) */
  LIST_ENTRY(berth_h2_session) corked_link;
};

/* Data provider of a streamed answer: the queued chunks, then EOF and the
 * trailers once the end is asked; deferred while the queue is empty. */
ssize_t berth_h2_read_stream(nghttp2_session *ng, int32_t stream_id,
                             uint8_t *buf, size_t length, uint32_t *data_flags,
                             nghttp2_data_source *source, void *user_data);
/* Builds the header list of an answer into *nva (pointing into *mem and
 * the caller's strings, valid until both are freed): :status, the
 * handler's fields (lower-cased; invalid and connection-specific ones
 * dropped), content-length when length is not NULL, date when with_date.
 * status: 0 (none, for trailers) or 200..599. */
int berth_h2_build_nva(berth_h2_session *s, int status,
                       const berth_http_header_kv *headers, size_t n,
                       const char *length, bool with_date, char status_text[8],
                       nghttp2_nv **nva_out, char **mem_out, size_t *k_out);
/* Lets a deferred data provider run again. */
void berth_h2_stream_resume(h2_stream *st);
/* Moves what nghttp2 has to send into one socket write; closes the
 * connection when the session is over. */
void berth_h2_flush(berth_h2_session *s);

#endif
