/* Berth engine: log lines on stderr, as JSON lines or readable text.
 *
 * One process-wide sink, set once at start by main.c before the loop runs
 * (the loop is single-threaded; nothing here locks). */
#ifndef BERTH_LOG_H
#define BERTH_LOG_H

#include <stdbool.h>

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

/* Writes one line: time, level, message. In JSON the message goes into
 * "msg"; fields given as "key", value string pairs (NULL-terminated list)
 * become members: berth_log_kv(BERTH_LOG_INFO, "model ready", "model",
 * "iris", "version", "1", NULL). */
void berth_log_kv(berth_log_level level, const char *msg, ...);
/* printf-style message with no extra fields. */
void berth_logf(berth_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
