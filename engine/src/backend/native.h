/* Berth engine: the native backend module (native.c) — models with
 * backend: native run in berthd's process through backend.h instead of a
 * worker process (docs/native.md). main.c lists the module; it gives
 * those models their operations (core/engine.h's berth_model_ops). */
#ifndef BERTH_NATIVE_H
#define BERTH_NATIVE_H

struct berth_module;
typedef struct berth_native berth_native;

extern const struct berth_module berth_native_module;

#endif
