/* Berth engine: OpenAI's answers from a model's responses (openai.h).
 *
 * A generative model answers each choice in responses carrying text_output
 * (the new text), index, finish_reason ("" until the choice's last
 * response), prompt_tokens and completion_tokens (running counts): not
 * streamed, the text is gathered per choice into one chat.completion or
 * text_completion object; streamed, every response becomes a chunk (a
 * choice's first chunk of a chat carries the role), then an optional usage
 * chunk and `data: [DONE]`. An embeddings model answers once: an FP32
 * [inputs, dim] output becomes the list of embeddings. */
#include "openai.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

/* ---- reading a response ----------------------------------------------------- */

static const berth_tensor *output(const berth_infer_response *resp,
                                  const char *name) {
  for (size_t i = 0; i < resp->n_outputs; i++)
    if (strcmp(resp->outputs[i].name, name) == 0)
      return &resp->outputs[i];
  return NULL;
}

/* The first element of a BYTES output (p, n), or false. */
static bool bytes_first(const berth_infer_response *resp, const char *name,
                        const char **p, size_t *n) {
  const berth_tensor *t = output(resp, name);
  if (t == NULL || t->dtype != BERTH_DT_BYTES || t->nbytes < 4)
    return false;
  uint32_t len;
  memcpy(&len, t->data, 4);
  if (len > t->nbytes - 4)
    return false;
  *p = (const char *)t->data + 4;
  *n = len;
  return true;
}

static int32_t int_first(const berth_infer_response *resp, const char *name,
                         int32_t def) {
  const berth_tensor *t = output(resp, name);
  int32_t v = def;
  if (t != NULL && t->dtype == BERTH_DT_INT32 && t->nbytes >= 4)
    memcpy(&v, t->data, 4);
  else if (t != NULL && t->dtype == BERTH_DT_INT64 && t->nbytes >= 8) {
    int64_t w;
    memcpy(&w, t->data, 8);
    v = (int32_t)w;
  }
  return v;
}

/* n bytes as a JSON string, invalid UTF-8 as U+FFFD; NULL when out of
 * memory. */
static json_t *text_json(const char *p, size_t n) {
  json_t *s = json_stringn(p, n);
  if (s != NULL)
    return s;
  char *o = malloc(n * 3 + 1);
  if (o == NULL)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n;) {
    size_t q = berth_utf8_seq((const uint8_t *)p + i, n - i);
    if (q == 0) {
      memcpy(o + k, "\xEF\xBF\xBD", 3);
      k += 3;
      i++;
    } else {
      memcpy(o + k, p + i, q);
      k += q;
      i += q;
    }
  }
  s = json_stringn(o, k);
  free(o);
  return s;
}

/* ---- generative answers ---------------------------------------------------- */

static const char *object_of(const berth_oai_call *c, bool chunk) {
  if (c->kind == BERTH_OAI_CHAT)
    return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

/* The usage object: the prompt counted once, the completions of every
 * choice summed. */
static json_t *usage(const berth_oai_call *c) {
  json_int_t prompt = c->choices[0].prompt_tokens, done = 0;
  for (int i = 0; i < c->n; i++)
    done += c->choices[i].completion_tokens;
  return json_pack("{s:I, s:I, s:I}", "prompt_tokens", prompt,
                   "completion_tokens", done, "total_tokens", prompt + done);
}

/* A chunk of one choice: its delta (chat) or text (completions). */
static json_t *chunk(const berth_oai_call *c, int index, json_t *delta_text,
                     bool role, const char *finish) {
  json_t *ch =
      json_pack("{s:i, s:o}", "index", index, "finish_reason",
                finish != NULL && *finish ? json_string(finish) : json_null());
  if (ch != NULL && c->kind == BERTH_OAI_CHAT) {
    json_t *delta = json_object();
    if (role)
      json_object_set_new(delta, "role", json_string("assistant"));
    if (delta_text != NULL)
      json_object_set(delta, "content", delta_text);
    json_object_set_new(ch, "delta", delta);
  } else if (ch != NULL) {
    if (delta_text != NULL)
      json_object_set(ch, "text", delta_text);
    else
      json_object_set_new(ch, "text", json_string(""));
    json_object_set_new(ch, "logprobs", json_null());
  }
  json_decref(delta_text);
  json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", c->id, "object",
                          object_of(c, true), "created", (json_int_t)c->created,
                          "model", c->base.job.model->cfg->name, "choices", ch);
  if (doc != NULL && c->include_usage)
    json_object_set_new(doc, "usage", json_null());
  return doc;
}

/* Ends the call with an error: an OpenAI error answer, or, once the stream
 * is open, an error event and [DONE]. */
