/* Berth engine: the Open Inference Protocol's gRPC service,
 * inference.GRPCInferenceService, on its own port (server.grpc_port).
 *
 * gRPC runs over the engine's HTTP/2 transport (httpd.h, with streamed
 * request bodies and streamed answers with trailers). grpc.c owns the calls:
 * framing, deadlines (grpc-timeout, handed to the job), status codes, the
 * inference methods (ModelInfer, ModelStreamInfer); grpc_meta.c answers the
 * other methods (health, metadata, configuration, statistics, repository).
 * Messages are encoded and decoded by codec_grpc.c. The same port serves
 * gRPC's health service, grpc.health.v1.Health (grpc_health.c), and server
 * reflection, grpc.reflection.v1(alpha).ServerReflection (grpc_reflect.c).
 *
 * Ownership: a call holds one reference to its HTTP request until it has
 * ended and every job it submitted is done; a job is freed when the
 * scheduler releases it. Every berth_status becomes a gRPC status in one
 * place, berth_grpc_code.
 */
#ifndef BERTH_GRPC_H
#define BERTH_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "engine.h"

/* gRPC status codes (the protocol's numbers). */
typedef enum berth_grpc_code {
  BERTH_GRPC_OK = 0,
  BERTH_GRPC_CANCELLED = 1,
  BERTH_GRPC_UNKNOWN = 2,
  BERTH_GRPC_INVALID_ARGUMENT = 3,
  BERTH_GRPC_DEADLINE_EXCEEDED = 4,
  BERTH_GRPC_NOT_FOUND = 5,
  BERTH_GRPC_PERMISSION_DENIED = 7,
  BERTH_GRPC_RESOURCE_EXHAUSTED = 8,
  BERTH_GRPC_FAILED_PRECONDITION = 9,
  BERTH_GRPC_UNIMPLEMENTED = 12,
  BERTH_GRPC_INTERNAL = 13,
  BERTH_GRPC_UNAVAILABLE = 14,
  BERTH_GRPC_UNAUTHENTICATED = 16,
} berth_grpc_code;

/* The gRPC status for a berth_status (rest.c has the HTTP one). */
berth_grpc_code berth_grpc_code_for(int status);

/* The gRPC listener's handler and body callback (arg: the engine); the
 * REST listener hands them its HTTP/2 requests of type application/grpc,
 * so that one port answers both (docs/gateway.md). */
void berth_grpc_handle(berth_http_req *req, void *arg);
size_t berth_grpc_on_body(berth_http_req *req, const char *data, size_t len,
                          bool end, void *arg);

/* Starts the listener on cfg.host:cfg.grpc_port into e->grpc_httpd. */
int berth_grpc_start(berth_engine *e, berth_errmsg *err);
/* The gRPC module (main.c's list): berth_grpc_start. */
extern const berth_module berth_grpc_module;

/* ---- grpc_meta.c: the unary methods other than ModelInfer ----
 * Each decodes its request message (msg, len bytes) and appends its framed
 * response message to out, or returns a berth_status with err saying why
 * (BERTH_E_PARSE for a malformed message, BERTH_E_NOT_FOUND for an unknown
 * model, BERTH_E_METHOD for what Berth does not do). */
typedef int (*berth_grpc_unary_fn)(berth_engine *e, const uint8_t *msg,
                                   size_t len, berth_buf *out,
                                   berth_errmsg *err);

int berth_grpc_server_live(berth_engine *e, const uint8_t *msg, size_t len,
                           berth_buf *out, berth_errmsg *err);
int berth_grpc_server_ready(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err);
int berth_grpc_model_ready(berth_engine *e, const uint8_t *msg, size_t len,
                           berth_buf *out, berth_errmsg *err);
int berth_grpc_server_metadata(berth_engine *e, const uint8_t *msg, size_t len,
                               berth_buf *out, berth_errmsg *err);
