/* Berth engine: tensor-set frames as scatter-gather pieces (wp_gather.h). */
#include "wp_gather.h"

#include <stdlib.h>
#include <string.h>

#include "worker_proto.h"

static size_t pad8(size_t n) { return (8 - (n & 7)) & 7; }

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* Checks the parts against the heads; sums the bytes and pieces that will
 * be referenced rather than copied. */
static int plan_parts(const berth_tensor *heads, size_t n,
                      const berth_wp_piece *parts, size_t per,
                      const uint64_t *shm_off, size_t copy_max,
                      size_t *referenced, size_t *n_refs) {
  *referenced = 0;
  *n_refs = 0;
  for (size_t i = 0; i < n; i++) {
    if (shm_off != NULL && shm_off[i] != BERTH_WP_INLINE)
      continue; /* its bytes are in the region already */
    size_t sum = 0;
    for (size_t k = 0; k < per; k++) {
      const berth_wp_piece *q = &parts[i * per + k];
      if ((q->len > 0 && q->data == NULL) || q->len > SIZE_MAX - sum)
        return BERTH_E_INVALID;
      sum += q->len;
      if (q->len > copy_max) {
        *referenced += q->len;
        (*n_refs)++;
      }
    }
    if (sum != heads[i].nbytes)
      return BERTH_E_INVALID;
  }
  return BERTH_OK;
}

/* The builder's cursor: bytes go to the arena; a referenced part closes
 * the arena run before it as one piece. */
typedef struct gather {
  berth_wp_frame *f;
  uint8_t *at;  /* next free arena byte */
  uint8_t *run; /* start of the arena run not yet a piece */
} gather;

static void close_run(gather *g) {
  if (g->at > g->run) {
    g->f->pieces[g->f->n_pieces++] =
        (berth_wp_piece){g->run, (size_t)(g->at - g->run)};
    g->run = g->at;
  }
}

static void put_bytes(gather *g, const void *src, size_t len) {
  if (len > 0)
    memcpy(g->at, src, len);
  g->at += len;
}

static void put_zeros(gather *g, size_t len) {
  memset(g->at, 0, len);
  g->at += len;
}

static void put_part(gather *g, const berth_wp_piece *q, size_t copy_max) {
  if (q->len <= copy_max) {
    put_bytes(g, q->data, q->len);
    return;
  }
  close_run(g);
  g->f->pieces[g->f->n_pieces++] = *q;
}

int berth_wp_frame_gather(berth_wp_frame *f, uint16_t type, uint64_t id,
                          const berth_tensor *heads, size_t n,
                          const berth_wp_piece *parts, size_t per,
                          const char *params, size_t params_len,
                          size_t copy_max) {
  return berth_wp_frame_gather_at(f, type, id, heads, n, parts, per, NULL,
                                  params, params_len, copy_max);
}

static bool in_shm(const uint64_t *shm_off, size_t i) {
  return shm_off != NULL && shm_off[i] != BERTH_WP_INLINE;
}

/* The payload's size: the inline size, less the data of the tensors in
 * shared memory, plus their 8-byte offsets. */
static int payload_size(const berth_tensor *heads, size_t n,
                        const uint64_t *shm_off, size_t params_len,
                        size_t *out) {
  int rc = berth_wp_tensors_size(heads, n, params_len, out);
  for (size_t i = 0; rc == BERTH_OK && i < n; i++)
    if (in_shm(shm_off, i))
      *out = *out - heads[i].nbytes - pad8(heads[i].nbytes) + 8;
  return rc;
}

static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

int berth_wp_frame_gather_at(berth_wp_frame *f, uint16_t type, uint64_t id,
                             const berth_tensor *heads, size_t n,
                             const berth_wp_piece *parts, size_t per,
                             const uint64_t *shm_off, const char *params,
                             size_t params_len, size_t copy_max) {
  memset(f, 0, sizeof *f);
  if ((n > 0 && (heads == NULL || (per > 0 && parts == NULL))) ||
      (params_len > 0 && params == NULL))
    return BERTH_E_INVALID;
  size_t payload = 0, referenced = 0, n_refs = 0;
  int rc = payload_size(heads, n, shm_off, params_len, &payload);
  if (rc != BERTH_OK)
    return rc;
  if (payload > UINT32_MAX)
    return BERTH_E_TOO_LARGE;
  rc =
      plan_parts(heads, n, parts, per, shm_off, copy_max, &referenced, &n_refs);
  if (rc != BERTH_OK)
    return rc;
  f->arena = malloc(BERTH_WP_HEADER_SIZE + payload - referenced);
  f->pieces = malloc((2 * n_refs + 1) * sizeof *f->pieces);
  if (f->arena == NULL || f->pieces == NULL) {
    berth_wp_frame_free(f);
    return BERTH_E_NOMEM;
  }
  gather g = {f, f->arena, f->arena};
  berth_wp_header h = {
      .length = (uint32_t)payload, .type = type, .flags = 0, .id = id};
  berth_wp_header_encode(g.at, &h);
  g.at += BERTH_WP_HEADER_SIZE;
  put_u32(g.at, (uint32_t)n);
  put_u32(g.at + 4, (uint32_t)params_len);
  g.at += 8;
  put_bytes(&g, params, params_len);
  put_zeros(&g, pad8(params_len));
  for (size_t i = 0; i < n; i++) {
    if (in_shm(shm_off, i)) {
      g.at += berth_wp_tensor_head_encode_at(&heads[i], BERTH_WP_LOC_SHM, g.at);
      put_u64(g.at, shm_off[i]);
      g.at += 8;
      continue;
    }
    g.at += berth_wp_tensor_head_encode(&heads[i], g.at);
    for (size_t k = 0; k < per; k++)
      put_part(&g, &parts[i * per + k], copy_max);
    put_zeros(&g, pad8(heads[i].nbytes));
  }
  close_run(&g);
  f->length = BERTH_WP_HEADER_SIZE + payload;
  return BERTH_OK;
}

