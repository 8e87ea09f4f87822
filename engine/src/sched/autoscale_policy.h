/* Berth engine: the autoscaling policy as a pure function of samples
 * (autoscale_policy.c) — how many worker instances a model version should
 * have, from the requests it has in flight or queued ("ongoing"), with the
 * semantics of Ray Serve's autoscaling config and Knative's KPA
 * (docs/autoscaling.md):
 *
 *  - desired = ceil(average ongoing over the stable window / target), kept
 *    within min_instances..max_instances;
 *  - panic: when the panic window's average exceeds panic_threshold x the
 *    current capacity (instances x target), scale up at once to the panic
 *    window's desired count; while panicking (until a stable window has
 *    passed since the last trigger) never scale down;
 *  - otherwise a higher count is taken once it was wanted for
 *    upscale_delay_s, a lower one once wanted for downscale_delay_s;
 *  - zero instances (min_instances 0) once nothing was ongoing for
 *    scale_to_zero_after_s; from zero, one instance as soon as a request
 *    is ongoing (no delay).
 *
 * No I/O, no clock: the caller passes the time (ns, any monotonic origin).
 * The Ray gateway can reuse it for replica counts.
 * engine/tests/sched/test_autoscale_policy.c tests every rule with a fake
 * clock. */
#ifndef BERTH_AUTOSCALE_POLICY_H
#define BERTH_AUTOSCALE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

/* A model's autoscaling block (config key `autoscaling`). */
typedef struct berth_autoscale_config {
  bool enabled;                   /* the block is present */
  uint32_t min_instances;         /* default 1; 0 allows scale to zero */
  uint32_t max_instances;         /* default: max(min, cores) */
  double target_ongoing_requests; /* per instance, > 0, default 2 */
  double upscale_delay_s;         /* default 30 */
  double downscale_delay_s;       /* default 600 */
  double scale_to_zero_after_s;   /* default: downscale_delay_s */
  double stable_window_s;         /* default 60 */
  double panic_window_s;          /* default 6, <= stable_window_s */
  double panic_threshold;         /* default 2.0 (200 % of target) */
} berth_autoscale_config;

/* Samples are kept in time buckets: BERTH_AUTOSCALE_BUCKETS of them cover
 * the stable window (each at least 10 ms wide). */
#define BERTH_AUTOSCALE_BUCKETS 1024

typedef struct berth_autoscale_bucket {
  uint64_t slot; /* which bucket of time it holds (t / width), +1; 0 empty */
  double sum;    /* ongoing samples added in it */
  uint32_t n;
} berth_autoscale_bucket;

/* The policy's state for one model; the caller owns it (it is large:
 * allocate it). Fields are the policy's own: read them through the
 * decision. */
typedef struct berth_autoscale_state {
  berth_autoscale_config cfg;
  uint64_t width_ns; /* bucket width */
  berth_autoscale_bucket buckets[BERTH_AUTOSCALE_BUCKETS];
  uint32_t desired;      /* the last decision */
  bool panic;            /* in panic mode */
  uint64_t panic_until;  /* panic ends at this time unless re-triggered */
  uint64_t want_up_ns;   /* since when more than desired is wanted; 0 no */
  uint64_t want_down_ns; /* since when fewer than desired are wanted */
  uint64_t last_busy_ns; /* the last sample with anything ongoing */
  bool busy;             /* the last sample had something ongoing */
  uint64_t started_ns;   /* first sample */
} berth_autoscale_state;

typedef struct berth_autoscale_decision {
  uint32_t desired;  /* instances wanted now */
  bool panic;        /* panic mode */
  double stable_avg; /* ongoing, averaged over the stable window */
  double panic_avg;  /* over the panic window */
} berth_autoscale_decision;

/* Checks cfg (enabled or not): the message names the key, without the
 * path. BERTH_OK (0) or -1 with why (cap bytes). */
int berth_autoscale_config_check(const berth_autoscale_config *cfg, char *why,
                                 unsigned cap);
/* Starts the policy with `initial` instances (clamped to the bounds). */
void berth_autoscale_init(berth_autoscale_state *s,
                          const berth_autoscale_config *cfg, uint32_t initial,
                          uint64_t now_ns);
/* One sample: `ongoing` requests (in flight + queued) at now_ns. */
void berth_autoscale_record(berth_autoscale_state *s, uint64_t now_ns,
                            double ongoing);
/* The decision at now_ns, given the instances serving or starting now
 * (current: the capacity the panic rule compares with). */
berth_autoscale_decision berth_autoscale_decide(berth_autoscale_state *s,
                                                uint64_t now_ns,
                                                uint32_t current);
/* Something else (the memory budget) put the model to sleep: zero
 * instances until a request wakes it, whatever min_instances says. */
void berth_autoscale_sleep(berth_autoscale_state *s);
/* A request arrived for a model at zero: one instance at once (the wake),
 * whatever the windows say. */
void berth_autoscale_wake(berth_autoscale_state *s, uint64_t now_ns);

#endif
