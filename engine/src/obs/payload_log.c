/* Berth engine: the payload log (see payload_log.h). */
#include "payload_log.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "codec_json.h"
#include "log.h"
#include "numtext.h"

typedef struct pl_record {
  STAILQ_ENTRY(pl_record) link; /* waiting or writing */
  berth_model *model; /* counted on completion; models live as long as the
                          engine */
  bool failed;        /* set by the thread job */
  size_t len;
  char data[]; /* one JSON line, '\n' included */
} pl_record;

#define REC_HDR offsetof(pl_record, data)

/* Records are handed to the thread pool in batches: a batch starts when the
 * first record waiting is this old, or when this many bytes wait. One
 * thread-pool round trip per record would cost more than encoding it. */
#define BATCH_DELAY_MS 2
#define BATCH_BYTES ((uint64_t)256 << 10)

struct berth_payload_log {
  uv_loop_t *loop;
  char *path; /* owned */
  uint64_t max_bytes;
  unsigned backups;
  uint64_t queue_bytes; /* bound on queued + in-flight record bytes */
  uint64_t held;        /* bytes of waiting and in-flight records */
  STAILQ_HEAD(pl_queue, pl_record) waiting; /* owned (loop thread) */
  struct pl_queue writing;                  /* owned: the thread job's batch */
  bool busy; /* a thread job is queued or running */
  uv_work_t work;
  uv_timer_t timer; /* BATCH_DELAY_MS after the first waiting
                                record; closed by berth_payload_log_close */
  bool timer_armed;
  bool closed;  /* no more timer: batches start at once */
  uint64_t rng; /* sampling (loop thread) */
  /* thread job state */
  int fd;                 /* -1: (re)open before the next write */
  uint64_t size;          /* bytes in the current file */
  int error;              /* errno of the batch's first failure */
  const char *error_what; /* static text: what failed */
  bool error_logged;      /* a failure was logged since the last success */
};

/* ---- rotation and writing (thread job) ---------------------------------- */

static void backup_name(char *out, size_t cap, const char *path, unsigned i) {
  snprintf(out, cap, "%s.%u", path, i);
}

int berth_payload_rotate(const char *path, unsigned backups) {
  if (backups == 0)
    return unlink(path) == 0 || errno == ENOENT ? 0 : errno;
  size_t cap = strlen(path) + 16;
  char *from = malloc(cap), *to = malloc(cap);
  int rc = 0;
  if (from == NULL || to == NULL) {
    rc = ENOMEM;
    goto out;
  }
  for (unsigned i = backups; i > 1 && rc == 0; i--) {
    backup_name(from, cap, path, i - 1);
    backup_name(to, cap, path, i);
    if (rename(from, to) != 0 && errno != ENOENT)
      rc = errno;
  }
  backup_name(to, cap, path, 1);
  if (rc == 0 && rename(path, to) != 0 && errno != ENOENT)
    rc = errno;
out:
  free(from);
  free(to);
  return rc;
}

static int open_sink(const char *path, uint64_t *size) {
  /* O_NONBLOCK: a FIFO without a reader fails (ENXIO) instead of hanging;
   * writes then block as usual, in the thread pool. */
  int fd =
      open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd < 0)
    return -1;
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  struct stat st;
  *size = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
  return fd;
}

static void fail(berth_payload_log *pl, pl_record *r, const char *what) {
  r->failed = true;
  if (pl->error == 0) {
    pl->error = errno != 0 ? errno : EIO;
    pl->error_what = what;
  }
}

static void write_batch(uv_work_t *w) {
  berth_payload_log *pl = w->data;
  pl_record *r;
  STAILQ_FOREACH(r, &pl->writing, link) {
    if (pl->fd >= 0 && pl->size > 0 && pl->size + r->len > pl->max_bytes) {
      close(pl->fd);
      pl->fd = -1;
      int rc = berth_payload_rotate(pl->path, pl->backups);
      if (rc != 0) {
        errno = rc;
        fail(pl, r, "rotate");
        continue;
      }
    }
    if (pl->fd < 0) {
      pl->fd = open_sink(pl->path, &pl->size);
      if (pl->fd < 0) {
        fail(pl, r, "open");
        continue;
      }
    }
    size_t off = 0;
    while (off < r->len) {
      ssize_t n = write(pl->fd, r->data + off, r->len - off);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      off += (size_t)n;
    }
    pl->size += off;
    if (off < r->len) {
      fail(pl, r, "write");
      close(pl->fd); /* reopen (and rotate if needed) for the next one */
      pl->fd = -1;
    }
  }
}

