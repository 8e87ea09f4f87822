/* Berth engine: the shared memory region of a worker incarnation
 * (supervisor_int.h; the region itself: wp_shm.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "supervisor_int.h"

/* ---- shared memory (worker protocol 3, wp_shm.h) ---------------------
 *
 * Each incarnation may get a region: created with the process, offered in
 * LOAD (the memfd rides on that frame as SCM_RIGHTS), used once READY says
 * the worker mapped it, freed with the incarnation. Never for a decoupled
 * model (its requests overlap). */

/* Creates p's region when the config asks for one; without one the worker
 * simply gets inline frames. */
void berth_sup_shm_create(worker_proc *p) {
  const berth_config *c = &p->engine->cfg;
  p->shm.fd = -1;
  if (c->worker_shm_size == 0 || c->worker_shm_size > SIZE_MAX)
    return;
  berth_errmsg err;
  size_t size = (size_t)c->worker_shm_size & ~(size_t)127;
  if (size < 4096) /* too small to be of use: off */
    return;
  if (berth_shm_region_create(&p->shm, size, &err) != BERTH_OK)
    berth_log_kv(BERTH_LOG_WARNING,
                 "no shared memory for a worker; its tensors go through its "
                 "socket",
                 "error", err.msg, NULL);
}

/* Adds LOAD's "shared_memory" when p has a region. */
int berth_sup_shm_offer(const worker_proc *p, json_t *entry) {
  if (p->shm.base == NULL)
    return BERTH_OK;
  json_t *o =
      json_pack("{sIsIsI}", "size", (json_int_t)p->shm.size, "split",
                (json_int_t)p->shm.split, "threshold",
                (json_int_t)(p->engine->cfg.worker_shm_threshold > INT64_MAX
                                 ? INT64_MAX
                                 : p->engine->cfg.worker_shm_threshold));
  if (o == NULL || json_object_set_new(entry, "shared_memory", o) != 0)
    return BERTH_E_NOMEM;
  return BERTH_OK;
}

/* Sends the LOAD frame (the first bytes on the socket) with the region's
 * descriptor attached, then closes berthd's copy of it. When the socket
 * refuses the descriptor the region goes and LOAD is sent as usual. */
int berth_sup_shm_send_load(worker_proc *p, const char *text, size_t len) {
  uv_os_fd_t fd;
  if (p->shm.base == NULL || len > UINT32_MAX - BERTH_WP_HEADER_SIZE ||
      uv_stream_get_write_queue_size((uv_stream_t *)&p->pipe) != 0 ||
      uv_fileno((uv_handle_t *)&p->pipe, &fd) != 0)
    return BERTH_E_UNAVAILABLE;
  size_t total = BERTH_WP_HEADER_SIZE + len;
  uint8_t *frame = malloc(total);
  if (frame == NULL)
    return BERTH_E_NOMEM;
  berth_wp_header h = {
      .length = (uint32_t)len, .type = BERTH_WP_LOAD, .flags = 0, .id = 0};
  berth_wp_header_encode(frame, &h);
  memcpy(frame + BERTH_WP_HEADER_SIZE, text, len);
  ssize_t n = berth_shm_send_fd(fd, frame, total, p->shm.fd);
  int rc = n > 0 ? BERTH_OK : BERTH_E_UNAVAILABLE;
  if (n > 0) {
    p->queued_bytes += (size_t)n;
    if ((size_t)n < total)
      rc = berth_sup_send_raw(p, frame + n, total - (size_t)n);
  }
  free(frame);
  berth_shm_region_close_fd(&p->shm);
  return rc;
}

/* READY's "shared_memory": true: the worker mapped the region. */
void berth_sup_shm_adopt(worker_proc *p, const berth_model *m,
                         const uint8_t *payload, size_t len) {
  json_error_t jerr;
  json_t *doc = json_loadb((const char *)payload, len, 0, &jerr);
  p->shm_ok = p->shm.base != NULL && !m->decoupled &&
              json_is_true(json_object_get(doc, "shared_memory"));
  json_decref(doc);
  if (p->shm.base != NULL && !p->shm_ok)
    berth_shm_region_free(&p->shm); /* an older worker: inline frames */
}

/* Where the batch's large inputs may go (NULL: all inline). */
berth_wp_shm *berth_sup_shm_inputs(worker_proc *p, berth_wp_shm *s) {
  if (!p->shm_ok || p->shm_kept)
    return NULL;
  *s = (berth_wp_shm){.base = p->shm.base,
                      .lo = 0,
                      .hi = p->shm.split,
                      .threshold = (size_t)p->engine->cfg.worker_shm_threshold};
  return s;
}

/* Where a RESULT's tensors may point (NULL: nowhere): the worker's part,
 * or the engine's when an output is a view of an input (the engine writes
 * the next batch there only after it has read this answer). */
const berth_wp_region *berth_sup_shm_outputs(const worker_proc *p,
                                             berth_wp_region *g) {
  if (!p->shm_ok)
    return NULL;
  *g = (berth_wp_region){p->shm.base, 0, p->shm.size};
  return g;
}
