/* Berth engine: worker processes — spawn, LOAD/READY handshake, INFER
 * dispatch, crash detection, restart with backoff, orderly stop.
 *
 * A worker slot (berth_worker) lives as long as the model. Each process
 * started for it is one incarnation (worker_proc), which owns the
 * uv_process_t, the socket and the receive buffer, and is freed only when
 * both handles have closed, so callbacks never see freed memory. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "engine.h"
#include "httpd.h"
#include "log.h"
#include "worker_output.h"
#include "worker_proto.h"
#include "wp_gather.h"
#include "wp_shm.h"
#include "restart_policy.h"
#include "zygote.h"

extern char **environ;

typedef enum {
  W_EMPTY = 0, /* no process: waiting to restart, or never started */
  W_LOADING,   /* process started, LOAD sent, waiting for READY */
  W_IDLE,      /* ready, no batch */
  W_BUSY,      /* ready, running the batches in w->running */
  W_STOPPING,  /* SHUTDOWN sent */
  W_FAILED,    /* model failed to load: not restarted */
} worker_state;

typedef struct worker_proc worker_proc;

struct berth_worker {
  berth_model *model;
  unsigned index;
  worker_state state;
  worker_proc *proc; /* current incarnation or NULL */
  /* In-flight batches, owned: one at a time, or up to max_concurrency
   * decoupled requests when the worker's READY offered it (protocol 2). */
  berth_batch **running;
  uint32_t n_running;
  uint32_t max_concurrency; /* from the current incarnation's READY */
  uv_timer_t timer;         /* restart backoff or load timeout */
  double backoff_s;
  uint64_t ready_ns;   /* when the current incarnation became ready */
  uint64_t spawned_ns; /* when the current incarnation was started */
  bool counted_ready;  /* counted in model->n_ready */
  unsigned restarts;
  int device;        /* where every incarnation runs (placement.h), set once */
  uint64_t gpu_need; /* the gpu_memory counted there for it */
};

struct worker_proc {
  berth_engine *engine;
  berth_worker *w; /* NULL once the slot moved on */
  uv_process_t process;
  uv_pipe_t pipe;
  int open_handles;
  bool exited;
  bool pipe_closing;
  int64_t exit_status;
  int term_signal;
  berth_buf rx; /* bytes received, at most one frame + slack */
  uint32_t max_frame;
  berth_worker_output out[2]; /* the worker's stdout and stderr, forwarded
                                 to the log (worker_output.h) */
  bool forked;     /* started by the worker template: zc, not process */
  berth_zchild zc; /* zygote.h */

  /* Bytes handed to uv_write on the socket since the process started: with
   * the write queue's size, how far the worker can have read (a batch's
   * wire_end, frame_unsent). */
  uint64_t queued_bytes;
  berth_shm_region shm; /* the worker's shared memory (wp_shm.h), or none */
  bool shm_ok;          /* the worker mapped it (READY's shared_memory) */
  bool shm_kept;        /* the model kept an input array viewing it: no
                           more inputs go there (BERTH_WP_FLAG_KEPT_INPUTS) */
  char broke[560];      /* why the engine killed it, or "" */
};

typedef struct {
  uv_write_t req;
  size_t len;
  uint8_t data[];
} frame_write;

static void worker_spawn(berth_worker *w);
static void proc_lost(worker_proc *p);

/* ---- small helpers ---------------------------------------------------- */

static const char *wname(const berth_worker *w, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%s/%u", w->model->cfg->name, w->model->cfg->version,
           w->index);
  return buf;
}

static void maybe_all_stopped(berth_engine *e);

static void proc_release(void *arg) {
  worker_proc *p = arg;
  if (--p->open_handles > 0)
    return;
  berth_engine *e = p->engine;
  berth_buf_free(&p->rx);
  berth_shm_region_free(&p->shm);
  free(p);
  e->sup.live_procs--;
  maybe_all_stopped(e);
}

static void proc_handle_closed(uv_handle_t *h) { proc_release(h->data); }

static void proc_close_pipe(worker_proc *p) {
  if (p->pipe_closing)
    return;
  p->pipe_closing = true;
  uv_close((uv_handle_t *)&p->pipe, proc_handle_closed);
}

static void proc_kill(worker_proc *p, int sig) {
  if (p->exited)
    return;
  if (p->forked)
    berth_zchild_kill(&p->zc, sig);
  else
    uv_process_kill(&p->process, sig);
}

static int proc_pid(const worker_proc *p) {
  return p->forked ? p->zc.pid : p->process.pid;
}

static void write_done(uv_write_t *req, int status) {
  frame_write *fw = (frame_write *)req;
  free(fw);
  (void)
      status; /* a failed write means the worker is dying: exit_cb handles it */
}