static void start_batch(berth_payload_log *pl);
static void kick(berth_payload_log *pl);

static void batch_done(uv_work_t *w, int status) {
  berth_payload_log *pl = w->data;
  pl->busy = false;
  bool failed = false;
  while (!STAILQ_EMPTY(&pl->writing)) {
    pl_record *r = STAILQ_FIRST(&pl->writing);
    STAILQ_REMOVE_HEAD(&pl->writing, link);
    if (status != 0)
      r->failed = true;
    if (r->failed) {
      r->model->metrics.payload_dropped++;
      failed = true;
    } else {
      r->model->metrics.payload_written++;
    }
    pl->held -= r->len;
    free(r);
  }
  if (failed && !pl->error_logged) {
    /* once until a batch succeeds again: a full disk must not flood */
    pl->error_logged = true;
    berth_log_kv(BERTH_LOG_ERROR, "payload log: dropping records", "path",
                 pl->path, "failed", pl->error_what ? pl->error_what : "write",
                 "error", strerror(pl->error ? pl->error : EIO), NULL);
  } else if (!failed) {
    pl->error_logged = false;
  }
  pl->error = 0;
  pl->error_what = NULL;
  if (!STAILQ_EMPTY(&pl->waiting))
    kick(pl);
}

static void start_batch(berth_payload_log *pl) {
  if (pl->busy || STAILQ_EMPTY(&pl->waiting))
    return;
  if (pl->timer_armed) {
    uv_timer_stop(&pl->timer);
    pl->timer_armed = false;
  }
  STAILQ_CONCAT(&pl->writing, &pl->waiting); /* writing was empty */
  pl->work.data = pl;
  if (uv_queue_work(pl->loop, &pl->work, write_batch, batch_done) != 0) {
    pl->busy = true; /* batch_done frees and counts them as dropped */
    batch_done(&pl->work, UV_ECANCELED);
    return;
  }
  pl->busy = true;
}

static void on_timer(uv_timer_t *t) {
  berth_payload_log *pl = t->data;
  pl->timer_armed = false;
  start_batch(pl);
}

/* A record was queued: start a batch now, or soon. */
static void kick(berth_payload_log *pl) {
  if (pl->busy)
    return; /* batch_done starts the next one */
  if (pl->closed || pl->held >= BATCH_BYTES) {
    start_batch(pl);
  } else if (!pl->timer_armed) {
    pl->timer_armed = true;
    uv_timer_start(&pl->timer, on_timer, BATCH_DELAY_MS, 0);
  }
}

/* ---- open / close / free ------------------------------------------------ */

