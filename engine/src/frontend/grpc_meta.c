/* Berth engine: the GRPCInferenceService methods other than inference —
 * health, server and model metadata, Triton's model configuration and
 * statistics, and the repository index. Each decodes one request message
 * and appends its framed response (grpc.h). The documents are those the
 * REST routes serve, in their protobuf form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec_grpc.h"
#include "grpc.h"
#include "repo_access.h"
#include "repo_files.h"
#include "grpc_service.pb-c.h"
#include "router.h"

#define QN "%.100s"

/* Unpacks the request into `var` of `type`, or returns BERTH_E_PARSE. */
#define UNPACK(type, desc, var)                                                \
  type *var = (type *)berth_grpc_unpack(&(desc), msg, len);                    \
  if (var == NULL)                                                             \
    return berth_errf(err, BERTH_E_PARSE, "the message is not a valid %s",     \
                      (desc).name);

#define FREE_MSG(var) protobuf_c_message_free_unpacked(&(var)->base, NULL)

static char *str(const char *s) {
  return (char *)(uintptr_t)(s != NULL ? s : "");
}

int berth_grpc_find_model(berth_engine *e, const char *name,
                          const char *version, berth_model **out,
                          berth_errmsg *err) {
  *out = NULL;
  if (name == NULL || name[0] == '\0')
    return berth_errf(err, BERTH_E_INVALID, "the model name must not be empty");
  size_t nl = strlen(name);
  bool any = version == NULL || version[0] == '\0';
  berth_route_stat *unused;
  if (any && (*out = berth_router_resolve(e, name, nl, NULL, &unused)) != NULL)
    return BERTH_OK; /* a route: its primary target */
  /* a name no model has may be a pipeline's (pipeline.c), version "1" */
  if (!berth_model_name_exists(e, name, nl) &&
      (any || strcmp(version, "1") == 0) &&
      (*out = berth_composite_find(e, name, nl, NULL, 0)) != NULL)
    return BERTH_OK;
  if (!berth_model_name_exists(e, name, nl))
    return berth_errf(err, BERTH_E_NOT_FOUND,
                      "Request for unknown model: '" QN "' is "
                      "not found (RepositoryIndex lists the models)",
                      name);
  *out = berth_model_find(e, name, nl, any ? NULL : version,
                          any ? 0 : strlen(version));
  if (*out == NULL && strspn(version, "0123456789") != strlen(version))
    return berth_errf(err, BERTH_E_INVALID,
                      "failed to get model version from specified version "
                      "string '" QN "' (model '" QN "' has no version of "
                      "that name; RepositoryIndex lists the versions)",
                      version, name);
  if (*out == NULL)
    return berth_errf(err, BERTH_E_NOT_FOUND,
                      "Request for unknown model: '" QN "' "
                      "version " QN " is not found (RepositoryIndex lists the "
                      "versions)",
                      name, version);
  return BERTH_OK;
}

/* ---- health ------------------------------------------------------------ */

int berth_grpc_server_live(berth_engine *e, const uint8_t *msg, size_t len,
                           berth_buf *out, berth_errmsg *err) {
  (void)e;
  UNPACK(Inference__ServerLiveRequest,
         inference__server_live_request__descriptor, rq);
  FREE_MSG(rq);
  Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
  r.live = 1;
  return berth_grpc_append_message(&r.base, out, err);
}

int berth_grpc_server_ready(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__ServerReadyRequest,
         inference__server_ready_request__descriptor, rq);
  FREE_MSG(rq);
  Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
  r.ready = berth_server_ready(e);
  return berth_grpc_append_message(&r.base, out, err);
}

/* An unknown model is not ready (no error), as Triton answers. */
int berth_grpc_model_ready(berth_engine *e, const uint8_t *msg, size_t len,
                           berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__ModelReadyRequest,
         inference__model_ready_request__descriptor, rq);
  berth_model *m = NULL;
  int rc = berth_grpc_find_model(e, rq->name, rq->version, &m, err);
  FREE_MSG(rq);
  if (rc == BERTH_E_INVALID)
    return rc;
  Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
  r.ready = m != NULL && berth_model_ready(m);
  return berth_grpc_append_message(&r.base, out, err);
}

