/* Berth engine: a worker process's stdout and stderr, forwarded to the
 * engine's log line by line with the worker's identity (docs/logging.md,
 * "Worker output").
 *
 * The line splitter is pure (bytes in, lines out through a callback) so it
 * is unit-tested without processes. The reader owns one uv_pipe_t that the
 * supervisor hands to uv_spawn as the child's stdout or stderr; it reads
 * continuously (a worker that prints a lot never blocks on a full pipe)
 * and holds at most one line (max_line bytes) per stream. */
#ifndef BERTH_WORKER_OUTPUT_H
#define BERTH_WORKER_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "berth/error.h"

/* Longest forwarded line; longer ones are cut there and marked
 * "truncated", and the rest up to the next newline is dropped. */
#define BERTH_WORKER_LINE_MAX 16384

/* One complete line (without its "\n" or "\r\n"); cut: the line was
 * longer than max_line and these are its first max_line bytes. */
typedef void (*berth_line_cb)(void *arg, const char *line, size_t len,
                              bool cut);

typedef struct berth_line_splitter {
  char *buf;  /* owned, max_line bytes */
  size_t len; /* bytes of the current line held */
  size_t max_line;
  bool skipping; /* the current line was emitted cut: drop to '\n' */
} berth_line_splitter;

/* BERTH_E_NOMEM or BERTH_OK. */
int berth_line_splitter_init(berth_line_splitter *s, size_t max_line);
/* Calls cb for every line completed by data. */
void berth_line_splitter_feed(berth_line_splitter *s, const char *data,
                              size_t len, berth_line_cb cb, void *arg);
/* Emits the unfinished line, if any (end of stream). */
void berth_line_splitter_flush(berth_line_splitter *s, berth_line_cb cb,
                               void *arg);
void berth_line_splitter_free(berth_line_splitter *s);

/* One forwarded stream of one worker incarnation. */
typedef struct berth_worker_output {
  uv_pipe_t pipe; /* pipe.data = this */
  berth_line_splitter lines;
  const char *stream;  /* "stdout" or "stderr" (static) */
  const char *model;   /* borrowed: outlives the incarnation */
  const char *version; /* borrowed */
  unsigned instance;
  int pid;
  bool reading;
  bool closing;
  void (*closed)(void *owner);
  void *owner;
} berth_worker_output;

/* Initialises the pipe handle (to be given to uv_spawn with
 * UV_CREATE_PIPE | UV_WRITABLE_PIPE) and the splitter. closed(owner) runs
 * once, when the handle has closed after berth_worker_output_close. On
 * failure (out of memory) the handle is still initialised and must be
 * closed the same way. */
int berth_worker_output_init(berth_worker_output *o, uv_loop_t *loop,
                             const char *stream, void (*closed)(void *),
                             void *owner);
/* Starts forwarding, once the process runs (identity for the lines). */
void berth_worker_output_start(berth_worker_output *o, const char *model,
                               const char *version, unsigned instance, int pid);
/* The process has exited (or never started): reads what it left in the
 * pipe (bounded), logs the unfinished line, and closes the handle.
 * Idempotent. */
void berth_worker_output_close(berth_worker_output *o);

#endif
