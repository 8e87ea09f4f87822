/* Berth engine: worker protocol frames (docs/worker-protocol.md).
 *
 * Bytes in, structs out; no I/O. The decoder treats every byte as hostile:
 * each length is checked against what remains before it is used, sizes are
 * computed without overflow, padding and reserved fields must be zero, and
 * the payload must end exactly after the last tensor.
 */
#include "worker_proto.h"

#include <stdlib.h>
#include <string.h>

/* Fixed part of one tensor record: dtype, ndim, name_len, reserved. The
 * shape (8 * ndim) and data_len (8) follow. */
#define WP_TENSOR_FIXED 8
#define WP_NAME_MAX 65535u
/* Smallest possible tensor record: fixed part, data_len, 1-byte name padded. */
#define WP_TENSOR_MIN (WP_TENSOR_FIXED + 8 + 8)

static void put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* Bytes of zero padding after n bytes to reach a multiple of 8. */
static size_t pad8(size_t n) { return (8 - (n & 7)) & 7; }

void berth_wp_header_encode(uint8_t out[BERTH_WP_HEADER_SIZE],
                            const berth_wp_header *h) {
  put_u32(out, h->length);
  put_u16(out + 4, h->type);
  put_u16(out + 6, h->flags);
  put_u64(out + 8, h->id);
}

int berth_wp_header_decode(const uint8_t in[BERTH_WP_HEADER_SIZE],
                           uint32_t max_length, berth_wp_header *h,
                           berth_errmsg *err) {
  berth_wp_header d = {
      .length = get_u32(in),
      .type = get_u16(in + 4),
      .flags = get_u16(in + 6),
      .id = get_u64(in + 8),
  };
  if (d.type < BERTH_WP_LOAD || d.type > BERTH_WP_CANCEL)
    return berth_errf(err, BERTH_E_PARSE, "worker frame has unknown type %u",
                      d.type);
  uint16_t allowed = d.type == BERTH_WP_RESULT || d.type == BERTH_WP_ERROR
                         ? (uint16_t)BERTH_WP_FLAG_KEPT_INPUTS
                         : 0;
  if ((d.flags & ~allowed) != 0)
    return berth_errf(err, BERTH_E_PARSE,
                      "worker frame has flags 0x%04x; its type allows 0x%04x",
                      d.flags, allowed);
  if (d.length > max_length)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "worker frame of %u bytes exceeds the limit of %u",
                      d.length, max_length);
  *h = d;
  return BERTH_OK;
}

/* Adds n to *total, failing on overflow. */
static int add_size(size_t *total, size_t n) {
  if (n > SIZE_MAX - *total)
    return BERTH_E_TOO_LARGE;
  *total += n;
  return BERTH_OK;
}

/* Size of one tensor record; checks what the encoder needs to write it. */
static int tensor_record_size(const berth_tensor *t, size_t *out) {
  if (t->name == NULL || t->ndim > BERTH_MAX_DIMS)
    return BERTH_E_INVALID;
  size_t name_len = strlen(t->name);
  if (name_len == 0 || name_len > WP_NAME_MAX)
    return BERTH_E_INVALID;
  size_t n = WP_TENSOR_FIXED + 8 * (size_t)t->ndim + 8 + name_len;
  n += pad8(n);
  if (add_size(&n, t->nbytes) != BERTH_OK || add_size(&n, pad8(t->nbytes)))
    return BERTH_E_TOO_LARGE;
  *out = n;
  return BERTH_OK;
}

int berth_wp_tensors_size(const berth_tensor *ts, size_t n, size_t params_len,
                          size_t *out) {
  if (n > UINT32_MAX || params_len > UINT32_MAX || (n > 0 && ts == NULL))
    return BERTH_E_TOO_LARGE;
  size_t total = 8;
  if (add_size(&total, params_len) || add_size(&total, pad8(params_len)))
    return BERTH_E_TOO_LARGE;
  for (size_t i = 0; i < n; i++) {
    size_t rec;
    int rc = tensor_record_size(&ts[i], &rec);
    if (rc != BERTH_OK)
      return rc;
    if (add_size(&total, rec) != BERTH_OK)
      return BERTH_E_TOO_LARGE;
  }
  *out = total;
  return BERTH_OK;
}

