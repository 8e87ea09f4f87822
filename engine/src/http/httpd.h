/* Berth engine: the HTTP server transport (server.c for listening,
 * server_h1.c for HTTP/1.1 connections, http2.c for HTTP/2 cleartext with
 * prior knowledge on the same port).
 *
 * The transport turns bytes into berth_http_req objects and hands each one
 * to a handler (rest.c); the handler answers now or later with
 * berth_http_respond. Handlers never see which HTTP version carried the
 * request.
 *
 * Ownership: a request is reference-counted. The transport holds one
 * reference while the connection/stream is alive; a handler that answers
 * later takes its own with berth_http_req_ref and drops it with
 * berth_http_req_unref after responding (or after learning that the peer is
 * gone: berth_http_req_is_gone). Responding to a request whose connection
 * has closed is a harmless no-op. Memory of a request (head, body) is
 * released in one place, when the last reference goes.
 */
#ifndef BERTH_HTTPD_H
#define BERTH_HTTPD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "berth/error.h"

typedef struct berth_http_req berth_http_req;
typedef struct berth_httpd berth_httpd;

typedef struct berth_http_header_kv {
  const char *name; /* lower-case for HTTP/2 compatibility */
  const char *value;
} berth_http_header_kv;

/* Called once per complete request (head and body), on the loop thread. */
typedef void (*berth_http_handler)(berth_http_req *req, void *handler_data);

/* Streamed request bodies (gRPC), see berth_httpd_options.on_body: data is
 * valid during the call only; end is true once, after the last byte, when
 * the client has finished sending. Returns how many body bytes the handler
 * still buffers for this request (an incomplete message). */
typedef size_t (*berth_http_body_cb)(berth_http_req *req, const char *data,
                                     size_t len, bool end, void *handler_data);

/* A cap on open client connections, shared by the listeners that point to
 * it (the caller owns it and keeps it until every listener has closed).
 * Beyond max, a new connection is accepted and closed at once: the client
 * sees the connection end before any answer, and retries. */
typedef struct berth_httpd_conn_budget {
  size_t max;                   /* open connections at most; 0 = no cap */
  atomic_size_t open;           /* open now (kept by the transport) */
  atomic_uint_fast64_t refused; /* closed at once because of max */
  atomic_bool refusing;         /* in a burst of refusals (logged once) */
} berth_httpd_conn_budget;      /* atomic: network loops share it */

typedef struct berth_httpd_options {
  const char *host;         /* numeric IPv4 or IPv6 address */
  uint16_t port;            /* 0 = pick a free port (see berth_httpd_port) */
  size_t max_body_bytes;    /* 413 beyond */
  size_t max_head_bytes;    /* 431 beyond */
  size_t max_headers;       /* 431 beyond */
  uint32_t idle_timeout_ms; /* close idle keep-alive connections, 0 = never */
  /* A request head must be complete this long after its first byte
   * (counted once, not restarted by each byte), and so must the TLS
   * handshake and the HTTP/2 preface of a new connection: else HTTP/1.1
   * gets 408 and the connection closes. 0 = no deadline. */
  uint32_t header_timeout_ms;
  berth_httpd_conn_budget *budget; /* optional connection cap, see above */
  /* Optional: listen on this Unix domain socket (created with mode 0600)
   * instead of host:port; host is then only a label. A stale socket at the
   * path is replaced; any other file there, or a socket some process
   * listens on, is an error. berth_httpd_close removes it. Peers read as
   * "unix" (berth_http_peer). */
  const char *socket_path;
  berth_http_handler handler;
  void *handler_data;
  /* Optional (gRPC). When set, an HTTP/2 request reaches the handler as
   * soon as its head is complete, with an empty body, and its DATA then
   * goes to on_body as it arrives; max_body_bytes does not apply (the
   * handler bounds what it keeps). The bytes on_body says it buffers count
   * against the connection's upload budget; a stream that would exceed it
   * is reset. on_body is not called once the request is answered or gone.
   * HTTP/1.1 requests still reach the handler whole. */
  berth_http_body_cb on_body;
  /* With on_body: only HTTP/2 requests whose content-type starts with
   * application/grpc are streamed; the others reach the handler whole (a
   * REST port that also answers gRPC, for a gateway's one URL per
   * replica: docs/gateway.md). */
  bool stream_grpc_only;
  /* Optional: speak TLS on this listener (tls.h); owned by the caller and
   * kept until berth_httpd_close has finished. */
  struct berth_tls_ctx *tls;
  /* How responses reach the sockets (server.write_path, docs/http.md):
   * 0 direct (each answer written as it is produced: one writev each),
   * 1 writev (a connection's output of one loop iteration in one write),
   * 2 uring (the same, every connection's write submitted to io_uring at
   * once; an error at start when io_uring is not available), 3 auto
   * (uring when the kernel allows it, else writev). */
  int write_path;
} berth_httpd_options;

