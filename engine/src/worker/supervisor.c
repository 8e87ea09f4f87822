/* Berth engine: worker processes — crash detection, restart with backoff,
 * the load timeout, the slots and their devices, scaling, orderly stop.
 * The socket and its frames are in worker_io.c, the shared memory region
 * in worker_shm.c, starting a process in worker_spawn.c (supervisor_int.h).
 *
 * A worker slot (berth_worker) lives as long as the model. Each process
 * started for it is one incarnation (worker_proc), which owns the
 * uv_process_t, the socket and the receive buffer, and is freed only when
 * both handles have closed, so callbacks never see freed memory. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "supervisor_int.h"

/* ---- small helpers ---------------------------------------------------- */

const char *berth_sup_wname(const berth_worker *w, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%s/%u", w->model->cfg->name, w->model->cfg->version,
           w->index);
  return buf;
}

void berth_sup_proc_release(void *arg) {
  worker_proc *p = arg;
  if (--p->open_handles > 0)
    return;
  berth_engine *e = p->engine;
  berth_buf_free(&p->rx);
  berth_shm_region_free(&p->shm);
  free(p);
  e->sup.live_procs--;
  berth_sup_maybe_all_stopped(e);
}

void berth_sup_proc_handle_closed(uv_handle_t *h) {
  berth_sup_proc_release(h->data);
}

void berth_sup_proc_close_pipe(worker_proc *p) {
  if (p->pipe_closing)
    return;
  p->pipe_closing = true;
  uv_close((uv_handle_t *)&p->pipe, berth_sup_proc_handle_closed);
}

void berth_sup_proc_kill(worker_proc *p, int sig) {
  if (p->exited)
    return;
  if (p->forked)
    berth_zchild_kill(&p->zc, sig);
  else
    uv_process_kill(&p->process, sig);
}

int berth_sup_proc_pid(const worker_proc *p) {
  return p->forked ? p->zc.pid : p->process.pid;
}

/* ---- lifecycle --------------------------------------------------------- */

void berth_sup_maybe_all_stopped(berth_engine *e) {
  berth_supervisor_state *s = &e->sup;
  if (s->stopped == NULL || s->live_procs > 0 || berth_zygote_busy(s->zygote))
    return;
  void (*cb)(void *) = s->stopped;
  s->stopped = NULL; /* once */
  uv_timer_stop(&s->stop_timer);
  cb(s->stopped_arg);
}

void berth_sup_on_timer(uv_timer_t *t) {
  berth_worker *w = t->data;
  char id[300];
  if (w->state == W_EMPTY) {
    berth_sup_worker_spawn(w);
  } else if (w->state == W_LOADING && w->proc != NULL) {
    snprintf(w->model->load_error, sizeof w->model->load_error,
             "loading took longer than workers.load_timeout_s (%.0f s)",
             w->model->engine->cfg.worker_load_timeout_s);
    berth_log_kv(BERTH_LOG_ERROR, "model load timed out; killing the worker",
                 "worker", berth_sup_wname(w, id, sizeof id), NULL);
    w->state = W_FAILED;
    berth_sup_proc_kill(w->proc, SIGKILL);
    if (w->model->n_ready == 0) {
      w->model->state = BERTH_MODEL_FAILED;
      berth_sched_fail_queued(w->model, BERTH_E_UNAVAILABLE,
                              w->model->load_error);
      BERTH_OBSERVE(&w->model->engine->observers, load_failed, w->model);
    }
  }
}

/* What to do now that w's process is gone (restart_policy.h). */
berth_restart_plan berth_sup_restart_plan(const berth_worker *w, bool stopping,
                                          bool failed_load) {
  const berth_config *cfg = &w->model->engine->cfg;
  uint64_t now = uv_hrtime();
  berth_restart_in in = {
      .stopping = stopping,
      .failed_load = failed_load,
      .backoff_s = w->backoff_s,
      .served_ns =
          w->ready_ns != 0 && now > w->ready_ns ? now - w->ready_ns : 0,
      .backoff_min_s = cfg->restart_backoff_s,
      .backoff_max_s = cfg->restart_backoff_max_s,
  };
  return berth_restart_decide(&in);
}

