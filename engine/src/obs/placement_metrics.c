/* Berth engine: GPU placement in /metrics (placement_metrics.h). */
#include "placement_metrics.h"

#include <stdio.h>

#include "engine.h"
#include "model_metrics.h"

static int worker_devices(berth_engine *e, berth_buf *out) {
  int rc = berth_buf_printf(
      out, "# HELP berth_worker_device Where each worker instance runs: 1 "
           "for its device (cuda:N, its one visible GPU; cpu, no GPU; "
           "default, the server's own CUDA_VISIBLE_DEVICES).\n"
           "# TYPE berth_worker_device gauge\n");
  for (size_t i = 0; i < e->n_models && rc == BERTH_OK; i++) {
    const berth_model *m = e->models[i];
    for (size_t k = 0; k < m->n_workers && rc == BERTH_OK; k++) {
      char dev[32];
      berth_placement_name(berth_supervisor_worker_device(m, k), dev,
                           sizeof dev);
      rc = berth_buf_printf(out, "berth_worker_device{model=\"");
      if (rc == BERTH_OK)
        rc = berth_metrics_escape(out, m->cfg->name);
      if (rc == BERTH_OK)
        rc = berth_buf_printf(out, "\",version=\"");
      if (rc == BERTH_OK)
        rc = berth_metrics_escape(out, m->cfg->version);
      if (rc == BERTH_OK)
        rc = berth_buf_printf(out, "\",instance=\"%zu\",device=\"%s\"} 1\n", k,
                              dev);
    }
  }
  return rc;
}

/* One per-GPU gauge family; field: 0 budget, 1 placed bytes, 2 instances. */
static int gpu_family(const berth_placement *p, berth_buf *out,
                      const char *name, const char *help, int field) {
  int rc = berth_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help,
                            name);
  for (size_t i = 0; i < p->n_gpus && rc == BERTH_OK; i++) {
    const berth_gpu *g = &p->gpus[i];
    unsigned long long v = field == 0   ? g->budget
                           : field == 1 ? g->used
                                        : g->instances;
    rc = berth_buf_printf(out, "%s{gpu=\"%u\"} %llu\n", name,
                          (unsigned)g->index, v);
  }
  return rc;
}

int berth_placement_metrics(berth_engine *e, berth_buf *out) {
  int rc = worker_devices(e, out);
  const berth_placement *p = &e->sup.gpus;
  if (rc != BERTH_OK || p->n_gpus == 0)
    return rc;
  rc =
      gpu_family(p, out, "berth_gpu_memory_budget_bytes",
                 "GPU memory the server may place instances in (gpus[].budget; "
                 "0 = no limit).",
                 0);
  if (rc == BERTH_OK)
    rc = gpu_family(p, out, "berth_gpu_memory_placed_bytes",
                    "GPU memory placed instances need together (their models' "
                    "gpu_memory).",
                    1);
  if (rc == BERTH_OK)
    rc = gpu_family(p, out, "berth_gpu_instances",
                    "Worker instances placed on the GPU, every model.", 2);
  return rc;
}
