/* Berth engine: starting a worker incarnation (supervisor_int.h) — its
 * environment, the worker template (zygote.h) that forks it, or uv_spawn
 * when there is no template or it failed. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "supervisor_int.h"

extern char **environ;

/* ---- workers forked by the template (zygote.h) ------------------------ */

static char **build_env(const char *worker_id, const char *level, int device,
                        size_t *n_owned);
static void free_env(char **env, size_t n_owned);

static void zc_forked(berth_zchild *c) {
  worker_proc *p = c->data;
  p->out[0].pid = p->out[1].pid = c->pid;
}

static void zc_exit(berth_zchild *c) {
  worker_proc *p = c->data;
  p->exited = true;
  p->exit_status = c->exit_status;
  p->term_signal = c->term_signal;
  berth_worker_output_close(&p->out[0]);
  berth_worker_output_close(&p->out[1]);
  berth_sup_proc_close_pipe(p);
  berth_zchild_close(c, berth_sup_proc_release, p);
  berth_sup_proc_lost(p);
}

static void worker_spawn_direct(berth_worker *w);

/* The template could not fork this worker: the incarnation goes without
 * counting as a crash, and the worker starts directly. */
static void zc_failed(berth_zchild *c, const char *why) {
  worker_proc *p = c->data;
  berth_worker *w = p->w;
  char id[300];
  p->exited = true;
  p->w = NULL;
  berth_worker_output_close(&p->out[0]);
  berth_worker_output_close(&p->out[1]);
  berth_sup_proc_close_pipe(p);
  berth_zchild_close(c, berth_sup_proc_release, p);
  if (w == NULL || w->proc != p)
    return;
  w->proc = NULL;
  uv_timer_stop(&w->timer);
  if (w->state == W_FAILED)
    return; /* its load timed out: not restarted, as after an exit */
  bool stop = w->state == W_STOPPING;
  w->state = W_EMPTY;
  if (stop)
    return;
  berth_log_kv(BERTH_LOG_WARNING,
               "the worker template could not start a worker; starting it "
               "directly",
               "worker", berth_sup_wname(w, id, sizeof id), "error", why, NULL);
  worker_spawn_direct(w);
}

static void zygote_idle(void *arg) { berth_sup_maybe_all_stopped(arg); }

/* The template command: workers.command when it is "<python> -m
 * berth.worker", with berth.zygote, the configured runtimes and the paths
 * of scikit-learn models (whose pickles name the modules to import);
 * NULL otherwise (a custom worker command has no template). Owned by the
 * caller (free the array; the strings are borrowed or in runtimes). */
#define TEMPLATE_WARM_MAX 16
static char **template_argv(berth_engine *e, char *runtimes, size_t cap) {
  size_t n = e->cfg.worker_argc;
  char **cmd = e->cfg.worker_command;
  if (n < 3 || strcmp(cmd[n - 2], "-m") != 0 ||
      strcmp(cmd[n - 1], "berth.worker") != 0)
    return NULL;
  char **argv = calloc(n + 3 + 2 * TEMPLATE_WARM_MAX, sizeof *argv);
  if (argv == NULL)
    return NULL;
  for (size_t i = 0; i + 1 < n; i++)
    argv[i] = cmd[i];
  size_t k = n - 1, warm = 0;
  argv[k++] = "berth.zygote";
  argv[k++] = "--preload";
  argv[k++] = runtimes;
  runtimes[0] = '\0';
  for (size_t i = 0; i < e->n_models; i++) {
    const char *r = e->models[i]->cfg->runtime;
    const char *path =
        json_string_value(json_object_get(e->models[i]->cfg->entry, "path"));
    if (r != NULL && strcmp(r, "sklearn") == 0 && path != NULL &&
        warm++ < TEMPLATE_WARM_MAX) {
      argv[k++] = "--warm";
      argv[k++] = (char *)path;
    }
    if (r == NULL || strstr(runtimes, r) != NULL ||
        strlen(runtimes) + strlen(r) + 2 > cap)
      continue;
    if (runtimes[0] != '\0')
      strcat(runtimes, ",");
    strcat(runtimes, r);
  }
  return argv;
}

static char **template_env(berth_engine *e, size_t *n_owned) {
  static char pad[4096 + 32];
  if (pad[0] == '\0') {
    memcpy(pad, "BERTH_TEMPLATE_PAD=", 19);
    memset(pad + 19, '.', 4096);
  }
  char **env = build_env("", e->cfg.log_level, BERTH_DEVICE_INHERIT, n_owned);
  if (env == NULL)
    return NULL;
  size_t n = 0;
  while (env[n] != NULL)
    n++;
  char **more = realloc(env, (n + 2) * sizeof *env);
  if (more == NULL) {
    free_env(env, *n_owned);
    return NULL;
  }
  more[n] = pad;
  more[n + 1] = NULL;
  return more;
}

