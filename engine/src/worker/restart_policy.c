/* Berth engine: the supervisor's restart rule (restart_policy.h). */
#include "restart_policy.h"

berth_restart_plan berth_restart_decide(const berth_restart_in *in) {
  berth_restart_plan p = {
      .restart = false, .delay_s = 0, .next_backoff_s = in->backoff_s};
  if (in->stopping || in->failed_load)
    return p;
  double backoff = in->backoff_s;
  if (in->served_ns > BERTH_RESTART_HEALTHY_NS || backoff < in->backoff_min_s)
    backoff = in->backoff_min_s;
  p.restart = true;
  p.delay_s = backoff;
  p.next_backoff_s = backoff * 2;
  if (p.next_backoff_s > in->backoff_max_s)
    p.next_backoff_s = in->backoff_max_s;
  return p;
}
