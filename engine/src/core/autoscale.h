/* Berth engine: the autoscaler (autoscale.c) — a periodic uv timer samples
 * every model version's ongoing requests (in flight + queued), asks the
 * policy (sched/autoscale_policy.h) how many instances it should have,
 * and has the supervisor start workers or stop idle ones; it puts idle
 * models to sleep (scale to zero) and wakes them when a request comes; and
 * under a memory budget (memory_budget) it measures each model's resident
 * memory and evicts the least recently used idle models when starting
 * workers would exceed it. docs/autoscaling.md describes what users see.
 */
#ifndef BERTH_AUTOSCALE_H
#define BERTH_AUTOSCALE_H

#include <stdint.h>

struct berth_engine;
struct berth_model;
struct berth_module;

/* How often the autoscaler samples (ms). */
#define BERTH_AUTOSCALE_TICK_MS 100

/* A request was queued on m (model.c's submit): notes the use (LRU) and,
 * when m is asleep with no worker, wakes it at once. */
void berth_autoscale_submitted(struct berth_model *m);

/* The autoscaler's module (main.c's list): its timer and its /metrics
 * families. */
extern const struct berth_module berth_autoscale_module;

#endif
