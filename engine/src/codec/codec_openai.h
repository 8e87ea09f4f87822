/* Berth engine: the OpenAI-compatible request bodies (codec_openai.c) —
 * POST /v1/chat/completions, /v1/completions and /v1/embeddings — decoded
 * and checked into one struct, before any model is named or called
 * (docs/openai.md). Pure: bytes in, a struct out; fuzzed
 * (engine/fuzz/fuzz_codec_openai.c).
 *
 * A refusal is BERTH_E_INVALID (or BERTH_E_PARSE for bad JSON) with err set
 * and req->err_param naming the offending field ("" when none), as OpenAI's
 * error object's "param".
 */
#ifndef BERTH_CODEC_OPENAI_H
#define BERTH_CODEC_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

/* The most choices one request may ask for ("n"). */
#define BERTH_OAI_MAX_N 16
/* The most stop sequences ("stop"), as OpenAI allows. */
#define BERTH_OAI_MAX_STOP 4
/* The most strings one embeddings request may carry ("input"). */
#define BERTH_OAI_MAX_INPUTS 2048

typedef enum berth_oai_kind {
  BERTH_OAI_CHAT = 0,   /* /v1/chat/completions */
  BERTH_OAI_COMPLETION, /* /v1/completions */
  BERTH_OAI_EMBEDDING,  /* /v1/embeddings */
} berth_oai_kind;

typedef struct berth_oai_request {
  berth_oai_kind kind;
  char *model; /* owned: the "model" field */
  /* chat: the messages as one compact JSON array text, each message
   * {"role", "content"[, "name"]} with content a string (text parts
   * joined); completions: the prompt. Owned. */
  char *messages;
  char *prompt;
  bool has_max_tokens, has_temperature, has_top_p, has_seed, has_n;
  int32_t max_tokens; /* > 0 */
  float temperature;  /* 0..2 */
  float top_p;        /* 0..1 */
  int64_t seed;
  int32_t n;                      /* 1..BERTH_OAI_MAX_N; 1 when not given */
  char *stop[BERTH_OAI_MAX_STOP]; /* owned, n_stop of them */
  size_t n_stop;
  bool stream;
  bool include_usage; /* stream_options.include_usage */
  /* embeddings */
  char **input; /* owned array of n_input owned strings */
  size_t n_input;
  bool base64; /* encoding_format "base64" */
  bool has_dimensions;
  int64_t dimensions;
  char err_param[64]; /* on a refusal: the field at fault, or "" */
} berth_oai_request;

/* Decodes body (len bytes, untrusted) as a request of kind into *out
 * (zeroed first; cleared on failure). BERTH_OK, or an error with err set
 * and out->err_param filled. */
int berth_oai_decode(const char *body, size_t len, berth_oai_kind kind,
                     berth_oai_request *out, berth_errmsg *err);

/* Frees what r owns and zeroes it (err_param too). Safe on a zeroed one. */
void berth_oai_request_clear(berth_oai_request *r);

#endif