/* Sends one frame; the payload is copied. */
static int send_frame(worker_proc *p, uint16_t type, uint64_t id,
                      const void *payload, size_t len) {
  if (len > UINT32_MAX)
    return BERTH_E_TOO_LARGE;
  frame_write *fw = malloc(sizeof *fw + BERTH_WP_HEADER_SIZE + len);
  if (fw == NULL)
    return BERTH_E_NOMEM;
  berth_wp_header h = {
      .length = (uint32_t)len, .type = type, .flags = 0, .id = id};
  berth_wp_header_encode(fw->data, &h);
  if (len > 0)
    memcpy(fw->data + BERTH_WP_HEADER_SIZE, payload, len);
  fw->len = BERTH_WP_HEADER_SIZE + len;
  uv_buf_t b = uv_buf_init((char *)fw->data, (unsigned)fw->len);
  int rc = uv_write(&fw->req, (uv_stream_t *)&p->pipe, &b, 1, write_done);
  if (rc != 0) {
    free(fw);
    return BERTH_E_IO;
  }
  p->queued_bytes += fw->len;
  return BERTH_OK;
}

/* ---- INFER frames written from the requests' buffers ------------------
 *
 * The frame's headers are encoded into a small arena; the tensor data is
 * written with writev straight from each job's request (wp_gather.h), so
 * a batch's bytes are not copied on their way to the worker. The jobs
 * outlive the write: the batch ends only on the worker's answer, which
 * must come after the whole frame was handed to the kernel (frame_unsent),
 * or when the worker exits, after the pipe was closed (libuv then touches
 * no buffer of a pending write). */

typedef struct infer_write {
  uv_write_t req;
  berth_wp_frame frame;
  uv_buf_t bufs[];
} infer_write;

static void infer_write_done(uv_write_t *req, int status) {
  infer_write *iw = (infer_write *)req;
  berth_wp_frame_free(&iw->frame);
  free(iw);
  (void)status; /* a failed write means the worker is dying: exit_cb */
}

/* True while bytes of b's INFER frame are still queued in the engine: the
 * worker cannot have read it whole, so it may not answer it yet (and the
 * batch's buffers are still in use). Several frames may be queued at once
 * (a decoupled worker takes several requests): each batch knows where its
 * frame ends in the socket's byte stream. */
static bool frame_unsent(worker_proc *p, const berth_batch *b) {
  size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&p->pipe);
  return p->queued_bytes - queued < b->wire_end;
}

/* The batch's INFER frame, written from the jobs' buffers (wp_gather.h). */
static int gather_batch(const berth_batch *b, berth_wp_frame *f,
                        const char *params, size_t plen, berth_wp_shm *shm) {
  if (b->inputs != NULL) { /* concatenated already (scheduler.h) */
    berth_infer_request joined = {.inputs = b->inputs, .n_inputs = b->n_inputs};
    const berth_infer_request *one = &joined;
    return berth_wp_frame_gather_batch_shm(f, b->id, &one, 1, b->rows, params,
                                           plen, shm);
  }
  const berth_infer_request **reqs = malloc(b->n_jobs * sizeof *reqs);
  if (reqs == NULL)
    return BERTH_E_NOMEM;
  for (size_t k = 0; k < b->n_jobs; k++)
    reqs[k] = &b->jobs[k]->req;
  int rc = berth_wp_frame_gather_batch_shm(f, b->id, reqs, b->n_jobs, b->rows,
                                           params, plen, shm);
  free(reqs);
  return rc;
}

/* Queues the frame's pieces as one write; takes f on success. */
static int send_gathered(worker_proc *p, berth_wp_frame *f) {
  if (f->n_pieces > UINT_MAX)
    return BERTH_E_TOO_LARGE;
  infer_write *iw = malloc(sizeof *iw + f->n_pieces * sizeof(uv_buf_t));
  if (iw == NULL)
    return BERTH_E_NOMEM;
  for (size_t i = 0; i < f->n_pieces; i++)
    iw->bufs[i] = uv_buf_init((char *)(uintptr_t)f->pieces[i].data,
                              (unsigned)f->pieces[i].len);
  iw->frame = *f;
  uint64_t len = 0;
  for (size_t i = 0; i < f->n_pieces; i++)
    len += f->pieces[i].len;
  int rc = uv_write(&iw->req, (uv_stream_t *)&p->pipe, iw->bufs,
                    (unsigned)f->n_pieces, infer_write_done);
  if (rc != 0) {
    free(iw);
    return BERTH_E_IO;
  }
  p->queued_bytes += len;
  return BERTH_OK;
}

/* ---- shared memory (worker protocol 3, wp_shm.h) ---------------------
 *
 * Each incarnation may get a region: created with the process, offered in
 * LOAD (the memfd rides on that frame as SCM_RIGHTS), used once READY says
 * the worker mapped it, freed with the incarnation. Never for a decoupled
 * model (its requests overlap). */

/* Creates p's region when the config asks for one; without one the worker
 * simply gets inline frames. */