static void fail(berth_oai_call *c, int status, const char *msg) {
  berth_rest_call *b = &c->base;
  if (b->ended)
    return;
  if (!b->begun) {
    b->ended = true;
    berth_openai_respond_error(b->engine, b->req, status, msg, NULL, NULL);
    return;
  }
  berth_buf e;
  berth_buf_init(&e, 64 * 1024);
  if (berth_openai_error_json(&e, status, msg, NULL, NULL) == BERTH_OK)
    (void)berth_rest_call_event(b, e.data, e.len);
  berth_buf_free(&e);
  (void)berth_rest_call_event(b, "[DONE]", 6);
  berth_rest_call_end_stream(b);
}

/* Streams one response of choice i; false when the stream cannot go on. */
static bool stream_one(berth_oai_call *c, int i, const char *p, size_t n,
                       const char *finish) {
  berth_oai_choice *ch = &c->choices[i];
  if (!ch->started && c->kind == BERTH_OAI_CHAT) {
    ch->started = true;
    if (!berth_rest_call_event_json(&c->base,
                                    chunk(c, i, json_string(""), true, NULL)))
      return false;
  }
  ch->started = true;
  if (n == 0 && *finish == '\0')
    return true;
  json_t *t = n > 0 ? text_json(p, n) : NULL;
  if (n > 0 && t == NULL)
    return false;
  return berth_rest_call_event_json(&c->base, chunk(c, i, t, false, finish));
}

static void gen_partial(berth_rest_call *b, berth_infer_response *resp) {
  berth_oai_call *c = (berth_oai_call *)b;
  const char *p = "", *f = "";
  size_t n = 0, fl = 0;
  int32_t i = int_first(resp, "index", 0);
  bool has_text = bytes_first(resp, "text_output", &p, &n);
  (void)bytes_first(resp, "finish_reason", &f, &fl);
  char msg[300];
  if (!has_text || i < 0 || i >= c->n) {
    snprintf(msg, sizeof msg,
             "model '%s' broke the generative contract: each response needs "
             "a BYTES output 'text_output' and an 'index' below n "
             "(docs/openai.md)",
             b->job.model->cfg->name);
    fail(c, BERTH_E_MODEL, msg);
    berth_rest_call_stop(b);
    return;
  }
  berth_oai_choice *ch = &c->choices[i];
  snprintf(ch->finish, sizeof ch->finish, "%.*s", (int)(fl < 15 ? fl : 15), f);
  ch->prompt_tokens = int_first(resp, "prompt_tokens", ch->prompt_tokens);
  ch->completion_tokens =
      int_first(resp, "completion_tokens", ch->completion_tokens);
  if (!c->stream) {
    if (berth_buf_append(&ch->text, p, n) != BERTH_OK) {
      fail(c, BERTH_E_TOO_LARGE, "the model's answer is too long");
      berth_rest_call_stop(b);
    }
    return;
  }
  if (!stream_one(c, i, p, n, ch->finish)) {
    berth_rest_call_stop(b);
    return;
  }
  if (berth_rest_call_lagging(b)) {
    fail(c, BERTH_E_OVERLOAD,
         "the client leaves too many answers unread on this stream");
    berth_rest_call_stop(b);
  }
}

/* The non-streamed answer: every choice's text. */
static json_t *completion_doc(berth_oai_call *c) {
  json_t *choices = json_array();
  for (int i = 0; choices != NULL && i < c->n; i++) {
    berth_oai_choice *ch = &c->choices[i];
    json_t *text = text_json(ch->text.data ? ch->text.data : "", ch->text.len);
    const char *finish = ch->finish[0] ? ch->finish : "stop";
    json_t *one = c->kind == BERTH_OAI_CHAT
                      ? json_pack("{s:i, s:{s:s, s:o}, s:n, s:s}", "index", i,
                                  "message", "role", "assistant", "content",
                                  text, "logprobs", "finish_reason", finish)
                      : json_pack("{s:i, s:o, s:n, s:s}", "index", i, "text",
                                  text, "logprobs", "finish_reason", finish);
    if (one == NULL || json_array_append_new(choices, one) != 0) {
      json_decref(choices);
      return NULL;
    }
  }
  if (choices == NULL)
    return NULL;
  return json_pack("{s:s, s:s, s:I, s:s, s:o, s:o}", "id", c->id, "object",
                   object_of(c, false), "created", (json_int_t)c->created,
                   "model", c->base.job.model->cfg->name, "choices", choices,
                   "usage", usage(c));
}

