/* Berth engine: the supervisor's API (supervisor.c, worker_io.c,
 * worker_shm.c, worker_spawn.c; supervisor_int.h) — it spawns each
 * model's worker processes, hands them batches over the worker protocol,
 * restarts the ones that die (with backoff), and stops them. When the last
 * worker process of a stop_all is gone it calls the callback it was given
 * (as uv_close does): it names nobody above it.
 */
#ifndef BERTH_SUPERVISOR_H
#define BERTH_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "berth/error.h"
#include "placement.h"

struct berth_engine;
struct berth_model;
struct berth_job;
struct berth_batch;
struct berth_worker;
typedef struct berth_engine berth_engine;
typedef struct berth_model berth_model;
typedef struct berth_job berth_job;
typedef struct berth_batch berth_batch;
typedef struct berth_worker berth_worker;

/* The supervisor's engine-wide state; supervisor.c alone writes it. */
typedef struct berth_supervisor_state {
  size_t live_procs;          /* worker processes not yet reaped/freed */
  uv_timer_t stop_timer;      /* stop_all's escalation to SIGKILL */
  void (*stopped)(void *arg); /* stop_all's callback, called once */
  void *stopped_arg;
  struct berth_zygote *zygote; /* the worker template (zygote.h), or NULL */
  bool zygote_off;             /* workers start directly */
  berth_placement gpus;        /* the config's GPUs and what is placed on them
                           (placement.h) */
} berth_supervisor_state;

/* Sets up and closes the supervisor's engine-wide state (its timer). */
void berth_supervisor_engine_init(berth_engine *e);
void berth_supervisor_engine_close(berth_engine *e);
/* Resident memory of m's live worker processes, summed (bytes, from
 * /proc/<pid>/statm); -1 when none could be read. */
double berth_supervisor_rss(const berth_model *m);
/* Creates the model's worker slots and spawns them. */
int berth_supervisor_start(berth_model *m, berth_errmsg *err);
/* An idle, ready worker of m, or NULL. */
berth_worker *berth_supervisor_idle_worker(berth_model *m);
/* m's worker instance i when it is idle and ready, else NULL. */
berth_worker *berth_supervisor_idle_worker_at(berth_model *m, size_t i);
/* Sends a batch to an idle worker, which takes ownership of it. On failure
 * the batch's jobs are failed and the worker is restarted. */
void berth_worker_run(berth_worker *w, berth_batch *b);
/* Asks the worker running job, a decoupled model's request, to stop
 * (CANCEL frame): it stops at the model's next response and ends the
 * request as usual, so job's callbacks still come. false when job is not
 * a running decoupled request (nothing sent). */
bool berth_supervisor_cancel_job(struct berth_job *job);
/* Sends SHUTDOWN to every worker, escalates to SIGKILL after timeout_ms,
 * and calls stopped(arg) once, when every worker process is gone (possibly
 * before this returns). */
void berth_supervisor_stop_all(berth_engine *e, uint64_t timeout_ms,
                               void (*stopped)(void *arg), void *arg);
/* Frees the worker slots (after stop_all completed). */
void berth_supervisor_free(berth_model *m);
/* supervisor.c, for the repository: stop one model's workers (SHUTDOWN to
 * ready ones, TERM to the others; keep_ready: only those not ready, so the
 * ready ones can finish the queue) without restarting them, KILL those
 * still running, and whether none is left. */
void berth_supervisor_stop_model(berth_model *m, bool keep_ready);
void berth_supervisor_kill_model(berth_model *m);
bool berth_supervisor_model_stopped(const berth_model *m);
/* supervisor.c, for repo_replace.c: stop_model without touching busy
 * workers (each gets SHUTDOWN at a later call, once its batch is answered);
 * and trade the worker slots (and ready and instance counts) of two
 * models, each slot then pointing to its new model. */
void berth_supervisor_retire(berth_model *m);
void berth_supervisor_swap(berth_model *a, berth_model *b);
/* Places w, a slot added to m after berth_supervisor_start (autoscaling's
 * growth; it may already be in m->workers), before its first spawn: picks
 * its device given where m's other slots run and counts it there
 * (placement.h). BERTH_E_CONFIG with the reason when it fits nowhere: do
 * not spawn it then. berth_supervisor_free gives the device back. */
int berth_supervisor_place_slot(berth_model *m, berth_worker *w,
                                berth_errmsg *err);
/* The device of m's worker instance i (placement.h: a GPU index,
 * BERTH_DEVICE_CPU or BERTH_DEVICE_INHERIT; INHERIT past the end). */
int berth_supervisor_worker_device(const berth_model *m, size_t i);
/* supervisor.c, for the autoscaler (core/autoscale.c): the slots whose
 * process loads or serves, or whose restart is due; grow starts one more
 * worker, in a slot a scale-down emptied or a new one while there are
 * fewer than cap slots (BERTH_E_OVERLOAD at cap, BERTH_E_UNAVAILABLE while
 * the server stops); shrink_one sends SHUTDOWN to one idle ready worker
 * (never a busy one) and says whether there was one. */
size_t berth_supervisor_active(const berth_model *m);
int berth_supervisor_grow(berth_model *m, uint32_t cap);
bool berth_supervisor_shrink_one(berth_model *m);

#endif
