/* Fuzz target: the HTTP/1.1 request parser (http1.c).
 *
 * The first byte picks the limits and how the rest is cut into feeds (all at
 * once, or fixed pieces of 1..64 bytes). The input is parsed as a stream of
 * pipelined requests twice: in those pieces and in one piece. Both runs
 * must see the same requests and the same final error: a parser whose
 * answer depends on where the reads fell would trap here. Every field of
 * every request is read, so an out-of-bounds pointer shows under ASan. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static uint64_t digest(const berth_h1_request *r, const berth_h1_limits *lim) {
  uint64_t h = 1469598103934665603ull;
  if (r->method_len == 0 || r->target_len == 0 ||
      r->n_headers > lim->max_headers || r->body_len > lim->max_body_bytes ||
      (r->version_minor != 0 && r->version_minor != 1))
    __builtin_trap();
  h = mix(h, r->method, r->method_len);
  h = mix(h, r->target, r->target_len);
  for (size_t i = 0; i < r->n_headers; i++) {
    if (r->headers[i].name_len == 0)
      __builtin_trap();
    h = mix(h, r->headers[i].name, r->headers[i].name_len);
    h = mix(h, r->headers[i].value, r->headers[i].value_len);
  }
  h = mix(h, r->body, r->body_len);
  unsigned char flags[3] = {(unsigned char)r->version_minor, r->keep_alive,
                            r->expect_continue};
  h = mix(h, flags, sizeof flags);
  const berth_h1_header *cl = berth_h1_find_header(r, "content-length");
  if (cl != NULL)
    h = mix(h, cl->value, cl->value_len);
  return h;
}

/* Parses the whole input as pipelined requests in pieces of `step` bytes
 * (0: one piece); returns a digest of everything seen. */
static uint64_t run(const uint8_t *data, size_t size, size_t step,
                    const berth_h1_limits *lim, bool take) {
  berth_h1_parser *p = berth_h1_parser_new(lim);
  if (p == NULL)
    return 0;
  uint64_t h = 14695981039346656037ull;
  size_t off = 0;
  int requests = 0;
  while (off < size) {
    size_t n = size - off;
    if (step != 0 && n > step)
      n = step;
    size_t used = 0;
    int status = 0;
    berth_errmsg err;
    int rc =
        berth_h1_parse(p, (const char *)data + off, n, &used, &status, &err);
    if (used > n)
      __builtin_trap();
    off += used;
    if (rc < 0) {
      if (status != 400 && status != 413 && status != 431 && status != 501 &&
          status != 503 && status != 505)
        __builtin_trap();
      if (memchr(err.msg, '\0', sizeof err.msg) == NULL)
        __builtin_trap();
      h = mix(h, &status, sizeof status);
      break;
    }
    if (rc == BERTH_H1_NEED_MORE) {
      if (used != n)
        __builtin_trap();
      continue;
    }
    if (rc == BERTH_H1_HEAD_DONE) {
      const berth_h1_request *r = berth_h1_parser_request(p);
      if (r->method_len == 0 || r->body_len != 0)
        __builtin_trap();
      continue;
    }
    /* DONE */
    const berth_h1_request *r = berth_h1_parser_request(p);
    h = mix(h, "|", 1);
    h ^= digest(r, lim);
    if (take) {
      size_t len = 0;
      char *body = berth_h1_parser_take_body(p, &len);
      if ((body == NULL) != (len == 0))
        __builtin_trap();
      free(body);
    }
    berth_h1_parser_next(p);
    if (++requests > 10000)
      __builtin_trap();
  }
  berth_h1_parser_free(p);
  return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  uint8_t ctl = data[0];
  data++;
  size--;
  static const size_t steps[8] = {0, 1, 2, 3, 7, 16, 33, 64};
  size_t step = steps[ctl & 7];
  bool take = (ctl & 8) != 0;
  berth_h1_limits lim;
  if (ctl & 0x10) {
    lim = (berth_h1_limits){
        .max_head_bytes = 64, .max_headers = 3, .max_body_bytes = 16};
  } else {
    lim = (berth_h1_limits){
        .max_head_bytes = 4096, .max_headers = 32, .max_body_bytes = 4096};
  }
  uint64_t a = run(data, size, step, &lim, take);
  uint64_t b = run(data, size, 0, &lim, !take);
  if (a != b)
    __builtin_trap(); /* the feed boundaries changed the result */
  return 0;
}
