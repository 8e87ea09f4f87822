/* Berth engine: the strict, bounded, incremental HTTP/1.1 request parser.
 *
 * Shape: the head (request line and header fields) is collected byte-exact
 * into one bounded buffer until the empty line that ends it, then parsed in
 * one pass; the header table points into that buffer. The body is read by a
 * small state machine (Content-Length or chunked) into a second bounded
 * buffer. Every state survives a feed boundary anywhere, down to one byte
 * per call. Errors are sticky: once a request is bad, every later call
 * returns the same error until the parser is freed.
 */
#include "http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"

enum {
  H1_HEAD,          /* collecting the head */
  H1_BODY,          /* Content-Length body */
  H1_CHUNK_SIZE,    /* hex digits of a chunk-size line */
  H1_CHUNK_BWS,     /* whitespace after the size, before ';' */
  H1_CHUNK_EXT,     /* a chunk extension, skipped */
  H1_CHUNK_SIZE_LF, /* CR seen, LF must follow */
  H1_CHUNK_DATA,
  H1_CHUNK_DATA_CR, /* CRLF after chunk data */
  H1_CHUNK_DATA_LF,
  H1_TRAILER, /* trailer lines until the empty line, skipped */
  H1_DONE,
  H1_ERROR,
};

#define H1_MAX_LEADING_EMPTY_LINES 8
#define H1_MAX_CHUNK_LINE 4096 /* chunk-size line with extensions */
#define H1_BODY_PREALLOC                                                       \
  (1u << 20)                     /* reserve at most this from Content-Length */
#define H1_BODY_KEEP (64u << 10) /* body memory kept between requests */

struct berth_h1_parser {
  berth_h1_limits lim;
  int state;
  /* head */
  berth_buf head;        /* max = lim.max_head_bytes */
  size_t line_len;       /* bytes of the current line so far, LF excluded */
  bool line_cr;          /* the current line's last byte is CR */
  size_t n_lines;        /* complete non-empty lines */
  size_t n_leading;      /* empty lines skipped before the request line */
  berth_h1_header *hdrs; /* grows up to lim.max_headers entries */
  size_t hdrs_cap;
  /* body */
  berth_buf body;     /* max = lim.max_body_bytes */
  uint64_t remaining; /* Content-Length left, or the current chunk's */
  bool chunk_digits;  /* a hex digit was seen on this chunk-size line */
  size_t chunk_line;  /* bytes of the current chunk-size line */
  size_t trailer_bytes;
  bool body_taken;
  /* result */
  berth_h1_request req;
  int err_status; /* sticky error */
  int err_code;
  char err_msg[160];
};

/* ---- character classes (RFC 9110) ---- */

static bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
      (c >= 'A' && c <= 'Z'))
    return true;
  switch (c) { /* without strchr: header names have dashes */
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return true;
  default:
    return false;
  }
}