static void shm_create(worker_proc *p) {
  const berth_config *c = &p->engine->cfg;
  p->shm.fd = -1;
  if (c->worker_shm_size == 0 || c->worker_shm_size > SIZE_MAX)
    return;
  berth_errmsg err;
  size_t size = (size_t)c->worker_shm_size & ~(size_t)127;
  if (size < 4096) /* too small to be of use: off */
    return;
  if (berth_shm_region_create(&p->shm, size, &err) != BERTH_OK)
    berth_log_kv(BERTH_LOG_WARNING,
                 "no shared memory for a worker; its tensors go through its "
                 "socket",
                 "error", err.msg, NULL);
}

/* Adds LOAD's "shared_memory" when p has a region. */
static int shm_offer(const worker_proc *p, json_t *entry) {
  if (p->shm.base == NULL)
    return BERTH_OK;
  json_t *o =
      json_pack("{sIsIsI}", "size", (json_int_t)p->shm.size, "split",
                (json_int_t)p->shm.split, "threshold",
                (json_int_t)(p->engine->cfg.worker_shm_threshold > INT64_MAX
                                 ? INT64_MAX
                                 : p->engine->cfg.worker_shm_threshold));
  if (o == NULL || json_object_set_new(entry, "shared_memory", o) != 0)
    return BERTH_E_NOMEM;
  return BERTH_OK;
}

/* Queues len raw bytes (part of a frame) on the socket; copied. */
static int send_raw(worker_proc *p, const uint8_t *data, size_t len) {
  frame_write *fw = malloc(sizeof *fw + len);
  if (fw == NULL)
    return BERTH_E_NOMEM;
  memcpy(fw->data, data, len);
  fw->len = len;
  uv_buf_t b = uv_buf_init((char *)fw->data, (unsigned)fw->len);
  if (uv_write(&fw->req, (uv_stream_t *)&p->pipe, &b, 1, write_done) != 0) {
    free(fw);
    return BERTH_E_IO;
  }
  p->queued_bytes += len;
  return BERTH_OK;
}

/* Sends the LOAD frame (the first bytes on the socket) with the region's
 * descriptor attached, then closes berthd's copy of it. When the socket
 * refuses the descriptor the region goes and LOAD is sent as usual. */
static int shm_send_load(worker_proc *p, const char *text, size_t len) {
  uv_os_fd_t fd;
  if (p->shm.base == NULL || len > UINT32_MAX - BERTH_WP_HEADER_SIZE ||
      uv_stream_get_write_queue_size((uv_stream_t *)&p->pipe) != 0 ||
      uv_fileno((uv_handle_t *)&p->pipe, &fd) != 0)
    return BERTH_E_UNAVAILABLE;
  size_t total = BERTH_WP_HEADER_SIZE + len;
  uint8_t *frame = malloc(total);
  if (frame == NULL)
    return BERTH_E_NOMEM;
  berth_wp_header h = {
      .length = (uint32_t)len, .type = BERTH_WP_LOAD, .flags = 0, .id = 0};
  berth_wp_header_encode(frame, &h);
  memcpy(frame + BERTH_WP_HEADER_SIZE, text, len);
  ssize_t n = berth_shm_send_fd(fd, frame, total, p->shm.fd);
  int rc = n > 0 ? BERTH_OK : BERTH_E_UNAVAILABLE;
  if (n > 0) {
    p->queued_bytes += (size_t)n;
    if ((size_t)n < total)
      rc = send_raw(p, frame + n, total - (size_t)n);
  }
  free(frame);
  berth_shm_region_close_fd(&p->shm);
  return rc;
}

/* READY's "shared_memory": true: the worker mapped the region. */
static void shm_adopt(worker_proc *p, const berth_model *m,
                      const uint8_t *payload, size_t len) {
  json_error_t jerr;
  json_t *doc = json_loadb((const char *)payload, len, 0, &jerr);
  p->shm_ok = p->shm.base != NULL && !m->decoupled &&
              json_is_true(json_object_get(doc, "shared_memory"));
  json_decref(doc);
  if (p->shm.base != NULL && !p->shm_ok)
    berth_shm_region_free(&p->shm); /* an older worker: inline frames */
}

/* Where the batch's large inputs may go (NULL: all inline). */
static berth_wp_shm *shm_inputs(worker_proc *p, berth_wp_shm *s) {
  if (!p->shm_ok || p->shm_kept)
    return NULL;
  *s = (berth_wp_shm){.base = p->shm.base,
                      .lo = 0,
                      .hi = p->shm.split,
                      .threshold = (size_t)p->engine->cfg.worker_shm_threshold};
  return s;
}

/* Where a RESULT's tensors may point (NULL: nowhere): the worker's part,
 * or the engine's when an output is a view of an input (the engine writes
 * the next batch there only after it has read this answer). */
static const berth_wp_region *shm_outputs(const worker_proc *p,
                                          berth_wp_region *g) {
  if (!p->shm_ok)
    return NULL;
  *g = (berth_wp_region){p->shm.base, 0, p->shm.size};
  return g;
}

/* ---- frames from the worker ------------------------------------------ */

/* The decoupled requests the worker takes at once: READY's max_concurrency
 * (protocol 2), 1 when absent or when the model is not decoupled. */