size_t berth_wp_tensor_head_encode(const berth_tensor *t, uint8_t *out) {
  return berth_wp_tensor_head_encode_at(t, BERTH_WP_LOC_INLINE, out);
}

size_t berth_wp_tensor_head_encode_at(const berth_tensor *t, uint32_t location,
                                      uint8_t *out) {
  uint8_t *p = out;
  size_t name_len = strlen(t->name);
  p[0] = (uint8_t)t->dtype;
  p[1] = (uint8_t)t->ndim;
  put_u16(p + 2, (uint16_t)name_len);
  put_u32(p + 4, location);
  p += WP_TENSOR_FIXED;
  for (uint32_t d = 0; d < t->ndim; d++, p += 8)
    put_u64(p, (uint64_t)t->shape[d]);
  put_u64(p, (uint64_t)t->nbytes);
  p += 8;
  memcpy(p, t->name, name_len);
  p += name_len;
  memset(p, 0, pad8(name_len));
  p += pad8(name_len);
  return (size_t)(p - out);
}

/* Writes one tensor record at p (room already checked); returns its end. */
static uint8_t *encode_tensor(const berth_tensor *t, uint8_t *p) {
  p += berth_wp_tensor_head_encode(t, p);
  if (t->nbytes > 0)
    memcpy(p, t->data, t->nbytes);
  p += t->nbytes;
  memset(p, 0, pad8(t->nbytes));
  return p + pad8(t->nbytes);
}

int berth_wp_tensors_encode(const berth_tensor *ts, size_t n,
                            const char *params, size_t params_len, uint8_t *buf,
                            size_t cap, size_t *written) {
  size_t need;
  int rc = berth_wp_tensors_size(ts, n, params_len, &need);
  if (rc != BERTH_OK)
    return rc;
  if (need > cap || (params_len > 0 && params == NULL))
    return BERTH_E_INVALID;
  for (size_t i = 0; i < n; i++)
    if (berth_tensor_check(&ts[i], NULL) != BERTH_OK)
      return BERTH_E_INVALID;
  uint8_t *p = buf;
  put_u32(p, (uint32_t)n);
  put_u32(p + 4, (uint32_t)params_len);
  p += 8;
  if (params_len > 0)
    memcpy(p, params, params_len);
  p += params_len;
  memset(p, 0, pad8(params_len));
  p += pad8(params_len);
  for (size_t i = 0; i < n; i++)
    p = encode_tensor(&ts[i], p);
  *written = (size_t)(p - buf);
  return BERTH_OK;
}

/* A cursor over the payload being decoded. */
typedef struct wp_reader {
  const uint8_t *buf;
  size_t len;
  size_t off;
  const berth_wp_region *region; /* NULL: no shared memory records */
} wp_reader;

static size_t rd_left(const wp_reader *r) { return r->len - r->off; }

/* Skips pad8(n) bytes, which must exist and be zero. */
static int rd_pad(wp_reader *r, size_t n, berth_errmsg *err, const char *what) {
  size_t p = pad8(n);
  if (p > rd_left(r))
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor set truncated in the padding after %s", what);
  for (size_t i = 0; i < p; i++)
    if (r->buf[r->off + i] != 0)
      return berth_errf(err, BERTH_E_PARSE,
                        "tensor set has non-zero padding after %s", what);
  r->off += p;
  return BERTH_OK;
}

/* Valid UTF-8 without NUL (names become C strings). */
static bool name_ok(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c == 0)
      return false;
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (len > n - i)
      return false;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return false;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    i += len;
  }
  return true;
}