/* field-content bytes: VCHAR, SP, HTAB, obs-text */
static bool is_field_byte(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static bool span_eq(const char *s, size_t n, const char *lit) {
  size_t m = strlen(lit);
  return n == m && strncasecmp(s, lit, m) == 0;
}

/* Records the sticky error and returns it. */
static int h1_fail(berth_h1_parser *p, int code, int http_status,
                   const char *msg, int *out_status, berth_errmsg *err) {
  p->state = H1_ERROR;
  p->err_code = code;
  p->err_status = http_status;
  snprintf(p->err_msg, sizeof p->err_msg, "%s", msg);
  if (out_status != NULL)
    *out_status = http_status;
  return berth_errf(err, code, "%s", msg);
}

/* ---- lifecycle ---- */

berth_h1_parser *berth_h1_parser_new(const berth_h1_limits *limits) {
  berth_h1_parser *p = calloc(1, sizeof *p);
  if (p == NULL)
    return NULL;
  if (limits != NULL) {
    p->lim = *limits;
  } else {
    p->lim.max_head_bytes = 16 * 1024;
    p->lim.max_headers = 100;
    p->lim.max_body_bytes = 1024 * 1024;
  }
  berth_buf_init(&p->head, p->lim.max_head_bytes);
  berth_buf_init(&p->body, p->lim.max_body_bytes);
  p->state = H1_HEAD;
  return p;
}

void berth_h1_parser_free(berth_h1_parser *p) {
  if (p == NULL)
    return;
  berth_buf_free(&p->head);
  berth_buf_free(&p->body);
  free(p->hdrs);
  free(p);
}

void berth_h1_parser_next(berth_h1_parser *p) {
  if (p->state == H1_ERROR)
    return; /* a bad request ends the connection; stay failed */
  berth_buf_reset(&p->head);
  if (p->body.cap > H1_BODY_KEEP)
    berth_buf_free(&p->body);
  else
    berth_buf_reset(&p->body);
  p->state = H1_HEAD;
  p->line_len = 0;
  p->line_cr = false;
  p->n_lines = 0;
  p->n_leading = 0;
  p->remaining = 0;
  p->chunk_digits = false;
  p->chunk_line = 0;
  p->trailer_bytes = 0;
  p->body_taken = false;
  memset(&p->req, 0, sizeof p->req);
}

const berth_h1_request *berth_h1_parser_request(const berth_h1_parser *p) {
  return &p->req;
}

char *berth_h1_parser_take_body(berth_h1_parser *p, size_t *len) {
  if (p->state != H1_DONE || p->body_taken) {
    if (len != NULL)
      *len = 0;
    return NULL;
  }
  p->body_taken = true;
  p->req.body = "";
  p->req.body_len = 0;
  return berth_buf_detach(&p->body, len);
}

/* ---- head ---- */

static int add_header(berth_h1_parser *p, const berth_h1_header *h) {
  if (p->req.n_headers == p->hdrs_cap) {
    size_t cap = p->hdrs_cap ? p->hdrs_cap * 2 : 16;
    if (cap > p->lim.max_headers)
      cap = p->lim.max_headers;
    berth_h1_header *n = realloc(p->hdrs, cap * sizeof *n);
    if (n == NULL)
      return BERTH_E_NOMEM;
    p->hdrs = n;
    p->hdrs_cap = cap;
    p->req.headers = n;
  }
  p->hdrs[p->req.n_headers++] = *h;
  return BERTH_OK;
}

/* Parses "METHOD SP target SP HTTP/1.x" (line without its line end). */
static int parse_request_line(berth_h1_parser *p, const char *s, size_t n,
                              int *st, berth_errmsg *err) {
  size_t i = 0;
  while (i < n && is_tchar((unsigned char)s[i]))
    i++;
  if (i == 0 || i == n || s[i] != ' ')
    return h1_fail(p, BERTH_E_PARSE, 400, "malformed request line (method)", st,
                   err);
  p->req.method = s;
  p->req.method_len = i;
  size_t t = ++i;
  while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f)
    i++;
  if (i == t || i == n || s[i] != ' ')
    return h1_fail(p, BERTH_E_PARSE, 400, "malformed request line (target)", st,
                   err);
  p->req.target = s + t;
  p->req.target_len = i - t;
  i++;
  const char *v = s + i;
  size_t vn = n - i;
  if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
      v[6] != '.' || v[7] < '0' || v[7] > '9')
    return h1_fail(p, BERTH_E_PARSE, 400, "malformed request line (version)",
                   st, err);
  if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
    return h1_fail(p, BERTH_E_UNSUPPORTED, 505, "HTTP version not supported",
                   st, err);
  p->req.version_minor = v[7] - '0';
  bool star = p->req.target_len == 1 && s[t] == '*';
  if (s[t] != '/' && !(star && span_eq(s, p->req.method_len, "OPTIONS")))
    return h1_fail(p, BERTH_E_PARSE, 400,
                   "request target must be an absolute path (origin-form)", st,
                   err);
  return BERTH_OK;
}

