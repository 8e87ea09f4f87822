/* Berth engine: what the REST modules share (rest_common.c): answering,
 * path segments, the model a path names; and the handlers that
 * rest_routes.c's table leads to (rest.c, rest_triton.c, kserve_v1.c,
 * router_admin.c).
 *
 * Every answer goes through these helpers, so a berth_status becomes an
 * HTTP status in one place (berth_rest_http_status) and the access log sees
 * every request.
 */
#ifndef BERTH_REST_H
#define BERTH_REST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "engine.h"

typedef struct berth_slice {
  const char *p;
  size_t n;
} berth_slice;

bool berth_slice_is(berth_slice s, const char *lit);
/* Splits "/a/b/c" into at most max segments; the count, or -1 when there
 * are more (or empty segments, or no leading '/'). */
int berth_rest_split_path(const char *p, size_t n, berth_slice *seg, int max);

/* What a route's path captured (rest_routes.c); p is NULL for a capture the
 * path has not. */
typedef struct berth_rest_match {
  berth_slice model;   /* {model} */
  berth_slice version; /* {version} */
  berth_slice name;    /* {name}: a traffic route's */
} berth_rest_match;

/* A route's handler: the method, path and token were checked. */
typedef void (*berth_rest_handler)(berth_engine *e, berth_http_req *req,
                                   const berth_rest_match *mt);

/* The model version that mt's {model} and {version} name: a traffic route's
 * target (drawn for an inference when infer, *routed then set), a composite
 * (a pipeline), or the model version; an unloaded one only when
 * unloaded_ok. NULL after answering 404 with the reason. */
berth_model *berth_rest_find_model(berth_engine *e, berth_http_req *req,
                                   const berth_rest_match *mt, bool infer,
                                   bool unloaded_ok,
                                   struct berth_route_stat **routed);
/* [A-Za-z0-9_.-]{1,256}: a model name or version in a path. */
bool berth_slice_valid_name(berth_slice s);

/* The request id (docs/logging.md): the client's X-Request-ID, else the
 * OIP "id" noted with berth_rest_note_oip_id, else a fresh one (made on the
 * first call). Valid for the request's lifetime. */
const char *berth_rest_request_id(berth_http_req *req);
/* Notes an OIP request "id" as the request id unless the client sent
 * X-Request-ID. */
void berth_rest_note_oip_id(berth_http_req *req, const char *id);
/* Notes the model version a request names (access log). */
void berth_rest_note_model(berth_http_req *req, const berth_model *m);

/* HTTP status for a berth_status. */
int berth_rest_http_status(int status);
/* Answers with body (taken: the buffer is emptied) as application/json. */
void berth_rest_respond_json(berth_engine *e, berth_http_req *req,
                             int http_status, berth_buf *body);
/* Answers with headers and body taken over (malloc'd, freed by the
 * transport). */
void berth_rest_respond_take(berth_engine *e, berth_http_req *req,
                             int http_status, const berth_http_header_kv *h,
                             size_t n, char *body, size_t len);
/* Starts a streamed answer (httpd.h) with content_type and the headers
 * every answer carries (request id, CORS); logs it. BERTH_OK or the
 * transport's status. */
int berth_rest_stream_begin(berth_engine *e, berth_http_req *req,
                            int http_status, const char *content_type);
/* Answers {"error": msg} with the HTTP status of a berth_status. */
void berth_rest_respond_error(berth_engine *e, berth_http_req *req, int status,
                              const char *msg);
/* Answers 405 {"error": ...} with an Allow header naming the methods the
 * path accepts (allow: a static string such as "GET" or "GET, POST"). */
void berth_rest_respond_method(berth_engine *e, berth_http_req *req,
                               const char *allow);
/* Answers doc (reference taken; NULL means out of memory) as JSON. */
void berth_rest_respond_doc(berth_engine *e, berth_http_req *req,
                            int http_status, json_t *doc);

/* Answers 503/404 and returns false unless m can take an inference request
 * now (not draining, ready). */
bool berth_rest_servable(berth_engine *e, berth_http_req *req, berth_model *m);

/* How an inference answer is written. */
typedef enum berth_rest_format {
  BERTH_REST_OIP = 0,   /* OIP v2 JSON, binary outputs when asked */
  BERTH_REST_KSERVE_V1, /* {"predictions": [...]} */
} berth_rest_format;

/* Queues r (taken over; *r is zeroed) for m and answers req when the model
 * has answered. r must already be checked against m's signature. For
 * BERTH_REST_OIP, binary_default is the request's binary_data_output. */
