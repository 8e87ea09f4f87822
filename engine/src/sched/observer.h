/* Berth engine: observers of a job's life.
 *
 * Metrics, traces, the payload log and the dashboard want to know when a
 * job leaves its queue, when its batch runs and ends, and how it was
 * answered. They register a berth_observer (a table of optional hooks and
 * a context) with the engine at start (berth_engine_observe, engine.h), and
 * the scheduler, the supervisor and pipelines call every registered hook
 * through BERTH_OBSERVE at those points, never an observer by name (the
 * manner of nginx's log phase and h2o's loggers).
 *
 * Hooks run on the loop thread, in the order they were registered, and
 * must not fail, block, submit or answer jobs: they only look and count.
 * A hook gets borrowed pointers valid for the call only.
 */
#ifndef BERTH_OBSERVER_H
#define BERTH_OBSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer.h"

struct berth_job;
struct berth_batch;
struct berth_model;

typedef struct berth_observer {
  void *ctx; /* borrowed: passed to every hook */
  /* A queued job was taken into a batch at now_ns (uv_hrtime) whose size
   * is batch_size rows (or requests, for models that do not batch). */
  void (*dispatched)(void *ctx, struct berth_job *j, uint64_t now_ns,
                     int64_t batch_size);
  /* A batch was formed and is about to be written to a worker. */
  void (*batch_sent)(void *ctx, struct berth_batch *b);
  /* A batch's run is over at now_ns: answered by its worker (answered),
   * or failed (its worker died, its frame could not be written). */
  void (*batch_ended)(void *ctx, struct berth_batch *b, uint64_t now_ns,
                      bool answered);
  /* A job is answered, just before its creator's done callback: status,
   * msg (never NULL) and resp (NULL on failure) as done gets them, took_ns
   * from received to now. */
  void (*answered)(void *ctx, struct berth_job *j, int status, const char *msg,
                   const berth_infer_response *resp, uint64_t took_ns);
  /* A decoupled model's job got one response at now_ns (before its
   * creator's partial callback): j->n_responses counts it already,
   * j->last_response_ns is still the previous one's time. */
  void (*responded)(void *ctx, struct berth_job *j,
                    const berth_infer_response *resp, uint64_t now_ns);
  /* A job is no longer referenced, just before its creator's release
   * callback frees it. */
  void (*released)(void *ctx, struct berth_job *j);
  /* A worker of m said READY, load_s seconds after it was spawned. */
  void (*worker_ready)(void *ctx, struct berth_model *m, double load_s);
  /* A worker of m died while serving and is being restarted. */
  void (*worker_restarted)(void *ctx, struct berth_model *m);
  /* m failed to load (m->state is FAILED, m->load_error says why). */
  void (*load_failed)(void *ctx, struct berth_model *m);
} berth_observer;

#define BERTH_MAX_OBSERVERS 8

/* The registered observers, in registration order. */
typedef struct berth_observers {
  berth_observer list[BERTH_MAX_OBSERVERS];
  size_t n;
} berth_observers;

/* Calls hook `hook` of every observer in os that has one, with the
 * observer's ctx first and the remaining arguments after it. */
#define BERTH_OBSERVE(os, hook, ...)                                           \
  do {                                                                         \
    const berth_observers *os_ = (os);                                         \
    for (size_t oi_ = 0; oi_ < os_->n; oi_++)                                  \
      if (os_->list[oi_].hook != NULL)                                         \
        os_->list[oi_].hook(os_->list[oi_].ctx, __VA_ARGS__);                  \
  } while (0)

#endif