int berth_grpc_model_metadata(berth_engine *e, const uint8_t *msg, size_t len,
                              berth_buf *out, berth_errmsg *err);
int berth_grpc_model_config(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err);
int berth_grpc_model_statistics(berth_engine *e, const uint8_t *msg, size_t len,
                                berth_buf *out, berth_errmsg *err);
int berth_grpc_repository_index(berth_engine *e, const uint8_t *msg, size_t len,
                                berth_buf *out, berth_errmsg *err);
/* RepositoryModelLoad (load) or RepositoryModelUnload: decodes the
 * request and starts the work through repository.c, which calls done(arg,
 * status, msg) exactly once, possibly before this returns. Returns an
 * error (and done is not called) when the request is not valid. The
 * "config" parameter (a model entry as JSON or YAML text) adds or replaces
 * a version; "version" picks the version to unload; "file:" parameters are
 * refused; PERMISSION_DENIED (BERTH_E_FORBIDDEN) unless the model control
 * mode is explicit. admin: the caller sent an admin token (entries whose
 * runtime runs code need one, repository.c). */
int berth_grpc_repository_start(berth_engine *e, const uint8_t *msg, size_t len,
                                bool load, bool admin, berth_repo_done_cb done,
                                void *arg, berth_errmsg *err);

/* ---- calls, for the services outside grpc.c ---- */

/* One call (one HTTP/2 stream); grpc.c owns it. */
typedef struct berth_grpc_call berth_grpc_call;

/* What a service that keeps a call open (grpc_health.c's Watch) may do
 * with it; grpc.c hands these over with the call, so the service needs no
 * link to grpc.c (as a libuv handle's callbacks). */
typedef struct berth_grpc_call_ops {
  /* Sends one framed message on the call (out is emptied); nothing when
   * the call has ended. Returns whether the call is still open: when
   * false, the call may be gone and must not be used again. */
  bool (*send)(berth_grpc_call *c, berth_buf *out);
  /* Ends the call with a status and message (trailers); the call may be
   * gone after this (it must not be used again). */
  void (*end)(berth_grpc_call *c, berth_grpc_code code, const char *msg);
  /* Bytes of answers the client has not read yet. */
  size_t (*unread)(const berth_grpc_call *c);
} berth_grpc_call_ops;

/* ---- grpc_health.c: grpc.health.v1.Health ---- */

/* Check: the unary method. */
int berth_grpc_health_check(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err);

/* Watch: one open call, owned by the engine's health state while the call
 * lasts. */
typedef struct berth_grpc_watch berth_grpc_watch;
/* Starts watching the service named in the request message msg: *out is
 * set first, then the current status is sent on c (which may end the call:
 * grpc.c then calls unwatch). Returns BERTH_E_PARSE or BERTH_E_INVALID for a
 * bad request (nothing sent, *out NULL). */
int berth_grpc_health_watch(berth_engine *e, berth_grpc_call *c,
                            const berth_grpc_call_ops *ops, const uint8_t *msg,
                            size_t len, berth_grpc_watch **out,
                            berth_errmsg *err);
/* The call ended (grpc.c): frees w. NULL does nothing. */
void berth_grpc_health_unwatch(berth_engine *e, berth_grpc_watch *w);
/* The server started draining: every Watch gets NOT_SERVING, then its
 * call ends UNAVAILABLE (berth_engine_begin_drain). */
void berth_grpc_health_drain(berth_engine *e);
/* Ends the remaining Watch calls and closes the health state's timer; the
 * state's memory goes when the timer is closed (engine shutdown). */
void berth_grpc_health_close(berth_engine *e);

/* ---- grpc_reflect.c: ServerReflectionInfo, one request message ---- */
int berth_grpc_reflect_info(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err);

/* Looks up a model by name and version (empty version: the newest);
 * BERTH_E_NOT_FOUND with a message when there is none. */
int berth_grpc_find_model(berth_engine *e, const char *name,
                          const char *version, berth_model **out,
                          berth_errmsg *err);

#endif