void berth_rest_submit(berth_engine *e, berth_http_req *req, berth_model *m,
                       berth_infer_request *r, berth_rest_format fmt,
                       bool binary_default, struct berth_route_stat *routed);
/* Records an inference request the frontend failed itself (never queued)
 * in m's statistics and metrics (received -> now), and msg among the
 * dashboard's recent errors. */
void berth_rest_count_fail(berth_model *m, berth_http_req *req, int status,
                           const char *msg);

/* rest_triton.c: Triton's model configuration and statistics extensions
 * and the model repository extension. */
void berth_rest_model_config(berth_engine *e, berth_http_req *req,
                             berth_model *m);
/* Statistics of m; all_versions: of every version of m's name; m NULL:
 * of every model version. */
void berth_rest_model_stats(berth_engine *e, berth_http_req *req,
                            berth_model *m, bool all_versions);
/* ---- the route table's handlers (rest_routes.c lists their paths) ---- */

/* rest_generate.c: the OIP generate extension */
void berth_rest_generate(berth_engine *e, berth_http_req *req,
                         const berth_rest_match *mt);
void berth_rest_generate_stream(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt);

/* rest.c */
void berth_rest_root(berth_engine *e, berth_http_req *req,
                     const berth_rest_match *mt);
void berth_rest_metrics(berth_engine *e, berth_http_req *req,
                        const berth_rest_match *mt);
void berth_rest_live(berth_engine *e, berth_http_req *req,
                     const berth_rest_match *mt);
void berth_rest_ready(berth_engine *e, berth_http_req *req,
                      const berth_rest_match *mt);
void berth_rest_server_metadata(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt);
void berth_rest_model_metadata(berth_engine *e, berth_http_req *req,
                               const berth_rest_match *mt);
void berth_rest_model_ready(berth_engine *e, berth_http_req *req,
                            const berth_rest_match *mt);
void berth_rest_infer(berth_engine *e, berth_http_req *req,
                      const berth_rest_match *mt);
/* rest_triton.c */
void berth_rest_config(berth_engine *e, berth_http_req *req,
                       const berth_rest_match *mt);
void berth_rest_stats(berth_engine *e, berth_http_req *req,
                      const berth_rest_match *mt);
void berth_rest_all_stats(berth_engine *e, berth_http_req *req,
                          const berth_rest_match *mt);
void berth_rest_repository_index(berth_engine *e, berth_http_req *req,
                                 const berth_rest_match *mt);
void berth_rest_repository_load(berth_engine *e, berth_http_req *req,
                                const berth_rest_match *mt);
void berth_rest_repository_unload(berth_engine *e, berth_http_req *req,
                                  const berth_rest_match *mt);
/* router_admin.c */
void berth_rest_routes_list(berth_engine *e, berth_http_req *req,
                            const berth_rest_match *mt);
void berth_rest_route_get(berth_engine *e, berth_http_req *req,
                          const berth_rest_match *mt);
void berth_rest_route_update(berth_engine *e, berth_http_req *req,
                             const berth_rest_match *mt);
/* kserve_v1.c */
void berth_rest_v1_list(berth_engine *e, berth_http_req *req,
                        const berth_rest_match *mt);
void berth_rest_v1_status(berth_engine *e, berth_http_req *req,
                          const berth_rest_match *mt);
void berth_rest_v1_predict(berth_engine *e, berth_http_req *req,
                           const berth_rest_match *mt);
/* The 404 of a /v1/models/... path no route has; name_verb: its third
 * segment ("name:verb"), or empty. */
void berth_rest_v1_not_found(berth_engine *e, berth_http_req *req,
                             berth_slice name_verb);

/* openai.c: the OpenAI-compatible routes (docs/openai.md) */
void berth_rest_openai_chat(berth_engine *e, berth_http_req *req,
                            const berth_rest_match *mt);
void berth_rest_openai_completions(berth_engine *e, berth_http_req *req,
                                   const berth_rest_match *mt);
void berth_rest_openai_embeddings(berth_engine *e, berth_http_req *req,
                                  const berth_rest_match *mt);

/* The OIP REST handler given to the httpd. */
void berth_rest_handle(berth_http_req *req, void *engine);
/* The handler of server.metrics_port: GET /metrics only, with the
 * REST port's token rule. */
void berth_rest_metrics_handle(berth_http_req *req, void *engine);

/* The REST module (main.c's list): starts the REST listener and, when
 * server.metrics_port is set, the metrics one. */
extern const berth_module berth_rest_module;

#endif