/* server.write_path's name ("direct", "writev", "uring", "auto"; NULL is
 * direct) as
 * berth_httpd_options.write_path. */
int berth_httpd_write_path(const char *name);

/* Binds and listens. On failure returns a status with err naming the
 * address ("127.0.0.1:8080: address already in use"). */
int berth_httpd_start(uv_loop_t *loop, const berth_httpd_options *opts,
                      berth_httpd **out, berth_errmsg *err);
/* The bound port (useful with port 0). */
uint16_t berth_httpd_port(const berth_httpd *h);
/* Stops accepting connections; open connections keep working. New requests
 * on them still reach the handler (which answers 503 while draining), and
 * HTTP/1.1 responses then carry Connection: close, HTTP/2 sessions get
 * GOAWAY. */
void berth_httpd_stop_accepting(berth_httpd *h);
/* Closes everything and frees the server; on_closed runs when every handle
 * is closed. Outstanding request references stay valid (as "gone"). */
void berth_httpd_close(berth_httpd *h, void (*on_closed)(void *), void *arg);
/* Corks the output of answers: what HTTP/2 connections would write between
 * berth_httpd_cork and the matching berth_httpd_uncork is written at the
 * uncork, in one write per connection (HTTP/1.1 answers go as they come:
 * one per connection at a time anyway). Nests; call both on the loop's
 * thread, in the same callback (the worker supervisor corks around the
 * answers of the frames it reads at once). */
void berth_httpd_cork(void);
void berth_httpd_uncork(void);
/* Number of open connections. */
size_t berth_httpd_connections(const berth_httpd *h);

/* Network loops (docs/threads.md). With n > 1, berth_httpd_start of a TCP
 * listener spreads it over n network threads, each with its own uv loop
 * and its own SO_REUSEPORT listener on the same address: they accept,
 * read, decrypt, parse (HTTP/1.1, HTTP/2) and write. The handler, on_body
 * and on_gone still run on the caller's loop (the engine loop), which gets
 * each complete request through a queue; every call a handler makes on a
 * request (respond, stream_*) goes back to the connection's loop the same
 * way. Unix-socket listeners stay on the caller's loop. n = 1 (the
 * default) is the single-loop server, no threads, no queues. Set before
 * the first listener starts; call on the engine loop's thread. */
void berth_httpd_set_network_loops(unsigned n);
unsigned berth_httpd_network_loops(void);
/* Loop i's (0..n-1) client connections open now and requests it has handed
 * to the engine since start, every listener together. */
void berth_httpd_loop_stats(unsigned i, uint64_t *conns, uint64_t *requests);

/* Request accessors; the strings are valid for the request's lifetime and
 * are NOT NUL-terminated unless noted. */
const char *berth_http_method(const berth_http_req *r, size_t *len);
/* Path without the query, percent-decoding NOT applied. */
const char *berth_http_path(const berth_http_req *r, size_t *len);
/* Query without '?', or NULL. */
const char *berth_http_query(const berth_http_req *r, size_t *len);
/* Header value by case-insensitive name, NULL if absent. */
const char *berth_http_header(const berth_http_req *r, const char *name,
                              size_t *len);
const char *berth_http_body(const berth_http_req *r, size_t *len);
/* The request's header fields in arrival order (HTTP/2: regular fields,
 * :authority as "host"), for a proxy that forwards them: the count, and
 * field i's name and value (not NUL-terminated; HTTP/1.1 names keep the
 * client's case). */
size_t berth_http_header_count(const berth_http_req *r);
void berth_http_header_at(const berth_http_req *r, size_t i, const char **name,
                          size_t *name_len, const char **value,
                          size_t *value_len);
