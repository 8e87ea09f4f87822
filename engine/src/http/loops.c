/* Berth engine: network loops (httpd.h: berth_httpd_set_network_loops;
 * docs/threads.md). With n > 1 the first TCP listener starts a pool of n
 * threads, each running its own uv loop; every TCP listener then becomes a
 * group of n child listeners, one per loop, bound to the same address with
 * SO_REUSEPORT so that the kernel spreads new connections over them. The
 * caller (the engine loop) holds a shell berth_httpd whose calls come here.
 *
 * Control crosses as messages too: a child starts on its loop while the
 * engine waits for it (start-up only), stops accepting and closes there;
 * each child's close comes back as XM_CLOSED, and the group's on_closed runs
 * when the last child has closed. The pool ends with its last group: each
 * loop gets XM_QUIT, closes its queue and returns; the engine joins it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "loops_int.h"

#define MAX_LOOPS 256

static unsigned g_want = 1;          /* berth_httpd_set_network_loops */
static berth_netpool *g_pool = NULL; /* while any group lives */

void berth_httpd_set_network_loops(unsigned n) {
  g_want = n < 1 ? 1 : n > MAX_LOOPS ? MAX_LOOPS : n;
}

unsigned berth_httpd_network_loops(void) { return g_want; }

/* ---- a network loop's thread ---- */

typedef struct berth_netstart {
  berth_netchild *child;
  berth_httpd_options opts;
  uv_sem_t done;
  int rc;
  berth_errmsg err;
} berth_netstart;

static void child_closed(void *arg) {
  berth_netchild *ch = arg;
  berth_xmsg *m = berth_xmsg_new(XM_CLOSED, NULL);
  if (m == NULL) { /* cannot happen often; the engine would wait forever */
    berth_log_kv(BERTH_LOG_ERROR, "network loop: out of memory at close", NULL);
    return;
  }
  m->ctl = ch;
  berth_xq_post(&ch->nl->pool->in, m);
}

static void net_ctl(berth_netloop *nl, berth_xmsg *m) {
  berth_netchild *ch = m->ctl;
  switch (m->kind) {
  case XM_START: {
    berth_netstart *st = m->ctl;
    berth_httpd *h = NULL;
    st->rc = berth_server_start_tcp(&nl->loop, &st->opts, true, &h, &st->err);
    st->child->h = h;
    m->ctl = NULL;
    uv_sem_post(&st->done); /* st belongs to the waiting engine thread */
    break;
  }
  case XM_STOP:
    berth_httpd_stop_accepting(ch->h);
    uv_sem_post(&ch->group->stopped); /* the engine waits for it */
    break;
  case XM_CLOSE:
    berth_httpd_close(ch->h, child_closed, ch);
    break;
  case XM_QUIT:
    berth_xq_close(&nl->in, NULL); /* the loop ends when nothing is left */
    break;
  default:
    break;
  }
}

static void net_on_msgs(berth_xq *q) {
  berth_netloop *nl = q->data;
  berth_xmsg *m = berth_xq_take(&nl->in);
  berth_httpd_cork(); /* the answers of one wake-up: one write per h2 conn */
  while (m != NULL) {
    berth_xmsg *next = m->next;
    if (m->link != NULL)
      berth_xt_net_msg(m);
    else
      net_ctl(nl, m);
    berth_xmsg_free(m);
    m = next;
  }
  berth_httpd_uncork();
}

static void net_main(void *arg) {
  berth_netloop *nl = arg;
  uv_run(&nl->loop, UV_RUN_DEFAULT);
}

/* ---- the pool ---- */

static void eng_ctl(berth_xmsg *m);

static void eng_on_msgs(berth_xq *q) {
  berth_netpool *p = q->data;
  berth_xmsg *m = berth_xq_take(&p->in);
  while (m != NULL) {
    berth_xmsg *next = m->next;
    if (m->link != NULL)
      berth_xt_eng_msg(m);
    else
      eng_ctl(m);
    berth_xmsg_free(m);
    m = next;
  }
}

static void pool_in_closed(uv_handle_t *h) {
  berth_xq *q = h->data;
  berth_netpool *p = q->data;
  berth_xq_destroy(&p->in);
  free(p->loops);
  free(p);
}

/* Ends the first `started` loops' threads and frees the pool (its own
 * queue's handle closes later, on the engine loop). */
static void pool_end(berth_netpool *p, unsigned started) {
  for (unsigned i = 0; i < started; i++) {
    berth_xmsg *m = berth_xmsg_new(XM_QUIT, NULL);
    berth_netloop *nl = &p->loops[i];
    if (m != NULL && berth_xq_post(&nl->in, m)) {
      uv_thread_join(&nl->thread);
    } else { /* no memory: the loop cannot be told; leave it running */
      free(m);
      berth_log_kv(BERTH_LOG_ERROR, "network loop left running", NULL);
      continue;
    }
    berth_xq_destroy(&nl->in);
    uv_loop_close(&nl->loop);
  }
  if (g_pool == p)
    g_pool = NULL;
  /* messages the loops sent last (nothing answers them now) */
  eng_on_msgs(&p->in);
  berth_xq_close(&p->in, pool_in_closed);
}

