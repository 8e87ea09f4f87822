/* Berth engine: Triton's system shared-memory extension at the edge: the
 * REST and gRPC register/unregister/status handlers, and the inference
 * path's use of regions (inputs read from them, outputs written into them).
 * The regions themselves are core/shm_registry.c's; the registry lives in
 * engine->shm, made by berth_shm_module.
 *
 * Everything runs on the loop thread. */
#ifndef BERTH_SHM_API_H
#define BERTH_SHM_API_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "infer.h"
#include "rest.h"
#include "buf.h"

extern const berth_module berth_shm_module;

/* Points every input of r that names a region at the region's bytes
 * (borrowed, no copy; BYTES inputs are copied so that their length
 * prefixes cannot change after the check), takes a reference on each
 * region used until r is cleared (r->hold_release), and checks that the
 * outputs naming a region name a registered one. BERTH_E_INVALID with a
 * message for an unknown region, a range outside it, or a size that does
 * not fit the input's shape. */
int berth_shm_resolve(berth_engine *e, berth_infer_request *r,
                      berth_errmsg *err);

/* Copies each output that req asks to have in a region into it.
 * BERTH_E_INVALID when a region is gone or too small for the output. */
int berth_shm_write_outputs(berth_engine *e, const berth_infer_request *req,
                            const berth_infer_response *resp,
                            berth_errmsg *err);

/* REST (rest_routes.c's table). */
void berth_rest_shm_status(berth_engine *e, berth_http_req *req,
                           const berth_rest_match *mt);
void berth_rest_shm_register(berth_engine *e, berth_http_req *req,
                             const berth_rest_match *mt);
void berth_rest_shm_unregister(berth_engine *e, berth_http_req *req,
                               const berth_rest_match *mt);
/* CUDA shared memory as Triton without GPUs: status lists no region,
 * unregister succeeds, register is refused (400 / INVALID_ARGUMENT). */
void berth_rest_cuda_shm_status(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt);
void berth_rest_cuda_shm_unregister(berth_engine *e, berth_http_req *req,
                                    const berth_rest_match *mt);
void berth_rest_cuda_shm_register(berth_engine *e, berth_http_req *req,
                                  const berth_rest_match *mt);

/* gRPC unary methods (grpc.c's table; berth_grpc_unary_fn). */
int berth_grpc_shm_status(berth_engine *e, const uint8_t *msg, size_t len,
                          berth_buf *out, berth_errmsg *err);
int berth_grpc_shm_register(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err);
int berth_grpc_shm_unregister(berth_engine *e, const uint8_t *msg, size_t len,
                              berth_buf *out, berth_errmsg *err);
int berth_grpc_cuda_shm_none(berth_engine *e, const uint8_t *msg, size_t len,
                             berth_buf *out, berth_errmsg *err);
int berth_grpc_cuda_shm_register(berth_engine *e, const uint8_t *msg,
                                 size_t len, berth_buf *out, berth_errmsg *err);

#endif
