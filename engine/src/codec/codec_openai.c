/* Berth engine: decoding the OpenAI-compatible request bodies
 * (codec_openai.h). Fields Berth does not implement and that would change
 * the answer (tools, logprobs, echo, suffix, best_of, penalties,
 * logit_bias, a non-text response_format) are refused by name rather than
 * ignored; harmless ones (user, metadata, store, ...) are ignored. */
#include "codec_openai.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest stop sequence, in bytes. */
#define OAI_MAX_STOP_BYTES 1024

static int refuse(berth_oai_request *r, const char *param, berth_errmsg *err,
                  const char *msg) {
  snprintf(r->err_param, sizeof r->err_param, "%s", param);
  return berth_errf(err, BERTH_E_INVALID, "%s", msg);
}

static int oom(berth_errmsg *err) {
  return berth_errf(err, BERTH_E_NOMEM, "out of memory");
}

/* A JSON number as a double; false when v is no number. */
static bool number(const json_t *v, double *out) {
  if (!json_is_number(v))
    return false;
  *out = json_number_value(v);
  return true;
}

/* ---- sampling parameters ---- */

static int take_int32(berth_oai_request *r, json_t *body, const char *key,
                      int64_t lo, int64_t hi, bool *has, int32_t *out,
                      berth_errmsg *err) {
  json_t *v = json_object_get(body, key);
  if (v == NULL || json_is_null(v))
    return BERTH_OK;
  char msg[160];
  if (!json_is_integer(v) || json_integer_value(v) < lo ||
      json_integer_value(v) > hi) {
    snprintf(msg, sizeof msg, "'%s' must be an integer from %lld to %lld", key,
             (long long)lo, (long long)hi);
    return refuse(r, key, err, msg);
  }
  *has = true;
  *out = (int32_t)json_integer_value(v);
  return BERTH_OK;
}

static int take_float(berth_oai_request *r, json_t *body, const char *key,
                      double hi, bool *has, float *out, berth_errmsg *err) {
  json_t *v = json_object_get(body, key);
  if (v == NULL || json_is_null(v))
    return BERTH_OK;
  double d = 0;
  char msg[160];
  if (!number(v, &d) || !(d >= 0 && d <= hi)) {
    snprintf(msg, sizeof msg, "'%s' must be a number from 0 to %g", key, hi);
    return refuse(r, key, err, msg);
  }
  *has = true;
  *out = (float)d;
  return BERTH_OK;
}

static int take_stop(berth_oai_request *r, json_t *body, berth_errmsg *err) {
  json_t *v = json_object_get(body, "stop");
  if (v == NULL || json_is_null(v))
    return BERTH_OK;
  json_t *one = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
  if (one == NULL)
    return oom(err);
  int rc = BERTH_OK;
  if (!json_is_array(one) || json_array_size(one) > BERTH_OAI_MAX_STOP)
    rc = refuse(r, "stop", err,
                "'stop' must be a string or an array of at most 4 strings");
  size_t i;
  json_t *s;
  json_array_foreach(one, i, s) {
    if (rc != BERTH_OK)
      break;
    size_t n = json_string_length(s);
    if (!json_is_string(s) || n == 0 || n > OAI_MAX_STOP_BYTES) {
      rc = refuse(r, "stop", err,
                  "each stop sequence must be a non-empty string of at most "
                  "1024 bytes");
      break;
    }
    r->stop[r->n_stop] = strdup(json_string_value(s));
    if (r->stop[r->n_stop] == NULL)
      rc = oom(err);
    else
      r->n_stop++;
  }
  json_decref(one);
  return rc;
}

static int take_stream(berth_oai_request *r, json_t *body, berth_errmsg *err) {
  json_t *v = json_object_get(body, "stream");
  if (v != NULL && !json_is_null(v) && !json_is_boolean(v))
    return refuse(r, "stream", err, "'stream' must be true or false");
  r->stream = json_is_true(v);
  json_t *o = json_object_get(body, "stream_options");
  if (o == NULL || json_is_null(o))
    return BERTH_OK;
  if (!r->stream)
    return refuse(r, "stream_options", err,
                  "'stream_options' is only allowed when 'stream' is true");
  json_t *u = json_object_get(o, "include_usage");
  if (!json_is_object(o) || (u != NULL && !json_is_boolean(u)))
    return refuse(r, "stream_options", err,
                  "'stream_options' must be an object whose "
                  "'include_usage' is true or false");
  r->include_usage = json_is_true(u);
  return BERTH_OK;
}

