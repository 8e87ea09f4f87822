/* Berth engine: the OpenAI-compatible routes on the REST port
 * (docs/openai.md): POST /v1/chat/completions, /v1/completions,
 * /v1/embeddings; GET /v1/models and /v1/models/{id} share their paths
 * with KServe v1 (kserve_v1.c answers one document that both clients
 * read).
 *
 * openai.c decodes the request (codec_openai.h), finds the model, maps the
 * request onto the model's inputs (the generative contract of
 * docs/openai.md) and submits it through rest_stream.h; openai_answer.c
 * turns the model's responses into OpenAI's objects and stream chunks.
 */
#ifndef BERTH_OPENAI_H
#define BERTH_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "codec_openai.h"
#include "rest_stream.h"

/* Whether path (len bytes) is one of the OpenAI request routes, whose
 * errors take OpenAI's shape (rest_common.c asks). */
bool berth_openai_path(const char *path, size_t len);

/* Appends OpenAI's error object {"error": {"message", "type", "param",
 * "code"}} for a berth_status; param and code may be NULL (JSON null). */
int berth_openai_error_json(berth_buf *out, int status, const char *msg,
                            const char *param, const char *code);

/* Answers an OpenAI error (with the headers berth_rest_respond_error
 * adds). */
void berth_openai_respond_error(berth_engine *e, berth_http_req *req,
                                int status, const char *msg, const char *param,
                                const char *code);

/* One choice of a generative call. */
typedef struct berth_oai_choice {
  berth_buf text;  /* not streamed: the text so far (bounded) */
  char finish[16]; /* "" while generating */
  int32_t prompt_tokens, completion_tokens;
  bool started; /* streamed: its first chunk (the role) is sent */
} berth_oai_choice;

/* A call on /v1/chat/completions, /v1/completions or /v1/embeddings. */
typedef struct berth_oai_call {
  berth_rest_call base; /* first */
  berth_oai_kind kind;
  bool stream, include_usage;
  int32_t n;
  char id[96];       /* "chatcmpl-<request id>" ... */
  long long created; /* Unix seconds */
  /* embeddings */
  bool base64, has_dimensions;
  int64_t dimensions;
  size_t n_input;
  berth_oai_choice choices[BERTH_OAI_MAX_N];
} berth_oai_call;

/* openai_answer.c: the ops of a generative call and of an embeddings
 * call. */
extern const berth_rest_call_ops berth_oai_gen_ops;
extern const berth_rest_call_ops berth_oai_embed_ops;

#endif
