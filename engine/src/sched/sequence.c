/* Berth engine: sequence batching's bookkeeping (sequence.h). */
#include "sequence.h"

#include <stdlib.h>
#include <string.h>

int berth_seq_table_init(berth_seq_table *t, size_t instances, size_t slots,
                         size_t max_live, uint64_t idle_ns,
                         berth_seq_strategy s) {
  memset(t, 0, sizeof *t);
  t->instances = instances ? instances : 1;
  t->slots = slots ? slots : 1;
  t->max_live = max_live;
  t->idle_ns = idle_ns;
  t->strategy = s;
  t->per_instance = calloc(t->instances, sizeof *t->per_instance);
  t->drops = calloc(t->instances, sizeof *t->drops);
  if (t->per_instance == NULL || t->drops == NULL) {
    berth_seq_table_free(t);
    return BERTH_E_NOMEM;
  }
  return BERTH_OK;
}

berth_seq_table *berth_seq_table_new(const json_t *sb, size_t instances,
                                     size_t slots, size_t max_live,
                                     uint64_t idle_ns) {
  const char *st = json_string_value(json_object_get(sb, "strategy"));
  berth_seq_strategy how = st != NULL && strcmp(st, "oldest") == 0
                               ? BERTH_SEQ_OLDEST
                               : BERTH_SEQ_DIRECT;
  berth_seq_table *t = calloc(1, sizeof *t);
  if (t != NULL && berth_seq_table_init(t, instances, slots, max_live, idle_ns,
                                        how) != BERTH_OK) {
    free(t);
    t = NULL;
  }
  return t;
}

void berth_seq_table_free(berth_seq_table *t) {
  berth_seq *s = t->head;
  while (s != NULL) {
    berth_seq *next = s->next;
    json_decref(s->id);
    free(s);
    s = next;
  }
  if (t->drops != NULL)
    for (size_t i = 0; i < t->instances; i++)
      json_decref(t->drops[i]);
  free(t->drops);
  free(t->per_instance);
  memset(t, 0, sizeof *t);
}

static int read_flag(const json_t *params, const char *key, bool *out,
                     berth_errmsg *err) {
  json_t *v = json_object_get(params, key);
  *out = false;
  if (v == NULL)
    return BERTH_OK;
  if (!json_is_boolean(v))
    return berth_errf(err, BERTH_E_INVALID,
                      "parameter '%s' must be true or false", key);
  *out = json_is_true(v);
  return BERTH_OK;
}

/* The sequence parameters' fit with the model. */
static int check_enabled(const berth_seq_req *r, const char *model,
                         bool enabled, berth_errmsg *err) {
  if (!enabled && r->has)
    return berth_errf(err, BERTH_E_INVALID,
                      "model '%s' has no sequence_batching: it does not take "
                      "sequence_id, sequence_start or sequence_end; send the "
                      "request without them, or give the model a "
                      "sequence_batching block",
                      model);
  if (enabled && !r->has)
    return berth_errf(err, BERTH_E_INVALID,
                      "model '%s' uses sequence_batching: every request needs "
                      "parameter 'sequence_id' (an integer > 0 or a non-empty "
                      "string)",
                      model);
  return BERTH_OK;
}

int berth_seq_parse(const json_t *params, const char *model, bool enabled,
                    berth_seq_req *r, berth_errmsg *err) {
  memset(r, 0, sizeof *r);
  json_t *id = json_object_get(params, "sequence_id");
  if (id != NULL && !(json_is_integer(id) && json_integer_value(id) >= 0) &&
      !(json_is_string(id) && json_string_length(id) <= 256))
    return berth_errf(err, BERTH_E_INVALID,
                      "parameter 'sequence_id' must be an integer >= 0 or a "
                      "string of at most 256 bytes (model '%s')",
                      model);
  int rc = read_flag(params, "sequence_start", &r->start, err);
  if (rc == BERTH_OK)
    rc = read_flag(params, "sequence_end", &r->end, err);
  if (rc != BERTH_OK)
    return rc;
  /* 0 and "" mean "no sequence", as in Triton. */
  r->has = id != NULL &&
           !(json_is_integer(id) && json_integer_value(id) == 0) &&
           !(json_is_string(id) && json_string_length(id) == 0);
  r->id = r->has ? id : NULL;
  if (!r->has && (r->start || r->end))
    return berth_errf(err, BERTH_E_INVALID,
                      "parameters 'sequence_start' and 'sequence_end' need a "
                      "'sequence_id' (model '%s')",
                      model);
  return check_enabled(r, model, enabled, err);
}

