/* Berth engine: the one-pass decoder for the common OIP JSON request
 * (codec_json.h, berth_json_decode_fast).
 *
 * Most requests are {"id"?: "...", "inputs": [{"name", "shape", "datatype",
 * "data"}, ...]} with plain ASCII names and numbers. This decoder reads such
 * a body straight into tensors, without building a jansson document (one
 * allocation per number) and walking it. It accepts a strict subset of what
 * the full decoder accepts and gives the very same result for it; anything
 * else — escapes or non-ASCII in strings, other keys (parameters, outputs),
 * duplicate keys, BYTES/BOOL/FP16/BF16, numbers out of range or too long,
 * element count mismatches, limits reached, any syntax error — makes it
 * return BERTH_E_UNSUPPORTED without a message, and the caller runs the full
 * decoder, which reports errors. The fuzz target checks the two agree. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_json.h"

#define FAST_MAX_INPUTS 16
#define FAST_MAX_NUM 64   /* longest number lexeme taken (else: full path) */
#define NAME_MAX_FAST 256 /* longest name taken (else: full path) */

typedef struct span {
  const char *p;
  size_t n;
} span;

typedef struct fast_input {
  span name;
  span datatype;
  int64_t shape[BERTH_MAX_DIMS];
  uint32_t ndim;
  size_t data_at; /* offset of data's '[' */
  unsigned seen;  /* bit per key: name 1, shape 2, datatype 4, data 8 */
} fast_input;

typedef struct cursor {
  const char *s;
  size_t n, i;
  size_t depth, max_depth;
} cursor;

static void ws(cursor *c) {
  while (c->i < c->n) {
    char ch = c->s[c->i];
    if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
      return;
    c->i++;
  }
}

static bool eat(cursor *c, char ch) {
  ws(c);
  if (c->i < c->n && c->s[c->i] == ch) {
    c->i++;
    return true;
  }
  return false;
}

/* A string of printable ASCII without escapes. */
static bool plain_string(cursor *c, span *out) {
  if (!eat(c, '"'))
    return false;
  size_t start = c->i;
  while (c->i < c->n) {
    unsigned char ch = (unsigned char)c->s[c->i];
    if (ch == '"') {
      out->p = c->s + start;
      out->n = c->i - start;
      c->i++;
      return true;
    }
    if (ch < 0x20 || ch > 0x7E || ch == '\\')
      return false;
    c->i++;
  }
  return false;
}

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* A JSON number lexeme; *integral: no fraction or exponent. */
static bool number(cursor *c, span *out, bool *integral) {
  ws(c);
  size_t i = c->i, start = i;
  const char *s = c->s;
  if (i < c->n && s[i] == '-')
    i++;
  if (i >= c->n || !is_digit(s[i]))
    return false;
  if (s[i] == '0')
    i++;
  else
    while (i < c->n && is_digit(s[i]))
      i++;
  *integral = true;
  if (i < c->n && s[i] == '.') {
    *integral = false;
    i++;
    if (i >= c->n || !is_digit(s[i]))
      return false;
    while (i < c->n && is_digit(s[i]))
      i++;
  }
  if (i < c->n && (s[i] == 'e' || s[i] == 'E')) {
    *integral = false;
    i++;
    if (i < c->n && (s[i] == '+' || s[i] == '-'))
      i++;
    if (i >= c->n || !is_digit(s[i]))
      return false;
    while (i < c->n && is_digit(s[i]))
      i++;
  }
  if (i - start >= FAST_MAX_NUM)
    return false;
  out->p = s + start;
  out->n = i - start;
  c->i = i;
  return true;
}

/* The lexeme as an int64 (false: does not fit). */
static bool lex_int(span v, int64_t *out) {
  char buf[FAST_MAX_NUM];
  memcpy(buf, v.p, v.n);
  buf[v.n] = '\0';
  errno = 0;
  char *end;
  long long x = strtoll(buf, &end, 10);
  if (errno == ERANGE || *end != '\0')
    return false;
  *out = x;
  return true;
}

