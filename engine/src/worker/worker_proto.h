/* Berth engine: the worker protocol's frames (docs/worker-protocol.md).
 *
 * Pure encode/decode, no I/O: bytes in, structs out. Everything decoded
 * from a worker is untrusted (a buggy model can write anything) and checked.
 */
#ifndef BERTH_WORKER_PROTO_H
#define BERTH_WORKER_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"
#include "berth/tensor.h"

/* Version 2 adds READY's max_concurrency: a worker of a decoupled model
 * may run several requests at once. Version 3 adds shared memory: a tensor
 * record whose location is BERTH_WP_LOC_SHM carries an offset into the
 * worker's region instead of its data (docs/worker-protocol.md). */
#define BERTH_WP_VERSION 3
/* The most decoupled requests the engine sends one worker at once. */
#define BERTH_WP_MAX_CONCURRENCY 1024
#define BERTH_WP_HEADER_SIZE 16

typedef enum {
  BERTH_WP_LOAD = 1,        /* engine -> worker: JSON model entry */
  BERTH_WP_READY = 2,       /* worker -> engine: JSON signature */
  BERTH_WP_LOAD_FAILED = 3, /* worker -> engine: JSON {"error": ...} */
  BERTH_WP_INFER = 4,       /* engine -> worker: tensor set */
  BERTH_WP_RESULT = 5,      /* worker -> engine: tensor set */
  BERTH_WP_ERROR = 6,       /* worker -> engine: JSON {"error","kind"} */
  BERTH_WP_SHUTDOWN = 7,    /* engine -> worker: empty */
  BERTH_WP_RESPONSE = 8,    /* worker -> engine: tensor set, one response
                               of a decoupled model (id: the batch's);
                               RESULT (no tensors) or ERROR ends them */
  BERTH_WP_CANCEL = 9,      /* engine -> worker: empty; stop the decoupled
                               request id (its client left) */
} berth_wp_type;

/* RESULT/ERROR header flag (version 3): the model kept an input array that
 * views the shared memory region; the engine writes no more inputs there. */
#define BERTH_WP_FLAG_KEPT_INPUTS 0x0001u

typedef struct berth_wp_header {
  uint32_t length; /* payload bytes after the header */
  uint16_t type;   /* berth_wp_type */
  uint16_t flags;  /* 0, or BERTH_WP_FLAG_KEPT_INPUTS on RESULT/ERROR */
  uint64_t id;     /* INFER: batch id, echoed by RESULT/ERROR; else 0 */
} berth_wp_header;

void berth_wp_header_encode(uint8_t out[BERTH_WP_HEADER_SIZE],
                            const berth_wp_header *h);
/* Decodes and checks a header: known type, flags 0 (or the flags its type
 * may carry), length <= max_length.
 * BERTH_E_PARSE / BERTH_E_TOO_LARGE on failure. */
int berth_wp_header_decode(const uint8_t in[BERTH_WP_HEADER_SIZE],
                           uint32_t max_length, berth_wp_header *h,
                           berth_errmsg *err);

/* A tensor record's location field (version 3; 0 in earlier versions). */
#define BERTH_WP_LOC_INLINE 0u /* data_len bytes of data follow the name */
#define BERTH_WP_LOC_SHM 1u    /* a u64 offset into the region follows */

/* The part of a shared memory region a decoded tensor set may point into:
 * offsets lo..hi of the mapping at base. Borrowed. */
typedef struct berth_wp_region {
  const uint8_t *base;
  size_t lo, hi;
} berth_wp_region;

/* Tensor-set payload (INFER and RESULT). params is a JSON object text of
 * params_len bytes (0 for none). */
int berth_wp_tensors_size(const berth_tensor *ts, size_t n, size_t params_len,
                          size_t *out);
/* Writes the payload into buf (cap bytes, at least berth_wp_tensors_size). */
int berth_wp_tensors_encode(const berth_tensor *ts, size_t n,
                            const char *params, size_t params_len, uint8_t *buf,
                            size_t cap, size_t *written);
/* Writes tensor t's record head (everything before its data: fixed part,
 * shape, data_len, name, padding) at out, which has room for
 * BERTH_WP_TENSOR_HEAD_MAX bytes; returns the bytes written. t must be one
 * berth_wp_tensors_size accepts. Used by the scatter-gather encoder. */
#define BERTH_WP_TENSOR_HEAD_MAX (8 + 8 * BERTH_MAX_DIMS + 8 + 65535 + 7)
size_t berth_wp_tensor_head_encode(const berth_tensor *t, uint8_t *out);
/* The same with a location (BERTH_WP_LOC_*): for BERTH_WP_LOC_SHM the
 * record's data is the 8-byte offset the caller writes after the head. */
size_t berth_wp_tensor_head_encode_at(const berth_tensor *t, uint32_t location,
                                      uint8_t *out);
/* Decodes a payload of len bytes. On success *out is a malloc'd array of *n
 * tensors whose names are owned and whose data BORROWS from buf (buf must
 * outlive them, free with berth_tensors_free); *params and *params_len point into
 * buf. Every tensor passes berth_tensor_check. BERTH_E_PARSE on any
 * inconsistency, with a message. */
int berth_wp_tensors_decode(const uint8_t *buf, size_t len, berth_tensor **out,
                            size_t *n, const char **params, size_t *params_len,
                            berth_errmsg *err);
/* The same, where records may also be in shared memory (version 3): region
 * NULL refuses them (BERTH_E_PARSE); otherwise a record's offset must be a
 * multiple of 8 and its data lie within region->lo..hi. The region is
 * writable by the worker while it is read, so fixed-size data borrows from
 * it (its bytes may change, its size cannot) and BYTES data, whose length
 * prefixes must stay as checked, is copied (owned by the tensor). */
int berth_wp_tensors_decode_region(const uint8_t *buf, size_t len,
                                   const berth_wp_region *region,
                                   berth_tensor **out, size_t *n,
                                   const char **params, size_t *params_len,
                                   berth_errmsg *err);

#endif