static int read_concurrency(berth_worker *w, const uint8_t *payload,
                            size_t len) {
  json_error_t jerr;
  json_t *doc = json_loadb((const char *)payload, len, 0, &jerr);
  json_int_t v = json_integer_value(json_object_get(doc, "max_concurrency"));
  json_decref(doc);
  uint32_t n =
      w->model->decoupled && v > 1
          ? (uint32_t)(v > BERTH_WP_MAX_CONCURRENCY ? BERTH_WP_MAX_CONCURRENCY
                                                    : v)
          : 1;
  berth_batch **slots = calloc(n, sizeof *slots);
  if (slots == NULL)
    return BERTH_E_NOMEM;
  free(w->running); /* empty: a new incarnation runs nothing yet */
  w->running = slots;
  w->n_running = 0;
  w->max_concurrency = n;
  return BERTH_OK;
}

/* Index of w's in-flight batch with this id, or -1. */
static long running_index(const berth_worker *w, uint64_t id) {
  for (uint32_t i = 0; i < w->n_running; i++)
    if (w->running[i]->id == id)
      return (long)i;
  return -1;
}

/* Takes batch i out of w's in-flight set (the last one moves into its
 * place) and returns it; w is idle when none is left. */
static berth_batch *running_take(berth_worker *w, uint32_t i) {
  berth_batch *b = w->running[i];
  w->running[i] = w->running[--w->n_running];
  w->running[w->n_running] = NULL;
  if (w->n_running == 0 && w->state == W_BUSY)
    w->state = W_IDLE;
  return b;
}

static void on_ready(berth_worker *w, const uint8_t *payload, size_t len) {
  char id[300];
  berth_model *m = w->model;
  berth_errmsg err;
  if (berth_model_adopt_ready(m, (const char *)payload, len, &err) !=
      BERTH_OK) {
    berth_log_kv(BERTH_LOG_ERROR, "worker sent a bad READY; restarting it",
                 "worker", wname(w, id, sizeof id), "error", err.msg, NULL);
    proc_kill(w->proc, SIGKILL);
    return;
  }
  if (read_concurrency(w, payload, len) != BERTH_OK) {
    berth_log_kv(BERTH_LOG_ERROR,
                 "out of memory adopting a worker; restarting it", "worker",
                 wname(w, id, sizeof id), NULL);
    proc_kill(w->proc, SIGKILL);
    return;
  }
  shm_adopt(w->proc, m, payload, len);
  uv_timer_stop(&w->timer);
  w->state = W_IDLE;
  w->ready_ns = uv_hrtime();
  if (w->spawned_ns != 0)
    BERTH_OBSERVE(&m->engine->observers, worker_ready, m,
                  (double)(w->ready_ns - w->spawned_ns) / 1e9);
  w->counted_ready = true;
  m->n_ready++;
  m->has_served = true;
  if (m->state != BERTH_MODEL_READY) {
    m->state = BERTH_MODEL_READY;
    m->load_error[0] = '\0';
    berth_log_kv(BERTH_LOG_INFO, "model ready", "model", m->cfg->name,
                 "version", m->cfg->version, "platform",
                 m->platform ? m->platform : "", NULL);
  } else {
    berth_log_kv(BERTH_LOG_DEBUG, "worker ready", "worker",
                 wname(w, id, sizeof id), NULL);
  }
  berth_sched_dispatch(m);
}

static void on_load_failed(berth_worker *w, const uint8_t *payload,
                           size_t len) {
  char id[300];
  berth_model *m = w->model;
  json_error_t jerr;
  json_t *doc = json_loadb((const char *)payload, len, 0, &jerr);
  const char *msg = json_string_value(json_object_get(doc, "error"));
  char full[sizeof m->load_error];
  snprintf(full, sizeof full, "%s",
           msg ? msg : "the worker could not load the model");
  json_decref(doc);
  /* A worker's message may quote the file (a parser's error): for an
   * entry a caller without an admin token sent, clients get a fixed text
   * and only the log has the message (docs/security.md). */
  snprintf(m->load_error, sizeof m->load_error, "%s",
           m->cfg->quiet_errors
               ? "the worker could not load the model file (the server log "
                 "has the worker's message)"
               : full);
  w->state = W_FAILED;
  uv_timer_stop(&w->timer);
  if (m->n_ready == 0) {
    m->state = BERTH_MODEL_FAILED;
    berth_sched_fail_queued(m, BERTH_E_UNAVAILABLE, m->load_error);
  }
  berth_log_kv(BERTH_LOG_ERROR,
               "model failed to load; fix the model or its berth.yaml and "
               "restart berth",
               "model", m->cfg->name, "version", m->cfg->version, "worker",
               wname(w, id, sizeof id), "error", full, NULL);
  if (m->state == BERTH_MODEL_FAILED)
    BERTH_OBSERVE(&m->engine->observers, load_failed, m);
}