/* Reads one tensor record's fixed part, shape and name into t. */
static int decode_head(wp_reader *r, size_t idx, berth_tensor *t,
                       uint64_t *data_len, uint32_t *location,
                       berth_errmsg *err) {
  if (rd_left(r) < WP_TENSOR_FIXED)
    return berth_errf(err, BERTH_E_PARSE, "tensor %zu: header truncated", idx);
  const uint8_t *p = r->buf + r->off;
  uint8_t dtype = p[0], ndim = p[1];
  uint16_t name_len = get_u16(p + 2);
  if (dtype == BERTH_DT_INVALID || dtype >= BERTH_DT_COUNT)
    return berth_errf(err, BERTH_E_PARSE, "tensor %zu: unknown datatype %u",
                      idx, dtype);
  if (ndim > BERTH_MAX_DIMS)
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor %zu: %u dimensions, at most %d", idx, ndim,
                      BERTH_MAX_DIMS);
  if (name_len == 0)
    return berth_errf(err, BERTH_E_PARSE, "tensor %zu: empty name", idx);
  *location = get_u32(p + 4);
  if (*location != BERTH_WP_LOC_INLINE &&
      (*location != BERTH_WP_LOC_SHM || r->region == NULL))
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor %zu: location %u is not one this channel has",
                      idx, *location);
  r->off += WP_TENSOR_FIXED;
  if (rd_left(r) < 8 * (size_t)ndim + 8)
    return berth_errf(err, BERTH_E_PARSE, "tensor %zu: shape truncated", idx);
  t->dtype = (berth_dtype)dtype;
  t->ndim = ndim;
  for (uint32_t d = 0; d < ndim; d++, r->off += 8) {
    uint64_t v = get_u64(r->buf + r->off);
    if (v > INT64_MAX)
      return berth_errf(err, BERTH_E_PARSE,
                        "tensor %zu: dimension %u is negative", idx, d);
    t->shape[d] = (int64_t)v;
  }
  *data_len = get_u64(r->buf + r->off);
  r->off += 8;
  if (rd_left(r) < name_len)
    return berth_errf(err, BERTH_E_PARSE, "tensor %zu: name truncated", idx);
  if (!name_ok(r->buf + r->off, name_len))
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor %zu: name is not UTF-8 text without NUL", idx);
  t->name = malloc((size_t)name_len + 1);
  if (t->name == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  memcpy(t->name, r->buf + r->off, name_len);
  t->name[name_len] = '\0';
  r->off += name_len;
  return rd_pad(r, name_len, err, "a tensor name");
}

/* Points t at its data in the shared memory region: the record holds a u64
 * offset, which must be 8-aligned with the data inside region->lo..hi. */
static int decode_shm(wp_reader *r, berth_tensor *t, uint64_t data_len,
                      berth_errmsg *err) {
  const berth_wp_region *g = r->region;
  if (rd_left(r) < 8)
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor '%.100s': shared memory offset truncated",
                      t->name);
  uint64_t off = get_u64(r->buf + r->off);
  r->off += 8;
  if ((off & 7) != 0 || off < g->lo || off > g->hi || data_len > g->hi - off)
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor '%.100s': shared memory bytes %llu+%llu are "
                      "outside %zu..%zu",
                      t->name, (unsigned long long)off,
                      (unsigned long long)data_len, g->lo, g->hi);
  const uint8_t *src = g->base + off;
  t->nbytes = (size_t)data_len;
  if (t->dtype != BERTH_DT_BYTES) {
    t->data = (uint8_t *)(uintptr_t)src;
    t->data_borrowed = true;
    return BERTH_OK;
  }
  t->data = malloc(data_len ? (size_t)data_len : 1);
  if (t->data == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  t->data_borrowed = false;
  if (data_len > 0)
    memcpy(t->data, src, (size_t)data_len);
  return BERTH_OK;
}

