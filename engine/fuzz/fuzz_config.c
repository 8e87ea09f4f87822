/* Fuzz target: the engine document. Each input goes through the YAML/JSON
 * loader and the validating config parser; on success every owned field
 * is walked and freed, so leaks and bad frees on any path show up. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  berth_errmsg err;
  json_t *root = berth_yaml_load((const char *)data, size, &err);
  if (root != NULL) {
    char *s = json_dumps(root, JSON_ENCODE_ANY | JSON_COMPACT);
    free(s);
    json_decref(root);
  } else if (memchr(err.msg, '\0', sizeof err.msg) == NULL) {
    __builtin_trap(); /* the message must always be terminated */
  }

  berth_config c;
  if (berth_config_parse((const char *)data, size, &c, &err) == BERTH_OK) {
    size_t total = strlen(c.host) + strlen(c.log_level) + strlen(c.log_format);
    for (size_t i = 0; i < c.worker_argc; i++)
      total += strlen(c.worker_command[i]);
    for (size_t i = 0; i < c.n_models; i++) {
      const berth_model_config *m = &c.models[i];
      total += strlen(m->name) + strlen(m->version) + strlen(m->runtime);
      for (size_t j = 0; j < m->n_inputs; j++)
        total += strlen(m->inputs[j].name) + m->inputs[j].ndim;
      for (size_t j = 0; j < m->n_outputs; j++)
        total += strlen(m->outputs[j].name) + m->outputs[j].ndim;
      if (!json_is_object(m->entry))
        __builtin_trap();
    }
    (void)total;
    berth_config_clear(&c);
  }
  return 0;
}
