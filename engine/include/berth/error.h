/* Berth engine: the one error enum.
 *
 * Every fallible function in the engine returns a berth_status: 0 (BERTH_OK)
 * on success, a negative BERTH_E_* value on failure. The numbers never change
 * once released. A human-readable detail (which input, which key) travels in a
 * caller-provided berth_errmsg; the status is mapped to a protocol error
 * (HTTP status, later gRPC code) once, at the edge, in rest.c.
 */
#ifndef BERTH_ERROR_H
#define BERTH_ERROR_H

#include <stddef.h>

/* X(NAME, value, message) */
#define BERTH_STATUS_MAP(X)                                                   \
  X(OK, 0, "success")                                                         \
  X(NOMEM, -1, "out of memory")                                               \
  X(INVALID, -2, "invalid request")                                           \
  X(PARSE, -3, "malformed input")                                             \
  X(TOO_LARGE, -4, "payload too large")                                       \
  X(NOT_FOUND, -5, "not found")                                               \
  X(UNAVAILABLE, -6, "not ready")                                             \
  X(MODEL, -7, "model failed")                                                \
  X(WORKER_DIED, -8, "model worker exited")                                   \
  X(OVERLOAD, -9, "server overloaded")                                        \
  X(TIMEOUT, -10, "timed out")                                                \
  X(IO, -11, "input/output error")                                            \
  X(CONFIG, -12, "invalid configuration")                                     \
  X(UNSUPPORTED, -13, "not supported")                                        \
  X(SHUTDOWN, -14, "server is shutting down")                                 \
  X(METHOD, -15, "method not allowed")                                        \
  X(INTERNAL, -16, "internal error")                                          \
  X(UNAUTHENTICATED, -17, "missing or unknown credentials")                   \
  X(FORBIDDEN, -18, "not allowed with these credentials")                  \
  X(MEDIA_TYPE, -19, "unsupported media type")

typedef enum {
#define BERTH_STATUS_ENUM_(name, value, msg) BERTH_E_##name = value,
  BERTH_STATUS_MAP(BERTH_STATUS_ENUM_)
#undef BERTH_STATUS_ENUM_
} berth_status;

#define BERTH_OK BERTH_E_OK

/* Short constant name ("TOO_LARGE") and message for a status; never NULL. */
const char *berth_status_name(int status);
const char *berth_status_message(int status);

/* Detail for the one error a call returns. Fixed size, lives on the
 * caller's stack; functions write a NUL-terminated message into it. */
#define BERTH_ERRMSG_SIZE 512
typedef struct berth_errmsg {
  char msg[BERTH_ERRMSG_SIZE];
} berth_errmsg;

/* Formats a message into err (if err is not NULL) and returns status, so a
 * failing path can read `return berth_errf(err, BERTH_E_INVALID, "...", ...);`. */
int berth_errf(berth_errmsg *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