/* ---- metadata ---------------------------------------------------------- */

int berth_grpc_server_metadata(berth_engine *e, const uint8_t *msg, size_t len,
                               berth_buf *out, berth_errmsg *err) {
  (void)e;
  UNPACK(Inference__ServerMetadataRequest,
         inference__server_metadata_request__descriptor, rq);
  FREE_MSG(rq);
  Inference__ServerMetadataResponse r =
      INFERENCE__SERVER_METADATA_RESPONSE__INIT;
  r.name = str("berth");
  r.version = str(BERTH_VERSION);
  r.n_extensions = berth_server_n_extensions;
  r.extensions = (char **)(uintptr_t)berth_server_extensions;
  return berth_grpc_append_message(&r.base, out, err);
}

typedef Inference__ModelMetadataResponse__TensorMetadata tensor_meta;

/* Tensor metadata for n specs: one block of structs, one of pointers. */
static tensor_meta **tensor_metas(const berth_tensor_spec *s, size_t n) {
  tensor_meta **p = calloc(n + 1, sizeof *p);
  tensor_meta *t = calloc(n + 1, sizeof *t);
  if (p == NULL || t == NULL) {
    free(p);
    free(t);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    inference__model_metadata_response__tensor_metadata__init(&t[i]);
    t[i].name = s[i].name;
    t[i].datatype = str(berth_dtype_name(s[i].dtype));
    t[i].n_shape = s[i].ndim;
    t[i].shape = (int64_t *)(uintptr_t)s[i].shape;
    p[i] = &t[i];
  }
  p[n] = t; /* remembered for freeing */
  return p;
}

static void tensor_metas_free(tensor_meta **p, size_t n) {
  if (p != NULL)
    free(p[n]);
  free(p);
}

int berth_grpc_model_metadata(berth_engine *e, const uint8_t *msg, size_t len,
                              berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__ModelMetadataRequest,
         inference__model_metadata_request__descriptor, rq);
  berth_model *m = NULL;
  int rc = berth_grpc_find_model(e, rq->name, rq->version, &m, err);
  FREE_MSG(rq);
  if (rc != BERTH_OK)
    return rc;
  char **versions = calloc(e->n_models + 1, sizeof *versions);
  tensor_meta **in = tensor_metas(m->inputs, m->n_inputs);
  tensor_meta **outs = tensor_metas(m->outputs, m->n_outputs);
  if (versions == NULL || in == NULL || outs == NULL) {
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  } else {
    Inference__ModelMetadataResponse r =
        INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    r.name = m->cfg->name;
    for (size_t i = 0; i < e->n_models; i++)
      if (strcmp(e->models[i]->cfg->name, m->cfg->name) == 0)
        versions[r.n_versions++] = e->models[i]->cfg->version;
    if (m->ops->composite) /* not in e->models */
      versions[r.n_versions++] = m->cfg->version;
    r.versions = versions;
    r.platform = str(m->platform);
    r.n_inputs = m->n_inputs;
    r.inputs = in;
    r.n_outputs = m->n_outputs;
    r.outputs = outs;
    rc = berth_grpc_append_message(&r.base, out, err);
  }
  free(versions);
  tensor_metas_free(in, m->n_inputs);
  tensor_metas_free(outs, m->n_outputs);
  return rc;
}

/* ---- configuration ------------------------------------------------------ */

/* The tensors' dims, without the batch dimension when the model batches,
 * as Triton writes them: one block of int64 for all. */
static int64_t *config_dims(const berth_tensor_spec *s, size_t n,
                            bool batched) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += s[i].ndim;
  int64_t *d = calloc(total + 1, sizeof *d);
  if (d == NULL)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = batched && s[i].ndim > 0 ? 1 : 0; j < s[i].ndim; j++)
      d[k++] = s[i].shape[j];
  return d;
}