/* Fields that would change the answer and that Berth does not implement:
 * refused when set to anything but their neutral value. */
static int refuse_unsupported(berth_oai_request *r, json_t *body,
                              berth_errmsg *err) {
  static const char *const never[] = {
      "tools",  "functions",  "tool_choice", "function_call",
      "suffix", "best_of",    "logit_bias",  "top_logprobs",
      "audio",  "prediction", "modalities"};
  static const char *const falsy[] = {"logprobs", "echo"};
  static const char *const zero[] = {"presence_penalty", "frequency_penalty"};
  char msg[200];
  for (size_t i = 0; i < sizeof never / sizeof never[0]; i++) {
    json_t *v = json_object_get(body, never[i]);
    if (v != NULL && !json_is_null(v)) {
      snprintf(msg, sizeof msg, "'%s' is not supported by this server",
               never[i]);
      return refuse(r, never[i], err, msg);
    }
  }
  for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++) {
    json_t *v = json_object_get(body, falsy[i]);
    if (v != NULL && !json_is_null(v) && !json_is_false(v) &&
        !(json_is_integer(v) && json_integer_value(v) == 0)) {
      snprintf(msg, sizeof msg, "'%s' is not supported by this server",
               falsy[i]);
      return refuse(r, falsy[i], err, msg);
    }
  }
  for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
    json_t *v = json_object_get(body, zero[i]);
    double d = 0;
    if (v != NULL && !json_is_null(v) && (!number(v, &d) || d != 0)) {
      snprintf(msg, sizeof msg, "'%s' is not supported by this server (only 0)",
               zero[i]);
      return refuse(r, zero[i], err, msg);
    }
  }
  json_t *rf = json_object_get(body, "response_format");
  const char *t = json_string_value(json_object_get(rf, "type"));
  if (rf != NULL && !json_is_null(rf) && (t == NULL || strcmp(t, "text") != 0))
    return refuse(r, "response_format", err,
                  "only response_format {\"type\": \"text\"} is supported");
  return BERTH_OK;
}

static int take_sampling(berth_oai_request *r, json_t *body,
                         berth_errmsg *err) {
  int rc = refuse_unsupported(r, body, err);
  bool has_mct = false;
  int32_t mct = 0;
  if (rc == BERTH_OK)
    rc = take_int32(r, body, "max_tokens", 1, INT32_MAX, &r->has_max_tokens,
                    &r->max_tokens, err);
  if (rc == BERTH_OK && r->kind == BERTH_OAI_CHAT)
    rc = take_int32(r, body, "max_completion_tokens", 1, INT32_MAX, &has_mct,
                    &mct, err);
  if (rc == BERTH_OK && has_mct && !r->has_max_tokens) {
    r->has_max_tokens = true;
    r->max_tokens = mct;
  }
  if (rc == BERTH_OK)
    rc = take_float(r, body, "temperature", 2, &r->has_temperature,
                    &r->temperature, err);
  if (rc == BERTH_OK)
    rc = take_float(r, body, "top_p", 1, &r->has_top_p, &r->top_p, err);
  if (rc == BERTH_OK)
    rc = take_int32(r, body, "n", 1, BERTH_OAI_MAX_N, &r->has_n, &r->n, err);
  json_t *seed = json_object_get(body, "seed");
  if (rc == BERTH_OK && seed != NULL && !json_is_null(seed)) {
    if (!json_is_integer(seed))
      rc = refuse(r, "seed", err, "'seed' must be an integer");
    r->has_seed = rc == BERTH_OK;
    r->seed = json_integer_value(seed);
  }
  if (rc == BERTH_OK)
    rc = take_stop(r, body, err);
  if (rc == BERTH_OK)
    rc = take_stream(r, body, err);
  return rc;
}

/* ---- chat messages ---- */

static bool known_role(const char *role) {
  static const char *const roles[] = {"system", "developer", "user",
                                      "assistant", "tool"};
  for (size_t i = 0; role != NULL && i < sizeof roles / sizeof roles[0]; i++)
    if (strcmp(role, roles[i]) == 0)
      return true;
  return false;
}