static const berth_tensor *req_input(const berth_infer_request *r,
                                     const char *name, size_t hint) {
  if (hint < r->n_inputs && strcmp(r->inputs[hint].name, name) == 0)
    return &r->inputs[hint];
  for (size_t i = 0; i < r->n_inputs; i++)
    if (strcmp(r->inputs[i].name, name) == 0)
      return &r->inputs[i];
  return NULL;
}

/* Copies tensor i's parts into the region when it is large enough and fits;
 * records the offset in shm_off[i]. */
static void place_shm(berth_wp_shm *shm, const berth_tensor *head,
                      const berth_wp_piece *parts, size_t per,
                      uint64_t *shm_off) {
  size_t at = shm->lo + shm->used;
  at += (64 - (at & 63)) & 63;
  if (head->nbytes == 0 || head->nbytes < shm->threshold || at > shm->hi ||
      head->nbytes > shm->hi - at)
    return;
  *shm_off = at;
  for (size_t k = 0; k < per; k++) {
    if (parts[k].len > 0)
      memcpy(shm->base + at, parts[k].data, parts[k].len);
    at += parts[k].len;
  }
  shm->used = at - shm->lo;
  shm->placed++;
}

int berth_wp_frame_gather_batch(berth_wp_frame *f, uint64_t id,
                                const berth_infer_request *const *reqs,
                                size_t n_reqs, int64_t rows, const char *params,
                                size_t params_len) {
  return berth_wp_frame_gather_batch_shm(f, id, reqs, n_reqs, rows, params,
                                         params_len, NULL);
}

int berth_wp_frame_gather_batch_shm(berth_wp_frame *f, uint64_t id,
                                    const berth_infer_request *const *reqs,
                                    size_t n_reqs, int64_t rows,
                                    const char *params, size_t params_len,
                                    berth_wp_shm *shm) {
  memset(f, 0, sizeof *f);
  if (shm != NULL) {
    shm->used = 0;
    shm->placed = 0;
  }
  if (reqs == NULL || n_reqs == 0 || reqs[0] == NULL)
    return BERTH_E_INVALID;
  const berth_tensor *src = reqs[0]->inputs;
  size_t n = reqs[0]->n_inputs, per = n_reqs;
  if (n > 0 && per > SIZE_MAX / sizeof(berth_wp_piece) / n)
    return BERTH_E_TOO_LARGE;
  berth_tensor *heads = calloc(n ? n : 1, sizeof *heads);
  berth_wp_piece *parts = calloc(n > 0 ? n * per : 1, sizeof *parts);
  uint64_t *shm_off =
      shm != NULL ? malloc((n ? n : 1) * sizeof *shm_off) : NULL;
  int rc =
      heads && parts && (shm == NULL || shm_off) ? BERTH_OK : BERTH_E_NOMEM;
  for (size_t i = 0; i < n && rc == BERTH_OK; i++) {
    heads[i] = src[i]; /* borrows the name; data is not read */
    size_t sum = 0;
    for (size_t k = 0; k < per && rc == BERTH_OK; k++) {
      const berth_tensor *t =
          k == 0 ? &src[i] : req_input(reqs[k], src[i].name, i);
      if (t == NULL || t->nbytes > SIZE_MAX - sum) {
        rc = BERTH_E_INVALID;
        break;
      }
      parts[i * per + k] = (berth_wp_piece){t->data, t->nbytes};
      sum += t->nbytes;
    }
    if (per > 1 && heads[i].ndim > 0)
      heads[i].shape[0] = rows;
    heads[i].nbytes = sum;
    if (shm_off != NULL) {
      shm_off[i] = BERTH_WP_INLINE;
      if (rc == BERTH_OK)
        place_shm(shm, &heads[i], &parts[i * per], per, &shm_off[i]);
    }
  }
  if (rc == BERTH_OK)
    rc = berth_wp_frame_gather_at(f, BERTH_WP_INFER, id, heads, n, parts, per,
                                  shm_off, params, params_len,
                                  BERTH_WP_COPY_MAX);
  free(heads);
  free(parts);
  free(shm_off);
  return rc;
}

void berth_wp_frame_free(berth_wp_frame *f) {
  free(f->arena);
  free(f->pieces);
  memset(f, 0, sizeof *f);
}
