/* Berth engine: the HTTP server transport's structures, shared by server.c
 * (listener, connections, sockets, protocol detection) and server_h1.c
 * (HTTP/1.1 connections). Internal to those two files.
 */
#ifndef BERTH_SERVER_INT_H
#define BERTH_SERVER_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <sys/queue.h>

#include "buf.h"
#include "flush.h"
#include "http1.h"
#include "http2.h"
#include "httpd.h"
#include "tls.h"

#define RBUF_SIZE (32u * 1024)
#define WRITE_HIGH_WATER (1u << 20) /* stop parsing while this much is queued */

enum { PROTO_DETECT, PROTO_H1, PROTO_H2 };

struct berth_httpd {
  uv_loop_t *loop;
  union { /* the kind opts.socket_path asks for */
    uv_tcp_t listener;
    uv_pipe_t listener_pipe;
  };
  bool is_unix;                    /* a Unix socket listener */
  char *socket_path;               /* owned copy when is_unix */
  uint64_t socket_dev, socket_ino; /* the socket we created (removed at
                                      close only if it is still ours) */
  berth_httpd_options opts;        /* defaults applied; host points to host[] */
  berth_h1_limits limits;
  char host[64];
  char addr[96]; /* "host:port" for messages */
  uint16_t port;
  bool listener_open;
  bool draining;
  bool closing;
  LIST_HEAD(berth_httpd_conn_list, berth_httpd_conn)
  conns;                 /* every
                                 connection not yet freed */
  atomic_size_t n_conns; /* connections not closing (read by other threads:
                            berth_httpd_connections with network_loops) */
  size_t open_handles;   /* listener + connections not yet freed */
  void (*on_closed)(void *);
  void *on_closed_arg;
  time_t date_sec;
  char date[40];
  union { /* accepts and closes a connection we cannot
                                 hold (memory, or the connection budget) */
    uv_tcp_t reject;
    uv_pipe_t reject_pipe;
  };
  bool reject_busy;
  bool accept_stalled; /* a connection waits in the listener */
  /* network_loops > 1 (loops.c): this handle is the group of per-loop
   * listeners the engine sees; every call on it goes to the group. */
  struct berth_netgroup *group;
  berth_flush flush; /* the output queue's state (flush.h) */
  bool flush_closed; /* berth_flush_close has finished */
};

struct berth_httpd_conn {
  union { /* a pipe on a Unix socket listener; only the
                                 uv_stream_t calls are used on it */
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  };
  uv_timer_t timer;
  uv_shutdown_t shutdown_req;
  berth_httpd *srv;
  LIST_ENTRY(berth_httpd_conn) link; /* the server's connections */
  int proto;
  int handles; /* open uv handles (tcp, timer), plus 1 while a uring write
                  outlives the close (flush.c) */
  char peer[64];
  char *rbuf; /* RBUF_SIZE bytes; [roff, rlen) not parsed yet */
  size_t rlen, roff;
  unsigned writes; /* queued or in flight (flush.h) */
  berth_out out;   /* the output queue (flush.h) */
  bool reading;
  bool closing;           /* uv_close started */
  bool in_process;        /* h1_process is on the stack */
  bool close_after_write; /* last response queued: close when written */
  bool lingering;         /* write side shut, draining the peer */
  bool counted;           /* holds one place in srv->opts.budget */
  uint64_t active_at; /* uv_now() ms of the last bytes read: the idle timeout
                         counts from it */
  uint64_t timer_due; /* uv_now() ms the timer fires at; 0 = not armed */
  uint64_t head_deadline; /* uv_now() ms by which the head in progress
                                 (or the TLS handshake, HTTP/2 preface) must
                                 be complete; 0 = none in progress */
  bool h1_body;           /* HTTP/1.1: head done, body still coming */
  /* HTTP/1.1 */
  berth_h1_parser *parser;
  berth_http_req *cur; /* in the handler, not answered */
  bool cur_keep_alive;
  bool cur_head;   /* HEAD: the answer has no body */
  int cur_version; /* 10 or 11 */
  bool cur_stream; /* a streamed answer's head is sent (berth_h1_stream_*) */
  /* HTTP/2 */
  berth_h2_session *h2;
  /* TLS (NULL on cleartext listeners) */
  berth_tls_conn *tls;
  char *cbuf;          /* ciphertext read buffer, RBUF_SIZE bytes */
  berth_buf tls_plain; /* decrypted bytes not yet moved into rbuf */
  size_t tls_plain_off;
};

