/* Berth engine: the scheduler's API (scheduler.c) — one bounded queue per
 * model version with two priority levels, batches formed for idle workers,
 * per-request deadlines, and the split of a batch's outputs back to its
 * requests. The structures it works on (berth_model, berth_job,
 * berth_batch) are core/engine.h's; batcher.h decides when a batch leaves.
 */
#ifndef BERTH_SCHEDULER_H
#define BERTH_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "berth/error.h"
#include "infer.h"

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

/* The scheduler's engine-wide state; scheduler.c alone writes it. */
typedef struct berth_sched_state {
  size_t deadline_jobs;      /* queued or running jobs with a deadline */
  uv_timer_t deadline_timer; /* sweeps expired jobs while any exist */
  uv_timer_t seq_timer;      /* expires idle sequences while any live */
} berth_sched_state;

/* Queues a job (BERTH_E_OVERLOAD when the queue is full) and dispatches. */
int berth_sched_submit(berth_model *m, berth_job *job, berth_errmsg *err);
/* Fills b->inputs with the jobs' inputs concatenated along the first
 * dimension (a copy), for a consumer that needs them contiguous; does
 * nothing for a batch of one or when already filled. Batches are formed
 * without it: the Python worker path writes the jobs' buffers as they lie.
 * BERTH_E_NOMEM (b->inputs may then be partly filled; berth_batch_free
 * frees it). */
int berth_batch_concat_inputs(berth_batch *b);
/* Sends queued jobs to idle workers. Called after submit and whenever a
 * worker becomes idle. */
void berth_sched_dispatch(berth_model *m);
/* Removes a queued (not yet running) job; returns true if it was queued.
 * Neither callback is called: the caller still owns the job. */
bool berth_sched_cancel(berth_job *job);
/* Sets up the model's scheduler state (timers); berth_sched_close undoes it. */
void berth_sched_init(berth_model *m);
void berth_sched_close(berth_model *m);
void berth_sched_engine_init(berth_engine *e);
void berth_sched_engine_close(berth_engine *e);
/* Worker w of m exited: the sequences pinned to it lost their state; they
 * end, and their queued requests fail (sequence batching only). */
void berth_sched_worker_lost(berth_model *m, berth_worker *w);
/* m gets new workers (a replaced or reloaded config): every sequence
 * ends as in berth_sched_worker_lost, and the next one is counted against
 * the new config. */
void berth_sched_sequences_reset(berth_model *m);
/* Fails every queued job of m with status and msg. */
void berth_sched_fail_queued(berth_model *m, int status, const char *msg);
/* Completes every job of a batch with an error and frees the batch. */
void berth_batch_fail(berth_batch *b, int status, const char *msg);
/* What every answered job goes through, for the scheduler's jobs and a
 * pipeline's outer job alike: the model's in-flight count and request
 * metrics (took_ns: received -> answered), the payload log, the dashboard's
 * recent errors, job->done, then the trace's outcome. */
void berth_job_deliver(berth_job *j, int status, const char *msg,
                       berth_infer_response *resp, uint64_t took_ns);
/* The job is no longer referenced: its trace's spans go out (or are
 * dropped), then job->release. */
void berth_job_release_now(berth_job *j);
/* Completes a batch from a worker's RESULT tensors and frees the batch. */
void berth_batch_complete(berth_batch *b, berth_tensor *outs, size_t n,
                          const char *params, size_t params_len);
void berth_batch_free(berth_batch *b);

#endif
