/* Berth engine: what the supervisor does when a worker process exits, as a
 * pure function (restart_policy.c) — restart it after a backoff that
 * doubles up to workers.restart_backoff_max_s and starts again from
 * workers.restart_backoff_s once the worker had served for 30 s, or leave
 * it stopped (the server or the model is stopping, or the model cannot
 * load: it is not restarted in a loop). No I/O, no clock;
 * engine/tests/worker/test_restart_policy.c tests every rule. */
#ifndef BERTH_RESTART_POLICY_H
#define BERTH_RESTART_POLICY_H

#include <stdbool.h>
#include <stdint.h>

/* A worker that served this long is healthy again: its backoff resets. */
#define BERTH_RESTART_HEALTHY_NS (30ull * 1000000000ull)

typedef struct berth_restart_in {
  bool stopping;        /* the server drains or stops, or this worker was
                           being stopped (unload, scale-down) */
  bool failed_load;     /* it was killed because loading failed or took too
                           long */
  double backoff_s;     /* the worker's current backoff */
  uint64_t served_ns;   /* how long it had been ready; 0: never ready */
  double backoff_min_s; /* workers.restart_backoff_s */
  double backoff_max_s; /* workers.restart_backoff_max_s */
} berth_restart_in;

typedef struct berth_restart_plan {
  bool restart; /* spawn it again after delay_s */
  double delay_s;
  double next_backoff_s; /* the worker's backoff after this restart */
} berth_restart_plan;

berth_restart_plan berth_restart_decide(const berth_restart_in *in);

#endif
