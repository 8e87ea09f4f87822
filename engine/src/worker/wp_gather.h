/* Berth engine: worker-protocol frames built for scatter-gather writes.
 *
 * A tensor-set frame (INFER) is written without copying its tensor data:
 * the frame header, the tensor-set header, the parameters, each tensor's
 * record head and the padding are encoded in place into one small arena,
 * and the data is referenced where it already lies (the requests' own
 * buffers), as a list of pieces to hand to writev (uv_write with several
 * buffers). Parts of at most copy_max bytes are copied into the arena
 * instead: a few hundred bytes cost less to copy than one more iovec.
 *
 * Pure: no I/O. The bytes the pieces describe, concatenated, are exactly
 * what header_encode + tensors_encode would produce (worker_proto.h).
 */
#ifndef BERTH_WP_GATHER_H
#define BERTH_WP_GATHER_H

#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"
#include "berth/tensor.h"
#include "infer.h"

/* Default copy_max: parts up to this size are copied into the arena. */
#define BERTH_WP_COPY_MAX 1024

/* A run of bytes, borrowed. */
typedef struct berth_wp_piece {
  const uint8_t *data;
  size_t len;
} berth_wp_piece;

/* A frame ready to write. The arena is owned; each piece borrows either from
 * the arena or from the caller's parts, which must stay valid and unchanged
 * until the write has completed (or the stream is closed). */
typedef struct berth_wp_frame {
  uint8_t *arena;         /* owned */
  berth_wp_piece *pieces; /* owned array of n_pieces */
  size_t n_pieces;
  size_t length; /* bytes of the whole frame, its 16-byte header included */
} berth_wp_frame;

/* Builds a tensor-set frame of the given type and id. heads[i] gives tensor
 * i's name, dtype, shape and nbytes (its data is not read); its data is the
 * concatenation of parts[i * per .. i * per + per - 1], whose lengths must
 * add up to heads[i].nbytes. params: JSON object text of params_len bytes,
 * or NULL/0. On success *f is filled (free with berth_wp_frame_free);
 * BERTH_E_INVALID for inconsistent arguments, BERTH_E_TOO_LARGE when the
 * payload exceeds the 32-bit length, BERTH_E_NOMEM. */
int berth_wp_frame_gather(berth_wp_frame *f, uint16_t type, uint64_t id,
                          const berth_tensor *heads, size_t n,
                          const berth_wp_piece *parts, size_t per,
                          const char *params, size_t params_len,
                          size_t copy_max);

/* The INFER frame of a batch of n_reqs requests (n_reqs >= 1), written from
 * their own buffers: each input of reqs[0], in its order, carries the
 * concatenation of that input of every request, in request order (found by
 * name), with a first dimension of rows (the batch's rows; the scheduler
 * batched only requests whose names, datatypes and trailing dimensions
 * match). A batch of one sends its request's inputs as they are. The pieces
 * borrow the requests' tensor data (see berth_wp_frame). BERTH_E_INVALID
 * when a request lacks an input of reqs[0]; otherwise as
 * berth_wp_frame_gather. */
int berth_wp_frame_gather_batch(berth_wp_frame *f, uint64_t id,
                                const berth_infer_request *const *reqs,
                                size_t n_reqs, int64_t rows, const char *params,
                                size_t params_len);

/* The same with some tensors in shared memory (protocol 3): shm_off[i] is
 * the region offset where tensor i's heads[i].nbytes bytes already lie
 * (its record then carries the offset, and its parts are not read), or
 * BERTH_WP_INLINE to send its parts in the frame. shm_off NULL: all inline. */
#define BERTH_WP_INLINE UINT64_MAX
int berth_wp_frame_gather_at(berth_wp_frame *f, uint16_t type, uint64_t id,
                             const berth_tensor *heads, size_t n,
                             const berth_wp_piece *parts, size_t per,
                             const uint64_t *shm_off, const char *params,
                             size_t params_len, size_t copy_max);

/* Where a batch's large inputs may go: the engine's part of a worker's
 * shared memory region (offsets lo..hi of the writable mapping at base).
 * Each input of at least threshold bytes (and at least 1) that still fits
 * is copied there, 64-byte aligned, from lo on; the others travel in the
 * frame. used and placed say what was placed (bytes from lo, tensors). */
typedef struct berth_wp_shm {
  uint8_t *base; /* borrowed */
  size_t lo, hi;
  size_t threshold;
  size_t used;   /* out */
  size_t placed; /* out */
} berth_wp_shm;

/* berth_wp_frame_gather_batch with large inputs placed in shm (NULL: none,
 * exactly berth_wp_frame_gather_batch). */
int berth_wp_frame_gather_batch_shm(berth_wp_frame *f, uint64_t id,
                                    const berth_infer_request *const *reqs,
                                    size_t n_reqs, int64_t rows,
                                    const char *params, size_t params_len,
                                    berth_wp_shm *shm);

/* Frees what berth_wp_frame_gather allocated; f may be zeroed. */
void berth_wp_frame_free(berth_wp_frame *f);

#endif