/* A model's sequence_batching (docs/sequences.md) as Triton's message, with
 * what REST's configuration reports (rest_triton.c): the idle timeout, the
 * strategy and the control inputs the worker fills. All of it lives in
 * one block on the caller's stack. */
typedef struct seq_block {
  Inference__ModelSequenceBatching sb;
  Inference__ModelSequenceBatching__StrategyDirect direct;
  Inference__ModelSequenceBatching__StrategyOldest oldest;
  Inference__ModelSequenceBatching__ControlInput ci[4];
  Inference__ModelSequenceBatching__ControlInput *cip[4];
  Inference__ModelSequenceBatching__Control ctl[4];
  Inference__ModelSequenceBatching__Control *ctlp[4];
  int32_t false_true[2];
} seq_block;

/* Fills b; false when the model has no sequence batching. The names
 * borrow from c. */
static bool sequence_config(const berth_model_config *c, seq_block *b) {
  json_t *sb = json_object_get(c->entry, "sequence_batching");
  if (sb == NULL)
    return false;
  inference__model_sequence_batching__init(&b->sb);
  b->sb.max_sequence_idle_microseconds = c->seq_idle_us;
  const char *st = json_string_value(json_object_get(sb, "strategy"));
  if (st != NULL && strcmp(st, "oldest") == 0) {
    inference__model_sequence_batching__strategy_oldest__init(&b->oldest);
    b->oldest.max_candidate_sequences = (int32_t)c->seq_max_sequences;
    b->oldest.max_queue_delay_microseconds = c->max_queue_delay_us;
    b->sb.strategy_choice_case =
        INFERENCE__MODEL_SEQUENCE_BATCHING__STRATEGY_CHOICE_OLDEST;
    b->sb.oldest = &b->oldest;
  } else {
    inference__model_sequence_batching__strategy_direct__init(&b->direct);
    b->sb.strategy_choice_case =
        INFERENCE__MODEL_SEQUENCE_BATCHING__STRATEGY_CHOICE_DIRECT;
    b->sb.direct = &b->direct;
  }
  static const char *const keys[] = {"start", "end", "ready", "corrid"};
  static const Inference__ModelSequenceBatching__Control__Kind kinds[] = {
      INFERENCE__MODEL_SEQUENCE_BATCHING__CONTROL__KIND__CONTROL_SEQUENCE_START,
      INFERENCE__MODEL_SEQUENCE_BATCHING__CONTROL__KIND__CONTROL_SEQUENCE_END,
      INFERENCE__MODEL_SEQUENCE_BATCHING__CONTROL__KIND__CONTROL_SEQUENCE_READY,
      INFERENCE__MODEL_SEQUENCE_BATCHING__CONTROL__KIND__CONTROL_SEQUENCE_CORRID};
  b->false_true[0] = 0;
  b->false_true[1] = 1;
  json_t *ci = json_object_get(sb, "control_inputs");
  size_t k = 0;
  for (size_t i = 0; i < 4; i++) {
    const char *name = json_string_value(json_object_get(ci, keys[i]));
    if (name == NULL)
      continue;
    inference__model_sequence_batching__control__init(&b->ctl[k]);
    b->ctl[k].kind = kinds[i];
    if (i < 3) { /* a flag: 0 false, 1 true */
      b->ctl[k].n_int32_false_true = 2;
      b->ctl[k].int32_false_true = b->false_true;
    } else {
      b->ctl[k].data_type = INFERENCE__DATA_TYPE__TYPE_UINT64;
    }
    b->ctlp[k] = &b->ctl[k];
    inference__model_sequence_batching__control_input__init(&b->ci[k]);
    b->ci[k].name = (char *)name;
    b->ci[k].n_control = 1;
    b->ci[k].control = &b->ctlp[k];
    b->cip[k] = &b->ci[k];
    k++;
  }
  b->sb.n_control_input = k;
  b->sb.control_input = b->cip;
  return true;
}

