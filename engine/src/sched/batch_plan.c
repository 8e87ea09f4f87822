/* Berth engine: the batcher's pure decision (batch_plan.h). */
#include "batch_plan.h"

static berth_batch_plan send_now(uint64_t seen) {
  return (berth_batch_plan){.send = true, .wake_at_ns = 0, .seen = seen};
}

berth_batch_plan berth_batch_plan_decide(const berth_batch_plan_in *in) {
  uint64_t seen = in->seen;
  if (in->max_batch_size == 0 || in->delay_ns == 0)
    return send_now(seen);
  if (in->q_rows >= (int64_t)in->max_batch_size || in->q_rows_preferred)
    return send_now(seen);
  uint64_t waited = in->now_ns - in->oldest_ns;
  if (waited >= in->delay_ns) /* fewer came than expected: expect fewer */
    return send_now(
        in->in_server < seen ? (in->in_server > 0 ? in->in_server : 1) : seen);
  if (in->q_len == 1)
    return send_now(seen); /* a lone request never waits for an idle worker */
  if (in->in_server >= seen)
    return send_now(seen); /* every client seen lately is here */
  /* Wait for the next arrival at most half a batch's service time: longer
   * than that, running what is queued and batching the later arrivals
   * while it runs is better. A lull that long ends the wait. */
  uint64_t lull_ns = in->service_ns / 2;
  uint64_t quiet = in->now_ns - in->last_arrival_ns;
  if (quiet >= lull_ns)
    return send_now(in->in_server < seen ? in->in_server : seen);
  uint64_t wake = in->last_arrival_ns + lull_ns;
  if (wake > in->oldest_ns + in->delay_ns)
    wake = in->oldest_ns + in->delay_ns;
  return (berth_batch_plan){.send = false, .wake_at_ns = wake, .seen = seen};
}
