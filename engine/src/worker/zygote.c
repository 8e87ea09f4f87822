/* Berth engine: the worker template (zygote.h).
 *
 * Channel to the template: an AF_UNIX SOCK_SEQPACKET socket on the
 * template's descriptor 3, one message per packet.
 *   engine -> template: "F" u64 id (little-endian), then the child's
 *     environment as NUL-terminated NAME=value strings; three descriptors
 *     (channel, stdout, stderr) ride along as SCM_RIGHTS.
 *   template -> engine: JSON objects: {"op":"ready",...} once its imports
 *     are done; {"op":"forked","id":N,"pid":P}; {"op":"failed","id":N,
 *     "error":"..."}; {"op":"exited","pid":P,"code":C,"signal":S}.
 * One template incarnation (zproc) owns its process, channel and output
 * handles and is freed when they have all closed; children name the
 * incarnation that forks them by generation. */
#include "zygote.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "worker_output.h"

typedef struct zproc {
  berth_zygote *z;
  unsigned gen;
  uv_process_t process;
  uv_poll_t ctl;
  int ctl_fd;
  berth_worker_output out[2];
  int open_handles;
  bool exited, gone, ready, ctl_polling;
  int64_t exit_status;
  int term_signal;
} zproc;

struct berth_zygote {
  uv_loop_t *loop;
  void (*idle)(void *arg);
  void *idle_arg;
  zproc *cur;      /* the running incarnation, or NULL */
  size_t procs;    /* incarnations not yet freed */
  unsigned gen;    /* of the newest incarnation */
  unsigned deaths; /* incarnations that died while the engine ran */
  bool given_up, stopping, forked_once;
  uint64_t next_id;
  LIST_HEAD(, berth_zchild) children;
};

static int pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

