/* Berth engine: /metrics families of GPU placement (placement_metrics.c):
 * which device each worker instance runs on, and per GPU its budget, the
 * memory placed there and its instances (docs/metrics.md, docs/gpus.md). */
#ifndef BERTH_PLACEMENT_METRICS_H
#define BERTH_PLACEMENT_METRICS_H

#include "buf.h"

struct berth_engine;

/* Appends the families to out; BERTH_OK or the berth_buf error. */
int berth_placement_metrics(struct berth_engine *e, berth_buf *out);

#endif
