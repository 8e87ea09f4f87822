/* Berth engine: replacing a serving model version without downtime, for
 * the repository (repository.c). Everything runs on the loop thread.
 *
 * Ownership: a berth_replace is owned by the repository, which steps it on
 * its timer until berth_replace_freeable and then frees it. The configs are
 * the repository's: the new one must live until the replace is freed; the
 * one berth_replace_spare names afterwards (the old config after a switch,
 * the new one after a failure) is no longer used by any model once the
 * replace is freed, and the repository releases it then.
 */
#ifndef BERTH_REPO_REPLACE_H
#define BERTH_REPO_REPLACE_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

typedef struct berth_replace berth_replace;

typedef enum {
  BERTH_REPLACE_LOADING = 0, /* new workers starting beside the old ones */
  BERTH_REPLACE_RETIRING,    /* switched: the version serves the new config;
                                old workers finish their batch and stop */
  BERTH_REPLACE_FAILING,     /* the new config failed (or was aborted): its
                                workers stop; the old ones kept serving */
  BERTH_REPLACE_CLOSED,      /* workers gone, handles closing */
} berth_replace_phase;

/* Starts the workers of cfg (borrowed) beside m's, which keep serving.
 * NULL when out of memory (err says so). A replace whose workers could not
 * even start comes back in phase FAILING with err filled. */
berth_replace *berth_replace_start(berth_model *m,
                                   const berth_model_config *cfg,
                                   berth_errmsg *err);
/* Advances one timer tick. LOADING -> RETIRING when every new worker is
 * ready (the switch happens here); LOADING -> FAILING when one failed to
 * load, with msg (cap bytes) set to the answer for the caller ("... failed
 * to load: ...; the previous version keeps serving"). */
berth_replace_phase berth_replace_step(berth_replace *x, char *msg, size_t cap);
/* Stops the new workers of a replace still LOADING (an unload came, or the
 * server drains): phase FAILING. Nothing for the other phases. */
void berth_replace_abort(berth_replace *x);
berth_replace_phase berth_replace_phase_of(const berth_replace *x);
/* Why berth_replace_start left x FAILING at once (its err has the
 * message): BERTH_E_CONFIG when the new workers could not be placed
 * (placement.h), BERTH_E_NOMEM; BERTH_OK otherwise. */
int berth_replace_start_error(const berth_replace *x);
const berth_model *berth_replace_model(const berth_replace *x);
const berth_model_config *berth_replace_spare(const berth_replace *x);
/* CLOSED long enough that the candidate's handles have closed. */
bool berth_replace_freeable(const berth_replace *x);
void berth_replace_free(berth_replace *x);

#endif