int berth_payload_log_open(uv_loop_t *loop, const berth_config *cfg,
                           berth_payload_log **out, berth_errmsg *err) {
  *out = NULL;
  if (cfg->payload_log_path == NULL)
    return BERTH_OK;
  berth_payload_log *pl = calloc(1, sizeof *pl);
  if (pl != NULL) {
    STAILQ_INIT(&pl->waiting);
    STAILQ_INIT(&pl->writing);
  }
  char *path = strdup(cfg->payload_log_path);
  if (pl == NULL || path == NULL) {
    free(pl);
    free(path);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  pl->loop = loop;
  pl->path = path;
  pl->max_bytes = cfg->payload_log_max_bytes;
  pl->backups = cfg->payload_log_backups;
  pl->queue_bytes = cfg->payload_log_queue_bytes;
  pl->fd = open_sink(path, &pl->size);
  if (pl->fd < 0) {
    int e = errno;
    free(path);
    free(pl);
    return berth_errf(err, BERTH_E_IO,
                      "log.payload_log_path: cannot open "
                      "%.300s: %s",
                      cfg->payload_log_path, strerror(e));
  }
  if (uv_random(NULL, NULL, &pl->rng, sizeof pl->rng, 0, NULL) != 0)
    pl->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  uv_timer_init(loop, &pl->timer);
  pl->timer.data = pl;
  *out = pl;
  return BERTH_OK;
}

void berth_payload_log_close(berth_payload_log *pl) {
  if (pl == NULL || pl->closed)
    return;
  pl->closed = true;
  start_batch(pl); /* what waits is written before the loop ends */
  uv_close((uv_handle_t *)&pl->timer, NULL);
}

void berth_payload_log_free(berth_payload_log *pl) {
  if (pl == NULL)
    return;
  STAILQ_CONCAT(&pl->writing, &pl->waiting);
  while (!STAILQ_EMPTY(&pl->writing)) {
    pl_record *r = STAILQ_FIRST(&pl->writing);
    STAILQ_REMOVE_HEAD(&pl->writing, link);
    free(r);
  }
  if (pl->fd >= 0)
    close(pl->fd);
  free(pl->path);
  free(pl);
}

/* ---- records (loop thread) ---------------------------------------------- */

static uint64_t next_random(berth_payload_log *pl) {
  uint64_t z = (pl->rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static bool sampled(berth_payload_log *pl, double rate) {
  if (rate <= 0)
    return false;
  if (rate >= 1)
    return true;
  return (double)(next_random(pl) >> 11) * 0x1.0p-53 < rate;
}

/* ISO 8601 UTC with microseconds of a monotonic time, through the wall
 * clock now. */
static void wall_text(uint64_t mono_ns, uint64_t now_mono, char *out,
                      size_t cap) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t wall = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  uint64_t ago = now_mono > mono_ns ? now_mono - mono_ns : 0;
  if (ago < wall)
    wall -= ago;
  time_t sec = (time_t)(wall / 1000000000ull);
  struct tm tm;
  gmtime_r(&sec, &tm);
  size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, cap - n, ".%06uZ", (unsigned)(wall % 1000000000ull / 1000));
}

/* A BYTES tensor whose elements are not all UTF-8: each element base64. */
static int tensor_base64(berth_buf *b, const berth_tensor *t) {
  int rc = berth_buf_append(b, "{\"name\":", 8);
  if (rc == BERTH_OK)
    rc = berth_json_append_string(b, t->name, strlen(t->name));
  if (rc == BERTH_OK)
    rc = berth_buf_append(b,
                          ",\"datatype\":\"BYTES\",\"encoding\":\"base64\","
                          "\"shape\":[",
                          49);
  for (uint32_t d = 0; d < t->ndim && rc == BERTH_OK; d++)
    rc = berth_buf_printf(b, "%s%" PRId64, d > 0 ? "," : "", t->shape[d]);
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, "],\"data\":[", 10);
  size_t off = 0;
  for (size_t i = 0; rc == BERTH_OK && off + 4 <= t->nbytes; i++) {
    const uint8_t *p = t->data + off;
    size_t len = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 |
                 (size_t)p[3] << 24; /* checked by berth_tensor_check */
    off += 4;
    if (len > t->nbytes - off || len > INT32_MAX / 2)
      break;
    size_t enc = 4 * ((len + 2) / 3);
    char *dst = berth_buf_reserve(b, enc + 4);
    if (dst == NULL)
      return BERTH_E_TOO_LARGE;
    size_t k = 0;
    if (i > 0)
      dst[k++] = ',';
    dst[k++] = '"';
    k += (size_t)EVP_EncodeBlock((unsigned char *)dst + k, p + 4, (int)len);
    dst[k++] = '"';
    berth_buf_commit(b, k);
    off += len;
  }
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, "]}", 2);
  return rc;
}

static int tensors(berth_buf *b, const char *key, const berth_tensor *t,
                   size_t n) {
  int rc = berth_buf_printf(b, ",\"%s\":[", key);
  for (size_t i = 0; i < n && rc == BERTH_OK; i++) {
    if (i > 0)
      rc = berth_buf_append(b, ",", 1);
    size_t mark = b->len;
    berth_errmsg err;
    if (rc == BERTH_OK)
      rc = berth_json_append_tensor(b, &t[i], &err);
    if (rc == BERTH_E_UNSUPPORTED) { /* BYTES that are not text */
      b->len = mark;
      b->data[mark] = '\0';
      rc = tensor_base64(b, &t[i]);
    }
  }
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, "]", 1);
  return rc;
}

