/* Berth engine: worker stdout/stderr forwarding (see worker_output.h). */
#include "worker_output.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "berth/error.h"
#include "log.h"

/* What a dead worker may still have in its pipe that is read at close. */
#define DRAIN_MAX ((size_t)1 << 20)

/* ---- line splitter ------------------------------------------------------ */

int berth_line_splitter_init(berth_line_splitter *s, size_t max_line) {
  memset(s, 0, sizeof *s);
  s->max_line = max_line > 0 ? max_line : 1;
  s->buf = malloc(s->max_line);
  return s->buf != NULL ? BERTH_OK : BERTH_E_NOMEM;
}

void berth_line_splitter_free(berth_line_splitter *s) {
  free(s->buf);
  memset(s, 0, sizeof *s);
}

static void emit(berth_line_splitter *s, const char *p, size_t n, bool cut,
                 berth_line_cb cb, void *arg) {
  if (!cut && n > 0 && p[n - 1] == '\r')
    n--;
  cb(arg, p, n, cut);
}

void berth_line_splitter_feed(berth_line_splitter *s, const char *data,
                              size_t len, berth_line_cb cb, void *arg) {
  if (s->buf == NULL)
    return;
  while (len > 0) {
    const char *nl = memchr(data, '\n', len);
    size_t take = nl != NULL ? (size_t)(nl - data) : len;
    if (s->skipping) {
      /* the rest of a line already emitted cut */
    } else if (s->len == 0 && nl != NULL && take <= s->max_line) {
      emit(s, data, take, false, cb, arg); /* whole line in data: no copy */
    } else {
      size_t room = s->max_line - s->len;
      size_t copy = take < room ? take : room;
      memcpy(s->buf + s->len, data, copy);
      s->len += copy;
      if (take > copy) { /* more than max_line bytes before a newline */
        emit(s, s->buf, s->len, true, cb, arg);
        s->len = 0;
        s->skipping = true;
      } else if (nl != NULL) {
        emit(s, s->buf, s->len, false, cb, arg);
        s->len = 0;
      }
    }
    if (nl == NULL)
      return;
    s->skipping = false;
    data = nl + 1;
    len -= take + 1;
  }
}

void berth_line_splitter_flush(berth_line_splitter *s, berth_line_cb cb,
                               void *arg) {
  if (s->len > 0)
    emit(s, s->buf, s->len, false, cb, arg);
  s->len = 0;
  s->skipping = false;
}

/* ---- forwarding --------------------------------------------------------- */

static void log_line(void *arg, const char *line, size_t len, bool cut) {
  berth_worker_output *o = arg;
  berth_log_level level = BERTH_LOG_INFO;
  const char *msg = line, *exc = NULL;
  size_t msg_len = len, exc_len = 0;
  json_t *doc = NULL;
  /* The Python worker's own log records are JSON lines (the supervisor
   * sets BERTH_LOG_FORMAT=json): keep their level and message. */
  if (!cut && len > 2 && line[0] == '{') {
    doc = json_loadb(line, len, 0, NULL);
    json_t *m = json_object_get(doc, "msg");
    if (json_is_string(m)) {
      msg = json_string_value(m);
      msg_len = json_string_length(m);
      json_t *lv = json_object_get(doc, "level");
      int l = json_is_string(lv) ? berth_log_level_parse(json_string_value(lv),
                                                         json_string_length(lv))
                                 : -1;
      if (l >= 0)
        level = (berth_log_level)l;
      json_t *x = json_object_get(doc, "exc");
      if (json_is_string(x)) {
        exc = json_string_value(x);
        exc_len = json_string_length(x);
      }
    }
  }
  if (berth_log_enabled(level)) {
    berth_log_field f[9];
    size_t n = 0;
    f[n++] = BERTH_LOG_STR("source", "worker");
    f[n++] = BERTH_LOG_STR("model", o->model);
    f[n++] = BERTH_LOG_STR("version", o->version);
    f[n++] = BERTH_LOG_INT("instance", o->instance);
    f[n++] = BERTH_LOG_INT("pid", o->pid);
    f[n++] = BERTH_LOG_STR("stream", o->stream);
    if (cut)
      f[n++] = BERTH_LOG_BOOL("truncated", true);
    if (exc != NULL)
      f[n++] = BERTH_LOG_STRN("exc", exc, exc_len);
    berth_log_fields(level, msg, msg_len, f, n);
  }
  json_decref(doc);
}

/* Reads go through one buffer: the loop runs one read callback at a time
 * and each consumes its bytes before returning. */
static char g_read_buf[65536];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(g_read_buf, sizeof g_read_buf);
}

static void on_handle_closed(uv_handle_t *h) {
  berth_worker_output *o = h->data;
  berth_line_splitter_free(&o->lines);
  if (o->closed != NULL)
    o->closed(o->owner);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  berth_worker_output *o = s->data;
  if (nread > 0) {
    berth_line_splitter_feed(&o->lines, buf->base, (size_t)nread, log_line, o);
    return;
  }
  if (nread < 0) /* EOF or error: the worker closed it */
    berth_worker_output_close(o);
}

int berth_worker_output_init(berth_worker_output *o, uv_loop_t *loop,
                             const char *stream, void (*closed)(void *),
                             void *owner) {
  memset(o, 0, sizeof *o);
  o->stream = stream;
  o->closed = closed;
  o->owner = owner;
  uv_pipe_init(loop, &o->pipe, 0);
  o->pipe.data = o;
  return berth_line_splitter_init(&o->lines, BERTH_WORKER_LINE_MAX);
}

void berth_worker_output_start(berth_worker_output *o, const char *model,
                               const char *version, unsigned instance,
                               int pid) {
  o->model = model;
  o->version = version;
  o->instance = instance;
  o->pid = pid;
  if (uv_read_start((uv_stream_t *)&o->pipe, on_alloc, on_read) == 0)
    o->reading = true;
}

void berth_worker_output_close(berth_worker_output *o) {
  if (o->closing)
    return;
  o->closing = true;
  if (o->reading) {
    uv_read_stop((uv_stream_t *)&o->pipe);
    /* What the worker wrote before it died is in the pipe already; a
     * descendant that keeps writing is cut off at DRAIN_MAX. */
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&o->pipe, &fd) == 0) {
      size_t total = 0;
      while (total < DRAIN_MAX) {
        ssize_t n = read(fd, g_read_buf, sizeof g_read_buf);
        if (n < 0 && errno == EINTR)
          continue;
        if (n <= 0)
          break;
        total += (size_t)n;
        berth_line_splitter_feed(&o->lines, g_read_buf, (size_t)n, log_line, o);
      }
    }
    berth_line_splitter_flush(&o->lines, log_line, o);
  }
  uv_close((uv_handle_t *)&o->pipe, on_handle_closed);
}