/* Returns false when the worker broke the protocol (a malformed RESULT):
 * it is then killed and its batch fails as when it dies, with the reason
 * (p->broke). */
static bool on_answer(berth_worker *w, long at, const berth_wp_header *h,
                      const uint8_t *payload, size_t len) {
  berth_model *m = w->model;
  if (h->type == BERTH_WP_RESULT) {
    berth_tensor *outs = NULL;
    size_t n = 0;
    const char *params = NULL;
    size_t plen = 0;
    berth_errmsg err;
    berth_wp_region g;
    if (berth_wp_tensors_decode_region(payload, len, shm_outputs(w->proc, &g),
                                       &outs, &n, &params, &plen,
                                       &err) != BERTH_OK) {
      snprintf(w->proc->broke, sizeof w->proc->broke,
               "killed: malformed outputs: %s", err.msg);
      return false;
    }
    berth_batch *b = running_take(w, (uint32_t)at);
    b->answered_ns = uv_hrtime();
    berth_batch_complete(b, outs, n, params, plen);
    berth_tensors_free(outs, n);
  } else {
    berth_batch *b = running_take(w, (uint32_t)at);
    b->answered_ns = uv_hrtime();
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)payload, len, 0, &jerr);
    const char *emsg = json_string_value(json_object_get(doc, "error"));
    const char *kind = json_string_value(json_object_get(doc, "kind"));
    char msg[1024];
    snprintf(msg, sizeof msg, "model '%s': %s", m->cfg->name,
             emsg ? emsg : "the model failed without a message");
    bool input = kind != NULL && strcmp(kind, "input") == 0;
    json_decref(doc);
    berth_batch_fail(b, input ? BERTH_E_INVALID : BERTH_E_MODEL, msg);
  }
  berth_sched_dispatch(m);
  return true;
}

/* Counts one response of j's (unless j is answered already) and shows it to
 * the observers' responded hook (observer.h): time to first response,
 * tokens. */
static void note_response(berth_job *j, berth_tensor *outs, size_t n) {
  if (j->answered)
    return;
  uint64_t now = uv_hrtime();
  if (j->n_responses++ == 0)
    j->first_response_ns = now;
  berth_infer_response seen = {.outputs = outs, .n_outputs = n};
  BERTH_OBSERVE(&j->model->engine->observers, responded, j, &seen, now);
  j->last_response_ns = now;
}

/* One response of a decoupled model's request: handed to the job's partial
 * callback while the job is unanswered and its creator takes them; dropped
 * otherwise (the client left, the deadline passed). Returns false when the
 * worker broke the protocol. */
static bool on_response(berth_worker *w, long at, const uint8_t *payload,
                        size_t len) {
  berth_batch *b = w->running[at];
  berth_model *m = w->model;
  if (!m->decoupled || b->n_jobs != 1)
    return false; /* only decoupled models answer in RESPONSE frames */
  berth_tensor *outs = NULL;
  size_t n = 0;
  const char *params = NULL;
  size_t plen = 0;
  berth_errmsg err;
  if (berth_wp_tensors_decode(payload, len, &outs, &n, &params, &plen, &err) !=
      BERTH_OK)
    return false;
  berth_job *j = b->jobs[0];
  note_response(j, outs, n);
  if (j->partial != NULL && !j->answered) {
    berth_infer_response resp = {
        .outputs = outs, .n_outputs = n, .parameters = NULL};
    if (plen > 2) {
      json_error_t jerr;
      resp.parameters = json_loadb(params, plen, 0, &jerr);
    }
    j->partial(j, &resp);
    json_decref(resp.parameters);
  }
  berth_tensors_free(outs, n);
  return true;
}

bool berth_supervisor_cancel_job(berth_job *job) {
  berth_model *m = job->model;
  if (m == NULL || !m->decoupled || !job->running)
    return false;
  for (size_t i = 0; i < m->n_workers; i++) {
    berth_worker *w = m->workers[i];
    if (w->state != W_BUSY || w->proc == NULL)
      continue;
    for (uint32_t k = 0; k < w->n_running; k++) {
      const berth_batch *b = w->running[k];
      if (b->n_jobs == 1 && b->jobs[0] == job)
        return send_frame(w->proc, BERTH_WP_CANCEL, b->id, NULL, 0) == BERTH_OK;
    }
  }
  return false;
}