static int pool_start_loop(berth_netpool *p, unsigned i) {
  berth_netloop *nl = &p->loops[i];
  nl->index = i;
  nl->pool = p;
  atomic_init(&nl->requests, 0);
  if (uv_loop_init(&nl->loop) != 0)
    return BERTH_E_IO;
  if (berth_xq_init(&nl->in, &nl->loop, net_on_msgs, nl) != BERTH_OK) {
    uv_loop_close(&nl->loop);
    return BERTH_E_IO;
  }
  if (uv_thread_create(&nl->thread, net_main, nl) != 0) {
    uv_close((uv_handle_t *)&nl->in.poll, NULL);
    uv_run(&nl->loop, UV_RUN_DEFAULT);
    berth_xq_destroy(&nl->in);
    uv_loop_close(&nl->loop);
    return BERTH_E_IO;
  }
  return BERTH_OK;
}

static berth_netpool *pool_get(uv_loop_t *engine, berth_errmsg *err) {
  if (g_pool != NULL)
    return g_pool;
  berth_netpool *p = calloc(1, sizeof *p);
  if (p == NULL || (p->loops = calloc(g_want, sizeof *p->loops)) == NULL) {
    free(p);
    berth_errf(err, BERTH_E_NOMEM, "network loops: out of memory");
    return NULL;
  }
  p->engine = engine;
  p->n = g_want;
  LIST_INIT(&p->groups);
  if (berth_xq_init(&p->in, engine, eng_on_msgs, p) != BERTH_OK) {
    free(p->loops);
    free(p);
    berth_errf(err, BERTH_E_IO, "network loops: cannot make a queue");
    return NULL;
  }
  for (unsigned i = 0; i < p->n; i++) {
    if (pool_start_loop(p, i) != BERTH_OK) {
      pool_end(p, i);
      berth_errf(err, BERTH_E_IO, "network loops: cannot start thread %u", i);
      return NULL;
    }
  }
  g_pool = p;
  return p;
}

/* ---- groups ---- */

static void group_free(struct berth_netgroup *g) {
  berth_netpool *p = g->pool;
  void (*cb)(void *) = g->on_closed;
  void *arg = g->on_closed_arg;
  LIST_REMOVE(g, link);
  free(g->child);
  free(g->shell);
  free(g);
  if (LIST_EMPTY(&p->groups))
    pool_end(p, p->n);
  if (cb != NULL)
    cb(arg);
}

static void eng_ctl(berth_xmsg *m) {
  if (m->kind != XM_CLOSED)
    return;
  berth_netchild *ch = m->ctl;
  struct berth_netgroup *g = ch->group;
  ch->h = NULL;
  if (--g->open == 0 && g->closing)
    group_free(g);
}

/* Asks every started child to close; the group goes with the last. */
static void group_close(struct berth_netgroup *g) {
  g->closing = true;
  for (unsigned i = 0; i < g->started; i++) {
    berth_netchild *ch = &g->child[i];
    if (ch->closing)
      continue;
    berth_xmsg *m = berth_xmsg_new(XM_CLOSE, NULL);
    if (m == NULL) {
      berth_log_kv(BERTH_LOG_ERROR, "network loop: out of memory at close",
                   NULL);
      continue;
    }
    ch->closing = true;
    m->ctl = ch;
    berth_xt_post_net(ch->nl, m);
  }
  if (g->open == 0)
    group_free(g);
}

/* Starts child i on its loop and waits for the answer. */
static int child_start(struct berth_netgroup *g, unsigned i,
                       berth_errmsg *err) {
  berth_netchild *ch = &g->child[i];
  ch->group = g;
  ch->nl = &g->pool->loops[i];
  berth_netstart st = {.child = ch, .opts = g->opts};
  st.opts.host = g->host;
  st.opts.port = i == 0 ? g->opts.port : g->port;
  st.opts.handler = berth_xt_net_handle;
  st.opts.handler_data = ch;
  st.opts.on_body = g->opts.on_body != NULL ? berth_xt_net_on_body : NULL;
  berth_xmsg *m = berth_xmsg_new(XM_START, NULL);
  if (m == NULL || uv_sem_init(&st.done, 0) != 0) {
    free(m);
    return berth_errf(err, BERTH_E_NOMEM, "network loops: out of memory");
  }
  m->ctl = &st;
  berth_xt_post_net(ch->nl, m);
  uv_sem_wait(&st.done);
  uv_sem_destroy(&st.done);
  if (st.rc != BERTH_OK) {
    *err = st.err;
    return st.rc;
  }
  g->started++;
  g->open++;
  if (i == 0)
    g->port = berth_httpd_port(ch->h);
  return BERTH_OK;
}