/* Triton's instance groups: one per device the model's instances run on
 * (KIND_GPU with its GPU, else KIND_CPU), or one KIND_CPU group before the
 * workers exist; as the REST config shows them (rest_triton.c). */
typedef struct {
  Inference__ModelInstanceGroup g[BERTH_MAX_GPUS + 2];
  Inference__ModelInstanceGroup *gp[BERTH_MAX_GPUS + 2];
  int32_t gpu[BERTH_MAX_GPUS + 2];
  size_t n;
} instance_block;

static void instance_groups(const berth_model *m, instance_block *b) {
  berth_device_group groups[BERTH_MAX_GPUS + 2];
  size_t n = 0;
  for (size_t k = 0; k < m->n_workers; k++) {
    int dev = berth_supervisor_worker_device(m, k);
    size_t g = 0;
    while (g < n && groups[g].device != dev)
      g++;
    if (g < n)
      groups[g].count++;
    else if (n < BERTH_MAX_GPUS + 2)
      groups[n++] = (berth_device_group){.device = dev, .count = 1};
  }
  if (n == 0)
    groups[n++] = (berth_device_group){
        .device = BERTH_DEVICE_CPU, .count = m->instances ? m->instances : 1};
  for (size_t g = 0; g < n; g++) {
    inference__model_instance_group__init(&b->g[g]);
    b->g[g].name = m->cfg->name;
    b->g[g].count = (int32_t)groups[g].count;
    b->g[g].kind = groups[g].device >= 0
                       ? INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_GPU
                       : INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_CPU;
    if (groups[g].device >= 0) {
      b->gpu[g] = groups[g].device;
      b->g[g].n_gpus = 1;
      b->g[g].gpus = &b->gpu[g];
    }
    b->gp[g] = &b->g[g];
  }
  b->n = n;
}

int berth_grpc_model_config(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__ModelConfigRequest,
         inference__model_config_request__descriptor, rq);
  berth_model *m = NULL;
  int rc = berth_grpc_find_model(e, rq->name, rq->version, &m, err);
  FREE_MSG(rq);
  if (rc != BERTH_OK)
    return rc;
  const berth_model_config *c = m->cfg;
  bool batched = m->max_batch_size > 0;
  size_t ni = m->n_inputs, no = m->n_outputs;
  Inference__ModelInput *in = calloc(ni + 1, sizeof *in);
  Inference__ModelInput **inp = calloc(ni + 1, sizeof *inp);
  Inference__ModelOutput *o = calloc(no + 1, sizeof *o);
  Inference__ModelOutput **op = calloc(no + 1, sizeof *op);
  int64_t *din = config_dims(m->inputs, ni, batched);
  int64_t *dout = config_dims(m->outputs, no, batched);
  int32_t *pref = calloc(c->n_preferred_batch_sizes + 1, sizeof *pref);
  if (in == NULL || inp == NULL || o == NULL || op == NULL || din == NULL ||
      dout == NULL || pref == NULL) {
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
    goto done;
  }
  Inference__ModelConfig cfg = INFERENCE__MODEL_CONFIG__INIT;
  cfg.name = c->name;
  cfg.platform = str(m->platform);
  cfg.backend = str(c->runtime);
  cfg.max_batch_size = (int32_t)m->max_batch_size;
  int64_t *d = din;
  for (size_t i = 0; i < ni; i++) {
    inference__model_input__init(&in[i]);
    in[i].name = m->inputs[i].name;
    in[i].data_type =
        (Inference__DataType)m->inputs[i].dtype; /* same numbering */
    in[i].n_dims =
        m->inputs[i].ndim - (batched && m->inputs[i].ndim > 0 ? 1 : 0);
    in[i].dims = d;
    d += in[i].n_dims;
    inp[i] = &in[i];
  }
  d = dout;
  for (size_t i = 0; i < no; i++) {
    inference__model_output__init(&o[i]);
    o[i].name = m->outputs[i].name;
    o[i].data_type = (Inference__DataType)m->outputs[i].dtype;
    o[i].n_dims =
        m->outputs[i].ndim - (batched && m->outputs[i].ndim > 0 ? 1 : 0);
    o[i].dims = d;
    d += o[i].n_dims;
    op[i] = &o[i];
  }
  cfg.n_input = ni;
  cfg.input = inp;
  cfg.n_output = no;
  cfg.output = op;
  instance_block ib;
  instance_groups(m, &ib);
  cfg.n_instance_group = ib.n;
  cfg.instance_group = ib.gp;
  Inference__ModelTransactionPolicy policy =
      INFERENCE__MODEL_TRANSACTION_POLICY__INIT;
  policy.decoupled = m->decoupled;
  cfg.model_transaction_policy = &policy;
  Inference__ModelDynamicBatching db = INFERENCE__MODEL_DYNAMIC_BATCHING__INIT;
  seq_block seq;
  if (sequence_config(c, &seq)) {
    cfg.scheduling_choice_case =
        INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_SEQUENCE_BATCHING;
    cfg.sequence_batching = &seq.sb;
  } else if (batched) {
    for (size_t i = 0; i < c->n_preferred_batch_sizes; i++)
      pref[i] = (int32_t)c->preferred_batch_sizes[i];
    db.n_preferred_batch_size = c->n_preferred_batch_sizes;
    db.preferred_batch_size = pref;
    db.max_queue_delay_microseconds = c->max_queue_delay_us;
    cfg.scheduling_choice_case =
        INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING;
    cfg.dynamic_batching = &db;
  }
  Inference__ModelConfigResponse r = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
  r.config = &cfg;
  rc = berth_grpc_append_message(&r.base, out, err);
