/* Berth engine: KServe v1's answer — {"predictions": [...]}, the first
 * output (or the one the request named) as nested lists, written from the
 * OIP JSON text of the tensor (codec_kserve_v1.h). Pure: no I/O. */
#include "codec_kserve_v1.h"

#include <string.h>

#include "codec_json.h"

/* Length of the JSON element text at s (a string literal or a bare
 * number/literal), up to the next ',' or ']' outside strings. */
static size_t element_len(const char *s, size_t n) {
  size_t i = 0;
  if (n > 0 && s[0] == '"') {
    for (i = 1; i < n && s[i] != '"'; i++)
      if (s[i] == '\\')
        i++;
    return i < n ? i + 1 : n;
  }
  while (i < n && s[i] != ',' && s[i] != ']')
    i++;
  return i;
}

/* Writes the flat elements at *p (comma-separated) nested per shape. */
static int write_nested(berth_buf *out, const char **p, const char *end,
                        const int64_t *shape, uint32_t ndim, uint32_t d) {
  if (d == ndim) {
    if (**p == ',')
      (*p)++;
    size_t len = element_len(*p, (size_t)(end - *p));
    int rc = berth_buf_append(out, *p, len);
    *p += len;
    return rc;
  }
  int rc = berth_buf_append(out, "[", 1);
  for (int64_t i = 0; rc == BERTH_OK && i < shape[d]; i++) {
    if (i > 0)
      rc = berth_buf_append(out, ",", 1);
    if (rc == BERTH_OK)
      rc = write_nested(out, p, end, shape, ndim, d + 1);
  }
  return rc == BERTH_OK ? berth_buf_append(out, "]", 1) : rc;
}

int berth_kserve_v1_encode(const berth_infer_request *r,
                           const berth_infer_response *resp, berth_buf *out,
                           berth_errmsg *err) {
  if (resp == NULL || resp->n_outputs == 0)
    return berth_errf(err, BERTH_E_MODEL, "the model returned no output");
  const berth_tensor *t = &resp->outputs[0];
  for (size_t i = 0; r->n_outputs > 0 && i < resp->n_outputs; i++)
    if (resp->outputs[i].name != NULL &&
        strcmp(resp->outputs[i].name, r->outputs[0].name) == 0)
      t = &resp->outputs[i];
  /* The JSON encoder writes {"outputs":[{...,"data":[e,e,...]}]}; its
   * elements are re-nested here. */
  berth_output_request one = {.name = t->name};
  berth_infer_request sub = {.outputs = &one, .n_outputs = t->name ? 1 : 0};
  berth_infer_response bare = *resp;
  bare.parameters = NULL;
  berth_buf flat;
  berth_buf_init(&flat, out->max);
  int rc =
      berth_json_encode_infer_response(NULL, NULL, &sub, &bare, &flat, err);
  const char *data = rc == BERTH_OK ? strstr(flat.data, "\"data\":[") : NULL;
  if (rc == BERTH_OK && data == NULL)
    rc = berth_errf(err, BERTH_E_INTERNAL, "unexpected JSON output layout");
  if (rc == BERTH_OK) {
    const char *p = data + 8, *end = flat.data + flat.len;
    rc = berth_buf_append(out, "{\"predictions\":", 15);
    if (rc == BERTH_OK)
      rc = write_nested(out, &p, end, t->shape, t->ndim, 0);
    if (rc == BERTH_OK)
      rc = berth_buf_append(out, "}", 1);
    if (rc == BERTH_E_TOO_LARGE)
      berth_errf(err, rc, "response exceeds the limit of %zu bytes", out->max);
    else if (rc == BERTH_E_NOMEM)
      berth_errf(err, rc, "out of memory");
  }
  berth_buf_free(&flat);
  return rc;
}