/* SO_REUSEPORT would let the listeners share a port that another server
 * of this user holds: a plain socket bound there first (never listening,
 * so no client can reach it) says whether it is free, with the usual
 * "HOST:PORT: address already in use". */
static int probe_port(const berth_httpd_options *opts, berth_errmsg *err) {
  if (opts->port == 0)
    return BERTH_OK; /* the kernel picks a free one for loop 0 */
  berth_sockaddr addr;
  bool v6 = false;
  int rc = berth_server_parse_addr(opts->host, opts->port, &addr, &v6, err);
  if (rc != BERTH_OK)
    return rc;
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, &addr.sa, v6 ? sizeof addr.v6 : sizeof addr.v4) != 0) {
    int e = uv_translate_sys_error(errno);
    if (fd >= 0)
      close(fd);
    return berth_errf(err, BERTH_E_IO, v6 ? "[%s]:%u: %s" : "%s:%u: %s",
                      opts->host, (unsigned)opts->port, uv_strerror(e));
  }
  close(fd);
  return BERTH_OK;
}

int berth_netgroup_start(uv_loop_t *loop, const berth_httpd_options *opts,
                         berth_httpd **out, berth_errmsg *err) {
  if (opts == NULL || opts->handler == NULL || opts->host == NULL)
    return berth_errf(err, BERTH_E_CONFIG,
                      "http server: host and handler are required");
  if (strlen(opts->host) >= sizeof((struct berth_netgroup *)0)->host)
    return berth_errf(err, BERTH_E_CONFIG, "%s: address too long", opts->host);
  int rc = probe_port(opts, err);
  if (rc != BERTH_OK)
    return rc;
  berth_netpool *p = pool_get(loop, err);
  if (p == NULL)
    return BERTH_E_IO;
  struct berth_netgroup *g = calloc(1, sizeof *g);
  berth_httpd *shell = calloc(1, sizeof *shell);
  berth_netchild *child = calloc(p->n, sizeof *child);
  if (g == NULL || shell == NULL || child == NULL) {
    free(g);
    free(shell);
    free(child);
    if (LIST_EMPTY(&p->groups))
      pool_end(p, p->n);
    return berth_errf(err, BERTH_E_NOMEM, "http server: out of memory");
  }
  g->pool = p;
  g->opts = *opts;
  snprintf(g->host, sizeof g->host, "%s", opts->host);
  g->opts.host = g->host;
  g->child = child;
  g->shell = shell;
  shell->group = g;
  shell->loop = loop;
  LIST_INSERT_HEAD(&p->groups, g, link);
  for (unsigned i = 0; i < p->n; i++) {
    rc = child_start(g, i, err);
    if (rc != BERTH_OK) {
      group_close(g); /* frees g (and the pool with its last group) */
      return rc;
    }
  }
  *out = shell;
  return BERTH_OK;
}

uint16_t berth_netgroup_port(const struct berth_netgroup *g) { return g->port; }

size_t berth_netgroup_connections(const struct berth_netgroup *g) {
  size_t n = 0;
  for (unsigned i = 0; i < g->started; i++)
    if (!g->child[i].closing && g->child[i].h != NULL)
      n += atomic_load(&g->child[i].h->n_conns);
  return n;
}

/* Synchronous, as with one loop: when it returns no listener accepts (the
 * engine waits a moment for each loop; the loops never wait for it). */
void berth_netgroup_stop_accepting(struct berth_netgroup *g) {
  if (uv_sem_init(&g->stopped, 0) != 0)
    return;
  unsigned asked = 0;
  for (unsigned i = 0; i < g->started; i++) {
    berth_xmsg *m = berth_xmsg_new(XM_STOP, NULL);
    if (m == NULL || g->child[i].closing) {
      free(m);
      continue;
    }
    m->ctl = &g->child[i];
    if (berth_xq_post(&g->child[i].nl->in, m))
      asked++;
    else
      free(m);
  }
  while (asked-- > 0)
    uv_sem_wait(&g->stopped);
  uv_sem_destroy(&g->stopped);
}

void berth_netgroup_close(berth_httpd *shell, void (*on_closed)(void *),
                          void *arg) {
  struct berth_netgroup *g = shell->group;
  if (g->closing)
    return;
  g->on_closed = on_closed;
  g->on_closed_arg = arg;
  group_close(g);
}

void berth_httpd_loop_stats(unsigned i, uint64_t *conns, uint64_t *requests) {
  *conns = 0;
  *requests = 0;
  berth_netpool *p = g_pool;
  if (p == NULL || i >= p->n)
    return;
  *requests = atomic_load(&p->loops[i].requests);
  struct berth_netgroup *g;
  LIST_FOREACH(g, &p->groups, link) {
    berth_netchild *ch = &g->child[i];
    if (i < g->started && !ch->closing && ch->h != NULL)
      *conns += atomic_load(&ch->h->n_conns);
  }
}