done:
  free(in);
  free(inp);
  free(o);
  free(op);
  free(din);
  free(dout);
  free(pref);
  return rc;
}

/* ---- statistics --------------------------------------------------------- */

typedef struct stats_block {
  Inference__ModelStatistics s;
  Inference__InferStatistics inf;
  Inference__StatisticDuration d[8];
} stats_block;

static void fill_stats(stats_block *b, const berth_model *m) {
  const berth_model_stats *st = &m->stats;
  inference__model_statistics__init(&b->s);
  inference__infer_statistics__init(&b->inf);
  const berth_duration_stat *src[6] = {&st->success,       &st->fail,
                                       &st->queue,         &st->compute_input,
                                       &st->compute_infer, &st->compute_output};
  for (size_t i = 0; i < 8; i++) {
    inference__statistic_duration__init(&b->d[i]);
    if (i < 6) {
      b->d[i].count = src[i]->count;
      b->d[i].ns = src[i]->ns;
    }
  }
  b->inf.success = &b->d[0];
  b->inf.fail = &b->d[1];
  b->inf.queue = &b->d[2];
  b->inf.compute_input = &b->d[3];
  b->inf.compute_infer = &b->d[4];
  b->inf.compute_output = &b->d[5];
  b->inf.cache_hit = &b->d[6];
  b->inf.cache_miss = &b->d[7];
  b->s.name = m->cfg->name;
  b->s.version = m->cfg->version;
  b->s.last_inference = st->last_inference_ms;
  b->s.inference_count = st->inference_count;
  b->s.execution_count = st->execution_count;
  b->s.inference_stats = &b->inf;
}