/* Up to 19 significant digits and |exp10| <= 27 with x87's 64-bit long
 * double, where m and 10^|exp10| are exact: one operation gives r within
 * half a 64-bit ulp of the true value v. Rounding r to double gives the
 * double nearest v unless r lies within 1 unit of the 11 extra bits of a
 * halfway point between two doubles (then v could be on the other side):
 * those rare cases go to strtod. */
static bool wide_exact(uint64_t m, int exp10, double *out) {
#if defined(__x86_64__) && LDBL_MANT_DIG == 64
  if (exp10 < -27 || exp10 > 27 || m == 0)
    return false;
  long double p = 1.0L;
  for (int k = exp10 < 0 ? -exp10 : exp10; k > 0; k--)
    p *= 10.0L; /* exact: 10^27 = 5^27 * 2^27 and 5^27 < 2^64 */
  long double r = exp10 < 0 ? (long double)m / p : (long double)m * p;
  uint64_t bits;
  memcpy(&bits, &r, sizeof bits); /* x87: the 64-bit significand first */
  unsigned low = (unsigned)(bits & 0x7FF);
  if (low >= 0x3FF && low <= 0x401)
    return false;
  *out = (double)r;
  return true;
#else
  (void)m;
  (void)exp10;
  (void)out;
  return false;
#endif
}

/* Clinger's fast path: a decimal whose digits fit 2^53 and whose power of
 * ten is at most 22 in size is one exact double times or over another, so
 * one IEEE operation rounds it correctly — the same double strtod gives.
 * (-1)^neg * m * 10^exp10, m holding at most 19 significant digits. */