/* A message's content as one string: a string as it is, text parts joined
 * by newlines. NULL (err set) when it is neither. */
static json_t *content_text(berth_oai_request *r, json_t *c,
                            berth_errmsg *err) {
  if (json_is_string(c))
    return json_incref(c);
  if (!json_is_array(c) || json_array_size(c) == 0) {
    refuse(r, "messages", err,
           "a message's 'content' must be a string or a non-empty array of "
           "{\"type\": \"text\", \"text\": ...} parts");
    return NULL;
  }
  size_t total = 0, i;
  json_t *part;
  json_array_foreach(c, i, part) {
    const char *type = json_string_value(json_object_get(part, "type"));
    json_t *text = json_object_get(part, "text");
    if (type == NULL || strcmp(type, "text") != 0 || !json_is_string(text)) {
      refuse(r, "messages", err,
             "only text content parts ({\"type\": \"text\", \"text\": ...}) "
             "are supported");
      return NULL;
    }
    total += json_string_length(text) + 1;
  }
  char *joined = malloc(total);
  if (joined == NULL) {
    oom(err);
    return NULL;
  }
  size_t off = 0;
  json_array_foreach(c, i, part) {
    json_t *text = json_object_get(part, "text");
    size_t n = json_string_length(text);
    if (off > 0)
      joined[off++] = '\n';
    memcpy(joined + off, json_string_value(text), n);
    off += n;
  }
  json_t *s = json_stringn_nocheck(joined, off);
  free(joined);
  if (s == NULL)
    oom(err);
  return s;
}

/* One message, normalised to {"role", "content"[, "name"]}; NULL with err
 * set. */
static json_t *one_message(berth_oai_request *r, json_t *m, berth_errmsg *err) {
  const char *role = json_string_value(json_object_get(m, "role"));
  json_t *name = json_object_get(m, "name");
  if (!json_is_object(m) || !known_role(role)) {
    refuse(r, "messages", err,
           "each message must be an object with a 'role' of system, "
           "developer, user, assistant or tool");
    return NULL;
  }
  if (name != NULL && !json_is_string(name)) {
    refuse(r, "messages", err, "a message's 'name' must be a string");
    return NULL;
  }
  json_t *text = content_text(r, json_object_get(m, "content"), err);
  if (text == NULL)
    return NULL;
  json_t *out = json_pack("{s:s, s:o}", "role", role, "content", text);
  if (out != NULL && name != NULL && json_object_set(out, "name", name) != 0) {
    json_decref(out);
    out = NULL;
  }
  if (out == NULL)
    oom(err);
  return out;
}

static int take_messages(berth_oai_request *r, json_t *body,
                         berth_errmsg *err) {
  json_t *msgs = json_object_get(body, "messages");
  if (!json_is_array(msgs) || json_array_size(msgs) == 0)
    return refuse(r, "messages", err,
                  "'messages' must be a non-empty array of messages");
  json_t *norm = json_array();
  if (norm == NULL)
    return oom(err);
  size_t i;
  json_t *m;
  json_array_foreach(msgs, i, m) {
    json_t *one = one_message(r, m, err);
    if (one == NULL || json_array_append_new(norm, one) != 0) {
      json_decref(norm);
      return one == NULL && r->err_param[0] != '\0' ? BERTH_E_INVALID
                                                    : oom(err);
    }
  }
  r->messages = json_dumps(norm, JSON_COMPACT | JSON_ENSURE_ASCII);
  json_decref(norm);
  return r->messages != NULL ? BERTH_OK : oom(err);
}

/* ---- prompts and embedding inputs ---- */

static int take_prompt(berth_oai_request *r, json_t *body, berth_errmsg *err) {
  json_t *p = json_object_get(body, "prompt");
  if (json_is_array(p) && json_array_size(p) == 1 &&
      json_is_string(json_array_get(p, 0)))
    p = json_array_get(p, 0);
  if (!json_is_string(p))
    return refuse(r, "prompt", err,
                  "'prompt' must be a string (or an array of one string); "
                  "token arrays and several prompts in one request are not "
                  "supported");
  r->prompt = strdup(json_string_value(p));
  return r->prompt != NULL ? BERTH_OK : oom(err);
}