static int pidfd_signal(int fd, int sig) {
  return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

berth_zygote *berth_zygote_new(uv_loop_t *loop, void (*idle)(void *arg),
                               void *arg) {
  int probe = pidfd_open(getpid());
  if (probe < 0) {
    berth_log_kv(BERTH_LOG_INFO,
                 "no pidfds on this kernel: workers start directly, "
                 "without the worker template",
                 "error", strerror(errno), NULL);
    return NULL;
  }
  close(probe);
  berth_zygote *z = calloc(1, sizeof *z);
  if (z == NULL)
    return NULL;
  z->loop = loop;
  z->idle = idle;
  z->idle_arg = arg;
  LIST_INIT(&z->children);
  return z;
}

/* ---- children ----------------------------------------------------------- */

static bool template_gone(const berth_zchild *c) {
  const berth_zygote *z = c->z;
  return z->cur == NULL || z->cur->gen != c->gen || z->cur->gone;
}

static void child_maybe_done(berth_zchild *c) {
  if (c->done || !c->dead || (!c->status_known && !template_gone(c)))
    return;
  c->done = true;
  if (c->polling) {
    uv_poll_stop(&c->poll);
    c->polling = false;
  }
  if (!c->status_known) {
    c->exit_status = -1;
    c->term_signal = 0;
  }
  c->on_exit(c);
}

static void on_pidfd(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  berth_zchild *c = h->data;
  c->dead = true;
  child_maybe_done(c);
}

static void send_signal(berth_zchild *c, int sig) {
  if (c->dead)
    return;
  if (c->pidfd >= 0)
    pidfd_signal(c->pidfd, sig);
  else if (c->pid > 0)
    kill(c->pid, sig);
}

static void child_forked(berth_zchild *c, int pid) {
  c->pid = pid;
  c->z->forked_once = true;
  c->pidfd = pidfd_open(pid);
  if (c->pidfd < 0) {
    c->dead = true; /* reaped already: its report follows */
  } else if (uv_poll_init(c->z->loop, &c->poll, c->pidfd) == 0) {
    c->poll_inited = true;
    c->poll.data = c;
    if (uv_poll_start(&c->poll, UV_READABLE, on_pidfd) == 0)
      c->polling = true;
  }
  if (!c->dead && !c->polling) {
    /* Cannot watch it: better no worker than one never seen to exit. */
    kill(pid, SIGKILL);
  }
  c->on_forked(c);
  if (c->pending_signal != 0)
    send_signal(c, c->pending_signal);
  child_maybe_done(c);
}

static void child_failed(berth_zchild *c, const char *why) {
  if (c->done)
    return;
  c->done = true;
  c->on_failed(c, why);
}

static berth_zchild *find_child(berth_zygote *z, unsigned gen, uint64_t id,
                                int pid) {
  berth_zchild *c;
  LIST_FOREACH(c, &z->children, link) {
    if (c->gen == gen && ((pid == 0 && c->id == id && c->pid == 0) ||
                          (pid != 0 && c->pid == pid)))
      return c;
  }
  return NULL;
}

void berth_zchild_kill(berth_zchild *c, int sig) {
  if (c->done || c->dead)
    return;
  if (c->pid == 0) {
    if (c->pending_signal != SIGKILL)
      c->pending_signal = sig;
    return;
  }
  send_signal(c, sig);
}

static void child_handle_closed(uv_handle_t *h) {
  berth_zchild *c = h->data;
  close(c->pidfd);
  c->pidfd = -1;
  c->closed(c->closed_arg);
}

void berth_zchild_close(berth_zchild *c, void (*closed)(void *arg), void *arg) {
  if (c->linked) {
    LIST_REMOVE(c, link);
    c->linked = false;
  }
  c->closed = closed;
  c->closed_arg = arg;
  if (c->poll_inited) {
    uv_close((uv_handle_t *)&c->poll, child_handle_closed);
    return;
  }
  if (c->pidfd >= 0)
    close(c->pidfd);
  c->pidfd = -1;
  closed(arg);
}

/* ---- one template incarnation ------------------------------------------- */

static void zproc_release(void *arg) {
  zproc *p = arg;
  if (--p->open_handles > 0)
    return;
  berth_zygote *z = p->z;
  free(p);
  z->procs--;
  if (z->procs == 0 && z->idle != NULL)
    z->idle(z->idle_arg);
}

static void zproc_handle_closed(uv_handle_t *h) { zproc_release(h->data); }

/* The incarnation is over (its channel ended or its process exited):
 * pending forks fail, dead children without a status are reported. */
static void zproc_gone(zproc *p, const char *how) {
  if (p->gone)
    return;
  p->gone = true;
  berth_zygote *z = p->z;
  if (p->ctl_polling) {
    uv_poll_stop(&p->ctl);
    p->ctl_polling = false;
  }
  uv_close((uv_handle_t *)&p->ctl, zproc_handle_closed);
  close(p->ctl_fd);
  p->ctl_fd = -1;
  if (z->cur == p)
    z->cur = NULL;
  if (!p->exited)
    uv_process_kill(&p->process, SIGKILL); /* useless without its channel */
  if (!z->stopping && !z->given_up) {
    z->deaths++;
    z->given_up = z->deaths >= BERTH_ZYGOTE_MAX_DEATHS;
    berth_log_kv(BERTH_LOG_WARNING,
                 z->given_up
                     ? "the worker template exited again; workers start "
                       "directly from now on (without the template)"
                     : "the worker template exited; workers it has not "
                       "started yet start directly, the next ones from a "
                       "new template",
                 "how", how, NULL);
  }
  berth_zchild *c = LIST_FIRST(&z->children), *next;
  for (; c != NULL; c = next) {
    next = LIST_NEXT(c, link);
    if (c->gen != p->gen)
      continue;
    if (c->pid == 0)
      child_failed(c, "the worker template exited before starting it");
    else
      child_maybe_done(c);
  }
}

static void zproc_exit(uv_process_t *proc, int64_t status, int sig) {
  zproc *p = proc->data;
  p->exited = true;
  p->exit_status = status;
  p->term_signal = sig;
  char how[64];
  if (sig != 0)
    snprintf(how, sizeof how, "signal %d", sig);
  else
    snprintf(how, sizeof how, "exit code %lld", (long long)status);
  berth_worker_output_close(&p->out[0]);
  berth_worker_output_close(&p->out[1]);
  uv_close((uv_handle_t *)&p->process, zproc_handle_closed);
  zproc_gone(p, how);
}

static void handle_message(zproc *p, const char *data, size_t len) {
  json_error_t jerr;
  json_t *doc = json_loadb(data, len, 0, &jerr);
  const char *op = json_string_value(json_object_get(doc, "op"));
  berth_zygote *z = p->z;
  if (op == NULL) {
    berth_log_kv(BERTH_LOG_WARNING, "the worker template sent a bad message",
                 NULL);
  } else if (strcmp(op, "ready") == 0) {
    p->ready = true;
    json_int_t threads = json_integer_value(json_object_get(doc, "threads"));
    if (threads > 1) {
      /* It would refuse every fork: workers start directly. */
      berth_log_kv(BERTH_LOG_WARNING,
                   "the worker template runs more than one thread after its "
                   "imports and cannot fork safely; workers start directly",
                   NULL);
      z->given_up = true;
      zproc_gone(p, "threads");
    } else {
      berth_log_kv(BERTH_LOG_DEBUG, "worker template ready", NULL);
    }
  } else if (strcmp(op, "forked") == 0 || strcmp(op, "failed") == 0) {
    json_int_t id = json_integer_value(json_object_get(doc, "id"));
    berth_zchild *c = find_child(z, p->gen, (uint64_t)id, 0);
    json_int_t pid = json_integer_value(json_object_get(doc, "pid"));
    const char *err = json_string_value(json_object_get(doc, "error"));
    if (c != NULL && strcmp(op, "forked") == 0 && pid > 0 && pid <= INT32_MAX)
      child_forked(c, (int)pid);
    else if (c != NULL)
      child_failed(c, err ? err : "the worker template could not fork");
  } else if (strcmp(op, "exited") == 0) {
    json_int_t pid = json_integer_value(json_object_get(doc, "pid"));
    berth_zchild *c =
        pid > 0 && pid <= INT32_MAX ? find_child(z, p->gen, 0, (int)pid) : NULL;
    if (c != NULL && !c->done) {
      c->status_known = true;
      c->dead = true;
      c->exit_status = json_integer_value(json_object_get(doc, "code"));
      c->term_signal = (int)json_integer_value(json_object_get(doc, "signal"));
      child_maybe_done(c);
    }
  }
  json_decref(doc);
}

static void on_ctl(uv_poll_t *h, int status, int events) {
  (void)events;
  zproc *p = h->data;
  static char buf[65536];
  for (int i = 0; i < 64 && !p->gone; i++) {
    ssize_t n = status < 0 ? -1 : recv(p->ctl_fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return;
    if (n <= 0) {
      zproc_gone(p, n == 0 ? "its channel closed" : "its channel failed");
      return;
    }
    handle_message(p, buf, (size_t)n);
  }
}

/* Spawns one incarnation; false when it could not start (logged). */
static bool zproc_start(berth_zygote *z, char *const *argv, char *const *env) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return false;
  zproc *p = calloc(1, sizeof *p);
  if (p == NULL) {
    close(sv[0]);
    close(sv[1]);
    return false;
  }
  p->z = z;
  p->gen = ++z->gen;
  p->ctl_fd = sv[0];
  p->process.data = p;
  bool ok = berth_worker_output_init(&p->out[0], z->loop, "stdout",
                                     zproc_release, p) == BERTH_OK;
  ok = berth_worker_output_init(&p->out[1], z->loop, "stderr", zproc_release,
                                p) == BERTH_OK &&
       ok;
  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  for (int k = 0; k < 2; k++) {
    stdio[1 + k].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1 + k].data.stream = (uv_stream_t *)&p->out[k].pipe;
  }
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = sv[1];
  uv_process_options_t opt = {0};
  opt.file = argv[0];
  opt.args = (char **)argv;
  opt.env = (char **)env;
  opt.stdio = stdio;
  opt.stdio_count = 4;
  opt.exit_cb = zproc_exit;
  int rc = ok ? uv_spawn(z->loop, &p->process, &opt) : UV_ENOMEM;
  close(sv[1]);
  z->procs++;
  if (rc != 0) {
    berth_log_kv(BERTH_LOG_WARNING,
                 "cannot start the worker template; workers start directly",
                 "error", uv_strerror(rc), NULL);
    close(sv[0]);
    p->open_handles = ok ? 3 : 2;
    berth_worker_output_close(&p->out[0]);
    berth_worker_output_close(&p->out[1]);
    if (ok)
      uv_close((uv_handle_t *)&p->process, zproc_handle_closed);
    z->given_up = true;
    return false;
  }
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  p->open_handles = 4;
  for (int k = 0; k < 2; k++)
    berth_worker_output_start(&p->out[k], "template", "-", 0, p->process.pid);
  uv_poll_init(z->loop, &p->ctl, sv[0]);
  p->ctl.data = p;
  p->ctl_polling = uv_poll_start(&p->ctl, UV_READABLE, on_ctl) == 0;
  z->cur = p;
  berth_log_kv(BERTH_LOG_DEBUG, "worker template started", NULL);
  return true;
}

