/* Berth engine: a load's config override in Triton's sense (repository.c).
 * A load request whose parameters.config is a partial model configuration
 * without a path (protobuf JSON, where numbers may be strings:
 * {"max_batch_size":"16"}) changes the settings of a model the server
 * already serves; its files, runtime and class stay the operator's.
 * berth_repo_override_entry is pure: JSON in, JSON out.
 */
#ifndef BERTH_REPO_OVERRIDE_H
#define BERTH_REPO_OVERRIDE_H

#include <stdbool.h>

#include <jansson.h>

#include "berth/error.h"

/* Whether a parsed parameters.config is an override: an object that names
 * none of path, runtime, class and platform (the keys that choose what is
 * loaded). Anything else is a whole entry (today's rule). */
bool berth_repo_is_override(const json_t *config);

/* Merges override over base (a models[] entry as the engine keeps it,
 * borrowed) for the model called name, into a new entry (*out, a new
 * reference). Triton's keys are translated: max_batch_size;
 * instance_group[].count (summed; per GPU of a KIND_GPU group, n_gpus of
 * them when it lists none) -> instances, .kind and .gpus -> devices
 * (docs/gpus.md);
 * dynamic_batching.max_queue_delay_microseconds -> max_queue_delay_us and
 * .preferred_batch_size -> preferred_batch_sizes; Berth's own keys
 * (instances, max_batch_size, max_queue_delay_us, preferred_batch_sizes,
 * timeout_us, max_queue_size, version, parameters, devices, gpu_memory,
 * autoscaling) are taken as they are (autoscaling: null removes the block).
 * Integer strings ("16") become integers. name, if given, must be name;
 * input/output/backend are refused with a message (the files decide them).
 * BERTH_E_CONFIG with a message naming the key ("parameters.config.x:
 * ..."); BERTH_E_NOMEM. */
int berth_repo_override_entry(const json_t *base, const json_t *override,
                              const char *name, size_t n_gpus, json_t **out,
                              berth_errmsg *err);

/* For repository.c's load: config (a JSON object, or JSON/YAML text) parsed
 * into *parsed (a new reference; the caller drops it), and when it is an
 * override, merged over the entry of the version it names, else of the last
 * listed version of name, into *merged (a new reference); *merged stays
 * NULL for a whole entry. BERTH_E_NOT_FOUND for an override of a model the
 * engine does not know, BERTH_E_CONFIG for text that does not parse or a
 * bad override. */
struct berth_engine;
int berth_repo_override_for(struct berth_engine *e, const char *name,
                            json_t *config, json_t **parsed, json_t **merged,
                            berth_errmsg *err);

#endif
