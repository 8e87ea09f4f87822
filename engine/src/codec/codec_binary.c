/* Berth engine: Triton's binary tensor data extension (see codec_binary.h).
 *
 * Decoding: the JSON head is parsed once here. Binary inputs are checked and
 * turned into tensors that borrow their bytes from the body. The rest of the
 * head (id, parameters, outputs, JSON inputs) goes through the JSON decoder,
 * with each binary input replaced by an empty placeholder of the same name
 * so that the decoder's messages keep the client's input indices and its
 * duplicate-name check covers every input; the placeholders are then swapped
 * for the binary tensors.
 *
 * Encoding: JSON outputs are written by the JSON encoder, binary outputs'
 * descriptions here; the binary bytes are copied once, behind the head.
 */
#include "codec_binary.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_INPUTS 64
#define DEFAULT_MAX_TENSOR_BYTES ((size_t)256 << 20)
#define DEFAULT_MAX_DEPTH 64
/* Longest tensor name the worker protocol can carry. */
#define NAME_MAX_BYTES 65535
/* Names quoted in messages are cut so the message stays readable. */
#define QN "%.100s"

/* ---- head length ------------------------------------------------------ */

int berth_binary_parse_head_length(const char *v, size_t vlen, size_t body_len,
                                   size_t *head_len, berth_errmsg *err) {
  size_t n = 0;
  if (vlen == 0 || vlen > 19)
    return berth_errf(err, BERTH_E_INVALID,
                      "Inference-Header-Content-Length "
                      "must be the JSON head's length in bytes (a decimal "
                      "number)");
  for (size_t i = 0; i < vlen; i++) {
    if (v[i] < '0' || v[i] > '9')
      return berth_errf(err, BERTH_E_INVALID,
                        "Inference-Header-Content-Length "
                        "must be the JSON head's length in bytes (a decimal "
                        "number), got '%.*s'",
                        (int)(vlen > 40 ? 40 : vlen), v);
    n = n * 10 + (size_t)(v[i] - '0');
  }
  if (n > body_len)
    return berth_errf(err, BERTH_E_INVALID,
                      "Inference-Header-Content-Length "
                      "is %zu but the body has only %zu bytes",
                      n, body_len);
  *head_len = n;
  return BERTH_OK;
}

/* ---- decoding --------------------------------------------------------- */

/* Rejects nesting deeper than max before jansson builds anything. */
static int check_depth(const char *s, size_t n, size_t max, berth_errmsg *err) {
  size_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max)
        return berth_errf(err, BERTH_E_INVALID,
                          "JSON head nesting is deeper "
                          "than %zu levels (byte %zu)",
                          max, i);
    } else if ((c == ']' || c == '}') && depth > 0) {
      depth--;
    }
  }
  return BERTH_OK;
}

/* The input's binary_data_size member, or NULL when it has none. */
static json_t *binary_size_of(json_t *in) {
  json_t *params = json_object_get(in, "parameters");
  return json_is_object(params) ? json_object_get(params, "binary_data_size")
                                : NULL;
}

static int take_name(json_t *in, size_t idx, berth_tensor *t,
                     berth_errmsg *err) {
  json_t *v = json_object_get(in, "name");
  size_t len = json_string_length(v);
  if (!json_is_string(v) || len == 0 || len > NAME_MAX_BYTES ||
      memchr(json_string_value(v), '\0', len) != NULL)
    return berth_errf(err, BERTH_E_INVALID,
                      "inputs[%zu].name must be a "
                      "non-empty string of at most %d bytes without NUL",
                      idx, NAME_MAX_BYTES);
  t->name = malloc(len + 1);
  if (t->name == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  memcpy(t->name, json_string_value(v), len + 1);
  return BERTH_OK;
}

static int take_shape_and_type(json_t *in, berth_tensor *t, berth_errmsg *err) {
  json_t *shape = json_object_get(in, "shape");
  size_t nd = json_array_size(shape);
  if (!json_is_array(shape) || nd > BERTH_MAX_DIMS)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': shape must be an "
                      "array of at most %d non-negative integers",
                      t->name, BERTH_MAX_DIMS);
  for (size_t i = 0; i < nd; i++) {
    json_t *d = json_array_get(shape, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return berth_errf(err, BERTH_E_INVALID,
                        "input '" QN "': shape must be "
                        "an array of non-negative integers",
                        t->name);
    t->shape[i] = json_integer_value(d);
  }
  t->ndim = (uint32_t)nd;
  json_t *dt = json_object_get(in, "datatype");
  if (!json_is_string(dt))
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': datatype must be "
                      "a string",
                      t->name);
  t->dtype =
      berth_dtype_from_name(json_string_value(dt), json_string_length(dt));
  if (t->dtype == BERTH_DT_INVALID)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': unknown datatype "
                      "'%.40s'",
                      t->name, json_string_value(dt));
  return BERTH_OK;
}