bool berth_zygote_ensure(berth_zygote *z, char *const *argv, char *const *env) {
  if (z->given_up || z->stopping)
    return false;
  if (z->cur != NULL && !z->cur->gone)
    return true;
  return zproc_start(z, argv, env);
}

/* ---- fork requests ------------------------------------------------------ */

static int send_request(int fd, uint64_t id, char *const *env,
                        const int fds[3]) {
  size_t len = 9;
  for (size_t i = 0; env[i] != NULL; i++)
    len += strlen(env[i]) + 1;
  char *msg = malloc(len);
  if (msg == NULL)
    return BERTH_E_NOMEM;
  msg[0] = 'F';
  for (int b = 0; b < 8; b++)
    msg[1 + b] = (char)((id >> (8 * b)) & 0xff);
  size_t off = 9;
  for (size_t i = 0; env[i] != NULL; i++) {
    size_t n = strlen(env[i]) + 1;
    memcpy(msg + off, env[i], n);
    off += n;
  }
  struct iovec iov = {.iov_base = msg, .iov_len = len};
  union {
    char buf[CMSG_SPACE(3 * sizeof(int))];
    struct cmsghdr align;
  } cbuf;
  memset(&cbuf, 0, sizeof cbuf);
  struct msghdr mh = {.msg_iov = &iov,
                      .msg_iovlen = 1,
                      .msg_control = cbuf.buf,
                      .msg_controllen = sizeof cbuf.buf};
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(3 * sizeof(int));
  memcpy(CMSG_DATA(cm), fds, 3 * sizeof(int));
  ssize_t n;
  do
    n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  free(msg);
  return n == (ssize_t)len ? BERTH_OK : BERTH_E_IO;
}

int berth_zygote_fork(berth_zygote *z, berth_zchild *c, char *const *env,
                      const int fds[3]) {
  zproc *p = z->cur;
  if (p == NULL || p->gone || z->stopping)
    return BERTH_E_UNAVAILABLE;
  c->z = z;
  c->id = ++z->next_id;
  c->gen = p->gen;
  c->pid = 0;
  c->pidfd = -1;
  c->pending_signal = 0;
  c->status_known = c->polling = c->poll_inited = false;
  c->dead = c->done = false;
  int rc = send_request(p->ctl_fd, c->id, env, fds);
  if (rc != BERTH_OK)
    return rc;
  LIST_INSERT_HEAD(&z->children, c, link);
  c->linked = true;
  return BERTH_OK;
}

/* ---- stopping ----------------------------------------------------------- */

bool berth_zygote_busy(const berth_zygote *z) {
  return z != NULL && z->procs > 0;
}

void berth_zygote_stop(berth_zygote *z) {
  z->stopping = true;
  if (z->cur != NULL)
    zproc_gone(z->cur, "stopped"); /* kills it: it holds no state */
}

void berth_zygote_free(berth_zygote *z) { free(z); }