static int take_input(berth_oai_request *r, json_t *body, berth_errmsg *err) {
  json_t *in = json_object_get(body, "input");
  json_t *list = json_is_string(in) ? json_pack("[O]", in) : json_incref(in);
  if (list == NULL && in != NULL)
    return oom(err);
  size_t n = json_array_size(list);
  int rc = BERTH_OK;
  if (!json_is_array(list) || n == 0 || n > BERTH_OAI_MAX_INPUTS)
    rc = refuse(r, "input", err,
                "'input' must be a string or an array of 1 to 2048 strings; "
                "token arrays are not supported");
  for (size_t i = 0; rc == BERTH_OK && i < n; i++) {
    json_t *s = json_array_get(list, i);
    if (!json_is_string(s) || json_string_length(s) == 0)
      rc = refuse(r, "input", err,
                  "each input must be a non-empty string; token arrays are "
                  "not supported");
  }
  if (rc == BERTH_OK && (r->input = calloc(n, sizeof *r->input)) == NULL)
    rc = oom(err);
  for (size_t i = 0; rc == BERTH_OK && i < n; i++) {
    r->input[i] = strdup(json_string_value(json_array_get(list, i)));
    if (r->input[i] == NULL)
      rc = oom(err);
    else
      r->n_input = i + 1;
  }
  json_decref(list);
  return rc;
}

static int take_embedding(berth_oai_request *r, json_t *body,
                          berth_errmsg *err) {
  int rc = take_input(r, body, err);
  json_t *f = json_object_get(body, "encoding_format");
  const char *fs = json_string_value(f);
  if (rc == BERTH_OK && f != NULL && !json_is_null(f) &&
      (fs == NULL || (strcmp(fs, "float") != 0 && strcmp(fs, "base64") != 0)))
    rc = refuse(r, "encoding_format", err,
                "'encoding_format' must be \"float\" or \"base64\"");
  r->base64 = fs != NULL && strcmp(fs, "base64") == 0;
  json_t *d = json_object_get(body, "dimensions");
  if (rc == BERTH_OK && d != NULL && !json_is_null(d)) {
    if (!json_is_integer(d) || json_integer_value(d) < 1)
      rc = refuse(r, "dimensions", err,
                  "'dimensions' must be a positive integer");
    r->has_dimensions = true;
    r->dimensions = json_integer_value(d);
  }
  return rc;
}

/* ---- the whole body ---- */

int berth_oai_decode(const char *body, size_t len, berth_oai_kind kind,
                     berth_oai_request *out, berth_errmsg *err) {
  memset(out, 0, sizeof *out);
  out->kind = kind;
  out->n = 1;
  json_error_t jerr;
  json_t *doc =
      json_loadb(body != NULL ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
  if (doc == NULL)
    return berth_errf(err, BERTH_E_PARSE,
                      "the body is not valid JSON: %s (byte %d)", jerr.text,
                      jerr.position);
  int rc = BERTH_OK;
  const char *model = json_string_value(json_object_get(doc, "model"));
  if (!json_is_object(doc))
    rc = refuse(out, "", err, "the body must be one JSON object");
  else if (model == NULL || *model == '\0')
    rc = refuse(out, "model", err,
                "'model' must be the name of a served model (GET /v1/models "
                "lists them)");
  else if ((out->model = strdup(model)) == NULL)
    rc = oom(err);
  if (rc == BERTH_OK && kind == BERTH_OAI_EMBEDDING)
    rc = take_embedding(out, doc, err);
  else if (rc == BERTH_OK && kind == BERTH_OAI_CHAT)
    rc = take_messages(out, doc, err);
  else if (rc == BERTH_OK)
    rc = take_prompt(out, doc, err);
  if (rc == BERTH_OK && kind != BERTH_OAI_EMBEDDING)
    rc = take_sampling(out, doc, err);
  json_decref(doc);
  if (rc != BERTH_OK) {
    char param[sizeof out->err_param];
    memcpy(param, out->err_param, sizeof param);
    berth_oai_request_clear(out);
    memcpy(out->err_param, param, sizeof param);
  }
  return rc;
}

void berth_oai_request_clear(berth_oai_request *r) {
  free(r->model);
  free(r->messages);
  free(r->prompt);
  for (size_t i = 0; i < r->n_stop; i++)
    free(r->stop[i]);
  for (size_t i = 0; i < r->n_input; i++)
    free(r->input[i]);
  free(r->input);
  memset(r, 0, sizeof *r);
}