void berth_sup_schedule_restart(berth_worker *w,
                                const berth_restart_plan *plan) {
  w->backoff_s = plan->next_backoff_s;
  w->state = W_EMPTY;
  w->restarts++;
  BERTH_OBSERVE(&w->model->engine->observers, worker_restarted, w->model);
  uv_timer_start(&w->timer, berth_sup_on_timer,
                 (uint64_t)(plan->delay_s * 1000.0), 0);
}

static void describe_exit(const worker_proc *p, char *out, size_t cap) {
  if (p->broke[0] != '\0')
    snprintf(out, cap, "%s", p->broke);
  else if (p->forked && !p->zc.status_known)
    snprintf(out, cap, "exit status unknown: its template is gone");
  else if (p->term_signal != 0)
    snprintf(out, cap, "signal %d", p->term_signal);
  else
    snprintf(out, cap, "exit code %lld", (long long)p->exit_status);
}

/* The incarnation's process has exited: account for it. */
void berth_sup_proc_lost(worker_proc *p) {
  berth_worker *w = p->w;
  p->w = NULL;
  if (w == NULL || w->proc != p)
    return;
  w->proc = NULL;
  berth_model *m = w->model;
  berth_engine *e = m->engine;
  char how[600], id[300];
  describe_exit(p, how, sizeof how);
  worker_state was = w->state;
  if (w->counted_ready) {
    w->counted_ready = false;
    m->n_ready--;
  }
  if (w->n_running > 0) {
    char msg[1024];
    snprintf(msg, sizeof msg,
             "model '%s' worker exited (%s) while running this request; "
             "it is being restarted",
             m->cfg->name, how);
    while (w->n_running > 0)
      berth_batch_fail(berth_sup_running_take(w, w->n_running - 1),
                       BERTH_E_WORKER_DIED, msg);
  }
  berth_sched_worker_lost(m, w);
  bool stopping = e->stopping || e->draining || was == W_STOPPING;
  berth_restart_plan plan =
      berth_sup_restart_plan(w, stopping, was == W_FAILED);
  if (stopping) {
    w->state = W_EMPTY;
    return;
  }
  if (!plan.restart) {
    return; /* a model that cannot load is not restarted in a loop */
  }
  berth_log_kv(BERTH_LOG_WARNING, "worker exited; restarting it", "worker",
               berth_sup_wname(w, id, sizeof id), "how", how, NULL);
  if (was == W_LOADING && m->n_ready == 0) {
    /* Keep the reason where the ready endpoint shows it. */
    snprintf(m->load_error, sizeof m->load_error,
             "its worker exited (%.200s) while loading the model, %u time%s so "
             "far; retrying with backoff (check the worker log)",
             how, w->restarts + 1, w->restarts ? "s" : "");
    m->state = BERTH_MODEL_FAILED;
    berth_sched_fail_queued(m, BERTH_E_UNAVAILABLE, m->load_error);
    BERTH_OBSERVE(&m->engine->observers, load_failed, m);
    if (e->draining) {
      w->state = W_EMPTY; /* exit_on_error: stopping, no restart */
      return;
    }
  }
  if (m->n_ready == 0 && m->state == BERTH_MODEL_READY)
    m->state = BERTH_MODEL_LOADING;
  berth_sup_schedule_restart(w, &plan);
  berth_sched_dispatch(m);
}

void berth_sup_on_worker_exit(uv_process_t *proc, int64_t status, int sig) {
  worker_proc *p = proc->data;
  p->exited = true;
  p->exit_status = status;
  p->term_signal = sig;
  berth_worker_output_close(&p->out[0]);
  berth_worker_output_close(&p->out[1]);
  berth_sup_proc_close_pipe(p);
  uv_close((uv_handle_t *)&p->process, berth_sup_proc_handle_closed);
  berth_sup_proc_lost(p);
}

/* Default worker count when the config leaves it out: a quarter of the
 * cores, at least one (each worker then gets cores / instances threads). */
static uint32_t default_instances(void) {
  unsigned n = uv_available_parallelism() / 4;
  return n == 0 ? 1 : (n > 64 ? 64 : n);
}

/* What m asks of placement.h. */
static berth_device_req device_req(const berth_model *m) {
  const berth_model_config *c = m->cfg;
  return (berth_device_req){.model = c->name,
                            .version = c->version,
                            .kind = (berth_devices_kind)c->devices_kind,
                            .list = c->devices,
                            .n_list = c->n_devices,
                            .need = c->gpu_memory};
}

/* A new slot at m->workers[m->n_workers] (the array has room), on device
 * (its need counted there by the caller). */