/* An empty name: every model; an empty version: every version of name. */
int berth_grpc_model_statistics(berth_engine *e, const uint8_t *msg, size_t len,
                                berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__ModelStatisticsRequest,
         inference__model_statistics_request__descriptor, rq);
  int rc = BERTH_OK;
  berth_model *one = NULL;
  bool all = rq->name[0] == '\0', any_version = rq->version[0] == '\0';
  if (!all)
    rc = berth_grpc_find_model(e, rq->name, rq->version, &one, err);
  size_t cap = e->n_models + e->n_composites + 1;
  stats_block *b = rc == BERTH_OK ? calloc(cap, sizeof *b) : NULL;
  Inference__ModelStatistics **p =
      rc == BERTH_OK ? calloc(cap, sizeof *p) : NULL;
  if (rc == BERTH_OK && (b == NULL || p == NULL))
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  if (rc == BERTH_OK) {
    Inference__ModelStatisticsResponse r =
        INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
    for (size_t i = 0; i < e->n_models; i++) {
      berth_model *m = e->models[i];
      bool want = all || m == one ||
                  (any_version && strcmp(m->cfg->name, one->cfg->name) == 0);
      if (!want)
        continue;
      fill_stats(&b[r.n_model_stats], m);
      p[r.n_model_stats] = &b[r.n_model_stats].s;
      r.n_model_stats++;
    }
    for (size_t i = 0; i < e->n_composites; i++) { /* not in e->models */
      berth_model *x = e->composites[i];
      if (!all && x != one)
        continue;
      fill_stats(&b[r.n_model_stats], x);
      p[r.n_model_stats] = &b[r.n_model_stats].s;
      r.n_model_stats++;
    }
    r.model_stats = p;
    rc = berth_grpc_append_message(&r.base, out, err);
  }
  FREE_MSG(rq);
  free(b);
  free(p);
  return rc;
}

/* ---- repository ---------------------------------------------------------- */

int berth_grpc_repository_index(berth_engine *e, const uint8_t *msg, size_t len,
                                berth_buf *out, berth_errmsg *err) {
  UNPACK(Inference__RepositoryIndexRequest,
         inference__repository_index_request__descriptor, rq);
  bool only_ready = rq->ready;
  FREE_MSG(rq);
  json_t *all =
      berth_repository_index(e, only_ready); /* repository.c, as REST */
  size_t n = json_array_size(all);
  Inference__RepositoryIndexResponse__ModelIndex *x = calloc(n + 1, sizeof *x);
  Inference__RepositoryIndexResponse__ModelIndex **p = calloc(n + 1, sizeof *p);
  int rc;
  if (all == NULL || x == NULL || p == NULL) {
    rc = berth_errf(err, BERTH_E_NOMEM, "out of memory");
  } else {
    Inference__RepositoryIndexResponse r =
        INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
    for (size_t i = 0; i < n; i++) {
      json_t *v = json_array_get(all, i);
      inference__repository_index_response__model_index__init(&x[i]);
      x[i].name = str(json_string_value(json_object_get(v, "name")));
      x[i].version = str(json_string_value(json_object_get(v, "version")));
      x[i].state = str(json_string_value(json_object_get(v, "state")));
      x[i].reason = str(json_string_value(json_object_get(v, "reason")));
      p[i] = &x[i];
    }
    r.n_models = n;
    r.models = p;
    rc = berth_grpc_append_message(&r.base, out, err);
  }
  json_decref(all);
  free(x);
  free(p);
  return rc;
}

typedef Inference__ModelRepositoryParameter repo_param;

/* A parameter's text: a string, or an integer as its decimal digits. */
static bool param_text(const repo_param *v, char *out, size_t cap) {
  if (v == NULL)
    return false;
  if (v->parameter_choice_case ==
      INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_STRING_PARAM)
    return snprintf(out, cap, "%s", v->string_param) < (int)cap;
  if (v->parameter_choice_case ==
          INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_INT64_PARAM &&
      v->int64_param >= 0)
    return snprintf(out, cap, "%lld", (long long)v->int64_param) < (int)cap;
  return false;
}

/* Every generated entry type is {base, key, value}. */
#define FIND_PARAM(rq, want, found)                                            \
  for (size_t k_ = 0; k_ < (rq)->n_parameters; k_++)                           \
    if (strcmp((rq)->parameters[k_]->key, want) == 0)                          \
      found = (rq)->parameters[k_]->value;

