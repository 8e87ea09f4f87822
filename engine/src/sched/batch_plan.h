/* Berth engine: the batcher's decision as a pure function — given what is
 * queued and what the batcher has learned, send a batch now or wait until a
 * given time (docs/batching.md, "How a batch forms"). No I/O, no clock, no
 * engine state: batcher.c gathers the inputs, applies the answer, and arms
 * its wake-up; engine/tests/sched/test_batch_plan.c tests every rule. */
#ifndef BERTH_BATCH_PLAN_H
#define BERTH_BATCH_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct berth_batch_plan_in {
  uint64_t now_ns;          /* the clock (uv_hrtime) */
  uint64_t delay_ns;        /* max_queue_delay_us in ns; 0: never wait */
  uint32_t max_batch_size;  /* 0: the model does not batch */
  size_t q_len;             /* requests queued (> 0) */
  int64_t q_rows;           /* batch rows queued */
  bool q_rows_preferred;    /* q_rows is one of preferred_batch_sizes */
  uint64_t oldest_ns;       /* when the oldest queued request was queued */
  uint64_t in_server;       /* requests queued or running */
  uint64_t seen;            /* the concurrency the batcher expects */
  uint64_t last_arrival_ns; /* when the latest request was queued */
  uint64_t service_ns;      /* a batch's average time on a worker; 0: none
                               ran yet */
} berth_batch_plan_in;

typedef struct berth_batch_plan {
  bool send;           /* true: send a batch now */
  uint64_t wake_at_ns; /* !send: ask again at this time at the latest
                               (an arrival before it asks too) */
  uint64_t seen;       /* the expected concurrency from now on */
} berth_batch_plan;

/* The rules, in order: a model that does not batch, or has no delay, sends;
 * a full or preferred-size batch sends; the oldest request's delay is over:
 * send (and expect no more than are here now); a lone request never waits
 * for an idle worker; every client seen lately is here: send; no arrival
 * for half a batch's service time: send (and expect fewer); else wait for
 * the next arrival, at most until half a service time after the last one
 * and never past the oldest request's delay. */
berth_batch_plan berth_batch_plan_decide(const berth_batch_plan_in *in);

#endif
