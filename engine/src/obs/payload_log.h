/* Berth engine: the payload log — sampled inference requests and their
 * answers (tensors, ids, timestamps) as JSON lines in a file that rotates by
 * size, for audits and drift analysis (docs/logging.md, "Payload log").
 *
 * It never blocks the request path. Records are encoded on the loop when a
 * sampled job is answered and wait in a queue bounded in bytes
 * (log.payload_log_queue_bytes); one libuv thread-pool job at a time
 * (uv_queue_work) writes the waiting records and rotates the file. Records
 * are batched: a job starts 2 ms after the first record waits, when 256 KiB
 * wait, or when the previous job is done. A record
 * that does not fit in the queue, or whose write fails, is dropped and
 * counted (berth_payload_records_dropped_total); written ones are counted
 * in berth_payload_records_written_total.
 *
 * Ownership: the engine owns the berth_payload_log (engine->payload_log,
 * opened, closed and freed by berth_payload_log_module);
 * the queue owns its records; records being written belong to the thread
 * job until its completion callback runs on the loop. The file descriptor
 * is touched only by the thread job. */
#ifndef BERTH_PAYLOAD_LOG_H
#define BERTH_PAYLOAD_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "berth/error.h"
#include "config.h"
#include "engine.h"

typedef struct berth_payload_log berth_payload_log;

/* Opens the sink named by cfg->payload_log_path (creating the file; a
 * FIFO must already have a reader). *out is NULL when no path is set.
 * BERTH_E_IO with the path and reason when the file cannot be opened. */
int berth_payload_log_open(uv_loop_t *loop, const berth_config *cfg,
                           berth_payload_log **out, berth_errmsg *err);
/* The module's observer calls this once per answered job (status, errmsg and
 * resp as given to job->done). Samples by the model's payload_log.rate,
 * encodes and queues the record, or drops it. pl may be NULL (off). */
void berth_payload_log_answer(berth_payload_log *pl, const berth_job *job,
                              int status, const char *errmsg,
                              const berth_infer_response *resp);
/* The engine is closing its handles (no request is left): the waiting
 * records go to the writer now and the batching timer is closed. NULL is
 * fine; idempotent. */
void berth_payload_log_close(berth_payload_log *pl);
/* Frees the sink, after berth_payload_log_close and after the loop has run
 * its last thread job (uv_run has returned: a pending job keeps the loop
 * alive). NULL is fine. */
void berth_payload_log_free(berth_payload_log *pl);

/* Rotation, used by the thread job (and the unit tests): path.{backups-1}
 * -> path.{backups}, ..., path -> path.1, so that at most `backups` old
 * files stay; backups 0 removes path. Missing files are skipped. 0 or an
 * errno value. */
int berth_payload_rotate(const char *path, unsigned backups);

/* The payload log module (main.c's list): opens the sink at start when a
 * path is configured, and registers the observer that samples answers. */
extern const berth_module berth_payload_log_module;

#endif