/* Returns false if the worker broke the protocol (it is then killed). */
static bool handle_frame(worker_proc *p, const berth_wp_header *h,
                         const uint8_t *payload) {
  berth_worker *w = p->w;
  if (w == NULL)
    return true; /* a detached incarnation: ignore what it still says */
  switch (h->type) {
  case BERTH_WP_READY:
    if (w->state != W_LOADING)
      return false;
    on_ready(w, payload, h->length);
    return true;
  case BERTH_WP_LOAD_FAILED:
    if (w->state != W_LOADING)
      return false;
    on_load_failed(w, payload, h->length);
    return true;
  case BERTH_WP_RESULT:
  case BERTH_WP_ERROR: {
    long at = w->state == W_BUSY ? running_index(w, h->id) : -1;
    if (at < 0 || frame_unsent(p, w->running[at]))
      return false;
    if (h->flags & BERTH_WP_FLAG_KEPT_INPUTS)
      p->shm_kept = true; /* before the next batch is written */
    return on_answer(w, at, h, payload, h->length);
  }
  case BERTH_WP_RESPONSE: {
    long at = w->state == W_BUSY ? running_index(w, h->id) : -1;
    return at >= 0 && !frame_unsent(p, w->running[at]) &&
           on_response(w, at, payload, h->length);
  }
  default:
    return false;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  worker_proc *p = h->data;
  size_t want = 64 * 1024;
  char *dst = berth_buf_reserve(&p->rx, want);
  if (dst == NULL) {
    *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
    return;
  }
  *buf = uv_buf_init(dst, (unsigned)want);
}

static void read_frames(uv_stream_t *s, ssize_t nread) {
  worker_proc *p = s->data;
  if (nread < 0) {
    /* EOF or error: the worker is gone or going. Its exit_cb does the
     * accounting; make sure it comes. */
    uv_read_stop(s);
    proc_close_pipe(p);
    proc_kill(p, SIGKILL);
    return;
  }
  if (nread == 0)
    return;
  berth_buf_commit(&p->rx, (size_t)nread);
  size_t off = 0;
  const uint8_t *data = (const uint8_t *)p->rx.data;
  while (p->rx.len - off >= BERTH_WP_HEADER_SIZE) {
    berth_wp_header h;
    berth_errmsg err;
    if (berth_wp_header_decode(data + off, p->max_frame, &h, &err) !=
        BERTH_OK) {
      berth_log_kv(BERTH_LOG_ERROR, "worker broke the protocol; killing it",
                   "error", err.msg, NULL);
      uv_read_stop(s);
      proc_kill(p, SIGKILL);
      return;
    }
    if (p->rx.len - off - BERTH_WP_HEADER_SIZE < h.length)
      break; /* a whole header, not yet the whole payload */
    if (!handle_frame(p, &h, data + off + BERTH_WP_HEADER_SIZE)) {
      berth_log_kv(BERTH_LOG_ERROR,
                   "worker sent an unexpected frame; killing it", "error",
                   p->broke[0] != '\0' ? p->broke : "", NULL);
      uv_read_stop(s);
      proc_kill(p, SIGKILL);
      return;
    }
    off += BERTH_WP_HEADER_SIZE + h.length;
  }
  if (off > 0) {
    memmove(p->rx.data, p->rx.data + off, p->rx.len - off);
    p->rx.len -= off;
  }
}

/* The answers of the frames read at once leave in one write per HTTP/2
 * connection (httpd.h: berth_httpd_cork). */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf; /* the bytes are in the worker's rx buffer (on_alloc) */
  berth_httpd_cork();
  read_frames(s, nread);
  berth_httpd_uncork();
}

/* ---- lifecycle --------------------------------------------------------- */

static void maybe_all_stopped(berth_engine *e) {
  berth_supervisor_state *s = &e->sup;
  if (s->stopped == NULL || s->live_procs > 0 || berth_zygote_busy(s->zygote))
    return;
  void (*cb)(void *) = s->stopped;
  s->stopped = NULL; /* once */
  uv_timer_stop(&s->stop_timer);
  cb(s->stopped_arg);
}

static void on_timer(uv_timer_t *t) {
  berth_worker *w = t->data;
  char id[300];
  if (w->state == W_EMPTY) {
    worker_spawn(w);
  } else if (w->state == W_LOADING && w->proc != NULL) {
    snprintf(w->model->load_error, sizeof w->model->load_error,
             "loading took longer than workers.load_timeout_s (%.0f s)",
             w->model->engine->cfg.worker_load_timeout_s);
    berth_log_kv(BERTH_LOG_ERROR, "model load timed out; killing the worker",
                 "worker", wname(w, id, sizeof id), NULL);
    w->state = W_FAILED;
    proc_kill(w->proc, SIGKILL);
    if (w->model->n_ready == 0) {
      w->model->state = BERTH_MODEL_FAILED;
      berth_sched_fail_queued(w->model, BERTH_E_UNAVAILABLE,
                              w->model->load_error);
      BERTH_OBSERVE(&w->model->engine->observers, load_failed, w->model);
    }
  }
}