/* The template to fork workers from, started if need be; NULL when
 * workers start directly. */
static berth_zygote *sup_zygote(berth_engine *e) {
  berth_supervisor_state *s = &e->sup;
  if (!e->cfg.worker_template || s->zygote_off)
    return NULL;
  if (s->zygote == NULL) {
    s->zygote = berth_zygote_new(e->loop, zygote_idle, e);
    if (s->zygote == NULL) {
      s->zygote_off = true;
      return NULL;
    }
  }
  char runtimes[512];
  char **argv = template_argv(e, runtimes, sizeof runtimes);
  /* BERTH_WORKER_ID is empty in the template (it is no worker); the pad
   * makes room for each child's own environment where /proc shows it
   * (berth/zygote.py, _retitle). */
  size_t n_owned = 0;
  char **env = argv != NULL ? template_env(e, &n_owned) : NULL;
  if (argv == NULL) {
    berth_log_kv(BERTH_LOG_INFO,
                 "workers.command is not '<python> -m berth.worker': "
                 "workers start directly, without the worker template",
                 NULL);
    s->zygote_off = true;
  }
  bool ok = env != NULL && berth_zygote_ensure(s->zygote, argv, env);
  free(argv);
  free_env(env, n_owned);
  return ok ? s->zygote : NULL;
}

/* Starts p for w from the template; BERTH_OK or nothing happened. */
static int proc_fork(berth_engine *e, worker_proc *p, char **env) {
  berth_zygote *z = sup_zygote(e);
  if (z == NULL)
    return BERTH_E_UNAVAILABLE;
  int chan[2] = {-1, -1}, o1[2] = {-1, -1}, o2[2] = {-1, -1};
  int rc = BERTH_E_IO;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) == 0 &&
      pipe2(o1, O_CLOEXEC) == 0 && pipe2(o2, O_CLOEXEC) == 0) {
    p->zc.on_forked = zc_forked;
    p->zc.on_exit = zc_exit;
    p->zc.on_failed = zc_failed;
    p->zc.data = p;
    int child[3] = {chan[1], o1[1], o2[1]};
    rc = berth_zygote_fork(z, &p->zc, env, child);
  }
  int mine[3] = {chan[0], o1[0], o2[0]}, theirs[3] = {chan[1], o1[1], o2[1]};
  uv_pipe_t *pipes[3] = {&p->pipe, &p->out[0].pipe, &p->out[1].pipe};
  for (int k = 0; k < 3; k++) {
    if (theirs[k] >= 0)
      close(theirs[k]);
    if (mine[k] < 0)
      continue;
    if (rc != BERTH_OK || uv_pipe_open(pipes[k], mine[k]) != 0) {
      close(mine[k]);
      if (rc == BERTH_OK) /* cannot talk to it: it must not run */
        berth_zchild_kill(&p->zc, SIGKILL);
    }
  }
  p->forked = rc == BERTH_OK;
  return rc;
}

/* The worker's environment: the engine's, with BERTH_WORKER_ID set, the
 * log level and JSON format the engine re-renders (worker_output.c),
 * PYTHONUNBUFFERED so that prints arrive as they happen, and the one GPU
 * it may see, CUDA_VISIBLE_DEVICES (empty: none; left as the engine's when
 * it was placed nowhere in particular, placement.h). */
#define ENV_SET 5
static const char *const env_names[ENV_SET] = {
    "BERTH_WORKER_ID=", "BERTH_LOG_LEVEL=", "BERTH_LOG_FORMAT=",
    "PYTHONUNBUFFERED=", "CUDA_VISIBLE_DEVICES="};

static char **build_env(const char *worker_id, const char *level, int device,
                        size_t *n_owned) {
  size_t n = 0;
  while (environ[n] != NULL)
    n++;
  char **env = calloc(n + ENV_SET + 1, sizeof *env);
  if (env == NULL)
    return NULL;
  char cuda[16] = "";
  size_t n_set =
      berth_placement_env_value(device, cuda, sizeof cuda) ? ENV_SET : 4;
  *n_owned = n_set;
  const char *values[ENV_SET] = {worker_id, level != NULL ? level : "info",
                                 "json", "1", cuda};
  for (size_t j = 0; j < n_set; j++) {
    size_t len = strlen(env_names[j]) + strlen(values[j]) + 1;
    env[j] = malloc(len);
    if (env[j] == NULL) {
      while (j > 0)
        free(env[--j]);
      free(env);
      return NULL;
    }
    snprintf(env[j], len, "%s%s", env_names[j], values[j]);
  }
  size_t k = n_set;
  for (size_t i = 0; i < n; i++) {
    bool ours = false;
    for (size_t j = 0; j < n_set && !ours; j++)
      ours = strncmp(environ[i], env_names[j], strlen(env_names[j])) == 0;
    if (!ours)
      env[k++] = environ[i];
  }
  return env;
}

