/* Berth engine: the autoscaling policy (autoscale_policy.h). Pure: samples
 * and times in, a desired instance count out. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "autoscale_policy.h"

#define NS_PER_S 1e9
#define MIN_WIDTH_NS 10000000ull /* 10 ms */

static uint64_t s_to_ns(double s) {
  return s <= 0 ? 0 : (uint64_t)(s * NS_PER_S);
}

int berth_autoscale_config_check(const berth_autoscale_config *c, char *why,
                                 unsigned cap) {
  if (c->max_instances < 1)
    snprintf(why, cap, "max_instances: must be >= 1");
  else if (c->min_instances > c->max_instances)
    snprintf(why, cap, "min_instances: must be <= max_instances (%u), got %u",
             c->max_instances, c->min_instances);
  else if (!(c->target_ongoing_requests > 0))
    snprintf(why, cap, "target_ongoing_requests: must be > 0");
  else if (!(c->stable_window_s > 0))
    snprintf(why, cap, "stable_window_s: must be > 0");
  else if (!(c->panic_window_s > 0) || c->panic_window_s > c->stable_window_s)
    snprintf(why, cap,
             "panic_window_s: must be > 0 and <= stable_window_s (%g), got %g",
             c->stable_window_s, c->panic_window_s);
  else if (!(c->panic_threshold >= 1.0))
    snprintf(why, cap, "panic_threshold: must be >= 1.0, got %g",
             c->panic_threshold);
  else
    return 0;
  return -1;
}

static uint32_t clamp_count(const berth_autoscale_config *c, double want) {
  uint32_t lo = c->min_instances > 0 ? c->min_instances : 1;
  if (!(want >= lo)) /* also NaN */
    return lo;
  if (want >= c->max_instances)
    return c->max_instances;
  return (uint32_t)want;
}

void berth_autoscale_init(berth_autoscale_state *s,
                          const berth_autoscale_config *cfg, uint32_t initial,
                          uint64_t now_ns) {
  memset(s, 0, sizeof *s);
  s->cfg = *cfg;
  uint64_t w = s_to_ns(cfg->stable_window_s) / BERTH_AUTOSCALE_BUCKETS;
  s->width_ns = w < MIN_WIDTH_NS ? MIN_WIDTH_NS : w;
  s->desired = initial > cfg->max_instances ? cfg->max_instances : initial;
  if (s->desired < cfg->min_instances)
    s->desired = cfg->min_instances;
  s->started_ns = now_ns;
  s->last_busy_ns = now_ns;
}

void berth_autoscale_record(berth_autoscale_state *s, uint64_t now_ns,
                            double ongoing) {
  if (!(ongoing >= 0))
    ongoing = 0;
  uint64_t slot = now_ns / s->width_ns;
  berth_autoscale_bucket *b = &s->buckets[slot % BERTH_AUTOSCALE_BUCKETS];
  if (b->slot != slot + 1) {
    b->slot = slot + 1;
    b->sum = 0;
    b->n = 0;
  }
  b->sum += ongoing;
  b->n++;
  s->busy = ongoing > 0;
  if (s->busy)
    s->last_busy_ns = now_ns;
}

/* Average of the samples of the last window_s seconds (0 when none). */
static double window_avg(const berth_autoscale_state *s, uint64_t now_ns,
                         double window_s) {
  uint64_t last = now_ns / s->width_ns;
  uint64_t span = s_to_ns(window_s) / s->width_ns;
  if (span < 1)
    span = 1;
  if (span > BERTH_AUTOSCALE_BUCKETS)
    span = BERTH_AUTOSCALE_BUCKETS;
  double sum = 0;
  uint64_t n = 0;
  for (uint64_t k = 0; k < span && k <= last; k++) {
    uint64_t slot = last - k;
    const berth_autoscale_bucket *b =
        &s->buckets[slot % BERTH_AUTOSCALE_BUCKETS];
    if (b->slot == slot + 1) {
      sum += b->sum;
      n += b->n;
    }
  }
  return n > 0 ? sum / (double)n : 0;
}

void berth_autoscale_sleep(berth_autoscale_state *s) {
  s->desired = 0;
  s->panic = false;
  s->want_up_ns = s->want_down_ns = 0;
}

void berth_autoscale_wake(berth_autoscale_state *s, uint64_t now_ns) {
  s->last_busy_ns = now_ns;
  if (s->desired == 0)
    s->desired = 1;
  s->want_up_ns = s->want_down_ns = 0;
}

/* Outside panic: a change is taken once wanted for its delay. */
static void settle(berth_autoscale_state *s, uint64_t now, uint32_t want) {
  const berth_autoscale_config *c = &s->cfg;
  if (want > s->desired) {
    s->want_down_ns = 0;
    if (s->want_up_ns == 0)
      s->want_up_ns = now;
    if (now - s->want_up_ns >= s_to_ns(c->upscale_delay_s)) {
      s->desired = want;
      s->want_up_ns = 0;
    }
  } else if (want < s->desired) {
    s->want_up_ns = 0;
    if (s->want_down_ns == 0)
      s->want_down_ns = now;
    if (now - s->want_down_ns >= s_to_ns(c->downscale_delay_s)) {
      s->desired = want;
      s->want_down_ns = 0;
    }
  } else {
    s->want_up_ns = s->want_down_ns = 0;
  }
}

berth_autoscale_decision berth_autoscale_decide(berth_autoscale_state *s,
                                                uint64_t now_ns,
                                                uint32_t current) {
  const berth_autoscale_config *c = &s->cfg;
  berth_autoscale_decision d = {0};
  d.stable_avg = window_avg(s, now_ns, c->stable_window_s);
  d.panic_avg = window_avg(s, now_ns, c->panic_window_s);
  double t = c->target_ongoing_requests;
  if (s->desired == 0 && s->busy)
    s->desired = 1; /* wake: no delay */
  double capacity = (double)(current > 0 ? current : 1) * t;
  if (d.panic_avg > 0 && d.panic_avg > c->panic_threshold * capacity) {
    s->panic = true;
    s->panic_until = now_ns + s_to_ns(c->stable_window_s);
  } else if (s->panic && now_ns >= s->panic_until) {
    s->panic = false;
  }
  if (s->panic) {
    uint32_t want = clamp_count(c, ceil(d.panic_avg / t - 1e-9));
    if (want > s->desired)
      s->desired = want; /* at once; never down while panicking */
    s->want_up_ns = s->want_down_ns = 0;
  } else if (s->desired > 0) {
    settle(s, now_ns, clamp_count(c, ceil(d.stable_avg / t - 1e-9)));
    if (c->min_instances == 0 &&
        now_ns - s->last_busy_ns >= s_to_ns(c->scale_to_zero_after_s) &&
        now_ns - s->started_ns >= s_to_ns(c->scale_to_zero_after_s))
      s->desired = 0;
  }
  d.desired = s->desired;
  d.panic = s->panic;
  return d;
}
