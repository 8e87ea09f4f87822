/* Unit tests for the Prometheus metrics: histogram buckets, outcomes,
 * label escaping and the text exposition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <berth/error.h>

#include "metrics.h"

static const double bounds[] = {0.1, 1, 10};

static void histogram_buckets(void **state) {
  (void)state;
  berth_histogram h;
  berth_histogram_init(&h, bounds, 3);
  berth_histogram_observe(&h, 0.05); /* le 0.1 */
  berth_histogram_observe(&h, 0.1);  /* on the bound: le 0.1 */
  berth_histogram_observe(&h, 0.5);  /* le 1 */
  berth_histogram_observe(&h, 10);   /* le 10 */
  berth_histogram_observe(&h, 11);   /* +Inf only */
  assert_int_equal(h.count, 5);
  assert_int_equal(berth_histogram_cumulative(&h, 0), 2);
  assert_int_equal(berth_histogram_cumulative(&h, 1), 3);
  assert_int_equal(berth_histogram_cumulative(&h, 2), 4);
  assert_int_equal(berth_histogram_cumulative(&h, 3), 5);
  assert_int_equal(berth_histogram_cumulative(&h, 99), 5);
  assert_true(h.sum > 21.64 && h.sum < 21.66);
}

static void histogram_clamps_bounds(void **state) {
  (void)state;
  static double many[40];
  for (int i = 0; i < 40; i++)
    many[i] = i + 1;
  berth_histogram h;
  berth_histogram_init(&h, many, 40);
  assert_int_equal(h.n_bounds, BERTH_HIST_MAX_BOUNDS);
  berth_histogram_observe(&h, 1000);
  assert_int_equal(h.counts[BERTH_HIST_MAX_BOUNDS], 1);
}

static void outcomes(void **state) {
  (void)state;
  assert_int_equal(berth_metrics_outcome(BERTH_OK), BERTH_OUTCOME_SUCCESS);
  assert_int_equal(berth_metrics_outcome(BERTH_E_INVALID),
                   BERTH_OUTCOME_CLIENT_ERROR);
  assert_int_equal(berth_metrics_outcome(BERTH_E_MODEL),
                   BERTH_OUTCOME_SERVER_ERROR);
  assert_int_equal(berth_metrics_outcome(BERTH_E_WORKER_DIED),
                   BERTH_OUTCOME_SERVER_ERROR);
  assert_int_equal(berth_metrics_outcome(BERTH_E_TIMEOUT),
                   BERTH_OUTCOME_TIMEOUT);
  assert_int_equal(berth_metrics_outcome(BERTH_E_OVERLOAD),
                   BERTH_OUTCOME_OVERLOAD);
  assert_int_equal(berth_metrics_outcome(BERTH_E_SHUTDOWN),
                   BERTH_OUTCOME_UNAVAILABLE);
}

static void escaping(void **state) {
  (void)state;
  berth_buf b;
  berth_buf_init(&b, 1024);
  assert_int_equal(berth_metrics_escape(&b, "a\"b\\c\nd"), BERTH_OK);
  assert_string_equal(b.data, "a\\\"b\\\\c\\nd");
  berth_buf_reset(&b);
  assert_int_equal(berth_metrics_escape(&b, "plain"), BERTH_OK);
  assert_string_equal(b.data, "plain");
  berth_buf_free(&b);
}