/* Replaces the body (a decompressed one): takes body (malloc'd, or NULL
 * when len is 0) and frees the old one. Handlers that kept pointers into
 * the old body must not call it. */
void berth_http_req_replace_body(berth_http_req *r, char *body, size_t len);
/* 11 for HTTP/1.1, 10 for HTTP/1.0, 20 for HTTP/2. */
int berth_http_version(const berth_http_req *r);
/* Peer address as text ("127.0.0.1:53412"), NUL-terminated. */
const char *berth_http_peer(const berth_http_req *r);
/* Monotonic time (uv_hrtime, ns) when the request was complete. */
uint64_t berth_http_received_ns(const berth_http_req *r);

/* Answers the request. headers: n extra response headers (Content-Type
 * among them); Content-Length, Date and Connection are added by the
 * transport. body is copied (the caller keeps ownership) unless
 * berth_http_respond_take is used. Only the first answer counts. */
void berth_http_respond(berth_http_req *r, int status,
                        const berth_http_header_kv *headers, size_t n,
                        const char *body, size_t body_len);
/* Same, but takes ownership of body (malloc'd; the transport free()s it). */
void berth_http_respond_take(berth_http_req *r, int status,
                             const berth_http_header_kv *headers, size_t n,
                             char *body, size_t body_len);

/* Streamed answers (BERTH_E_IO when the request is gone or already
 * answered). HTTP/2: DATA frames and trailers. HTTP/1.1: chunked transfer
 * coding, trailers dropped; the connection then serves its next request (or
 * closes if the request or the drain asked so). HTTP/1.0: no
 * Content-Length, the connection's close ends the body.
 * begin sends the response head and keeps the stream open; send queues
 * body bytes (takes data, malloc'd, in every case; after begin only); end
 * finishes the answer: the trailers (none is fine) follow every queued
 * byte. end without begin sends the trailers as the head of a body-less 200
 * response (gRPC's "Trailers-Only"). end is the answer: afterwards the
 * request is answered, as after berth_http_respond, which after begin ends
 * the stream without trailers. */
int berth_http_stream_begin(berth_http_req *r, int status,
                            const berth_http_header_kv *headers, size_t n);
int berth_http_stream_send(berth_http_req *r, char *data, size_t len);
int berth_http_stream_end(berth_http_req *r,
                          const berth_http_header_kv *trailers, size_t n);
/* Body bytes queued by berth_http_stream_send that the peer has not taken
 * yet (flow control; on HTTP/1.1 the socket's write queue): what a slow
 * reader makes the server hold. */
size_t berth_http_stream_queued(const berth_http_req *r);

void berth_http_req_ref(berth_http_req *r);
void berth_http_req_unref(berth_http_req *r);
/* True once the peer's connection or stream is gone. */
bool berth_http_req_is_gone(const berth_http_req *r);
/* Optional: called once if the request becomes gone before it is answered
 * (e.g. the client disconnected), so a handler can cancel queued work. */
void berth_http_req_on_gone(berth_http_req *r,
                            void (*cb)(berth_http_req *, void *), void *arg);

/* Short strings a handler attaches to a request for its access log line
 * and its answer's headers (the request id, the model version it named).
 * Copied, cut at BERTH_HTTP_NOTE_MAX bytes; note returns the
 * NUL-terminated text, valid for the request's lifetime, or NULL when
 * unset. */
#define BERTH_HTTP_NOTE_MAX 256
typedef enum berth_http_note {
  BERTH_HTTP_NOTE_REQUEST_ID = 0,
  BERTH_HTTP_NOTE_MODEL,
  BERTH_HTTP_NOTE_VERSION,
  BERTH_HTTP_NOTE_CORS_ORIGIN,  /* a listed cross-site Origin (http_guard.h) */
  BERTH_HTTP_NOTE_COMPRESSIBLE, /* set: the answer may be compressed as
                                   Accept-Encoding asks (inference answers
                                   only, as Triton does) */
  BERTH_HTTP_NOTE_COUNT
} berth_http_note;
void berth_http_req_set_note(berth_http_req *r, berth_http_note which,
                             const char *s, size_t len);
const char *berth_http_req_note(const berth_http_req *r, berth_http_note which);

/* Per-request slot for the handler's own state. */
void berth_http_req_set_user(berth_http_req *r, void *user);
void *berth_http_req_user(const berth_http_req *r);

#endif
