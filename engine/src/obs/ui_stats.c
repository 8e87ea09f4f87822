/* Berth engine: the dashboard's timeline, quantiles and recent errors (see
 * ui_stats.h). */
#include "ui_stats.h"

#include <math.h>
#include <string.h>

/* ---- the timeline ---------------------------------------------------- */

size_t berth_ui_timeline_advance(berth_ui_timeline *tl, uint64_t now_ms) {
  size_t slot = tl->next;
  tl->t_ms[slot] = now_ms;
  tl->next = (slot + 1) % BERTH_UI_SAMPLES;
  if (tl->n < BERTH_UI_SAMPLES)
    tl->n++;
  return slot;
}

size_t berth_ui_timeline_slot(const berth_ui_timeline *tl, size_t i) {
  size_t oldest = tl->n < BERTH_UI_SAMPLES ? 0 : tl->next;
  return (oldest + i) % BERTH_UI_SAMPLES;
}

/* ---- quantiles ---------------------------------------------------------- */

double berth_ui_quantile(const double *bounds, size_t n_bounds,
                         const uint64_t *counts, double q) {
  uint64_t total = 0;
  for (size_t i = 0; i <= n_bounds; i++)
    total += counts[i];
  if (total == 0 || isnan(q))
    return NAN;
  if (q < 0)
    q = 0;
  if (q > 1)
    q = 1;
  double rank = q * (double)total;
  uint64_t below = 0;
  for (size_t i = 0; i <= n_bounds; i++) {
    uint64_t here = counts[i];
    if (here > 0 && (double)(below + here) >= rank) {
      if (i == n_bounds) /* +Inf: the last finite bound is all we know */
        return n_bounds > 0 ? bounds[n_bounds - 1] : NAN;
      double lo = i == 0 ? 0 : bounds[i - 1];
      double hi = bounds[i];
      if (i == 0 && hi <= 0)
        return hi;
      return lo + (hi - lo) * ((rank - (double)below) / (double)here);
    }
    below += here;
  }
  return n_bounds > 0 ? bounds[n_bounds - 1] : NAN;
}

/* ---- histories ----------------------------------------------------------- */

void berth_ui_history_init(berth_ui_history *h) {
  memset(h, 0, sizeof *h);
  for (int s = 0; s < BERTH_UI_SERIES; s++)
    for (size_t k = 0; k < BERTH_UI_SAMPLES; k++)
      h->v[s][k] = NAN;
}

void berth_ui_history_skip(berth_ui_history *h, size_t slot) {
  for (int s = 0; s < BERTH_UI_SERIES; s++)
    h->v[s][slot % BERTH_UI_SAMPLES] = NAN;
}

static float per_second(uint64_t now, uint64_t before, double dt_s) {
  if (now < before || !(dt_s > 0))
    return NAN;
  return (float)((double)(now - before) / dt_s);
}

void berth_ui_history_record(berth_ui_history *h, size_t slot,
                             const berth_ui_reading *r, double dt_s) {
  slot %= BERTH_UI_SAMPLES;
  berth_ui_history_skip(h, slot);
  h->v[BERTH_UI_QUEUE][slot] = (float)r->queue_depth;
  if (h->past_n > 0) {
    const berth_ui_reading *prev =
        &h->past[(h->past_next + BERTH_UI_LATENCY_WINDOW - 1) %
                 BERTH_UI_LATENCY_WINDOW];
    const berth_ui_reading *oldest =
        &h->past[h->past_n < BERTH_UI_LATENCY_WINDOW ? 0 : h->past_next];
    h->v[BERTH_UI_RATE][slot] = per_second(r->requests, prev->requests, dt_s);
    h->v[BERTH_UI_ERROR_RATE][slot] = per_second(r->errors, prev->errors, dt_s);
    if (r->batches > prev->batches && r->batch_rows >= prev->batch_rows)
      h->v[BERTH_UI_BATCH][slot] =
          (float)((r->batch_rows - prev->batch_rows) /
                  (double)(r->batches - prev->batches));
    uint64_t delta[BERTH_HIST_MAX_BOUNDS + 1];
    size_t nb = r->n_bounds > BERTH_HIST_MAX_BOUNDS ? BERTH_HIST_MAX_BOUNDS
                                                    : r->n_bounds;
    bool ok = oldest->n_bounds == nb && oldest->bounds == r->bounds;
    for (size_t i = 0; ok && i <= nb; i++) {
      ok = r->latency[i] >= oldest->latency[i];
      delta[i] = ok ? r->latency[i] - oldest->latency[i] : 0;
    }
    if (ok) {
      h->v[BERTH_UI_P50_MS][slot] =
          (float)(berth_ui_quantile(r->bounds, nb, delta, 0.50) * 1000.0);
      h->v[BERTH_UI_P99_MS][slot] =
          (float)(berth_ui_quantile(r->bounds, nb, delta, 0.99) * 1000.0);
    }
  }
  h->past[h->past_next] = *r;
  h->past_next = (h->past_next + 1) % BERTH_UI_LATENCY_WINDOW;
  if (h->past_n < BERTH_UI_LATENCY_WINDOW)
    h->past_n++;
}

/* ---- text ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one
 * (bad lead byte, missing or bad continuation, overlong, surrogate, or
 * beyond U+10FFFF). s is NUL-terminated, so a cut sequence stops at the
 * NUL, which is no continuation byte. */
static size_t utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  if (c < 0x80)
    return 1;
  size_t n;
  unsigned cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

size_t berth_ui_copy_text(char *dst, size_t cap, const char *src) {
  if (cap == 0)
    return 0;
  const unsigned char *s = (const unsigned char *)(src ? src : "");
  size_t out = 0;
  while (*s != '\0') {
    size_t n = utf8_len(s);
    bool bad = n == 0 || (n == 1 && (*s < 0x20 || *s == 0x7F));
    size_t take = bad ? 1 : n;
    if (out + take >= cap)
      break;
    if (bad)
      dst[out] = '?';
    else
      memcpy(dst + out, s, n);
    out += take;
    s += bad ? 1 : n;
  }
  dst[out] = '\0';
  return out;
}

/* ---- recent errors ------------------------------------------------------- */

const berth_ui_error *berth_ui_errors_get(const berth_ui_errors *r, size_t i) {
  if (i >= r->n)
    return NULL;
  return &r->e[(r->next + BERTH_UI_MAX_ERRORS - 1 - i) % BERTH_UI_MAX_ERRORS];
}

void berth_ui_errors_add(berth_ui_errors *r, uint64_t now_ms, const char *model,
                         const char *version, berth_protocol protocol,
                         int status, const char *message) {
  berth_ui_error probe;
  berth_ui_copy_text(probe.model, sizeof probe.model, model);
  berth_ui_copy_text(probe.version, sizeof probe.version, version);
  berth_ui_copy_text(probe.message, sizeof probe.message, message);
  r->total++;
  berth_ui_error *last = (berth_ui_error *)berth_ui_errors_get(r, 0);
  if (last != NULL && last->status == status && last->protocol == protocol &&
      strcmp(last->model, probe.model) == 0 &&
      strcmp(last->version, probe.version) == 0 &&
      strcmp(last->message, probe.message) == 0) {
    last->count++;
    last->last_ms = now_ms;
    return;
  }
  probe.first_ms = probe.last_ms = now_ms;
  probe.count = 1;
  probe.status = status;
  probe.protocol = protocol;
  r->e[r->next] = probe;
  r->next = (r->next + 1) % BERTH_UI_MAX_ERRORS;
  if (r->n < BERTH_UI_MAX_ERRORS)
    r->n++;
}