static int parse_field_line(berth_h1_parser *p, const char *s, size_t n,
                            int *st, berth_errmsg *err) {
  if (is_ows((unsigned char)s[0]))
    return h1_fail(p, BERTH_E_PARSE, 400, "obsolete line folding in header", st,
                   err);
  size_t i = 0;
  while (i < n && is_tchar((unsigned char)s[i]))
    i++;
  if (i < n && is_ows((unsigned char)s[i]))
    return h1_fail(p, BERTH_E_PARSE, 400, "whitespace before colon in header",
                   st, err);
  if (i == 0 || i == n || s[i] != ':')
    return h1_fail(p, BERTH_E_PARSE, 400, "malformed header name", st, err);
  berth_h1_header h = {.name = s, .name_len = i};
  i++;
  for (size_t k = i; k < n; k++)
    if (!is_field_byte((unsigned char)s[k]))
      return h1_fail(p, BERTH_E_PARSE, 400, "control character in header value",
                     st, err);
  while (i < n && is_ows((unsigned char)s[i]))
    i++;
  size_t end = n;
  while (end > i && is_ows((unsigned char)s[end - 1]))
    end--;
  h.value = s + i;
  h.value_len = end - i;
  if (p->req.n_headers >= p->lim.max_headers)
    return h1_fail(p, BERTH_E_TOO_LARGE, 431, "too many header fields", st,
                   err);
  if (add_header(p, &h) != BERTH_OK)
    return h1_fail(p, BERTH_E_NOMEM, 503, "out of memory", st, err);
  return BERTH_OK;
}

/* Calls fn on each trimmed, non-empty element of a comma-separated list. */
typedef int (*list_fn)(const char *s, size_t n, void *arg);
static int for_each_element(const char *s, size_t n, list_fn fn, void *arg) {
  size_t i = 0;
  while (i <= n) {
    size_t j = i;
    while (j < n && s[j] != ',')
      j++;
    size_t a = i, b = j;
    while (a < b && is_ows((unsigned char)s[a]))
      a++;
    while (b > a && is_ows((unsigned char)s[b - 1]))
      b--;
    if (b > a) {
      int rc = fn(s + a, b - a, arg);
      if (rc != 0)
        return rc;
    }
    i = j + 1;
  }
  return 0;
}

typedef struct {
  bool seen;
  bool overflow;
  uint64_t value;
  int conflict; /* 1: malformed, 2: differing values */
} cl_state;

static int cl_element(const char *s, size_t n, void *arg) {
  cl_state *cl = arg;
  uint64_t v = 0;
  bool over = false;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') {
      cl->conflict = 1;
      return 1;
    }
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10)
      over = true;
    else
      v = v * 10 + d;
  }
  if (cl->seen && (cl->overflow != over || (!over && cl->value != v))) {
    cl->conflict = 2;
    return 1;
  }
  cl->seen = true;
  cl->overflow = over;
  cl->value = v;
  return 0;
}

typedef struct {
  size_t n;
  bool chunked_only;
} te_state;

static int te_element(const char *s, size_t n, void *arg) {
  te_state *te = arg;
  te->n++;
  te->chunked_only = te->n == 1 && span_eq(s, n, "chunked");
  return 0;
}

typedef struct {
  bool close;
  bool keep_alive;
} conn_state;

static int conn_element(const char *s, size_t n, void *arg) {
  conn_state *c = arg;
  if (span_eq(s, n, "close"))
    c->close = true;
  else if (span_eq(s, n, "keep-alive"))
    c->keep_alive = true;
  return 0;
}

