/* Berth engine: Triton's system shared-memory extension at the edge
 * (shm_api.h). */
#include "shm_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_grpc.h"
#include "grpc_service.pb-c.h"
#include "httpd.h"
#include "shm_registry.h"

/* CUDA shared memory, as Triton built without GPU support answers it: no
 * region is ever registered (status: none; unregister: done), and a
 * register is refused. */
#define NO_GPU                                                                 \
  "failed to register CUDA shared memory region: GPUs not "                    \
  "supported (Berth runs without a GPU); use system shared memory "            \
  "(/v2/systemsharedmemory)"

/* ---- the module: the registry's life ------------------------------------ */

static int shm_init(berth_engine *e, berth_errmsg *err) {
  e->shm = berth_shm_registry_new(e->cfg.shm_max_regions, e->cfg.shm_max_bytes);
  if (e->shm == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  return BERTH_OK;
}

static void shm_free(berth_engine *e) {
  berth_shm_registry_free(e->shm); /* held regions go with their requests */
  e->shm = NULL;
}

const berth_module berth_shm_module = {
    .name = "shared memory", .init = shm_init, .free = shm_free};

/* ---- the inference path ------------------------------------------------- */

typedef struct shm_hold {
  size_t n;
  berth_shm_region *regions[]; /* one reference each */
} shm_hold;

static void hold_release(void *p) {
  shm_hold *h = p;
  for (size_t i = 0; i < h->n; i++)
    berth_shm_release(h->regions[i]);
  free(h);
}

/* Points input i at its region's bytes. */
static int resolve_input(berth_engine *e, berth_infer_request *r, size_t i,
                         shm_hold *h, berth_errmsg *err) {
  const berth_shm_ref *ref = &r->input_shm[i];
  berth_tensor *t = &r->inputs[i];
  uint8_t *p = NULL;
  int rc = berth_shm_acquire(e->shm, ref->region, ref->offset, ref->byte_size,
                             &h->regions[h->n], &p, err);
  if (rc != BERTH_OK)
    return rc;
  h->n++;
  if (!t->data_borrowed)
    free(t->data);
  if (t->dtype == BERTH_DT_BYTES) { /* prefixes checked once, then fixed */
    t->data = malloc(ref->byte_size ? ref->byte_size : 1);
    if (t->data == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    memcpy(t->data, p, ref->byte_size);
    t->data_borrowed = false;
  } else {
    t->data = p;
    t->data_borrowed = true;
  }
  t->nbytes = (size_t)ref->byte_size;
  if (berth_tensor_check(t, err) != BERTH_OK)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '%.256s': %llu bytes of "
                      "shared memory do not match its shape and datatype",
                      t->name, (unsigned long long)ref->byte_size);
  return BERTH_OK;
}

/* Checks that the outputs naming a region name a registered one. */
static int check_outputs(berth_engine *e, const berth_infer_request *r,
                         berth_errmsg *err) {
  for (size_t i = 0; i < r->n_outputs; i++) {
    berth_shm_ref ref;
    char what[300];
    snprintf(what, sizeof what, "output '%.256s'", r->outputs[i].name);
    int rc = berth_shm_params(r->outputs[i].parameters, what, &ref, err);
    if (rc != BERTH_OK)
      return rc;
    if (ref.region == NULL)
      continue;
    const berth_shm_region *g = berth_shm_find(e->shm, ref.region);
    if (g == NULL)
      rc = berth_errf(err, BERTH_E_INVALID,
                      "Unable to find shared memory "
                      "region: '%.256s' (%s)",
                      ref.region, what);
    else if (ref.offset > g->byte_size ||
             ref.byte_size > g->byte_size - ref.offset)
      rc = berth_errf(err, BERTH_E_INVALID,
                      "%s: offset %llu + byte size "
                      "%llu is beyond region '%.256s' (%llu bytes)",
                      what, (unsigned long long)ref.offset,
                      (unsigned long long)ref.byte_size, ref.region,
                      (unsigned long long)g->byte_size);
    free(ref.region);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

int berth_shm_resolve(berth_engine *e, berth_infer_request *r,
                      berth_errmsg *err) {
  if (e->shm == NULL)
    return BERTH_OK;
  int rc = check_outputs(e, r, err);
  if (rc != BERTH_OK || r->input_shm == NULL)
    return rc;
  shm_hold *h = calloc(1, sizeof *h + r->n_inputs * sizeof h->regions[0]);
  if (h == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  r->hold = h;
  r->hold_release = hold_release;
  for (size_t i = 0; i < r->n_inputs && rc == BERTH_OK; i++)
    if (r->input_shm[i].region != NULL)
      rc = resolve_input(e, r, i, h, err);
  return rc; /* on failure the request's clear drops what was taken */
}

static const berth_tensor *find_tensor(const berth_infer_response *resp,
                                       const char *name) {
  for (size_t i = 0; i < resp->n_outputs; i++)
    if (resp->outputs[i].name != NULL &&
        strcmp(resp->outputs[i].name, name) == 0)
      return &resp->outputs[i];
  return NULL;
}

int berth_shm_write_outputs(berth_engine *e, const berth_infer_request *req,
                            const berth_infer_response *resp,
                            berth_errmsg *err) {
  for (size_t i = 0; e->shm != NULL && i < req->n_outputs; i++) {
    berth_shm_ref ref;
    int rc = berth_shm_params(req->outputs[i].parameters, "output", &ref, err);
    if (rc != BERTH_OK || ref.region == NULL)
      continue; /* checked at submit */
    const berth_tensor *t = find_tensor(resp, req->outputs[i].name);
    berth_shm_region *g = NULL;
    uint8_t *p = NULL;
    if (t == NULL)
      rc = BERTH_OK; /* the encoder reports the unknown output */
    else if (t->nbytes > ref.byte_size)
      rc = berth_errf(err, BERTH_E_INVALID,
                      "shared memory size specified "
                      "with the request for output '%.256s' (%llu bytes) "
                      "should be at least %zu bytes to hold the results",
                      t->name, (unsigned long long)ref.byte_size, t->nbytes);
    else
      rc = berth_shm_acquire(e->shm, ref.region, ref.offset, t->nbytes, &g, &p,
                             err);
    if (rc == BERTH_OK && g != NULL) {
      if (t->nbytes > 0)
        memcpy(p, t->data, t->nbytes);
      berth_shm_release(g);
    }
    free(ref.region);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

/* ---- REST ---------------------------------------------------------------- */

static json_t *region_doc(const berth_shm_region *g) {
  return json_pack("{s:s, s:s, s:I, s:I}", "name", g->name, "key", g->key,
                   "offset", (json_int_t)g->offset, "byte_size",
                   (json_int_t)g->byte_size);
}

/* {name} as a C string; false after answering 400. */
static bool region_name(berth_engine *e, berth_http_req *req,
                        const berth_rest_match *mt, char out[260]) {
  if (!berth_slice_valid_name(mt->name)) {
    berth_rest_respond_error(e, req, BERTH_E_INVALID,
                             "a region name is 1 to "
                             "256 of A-Z a-z 0-9 _ . -");
    return false;
  }
  memcpy(out, mt->name.p, mt->name.n);
  out[mt->name.n] = '\0';
  return true;
}

void berth_rest_shm_status(berth_engine *e, berth_http_req *req,
                           const berth_rest_match *mt) {
  char name[260];
  json_t *all = json_array();
  if (mt->name.n > 0) {
    if (!region_name(e, req, mt, name)) {
      json_decref(all);
      return;
    }
    const berth_shm_region *g = berth_shm_find(e->shm, name);
    if (g == NULL) {
      json_decref(all);
      char msg[400];
      snprintf(msg, sizeof msg,
               "Unable to find system shared memory region: "
               "'%s'",
               name);
      berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
      return;
    }
    json_array_append_new(all, region_doc(g));
  } else {
    for (size_t i = 0; i < berth_shm_count(e->shm); i++)
      json_array_append_new(all, region_doc(berth_shm_at(e->shm, i)));
  }
  berth_rest_respond_doc(e, req, 200, all);
}

/* A non-negative integer member (0 when absent); false when not one. */
static bool body_uint(json_t *doc, const char *key, uint64_t *out) {
  json_t *v = json_object_get(doc, key);
  *out = 0;
  if (v == NULL)
    return true;
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return false;
  *out = (uint64_t)json_integer_value(v);
  return true;
}

void berth_rest_shm_register(berth_engine *e, berth_http_req *req,
                             const berth_rest_match *mt) {
  char name[260];
  if (!region_name(e, req, mt, name))
    return;
  size_t blen = 0;
  const char *body = berth_http_body(req, &blen);
  json_error_t jerr;
  json_t *doc =
      json_loadb(body != NULL ? body : "", blen, JSON_REJECT_DUPLICATES, &jerr);
  uint64_t off = 0, size = 0;
  json_t *key = json_object_get(doc, "key");
  berth_errmsg err;
  int rc = BERTH_OK;
  if (!json_is_object(doc))
    rc = berth_errf(&err, BERTH_E_PARSE,
                    "the body must be a JSON object "
                    "{\"key\", \"offset\", \"byte_size\"}");
  else if (!json_is_string(key))
    rc = berth_errf(&err, BERTH_E_INVALID,
                    "key must be a string: the POSIX "
                    "shared memory name, such as \"/input0\"");
  else if (!body_uint(doc, "offset", &off) ||
           !body_uint(doc, "byte_size", &size) ||
           json_object_get(doc, "byte_size") == NULL)
    rc = berth_errf(&err, BERTH_E_INVALID,
                    "offset and byte_size must be "
                    "non-negative integers (byte_size is required)");
  else
    rc = berth_shm_register(e->shm, name, json_string_value(key), off, size,
                            &err);
  json_decref(doc);
  if (rc != BERTH_OK) {
    berth_rest_respond_error(e, req, rc, err.msg);
    return;
  }
  berth_rest_respond_doc(e, req, 200, json_object());
}

void berth_rest_shm_unregister(berth_engine *e, berth_http_req *req,
                               const berth_rest_match *mt) {
  char name[260];
  if (mt->name.n > 0 && !region_name(e, req, mt, name))
    return;
  berth_errmsg err;
  /* Triton answers success for a name that is not registered */
  (void)berth_shm_unregister(e->shm, mt->name.n > 0 ? name : NULL, &err);
  berth_rest_respond_doc(e, req, 200, json_object());
}

void berth_rest_cuda_shm_status(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt) {
  (void)mt;
  berth_rest_respond_doc(e, req, 200, json_array());
}

void berth_rest_cuda_shm_unregister(berth_engine *e, berth_http_req *req,
                                    const berth_rest_match *mt) {
  (void)mt;
  berth_rest_respond_doc(e, req, 200, json_object());
}

void berth_rest_cuda_shm_register(berth_engine *e, berth_http_req *req,
                                  const berth_rest_match *mt) {
  (void)mt;
  berth_rest_respond_error(e, req, BERTH_E_UNSUPPORTED, NO_GPU);
}

/* ---- gRPC ---------------------------------------------------------------- */

#define UNPACK(type, desc, var)                                                \
  type *var = (type *)berth_grpc_unpack(&(desc), msg, len);                    \
  if (var == NULL)                                                             \
    return berth_errf(err, BERTH_E_PARSE, "the message is not a valid %s",     \
                      (desc).name);
#define FREE_MSG(var) protobuf_c_message_free_unpacked(&(var)->base, NULL)

typedef Inference__SystemSharedMemoryStatusResponse__RegionStatus reg_status;
typedef Inference__SystemSharedMemoryStatusResponse__RegionsEntry reg_entry;

static int status_answer(berth_engine *e, const char *only, berth_buf *out,
                         berth_errmsg *err) {
  size_t n = berth_shm_count(e->shm);
  reg_status *st = calloc(n + 1, sizeof *st);
  reg_entry *en = calloc(n + 1, sizeof *en);
  reg_entry **ep = calloc(n + 1, sizeof *ep);
  int rc = BERTH_OK;
  size_t k = 0;
  if (st == NULL || en == NULL || ep == NULL)
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < n && rc == BERTH_OK; i++) {
    const berth_shm_region *g = berth_shm_at(e->shm, i);
    if (only != NULL && strcmp(only, g->name) != 0)
      continue;
    inference__system_shared_memory_status_response__region_status__init(
        &st[k]);
    inference__system_shared_memory_status_response__regions_entry__init(
        &en[k]);
    st[k].name = g->name;
    st[k].key = g->key;
    st[k].offset = g->offset;
    st[k].byte_size = g->byte_size;
    en[k].key = g->name;
    en[k].value = &st[k];
    ep[k] = &en[k];
    k++;
  }
  if (rc == BERTH_OK && only != NULL && k == 0)
    rc = berth_errf(err, BERTH_E_NOT_FOUND,
                    "Unable to find system shared "
                    "memory region: '%.256s'",
                    only);
  if (rc == BERTH_OK) {
    Inference__SystemSharedMemoryStatusResponse r =
        INFERENCE__SYSTEM_SHARED_MEMORY_STATUS_RESPONSE__INIT;
    r.n_regions = k;
    r.regions = ep;
    rc = berth_grpc_append_message(&r.base, out, err);
  }
  free(st);
  free(en);
  free(ep);
  return rc;
}

int berth_grpc_shm_status(berth_engine *e, const uint8_t *msg, size_t len,
                          berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__SystemSharedMemoryStatusRequest,
         inference__system_shared_memory_status_request__descriptor, rq);
  int rc = status_answer(e, rq->name[0] != '\0' ? rq->name : NULL, out, err);
  FREE_MSG(rq);
  return rc;
}

int berth_grpc_shm_register(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__SystemSharedMemoryRegisterRequest,
         inference__system_shared_memory_register_request__descriptor, rq);
  int rc = berth_shm_register(e->shm, rq->name, rq->key, rq->offset,
                              rq->byte_size, err);
  FREE_MSG(rq);
  if (rc != BERTH_OK)
    return rc;
  Inference__SystemSharedMemoryRegisterResponse r =
      INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_RESPONSE__INIT;
  return berth_grpc_append_message(&r.base, out, err);
}

int berth_grpc_shm_unregister(berth_engine *e, const uint8_t *msg, size_t len,
                              berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__SystemSharedMemoryUnregisterRequest,
         inference__system_shared_memory_unregister_request__descriptor, rq);
  berth_errmsg ignored;
  (void)berth_shm_unregister(e->shm, rq->name[0] != '\0' ? rq->name : NULL,
                             &ignored);
  FREE_MSG(rq);
  Inference__SystemSharedMemoryUnregisterResponse r =
      INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_RESPONSE__INIT;
  return berth_grpc_append_message(&r.base, out, err);
}

/* CudaSharedMemoryStatus (no region) and CudaSharedMemoryUnregister: both
 * answers are empty messages, whose encoding is that of any empty message. */
int berth_grpc_cuda_shm_none(berth_engine *e, const uint8_t *msg, size_t len,
                             berth_buf *out, berth_errmsg *err) {
  (void)e, (void)msg, (void)len;
  Inference__SystemSharedMemoryUnregisterResponse r =
      INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_RESPONSE__INIT;
  return berth_grpc_append_message(&r.base, out, err);
}

int berth_grpc_cuda_shm_register(berth_engine *e, const uint8_t *msg,
                                 size_t len, berth_buf *out,
                                 berth_errmsg *err) {
  (void)e, (void)msg, (void)len, (void)out;
  return berth_errf(err, BERTH_E_UNSUPPORTED, NO_GPU);
}
