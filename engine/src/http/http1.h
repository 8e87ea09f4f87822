/* Berth engine: a strict, bounded, incremental HTTP/1.1 request parser.
 *
 * Why our own: Debian 12's http-parser is unmaintained upstream and llhttp
 * is not packaged (docs/http.md). The parser does no I/O: the connection
 * feeds it bytes as they arrive and it says when a whole request (head and
 * body) is ready. Every size is bounded by berth_h1_limits; nothing the peer
 * sends can make it allocate more.
 *
 * Accepted: request-line `METHOD SP origin-form SP HTTP/1.x CRLF` (bare LF
 * tolerated as line end), header fields per RFC 9110 token/field-value rules,
 * Content-Length or Transfer-Encoding: chunked (not both), chunk extensions
 * skipped, trailers skipped. Rejected with a status: obs-fold, whitespace
 * before the colon, conflicting Content-Length values, TE other than chunked,
 * HTTP versions other than 1.0/1.1, control characters, a missing Host in
 * HTTP/1.1 or more than one Host, a request target not in origin-form
 * (except `OPTIONS *`).
 */
#ifndef BERTH_HTTP1_H
#define BERTH_HTTP1_H

#include <stdbool.h>
#include <stddef.h>

#include "berth/error.h"

typedef struct berth_h1_limits {
  size_t max_head_bytes; /* request line + headers, e.g. 16 KiB -> 431 */
  size_t max_headers;    /* header fields, e.g. 100 -> 431 */
  size_t max_body_bytes; /* decoded body -> 413 */
} berth_h1_limits;

typedef struct berth_h1_header {
  const char *name; /* points into the parser's buffer; not NUL-terminated */
  size_t name_len;
  const char *value; /* leading/trailing whitespace trimmed */
  size_t value_len;
} berth_h1_header;

/* A parsed request. Every pointer points into the parser and stays valid
 * until berth_h1_parser_next or berth_h1_parser_free. */
typedef struct berth_h1_request {
  const char *method;
  size_t method_len;
  const char *target;
  size_t target_len; /* origin-form: path[?query] */
  int version_minor; /* 0 or 1 */
  berth_h1_header *headers;
  size_t n_headers;
  const char *body;
  size_t body_len;      /* de-chunked */
  bool keep_alive;      /* from version and Connection header */
  bool expect_continue; /* Expect: 100-continue was sent */
} berth_h1_request;

typedef enum {
  BERTH_H1_NEED_MORE = 0, /* feed more bytes */
  BERTH_H1_HEAD_DONE = 1, /* head parsed, body still coming (returned once
                              per request, only when a body is expected;
                              the caller may answer 100 Continue now) */
  BERTH_H1_DONE = 2,      /* a whole request is in parser->req */
} berth_h1_event;

typedef struct berth_h1_parser berth_h1_parser; /* opaque */

/* Allocates a parser. NULL on allocation failure. */
berth_h1_parser *berth_h1_parser_new(const berth_h1_limits *limits);
void berth_h1_parser_free(berth_h1_parser *p);

/* Feeds len bytes. Sets *consumed to the bytes it took (it stops right after
 * a complete request; the caller feeds the rest after berth_h1_parser_next).
 * Returns a berth_h1_event (>= 0) or a negative berth_status on a bad
 * request: then *http_status is the answer to send (400, 413, 431, 501, 505)
 * and err says why; the connection must be closed after answering. */
int berth_h1_parse(berth_h1_parser *p, const char *data, size_t len,
                   size_t *consumed, int *http_status, berth_errmsg *err);

/* The request, valid after BERTH_H1_HEAD_DONE (head only) or BERTH_H1_DONE. */
const berth_h1_request *berth_h1_parser_request(const berth_h1_parser *p);

/* After BERTH_H1_DONE: hands the de-chunked body to the caller (malloc'd, the
 * caller free()s it; NULL when the body is empty) so that it can outlive the
 * parser without a copy. The request's body then reads as empty. */
char *berth_h1_parser_take_body(berth_h1_parser *p, size_t *len);

/* Forgets the current request to parse the next one on the connection. */
void berth_h1_parser_next(berth_h1_parser *p);

/* Case-insensitive lookup; NULL if absent. */
const berth_h1_header *berth_h1_find_header(const berth_h1_request *r,
                                            const char *name);

/* Standard reason phrase for a status ("Not Found"); "Unknown" if none. */
const char *berth_http_reason(int status);

/* Response header checks shared by HTTP/1.1 and HTTP/2 (NUL-terminated):
 * a field name is an RFC 9110 token; a field value holds no control
 * character but tab. */
bool berth_http_is_token(const char *s);
bool berth_http_is_field_value(const char *s);

#endif
