/* Berth engine: the supervisor's private structures and the functions its
 * files share (supervisor.h is its API). Internal to these four files:
 *   supervisor.c    process lifecycle (exit, restart plan, load timeout),
 *                   slots and placement, scaling, stopping, the public API
 *                   that is neither frames nor spawning;
 *   worker_io.c     the worker's socket: frames written (LOAD, INFER from
 *                   the requests' buffers, CANCEL) and read (READY,
 *                   LOAD_FAILED, RESULT/ERROR, RESPONSE);
 *   worker_shm.c    the shared memory region of an incarnation (wp_shm.h);
 *   worker_spawn.c  the worker's environment, the worker template (zygote)
 *                   glue, fork or spawn of an incarnation.
 *
 * Ownership: a model owns its slots (berth_model.workers, each a
 * berth_worker, freed by berth_supervisor_free once its timer closed). A
 * slot owns its in-flight batches (running) and points to its current
 * incarnation (proc), which it does not own: an incarnation (worker_proc)
 * owns its process or template child, socket, output pipes, receive buffer
 * and shared memory region, and frees itself when its last handle has
 * closed (berth_sup_proc_release), so callbacks never see freed memory;
 * p->w is NULL once the slot moved on.
 */
#ifndef BERTH_SUPERVISOR_INT_H
#define BERTH_SUPERVISOR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "buf.h"
#include "engine.h"
#include "restart_policy.h"
#include "supervisor.h"
#include "worker_output.h"
#include "worker_proto.h"
#include "wp_gather.h"
#include "wp_shm.h"
#include "zygote.h"

typedef enum {
  W_EMPTY = 0, /* no process: waiting to restart, or never started */
  W_LOADING,   /* process started, LOAD sent, waiting for READY */
  W_IDLE,      /* ready, no batch */
  W_BUSY,      /* ready, running the batches in w->running */
  W_STOPPING,  /* SHUTDOWN sent */
  W_FAILED,    /* model failed to load: not restarted */
} worker_state;

typedef struct worker_proc worker_proc;

struct berth_worker {
  berth_model *model;
  unsigned index;
  worker_state state;
  worker_proc *proc; /* current incarnation or NULL */
  /* In-flight batches, owned: one at a time, or up to max_concurrency
   * decoupled requests when the worker's READY offered it (protocol 2). */
  berth_batch **running;
  uint32_t n_running;
  uint32_t max_concurrency; /* from the current incarnation's READY */
  uv_timer_t timer;         /* restart backoff or load timeout */
  double backoff_s;
  uint64_t ready_ns;   /* when the current incarnation became ready */
  uint64_t spawned_ns; /* when the current incarnation was started */
  bool counted_ready;  /* counted in model->n_ready */
  unsigned restarts;
  int device;        /* where every incarnation runs (placement.h), set once */
  uint64_t gpu_need; /* the gpu_memory counted there for it */
};

struct worker_proc {
  berth_engine *engine;
  berth_worker *w; /* NULL once the slot moved on */
  uv_process_t process;
  uv_pipe_t pipe;
  int open_handles;
  bool exited;
  bool pipe_closing;
  int64_t exit_status;
  int term_signal;
  berth_buf rx; /* bytes received, at most one frame + slack */
  uint32_t max_frame;
  berth_worker_output out[2]; /* the worker's stdout and stderr, forwarded
                                 to the log (worker_output.h) */
  bool forked;     /* started by the worker template: zc, not process */
  berth_zchild zc; /* zygote.h */

  /* Bytes handed to uv_write on the socket since the process started: with
   * the write queue's size, how far the worker can have read (a batch's
   * wire_end, frame_unsent). */
  uint64_t queued_bytes;
  berth_shm_region shm; /* the worker's shared memory (wp_shm.h), or none */
  bool shm_ok;          /* the worker mapped it (READY's shared_memory) */
  bool shm_kept;        /* the model kept an input array viewing it: no
                           more inputs go there (BERTH_WP_FLAG_KEPT_INPUTS) */
  char broke[560];      /* why the engine killed it, or "" */
};

