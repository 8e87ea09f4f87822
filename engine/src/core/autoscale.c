/* Berth engine: the autoscaler (autoscale.h; docs/autoscaling.md).
 *
 * Every BERTH_AUTOSCALE_TICK_MS the timer visits each worker-backed model
 * version that is READY:
 *  - with an autoscaling block, the policy gets a sample of its ongoing
 *    requests (m->inflight: queued + running) and says how many instances
 *    it wants; without one, it wants its configured instances (or none
 *    while the memory budget keeps it asleep);
 *  - the supervisor starts workers up to that count, or sends SHUTDOWN to
 *    idle ones above it (a busy worker is never stopped: the next tick
 *    tries again);
 *  - at zero the model is "asleep": it stays READY, its requests queue
 *    (bounded, with their deadlines) and the first one wakes it.
 * Every fifth tick it measures each model's resident memory (the workers'
 * RSS from /proc); under memory_budget it evicts the least recently used
 * idle models (puts them to sleep) while the total is above the budget,
 * and before a model starts workers it makes room the same way; a model
 * that cannot get room waits (its requests stay queued) until some frees.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autoscale.h"
#include "engine.h"
#include "log.h"

#define MEASURE_EVERY 5 /* ticks between memory measurements */

struct berth_autoscaler {
  uv_timer_t timer;
  unsigned ticks;
  bool timer_open;
};

static bool in_service(const berth_model *m) {
  return m->state == BERTH_MODEL_READY && !m->engine->draining &&
         !m->engine->stopping;
}

static double budget_of(const berth_engine *e) {
  return (double)e->cfg.memory_budget;
}

/* The memory m holds now, or will once its starting workers are up. */
static double held_bytes(const berth_model *m) {
  size_t active = berth_supervisor_active(m);
  double est = m->unit_bytes * (double)active;
  return m->resident_bytes > est ? m->resident_bytes : est;
}

static double total_held(const berth_engine *e) {
  double t = 0;
  for (size_t i = 0; i < e->n_models; i++)
    t += held_bytes(e->models[i]);
  return t;
}

/* Puts m to sleep: SHUTDOWN to its idle workers (all of them: it is idle). */
static void put_to_sleep(berth_model *m) {
  m->asleep = true;
  m->desired = 0;
  if (m->as != NULL)
    berth_autoscale_sleep(m->as);
  while (berth_supervisor_shrink_one(m))
    ;
}

/* The least recently used model, other than keep, that holds memory and
 * could sleep now: READY, nothing ongoing, every active worker idle. */
static berth_model *lru_victim(berth_engine *e, const berth_model *keep) {
  berth_model *best = NULL;
  for (size_t i = 0; i < e->n_models; i++) {
    berth_model *m = e->models[i];
    if (m == keep || !in_service(m) || m->inflight > 0 || held_bytes(m) <= 0)
      continue;
    if (berth_supervisor_active(m) != m->n_ready || m->n_ready == 0)
      continue;
    if (best == NULL || m->last_used_ns < best->last_used_ns)
      best = m;
  }
  return best;
}

static void evict(berth_model *m) {
  char held[32];
  snprintf(held, sizeof held, "%.0f", held_bytes(m));
  berth_log_kv(BERTH_LOG_INFO, "memory budget: evicting a model", "model",
               m->cfg->name, "version", m->cfg->version, "resident_bytes", held,
               NULL);
  m->evictions++;
  put_to_sleep(m);
  m->resident_bytes = 0; /* its workers are exiting */
}

/* Whether m may start `more` workers under the budget, after evicting the
 * least recently used idle models as needed. With nothing else resident it
 * may always start (a model larger than the budget still serves). */
static bool make_room(berth_model *m, size_t more) {
  berth_engine *e = m->engine;
  double budget = budget_of(e);
  if (budget <= 0)
    return true;
  double need = m->unit_bytes * (double)more;
  double others = total_held(e) - held_bytes(m);
  while (held_bytes(m) + others + need > budget) {
    berth_model *v = lru_victim(e, m);
    if (v == NULL)
      return others <= 0;
    others -= held_bytes(v);
    evict(v);
  }
  return true;
}

