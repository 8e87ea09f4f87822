/* Fuzz target: the OpenAI-compatible request bodies (codec_openai.h). The
 * first byte picks the route (chat, completions, embeddings); the rest is
 * the body. A decoded request must hold what its kind promises: chat the
 * messages, completions the prompt, embeddings 1..BERTH_OAI_MAX_INPUTS
 * inputs, and every bound (n, stop) kept; a refusal leaves nothing owned. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (data == NULL || size == 0)
    return 0;
  berth_oai_kind kind = (berth_oai_kind)(data[0] % 3);
  berth_oai_request r;
  berth_errmsg err;
  int rc = berth_oai_decode((const char *)data + 1, size - 1, kind, &r, &err);
  if (rc != BERTH_OK) {
    if (r.model != NULL || r.messages != NULL || r.prompt != NULL ||
        r.input != NULL || r.n_stop != 0)
      abort();
    return 0;
  }
  if (r.model == NULL || r.n < 1 || r.n > BERTH_OAI_MAX_N ||
      r.n_stop > BERTH_OAI_MAX_STOP)
    abort();
  if (kind == BERTH_OAI_CHAT && r.messages == NULL)
    abort();
  if (kind == BERTH_OAI_COMPLETION && r.prompt == NULL)
    abort();
  if (kind == BERTH_OAI_EMBEDDING &&
      (r.n_input < 1 || r.n_input > BERTH_OAI_MAX_INPUTS))
    abort();
  if (r.has_max_tokens && r.max_tokens < 1)
    abort();
  if (r.has_temperature && !(r.temperature >= 0 && r.temperature <= 2))
    abort();
  berth_oai_request_clear(&r);
  return 0;
}