/* Cursor over the binary section. */
typedef struct bin_cursor {
  const uint8_t *data;
  size_t len;
  size_t off;
  size_t max_tensor_bytes;
} bin_cursor;

/* Builds the tensor of a binary input (inputs[idx]) from the next bytes. */
static int decode_binary_input(json_t *in, size_t idx, bin_cursor *c,
                               berth_tensor *t, berth_errmsg *err) {
  int rc = take_name(in, idx, t, err);
  if (rc == BERTH_OK)
    rc = take_shape_and_type(in, t, err);
  if (rc != BERTH_OK)
    return rc;
  if (json_object_get(in, "data") != NULL)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "' has both data and "
                      "parameters.binary_data_size; send one of them",
                      t->name);
  json_t *sz = binary_size_of(in);
  if (!json_is_integer(sz) || json_integer_value(sz) < 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': "
                      "parameters.binary_data_size must be a non-negative "
                      "integer",
                      t->name);
  uint64_t size = (uint64_t)json_integer_value(sz);
  if (size > c->max_tensor_bytes)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "input '" QN "': %llu binary "
                      "bytes exceed the limit of %zu",
                      t->name, (unsigned long long)size, c->max_tensor_bytes);
  if (size > c->len - c->off)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': binary_data_size "
                      "is %llu bytes, but only %zu bytes of binary data are "
                      "left after the previous inputs",
                      t->name, (unsigned long long)size, c->len - c->off);
  uint64_t numel;
  if (berth_shape_numel(t->shape, t->ndim, &numel) != BERTH_OK)
    return berth_errf(err, BERTH_E_INVALID,
                      "input '" QN "': shape has too "
                      "many elements",
                      t->name);
  size_t es = berth_dtype_size(t->dtype);
  if (es != 0 && (numel > UINT64_MAX / es || numel * es != size))
    return berth_errf(
        err, BERTH_E_INVALID,
        "input '" QN "': binary_data_size "
        "is %llu bytes, but %llu %s elements (its shape) take "
        "%llu bytes",
        t->name, (unsigned long long)size, (unsigned long long)numel,
        berth_dtype_name(t->dtype),
        numel > UINT64_MAX / es ? 0ull : (unsigned long long)(numel * es));
  t->data = (uint8_t *)(uintptr_t)(c->data + c->off);
  t->nbytes = (size_t)size;
  t->data_borrowed = true;
  c->off += (size_t)size;
  if (t->dtype == BERTH_DT_BYTES || t->dtype == BERTH_DT_BOOL)
    return berth_tensor_check(t, err); /* length prefixes; 0/1 bytes */
  return BERTH_OK;
}

/* A stand-in for a binary input in the document given to the JSON
 * decoder: same name, no elements. */
static json_t *placeholder(json_t *in) {
  return json_pack("{s:O, s:s, s:[i], s:[]}", "name",
                   json_object_get(in, "name"), "datatype", "BOOL", "shape", 0,
                   "data");
}

/* root with every binary input replaced by a placeholder, as JSON text
 * (malloc'd), or NULL when out of memory. */
static char *reduced_head(json_t *root, json_t *inputs, const bool *is_bin) {
  json_t *copy = json_copy(root); /* shallow */
  json_t *arr = json_array();
  char *text = NULL;
  if (copy == NULL || arr == NULL)
    goto out;
  for (size_t i = 0; i < json_array_size(inputs); i++) {
    json_t *in = json_array_get(inputs, i);
    int rc = is_bin[i] ? json_array_append_new(arr, placeholder(in))
                       : json_array_append(arr, in);
    if (rc != 0)
      goto out;
  }
  if (json_object_set(copy, "inputs", arr) == 0)
    text = json_dumps(copy, JSON_COMPACT);
out:
  json_decref(arr);
  json_decref(copy);
  return text;
}

static void free_bins(berth_tensor *bins, size_t n) {
  berth_tensors_free(bins, n); /* borrowed data is left alone */
}

