/* Berth engine: where a model's worker instances run (placement.c) — on
 * which GPU, or on the CPU. Pure: the engine's GPU table in, a device out;
 * no I/O, no allocation. docs/gpus.md is the user's side of it.
 *
 * Each instance gets one device: a GPU index (its worker then sees only
 * that GPU, CUDA_VISIBLE_DEVICES=<index>), BERTH_DEVICE_CPU (an empty
 * CUDA_VISIBLE_DEVICES: no GPU at all), or BERTH_DEVICE_INHERIT (the
 * engine knows no GPU and the model asked for none in particular: the
 * worker keeps the engine's own environment, as before placement).
 *
 * A new instance goes to the allowed GPU where its model has the fewest
 * instances (spread), then with the most memory left, then with the
 * lowest index; it must fit in that GPU's budget (placed needs plus its
 * own need). Growth at run time (autoscaling) calls berth_placement_pick
 * with the model's current devices, then berth_placement_take. */
#ifndef BERTH_PLACEMENT_H
#define BERTH_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

/* The most GPUs the engine tracks (the config's gpus list bound). */
#define BERTH_MAX_GPUS 64
/* The highest GPU index a config may name. */
#define BERTH_GPU_INDEX_MAX 1023

#define BERTH_DEVICE_CPU (-1)
#define BERTH_DEVICE_INHERIT (-2)

/* A model's devices key (config.h keeps it as a uint8_t). */
typedef enum berth_devices_kind {
  BERTH_DEVICES_AUTO = 0, /* every known GPU; none known: inherit */
  BERTH_DEVICES_CPU,      /* no GPU */
  BERTH_DEVICES_ALL,      /* every known GPU; none known is an error */
  BERTH_DEVICES_LIST,     /* the listed GPU indices */
} berth_devices_kind;

/* One GPU as the engine tracks it. */
typedef struct berth_gpu {
  uint32_t index;     /* the CUDA index */
  uint64_t memory;    /* capacity in bytes; 0 = unknown */
  uint64_t budget;    /* bytes Berth may place there; 0 = no limit */
  uint64_t used;      /* the gpu_memory of the instances placed there */
  uint32_t instances; /* instances placed there, every model */
} berth_gpu;

/* The engine's GPUs (the supervisor's state holds one). */
typedef struct berth_placement {
  berth_gpu gpus[BERTH_MAX_GPUS];
  size_t n_gpus;
} berth_placement;

/* What a model asks for (borrowed pointers). */
typedef struct berth_device_req {
  const char *model;   /* for messages: "name" */
  const char *version; /* for messages */
  berth_devices_kind kind;
  const uint32_t *list; /* BERTH_DEVICES_LIST: n_list GPU indices */
  size_t n_list;
  uint64_t need; /* gpu_memory of one instance, bytes; 0 = not counted */
} berth_device_req;

/* Picks the device of one new instance of req's model, whose instances
 * already run on current[0..n_current) (devices as above). Takes nothing:
 * berth_placement_take does. BERTH_E_CONFIG with a message naming the
 * model, the GPUs and their free memory when it fits nowhere or names a
 * GPU the engine does not know. */
int berth_placement_pick(const berth_placement *p, const berth_device_req *req,
                         const int *current, size_t n_current, int *device,
                         berth_errmsg *err);
/* Counts (take) or uncounts (release) an instance needing need bytes on
 * device; nothing for CPU and INHERIT or an unknown index. */
void berth_placement_take(berth_placement *p, int device, uint64_t need);
void berth_placement_release(berth_placement *p, int device, uint64_t need);
/* Places n new instances all or nothing: devices[0..n) get them (taken)
 * on BERTH_OK; on failure nothing stays taken. */
int berth_placement_plan(berth_placement *p, const berth_device_req *req,
                         uint32_t n, int *devices, berth_errmsg *err);
/* The value of CUDA_VISIBLE_DEVICES for device into out ("3", or "" for
 * CPU); false for INHERIT (leave the variable alone). */
bool berth_placement_env_value(int device, char *out, size_t cap);
/* Instances per device, in order of first appearance, as Triton's
 * instance groups show them (model config). */
typedef struct berth_device_group {
  int device;
  uint32_t count;
} berth_device_group;
/* Groups devices[0..n) into out (at most cap groups, the rest counted in
 * the last); returns the number of groups. */
size_t berth_placement_groups(const int *devices, size_t n,
                              berth_device_group *out, size_t cap);
/* A device's name in metrics and model configs: "cuda:3", "cpu", or
 * "default" (INHERIT). */
void berth_placement_name(int device, char *out, size_t cap);

#endif