/* What to do now that w's process is gone (restart_policy.h). */
static berth_restart_plan restart_plan(const berth_worker *w, bool stopping,
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

static void schedule_restart(berth_worker *w, const berth_restart_plan *plan) {
  w->backoff_s = plan->next_backoff_s;
  w->state = W_EMPTY;
  w->restarts++;
  BERTH_OBSERVE(&w->model->engine->observers, worker_restarted, w->model);
  uv_timer_start(&w->timer, on_timer, (uint64_t)(plan->delay_s * 1000.0), 0);
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
static void proc_lost(worker_proc *p) {
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
      berth_batch_fail(running_take(w, w->n_running - 1), BERTH_E_WORKER_DIED,
                       msg);
  }
  berth_sched_worker_lost(m, w);
  bool stopping = e->stopping || e->draining || was == W_STOPPING;
  berth_restart_plan plan = restart_plan(w, stopping, was == W_FAILED);
  if (stopping) {
    w->state = W_EMPTY;
    return;
  }
  if (!plan.restart) {
    return; /* a model that cannot load is not restarted in a loop */
  }
  berth_log_kv(BERTH_LOG_WARNING, "worker exited; restarting it", "worker",
               wname(w, id, sizeof id), "how", how, NULL);
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
  schedule_restart(w, &plan);
  berth_sched_dispatch(m);
}

static void on_worker_exit(uv_process_t *proc, int64_t status, int sig) {
  worker_proc *p = proc->data;
  p->exited = true;
  p->exit_status = status;
  p->term_signal = sig;
  berth_worker_output_close(&p->out[0]);
  berth_worker_output_close(&p->out[1]);
  proc_close_pipe(p);
  uv_close((uv_handle_t *)&p->process, proc_handle_closed);
  proc_lost(p);
}

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
  proc_close_pipe(p);
  berth_zchild_close(c, proc_release, p);
  proc_lost(p);
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
  proc_close_pipe(p);
  berth_zchild_close(c, proc_release, p);
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
               "worker", wname(w, id, sizeof id), "error", why, NULL);
  worker_spawn_direct(w);
}

static void zygote_idle(void *arg) { maybe_all_stopped(arg); }

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

static int send_load(berth_worker *w) {
  json_t *entry = json_deep_copy(w->model->cfg->entry);
  if (entry == NULL)
    return BERTH_E_NOMEM;
  json_object_set_new(entry, "instance", json_integer(w->index));
  json_object_set_new(entry, "instances", json_integer(w->model->instances));
  char cuda[16];
  if (berth_placement_env_value(w->device, cuda, sizeof cuda))
    json_object_set_new(entry, "cuda_visible_devices", json_string(cuda));
  if (shm_offer(w->proc, entry) != BERTH_OK) {
    json_decref(entry);
    return BERTH_E_NOMEM;
  }
  char *text = json_dumps(entry, JSON_COMPACT);
  json_decref(entry);
  if (text == NULL)
    return BERTH_E_NOMEM;
  int rc = shm_send_load(w->proc, text, strlen(text));
  if (rc == BERTH_E_UNAVAILABLE) {
    berth_shm_region_free(&w->proc->shm); /* offered, but not sent */
    rc = send_frame(w->proc, BERTH_WP_LOAD, 0, text, strlen(text));
  }
  free(text);
  return rc;
}

static void worker_start(berth_worker *w, bool direct);

static void worker_spawn(berth_worker *w) { worker_start(w, false); }

static void worker_spawn_direct(berth_worker *w) { worker_start(w, true); }

static void worker_start(berth_worker *w, bool direct) {
  berth_engine *e = w->model->engine;
  char id[300];
  wname(w, id, sizeof id);
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
    berth_restart_plan plan = restart_plan(w, false, false);
    schedule_restart(w, &plan);
    return;
  }
  size_t limit = e->cfg.max_body_bytes * 2 + (1u << 20);
  p->max_frame = limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit;
  berth_buf_init(&p->rx,
                 (size_t)p->max_frame + BERTH_WP_HEADER_SIZE + 128 * 1024);
  p->w = w;
  p->engine = e;
  shm_create(p);
  uv_pipe_init(e->loop, &p->pipe, 0);
  p->pipe.data = p;
  p->process.data = p;
  bool out_ok = berth_worker_output_init(&p->out[0], e->loop, "stdout",
                                         proc_release, p) == BERTH_OK;
  if (berth_worker_output_init(&p->out[1], e->loop, "stderr", proc_release,
                               p) != BERTH_OK)
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
  opt.exit_cb = on_worker_exit;
  e->sup.live_procs++;
  int rc = 0;
  if (!out_ok)
    rc = UV_ENOMEM;
  else if (direct || proc_fork(e, p, env) != BERTH_OK)
    rc = uv_spawn(e->loop, &p->process, &opt);
  free_env(env, n_owned);
  if (rc != 0) {
    berth_log_kv(BERTH_LOG_ERROR,
                 "cannot start a worker process; check workers.command",
                 "worker", id, "command", e->cfg.worker_command[0], "error",
                 uv_strerror(rc), NULL);
    p->w = NULL;
    p->exited = true;
    p->open_handles = 4;
    p->pipe_closing = true;
    uv_close((uv_handle_t *)&p->pipe, proc_handle_closed);
    berth_worker_output_close(&p->out[0]);
    berth_worker_output_close(&p->out[1]);
    if (out_ok)
      uv_close((uv_handle_t *)&p->process, proc_handle_closed);
    else
      proc_release(p); /* the process handle was never initialised */
    berth_restart_plan plan = restart_plan(w, false, false);
    schedule_restart(w, &plan);
    return;
  }
  p->open_handles = 4;
  for (int k = 0; k < 2; k++)
    berth_worker_output_start(&p->out[k], w->model->cfg->name,
                              w->model->cfg->version, w->index, proc_pid(p));
  w->proc = p;
  w->state = W_LOADING;
  w->ready_ns = 0;
  w->spawned_ns = uv_hrtime();
  uv_read_start((uv_stream_t *)&p->pipe, on_alloc, on_read);
  if (send_load(w) != BERTH_OK) {
    proc_kill(p, SIGKILL);
    return;
  }
  uv_timer_start(&w->timer, on_timer,
                 (uint64_t)(e->cfg.worker_load_timeout_s * 1000.0), 0);
  berth_log_kv(BERTH_LOG_INFO, "loading model", "worker", id, "runtime",
               w->model->cfg->runtime, NULL);
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
    worker_spawn(w);
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
    if (p == NULL || p->exited || proc_pid(p) <= 0)
      continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", proc_pid(p));
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

