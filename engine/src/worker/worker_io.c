/* Berth engine: the worker's socket (supervisor_int.h) — frames written
 * to the worker (LOAD, INFER from the requests' buffers, CANCEL) and the
 * frames it sends back (READY, LOAD_FAILED, RESULT/ERROR, RESPONSE). */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "log.h"
#include "supervisor_int.h"

typedef struct {
  uv_write_t req;
  size_t len;
  uint8_t data[];
} frame_write;

static void write_done(uv_write_t *req, int status) {
  frame_write *fw = (frame_write *)req;
  free(fw);
  (void)
      status; /* a failed write means the worker is dying: exit_cb handles it */
}

/* Sends one frame; the payload is copied. */
int berth_sup_send_frame(worker_proc *p, uint16_t type, uint64_t id,
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

/* Queues len raw bytes (part of a frame) on the socket; copied. */
int berth_sup_send_raw(worker_proc *p, const uint8_t *data, size_t len) {
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
berth_batch *berth_sup_running_take(berth_worker *w, uint32_t i) {
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
                 "worker", berth_sup_wname(w, id, sizeof id), "error", err.msg,
                 NULL);
    berth_sup_proc_kill(w->proc, SIGKILL);
    return;
  }
  if (read_concurrency(w, payload, len) != BERTH_OK) {
    berth_log_kv(BERTH_LOG_ERROR,
                 "out of memory adopting a worker; restarting it", "worker",
                 berth_sup_wname(w, id, sizeof id), NULL);
    berth_sup_proc_kill(w->proc, SIGKILL);
    return;
  }
  berth_sup_shm_adopt(w->proc, m, payload, len);
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
                 berth_sup_wname(w, id, sizeof id), NULL);
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
               berth_sup_wname(w, id, sizeof id), "error", full, NULL);
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
    if (berth_wp_tensors_decode_region(
            payload, len, berth_sup_shm_outputs(w->proc, &g), &outs, &n,
            &params, &plen, &err) != BERTH_OK) {
      snprintf(w->proc->broke, sizeof w->proc->broke,
               "killed: malformed outputs: %s", err.msg);
      return false;
    }
    berth_batch *b = berth_sup_running_take(w, (uint32_t)at);
    b->answered_ns = uv_hrtime();
    berth_batch_complete(b, outs, n, params, plen);
    berth_tensors_free(outs, n);
  } else {
    berth_batch *b = berth_sup_running_take(w, (uint32_t)at);
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
        return berth_sup_send_frame(w->proc, BERTH_WP_CANCEL, b->id, NULL, 0) ==
               BERTH_OK;
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

void berth_sup_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
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
    berth_sup_proc_close_pipe(p);
    berth_sup_proc_kill(p, SIGKILL);
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
      berth_sup_proc_kill(p, SIGKILL);
      return;
    }
    if (p->rx.len - off - BERTH_WP_HEADER_SIZE < h.length)
      break; /* a whole header, not yet the whole payload */
    if (!handle_frame(p, &h, data + off + BERTH_WP_HEADER_SIZE)) {
      berth_log_kv(BERTH_LOG_ERROR,
                   "worker sent an unexpected frame; killing it", "error",
                   p->broke[0] != '\0' ? p->broke : "", NULL);
      uv_read_stop(s);
      berth_sup_proc_kill(p, SIGKILL);
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
void berth_sup_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  (void)buf; /* the bytes are in the worker's rx buffer (berth_sup_on_alloc) */
  berth_httpd_cork();
  read_frames(s, nread);
  berth_httpd_uncork();
}

int berth_sup_send_load(berth_worker *w) {
  json_t *entry = json_deep_copy(w->model->cfg->entry);
  if (entry == NULL)
    return BERTH_E_NOMEM;
  json_object_set_new(entry, "instance", json_integer(w->index));
  json_object_set_new(entry, "instances", json_integer(w->model->instances));
  char cuda[16];
  if (berth_placement_env_value(w->device, cuda, sizeof cuda))
    json_object_set_new(entry, "cuda_visible_devices", json_string(cuda));
  if (berth_sup_shm_offer(w->proc, entry) != BERTH_OK) {
    json_decref(entry);
    return BERTH_E_NOMEM;
  }
  char *text = json_dumps(entry, JSON_COMPACT);
  json_decref(entry);
  if (text == NULL)
    return BERTH_E_NOMEM;
  int rc = berth_sup_shm_send_load(w->proc, text, strlen(text));
  if (rc == BERTH_E_UNAVAILABLE) {
    berth_shm_region_free(&w->proc->shm); /* offered, but not sent */
    rc = berth_sup_send_frame(w->proc, BERTH_WP_LOAD, 0, text, strlen(text));
  }
  free(text);
  return rc;
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
  int rc =
      gather_batch(b, &f, params, plen, berth_sup_shm_inputs(w->proc, &shm));
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
    berth_sup_proc_kill(w->proc,
                        SIGKILL); /* exit_cb fails the batch and restarts */
  }
}