/* A numeric IPv4 or IPv6 address and port, as bind() takes it. */
typedef union berth_sockaddr {
  struct sockaddr sa;
  struct sockaddr_in v4;
  struct sockaddr_in6 v6;
} berth_sockaddr;

/* Parses host (numeric IPv4 or IPv6) and port into *addr; *v6 says which.
 * BERTH_E_CONFIG naming host when it is neither. */
int berth_server_parse_addr(const char *host, uint16_t port,
                            berth_sockaddr *addr, bool *v6, berth_errmsg *err);

/* The cached Date header value of the current second. */
const char *berth_server_date(berth_httpd *h);
/* The last response is written: shut our side, drain the peer briefly. */
void berth_server_conn_linger(berth_httpd_conn *c);
/* Writes bufs; own0/own1 (may be NULL) are freed once written, in every case. */
int berth_server_conn_writev(berth_httpd_conn *c, uv_buf_t *bufs, unsigned n,
                             char *own0, char *own1, void (*cb)(void *, int),
                             void *arg);
/* Bytes queued on c and not yet written (backpressure). */
size_t berth_server_conn_queued(const berth_httpd_conn *c);
/* flush.c: a write of c ended (status 0 or a negative libuv status):
 * closes c on error, resumes HTTP/1.1 parsing or lingers. */
void berth_server_conn_written(berth_httpd_conn *c, int status);
/* flush.c: drops the reference a uring write held on a closed c. */
void berth_server_conn_unref(berth_httpd_conn *c);
/* Moves decrypted bytes into rbuf as far as they fit; true if any moved. */
bool berth_server_tls_move_plain(berth_httpd_conn *c);
/* Starts (start) or ends the deadline of a request head (header_timeout_ms)
 * and rearms the connection's timer. */
void berth_server_conn_head(berth_httpd_conn *c, bool start);
/* The head deadline passed on an HTTP/1.1 connection: 408 and close. */
void berth_server_h1_head_timeout(berth_httpd_conn *c);
/* server_unix.c: binds h->socket_path (mode 0600, a stale socket
 * replaced) on h->listener_pipe and listens; records the socket's identity
 * for berth_server_unix_unlink, which removes it if it is still ours. */
int berth_server_unix_listen(berth_httpd *h, uv_connection_cb on_connection,
                             berth_errmsg *err);
void berth_server_unix_unlink(berth_httpd *h);
/* Starts or stops reading as the connection's state asks. */
void berth_server_conn_update_reading(berth_httpd_conn *c);
/* Parses and dispatches HTTP/1.1 requests from rbuf (server_h1.c). */
void berth_server_h1_process(berth_httpd_conn *c);
/* berth_httpd_start for a TCP listener on loop; reuseport sets SO_REUSEPORT
 * before binding (one listener per network loop on the same address). */
int berth_server_start_tcp(uv_loop_t *loop, const berth_httpd_options *opts,
                           bool reuseport, berth_httpd **out,
                           berth_errmsg *err);
/* loops.c: the network_loops > 1 forms of the httpd.h calls. */
int berth_netgroup_start(uv_loop_t *loop, const berth_httpd_options *opts,
                         berth_httpd **out, berth_errmsg *err);
uint16_t berth_netgroup_port(const struct berth_netgroup *g);
size_t berth_netgroup_connections(const struct berth_netgroup *g);
void berth_netgroup_stop_accepting(struct berth_netgroup *g);
void berth_netgroup_close(berth_httpd *shell, void (*on_closed)(void *),
                          void *arg);

#endif
