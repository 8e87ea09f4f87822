/* Berth engine: the per-model numbers of /metrics (model_metrics.h). */
#include "model_metrics.h"

#include <math.h>
#include <string.h>

#include "berth/error.h"
#include "buf.h"

/* ---- histograms ---------------------------------------------------------- */

void berth_histogram_init(berth_histogram *h, const double *bounds, size_t n) {
  memset(h, 0, sizeof *h);
  h->bounds = bounds;
  h->n_bounds = n > BERTH_HIST_MAX_BOUNDS ? BERTH_HIST_MAX_BOUNDS : n;
}

void berth_histogram_observe(berth_histogram *h, double v) {
  if (isnan(v))
    return;
  size_t i = 0;
  while (i < h->n_bounds && v > h->bounds[i])
    i++;
  h->counts[i]++;
  h->count++;
  h->sum += v;
}

uint64_t berth_histogram_cumulative(const berth_histogram *h, size_t i) {
  uint64_t c = 0;
  for (size_t k = 0; k <= i && k <= h->n_bounds; k++)
    c += h->counts[k];
  return c;
}

/* ---- counting -------------------------------------------------------------- */

static const double duration_bounds[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
static const double batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
/* between two tokens: finer at the low end */
static const double token_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01,
                                      0.02,   0.05,  0.1,   0.2,   0.5,
                                      1,      2.5,   5,     10};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

void berth_model_metrics_init(berth_model_metrics *mm) {
  memset(mm, 0, sizeof *mm);
  berth_histogram_init(&mm->request_duration, duration_bounds,
                       COUNT_OF(duration_bounds));
  berth_histogram_init(&mm->queue_duration, duration_bounds,
                       COUNT_OF(duration_bounds));
  berth_histogram_init(&mm->compute_duration, duration_bounds,
                       COUNT_OF(duration_bounds));
  berth_histogram_init(&mm->batch_size, batch_bounds, COUNT_OF(batch_bounds));
  berth_histogram_init(&mm->first_response, duration_bounds,
                       COUNT_OF(duration_bounds));
  berth_histogram_init(&mm->between_responses, token_bounds,
                       COUNT_OF(token_bounds));
  mm->load_seconds = -1;
}

berth_outcome berth_metrics_outcome(int status) {
  switch (status) {
  case BERTH_OK:
    return BERTH_OUTCOME_SUCCESS;
  case BERTH_E_INVALID:
  case BERTH_E_PARSE:
  case BERTH_E_TOO_LARGE:
  case BERTH_E_NOT_FOUND:
  case BERTH_E_CONFIG:
  case BERTH_E_UNSUPPORTED:
  case BERTH_E_METHOD:
  case BERTH_E_UNAUTHENTICATED:
  case BERTH_E_FORBIDDEN:
    return BERTH_OUTCOME_CLIENT_ERROR;
  case BERTH_E_TIMEOUT:
    return BERTH_OUTCOME_TIMEOUT;
  case BERTH_E_OVERLOAD:
    return BERTH_OUTCOME_OVERLOAD;
  case BERTH_E_UNAVAILABLE:
  case BERTH_E_SHUTDOWN:
    return BERTH_OUTCOME_UNAVAILABLE;
  default:
    return BERTH_OUTCOME_SERVER_ERROR;
  }
}

void berth_metrics_request(berth_model_metrics *mm, berth_protocol proto,
                           int status, double seconds) {
  if ((unsigned)proto >= BERTH_PROTO_COUNT)
    proto = BERTH_PROTO_REST;
  mm->requests[proto][berth_metrics_outcome(status)]++;
  berth_histogram_observe(&mm->request_duration, seconds < 0 ? 0 : seconds);
}

/* ---- exposition text ------------------------------------------------------ */

int berth_metrics_escape(berth_buf *out, const char *s) {
  const char *run = s;
  int rc = BERTH_OK;
  for (; *s != '\0' && rc == BERTH_OK; s++) {
    const char *esc = *s == '\\'   ? "\\\\"
                      : *s == '"'  ? "\\\""
                      : *s == '\n' ? "\\n"
                                   : NULL;
    if (esc == NULL)
      continue;
    rc = berth_buf_append(out, run, (size_t)(s - run));
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, esc, 2);
    run = s + 1;
  }
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, run, strlen(run));
  return rc;
}