int berth_binary_decode_infer_request(const char *body, size_t len,
                                      size_t head_len,
                                      const berth_json_limits *limits,
                                      berth_infer_request *out,
                                      berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  berth_json_limits lim = {DEFAULT_MAX_INPUTS, DEFAULT_MAX_TENSOR_BYTES,
                           DEFAULT_MAX_DEPTH};
  if (limits != NULL) { /* a zero field keeps its default */
    if (limits->max_inputs)
      lim.max_inputs = limits->max_inputs;
    if (limits->max_tensor_bytes)
      lim.max_tensor_bytes = limits->max_tensor_bytes;
    if (limits->max_depth)
      lim.max_depth = limits->max_depth;
  }
  if (body == NULL || head_len == 0 || head_len > len)
    return berth_errf(err, BERTH_E_PARSE,
                      "the request has no JSON head "
                      "(Inference-Header-Content-Length is 0 or too large)");
  int rc = check_depth(body, head_len, lim.max_depth, err);
  if (rc != BERTH_OK)
    return rc;
  json_error_t jerr;
  json_t *root = json_loadb(body, head_len,
                            JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
  if (root == NULL)
    return berth_errf(err, BERTH_E_PARSE,
                      "the JSON head (the first %zu bytes, "
                      "per Inference-Header-Content-Length) is not valid "
                      "JSON: %s (byte %d)",
                      head_len, jerr.text, jerr.position);
  if (!json_is_object(root)) {
    json_decref(root);
    return berth_errf(err, BERTH_E_INVALID, "the JSON head must be an object");
  }
  json_t *inputs = json_object_get(root, "inputs");
  size_t n = json_is_array(inputs) ? json_array_size(inputs) : 0;
  bin_cursor cur = {(const uint8_t *)body + head_len, len - head_len, 0,
                    lim.max_tensor_bytes};
  berth_tensor *bins = NULL;
  bool *is_bin = NULL;
  size_t n_bin = 0;
  char *text = NULL;
  if (n > lim.max_inputs) {
    n = 0;
    rc = berth_errf(err, BERTH_E_TOO_LARGE,
                    "request has %zu inputs; the "
                    "limit is %zu",
                    json_array_size(inputs), lim.max_inputs);
    goto done;
  }
  if (n > 0) {
    bins = calloc(n, sizeof *bins);
    is_bin = calloc(n, sizeof *is_bin);
    if (bins == NULL || is_bin == NULL) {
      rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
      goto done;
    }
  }
  for (size_t i = 0; i < n; i++) {
    json_t *in = json_array_get(inputs, i);
    if (binary_size_of(in) == NULL)
      continue;
    is_bin[i] = true;
    n_bin++;
    rc = decode_binary_input(in, i, &cur, &bins[i], err);
    if (rc != BERTH_OK)
      goto done;
  }
  if (cur.off != cur.len) {
    rc = berth_errf(err, BERTH_E_INVALID,
                    "the body holds %zu bytes of binary "
                    "data after the JSON head, but the inputs' "
                    "parameters.binary_data_size add up to %zu",
                    cur.len, cur.off);
    goto done;
  }
  if (n_bin == 0) {
    rc = berth_json_decode_infer_request(body, head_len, &lim, out, err);
    goto done;
  }
  text = reduced_head(root, inputs, is_bin);
  if (text == NULL) {
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
    goto done;
  }
  rc = berth_json_decode_infer_request(text, strlen(text), &lim, out, err);
  if (rc == BERTH_OK && out->n_inputs != n) {
    berth_infer_request_clear(out);
    rc = berth_errf(err, BERTH_E_INTERNAL, "binary inputs were lost");
  }
  if (rc == BERTH_OK) {
    for (size_t i = 0; i < n; i++) {
      if (!is_bin[i])
        continue;
      berth_tensor_clear(&out->inputs[i]);
      out->inputs[i] = bins[i];
      memset(&bins[i], 0, sizeof bins[i]);
    }
  }
done:
  free(text);
  free_bins(bins, n);
  free(is_bin);
  json_decref(root);
  return rc;
}

/* ---- output preferences ---------------------------------------------- */

int berth_binary_output_prefs(berth_infer_request *req, bool *binary_default,
                              berth_errmsg *err) {
  *binary_default = false;
  json_t *v = json_object_get(req->parameters, "binary_data_output");
  if (v != NULL) {
    if (!json_is_boolean(v))
      return berth_errf(err, BERTH_E_INVALID,
                        "parameters.binary_data_output "
                        "must be true or false");
    *binary_default = json_is_true(v);
    json_object_del(req->parameters, "binary_data_output");
    if (json_object_size(req->parameters) == 0) {
      json_decref(req->parameters);
      req->parameters = NULL;
    }
  }
  for (size_t i = 0; i < req->n_outputs; i++) {
    const berth_output_request *o = &req->outputs[i];
    json_t *b = json_object_get(o->parameters, "binary_data");
    if (b != NULL && !json_is_boolean(b))
      return berth_errf(err, BERTH_E_INVALID,
                        "output '" QN "': "
                        "parameters.binary_data must be true or false",
                        o->name);
    if (json_object_get(o->parameters, "classification") != NULL)
      return berth_errf(err, BERTH_E_UNSUPPORTED,
                        "output '" QN "': the "
                        "classification extension is not supported; request "
                        "the output itself",
                        o->name);
  }
  return BERTH_OK;
}

static bool output_is_binary(const berth_output_request *o, bool dflt) {
  json_t *b = json_object_get(o->parameters, "binary_data");
  return json_is_boolean(b) ? json_is_true(b) : dflt;
}

bool berth_binary_wanted(const berth_infer_request *req, bool binary_default) {
  if (req == NULL || req->n_outputs == 0)
    return binary_default;
  for (size_t i = 0; i < req->n_outputs; i++)
    if (output_is_binary(&req->outputs[i], binary_default))
      return true;
  return false;
}

/* ---- encoding --------------------------------------------------------- */

static const berth_tensor *find_output(const berth_infer_response *resp,
                                       const char *name) {
  for (size_t i = 0; i < resp->n_outputs; i++)
    if (resp->outputs[i].name != NULL &&
        strcmp(resp->outputs[i].name, name) == 0)
      return &resp->outputs[i];
  return NULL;
}

/* The outputs to write, split into JSON ones (as output requests naming
 * them, names borrowed) and binary ones. Both arrays are malloc'd. */
typedef struct out_plan {
  berth_output_request *json;
  size_t n_json;
  const berth_tensor **bin;
  size_t n_bin;
  size_t bin_bytes;
} out_plan;

static void plan_free(out_plan *p) {
  free(p->json);
  free(p->bin);
}

static int plan_outputs(const berth_infer_request *req, bool dflt,
                        const berth_infer_response *resp, out_plan *p,
                        berth_errmsg *err) {
  bool all = req == NULL || req->n_outputs == 0;
  size_t count = all ? resp->n_outputs : req->n_outputs;
  memset(p, 0, sizeof *p);
  p->json = calloc(count ? count : 1, sizeof *p->json);
  p->bin = calloc(count ? count : 1, sizeof *p->bin);
  if (p->json == NULL || p->bin == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  for (size_t i = 0; i < count; i++) {
    const berth_tensor *t =
        all ? &resp->outputs[i] : find_output(resp, req->outputs[i].name);
    if (t == NULL)
      return berth_errf(err, BERTH_E_INVALID,
                        "requested output '" QN "' is "
                        "not an output of this model",
                        req->outputs[i].name);
    if (t->name == NULL)
      return berth_errf(err, BERTH_E_INTERNAL, "output %zu has no name", i);
    bool bin = all ? dflt : output_is_binary(&req->outputs[i], dflt);
    if (!all && berth_output_in_shm(req, t->name)) {
      p->json[p->n_json++] = req->outputs[i]; /* metadata only */
      continue;
    }
    if (!bin) {
      p->json[p->n_json++].name = t->name;
      continue;
    }
    if (berth_tensor_check(t, err) != BERTH_OK)
      return BERTH_E_INTERNAL;
    p->bin[p->n_bin++] = t;
    p->bin_bytes += t->nbytes;
  }
  return BERTH_OK;
}

/* "model_name", "model_version", "id" and "parameters" members after "{". */
static int write_head(const char *model_name, const char *model_version,
                      const berth_infer_request *req,
                      const berth_infer_response *resp, berth_buf *out) {
  int rc = berth_buf_append(out, "{", 1);
  const char *keys[3] = {"model_name", "model_version", "id"};
  const char *vals[3] = {model_name, model_version,
                         req != NULL ? req->id : NULL};
  for (int k = 0; k < 3 && rc == BERTH_OK; k++) {
    if (vals[k] == NULL)
      continue;
    rc = berth_buf_printf(out, "\"%s\":", keys[k]);
    if (rc == BERTH_OK)
      rc = berth_json_append_string(out, vals[k], strlen(vals[k]));
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, ",", 1);
  }
  if (rc == BERTH_OK && resp->parameters != NULL) {
    char *text = json_dumps(resp->parameters, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
      return BERTH_E_NOMEM;
    rc = berth_buf_printf(out, "\"parameters\":%s,", text);
    free(text);
  }
  return rc;
}

/* The JSON outputs as the JSON encoder writes them, comma-separated. */
static int write_json_outputs(const out_plan *p,
                              const berth_infer_response *resp, berth_buf *out,
                              berth_errmsg *err) {
  static const char prefix[] = "{\"outputs\":[";
  berth_infer_request sub = {.outputs = p->json, .n_outputs = p->n_json};
  berth_infer_response bare = *resp;
  bare.parameters = NULL;
  berth_buf tmp;
  berth_buf_init(&tmp, out->max);
  int rc = berth_json_encode_infer_response(NULL, NULL, &sub, &bare, &tmp, err);
  if (rc == BERTH_OK) {
    size_t pl = sizeof prefix - 1;
    if (tmp.len < pl + 2 || memcmp(tmp.data, prefix, pl) != 0 ||
        memcmp(tmp.data + tmp.len - 2, "]}", 2) != 0)
      rc = berth_errf(err, BERTH_E_INTERNAL, "unexpected JSON output layout");
    else
      rc = berth_buf_append(out, tmp.data + pl, tmp.len - pl - 2);
  }
  berth_buf_free(&tmp);
  return rc;
}

static int write_bin_output(const berth_tensor *t, berth_buf *out) {
  int rc = berth_buf_append(out, "{\"name\":", 8);
  if (rc == BERTH_OK)
    rc = berth_json_append_string(out, t->name, strlen(t->name));
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, ",\"datatype\":\"%s\",\"shape\":[",
                          berth_dtype_name(t->dtype));
  for (uint32_t d = 0; d < t->ndim && rc == BERTH_OK; d++)
    rc = berth_buf_printf(out, "%s%lld", d ? "," : "", (long long)t->shape[d]);
  if (rc == BERTH_OK)
    rc = berth_buf_printf(out, "],\"parameters\":{\"binary_data_size\":%zu}}",
                          t->nbytes);
  return rc;
}

int berth_binary_encode_infer_response(const char *model_name,
                                       const char *model_version,
                                       const berth_infer_request *req,
                                       bool binary_default,
                                       const berth_infer_response *resp,
                                       berth_buf *out, size_t *head_len,
                                       berth_errmsg *err) {
  size_t start = out->len;
  out_plan p;
  if (resp == NULL)
    return berth_errf(err, BERTH_E_INTERNAL, "no response to encode");
  if (err != NULL)
    err->msg[0] = '\0';
  int rc = plan_outputs(req, binary_default, resp, &p, err);
  if (rc == BERTH_OK)
    rc = write_head(model_name, model_version, req, resp, out);
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "\"outputs\":[", 11);
  if (rc == BERTH_OK && p.n_json > 0)
    rc = write_json_outputs(&p, resp, out, err);
  for (size_t i = 0; i < p.n_bin && rc == BERTH_OK; i++) {
    if (i > 0 || p.n_json > 0)
      rc = berth_buf_append(out, ",", 1);
    if (rc == BERTH_OK)
      rc = write_bin_output(p.bin[i], out);
  }
  if (rc == BERTH_OK)
    rc = berth_buf_append(out, "]}", 2);
  size_t head = out->len - start;
  char *dst = NULL;
  if (rc == BERTH_OK) {
    dst = berth_buf_reserve(out, p.bin_bytes);
    if (dst == NULL)
      rc =
          p.bin_bytes > out->max - out->len ? BERTH_E_TOO_LARGE : BERTH_E_NOMEM;
  }
  if (rc == BERTH_OK) {
    size_t off = 0;
    for (size_t i = 0; i < p.n_bin; i++) {
      if (p.bin[i]->nbytes > 0)
        memcpy(dst + off, p.bin[i]->data, p.bin[i]->nbytes);
      off += p.bin[i]->nbytes;
    }
    berth_buf_commit(out, p.bin_bytes);
    *head_len = head;
  }
  plan_free(&p);
  if (rc != BERTH_OK) {
    if (rc == BERTH_E_TOO_LARGE)
      berth_errf(err, rc, "response exceeds the limit of %zu bytes", out->max);
    else if (rc == BERTH_E_NOMEM)
      berth_errf(err, rc, "out of memory");
    else if (err != NULL && err->msg[0] == '\0')
      berth_errf(err, rc, "could not encode the response");
    out->len = start;
    if (out->data != NULL)
      out->data[start] = '\0';
  }
  return rc;
}