/* Brings m's active workers to want: start (room permitting) or stop
 * idle ones. */
static void apply(berth_model *m, uint32_t want) {
  size_t active = berth_supervisor_active(m);
  if (want > active) {
    if (!make_room(m, want - active))
      return; /* its requests wait for memory to free */
    uint32_t cap = m->cfg->autoscale.enabled ? m->cfg->autoscale.max_instances
                                             : m->instances;
    for (size_t k = active; k < want; k++)
      if (berth_supervisor_grow(m, cap) != BERTH_OK)
        break;
  } else {
    for (size_t k = want; k < active; k++)
      if (!berth_supervisor_shrink_one(m))
        break; /* the others are busy: next tick */
  }
}

/* The count m wants now (and the policy's sample). */
static uint32_t wanted(berth_model *m, uint64_t now) {
  const berth_autoscale_config *ac = &m->cfg->autoscale;
  if (!ac->enabled) { /* asleep until a request wakes it */
    if (m->asleep && m->inflight == 0 && berth_supervisor_active(m) == 0)
      return 0;
    return m->instances;
  }
  if (m->as == NULL) {
    m->as = malloc(sizeof *m->as);
    if (m->as == NULL)
      return m->desired;
    m->as_cfg = NULL;
  }
  uint32_t active = (uint32_t)berth_supervisor_active(m);
  if (m->as_cfg != m->cfg) { /* first tick, or a new config */
    berth_autoscale_init(m->as, ac, active, now);
    m->as_cfg = m->cfg;
  }
  berth_autoscale_record(m->as, now, (double)m->inflight);
  berth_autoscale_decision d = berth_autoscale_decide(m->as, now, active);
  m->panic = d.panic;
  return d.desired;
}

static void tick_model(berth_model *m, uint64_t now) {
  bool workers = m->ops == NULL || m->ops->start == NULL; /* not native */
  if (!workers || (!m->cfg->autoscale.enabled && budget_of(m->engine) <= 0)) {
    m->desired = m->instances; /* fixed instances: nothing to do */
    return;
  }
  if (!in_service(m)) {
    m->as_cfg = NULL; /* the policy starts over when it serves again */
    m->panic = false;
    if (m->state != BERTH_MODEL_READY)
      m->asleep = false; /* unloaded, reloading or failed: not asleep */
    m->desired = m->state == BERTH_MODEL_LOADING ? m->instances : 0;
    return;
  }
  if (m->asleep && m->n_ready > 0)
    m->asleep = false; /* woken: a worker is ready */
  uint32_t want = wanted(m, now);
  if (want == 0 && m->inflight > 0)
    want = 1;
  m->desired = want;
  if (want == 0) {
    m->asleep = true;
    m->resident_bytes = 0;
  }
  apply(m, want);
}

static void measure(berth_engine *e) {
  for (size_t i = 0; i < e->n_models; i++) {
    berth_model *m = e->models[i];
    size_t active = berth_supervisor_active(m);
    double rss = active > 0 ? berth_supervisor_rss(m) : 0;
    m->resident_bytes = rss > 0 ? rss : 0;
    if (rss > 0 && m->n_ready > 0 && m->n_ready == active)
      m->unit_bytes = rss / (double)active;
  }
  double budget = budget_of(e);
  if (budget <= 0)
    return;
  while (total_held(e) > budget) {
    berth_model *v = lru_victim(e, NULL);
    if (v == NULL)
      return;
    evict(v);
  }
}

static void on_tick(uv_timer_t *t) {
  berth_engine *e = t->data;
  struct berth_autoscaler *a = e->autoscaler;
  uint64_t now = uv_hrtime();
  if (a->ticks++ % MEASURE_EVERY == 0)
    measure(e);
  for (size_t i = 0; i < e->n_models; i++)
    tick_model(e->models[i], now);
}