static berth_worker *slot_new(berth_model *m, int device, uint64_t need) {
  berth_worker *w = calloc(1, sizeof *w);
  if (w == NULL)
    return NULL;
  w->model = m;
  w->index = (unsigned)m->n_workers;
  w->device = device;
  w->gpu_need = need;
  w->backoff_s = m->engine->cfg.restart_backoff_s;
  uv_timer_init(m->engine->loop, &w->timer);
  w->timer.data = w;
  m->workers[m->n_workers++] = w;
  return w;
}

int berth_supervisor_start(berth_model *m, berth_errmsg *err) {
  const berth_autoscale_config *as = &m->cfg->autoscale;
  uint32_t n = m->cfg->instances ? m->cfg->instances
               : as->enabled     ? (as->min_instances ? as->min_instances : 1)
                                 : default_instances();
  int *devices = calloc(n, sizeof *devices);
  if (devices == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  berth_device_req req = device_req(m);
  berth_placement *gpus = &m->engine->sup.gpus;
  int rc = berth_placement_plan(gpus, &req, n, devices, err);
  m->workers = rc == BERTH_OK ? calloc(n, sizeof *m->workers) : NULL;
  if (rc == BERTH_OK && m->workers == NULL)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (uint32_t i = 0; rc != BERTH_OK && i < n; i++)
    berth_placement_release(gpus, devices[i], req.need);
  if (rc != BERTH_OK) {
    free(devices);
    return rc;
  }
  m->instances = n;
  for (uint32_t i = 0; i < n; i++) {
    berth_worker *w = slot_new(m, devices[i], req.need);
    if (w == NULL) {
      while (i < n)
        berth_placement_release(gpus, devices[i++], req.need);
      free(devices);
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    }
    berth_sup_worker_spawn(w);
  }
  free(devices);
  return BERTH_OK;
}

int berth_supervisor_place_slot(berth_model *m, berth_worker *w,
                                berth_errmsg *err) {
  int *current = malloc((m->n_workers ? m->n_workers : 1) * sizeof *current);
  if (current == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  size_t n = 0;
  for (size_t k = 0; k < m->n_workers; k++)
    if (m->workers[k] != w)
      current[n++] = m->workers[k]->device;
  berth_device_req req = device_req(m);
  int rc = berth_placement_pick(&m->engine->sup.gpus, &req, current, n,
                                &w->device, err);
  free(current);
  if (rc != BERTH_OK)
    return rc;
  w->gpu_need = req.need;
  berth_placement_take(&m->engine->sup.gpus, w->device, w->gpu_need);
  return BERTH_OK;
}

int berth_supervisor_worker_device(const berth_model *m, size_t i) {
  return i < m->n_workers ? m->workers[i]->device : BERTH_DEVICE_INHERIT;
}

double berth_supervisor_rss(const berth_model *m) {
  double total = -1;
  long page = sysconf(_SC_PAGESIZE);
  for (size_t i = 0; i < m->n_workers; i++) {
    const worker_proc *p = m->workers[i]->proc;
    if (p == NULL || p->exited || berth_sup_proc_pid(p) <= 0)
      continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", berth_sup_proc_pid(p));
    FILE *f = fopen(path, "r");
    if (f == NULL)
      continue;
    unsigned long size = 0, resident = 0;
    if (fscanf(f, "%lu %lu", &size, &resident) == 2)
      total = (total < 0 ? 0 : total) + (double)resident * (double)page;
    fclose(f);
  }
  return total;
}

/* Whether w takes another batch now: idle, or running fewer decoupled
 * requests than its READY offered. */
static bool has_room(const berth_worker *w) {
  return w->state == W_IDLE ||
         (w->state == W_BUSY && w->n_running < w->max_concurrency);
}

berth_worker *berth_supervisor_idle_worker(berth_model *m) {
  berth_worker *best = NULL;
  for (size_t i = 0; i < m->n_workers; i++) {
    berth_worker *w = m->workers[i];
    if (has_room(w) && (best == NULL || w->n_running < best->n_running))
      best = w;
  }
  return best;
}

berth_worker *berth_supervisor_idle_worker_at(berth_model *m, size_t i) {
  return i < m->n_workers && has_room(m->workers[i]) ? m->workers[i] : NULL;
}

static void stop_timeout(uv_timer_t *t) {
  berth_engine *e = t->data;
  for (size_t i = 0; i < e->n_models; i++) {
    berth_model *m = e->models[i];
    for (size_t k = 0; k < m->n_workers; k++)
      if (m->workers[k]->proc != NULL)
        berth_sup_proc_kill(m->workers[k]->proc, SIGKILL);
  }
}

void berth_supervisor_stop_all(berth_engine *e, uint64_t timeout_ms,
                               void (*stopped)(void *arg), void *arg) {
  e->sup.stopped = stopped;
  e->sup.stopped_arg = arg;
  for (size_t i = 0; i < e->n_models; i++) {
    berth_model *m = e->models[i];
    for (size_t k = 0; k < m->n_workers; k++) {
      berth_worker *w = m->workers[k];
      uv_timer_stop(&w->timer);
      if (w->proc == NULL) {
        w->state = W_EMPTY;
        continue;
      }
      if (w->state == W_LOADING) {
        berth_sup_proc_kill(w->proc, SIGTERM);
      } else if (berth_sup_send_frame(w->proc, BERTH_WP_SHUTDOWN, 0, NULL, 0) !=
                 BERTH_OK) {
        berth_sup_proc_kill(w->proc, SIGTERM);
      }
      w->state = W_STOPPING;
    }
  }
  if (e->sup.zygote != NULL)
    berth_zygote_stop(e->sup.zygote);
  uv_timer_start(&e->sup.stop_timer, stop_timeout, timeout_ms, 0);
  berth_sup_maybe_all_stopped(e);
}

static void sup_timer_closed(uv_handle_t *h) { (void)h; }

void berth_supervisor_engine_init(berth_engine *e) {
  uv_timer_init(e->loop, &e->sup.stop_timer);
  e->sup.stop_timer.data = e;
  berth_placement *p = &e->sup.gpus;
  p->n_gpus = 0;
  for (size_t i = 0; i < e->cfg.n_gpus && i < BERTH_MAX_GPUS; i++)
    p->gpus[p->n_gpus++] = (berth_gpu){.index = e->cfg.gpus[i].index,
                                       .memory = e->cfg.gpus[i].memory,
                                       .budget = e->cfg.gpus[i].budget};
}

void berth_supervisor_engine_close(berth_engine *e) {
  uv_close((uv_handle_t *)&e->sup.stop_timer, sup_timer_closed);
  berth_zygote_free(e->sup.zygote); /* stop_all ran: nothing of it is left */
  e->sup.zygote = NULL;
}

static void slot_timer_closed(uv_handle_t *h) {
  berth_worker *w = h->data;
  free(w->running);
  free(w);
}

void berth_supervisor_free(berth_model *m) {
  for (size_t k = 0; k < m->n_workers; k++) {
    berth_worker *w = m->workers[k];
    berth_placement_release(&m->engine->sup.gpus, w->device, w->gpu_need);
    if (w->proc != NULL)
      w->proc->w = NULL;
    uv_close((uv_handle_t *)&w->timer, slot_timer_closed);
  }
  free(m->workers);
  m->workers = NULL;
  m->n_workers = 0;
}

/* ---- stopping one model (the repository's unload) ----------------------- */

void berth_supervisor_stop_model(berth_model *m, bool keep_ready) {
  for (size_t k = 0; k < m->n_workers; k++) {
    berth_worker *w = m->workers[k];
    bool ready = w->state == W_IDLE || w->state == W_BUSY;
    if (keep_ready && ready)
      continue;
    uv_timer_stop(&w->timer); /* no restart, no load timeout */
    if (w->proc == NULL) {
      w->state = W_EMPTY;
      continue;
    }
    if (w->state == W_STOPPING)
      continue;
    if (!ready || berth_sup_send_frame(w->proc, BERTH_WP_SHUTDOWN, 0, NULL,
                                       0) != BERTH_OK)
      berth_sup_proc_kill(w->proc, SIGTERM);
    w->state = W_STOPPING; /* its exit is then not restarted */
  }
}

void berth_supervisor_kill_model(berth_model *m) {
  for (size_t k = 0; k < m->n_workers; k++)
    if (m->workers[k]->proc != NULL)
      berth_sup_proc_kill(m->workers[k]->proc, SIGKILL);
}

bool berth_supervisor_model_stopped(const berth_model *m) {
  for (size_t k = 0; k < m->n_workers; k++)
    if (m->workers[k]->proc != NULL)
      return false;
  return true;
}

/* ---- replacing a serving version (repo_replace.c) ------------------------ */

void berth_supervisor_retire(berth_model *m) {
  for (size_t k = 0; k < m->n_workers; k++) {
    berth_worker *w = m->workers[k];
    if (w->state == W_BUSY)
      continue; /* SHUTDOWN once its batch is answered */
    uv_timer_stop(&w->timer);
    if (w->proc == NULL) {
      w->state = W_EMPTY;
      continue;
    }
    if (w->state == W_STOPPING)
      continue;
    if (w->state != W_IDLE || berth_sup_send_frame(w->proc, BERTH_WP_SHUTDOWN,
                                                   0, NULL, 0) != BERTH_OK)
      berth_sup_proc_kill(w->proc, SIGTERM);
    w->state = W_STOPPING;
  }
}

void berth_supervisor_swap(berth_model *a, berth_model *b) {
  berth_worker **workers = a->workers;
  size_t n = a->n_workers, ready = a->n_ready;
  uint32_t instances = a->instances;
  a->workers = b->workers;
  a->n_workers = b->n_workers;
  a->n_ready = b->n_ready;
  a->instances = b->instances;
  b->workers = workers;
  b->n_workers = n;
  b->n_ready = ready;
  b->instances = instances;
  for (size_t k = 0; k < a->n_workers; k++)
    a->workers[k]->model = a;
  for (size_t k = 0; k < b->n_workers; k++)
    b->workers[k]->model = b;
}

/* ---- scaling at run time (core/autoscale.c) ------------------------------ */

/* A slot counts while its process loads or serves, or its restart is due. */
static bool slot_active(const berth_worker *w) {
  return w->state == W_LOADING || w->state == W_IDLE || w->state == W_BUSY ||
         (w->state == W_EMPTY && uv_is_active((const uv_handle_t *)&w->timer));
}

size_t berth_supervisor_active(const berth_model *m) {
  size_t n = 0;
  for (size_t k = 0; k < m->n_workers; k++)
    n += slot_active(m->workers[k]);
  return n;
}

int berth_supervisor_grow(berth_model *m, uint32_t cap) {
  berth_engine *e = m->engine;
  if (e->draining || e->stopping || m->workers == NULL)
    return BERTH_E_UNAVAILABLE;
  for (size_t k = 0; k < m->n_workers; k++) {
    berth_worker *w = m->workers[k];
    if (w->state == W_EMPTY && w->proc == NULL && !slot_active(w)) {
      w->backoff_s = e->cfg.restart_backoff_s;
      berth_sup_worker_spawn(w); /* a slot a scale-down left empty */
      return BERTH_OK;
    }
  }
  if (m->n_workers >= cap)
    return BERTH_E_OVERLOAD;
  berth_worker **grown =
      realloc(m->workers, (m->n_workers + 1) * sizeof *m->workers);
  if (grown == NULL)
    return BERTH_E_NOMEM;
  m->workers = grown;
  berth_worker *w = slot_new(m, BERTH_DEVICE_INHERIT, 0);
  if (w == NULL)
    return BERTH_E_NOMEM;
  berth_errmsg err;
  if (berth_supervisor_place_slot(m, w, &err) != BERTH_OK) {
    /* no GPU has room for one more instance: the slot goes again */
    berth_log_kv(BERTH_LOG_WARNING, "cannot place one more instance", "model",
                 m->cfg->name, "error", err.msg, NULL);
    m->workers[--m->n_workers] = NULL;
    uv_close((uv_handle_t *)&w->timer, slot_timer_closed);
    return BERTH_E_OVERLOAD;
  }
  berth_sup_worker_spawn(w);
  return BERTH_OK;
}

bool berth_supervisor_shrink_one(berth_model *m) {
  for (size_t k = m->n_workers; k-- > 0;) {
    berth_worker *w = m->workers[k];
    if (w->state != W_IDLE || w->proc == NULL)
      continue; /* a busy worker is never stopped to scale down */
    if (berth_sup_send_frame(w->proc, BERTH_WP_SHUTDOWN, 0, NULL, 0) !=
        BERTH_OK)
      berth_sup_proc_kill(w->proc, SIGTERM);
    w->state = W_STOPPING; /* its exit is not restarted */
    if (w->counted_ready) {
      w->counted_ready = false; /* no batch goes to it any more */
      m->n_ready--;
    }
    return true;
  }
  return false;
}
