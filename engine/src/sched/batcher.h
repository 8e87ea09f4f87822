/* Berth engine: the dynamic batcher's clock and its decision of when to send
 * (docs/batching.md, "How a batch forms").
 *
 * The scheduler (scheduler.c) owns the queue and forms batches; this module
 * decides, each time a worker is idle and requests are queued, whether to
 * send now or to wait for more, and wakes the scheduler when a wait ends:
 *  - at the end of the loop iteration in which requests arrived (a uv_check
 *    handle), so that requests read from the sockets together are batched
 *    together instead of the first one leaving alone;
 *  - at the exact moment the oldest request's max_queue_delay_us runs out
 *    (a timerfd watched by a uv_poll handle: libuv's timers count whole
 *    milliseconds, too coarse for delays of a few hundred microseconds). If
 *    no timerfd can be made, a uv_timer rounded up to whole milliseconds
 *    stands in.
 *
 * The decision ("adaptive wait"): with a worker idle, a batch that is not
 * full waits only while more requests are expected at once — fewer requests
 * are in the server (queued + running) than the concurrency the batcher has
 * seen (the most it has seen in the server at once, lowered whenever a wait
 * ends short of it), and the last request arrived less than half a batch's
 * service time ago (a burst is still arriving). A lone queued request never
 * waits for an idle worker, and no request waits longer than
 * max_queue_delay_us counted from the oldest one.
 *
 * Everything runs on the loop thread. The handles are embedded in the model
 * (berth_model.batcher); berth_batcher_close closes them, and the model's
 * memory may go only after the loop has run their close callbacks. */
#ifndef BERTH_BATCHER_H
#define BERTH_BATCHER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct berth_model;

typedef struct berth_batcher {
  uv_check_t check;         /* end of the loop iteration: dispatch */
  uv_poll_t wake;           /* watches wake_fd (initialised if wake_polled) */
  uv_timer_t wake_timer;    /* fallback when !use_fd */
  int wake_fd;              /* owned timerfd, or -1 */
  bool wake_polled;         /* wake was initialised (closed at close) */
  bool use_fd;              /* wake_fd is being watched: arm it */
  bool check_active;        /* a dispatch is due at the end of this iteration */
  bool wake_armed;          /* a wake-up is set and has not fired */
  uint64_t wake_at_ns;      /* when (uv_hrtime clock), if armed */
  uint64_t seen;            /* concurrency seen: the most requests in the
                              server at once, lowered when a wait runs out */
  uint64_t last_arrival_ns; /* uv_hrtime() of the latest request queued */
  uint64_t service_ns;      /* moving average of a batch's time on a worker
                              (frame sent to answer); 0 until one ran */
} berth_batcher;

/* Sets up the handles of m->batcher on m's loop. */
void berth_batcher_init(struct berth_model *m);
/* Closes the handles and the timerfd. */
void berth_batcher_close(struct berth_model *m);
/* A request was queued (after the model's inflight count went up): updates
 * the arrival statistics and schedules a dispatch at the end of this loop
 * iteration. */
void berth_batcher_arrived(struct berth_model *m, uint64_t now_ns);
/* A batch came back from a worker after service_ns. */
void berth_batcher_served(struct berth_model *m, uint64_t service_ns);
/* With a worker idle and requests queued: true to send a batch now; false
 * to wait (a wake-up is then set for the delay's end, and any arrival
 * before it re-asks). */
bool berth_batcher_ready(struct berth_model *m, uint64_t now_ns);

#endif