static int encode(berth_buf *b, const berth_job *j, int status,
                  const char *errmsg, const berth_infer_response *resp) {
  const berth_model *m = j->model;
  uint64_t now = uv_hrtime();
  char st[32];
  snprintf(st, sizeof st, "%s",
           status == BERTH_OK ? "ok" : berth_status_name(status));
  for (char *c = st; *c; c++)
    *c = (char)tolower((unsigned char)*c);
  char received[48], answered[48];
  wall_text(j->received_ns, now, received, sizeof received);
  wall_text(now, now, answered, sizeof answered);
  int rc = berth_buf_printf(b,
                            "{\"received\":\"%s\",\"answered\":\"%s\","
                            "\"request_id\":",
                            received, answered);
  const char *rid = j->request_id;
  if (rc == BERTH_OK)
    rc = rid != NULL ? berth_json_append_string(b, rid, strlen(rid))
                     : berth_buf_append(b, "null", 4);
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, ",\"id\":", 6);
  if (rc == BERTH_OK)
    rc = j->req.id != NULL
             ? berth_json_append_string(b, j->req.id, strlen(j->req.id))
             : berth_buf_append(b, "null", 4);
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, ",\"model\":", 9);
  if (rc == BERTH_OK)
    rc = berth_json_append_string(b, m->cfg->name, strlen(m->cfg->name));
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, ",\"version\":", 11);
  if (rc == BERTH_OK)
    rc = berth_json_append_string(b, m->cfg->version, strlen(m->cfg->version));
  if (rc == BERTH_OK)
    rc = berth_buf_printf(
        b, ",\"protocol\":\"%s\",\"latency_ms\":%.3f,\"status\":\"%s\"",
        j->protocol == BERTH_PROTO_GRPC ? "grpc" : "rest",
        (double)(now > j->received_ns ? now - j->received_ns : 0) / 1e6, st);
  if (rc == BERTH_OK && status != BERTH_OK) {
    rc = berth_buf_append(b, ",\"error\":", 9);
    if (rc == BERTH_OK)
      rc = berth_json_append_string(b, errmsg ? errmsg : "",
                                    errmsg ? strlen(errmsg) : 0);
  }
  if (rc == BERTH_OK)
    rc = tensors(b, "inputs", j->req.inputs, j->req.n_inputs);
  if (rc == BERTH_OK && resp != NULL)
    rc = tensors(b, "outputs", resp->outputs, resp->n_outputs);
  if (rc == BERTH_OK)
    rc = berth_buf_append(b, "}\n", 2);
  return rc;
}

void berth_payload_log_answer(berth_payload_log *pl, const berth_job *job,
                              int status, const char *errmsg,
                              const berth_infer_response *resp) {
  if (pl == NULL || job->model == NULL ||
      !sampled(pl, job->model->cfg->payload_log_rate))
    return;
  berth_model *m = job->model;
  uint64_t room = pl->queue_bytes > pl->held ? pl->queue_bytes - pl->held : 0;
  if (room < 256) { /* the sink is behind: drop without encoding */
    m->metrics.payload_dropped++;
    return;
  }
  berth_buf b;
  berth_buf_init(&b, (size_t)room + REC_HDR);
  /* the record header goes first so that the line needs no copy */
  char *hdr = berth_buf_reserve(&b, REC_HDR);
  int rc = hdr != NULL ? BERTH_OK : BERTH_E_TOO_LARGE;
  if (rc == BERTH_OK) {
    berth_buf_commit(&b, REC_HDR);
    rc = encode(&b, job, status, errmsg, resp);
  }
  if (rc != BERTH_OK) {
    berth_buf_free(&b);
    m->metrics.payload_dropped++;
    return;
  }
  size_t total = 0;
  pl_record *r = (pl_record *)berth_buf_detach(&b, &total);
  r->model = m;
  r->failed = false;
  r->len = total - REC_HDR;
  pl->held += r->len;
  STAILQ_INSERT_TAIL(&pl->waiting, r, link);
  kick(pl);
}

/* ---- the module ------------------------------------------------------------ */

static void on_answered(void *ctx, berth_job *j, int status, const char *msg,
                        const berth_infer_response *resp, uint64_t took_ns) {
  (void)took_ns;
  berth_engine *e = ctx;
  berth_payload_log_answer(e->payload_log, j, status, msg, resp);
}

static int pl_init(berth_engine *e, berth_errmsg *err) {
  if (e->cfg.payload_log_path == NULL)
    return BERTH_OK; /* off: no hook on the request path */
  berth_observer o = {.ctx = e, .answered = on_answered};
  return berth_engine_observe(e, &o, err);
}

static int pl_start(berth_engine *e, berth_errmsg *err) {
  return berth_payload_log_open(e->loop, &e->cfg, &e->payload_log, err);
}

static void pl_close(berth_engine *e) {
  berth_payload_log_close(e->payload_log);
}

static void pl_free(berth_engine *e) {
  berth_payload_log_free(e->payload_log);
  e->payload_log = NULL;
}

const berth_module berth_payload_log_module = {.name = "payload_log",
                                               .init = pl_init,
                                               .start = pl_start,
                                               .close = pl_close,
                                               .free = pl_free};
