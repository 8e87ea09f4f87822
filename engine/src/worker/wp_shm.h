/* Berth engine: a worker's shared memory region (worker protocol 3,
 * docs/worker-protocol.md "Shared memory").
 *
 * One region per worker process: an anonymous memfd (no path, no name a
 * request can choose), sized once and sealed against shrinking or growing
 * (so the worker cannot make the engine's mapping fault), mapped read-write
 * by berthd and passed to the worker once, with SCM_RIGHTS on the LOAD
 * frame. The engine writes batch inputs into offsets 0..split, the worker
 * writes outputs into split..size. The region belongs to the incarnation:
 * freed when its process is gone; a restarted worker gets a new one.
 */
#ifndef BERTH_WP_SHM_H
#define BERTH_WP_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "berth/error.h"

typedef struct berth_shm_region {
  uint8_t *base; /* owned mapping of size bytes, or NULL */
  size_t size;
  size_t split; /* the engine writes below, the worker at and above */
  int fd;       /* owned memfd (close-on-exec), -1 once passed or freed */
} berth_shm_region;

/* Creates a region of size bytes (a multiple of 128, at least 4096).
 * BERTH_E_IO with the reason when the kernel refuses (no memfd, no memory);
 * r is then zeroed with fd -1 and needs no free. */
int berth_shm_region_create(berth_shm_region *r, size_t size,
                            berth_errmsg *err);
/* Closes the descriptor (the worker has its own copy) but keeps the
 * mapping. Idempotent. */
void berth_shm_region_close_fd(berth_shm_region *r);
/* Unmaps and closes. Idempotent; r may be zeroed with fd -1. */
void berth_shm_region_free(berth_shm_region *r);

/* Writes up to len bytes of data to the non-blocking stream socket sock in
 * one sendmsg carrying fd as SCM_RIGHTS. Returns the bytes written (> 0:
 * the descriptor went with them), 0 when the socket would block (nothing
 * was sent), or -1 on another error (errno set). */
ssize_t berth_shm_send_fd(int sock, const void *data, size_t len, int fd);

#endif