json_t *berth_seq_batch_entry(const berth_seq *s, bool start, bool end,
                              int64_t rows) {
  return json_pack("{s:O,s:b,s:b,s:I}", "id", s->id, "start", start, "end", end,
                   "rows", (json_int_t)rows);
}

void berth_seq_strip(json_t *params) {
  if (params == NULL)
    return;
  json_object_del(params, "sequence_id");
  json_object_del(params, "sequence_start");
  json_object_del(params, "sequence_end");
}

static berth_seq *find_live(const berth_seq_table *t, const json_t *id) {
  for (berth_seq *s = t->head; s != NULL; s = s->next)
    if (s->live && json_equal(s->id, (json_t *)id))
      return s;
  return NULL;
}

/* The instance with the fewest live sequences; SIZE_MAX when direct has
 * no free slot. */
static size_t pick_instance(const berth_seq_table *t) {
  size_t best = 0;
  for (size_t i = 1; i < t->instances; i++)
    if (t->per_instance[i] < t->per_instance[best])
      best = i;
  if (t->strategy == BERTH_SEQ_DIRECT && t->per_instance[best] >= t->slots)
    return SIZE_MAX;
  return best;
}

static void retire(berth_seq_table *t, berth_seq *s) {
  if (!s->live)
    return;
  s->live = false;
  t->live--;
  t->per_instance[s->instance]--;
}