/* The head is complete in p->head: parse it and decide how the body comes. */
static int parse_head(berth_h1_parser *p, int *st, berth_errmsg *err) {
  const char *s = p->head.data;
  size_t n = p->head.len;
  size_t line = 0;
  bool first = true;
  p->req.n_headers = 0;
  p->req.headers = p->hdrs;
  while (line < n) {
    const char *lf = memchr(s + line, '\n', n - line);
    if (lf == NULL)
      break; /* cannot happen: the head ends with an empty line */
    size_t len = (size_t)(lf - (s + line));
    if (len > 0 && s[line + len - 1] == '\r')
      len--;
    if (memchr(s + line, '\r', len) != NULL)
      return h1_fail(p, BERTH_E_PARSE, 400, "bare CR in request head", st, err);
    if (len == 0)
      break; /* the empty line */
    int rc = first ? parse_request_line(p, s + line, len, st, err)
                   : parse_field_line(p, s + line, len, st, err);
    if (rc != BERTH_OK)
      return rc;
    first = false;
    line = (size_t)(lf - s) + 1;
  }

  cl_state cl = {0};
  te_state te = {0};
  conn_state conn = {0};
  bool has_te = false;
  size_t hosts = 0;
  for (size_t i = 0; i < p->req.n_headers; i++) {
    const berth_h1_header *h = &p->hdrs[i];
    if (span_eq(h->name, h->name_len, "content-length")) {
      if (h->value_len == 0)
        cl.conflict = 1;
      else
        for_each_element(h->value, h->value_len, cl_element, &cl);
      if (cl.conflict == 0 && !cl.seen)
        cl.conflict = 1; /* only commas */
      if (cl.conflict == 1)
        return h1_fail(p, BERTH_E_PARSE, 400, "malformed Content-Length", st,
                       err);
      if (cl.conflict == 2)
        return h1_fail(p, BERTH_E_PARSE, 400,
                       "conflicting Content-Length values", st, err);
    } else if (span_eq(h->name, h->name_len, "transfer-encoding")) {
      has_te = true;
      for_each_element(h->value, h->value_len, te_element, &te);
    } else if (span_eq(h->name, h->name_len, "connection")) {
      for_each_element(h->value, h->value_len, conn_element, &conn);
    } else if (span_eq(h->name, h->name_len, "host")) {
      hosts++;
    } else if (span_eq(h->name, h->name_len, "expect")) {
      if (p->req.version_minor == 1 &&
          span_eq(h->value, h->value_len, "100-continue"))
        p->req.expect_continue = true;
    }
  }
  if (hosts > 1)
    return h1_fail(p, BERTH_E_PARSE, 400, "more than one Host header", st, err);
  if (hosts == 0 && p->req.version_minor == 1)
    return h1_fail(p, BERTH_E_PARSE, 400, "missing Host header", st, err);
  if (has_te && p->req.version_minor == 0)
    return h1_fail(p, BERTH_E_PARSE, 400,
                   "Transfer-Encoding in an HTTP/1.0 request", st, err);
  if (has_te && cl.seen)
    return h1_fail(p, BERTH_E_PARSE, 400,
                   "both Content-Length and Transfer-Encoding present", st,
                   err);
  if (has_te && te.n == 0)
    return h1_fail(p, BERTH_E_PARSE, 400, "empty Transfer-Encoding", st, err);
  if (has_te && !te.chunked_only)
    return h1_fail(p, BERTH_E_UNSUPPORTED, 501,
                   "unsupported Transfer-Encoding (only chunked is accepted)",
                   st, err);
  if (p->req.version_minor == 1)
    p->req.keep_alive = !conn.close;
  else
    p->req.keep_alive = conn.keep_alive && !conn.close;

  p->req.body = "";
  p->req.body_len = 0;
  if (has_te) {
    p->state = H1_CHUNK_SIZE;
    p->remaining = 0;
    p->chunk_digits = false;
    p->chunk_line = 0;
    return BERTH_H1_HEAD_DONE;
  }
  if (cl.seen && (cl.overflow || cl.value > p->lim.max_body_bytes))
    return h1_fail(p, BERTH_E_TOO_LARGE, 413, "request body too large", st,
                   err);
  if (cl.seen && cl.value > 0) {
    size_t pre =
        cl.value < H1_BODY_PREALLOC ? (size_t)cl.value : H1_BODY_PREALLOC;
    if (berth_buf_reserve(&p->body, pre) == NULL)
      return h1_fail(p, BERTH_E_NOMEM, 503, "out of memory", st, err);
    p->state = H1_BODY;
    p->remaining = cl.value;
    return BERTH_H1_HEAD_DONE;
  }
  p->state = H1_DONE;
  return BERTH_H1_DONE;
}

/* Collects head bytes up to and including the empty line. */
static int feed_head(berth_h1_parser *p, const char *data, size_t len,
                     size_t *used, int *st, berth_errmsg *err) {
  size_t i = 0, start = 0;
  bool end = false;
  for (; i < len; i++) {
    unsigned char c = (unsigned char)data[i];
    if (c != '\n') {
      p->line_len++;
      p->line_cr = c == '\r';
      continue;
    }
    bool empty = p->line_len == 0 || (p->line_len == 1 && p->line_cr);
    p->line_len = 0;
    p->line_cr = false;
    if (!empty) {
      /* request line + max_headers field lines */
      if (++p->n_lines > p->lim.max_headers + 1)
        return h1_fail(p, BERTH_E_TOO_LARGE, 431, "too many header fields", st,
                       err);
      continue;
    }
    if (p->n_lines == 0) {
      /* empty lines before the request line are ignored (RFC 9112 2.2) */
      if (++p->n_leading > H1_MAX_LEADING_EMPTY_LINES)
        return h1_fail(p, BERTH_E_PARSE, 400,
                       "too many empty lines before request", st, err);
      berth_buf_reset(&p->head);
      start = i + 1;
      continue;
    }
    end = true;
    i++;
    break;
  }
  int rc = berth_buf_append(&p->head, data + start, i - start);
  if (rc == BERTH_E_TOO_LARGE)
    return h1_fail(p, BERTH_E_TOO_LARGE, 431, "request head too large", st,
                   err);
  if (rc != BERTH_OK)
    return h1_fail(p, BERTH_E_NOMEM, 503, "out of memory", st, err);
  *used = i;
  if (!end)
    return BERTH_H1_NEED_MORE;
  return parse_head(p, st, err);
}