static bool decimal_exact(bool neg, uint64_t m, int exp10, double *out) {
  static const double pow10[23] = {
      1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
      1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
  double x;
  if (m <= ((uint64_t)1 << 53) && exp10 >= -22 && exp10 <= 22) {
    x = (double)m;
    x = exp10 < 0 ? x / pow10[-exp10] : x * pow10[exp10];
  } else if (!wide_exact(m, exp10, &x)) {
    return false;
  }
  *out = neg ? -x : x;
  return true;
}

/* The lexeme through strtod: what number_real could not convert exactly. */
static bool lex_double(span v, double *out) {
  char buf[FAST_MAX_NUM];
  memcpy(buf, v.p, v.n);
  buf[v.n] = '\0';
  char *end;
  double x = strtod(buf, &end);
  if (*end != '\0' || x == HUGE_VAL || x == -HUGE_VAL)
    return false; /* jansson refuses an overflow to infinity */
  *out = x;
  return true;
}

static bool span_is(span a, const char *lit) {
  size_t n = strlen(lit);
  return a.n == n && memcmp(a.p, lit, n) == 0;
}

static bool shape_array(cursor *c, fast_input *in) {
  if (!eat(c, '['))
    return false;
  in->ndim = 0;
  if (eat(c, ']'))
    return true;
  do {
    span v;
    bool integral;
    int64_t x;
    if (in->ndim >= BERTH_MAX_DIMS || !number(c, &v, &integral) || !integral ||
        v.p[0] == '-' || !lex_int(v, &x))
      return false;
    in->shape[in->ndim++] = x;
  } while (eat(c, ','));
  return eat(c, ']');
}

/* Conversion of data's leaves (or only their count when out is NULL). */
typedef struct fill {
  berth_dtype dt;
  size_t esize;
  uint8_t *out;
  uint64_t numel, count;
} fill;

static void put_le(uint8_t *dst, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = (uint8_t)(v >> (8 * i));
}

static bool int_in_range(berth_dtype dt, int64_t x) {
  switch (dt) {
  case BERTH_DT_UINT8:
    return x >= 0 && x <= UINT8_MAX;
  case BERTH_DT_UINT16:
    return x >= 0 && x <= UINT16_MAX;
  case BERTH_DT_UINT32:
    return x >= 0 && x <= UINT32_MAX;
  case BERTH_DT_UINT64:
    return x >= 0;
  case BERTH_DT_INT8:
    return x >= INT8_MIN && x <= INT8_MAX;
  case BERTH_DT_INT16:
    return x >= INT16_MIN && x <= INT16_MAX;
  case BERTH_DT_INT32:
    return x >= INT32_MIN && x <= INT32_MAX;
  default:
    return true; /* INT64 */
  }
}

/* Stores x as the next FP32 or FP64 element. */
static bool put_real(fill *f, double x) {
  if (f->count >= f->numel)
    return false; /* too many elements: the full path says so */
  uint8_t *dst = f->out + f->count * f->esize;
  f->count++;
  if (f->dt == BERTH_DT_FP64) {
    memcpy(dst, &x, 8); /* little-endian hosts only (tensor.h) */
    return true;
  }
  if (x >= 0x1.ffffffp127 || x <= -0x1.ffffffp127)
    return false; /* would round to infinity: an error, in full */
  float y = (float)x;
  memcpy(dst, &y, 4);
  return true;
}

/* The value of a number lexeme, as the full decoder reads it: integers
 * through int64, others correctly rounded (the double strtod gives). */
static bool lex_real(span v, bool integral, double *x) {
  if (integral) {
    int64_t i;
    if (!lex_int(v, &i))
      return false;
    *x = (double)i;
    return true;
  }
  return lex_double(v, x);
}

/* Stores an integer lexeme as the next element of an integer tensor
 * (FP32/FP64 numbers go through number_real). */
static bool put_int(fill *f, span v, bool integral) {
  if (f->count >= f->numel)
    return false; /* too many elements: the full path says so */
  uint8_t *dst = f->out + f->count * f->esize;
  f->count++;
  int64_t i;
  if (!integral || !lex_int(v, &i) || !int_in_range(f->dt, i))
    return false;
  put_le(dst, (uint64_t)i, f->esize);
  return true;
}

/* The next number of an FP32/FP64 tensor, lexed (as number() does) and
 * converted in the same pass: the digits are gathered while they are
 * checked. What the one pass cannot convert exactly (more than 18 digits
 * in an integer, 19 significant digits in a decimal, a huge exponent, a
 * value near a rounding boundary) is converted from the lexeme: through
 * int64, or strtod, as the full decoder does. */
static bool number_real(cursor *c, fill *f) {
  ws(c);
  const char *s = c->s;
  size_t i = c->i, start = i, n = c->n;
  bool neg = i < n && s[i] == '-';
  i += neg;
  if (i >= n || !is_digit(s[i]))
    return false;
  uint64_t m = 0;
  int digits = 0, exp10 = 0;
  bool integral = true, whole = true; /* whole: m holds every digit */
  if (s[i] == '0') {
    i++;
  } else {
    for (; i < n && is_digit(s[i]); i++) {
      if (++digits > 19)
        whole = false;
      else
        m = m * 10 + (uint64_t)(s[i] - '0');
    }
  }
  if (i < n && s[i] == '.') {
    integral = false;
    i++;
    if (i >= n || !is_digit(s[i]))
      return false;
    for (; i < n && is_digit(s[i]); i++) {
      exp10--;
      if (m == 0 && s[i] == '0')
        continue; /* leading zeros are not significant */
      if (++digits > 19)
        whole = false;
      else
        m = m * 10 + (uint64_t)(s[i] - '0');
    }
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    integral = false;
    i++;
    bool eneg = i < n && s[i] == '-';
    if (i < n && (s[i] == '+' || s[i] == '-'))
      i++;
    if (i >= n || !is_digit(s[i]))
      return false;
    int e = 0;
    for (; i < n && is_digit(s[i]); i++) {
      if (e > 1000)
        whole = false;
      else
        e = e * 10 + (s[i] - '0');
    }
    exp10 += eneg ? -e : e;
  }
  if (i - start >= FAST_MAX_NUM)
    return false;
  c->i = i;
  double x;
  if (integral && digits <= 18) /* below 10^18: int64 is exact */
    x = (double)(neg ? -(int64_t)m : (int64_t)m);
  else if (integral || !whole || !decimal_exact(neg, m, exp10, &x)) {
    span v = {s + start, i - start};
    if (!lex_real(v, integral, &x))
      return false;
  }
  return put_real(f, x);
}

/* data: nested arrays of numbers, flattened row-major. */
static bool data_array(cursor *c, fill *f, unsigned depth) {
  if (depth > BERTH_MAX_DIMS || ++c->depth > c->max_depth || !eat(c, '['))
    return false;
  if (!eat(c, ']')) {
    do {
      ws(c);
      if (c->i < c->n && c->s[c->i] == '[') {
        if (!data_array(c, f, depth + 1))
          return false;
        continue;
      }
      if (f->out != NULL &&
          (f->dt == BERTH_DT_FP32 || f->dt == BERTH_DT_FP64)) {
        if (!number_real(c, f))
          return false;
        continue;
      }
      span v;
      bool integral;
      if (!number(c, &v, &integral))
        return false;
      if (f->out != NULL) {
        if (!put_int(f, v, integral))
          return false;
      } else if (++f->count > f->numel) {
        return false;
      }
    } while (eat(c, ','));
    if (!eat(c, ']'))
      return false;
  }
  c->depth--;
  return true;
}

/* Steps over data's nested arrays by their brackets alone: a cheap first
 * pass that finds where data ends (the bytes between are not looked at).
 * build() parses data strictly later (data_array from data_at); if that
 * fails, the request goes to the full path, which reports it. When it
 * succeeds, data held only numbers, commas and whitespace between its
 * brackets, so this pass ended where the strict one does. */
static bool skip_data(cursor *c) {
  if (c->i >= c->n || c->s[c->i] != '[')
    return false;
  size_t depth = 0;
  for (const char *s = c->s; c->i < c->n; c->i++) {
    char ch = s[c->i];
    if (ch == '[') {
      if (++depth > BERTH_MAX_DIMS || c->depth + depth > c->max_depth)
        return false;
    } else if (ch == ']' && --depth == 0) {
      c->i++;
      return true;
    }
  }
  return false;
}

static bool input_object(cursor *c, fast_input *in) {
  memset(in, 0, sizeof *in);
  if (++c->depth > c->max_depth || !eat(c, '{'))
    return false;
  do {
    span key;
    if (!plain_string(c, &key) || !eat(c, ':'))
      return false;
    unsigned bit;
    bool ok;
    if (span_is(key, "name")) {
      bit = 1;
      ok = plain_string(c, &in->name) && in->name.n > 0 &&
           in->name.n <= NAME_MAX_FAST;
    } else if (span_is(key, "shape")) {
      bit = 2;
      ok = c->depth + 1 <= c->max_depth && shape_array(c, in);
    } else if (span_is(key, "datatype")) {
      bit = 4;
      ok = plain_string(c, &in->datatype);
    } else if (span_is(key, "data")) {
      bit = 8;
      ws(c);
      in->data_at = c->i;
      ok = skip_data(c);
    } else {
      return false; /* parameters, or a key the full path reports */
    }
    if (!ok || (in->seen & bit))
      return false;
    in->seen |= bit;
  } while (eat(c, ','));
  c->depth--;
  return eat(c, '}') && in->seen == 15;
}

static void clear_partial(berth_infer_request *r) {
  berth_infer_request_clear(r);
}

/* Makes the tensors of the parsed inputs. */
static int build(cursor *c, fast_input *ins, size_t n, size_t max_bytes,
                 berth_infer_request *req) {
  req->inputs = calloc(n, sizeof *req->inputs);
  if (req->inputs == NULL)
    return BERTH_E_UNSUPPORTED; /* the full path reports the NOMEM */
  req->n_inputs = n;
  for (size_t k = 0; k < n; k++) {
    fast_input *in = &ins[k];
    berth_tensor *t = &req->inputs[k];
    for (size_t j = 0; j < k; j++)
      if (ins[j].name.n == in->name.n &&
          memcmp(ins[j].name.p, in->name.p, in->name.n) == 0)
        return BERTH_E_UNSUPPORTED; /* a duplicate: an error, in full */
    berth_dtype dt = berth_dtype_from_name(in->datatype.p, in->datatype.n);
    if (dt == BERTH_DT_INVALID || dt == BERTH_DT_BYTES || dt == BERTH_DT_BOOL ||
        dt == BERTH_DT_FP16 || dt == BERTH_DT_BF16)
      return BERTH_E_UNSUPPORTED;
    fill f = {.dt = dt, .esize = berth_dtype_size(dt)};
    if (berth_shape_numel(in->shape, in->ndim, &f.numel) != BERTH_OK ||
        f.numel > max_bytes / f.esize)
      return BERTH_E_UNSUPPORTED;
    t->name = malloc(in->name.n + 1);
    t->data = malloc(f.numel ? (size_t)f.numel * f.esize : 1);
    if (t->name == NULL || t->data == NULL)
      return BERTH_E_UNSUPPORTED;
    memcpy(t->name, in->name.p, in->name.n);
    t->name[in->name.n] = '\0';
    t->dtype = dt;
    t->ndim = in->ndim;
    memcpy(t->shape, in->shape, sizeof in->shape);
    t->nbytes = (size_t)f.numel * f.esize;
    f.out = t->data;
    cursor d = {.s = c->s,
                .n = c->n,
                .i = in->data_at,
                .depth = 0,
                .max_depth = BERTH_MAX_DIMS};
    if (!data_array(&d, &f, 1) || f.count != f.numel)
      return BERTH_E_UNSUPPORTED;
  }
  return BERTH_OK;
}

int berth_json_decode_fast(const char *body, size_t len,
                           const berth_json_limits *limits,
                           berth_infer_request *out) {
  memset(out, 0, sizeof *out);
  /* The full decoder's defaults (codec_json.h) for zero or absent fields. */
  berth_json_limits l = {64, (size_t)256 << 20, 64};
  if (limits != NULL) {
    if (limits->max_inputs)
      l.max_inputs = limits->max_inputs;
    if (limits->max_tensor_bytes)
      l.max_tensor_bytes = limits->max_tensor_bytes;
    if (limits->max_depth)
      l.max_depth = limits->max_depth;
  }
  const berth_json_limits *lim = &l;
  if (body == NULL)
    return BERTH_E_UNSUPPORTED;
  cursor c = {
      .s = body, .n = len, .i = 0, .depth = 1, .max_depth = lim->max_depth};
  fast_input ins[FAST_MAX_INPUTS];
  size_t n_ins = 0;
  span id = {NULL, 0};
  bool have_id = false, have_inputs = false;
  if (!eat(&c, '{'))
    return BERTH_E_UNSUPPORTED;
  do {
    span key;
    if (!plain_string(&c, &key) || !eat(&c, ':'))
      return BERTH_E_UNSUPPORTED;
    if (span_is(key, "id") && !have_id) {
      if (!plain_string(&c, &id))
        return BERTH_E_UNSUPPORTED;
      have_id = true;
    } else if (span_is(key, "inputs") && !have_inputs) {
      have_inputs = true;
      if (++c.depth > c.max_depth || !eat(&c, '[') || eat(&c, ']'))
        return BERTH_E_UNSUPPORTED; /* empty inputs: rare, the full path */
      do {
        if (n_ins >= FAST_MAX_INPUTS || n_ins >= lim->max_inputs ||
            !input_object(&c, &ins[n_ins++]))
          return BERTH_E_UNSUPPORTED;
      } while (eat(&c, ','));
      if (!eat(&c, ']'))
        return BERTH_E_UNSUPPORTED;
      c.depth--;
    } else {
      return BERTH_E_UNSUPPORTED;
    }
  } while (eat(&c, ','));
  if (!eat(&c, '}') || !have_inputs)
    return BERTH_E_UNSUPPORTED;
  ws(&c);
  if (c.i != c.n)
    return BERTH_E_UNSUPPORTED;
  berth_infer_request req = {0};
  int rc = build(&c, ins, n_ins, lim->max_tensor_bytes, &req);
  if (rc == BERTH_OK && have_id) {
    req.id = malloc(id.n + 1);
    if (req.id == NULL) {
      rc = BERTH_E_UNSUPPORTED;
    } else {
      memcpy(req.id, id.p, id.n);
      req.id[id.n] = '\0';
    }
  }
  if (rc != BERTH_OK) {
    clear_partial(&req);
    return rc;
  }
  *out = req;
  return BERTH_OK;
}