/* Reads one whole tensor record. */
static int decode_tensor(wp_reader *r, size_t idx, berth_tensor *t,
                         berth_errmsg *err) {
  uint64_t data_len = 0;
  uint32_t location = BERTH_WP_LOC_INLINE;
  int rc = decode_head(r, idx, t, &data_len, &location, err);
  if (rc != BERTH_OK)
    return rc;
  if (location == BERTH_WP_LOC_SHM) {
    rc = decode_shm(r, t, data_len, err);
    if (rc == BERTH_OK)
      rc = berth_tensor_check(t, err);
    return rc == BERTH_OK || rc == BERTH_E_NOMEM ? rc : BERTH_E_PARSE;
  }
  if (data_len > rd_left(r))
    return berth_errf(
        err, BERTH_E_PARSE,
        "tensor '%.100s': data_len %llu exceeds the %zu bytes left", t->name,
        (unsigned long long)data_len, rd_left(r));
  t->data = (uint8_t *)(uintptr_t)(r->buf + r->off);
  t->nbytes = (size_t)data_len;
  t->data_borrowed = true;
  r->off += (size_t)data_len;
  rc = rd_pad(r, (size_t)data_len, err, "tensor data");
  if (rc != BERTH_OK)
    return rc;
  rc = berth_tensor_check(t, err);
  return rc == BERTH_OK ? BERTH_OK : BERTH_E_PARSE;
}

static int cmp_tensor_name(const void *a, const void *b) {
  const berth_tensor *const *x = a, *const *y = b;
  return strcmp((*x)->name, (*y)->name);
}

/* Rejects two tensors with one name (a result could not be split). */
static int check_unique(const berth_tensor *ts, size_t n, berth_errmsg *err) {
  if (n < 2)
    return BERTH_OK;
  const berth_tensor **v = malloc(n * sizeof *v);
  if (v == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++)
    v[i] = &ts[i];
  qsort(v, n, sizeof *v, cmp_tensor_name);
  int rc = BERTH_OK;
  for (size_t i = 1; i < n && rc == BERTH_OK; i++)
    if (strcmp(v[i - 1]->name, v[i]->name) == 0)
      rc = berth_errf(err, BERTH_E_PARSE, "tensor name '%.100s' appears twice",
                      v[i]->name);
  free(v);
  return rc;
}

int berth_wp_tensors_decode(const uint8_t *buf, size_t len, berth_tensor **out,
                            size_t *n, const char **params, size_t *params_len,
                            berth_errmsg *err) {
  return berth_wp_tensors_decode_region(buf, len, NULL, out, n, params,
                                        params_len, err);
}

int berth_wp_tensors_decode_region(const uint8_t *buf, size_t len,
                                   const berth_wp_region *region,
                                   berth_tensor **out, size_t *n,
                                   const char **params, size_t *params_len,
                                   berth_errmsg *err) {
  *out = NULL;
  *n = 0;
  *params = NULL;
  *params_len = 0;
  wp_reader r = {buf, len, 0, region};
  if (len < 8 || buf == NULL)
    return berth_errf(err, BERTH_E_PARSE, "tensor set shorter than 8 bytes");
  uint32_t count = get_u32(buf), plen = get_u32(buf + 4);
  r.off = 8;
  if (plen > rd_left(&r))
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor set params_len %u exceeds the %zu bytes left",
                      plen, rd_left(&r));
  const char *pp = (const char *)buf + r.off;
  r.off += plen;
  int rc = rd_pad(&r, plen, err, "parameters");
  if (rc != BERTH_OK)
    return rc;
  /* Bounds the allocation below by the bytes actually present. */
  if (count > rd_left(&r) / WP_TENSOR_MIN)
    return berth_errf(err, BERTH_E_PARSE,
                      "tensor set claims %u tensors in %zu bytes", count,
                      rd_left(&r));
  berth_tensor *ts = count ? calloc(count, sizeof *ts) : NULL;
  if (count > 0 && ts == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < count && rc == BERTH_OK; i++)
    rc = decode_tensor(&r, i, &ts[i], err);
  if (rc == BERTH_OK && r.off != len)
    rc = berth_errf(err, BERTH_E_PARSE,
                    "tensor set has %zu bytes after the last tensor",
                    len - r.off);
  if (rc == BERTH_OK)
    rc = check_unique(ts, count, err);
  if (rc != BERTH_OK) {
    berth_tensors_free(ts, count);
    return rc;
  }
  *out = ts;
  *n = count;
  *params = plen ? pp : NULL;
  *params_len = plen;
  return BERTH_OK;
}