/* The "file:<path>" parameters of a load (bytes) into files; without an
 * admin token nothing is copied. A bad path gets Triton's words. */
static int request_files(berth_engine *e,
                         const Inference__RepositoryModelLoadRequest *rq,
                         bool admin, berth_repo_files *files,
                         berth_errmsg *err) {
  int rc = BERTH_OK;
  bool refused = false;
  for (size_t k = 0; rc == BERTH_OK && k < rq->n_parameters; k++) {
    const char *key = rq->parameters[k]->key;
    const repo_param *v = rq->parameters[k]->value;
    if (!berth_repo_is_file_key(key))
      continue;
    rc = berth_repo_files_check_key(key, err);
    if (rc != BERTH_OK)
      break;
    if (!admin)
      refused = true; /* after every path is checked; nothing copied */
    else if (
        v == NULL ||
        v->parameter_choice_case !=
            INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_BYTES_PARAM)
      rc = berth_errf(err, BERTH_E_CONFIG,
                      "parameters \"%.200s\": expected the file's contents "
                      "as bytes_param",
                      key);
    else
      rc = berth_repo_files_add(files, key, v->bytes_param.data,
                                v->bytes_param.len, e->cfg.max_body_bytes, err);
  }
  if (rc == BERTH_OK && refused)
    rc = berth_repo_files_forbidden(err);
  if (rc == BERTH_E_CONFIG) {
    berth_errmsg inner = *err;
    berth_errf(err, rc,
               "failed to load '%.200s': failed to poll from model "
               "repository: %s",
               rq->model_name, inner.msg);
  }
  return rc;
}

int berth_grpc_repository_start(berth_engine *e, const uint8_t *msg, size_t len,
                                bool load, bool admin, berth_repo_done_cb done,
                                void *arg, berth_errmsg *err) {
  int rc = berth_repo_mode_allows(&e->cfg, err);
  if (rc != BERTH_OK)
    return rc;
  char name[260], version[260];
  json_t *config = NULL;
  bool with_version = false;
  berth_repo_files files = {0};
  if (load) {
    UNPACK(Inference__RepositoryModelLoadRequest,
           inference__repository_model_load_request__descriptor, rq);
    const repo_param *cfg = NULL;
    FIND_PARAM(rq, "config", cfg);
    rc = request_files(e, rq, admin, &files, err);
    if (rc == BERTH_OK && cfg != NULL) {
      if (cfg->parameter_choice_case ==
          INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_STRING_PARAM)
        config = json_string(cfg->string_param);
      if (config == NULL)
        rc = berth_errf(err, BERTH_E_CONFIG,
                        "parameters.config: expected a model "
                        "entry as JSON or YAML text (UTF-8)");
    }
    snprintf(name, sizeof name, "%.255s", rq->model_name);
    FREE_MSG(rq);
  } else {
    UNPACK(Inference__RepositoryModelUnloadRequest,
           inference__repository_model_unload_request__descriptor, rq);
    const repo_param *ver = NULL;
    FIND_PARAM(rq, "version", ver);
    if (ver != NULL) {
      with_version =
          param_text(ver, version, sizeof version) && version[0] != '\0';
      if (!with_version)
        rc = berth_errf(err, BERTH_E_INVALID,
                        "parameters.version must be a model "
                        "version");
    }
    snprintf(name, sizeof name, "%.255s", rq->model_name);
    FREE_MSG(rq);
  }
  if (rc == BERTH_OK && name[0] == '\0')
    rc = berth_errf(err, BERTH_E_INVALID, "model_name must not be empty");
  if (rc != BERTH_OK) {
    json_decref(config);
    berth_repo_files_clear(&files);
    return rc;
  }
  if (load)
    berth_repository_load_files(e, name, config, admin, &files, done, arg);
  else
    berth_repository_unload(e, name, with_version ? version : NULL, done, arg);
  json_decref(config);
  berth_repo_files_clear(&files);
  return BERTH_OK;
}