void berth_autoscale_submitted(berth_model *m) {
  m->last_used_ns = uv_hrtime();
  if (!m->asleep || berth_supervisor_active(m) > 0 || !in_service(m))
    return;
  if (m->as != NULL)
    berth_autoscale_wake(m->as, m->last_used_ns);
  berth_log_kv(BERTH_LOG_DEBUG, "waking a model", "model", m->cfg->name,
               "version", m->cfg->version, NULL);
  tick_model(m, m->last_used_ns); /* at once, not at the next tick */
}

/* ---- /metrics ----------------------------------------------------------- */

static const struct {
  const char *name, *type, *help;
} families[] = {
    {"berth_model_instances_desired", "gauge",
     "Worker instances the autoscaler wants for the model version (its "
     "configured instances without autoscaling)."},
    {"berth_model_instances", "gauge",
     "Worker instances of the model version that are ready."},
    {"berth_autoscale_panic", "gauge",
     "1 while the model version's autoscaler is in panic mode."},
    {"berth_model_evictions_total", "counter",
     "Times the memory budget put the model version to sleep."},
    {"berth_model_resident_bytes", "gauge",
     "Resident memory of the model version's workers, last measured (0 "
     "while asleep)."},
};

static double family_value(size_t f, const berth_model *m) {
  switch (f) {
  case 0: /* fixed instances: the count the supervisor keeps */
    return m->cfg->autoscale.enabled || budget_of(m->engine) > 0 ? m->desired
                                                                 : m->instances;
  case 1:
    return (double)m->n_ready;
  case 2:
    return m->panic ? 1 : 0;
  case 3:
    return (double)m->evictions;
  default:
    return m->resident_bytes;
  }
}

static int collect(void *ctx, berth_buf *out) {
  berth_engine *e = ctx;
  int rc = BERTH_OK;
  for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
    rc = berth_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name,
                          families[f].help, families[f].name, families[f].type);
    for (size_t i = 0; i < e->n_models && rc == BERTH_OK; i++) {
      const berth_model *m = e->models[i];
      /* names and versions are [A-Za-z0-9_.-]: nothing to escape */
      rc = berth_buf_printf(out, "%s{model=\"%s\",version=\"%s\"} %.17g\n",
                            families[f].name, m->cfg->name, m->cfg->version,
                            family_value(f, m));
    }
    if (rc != BERTH_OK)
      return rc;
  }
  return berth_buf_printf(out,
                          "# HELP berth_memory_budget_bytes The memory budget "
                          "for the models' workers (0: none).\n"
                          "# TYPE berth_memory_budget_bytes gauge\n"
                          "berth_memory_budget_bytes %.17g\n",
                          budget_of(e));
}

/* ---- the module --------------------------------------------------------- */

static int as_init(berth_engine *e, berth_errmsg *err) {
  e->autoscaler = calloc(1, sizeof *e->autoscaler);
  if (e->autoscaler == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  return berth_engine_add_collector(e, collect, e, err);
}

static int as_start(berth_engine *e, berth_errmsg *err) {
  (void)err;
  struct berth_autoscaler *a = e->autoscaler;
  uv_timer_init(e->loop, &a->timer);
  a->timer.data = e;
  a->timer_open = true;
  uv_timer_start(&a->timer, on_tick, BERTH_AUTOSCALE_TICK_MS,
                 BERTH_AUTOSCALE_TICK_MS);
  return BERTH_OK;
}

static void as_drain(berth_engine *e) {
  if (e->autoscaler != NULL && e->autoscaler->timer_open)
    uv_timer_stop(&e->autoscaler->timer);
}

static void timer_closed(uv_handle_t *h) { (void)h; }

static void as_close(berth_engine *e) {
  struct berth_autoscaler *a = e->autoscaler;
  if (a == NULL || !a->timer_open)
    return;
  a->timer_open = false;
  uv_close((uv_handle_t *)&a->timer, timer_closed);
}

static void as_free(berth_engine *e) {
  free(e->autoscaler); /* the models free their policy state */
  e->autoscaler = NULL;
}

const berth_module berth_autoscale_module = {.name = "autoscale",
                                             .init = as_init,
                                             .start = as_start,
                                             .drain = as_drain,
                                             .close = as_close,
                                             .free = as_free};
