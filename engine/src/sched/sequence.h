/* Berth engine: sequence batching's bookkeeping (docs/batching.md,
 * "Sequence batching") — the live sequences of one model version, which
 * worker instance each is pinned to, whether one of its requests is
 * running, and when an idle one expires. Pure: no I/O, no loop; times are
 * passed in (uv_hrtime nanoseconds). The scheduler (scheduler.c) calls it.
 *
 * Ownership: the table owns its entries; a job borrows its entry (one
 * reference, counted in `jobs`) from admit until berth_seq_job_done or
 * berth_seq_job_cancelled. An entry that ended or expired leaves the
 * lookup at once and is freed when its last job is done. An orphaned
 * table (berth_seq_table_orphan: its model got new workers) frees itself
 * with its last entry. */
#ifndef BERTH_SEQUENCE_H
#define BERTH_SEQUENCE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

typedef enum {
  BERTH_SEQ_DIRECT = 0, /* a sequence keeps one batch slot of its instance */
  BERTH_SEQ_OLDEST = 1, /* batches take the oldest ready requests */
} berth_seq_strategy;

typedef struct berth_seq {
  json_t *id;                    /* owned: the client's integer or string id */
  size_t instance;               /* the worker instance it is pinned to */
  uint64_t last_ns;              /* last request admitted or finished */
  size_t jobs;                   /* queued or running jobs that reference it */
  bool busy;                     /* one of its requests is running */
  bool live;                     /* findable by id (not ended nor expired) */
  bool lost;                     /* its instance's worker exited: state gone */
  struct berth_seq *next;        /* the table's list */
  struct berth_seq_table *table; /* borrowed: the table that owns it */
} berth_seq;

typedef struct berth_seq_table {
  berth_seq *head;  /* owned list, live and retired entries */
  size_t live;      /* entries with live set */
  size_t max_live;  /* bound on live sequences (429 beyond) */
  uint64_t idle_ns; /* expiry of an idle sequence; 0 = never */
  berth_seq_strategy strategy;
  size_t instances;     /* worker instances (>= 1) */
  size_t slots;         /* direct: live sequences per instance */
  size_t *per_instance; /* owned: live sequences on each instance */
  json_t **drops;       /* owned: per instance, a JSON array of ids
                               that expired, for its next batch, or NULL */
  bool orphan;          /* heap table that frees itself (and its
                               struct) when its last entry goes */
} berth_seq_table;

/* What a request says about its sequence (its OIP parameters). */
typedef struct berth_seq_req {
  bool has;   /* sequence_id given (and not 0 or "") */
  json_t *id; /* borrowed from the parameters: integer or string */
  bool start, end;
} berth_seq_req;

/* Creates the table. slots: per instance for direct (max_batch_size, at
 * least 1). BERTH_E_NOMEM. */
int berth_seq_table_init(berth_seq_table *t, size_t instances, size_t slots,
                         size_t max_live, uint64_t idle_ns,
                         berth_seq_strategy s);
/* A heap table for a model entry's sequence_batching block sb (its
 * strategy; direct when absent), or NULL when out of memory. */
berth_seq_table *berth_seq_table_new(const json_t *sb, size_t instances,
                                     size_t slots, size_t max_live,
                                     uint64_t idle_ns);
/* Frees every entry (jobs must be gone) and the arrays. */
void berth_seq_table_free(berth_seq_table *t);

/* Reads sequence_id, sequence_start and sequence_end from params (a JSON
 * object or NULL) into r. model names the model in messages; enabled: it
 * has sequence_batching. BERTH_E_INVALID for a wrong type, a start/end
 * without an id, an id to a model without sequence batching, or none to
 * one with it. */
int berth_seq_parse(const json_t *params, const char *model, bool enabled,
                    berth_seq_req *r, berth_errmsg *err);
/* The worker protocol's entry of one request of s in a batch
 * (docs/worker-protocol.md), or NULL when out of memory. */
json_t *berth_seq_batch_entry(const berth_seq *s, bool start, bool end,
                              int64_t rows);
/* Deletes the three keys from params (which may then be empty). */
void berth_seq_strip(json_t *params);

/* Admits one request: finds or (at start) creates its sequence, takes a
 * job reference and returns the entry in *out. A start of a live
 * sequence restarts it. BERTH_E_INVALID: unknown sequence without start;
 * BERTH_E_OVERLOAD: too many live sequences (or, direct, no free slot). */
int berth_seq_admit(berth_seq_table *t, const berth_seq_req *r, uint64_t now,
                    const char *model, berth_seq **out, berth_errmsg *err);
/* Whether a request of s may join a batch for instance now. */
bool berth_seq_eligible(const berth_seq *s, size_t instance);
/* The request of s is in a batch (s->busy). */
void berth_seq_running(berth_seq *s);
/* A job of s is done (answered, failed or timed out); end: it carried
 * sequence_end, so the sequence ends. Drops the job's reference. */
void berth_seq_job_done(berth_seq *s, uint64_t now);
/* A queued job of s was taken back before running. */
void berth_seq_job_cancelled(berth_seq *s);
/* Every live sequence is lost (see berth_seq_lose_instance). t was
 * allocated with malloc: it is freed now when no job references an entry,
 * else with the last berth_seq_job_done / _cancelled. Not to be used
 * after this call. */
void berth_seq_table_orphan(berth_seq_table *t);
/* Expires live sequences idle (no job) for longer than idle_ns; each id
 * is added to its instance's drop list. Returns how many expired. */
size_t berth_seq_expire(berth_seq_table *t, uint64_t now);
/* The worker of instance exited: its live sequences are retired and
 * marked lost (their queued requests are to be failed); its drop list is
 * cleared. Returns how many were live. */
size_t berth_seq_lose_instance(berth_seq_table *t, size_t instance);
/* The parameters of a batch for instance: a copy of own (or {}), with
 * "berth_sequences": list (stolen; NULL means out of memory) and
 * "berth_sequence_drop": the instance's drop list, taken. *out is new.
 * BERTH_E_NOMEM. */
int berth_seq_batch_params(berth_seq_table *t, size_t instance,
                           const json_t *own, json_t *list, json_t **out);
/* Takes instance's drop list (owned by the caller; NULL when empty). */
json_t *berth_seq_take_drops(berth_seq_table *t, size_t instance);

#endif
