/* Berth engine: internal seam between server.c (sockets; HTTP/1.1 in
 * server_h1.c, request objects in httpd_req.c) and http2.c (HTTP/2 cleartext sessions). Not a public API.
 *
 * server.c owns every socket: it reads, writes and closes. When a new
 * connection starts with the HTTP/2 connection preface it creates a
 * berth_h2_session and hands it every byte it reads from then on; the
 * session answers through berth_httpd_conn_write and asks for the end of the
 * connection with berth_httpd_conn_close.
 *
 * Requests of both protocols are one struct berth_http_req (below), built by
 * berth_httpd_req_new and freed in one place when the last reference goes.
 */
#ifndef BERTH_HTTP2_H
#define BERTH_HTTP2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http1.h"
#include "httpd.h"

typedef struct berth_httpd_conn berth_httpd_conn;
typedef struct berth_h2_session berth_h2_session;

/* ---- requests (server.c) ---- */

/* How the transport answers one request. Called at most once, only while the
 * request is neither answered nor gone. body is owned by the callee (free()
 * it), NULL when body_len is 0. headers are the handler's, unvalidated. */
typedef void (*berth_httpd_respond_fn)(berth_http_req *r, int status,
                                       const berth_http_header_kv *headers,
                                       size_t n, char *body, size_t body_len);

/* HTTP/1.1 streamed answers (server_h1.c), reached through the
 * berth_http_stream_* calls of httpd.h for requests of version 10/11:
 * chunked transfer coding on HTTP/1.1, a body delimited by the
 * connection's close on HTTP/1.0. Same contracts as httpd.h. */
int berth_h1_stream_begin(berth_http_req *r, int status,
                          const berth_http_header_kv *headers, size_t n);
int berth_h1_stream_send(berth_http_req *r, char *data, size_t len);
int berth_h1_stream_end(berth_http_req *r);
size_t berth_h1_stream_queued(const berth_http_req *r);

struct berth_http_req {
  int refs; /* the transport's one + the handler's */
  bool answered;
  bool gone;
  int version; /* 10, 11 or 20 */
  char *mem;   /* one block: fields, method, path, query, names, values */
  const char *method;
  size_t method_len;
  const char *path;
  size_t path_len;
  const char *query;
  size_t query_len; /* query NULL when absent */
  berth_h1_header *fields;
  size_t n_fields; /* inside mem; names lower-case */
  char *body;
  size_t body_len; /* owned; NULL when empty */
  char peer[64];
  uint64_t received_ns;
  void (*on_gone)(berth_http_req *, void *);
  void *on_gone_arg;
  void *user;
  /* access-log notes (berth_http_req_set_note): NUL-terminated, NULL
   * unset; in note_mem while they fit (a request id, a model name), else
   * each in its own allocation on note_heap. Both live as long as r, so a
   * note stays valid when it is set again. The request stays small enough
   * for the allocator's per-thread cache (five 257-byte arrays did not). */
  const char *notes[BERTH_HTTP_NOTE_COUNT];
  struct berth_note_block *note_heap;
  size_t note_used;
  char note_mem[160];
  /* transport link, cleared once answered or gone */
  berth_httpd_respond_fn respond;
  void *link;   /* HTTP/1.1 connection or HTTP/2 stream */
  bool xthread; /* an engine-loop copy of a network loop's request: link is
                   its loops.c proxy, stream_* go there (xthread.c) */
};

/* xthread.c: berth_http_stream_* for requests with xthread set. */
int berth_xt_stream_begin(berth_http_req *r, int status,
                          const berth_http_header_kv *headers, size_t n);
int berth_xt_stream_send(berth_http_req *r, char *data, size_t len);
int berth_xt_stream_end(berth_http_req *r, const berth_http_header_kv *trailers,
                        size_t n);
size_t berth_xt_stream_queued(const berth_http_req *r);

typedef struct berth_httpd_req_init {
  int version;
  const char *method;
  size_t method_len;
  const char *target;
  size_t target_len; /* path[?query] */
  const berth_h1_header *fields;
  size_t n_fields; /* copied */
  char *body;
  size_t body_len; /* taken, even on failure */
  const char *peer;
  berth_httpd_respond_fn respond;
  void *link;
} berth_httpd_req_init;

/* A new request holding one reference: the transport's. NULL on allocation
 * failure (the body is freed then). */
berth_http_req *berth_httpd_req_new(const berth_httpd_req_init *in);
/* Transport: the response has been handed over (called from the respond
 * function): clears the link and drops the transport's reference. */
void berth_httpd_req_release(berth_http_req *r);
/* Transport: the connection or stream died before the answer: marks the
 * request gone, runs on_gone once, drops the transport's reference. */
void berth_httpd_req_gone(berth_http_req *r);

/* ---- connections (server.c, for http2.c) ---- */

const berth_httpd_options *berth_httpd_conn_options(const berth_httpd_conn *c);
const char *berth_httpd_conn_peer(const berth_httpd_conn *c);
/* True after berth_httpd_stop_accepting. */
bool berth_httpd_conn_draining(const berth_httpd_conn *c);
/* The current IMF-fixdate for a Date header, NUL-terminated. */
const char *berth_httpd_conn_date(berth_httpd_conn *c);
/* Writes len bytes; takes data (malloc'd) in every case. cb(arg, status)
 * runs once when the write is done (status < 0: failed or cancelled because
 * the connection is closing). Returns BERTH_OK or BERTH_E_IO (then cb is not
 * called). */
int berth_httpd_conn_write(berth_httpd_conn *c, char *data, size_t len,
                           void (*cb)(void *arg, int status), void *arg);
/* Starts closing the connection (idempotent). The session is freed later,
 * after pending write callbacks have run. */
void berth_httpd_conn_close(berth_httpd_conn *c);

/* ---- HTTP/2 sessions (http2.c) ---- */

/* The 24-byte client connection preface that selects HTTP/2. */
#define BERTH_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define BERTH_H2_PREFACE_LEN 24

/* A server session on c; sends its SETTINGS. NULL on failure (err says). */
berth_h2_session *berth_h2_session_new(berth_httpd_conn *c, berth_errmsg *err);
/* Feeds bytes read from the peer (the preface included). A negative status
 * means the connection must be closed. */
int berth_h2_session_recv(berth_h2_session *s, const char *data, size_t len);
/* Graceful GOAWAY: streams already open finish, no new ones start; the
 * connection closes when the last one is done. */
void berth_h2_session_goaway(berth_h2_session *s);
/* True when no request is in the handler or being answered. */
bool berth_h2_session_idle(const berth_h2_session *s);
/* The connection is closing: every unanswered request becomes gone, and no
 * more writes are issued. */
void berth_h2_session_detach(berth_h2_session *s);
/* Frees the session (after detach, once the socket is closed). */
void berth_h2_session_free(berth_h2_session *s);

#endif