/* ---- supervisor.c: lifecycle ------------------------------------------- */

/* "model/version/index" into buf, for the log; returns buf. */
const char *berth_sup_wname(const berth_worker *w, char *buf, size_t cap);
/* One of p's handles has closed (the uv_close and output callbacks' arg):
 * frees p after the last, and reports a finished stop_all. */
void berth_sup_proc_release(void *arg);
void berth_sup_proc_handle_closed(uv_handle_t *h);
/* Closes p's socket (once). */
void berth_sup_proc_close_pipe(worker_proc *p);
/* Signals p's process unless it has exited. */
void berth_sup_proc_kill(worker_proc *p, int sig);
int berth_sup_proc_pid(const worker_proc *p);
/* Calls stop_all's callback once no worker process nor template is left. */
void berth_sup_maybe_all_stopped(berth_engine *e);
/* A slot's timer: the restart is due, or the load timed out. */
void berth_sup_on_timer(uv_timer_t *t);
/* What to do now that w's process is gone (restart_policy.h), and doing
 * it: the slot empties and its timer restarts it. */
berth_restart_plan berth_sup_restart_plan(const berth_worker *w, bool stopping,
                                          bool failed_load);
void berth_sup_schedule_restart(berth_worker *w,
                                const berth_restart_plan *plan);
/* The incarnation's process has exited: fails its batches, restarts the
 * slot as the plan says. */
void berth_sup_proc_lost(worker_proc *p);
/* uv_spawn's exit_cb for a directly started worker. */
void berth_sup_on_worker_exit(uv_process_t *proc, int64_t status, int sig);

/* ---- worker_io.c: the socket and its frames ---------------------------- */

/* Sends one frame; the payload is copied. */
int berth_sup_send_frame(worker_proc *p, uint16_t type, uint64_t id,
                         const void *payload, size_t len);
/* Queues len raw bytes (part of a frame) on the socket; copied. */
int berth_sup_send_raw(worker_proc *p, const uint8_t *data, size_t len);
/* Sends w's LOAD frame (with the shared memory offer when there is one). */
int berth_sup_send_load(berth_worker *w);
/* Takes batch i out of w's in-flight set and returns it (owned by the
 * caller); w is idle when none is left. */
berth_batch *berth_sup_running_take(berth_worker *w, uint32_t i);
/* uv_read_start's callbacks on the socket (p in the pipe's data). */
void berth_sup_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void berth_sup_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- worker_shm.c: the incarnation's shared memory (wp_shm.h) ---------- */

/* Creates p's region when the config asks for one (p->shm). */
void berth_sup_shm_create(worker_proc *p);
/* Adds LOAD's "shared_memory" to entry when p has a region. */
int berth_sup_shm_offer(const worker_proc *p, json_t *entry);
/* Sends LOAD with the region's descriptor; BERTH_E_UNAVAILABLE when it
 * could not (nothing sent: send LOAD as usual). */
int berth_sup_shm_send_load(worker_proc *p, const char *text, size_t len);
/* READY's "shared_memory": keeps the region when the worker mapped it. */
void berth_sup_shm_adopt(worker_proc *p, const berth_model *m,
                         const uint8_t *payload, size_t len);
/* Where a batch's large inputs may go, in *s (NULL: all inline). */
berth_wp_shm *berth_sup_shm_inputs(worker_proc *p, berth_wp_shm *s);
/* Where a RESULT's tensors may point, in *g (NULL: nowhere). */
const berth_wp_region *berth_sup_shm_outputs(const worker_proc *p,
                                             berth_wp_region *g);

/* ---- worker_spawn.c: starting an incarnation --------------------------- */

/* Starts a process for w (from the template when there is one), sends LOAD
 * and arms the load timeout; on failure schedules a restart. */
void berth_sup_worker_spawn(berth_worker *w);

#endif