/* ---- body ---- */

static int append_body(berth_h1_parser *p, const char *data, size_t n, int *st,
                       berth_errmsg *err) {
  int rc = berth_buf_append(&p->body, data, n);
  if (rc == BERTH_E_TOO_LARGE)
    return h1_fail(p, BERTH_E_TOO_LARGE, 413, "request body too large", st,
                   err);
  if (rc != BERTH_OK)
    return h1_fail(p, BERTH_E_NOMEM, 503, "out of memory", st, err);
  return BERTH_OK;
}

static void chunk_size_done(berth_h1_parser *p) {
  if (p->remaining == 0) {
    p->state = H1_TRAILER;
    p->line_len = 0;
    p->line_cr = false;
    p->trailer_bytes = 0;
  } else {
    p->state = H1_CHUNK_DATA;
  }
}

/* Runs the body state machine over data; stops at the end of the request. */
static int feed_body(berth_h1_parser *p, const char *data, size_t len,
                     size_t *used, int *st, berth_errmsg *err) {
  size_t i = 0;
  while (i < len && p->state != H1_DONE) {
    unsigned char c = (unsigned char)data[i];
    switch (p->state) {
    case H1_BODY:
    case H1_CHUNK_DATA: {
      size_t n = len - i;
      if ((uint64_t)n > p->remaining)
        n = (size_t)p->remaining;
      if (append_body(p, data + i, n, st, err) != BERTH_OK)
        return p->err_code;
      i += n;
      p->remaining -= n;
      if (p->remaining == 0)
        p->state = p->state == H1_BODY ? H1_DONE : H1_CHUNK_DATA_CR;
      continue;
    }
    case H1_CHUNK_SIZE: {
      if (++p->chunk_line > H1_MAX_CHUNK_LINE)
        return h1_fail(p, BERTH_E_PARSE, 400, "chunk-size line too long", st,
                       err);
      int v = hex_value(c);
      if (v >= 0) {
        if (p->remaining > (UINT64_MAX >> 4))
          return h1_fail(p, BERTH_E_TOO_LARGE, 413, "request body too large",
                         st, err);
        p->remaining = p->remaining * 16 + (unsigned)v;
        p->chunk_digits = true;
        if (p->remaining > p->lim.max_body_bytes - p->body.len)
          return h1_fail(p, BERTH_E_TOO_LARGE, 413, "request body too large",
                         st, err);
      } else if (!p->chunk_digits) {
        return h1_fail(p, BERTH_E_PARSE, 400, "malformed chunk size", st, err);
      } else if (c == ';') {
        p->state = H1_CHUNK_EXT;
      } else if (is_ows(c)) {
        p->state = H1_CHUNK_BWS;
      } else if (c == '\r') {
        p->state = H1_CHUNK_SIZE_LF;
      } else if (c == '\n') {
        chunk_size_done(p);
      } else {
        return h1_fail(p, BERTH_E_PARSE, 400, "malformed chunk size", st, err);
      }
      break;
    }
    case H1_CHUNK_BWS:
    case H1_CHUNK_EXT:
      if (++p->chunk_line > H1_MAX_CHUNK_LINE)
        return h1_fail(p, BERTH_E_PARSE, 400, "chunk-size line too long", st,
                       err);
      if (c == '\r') {
        p->state = H1_CHUNK_SIZE_LF;
      } else if (c == '\n') {
        chunk_size_done(p);
      } else if (p->state == H1_CHUNK_BWS && c == ';') {
        p->state = H1_CHUNK_EXT;
      } else if (p->state == H1_CHUNK_BWS ? !is_ows(c) : !is_field_byte(c)) {
        return h1_fail(p, BERTH_E_PARSE, 400, "malformed chunk extension", st,
                       err);
      }
      break;
    case H1_CHUNK_SIZE_LF:
      if (c != '\n')
        return h1_fail(p, BERTH_E_PARSE, 400, "bare CR in chunk-size line", st,
                       err);
      chunk_size_done(p);
      break;
    case H1_CHUNK_DATA_CR:
      if (c == '\r') {
        p->state = H1_CHUNK_DATA_LF;
        break;
      }
      /* a bare LF is tolerated as line end */
      __attribute__((fallthrough));
    case H1_CHUNK_DATA_LF:
      if (c != '\n')
        return h1_fail(p, BERTH_E_PARSE, 400, "missing CRLF after chunk data",
                       st, err);
      p->state = H1_CHUNK_SIZE;
      p->remaining = 0;
      p->chunk_digits = false;
      p->chunk_line = 0;
      break;
    case H1_TRAILER:
      if (++p->trailer_bytes > p->lim.max_head_bytes)
        return h1_fail(p, BERTH_E_TOO_LARGE, 431, "trailer section too large",
                       st, err);
      if (c == '\n') {
        if (p->line_len == 0 || (p->line_len == 1 && p->line_cr))
          p->state = H1_DONE;
        p->line_len = 0;
        p->line_cr = false;
      } else if (p->line_cr) {
        return h1_fail(p, BERTH_E_PARSE, 400, "bare CR in trailer", st, err);
      } else if (p->line_len == 0 && is_ows(c)) {
        return h1_fail(p, BERTH_E_PARSE, 400,
                       "obsolete line folding in trailer", st, err);
      } else if (c != '\r' && !is_field_byte(c)) {
        return h1_fail(p, BERTH_E_PARSE, 400, "control character in trailer",
                       st, err);
      } else {
        p->line_len++;
        p->line_cr = c == '\r';
      }
      break;
    default:
      return h1_fail(p, BERTH_E_INTERNAL, 500, "parser in a bad state", st,
                     err);
    }
    i++;
  }
  *used = i;
  if (p->state != H1_DONE)
    return BERTH_H1_NEED_MORE;
  return BERTH_H1_DONE;
}