static void free_env(char **env, size_t n_owned) {
  if (env == NULL)
    return;
  for (size_t j = 0; j < n_owned; j++)
    free(env[j]);
  free(env);
}

static void worker_start(berth_worker *w, bool direct);

void berth_sup_worker_spawn(berth_worker *w) { worker_start(w, false); }

static void worker_spawn_direct(berth_worker *w) { worker_start(w, true); }

/* The process could not start (rc, a libuv error): p's handles close and
 * free it (out_ok: the process handle was initialised), w restarts later. */
static void start_failed(berth_worker *w, worker_proc *p, const char *id,
                         int rc, bool out_ok) {
  berth_engine *e = w->model->engine;
  berth_log_kv(BERTH_LOG_ERROR,
               "cannot start a worker process; check workers.command", "worker",
               id, "command", e->cfg.worker_command[0], "error",
               uv_strerror(rc), NULL);
  p->w = NULL;
  p->exited = true;
  p->open_handles = 4;
  p->pipe_closing = true;
  uv_close((uv_handle_t *)&p->pipe, berth_sup_proc_handle_closed);
  berth_worker_output_close(&p->out[0]);
  berth_worker_output_close(&p->out[1]);
  if (out_ok)
    uv_close((uv_handle_t *)&p->process, berth_sup_proc_handle_closed);
  else
    berth_sup_proc_release(p); /* the process handle was never initialised */
  berth_restart_plan plan = berth_sup_restart_plan(w, false, false);
  berth_sup_schedule_restart(w, &plan);
}

static void worker_start(berth_worker *w, bool direct) {
  berth_engine *e = w->model->engine;
  char id[300];
  berth_sup_wname(w, id, sizeof id);
  if (e->draining || e->stopping)
    return;
  worker_proc *p = calloc(1, sizeof *p);
  size_t n_owned = 0;
  char **env = build_env(id, e->cfg.log_level, w->device, &n_owned);
  if (p == NULL || env == NULL) {
    free(p);
    free_env(env, n_owned);
    berth_log_kv(BERTH_LOG_ERROR, "out of memory starting a worker", "worker",
                 id, NULL);
    berth_restart_plan plan = berth_sup_restart_plan(w, false, false);
    berth_sup_schedule_restart(w, &plan);
    return;
  }
  size_t limit = e->cfg.max_body_bytes * 2 + (1u << 20);
  p->max_frame = limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit;
  berth_buf_init(&p->rx,
                 (size_t)p->max_frame + BERTH_WP_HEADER_SIZE + 128 * 1024);
  p->w = w;
  p->engine = e;
  berth_sup_shm_create(p);
  uv_pipe_init(e->loop, &p->pipe, 0);
  p->pipe.data = p;
  p->process.data = p;
  bool out_ok = berth_worker_output_init(&p->out[0], e->loop, "stdout",
                                         berth_sup_proc_release, p) == BERTH_OK;
  if (berth_worker_output_init(&p->out[1], e->loop, "stderr",
                               berth_sup_proc_release, p) != BERTH_OK)
    out_ok = false;
  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  for (int k = 0; k < 2; k++) {
    stdio[1 + k].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1 + k].data.stream = (uv_stream_t *)&p->out[k].pipe;
  }
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t *)&p->pipe;
  uv_process_options_t opt = {0};
  opt.file = e->cfg.worker_command[0];
  opt.args = e->cfg.worker_command;
  opt.env = env;
  opt.stdio = stdio;
  opt.stdio_count = 4;
  opt.exit_cb = berth_sup_on_worker_exit;
  e->sup.live_procs++;
  int rc = 0;
  if (!out_ok)
    rc = UV_ENOMEM;
  else if (direct || proc_fork(e, p, env) != BERTH_OK)
    rc = uv_spawn(e->loop, &p->process, &opt);
  free_env(env, n_owned);
  if (rc != 0) {
    start_failed(w, p, id, rc, out_ok);
    return;
  }
  p->open_handles = 4;
  for (int k = 0; k < 2; k++)
    berth_worker_output_start(&p->out[k], w->model->cfg->name,
                              w->model->cfg->version, w->index,
                              berth_sup_proc_pid(p));
  w->proc = p;
  w->state = W_LOADING;
  w->ready_ns = 0;
  w->spawned_ns = uv_hrtime();
  uv_read_start((uv_stream_t *)&p->pipe, berth_sup_on_alloc, berth_sup_on_read);
  if (berth_sup_send_load(w) != BERTH_OK) {
    berth_sup_proc_kill(p, SIGKILL);
    return;
  }
  uv_timer_start(&w->timer, berth_sup_on_timer,
                 (uint64_t)(e->cfg.worker_load_timeout_s * 1000.0), 0);
  berth_log_kv(BERTH_LOG_INFO, "loading model", "worker", id, "runtime",
               w->model->cfg->runtime, NULL);
}