/* Unlinks and frees s once it is retired and unreferenced. */
static void maybe_free(berth_seq_table *t, berth_seq *s) {
  if (s->live || s->jobs > 0)
    return;
  for (berth_seq **p = &t->head; *p != NULL; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  json_decref(s->id);
  free(s);
  if (t->orphan && t->head == NULL) {
    berth_seq_table_free(t);
    free(t);
  }
}

static int create(berth_seq_table *t, const berth_seq_req *r, uint64_t now,
                  const char *model, berth_seq **out, berth_errmsg *err) {
  if (t->live >= t->max_live)
    return berth_errf(err, BERTH_E_OVERLOAD,
                      "model '%s' has %zu live sequences "
                      "(sequence_batching.max_sequences); end one or retry "
                      "later",
                      model, t->live);
  size_t inst = pick_instance(t);
  if (inst == SIZE_MAX)
    return berth_errf(err, BERTH_E_OVERLOAD,
                      "model '%s' has no free sequence slot (direct strategy: "
                      "%zu per instance, max_batch_size); end a sequence or "
                      "retry later",
                      model, t->slots);
  berth_seq *s = calloc(1, sizeof *s);
  if (s == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  s->id = json_deep_copy(r->id);
  if (s->id == NULL) {
    free(s);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  s->instance = inst;
  s->table = t;
  s->live = true;
  s->last_ns = now;
  s->next = t->head;
  t->head = s;
  t->live++;
  t->per_instance[inst]++;
  *out = s;
  return BERTH_OK;
}

int berth_seq_admit(berth_seq_table *t, const berth_seq_req *r, uint64_t now,
                    const char *model, berth_seq **out, berth_errmsg *err) {
  berth_seq *s = find_live(t, r->id);
  if (s == NULL && !r->start) {
    char *text = json_dumps(r->id, JSON_ENCODE_ANY | JSON_COMPACT);
    int rc = berth_errf(err, BERTH_E_INVALID,
                        "sequence %.280s of model '%s' is not live (never "
                        "started, ended, or idle past "
                        "max_sequence_idle_microseconds): send its first "
                        "request with sequence_start true",
                        text ? text : "?", model);
    free(text);
    return rc;
  }
  if (s == NULL) {
    int rc = create(t, r, now, model, &s, err);
    if (rc != BERTH_OK)
      return rc;
  }
  s->jobs++;
  s->last_ns = now;
  if (r->end)
    retire(t, s); /* later requests need a new start */
  *out = s;
  return BERTH_OK;
}

bool berth_seq_eligible(const berth_seq *s, size_t instance) {
  return !s->busy && s->instance == instance;
}

void berth_seq_running(berth_seq *s) { s->busy = true; }

void berth_seq_job_done(berth_seq *s, uint64_t now) {
  berth_seq_table *t = s->table;
  s->busy = false;
  s->last_ns = now;
  if (s->jobs > 0)
    s->jobs--;
  maybe_free(t, s);
}

void berth_seq_job_cancelled(berth_seq *s) {
  berth_seq_table *t = s->table;
  if (s->jobs > 0)
    s->jobs--;
  maybe_free(t, s);
}

static void add_drop(berth_seq_table *t, const berth_seq *s) {
  json_t **d = &t->drops[s->instance];
  if (*d == NULL)
    *d = json_array();
  if (*d != NULL)
    json_array_append(*d, s->id); /* on failure the worker keeps it */
}

size_t berth_seq_expire(berth_seq_table *t, uint64_t now) {
  size_t n = 0;
  if (t->idle_ns == 0)
    return 0;
  berth_seq *s = t->head;
  while (s != NULL) {
    berth_seq *next = s->next;
    if (s->live && s->jobs == 0 && now - s->last_ns > t->idle_ns) {
      add_drop(t, s);
      retire(t, s);
      maybe_free(t, s);
      n++;
    }
    s = next;
  }
  return n;
}

size_t berth_seq_lose_instance(berth_seq_table *t, size_t instance) {
  size_t n = 0;
  if (instance >= t->instances)
    return 0;
  json_decref(t->drops[instance]);
  t->drops[instance] = NULL;
  berth_seq *s = t->head;
  while (s != NULL) {
    berth_seq *next = s->next;
    if (s->live && s->instance == instance) {
      s->lost = true;
      retire(t, s);
      maybe_free(t, s);
      n++;
    }
    s = next;
  }
  return n;
}

void berth_seq_table_orphan(berth_seq_table *t) {
  for (size_t i = 0; i < t->instances; i++)
    (void)berth_seq_lose_instance(t, i);
  if (t->head == NULL) {
    berth_seq_table_free(t);
    free(t);
    return;
  }
  t->orphan = true;
}

int berth_seq_batch_params(berth_seq_table *t, size_t instance,
                           const json_t *own, json_t *list, json_t **out) {
  json_t *p = own != NULL ? json_deep_copy(own) : json_object();
  int rc = p != NULL && list != NULL &&
                   json_object_set_new(p, "berth_sequences", list) == 0
               ? BERTH_OK
               : BERTH_E_NOMEM;
  if (rc != BERTH_OK && p == NULL)
    json_decref(list); /* set_new took it otherwise */
  json_t *drops = berth_seq_take_drops(t, instance);
  if (rc == BERTH_OK && drops != NULL &&
      json_object_set(p, "berth_sequence_drop", drops) != 0)
    rc = BERTH_E_NOMEM;
  json_decref(drops);
  if (rc != BERTH_OK) {
    json_decref(p);
    return rc;
  }
  *out = p;
  return BERTH_OK;
}

json_t *berth_seq_take_drops(berth_seq_table *t, size_t instance) {
  if (instance >= t->instances)
    return NULL;
  json_t *d = t->drops[instance];
  t->drops[instance] = NULL;
  return d;
}