static void gen_done(berth_rest_call *b, int status, const char *msg,
                     berth_infer_response *resp) {
  (void)resp;
  berth_oai_call *c = (berth_oai_call *)b;
  if (status != BERTH_OK) {
    fail(c, status, msg);
    return;
  }
  if (!c->stream) {
    b->ended = true;
    berth_rest_respond_doc(b->engine, b->req, 200, completion_doc(c));
    return;
  }
  if (c->include_usage) {
    json_t *u = json_pack(
        "{s:s, s:s, s:I, s:s, s:[], s:o}", "id", c->id, "object",
        object_of(c, true), "created", (json_int_t)c->created, "model",
        b->job.model->cfg->name, "choices", "usage", usage(c));
    if (!berth_rest_call_event_json(b, u)) {
      b->ended = true;
      return;
    }
  }
  if (!berth_rest_call_event(b, "[DONE]", 6)) {
    b->ended = true;
    return;
  }
  berth_rest_call_end_stream(b);
}

static void call_destroy(berth_rest_call *b) {
  berth_oai_call *c = (berth_oai_call *)b;
  for (int i = 0; i < BERTH_OAI_MAX_N; i++)
    berth_buf_free(&c->choices[i].text);
  free(c);
}

const berth_rest_call_ops berth_oai_gen_ops = {
    .partial = gen_partial, .done = gen_done, .destroy = call_destroy};

/* ---- embeddings ------------------------------------------------------------- */

/* The FP32 [inputs, dim] output of resp, or NULL. */
static const berth_tensor *embedding_output(const berth_oai_call *c,
                                            const berth_infer_response *resp) {
  for (size_t i = 0; i < resp->n_outputs; i++) {
    const berth_tensor *t = &resp->outputs[i];
    if (t->dtype == BERTH_DT_FP32 && t->ndim == 2 &&
        t->shape[0] == (int64_t)c->n_input && t->shape[1] > 0 &&
        t->nbytes == (size_t)t->shape[0] * (size_t)t->shape[1] * 4)
      return t;
  }
  return NULL;
}

/* One embedding: a list of numbers, or base64 of the little-endian
 * float32 bytes. */
static json_t *embedding(const berth_oai_call *c, const uint8_t *row,
                         size_t dim) {
  if (c->base64) {
    size_t n = dim * 4;
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    if (out == NULL)
      return NULL;
    EVP_EncodeBlock((unsigned char *)out, row, (int)n);
    json_t *s = json_string(out);
    free(out);
    return s;
  }
  json_t *list = json_array();
  for (size_t k = 0; list != NULL && k < dim; k++) {
    float v;
    memcpy(&v, row + k * 4, 4);
    if (json_array_append_new(list, json_real((double)v)) != 0) {
      json_decref(list);
      return NULL;
    }
  }
  return list;
}

static json_t *embeddings_doc(berth_oai_call *c, const berth_tensor *t) {
  size_t dim = (size_t)t->shape[1];
  json_t *data = json_array();
  for (size_t i = 0; data != NULL && i < c->n_input; i++) {
    json_t *one = json_pack("{s:s, s:I, s:o}", "object", "embedding", "index",
                            (json_int_t)i, "embedding",
                            embedding(c, t->data + i * dim * 4, dim));
    if (one == NULL || json_array_append_new(data, one) != 0) {
      json_decref(data);
      return NULL;
    }
  }
  if (data == NULL)
    return NULL;
  return json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data",
                   data, "model", c->base.job.model->cfg->name, "usage",
                   "prompt_tokens", 0, "total_tokens", 0);
}

static void embed_done(berth_rest_call *b, int status, const char *msg,
                       berth_infer_response *resp) {
  berth_oai_call *c = (berth_oai_call *)b;
  b->ended = true;
  if (status != BERTH_OK) {
    berth_openai_respond_error(b->engine, b->req, status, msg, NULL, NULL);
    return;
  }
  const berth_tensor *t = embedding_output(c, resp);
  char m[400];
  if (t == NULL) {
    snprintf(m, sizeof m,
             "model '%s' answered no FP32 output of shape [%zu, dim]: it is "
             "not an embedding model (docs/openai.md)",
             b->job.model->cfg->name, c->n_input);
    berth_openai_respond_error(b->engine, b->req, BERTH_E_MODEL, m, NULL, NULL);
    return;
  }
  if (c->has_dimensions && c->dimensions != t->shape[1]) {
    snprintf(m, sizeof m,
             "model '%s' makes embeddings of %lld dimensions; 'dimensions' "
             "must be left out or be %lld",
             b->job.model->cfg->name, (long long)t->shape[1],
             (long long)t->shape[1]);
    berth_openai_respond_error(b->engine, b->req, BERTH_E_INVALID, m,
                               "dimensions", NULL);
    return;
  }
  berth_rest_respond_doc(b->engine, b->req, 200, embeddings_doc(c, t));
}

const berth_rest_call_ops berth_oai_embed_ops = {
    .partial = NULL, .done = embed_done, .destroy = call_destroy};