int berth_h1_parse(berth_h1_parser *p, const char *data, size_t len,
                   size_t *consumed, int *http_status, berth_errmsg *err) {
  *consumed = 0;
  if (p->state == H1_ERROR) {
    if (http_status != NULL)
      *http_status = p->err_status;
    return berth_errf(err, p->err_code, "%s", p->err_msg);
  }
  if (p->state == H1_DONE)
    return BERTH_H1_DONE;
  size_t used = 0;
  int rc;
  if (p->state == H1_HEAD) {
    rc = feed_head(p, data, len, &used, http_status, err);
    *consumed = used;
    if (rc < 0 || rc == BERTH_H1_NEED_MORE || rc == BERTH_H1_DONE)
      goto out;
    return BERTH_H1_HEAD_DONE; /* once: the state has moved on to the body */
  }
  rc = feed_body(p, data, len, &used, http_status, err);
  *consumed = used;
out:
  if (rc == BERTH_H1_DONE && !p->body_taken) {
    p->req.body = p->body.data != NULL ? p->body.data : "";
    p->req.body_len = p->body.len;
  }
  return rc;
}

/* ---- lookups ---- */

const berth_h1_header *berth_h1_find_header(const berth_h1_request *r,
                                            const char *name) {
  for (size_t i = 0; i < r->n_headers; i++)
    if (span_eq(r->headers[i].name, r->headers[i].name_len, name))
      return &r->headers[i];
  return NULL;
}

const char *berth_http_reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 410:
    return "Gone";
  case 411:
    return "Length Required";
  case 412:
    return "Precondition Failed";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 417:
    return "Expectation Failed";
  case 422:
    return "Unprocessable Content";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 499:
    return "Client Closed Request";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Unknown";
  }
}

bool berth_http_is_token(const char *s) {
  if (*s == '\0')
    return false;
  for (; *s != '\0'; s++)
    if (!is_tchar((unsigned char)*s))
      return false;
  return true;
}

bool berth_http_is_field_value(const char *s) {
  for (; *s != '\0'; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == 0x7f || (ch < 0x20 && ch != '\t'))
      return false;
  }
  return true;
}
