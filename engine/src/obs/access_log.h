/* Berth engine: request ids and the access log line every frontend writes
 * (REST over HTTP/1.1 and HTTP/2, gRPC, KServe v1): one record shape,
 * documented in docs/logging.md. Loop thread only. */
#ifndef BERTH_ACCESS_LOG_H
#define BERTH_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A request id is at most this many bytes (ids given by clients longer
 * than that, or with bytes outside '!'..'~', are replaced by a fresh one). */
#define BERTH_REQUEST_ID_MAX 128

/* Copies a client's id (len bytes at s) into out, NUL-terminated, when it
 * is acceptable; false (out untouched) otherwise. */
bool berth_request_id_take(const char *s, size_t len,
                           char out[BERTH_REQUEST_ID_MAX + 1]);
/* A fresh id: 32 lower-case hex digits (a 128-bit value from a generator
 * seeded once from the system's random source). */
void berth_request_id_new(char out[BERTH_REQUEST_ID_MAX + 1]);

typedef struct berth_access_record {
  const char *protocol; /* "http/1.1", "http/1.0", "http/2", "grpc" */
  const char *method;   /* HTTP method, or the gRPC method name */
  size_t method_len;
  const char *path; /* HTTP path without the query; gRPC: NULL */
  size_t path_len;
  const char *request_id; /* NUL-terminated or NULL */
  const char *model;      /* NUL-terminated or NULL (none named) */
  const char *version;    /* NUL-terminated or NULL */
  int status;             /* HTTP status, or the grpc-status code */
  double latency_ms;      /* received -> answered */
  uint64_t bytes_in;      /* request body / gRPC message bytes */
  uint64_t bytes_out;     /* response body / gRPC message bytes */
  const char *peer;       /* "address:port" or NULL */
} berth_access_record;

/* Writes the record as one "access" line at level info. The caller checks
 * whether the access log is on (log.access_log). */
void berth_access_log(const berth_access_record *r);

#endif
