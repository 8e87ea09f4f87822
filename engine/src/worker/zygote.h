/* Berth engine: the worker template ("zygote", docs/worker-protocol.md,
 * "Worker template") — one Python process per engine that has imported
 * what every worker needs (NumPy, berth.worker, the runtime modules of the
 * configured frameworks) and forks a worker on request, so that a worker
 * starts without paying for those imports again.
 *
 * The engine still owns its workers' lifecycle: it creates each worker's
 * channel socket and output pipes and hands the child's ends to the
 * template with the worker's whole environment; the template forks, puts
 * them on descriptors 3, 1 and 2 and runs the worker. The engine watches
 * the child through a pidfd (it is the template's child, not the
 * engine's), signals it through the pidfd, and takes its exit status from
 * the template's report; when the template is gone first, the status is
 * unknown (status_known false) but the exit is still seen. A template
 * that dies is restarted at the next spawn; after BERTH_ZYGOTE_MAX_DEATHS
 * deaths it is given up and workers start directly (uv_spawn), as they do
 * when pidfds are not available.
 *
 * Ownership: berth_zygote is owned by the supervisor (one per engine);
 * each berth_zchild is embedded in the caller's per-process struct and
 * must be closed (berth_zchild_close) exactly once, after its on_exit or
 * on_failed, or to give it up; it must not be freed before its close
 * callback ran. */
#ifndef BERTH_ZYGOTE_H
#define BERTH_ZYGOTE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

#include "berth/error.h"

#define BERTH_ZYGOTE_MAX_DEATHS 3

typedef struct berth_zygote berth_zygote;
typedef struct berth_zchild berth_zchild;

struct berth_zchild {
  /* Set by the caller before berth_zygote_fork. */
  void (*on_forked)(berth_zchild *c); /* pid is known */
  void (*on_exit)(berth_zchild *c);   /* the child is gone (once) */
  /* The template could not fork it (it died first or refused): nothing
   * runs; the caller closes c and may start the worker another way. */
  void (*on_failed)(berth_zchild *c, const char *why);
  void *data;
  /* Results, read-only for the caller. */
  int pid;             /* 0 until forked */
  bool status_known;   /* exit_status/term_signal are the real ones */
  int64_t exit_status; /* as uv_process_t's exit_cb gives it */
  int term_signal;     /* 0 when it exited */
  /* zygote.c's. */
  berth_zygote *z;
  uint64_t id;
  unsigned gen; /* the template incarnation that forks it */
  int pidfd;
  int pending_signal; /* asked before the pid was known */
  uv_poll_t poll;     /* on pidfd */
  bool polling, poll_inited, dead, done, linked;
  void (*closed)(void *arg);
  void *closed_arg;
  LIST_ENTRY(berth_zchild) link;
};

/* A template manager on loop; idle(arg) is called whenever its last
 * template process has gone (for the supervisor's stop accounting). NULL
 * when out of memory or when this kernel has no pidfds (logged). */
berth_zygote *berth_zygote_new(uv_loop_t *loop, void (*idle)(void *arg),
                               void *arg);
/* Starts a template with argv and env (both copied by uv_spawn) unless one
 * runs or the template was given up; whether fork requests can be sent
 * now (the template may still be importing: they wait in its socket). */
bool berth_zygote_ensure(berth_zygote *z, char *const *argv, char *const *env);
/* Asks the template to fork a worker with environment env (NAME=value
 * strings) and the child's ends fds[0..2] (channel, stdout, stderr),
 * which the caller still closes. BERTH_OK: c's callbacks will come;
 * anything else: nothing was sent (start the worker another way). */
int berth_zygote_fork(berth_zygote *z, berth_zchild *c, char *const *env,
                      const int fds[3]);
/* Signals the child (at once, or when its pid arrives; SIGKILL wins). */
void berth_zchild_kill(berth_zchild *c, int sig);
/* Stops watching the child; closed(arg) runs when its handle has closed
 * (possibly at once). */
void berth_zchild_close(berth_zchild *c, void (*closed)(void *arg), void *arg);
/* Whether a template process (or its handles) is still around. */
bool berth_zygote_busy(const berth_zygote *z);
/* Stops the template (it holds no state: SIGKILL) and starts no new one;
 * the workers it forked keep running. */
void berth_zygote_stop(berth_zygote *z);
/* Frees z once berth_zygote_busy is false (after berth_zygote_stop). */
void berth_zygote_free(berth_zygote *z);

#endif