static void rendering(void **state) {
  (void)state;
  berth_model_metrics mm;
  berth_model_metrics_init(&mm);
  berth_metrics_request(&mm, BERTH_PROTO_REST, BERTH_OK, 0.002);
  berth_metrics_request(&mm, BERTH_PROTO_REST, BERTH_OK, 0.004);
  berth_metrics_request(&mm, BERTH_PROTO_GRPC, BERTH_E_MODEL, 2);
  berth_histogram_observe(&mm.batch_size, 3);
  mm.worker_restarts = 2;
  berth_metrics_model mv = {.model = "m\"x",
                            .version = "1",
                            .m = &mm,
                            .queue_depth = 4,
                            .inflight = 1,
                            .workers_ready = 2,
                            .workers_rss_bytes = -1};
  berth_metrics_process proc = {
      .cpu_seconds = 1.5, .rss_bytes = 4096, .version = "9.9"};
  berth_buf b;
  berth_buf_init(&b, 1 << 20);
  assert_int_equal(berth_metrics_render(&b, &mv, 1, &proc), BERTH_OK);
  const char *t = b.data;
  assert_non_null(strstr(t, "# TYPE berth_requests_total counter\n"));
  assert_non_null(strstr(t,
                         "berth_requests_total{model=\"m\\\"x\",version=\"1\","
                         "protocol=\"rest\",outcome=\"success\"} 2\n"));
  assert_non_null(strstr(t, "protocol=\"grpc\",outcome=\"server_error\"} 1\n"));
  assert_non_null(strstr(t, "protocol=\"grpc\",outcome=\"timeout\"} 0\n"));
  assert_non_null(
      strstr(t, "# TYPE berth_request_duration_seconds histogram\n"));
  assert_non_null(
      strstr(t, "berth_request_duration_seconds_bucket{model=\"m\\\"x\","
                "version=\"1\",le=\"0.0025\"} 1\n"));
  assert_non_null(
      strstr(t, "berth_request_duration_seconds_bucket{model=\"m\\\"x\","
                "version=\"1\",le=\"+Inf\"} 3\n"));
  assert_non_null(strstr(t,
                         "berth_request_duration_seconds_sum{model=\"m\\\"x\","
                         "version=\"1\"} 2.006\n"));
  assert_non_null(
      strstr(t, "berth_request_duration_seconds_count{model=\"m\\\"x\","
                "version=\"1\"} 3\n"));
  assert_non_null(
      strstr(t, "berth_batch_size_bucket{model=\"m\\\"x\",version=\"1\","
                "le=\"2\"} 0\n"));
  assert_non_null(
      strstr(t, "berth_batch_size_bucket{model=\"m\\\"x\",version=\"1\","
                "le=\"4\"} 1\n"));
  assert_non_null(
      strstr(t, "berth_queue_depth{model=\"m\\\"x\",version=\"1\"} 4\n"));
  /* not decoupled: no generative series */
  assert_null(strstr(t, "berth_generated_tokens_total{"));
  assert_null(strstr(t, "berth_time_to_first_token_seconds_bucket{"));
  assert_non_null(
      strstr(t, "berth_inflight_requests{model=\"m\\\"x\",version=\"1\"} 1\n"));
  assert_non_null(
      strstr(t, "berth_workers{model=\"m\\\"x\",version=\"1\"} 2\n"));
  assert_non_null(strstr(t, "# TYPE berth_worker_restarts_total counter\n"));
  assert_non_null(strstr(t, "berth_worker_restarts_total{model=\"m\\\"x\","
                            "version=\"1\"} 2\n"));
  /* unknown values are left out, their family header stays */
  assert_null(strstr(t, "berth_model_load_seconds{"));
  assert_null(strstr(t, "berth_workers_resident_memory_bytes{"));
  assert_non_null(strstr(t, "berth_process_cpu_seconds_total 1.5\n"));
  assert_non_null(strstr(t, "berth_process_resident_memory_bytes 4096\n"));
  assert_non_null(strstr(t, "berth_build_info{version=\"9.9\"} 1\n"));
  /* every line ends with a newline, and HELP comes before TYPE */
  assert_int_equal(t[b.len - 1], '\n');
  assert_true(strstr(t, "# HELP berth_workers ") <
              strstr(t, "# TYPE berth_workers gauge"));
  berth_buf_free(&b);
}

/* A decoupled model gets the time-to-first-token and inter-token
 * histograms and the generated-token counter. */
static void rendering_generative(void **state) {
  (void)state;
  berth_model_metrics mm;
  berth_model_metrics_init(&mm);
  berth_histogram_observe(&mm.first_response, 0.03);
  berth_histogram_observe(&mm.between_responses, 0.004);
  berth_histogram_observe(&mm.between_responses, 0.004);
  mm.generated_tokens = 42;
  berth_metrics_model mv = {.model = "lm",
                            .version = "1",
                            .m = &mm,
                            .workers_rss_bytes = -1,
                            .decoupled = true};
  berth_metrics_process proc = {.cpu_seconds = -1, .rss_bytes = -1};
  berth_buf b;
  berth_buf_init(&b, 1 << 20);
  assert_int_equal(berth_metrics_render(&b, &mv, 1, &proc), BERTH_OK);
  const char *t = b.data;
  assert_non_null(strstr(t, "# TYPE berth_generated_tokens_total counter\n"));
  assert_non_null(strstr(
      t, "berth_generated_tokens_total{model=\"lm\",version=\"1\"} 42\n"));
  assert_non_null(strstr(t, "berth_time_to_first_token_seconds_count{model="
                            "\"lm\",version=\"1\"} 1\n"));
  assert_non_null(strstr(t, "berth_inter_token_latency_seconds_bucket{model="
                            "\"lm\",version=\"1\",le=\"0.005\"} 2\n"));
  assert_non_null(strstr(t, "berth_inter_token_latency_seconds_count{model="
                            "\"lm\",version=\"1\"} 2\n"));
  berth_buf_free(&b);
}

static void rendering_respects_buffer_max(void **state) {
  (void)state;
  berth_model_metrics mm;
  berth_model_metrics_init(&mm);
  berth_metrics_model mv = {
      .model = "m", .version = "1", .m = &mm, .workers_rss_bytes = -1};
  berth_metrics_process proc = {
      .cpu_seconds = -1, .rss_bytes = -1, .version = "1"};
  berth_buf b;
  berth_buf_init(&b, 100);
  assert_int_equal(berth_metrics_render(&b, &mv, 1, &proc), BERTH_E_TOO_LARGE);
  berth_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(histogram_buckets),
      cmocka_unit_test(histogram_clamps_bounds),
      cmocka_unit_test(outcomes),
      cmocka_unit_test(escaping),
      cmocka_unit_test(rendering),
      cmocka_unit_test(rendering_generative),
      cmocka_unit_test(rendering_respects_buffer_max),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
