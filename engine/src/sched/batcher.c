/* Berth engine: when the dynamic batcher sends, and its clock (batcher.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "batcher.h"
#include "batch_plan.h"
#include "engine.h"

static berth_model *model_of(uv_handle_t *h) { return h->data; }

static void on_check(uv_check_t *h) {
  berth_model *m = model_of((uv_handle_t *)h);
  m->batcher.check_active = false;
  uv_check_stop(h);
  berth_sched_dispatch(m);
}

static void woke(berth_model *m) {
  m->batcher.wake_armed = false;
  berth_sched_dispatch(m);
}

static void on_wake_fd(uv_poll_t *h, int status, int events) {
  berth_model *m = model_of((uv_handle_t *)h);
  uint64_t expirations;
  ssize_t n;
  do /* clears the expiry; EAGAIN: a stale wake-up, nothing to read */
    n = read(m->batcher.wake_fd, &expirations, sizeof expirations);
  while (n < 0 && errno == EINTR);
  woke(m);
}

static void on_wake_timer(uv_timer_t *h) { woke(model_of((uv_handle_t *)h)); }

/* Wakes the scheduler at uv_hrtime() == at_ns (a later arm replaces it). */
static void arm(berth_model *m, uint64_t at_ns, uint64_t now_ns) {
  berth_batcher *b = &m->batcher;
  if (b->wake_armed && b->wake_at_ns == at_ns)
    return;
  b->wake_at_ns = at_ns;
  b->wake_armed = true;
  if (b->use_fd) {
    /* uv_hrtime() reads CLOCK_MONOTONIC, the timerfd's clock; a time
     * already past fires at once. */
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(at_ns / 1000000000u);
    its.it_value.tv_nsec = (long)(at_ns % 1000000000u);
    if (timerfd_settime(b->wake_fd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
      return;
  }
  uint64_t left_ms = at_ns > now_ns ? (at_ns - now_ns + 999999u) / 1000000u : 0;
  uv_timer_start(&b->wake_timer, on_wake_timer, left_ms, 0);
}

void berth_batcher_init(berth_model *m) {
  berth_batcher *b = &m->batcher;
  uv_loop_t *loop = m->engine->loop;
  memset(b, 0, sizeof *b);
  uv_check_init(loop, &b->check);
  b->check.data = m;
  uv_timer_init(loop, &b->wake_timer);
  b->wake_timer.data = m;
  /* The timerfd is watched for the model's whole life (it is readable only
   * when an armed wake-up is due), so arming costs one syscall. */
  b->wake_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (b->wake_fd >= 0 && uv_poll_init(loop, &b->wake, b->wake_fd) == 0) {
    b->wake.data = m;
    b->wake_polled = true;
    b->use_fd = uv_poll_start(&b->wake, UV_READABLE, on_wake_fd) == 0;
  }
}

static void closed(uv_handle_t *h) { (void)h; }

void berth_batcher_close(berth_model *m) {
  berth_batcher *b = &m->batcher;
  uv_close((uv_handle_t *)&b->check, closed);
  uv_close((uv_handle_t *)&b->wake_timer, closed);
  if (b->wake_polled)
    uv_close((uv_handle_t *)&b->wake, closed); /* stops watching the fd */
  b->wake_polled = b->use_fd = false;
  if (b->wake_fd >= 0)
    close(b->wake_fd);
  b->wake_fd = -1;
}

void berth_batcher_arrived(berth_model *m, uint64_t now_ns) {
  berth_batcher *b = &m->batcher;
  uint64_t in_server = m->inflight;
  if (in_server > b->seen)
    b->seen = in_server;
  b->last_arrival_ns = now_ns;
  if (!b->check_active) {
    b->check_active = true;
    uv_check_start(&b->check, on_check);
  }
}

void berth_batcher_served(berth_model *m, uint64_t service_ns) {
  berth_batcher *b = &m->batcher;
  b->service_ns = b->service_ns == 0
                      ? service_ns
                      : b->service_ns - b->service_ns / 8 + service_ns / 8;
}

static bool is_preferred(const berth_model *m, int64_t rows) {
  for (uint32_t i = 0; i < m->cfg->n_preferred_batch_sizes; i++)
    if ((int64_t)m->cfg->preferred_batch_sizes[i] == rows)
      return true;
  return false;
}

bool berth_batcher_ready(berth_model *m, uint64_t now_ns) {
  berth_batcher *b = &m->batcher;
  berth_batch_plan_in in = {
      .now_ns = now_ns,
      .delay_ns = (uint64_t)m->cfg->max_queue_delay_us * 1000u,
      .max_batch_size = m->max_batch_size,
      .q_len = m->q_len,
      .q_rows = m->q_rows,
      .q_rows_preferred = is_preferred(m, m->q_rows),
      .oldest_ns = UINT64_MAX,
      .in_server = m->inflight,
      .seen = b->seen,
      .last_arrival_ns = b->last_arrival_ns,
      .service_ns = b->service_ns,
  };
  for (unsigned p = 0; p < BERTH_PRIORITY_LEVELS; p++)
    if (!TAILQ_EMPTY(&m->queue[p]) &&
        TAILQ_FIRST(&m->queue[p])->enqueued_ns < in.oldest_ns)
      in.oldest_ns = TAILQ_FIRST(&m->queue[p])->enqueued_ns;
  if (in.oldest_ns == UINT64_MAX)
    in.oldest_ns = now_ns;
  berth_batch_plan plan = berth_batch_plan_decide(&in);
  b->seen = plan.seen;
  if (!plan.send)
    arm(m, plan.wake_at_ns, now_ns);
  return plan.send;
}
