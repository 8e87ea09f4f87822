/* Berth engine: placing worker instances on GPUs (placement.h). */
#include "placement.h"

#include <stdio.h>
#include <string.h>

static berth_gpu *gpu_at(berth_placement *p, int device) {
  for (size_t i = 0; device >= 0 && i < p->n_gpus; i++)
    if (p->gpus[i].index == (uint32_t)device)
      return &p->gpus[i];
  return NULL;
}

static bool known(const berth_placement *p, uint32_t index) {
  for (size_t i = 0; i < p->n_gpus; i++)
    if (p->gpus[i].index == index)
      return true;
  return false;
}

static bool allowed(const berth_device_req *req, uint32_t index) {
  if (req->kind != BERTH_DEVICES_LIST)
    return true;
  for (size_t i = 0; i < req->n_list; i++)
    if (req->list[i] == index)
      return true;
  return false;
}

/* Bytes left under g's budget; UINT64_MAX when it has none. */
static uint64_t free_bytes(const berth_gpu *g) {
  if (g->budget == 0)
    return UINT64_MAX;
  return g->used >= g->budget ? 0 : g->budget - g->used;
}

/* "12.5 GiB" (or "123 bytes" below a KiB). */
static void show_bytes(uint64_t n, char *out, size_t cap) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (n < 1024) {
    snprintf(out, cap, "%llu bytes", (unsigned long long)n);
    return;
  }
  double v = (double)n / 1024.0;
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024.0;
    u++;
  }
  snprintf(out, cap, "%.1f %s", v, units[u]);
}

/* The allowed GPUs and what each has left, for a message. */
static void describe_gpus(const berth_placement *p, const berth_device_req *req,
                          char *out, size_t cap) {
  size_t len = 0;
  out[0] = '\0';
  for (size_t i = 0; i < p->n_gpus && len + 1 < cap; i++) {
    const berth_gpu *g = &p->gpus[i];
    if (!allowed(req, g->index))
      continue;
    char left[32], budget[32];
    int w;
    if (g->budget == 0) {
      w = snprintf(out + len, cap - len, "%sGPU %u: no memory budget",
                   len ? "; " : "", (unsigned)g->index);
    } else {
      show_bytes(free_bytes(g), left, sizeof left);
      show_bytes(g->budget, budget, sizeof budget);
      w = snprintf(out + len, cap - len, "%sGPU %u: %s free of %s",
                   len ? "; " : "", (unsigned)g->index, left, budget);
    }
    if (w < 0)
      return;
    len += (size_t)w < cap - len ? (size_t)w : cap - len - 1;
  }
}

static void list_known(const berth_placement *p, char *out, size_t cap) {
  size_t len = 0;
  out[0] = '\0';
  for (size_t i = 0; i < p->n_gpus && len + 1 < cap; i++) {
    int w = snprintf(out + len, cap - len, "%s%u", i ? ", " : "",
                     (unsigned)p->gpus[i].index);
    if (w < 0)
      return;
    len += (size_t)w < cap - len ? (size_t)w : cap - len - 1;
  }
}

/* The checks that do not depend on memory: a GPU is asked for and known. */
static int check_request(const berth_placement *p, const berth_device_req *req,
                         berth_errmsg *err) {
  if (p->n_gpus == 0)
    return berth_errf(
        err, BERTH_E_CONFIG,
        "model '%s' version '%s': devices asks for GPUs, but the server knows "
        "none (berth serve lists them with nvidia-smi; give them with --gpus "
        "or BERTH_GPUS, e.g. 0:80GiB, or the engine document's gpus list)",
        req->model, req->version);
  for (size_t i = 0; req->kind == BERTH_DEVICES_LIST && i < req->n_list; i++) {
    if (!known(p, req->list[i])) {
      char have[256];
      list_known(p, have, sizeof have);
      return berth_errf(err, BERTH_E_CONFIG,
                        "model '%s' version '%s': devices: GPU %u is not one "
                        "of the server's GPUs (%s)",
                        req->model, req->version, (unsigned)req->list[i], have);
    }
  }
  return BERTH_OK;
}

