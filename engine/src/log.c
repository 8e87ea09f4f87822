/* Berth engine: log lines (see log.h). Each line is formatted into one
 * buffer and written with one write(2), so lines from the engine never
 * interleave with each other mid-line. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "codec_json.h"

static berth_log_level g_level = BERTH_LOG_INFO;
static bool g_json = true;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

int berth_log_setup(const char *level, bool json) {
  g_json = json;
  for (int i = 0; i < 4; i++) {
    if (level != NULL && strcmp(level, level_names[i]) == 0) {
      g_level = (berth_log_level)i;
      return 0;
    }
  }
  return level == NULL ? 0 : -1;
}

bool berth_log_enabled(berth_log_level level) { return level >= g_level; }

static void format_time(char *out, size_t cap) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

static void emit(berth_log_level level, const char *msg, va_list *kv) {
  char ts[40];
  format_time(ts, sizeof ts);
  berth_buf b;
  berth_buf_init(&b, 64 * 1024);
  if (g_json) {
    berth_buf_printf(&b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts,
                     level_names[level]);
    berth_json_append_string(&b, msg, strlen(msg));
    if (kv != NULL) {
      const char *k;
      while ((k = va_arg(*kv, const char *)) != NULL) {
        const char *v = va_arg(*kv, const char *);
        berth_buf_append(&b, ",", 1);
        berth_json_append_string(&b, k, strlen(k));
        berth_buf_append(&b, ":", 1);
        if (v == NULL)
          berth_buf_append(&b, "null", 4);
        else
          berth_json_append_string(&b, v, strlen(v));
      }
    }
    berth_buf_append(&b, "}\n", 2);
  } else {
    berth_buf_printf(&b, "%s %-7s berthd: %s", ts, level_names[level], msg);
    if (kv != NULL) {
      const char *k;
      while ((k = va_arg(*kv, const char *)) != NULL) {
        const char *v = va_arg(*kv, const char *);
        berth_buf_printf(&b, " %s=%s", k, v != NULL ? v : "-");
      }
    }
    berth_buf_append(&b, "\n", 1);
  }
  if (b.data != NULL) {
    size_t off = 0;
    while (off < b.len) {
      ssize_t w = write(STDERR_FILENO, b.data + off, b.len - off);
      if (w <= 0)
        break;
      off += (size_t)w;
    }
  }
  berth_buf_free(&b);
}

void berth_log_kv(berth_log_level level, const char *msg, ...) {
  if (!berth_log_enabled(level))
    return;
  va_list ap;
  va_start(ap, msg);
  emit(level, msg, &ap);
  va_end(ap);
}

void berth_logf(berth_log_level level, const char *fmt, ...) {
  if (!berth_log_enabled(level))
    return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  emit(level, msg, NULL);
}
