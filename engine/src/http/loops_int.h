/* Berth engine: network loops (httpd.h: berth_httpd_set_network_loops),
 * shared by loops.c (the threads, their loops, the per-loop listeners) and
 * xthread.c (the queues between the loops and the engine loop, and the
 * requests that cross them). Internal to those two files.
 *
 * Threads: the engine loop (the caller of berth_httpd_start) and n network
 * threads, each running one uv loop. A network loop owns its sockets and
 * everything on them (TLS, HTTP/1.1, HTTP/2); the engine loop owns the
 * handlers. Nothing but the queues (berth_xq, a mutex and an eventfd), the
 * atomics below and the links' reference counts is touched by two threads.
 *
 * A request crosses as a pair: the network request (nreq, the transport's,
 * on the network loop) and an engine copy (ereq, xthread set, on the
 * engine loop), tied by a berth_xlink. The link's fields are each owned by
 * one side (marked); the link is freed when its references (the network
 * side's while it holds nreq, the engine side's while ereq is unanswered
 * and not gone, one per message in flight) are gone.
 */
#ifndef BERTH_LOOPS_INT_H
#define BERTH_LOOPS_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "http2.h"
#include "httpd.h"
#include "server_int.h"

typedef struct berth_xmsg berth_xmsg;
typedef struct berth_xlink berth_xlink;
typedef struct berth_netloop berth_netloop;
typedef struct berth_netpool berth_netpool;
typedef struct berth_netchild berth_netchild;

/* A multi-producer queue drained by one loop: post appends under the
 * mutex and, when the queue was empty, wakes the loop through an eventfd
 * (watched by a uv_poll handle); the loop takes the whole list at once, so
 * one wake-up serves every message queued meanwhile. (Not uv_async: its
 * send leaves a window in which the woken loop spins and yields the CPU,
 * about twice a request on a busy 2-core host.) */
typedef struct berth_xq berth_xq;
typedef void (*berth_xq_cb)(berth_xq *q);
struct berth_xq {
  uv_mutex_t mu;
  berth_xmsg *head, *tail; /* owned messages, oldest first */
  bool closed;             /* posts fail from now on */
  int efd;                 /* eventfd: readable while a wake-up is due */
  uv_poll_t poll;
  berth_xq_cb cb;
  void *data;
};

int berth_xq_init(berth_xq *q, uv_loop_t *loop, berth_xq_cb cb, void *data);
/* Appends m (taken) and wakes the loop; false (m not taken) once closed. */
bool berth_xq_post(berth_xq *q, berth_xmsg *m);
/* The whole list (oldest first, linked by next; the caller owns it). */
berth_xmsg *berth_xq_take(berth_xq *q);
/* On the queue's loop: no more posts; closes the poll handle. */
void berth_xq_close(berth_xq *q, uv_close_cb cb);
/* After the handle is closed: frees what is left, the eventfd, the mutex. */
void berth_xq_destroy(berth_xq *q);

enum {
  /* network -> engine */
  XM_REQ,    /* link: a complete request (or a streamed one's head) */
  XM_BODY,   /* link: streamed request body bytes (data, len, end) */
  XM_GONE,   /* link: the network request is gone */
  XM_CLOSED, /* ctl: a child listener (berth_netchild) has closed */
  /* engine -> network */
  XM_RESPOND, /* link: status, headers, body (data) */
  XM_BEGIN,   /* link: a streamed answer's head */
  XM_SEND,    /* link: streamed answer bytes */
  XM_END,     /* link: the end of a streamed answer, trailers */
  XM_START,   /* ctl: start a child listener (berth_netstart) */
  XM_STOP,    /* ctl: child stops accepting */
  XM_CLOSE,   /* ctl: close a child */
  XM_QUIT     /* the loop ends */
};

struct berth_xmsg {
  berth_xmsg *next;
  int kind;
  berth_xlink *link; /* holds one reference of the link */
  int status;
  berth_http_header_kv *headers; /* owned block (strings inside) */
  size_t n;
  char *data; /* owned */
  size_t len;
  bool end;
  void *ctl;
};

struct berth_netloop {
  unsigned index;
  uv_loop_t loop;
  uv_thread_t thread;
  berth_xq in; /* engine -> this loop */
  atomic_uint_fast64_t requests;
  berth_netpool *pool;
};

/* One listener of a group on one network loop. */
struct berth_netchild {
  struct berth_netgroup *group;
  berth_netloop *nl;
  berth_httpd *h; /* written once by its loop before start returns; the
                     engine reads it (stats) until it asks for the close */
  bool closing;   /* engine side */
};

struct berth_netgroup {
  berth_netpool *pool;
  berth_httpd_options opts; /* the caller's (handlers on the engine loop) */
  char host[64];
  berth_netchild *child; /* pool->n */
  unsigned started;      /* children started */
  unsigned open;         /* children not yet closed */
  uint16_t port;
  bool closing;
  uv_sem_t stopped;   /* XM_STOP: each child posts it once stopped (set up
                       for the call only) */
  berth_httpd *shell; /* what the caller holds (its group points here) */
  void (*on_closed)(void *);
  void *on_closed_arg;
  LIST_ENTRY(berth_netgroup) link; /* the pool's groups */
};

struct berth_netpool {
  uv_loop_t *engine;
  berth_xq in; /* network loops -> engine */
  unsigned n;
  berth_netloop *loops;
  LIST_HEAD(berth_netgroup_list, berth_netgroup) groups;
};

struct berth_xlink {
  atomic_int refs;
  struct berth_netgroup *group;
  berth_netloop *nl;
  berth_http_req *nreq;   /* network side; NULL once answered or gone */
  berth_http_req *ereq;   /* engine side; NULL once answered or gone */
  bool begun;             /* engine side: a streamed answer began */
  atomic_size_t held;     /* body bytes the engine's on_body buffers */
  atomic_size_t inflight; /* body bytes posted, not yet given to on_body */
  atomic_size_t pending;  /* streamed bytes posted, not yet on the loop */
  atomic_size_t netq;     /* streamed bytes the network request queues */
};

/* xthread.c */
void berth_xlink_unref(berth_xlink *l);
berth_xmsg *berth_xmsg_new(int kind, berth_xlink *l); /* takes a ref */
/* Frees m: its data, headers and link reference. */
void berth_xmsg_free(berth_xmsg *m);
/* Child listener handlers, on the network loop (handler_data: child). */
void berth_xt_net_handle(berth_http_req *nreq, void *child);
size_t berth_xt_net_on_body(berth_http_req *nreq, const char *data, size_t len,
                            bool end, void *child);
/* A request message on the network loop (XM_RESPOND .. XM_END). */
void berth_xt_net_msg(berth_xmsg *m);
/* A request message on the engine loop (XM_REQ .. XM_GONE). */
void berth_xt_eng_msg(berth_xmsg *m);
/* Posts m to its link's network loop, or frees it when that is closed. */
void berth_xt_post_net(berth_netloop *nl, berth_xmsg *m);

#endif
