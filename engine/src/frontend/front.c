/* Berth engine: the inference path every frontend shares (front.h). */
#include "front.h"

#include "trace.h"
#include "ui.h"

void berth_front_count_fail(berth_model *m, berth_protocol protocol,
                            uint64_t received_ns, int status, const char *msg,
                            bool stats) {
  uint64_t now = uv_hrtime();
  uint64_t took = now > received_ns ? now - received_ns : 0;
  if (stats) {
    m->stats.fail.count++;
    m->stats.fail.ns += took;
  }
  berth_metrics_request(&m->metrics, protocol, status, (double)took / 1e9);
  berth_ui_note_error(m, protocol, status, msg);
}

int berth_front_check_servable(berth_model *m, berth_protocol protocol,
                               uint64_t received_ns, char *msg, size_t cap) {
  int status = BERTH_OK;
  if (m->engine->draining) {
    snprintf(msg, cap, "%s",
             "the server is shutting down and takes no new "
             "requests");
    status = BERTH_E_SHUTDOWN;
  } else if (!berth_model_accepting(m)) {
    berth_model_not_ready_message(m, msg, cap);
    status = BERTH_E_UNAVAILABLE;
  }
  if (status != BERTH_OK)
    berth_front_count_fail(m, protocol, received_ns, status, msg, false);
  return status;
}

int berth_front_submit(berth_engine *e, berth_job *job,
                       berth_route_stat *routed, const char *span_name,
                       const char *traceparent, size_t traceparent_len,
                       berth_errmsg *err) {
  if (job->model->decoupled && job->partial == NULL) {
    /* Triton's texts, then which call streams the responses. */
    int rc = job->protocol == BERTH_PROTO_GRPC
                 ? berth_errf(err, BERTH_E_UNSUPPORTED,
                              "ModelInfer RPC doesn't support models with "
                              "decoupled transaction policy: model '%s' may "
                              "answer with many responses; use "
                              "ModelStreamInfer",
                              job->model->cfg->name)
                 : berth_errf(err, BERTH_E_UNSUPPORTED,
                              "HTTP end point doesn't support models with "
                              "decoupled transaction policy: model '%s' may "
                              "answer with many responses; use POST "
                              "/v2/models/%s/generate_stream",
                              job->model->cfg->name, job->model->cfg->name);
    berth_front_count_fail(job->model, job->protocol, job->received_ns, rc,
                           err->msg, true);
    return rc;
  }
  if (e->tracer != NULL)
    job->trace = berth_trace_begin(
        e->tracer, traceparent, traceparent_len, span_name,
        job->protocol == BERTH_PROTO_GRPC ? "grpc" : "rest", job->received_ns);
  berth_engine_request_begin(e);
  int rc = berth_router_submit(job->model, job, routed, err);
  if (rc == BERTH_OK)
    return BERTH_OK;
  berth_engine_request_end(e);
  berth_front_count_fail(job->model, job->protocol, job->received_ns, rc,
                         err->msg, true);
  if (job->trace != NULL)
    berth_trace_job_refused(job, rc);
  return rc;
}

bool berth_front_cancel(berth_job *job) {
  if (berth_sched_cancel(job))
    return true;
  /* A running decoupled request: the worker stops at its next response. */
  (void)berth_supervisor_cancel_job(job);
  return false;
}

void berth_front_job_end(berth_engine *e, berth_job *job) {
  if (job->trace != NULL) /* tracing off: no call into obs/ at all */
    berth_trace_job_finish(job, BERTH_E_IO); /* left before an answer */
  berth_engine_request_end(e);
}