void berth_worker_run(berth_worker *w, berth_batch *b) {
  berth_model *m = w->model;
  /* Jobs in a batch share their parameters; a sequence batch sends its
   * own. The inputs are written from the jobs' buffers (gather_batch). */
  const berth_infer_request *r = &b->jobs[0]->req;
  char *params = NULL;
  size_t plen = 0;
  const json_t *sent = b->params != NULL ? b->params : r->parameters;
  if (sent != NULL) {
    params = json_dumps(sent, JSON_COMPACT);
    plen = params ? strlen(params) : 0;
  }
  berth_wp_frame f;
  berth_wp_shm shm;
  int rc = gather_batch(b, &f, params, plen, shm_inputs(w->proc, &shm));
  free(params);
  if (rc != BERTH_OK) {
    char msg[256];
    snprintf(msg, sizeof msg, "could not encode the request for model '%s'",
             m->cfg->name);
    berth_batch_fail(b, rc == BERTH_E_NOMEM ? BERTH_E_NOMEM : BERTH_E_INTERNAL,
                     msg);
    return;
  }
  w->state = W_BUSY;
  w->running[w->n_running++] = b;
  b->sent_ns = uv_hrtime();
  rc = send_gathered(w->proc, &f);
  b->wire_end = w->proc->queued_bytes;
  if (rc != BERTH_OK) {
    berth_wp_frame_free(&f);
    proc_kill(w->proc, SIGKILL); /* exit_cb fails the batch and restarts */
  }
}

static void stop_timeout(uv_timer_t *t) {
  berth_engine *e = t->data;
  for (size_t i = 0; i < e->n_models; i++) {
    berth_model *m = e->models[i];
    for (size_t k = 0; k < m->n_workers; k++)
      if (m->workers[k]->proc != NULL)
        proc_kill(m->workers[k]->proc, SIGKILL);
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
        proc_kill(w->proc, SIGTERM);
      } else if (send_frame(w->proc, BERTH_WP_SHUTDOWN, 0, NULL, 0) !=
                 BERTH_OK) {
        proc_kill(w->proc, SIGTERM);
      }
      w->state = W_STOPPING;
    }
  }
  if (e->sup.zygote != NULL)
    berth_zygote_stop(e->sup.zygote);
  uv_timer_start(&e->sup.stop_timer, stop_timeout, timeout_ms, 0);
  maybe_all_stopped(e);
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
    if (!ready ||
        send_frame(w->proc, BERTH_WP_SHUTDOWN, 0, NULL, 0) != BERTH_OK)
      proc_kill(w->proc, SIGTERM);
    w->state = W_STOPPING; /* its exit is then not restarted */
  }
}

void berth_supervisor_kill_model(berth_model *m) {
  for (size_t k = 0; k < m->n_workers; k++)
    if (m->workers[k]->proc != NULL)
      proc_kill(m->workers[k]->proc, SIGKILL);
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
    if (w->state != W_IDLE ||
        send_frame(w->proc, BERTH_WP_SHUTDOWN, 0, NULL, 0) != BERTH_OK)
      proc_kill(w->proc, SIGTERM);
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
      worker_spawn(w); /* a slot a scale-down left empty */
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
  worker_spawn(w);
  return BERTH_OK;
}

bool berth_supervisor_shrink_one(berth_model *m) {
  for (size_t k = m->n_workers; k-- > 0;) {
    berth_worker *w = m->workers[k];
    if (w->state != W_IDLE || w->proc == NULL)
      continue; /* a busy worker is never stopped to scale down */
    if (send_frame(w->proc, BERTH_WP_SHUTDOWN, 0, NULL, 0) != BERTH_OK)
      proc_kill(w->proc, SIGTERM);
    w->state = W_STOPPING; /* its exit is not restarted */
    if (w->counted_ready) {
      w->counted_ready = false; /* no batch goes to it any more */
      m->n_ready--;
    }
    return true;
  }
  return false;
}