int berth_placement_pick(const berth_placement *p, const berth_device_req *req,
                         const int *current, size_t n_current, int *device,
                         berth_errmsg *err) {
  if (req->kind == BERTH_DEVICES_CPU) {
    *device = BERTH_DEVICE_CPU;
    return BERTH_OK;
  }
  if (req->kind == BERTH_DEVICES_AUTO && p->n_gpus == 0) {
    *device = BERTH_DEVICE_INHERIT;
    return BERTH_OK;
  }
  int rc = check_request(p, req, err);
  if (rc != BERTH_OK)
    return rc;
  const berth_gpu *best = NULL;
  size_t best_count = 0;
  for (size_t i = 0; i < p->n_gpus; i++) {
    const berth_gpu *g = &p->gpus[i];
    if (!allowed(req, g->index) || req->need > free_bytes(g))
      continue;
    size_t count = 0;
    for (size_t k = 0; k < n_current; k++)
      if (current[k] == (int)g->index)
        count++;
    bool better = best == NULL || count < best_count ||
                  (count == best_count && free_bytes(g) > free_bytes(best)) ||
                  (count == best_count && free_bytes(g) == free_bytes(best) &&
                   g->index < best->index);
    if (better) {
      best = g;
      best_count = count;
    }
  }
  if (best == NULL) {
    char need[32], gpus[600];
    show_bytes(req->need, need, sizeof need);
    describe_gpus(p, req, gpus, sizeof gpus);
    return berth_errf(err, BERTH_E_CONFIG,
                      "model '%s' version '%s': instance %zu needs %s of GPU "
                      "memory (gpu_memory) and no GPU of its devices has that "
                      "much left (%s); lower instances or gpu_memory, free a "
                      "GPU, or raise --gpu-memory-budget",
                      req->model, req->version, n_current, need, gpus);
  }
  *device = (int)best->index;
  return BERTH_OK;
}

void berth_placement_take(berth_placement *p, int device, uint64_t need) {
  berth_gpu *g = gpu_at(p, device);
  if (g == NULL)
    return;
  g->used = need > UINT64_MAX - g->used ? UINT64_MAX : g->used + need;
  g->instances++;
}

void berth_placement_release(berth_placement *p, int device, uint64_t need) {
  berth_gpu *g = gpu_at(p, device);
  if (g == NULL)
    return;
  g->used = need > g->used ? 0 : g->used - need;
  if (g->instances > 0)
    g->instances--;
}

int berth_placement_plan(berth_placement *p, const berth_device_req *req,
                         uint32_t n, int *devices, berth_errmsg *err) {
  for (uint32_t i = 0; i < n; i++) {
    int rc = berth_placement_pick(p, req, devices, i, &devices[i], err);
    if (rc != BERTH_OK) {
      while (i > 0) {
        i--;
        berth_placement_release(p, devices[i], req->need);
      }
      return rc;
    }
    berth_placement_take(p, devices[i], req->need);
  }
  return BERTH_OK;
}

bool berth_placement_env_value(int device, char *out, size_t cap) {
  if (device == BERTH_DEVICE_INHERIT)
    return false;
  if (device < 0)
    snprintf(out, cap, "%s", "");
  else
    snprintf(out, cap, "%d", device);
  return true;
}

void berth_placement_name(int device, char *out, size_t cap) {
  if (device == BERTH_DEVICE_INHERIT)
    snprintf(out, cap, "default");
  else if (device < 0)
    snprintf(out, cap, "cpu");
  else
    snprintf(out, cap, "cuda:%d", device);
}

size_t berth_placement_groups(const int *devices, size_t n,
                              berth_device_group *out, size_t cap) {
  size_t groups = 0;
  for (size_t i = 0; i < n && cap > 0; i++) {
    size_t g = 0;
    while (g < groups && out[g].device != devices[i])
      g++;
    if (g == groups) {
      if (groups == cap)
        g = cap - 1; /* no room: counted in the last group */
      else
        out[groups++] = (berth_device_group){.device = devices[i], .count = 0};
    }
    out[g].count++;
  }
  return groups;
}
