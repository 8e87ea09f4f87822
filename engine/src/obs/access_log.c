/* Berth engine: request ids and access log lines (see access_log.h). */
#include "access_log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"

bool berth_request_id_take(const char *s, size_t len,
                           char out[BERTH_REQUEST_ID_MAX + 1]) {
  if (s == NULL || len == 0 || len > BERTH_REQUEST_ID_MAX)
    return false;
  for (size_t i = 0; i < len; i++)
    if (s[i] < '!' || s[i] > '~')
      return false;
  memcpy(out, s, len);
  out[len] = '\0';
  return true;
}

/* splitmix64: fast, and good enough for ids that need to be unique, not
 * secret. Seeded once from the kernel (time and pid if that fails). */
static uint64_t g_state;
static bool g_seeded;

static uint64_t next64(void) {
  if (!g_seeded) {
    if (uv_random(NULL, NULL, &g_state, sizeof g_state, 0, NULL) != 0)
      g_state =
          (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
    g_seeded = true;
  }
  uint64_t z = (g_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void berth_request_id_new(char out[BERTH_REQUEST_ID_MAX + 1]) {
  /* 32 hex digits (two 64-bit draws), written by hand: snprintf was ~1.5 %
   * of berthd's time on small requests */
  static const char hex[] = "0123456789abcdef";
  uint64_t v[2] = {next64(), next64()};
  for (int k = 0; k < 2; k++)
    for (int i = 0; i < 16; i++)
      out[k * 16 + i] = hex[(v[k] >> (60 - 4 * i)) & 0xf];
  out[32] = '\0';
}

void berth_access_log(const berth_access_record *r) {
  berth_log_field f[12];
  size_t n = 0;
  f[n++] = BERTH_LOG_STR("request_id", r->request_id);
  f[n++] = BERTH_LOG_STR("protocol", r->protocol);
  f[n++] = BERTH_LOG_STRN("method", r->method, r->method_len);
  if (r->path != NULL)
    f[n++] = BERTH_LOG_STRN("path", r->path, r->path_len);
  f[n++] = BERTH_LOG_STR("model", r->model);
  f[n++] = BERTH_LOG_STR("version", r->version);
  f[n++] = BERTH_LOG_INT("status", r->status);
  f[n++] = BERTH_LOG_NUM("latency_ms", r->latency_ms);
  f[n++] = BERTH_LOG_INT("bytes_in", r->bytes_in);
  f[n++] = BERTH_LOG_INT("bytes_out", r->bytes_out);
  f[n++] = BERTH_LOG_STR("peer", r->peer);
  berth_log_fields(BERTH_LOG_INFO, "access", 6, f, n);
}
