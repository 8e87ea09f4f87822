/* Berth engine: log lines on stderr, as JSON lines or readable text.
 *
 * One process-wide sink, set once at start by main.c before the loop runs
 * (the loop is single-threaded; nothing here locks). Every line carries
 * "ts" (UTC, milliseconds), "level" and "msg"; the fields given with it
 * follow (docs/logging.md). */
#ifndef BERTH_LOG_H
#define BERTH_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  BERTH_LOG_DEBUG = 0,
  BERTH_LOG_INFO = 1,
  BERTH_LOG_WARNING = 2,
  BERTH_LOG_ERROR = 3,
} berth_log_level;

/* level: "debug" | "info" | "warning" | "error"; json: JSON lines when true.
 * Unknown level names leave the level unchanged and return -1. */
int berth_log_setup(const char *level, bool json);
bool berth_log_enabled(berth_log_level level);
/* "debug", "info", ... */
const char *berth_log_level_name(berth_log_level level);
/* The level named by the len bytes at s ("warn" and "critical" are taken as
 * warning and error, case-insensitively); -1 when none. */
int berth_log_level_parse(const char *s, size_t len);
/* Whether format ("json", "text", "auto"; NULL = "json") means JSON lines
 * on this process's stderr: auto is text on a terminal, else JSON. */
bool berth_log_format_is_json(const char *format);

/* Writes one line: time, level, message. In JSON the message goes into
 * "msg"; fields given as "key", value string pairs (NULL-terminated list)
 * become members: berth_log_kv(BERTH_LOG_INFO, "model ready", "model",
 * "iris", "version", "1", NULL). */
void berth_log_kv(berth_log_level level, const char *msg, ...);
/* printf-style message with no extra fields. */
void berth_logf(berth_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Typed fields, for lines whose values are numbers (access log, worker
 * output). Strings are pointer and length (s NULL: JSON null); keys are
 * NUL-terminated and must not need escaping. */
typedef enum {
  BERTH_LF_STR = 0,
  BERTH_LF_INT,
  BERTH_LF_NUM,
  BERTH_LF_BOOL,
} berth_log_field_kind;

typedef struct berth_log_field {
  const char *key;
  berth_log_field_kind kind;
  const char *s; /* BERTH_LF_STR */
  size_t len;
  int64_t i; /* BERTH_LF_INT, BERTH_LF_BOOL */
  double d;  /* BERTH_LF_NUM (written with 3 decimals) */
} berth_log_field;

#define BERTH_LOG_STR(k, v)                                                    \
  ((berth_log_field){.key = (k),                                               \
                     .kind = BERTH_LF_STR,                                     \
                     .s = (v),                                                 \
                     .len = (v) != NULL ? strlen(v) : 0})
#define BERTH_LOG_STRN(k, v, n)                                                \
  ((berth_log_field){.key = (k), .kind = BERTH_LF_STR, .s = (v), .len = (n)})
#define BERTH_LOG_INT(k, v)                                                    \
  ((berth_log_field){.key = (k), .kind = BERTH_LF_INT, .i = (int64_t)(v)})
#define BERTH_LOG_NUM(k, v)                                                    \
  ((berth_log_field){.key = (k), .kind = BERTH_LF_NUM, .d = (double)(v)})
#define BERTH_LOG_BOOL(k, v)                                                   \
  ((berth_log_field){.key = (k), .kind = BERTH_LF_BOOL, .i = (v) ? 1 : 0})

/* One line with msg (msg_len bytes, need not be NUL-terminated) and n
 * fields; a field whose kind is BERTH_LF_STR with s NULL is left out of
 * text lines. Checks the level itself. */
void berth_log_fields(berth_log_level level, const char *msg, size_t msg_len,
                      const berth_log_field *fields, size_t n);

#endif
