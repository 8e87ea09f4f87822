/* Berth engine: log lines (see log.h). Each line is formatted into one
 * buffer and written with one write(2), so lines from the engine never
 * interleave with each other mid-line. */
#include "log.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "text.h"

/* A line longer than this is cut (worker output is bounded before it gets
 * here; this is the last guard). */
#define LOG_LINE_MAX (256 * 1024)

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

const char *berth_log_level_name(berth_log_level level) {
  return level_names[(unsigned)level < 4 ? level : BERTH_LOG_INFO];
}

int berth_log_level_parse(const char *s, size_t len) {
  static const struct {
    const char *name;
    berth_log_level level;
  } names[] = {{"debug", BERTH_LOG_DEBUG},     {"info", BERTH_LOG_INFO},
               {"warning", BERTH_LOG_WARNING}, {"warn", BERTH_LOG_WARNING},
               {"error", BERTH_LOG_ERROR},     {"critical", BERTH_LOG_ERROR},
               {"fatal", BERTH_LOG_ERROR}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i].name) == len && strncasecmp(names[i].name, s, len) == 0)
      return (int)names[i].level;
  return -1;
}

bool berth_log_format_is_json(const char *format) {
  if (format == NULL || strcmp(format, "json") == 0)
    return true;
  if (strcmp(format, "text") == 0)
    return false;
  return !isatty(STDERR_FILENO); /* auto */
}

static void format_time(char *out, size_t cap) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

static void write_line(berth_buf *b) {
  if (b->data == NULL)
    return;
  size_t off = 0;
  while (off < b->len) {
    ssize_t w = write(STDERR_FILENO, b->data + off, b->len - off);
    if (w <= 0)
      break;
    off += (size_t)w;
  }
}

static void begin_line(berth_buf *b, berth_log_level level, const char *msg,
                       size_t msg_len) {
  char ts[40];
  format_time(ts, sizeof ts);
  if (g_json) {
    berth_buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts,
                     level_names[level]);
    berth_json_append_string(b, msg, msg_len);
  } else {
    berth_buf_printf(b, "%s %-7s berthd: %.*s", ts, level_names[level],
                     (int)msg_len, msg);
  }
}

static void end_line(berth_buf *b) {
  if (g_json)
    berth_buf_append(b, "}\n", 2);
  else
    berth_buf_append(b, "\n", 1);
}

/* Text values are written bare unless they would be ambiguous. */
static void text_value(berth_buf *b, const char *s, size_t len) {
  bool plain = len > 0;
  for (size_t i = 0; i < len && plain; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == '"' || c == '=' || c >= 0x7f)
      plain = false;
  }
  if (plain)
    berth_buf_append(b, s, len);
  else
    berth_json_append_string(b, s, len);
}

static void emit(berth_log_level level, const char *msg, va_list *kv) {
  berth_buf b;
  berth_buf_init(&b, LOG_LINE_MAX);
  begin_line(&b, level, msg, strlen(msg));
  if (kv != NULL) {
    const char *k;
    while ((k = va_arg(*kv, const char *)) != NULL) {
      const char *v = va_arg(*kv, const char *);
      if (g_json) {
        berth_buf_append(&b, ",", 1);
        berth_json_append_string(&b, k, strlen(k));
        berth_buf_append(&b, ":", 1);
        if (v == NULL)
          berth_buf_append(&b, "null", 4);
        else
          berth_json_append_string(&b, v, strlen(v));
      } else {
        berth_buf_printf(&b, " %s=%s", k, v != NULL ? v : "-");
      }
    }
  }
  end_line(&b);
  write_line(&b);
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

void berth_log_fields(berth_log_level level, const char *msg, size_t msg_len,
                      const berth_log_field *f, size_t n) {
  if (!berth_log_enabled(level))
    return;
  berth_buf b;
  berth_buf_init(&b, LOG_LINE_MAX);
  begin_line(&b, level, msg, msg_len);
  for (size_t i = 0; i < n; i++) {
    if (!g_json && f[i].kind == BERTH_LF_STR && f[i].s == NULL)
      continue;
    if (g_json)
      berth_buf_printf(&b, ",\"%s\":", f[i].key);
    else
      berth_buf_printf(&b, " %s=", f[i].key);
    switch (f[i].kind) {
    case BERTH_LF_STR:
      if (f[i].s == NULL)
        berth_buf_append(&b, "null", 4);
      else if (g_json)
        berth_json_append_string(&b, f[i].s, f[i].len);
      else
        text_value(&b, f[i].s, f[i].len);
      break;
    case BERTH_LF_INT:
      berth_buf_printf(&b, "%" PRId64, f[i].i);
      break;
    case BERTH_LF_NUM:
      if (isfinite(f[i].d))
        berth_buf_printf(&b, "%.3f", f[i].d);
      else
        berth_buf_append(&b, "null", 4);
      break;
    case BERTH_LF_BOOL:
      berth_buf_append(&b, f[i].i ? "true" : "false", f[i].i ? 4 : 5);
      break;
    }
  }
  end_line(&b);
  write_line(&b);
  berth_buf_free(&b);
}
