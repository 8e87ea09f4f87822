/* Berth engine: the routes' documents and their changes at run time, and
 * the REST admin routes (docs/rest-api.md, "Traffic routes"):
 *   GET  /v2/routes          every route
 *   GET  /v2/routes/{name}   one route
 *   POST /v2/routes/{name}   create or change a route (admin token)
 * A change is validated whole, then replaces the route's definition at once
 * on the loop thread: requests already routed keep their target. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rest.h"
#include "router_int.h"

/* ---- documents ------------------------------------------------------------- */

/* {"model", "version" (only when pinned), <extra>: value} */
static json_t *target_doc(const berth_route_target_config *t, const char *extra,
                          double value) {
  json_t *o = json_pack("{s:s, s:f}", "model", t->model, extra, value);
  if (o != NULL && t->version != NULL &&
      json_object_set_new(o, "version", json_string(t->version)) != 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}

json_t *berth_router_route_doc(const berth_route *rt) {
  const berth_route_config *c = &rt->cfg;
  json_t *split = json_array();
  if (split == NULL)
    return NULL;
  for (size_t i = 0; i < c->n_split; i++)
    if (json_array_append_new(split, target_doc(&c->split[i], "weight",
                                                c->split[i].weight)) != 0) {
      json_decref(split);
      return NULL;
    }
  json_t *shadow = c->shadow.model != NULL
                       ? target_doc(&c->shadow, "rate", c->shadow.rate)
                       : json_null();
  json_t *sticky =
      c->sticky_header != NULL ? json_string(c->sticky_header) : json_null();
  return json_pack("{s:s, s:o, s:o*, s:o*}", "name", c->name, "split", split,
                   "sticky_header", sticky, "shadow", shadow);
}

json_t *berth_router_index(berth_engine *e) {
  json_t *list = json_array();
  berth_router *r = e->router;
  for (size_t i = 0; list != NULL && r != NULL && i < r->n_routes; i++)
    if (json_array_append_new(list, berth_router_route_doc(r->routes[i])) !=
        0) {
      json_decref(list);
      return NULL;
    }
  return list;
}

/* ---- changes ---------------------------------------------------------------- */

/* The new definition: the route's current one (if any) with doc's keys
 * over it; null values remove a key. New reference or NULL (err set). */
static json_t *merged_doc(berth_route *rt, const char *name, json_t *doc,
                          int *status, berth_errmsg *err) {
  *status = BERTH_E_CONFIG;
  if (!json_is_object(doc)) {
    berth_errf(err, BERTH_E_CONFIG,
               "the body must be a JSON object with \"split\" and optionally "
               "\"sticky_header\" and \"shadow\"");
    return NULL;
  }
  json_t *given_name = json_object_get(doc, "name");
  if (given_name != NULL &&
      !(json_is_string(given_name) &&
        strcmp(json_string_value(given_name), name) == 0)) {
    berth_errf(err, BERTH_E_CONFIG,
               "name: must be the route's name from the URL (\"%s\") or left "
               "out",
               name);
    return NULL;
  }
  json_t *m = rt != NULL ? berth_router_route_doc(rt) : json_object();
  if (m == NULL || json_object_update(m, doc) != 0 ||
      json_object_set_new(m, "name", json_string(name)) != 0) {
    json_decref(m);
    *status = berth_errf(err, BERTH_E_NOMEM, "out of memory");
    return NULL;
  }
  const char *key;
  json_t *value;
  void *tmp;
  json_object_foreach_safe(m, tmp, key, value) {
    if (json_is_null(value))
      json_object_del(m, key);
  }
  return m;
}

int berth_router_update(berth_engine *e, const char *name, json_t *doc,
                        berth_errmsg *err) {
  berth_route *rt = berth_router_find(e, name, strlen(name));
  int status;
  json_t *m = merged_doc(rt, name, doc, &status, err);
  if (m == NULL)
    return status;
  berth_route_config cfg;
  int rc = berth_config_parse_route_entry(m, "", &cfg, err);
  json_decref(m);
  if (rc != BERTH_OK)
    return rc;
  double *cum = NULL;
  rc = berth_router_check(e, &cfg, "", &cum, err);
  if (rc == BERTH_OK && rt == NULL)
    rc = berth_router_add(e, &cfg, cum, err);
  if (rc != BERTH_OK) {
    free(cum);
    berth_config_route_clear(&cfg);
    return rc;
  }
  if (rt != NULL) { /* the swap: one step on the loop thread */
    berth_config_route_clear(&rt->cfg);
    free(rt->cum);
    rt->cfg = cfg;
    rt->cum = cum;
    rt->total = cum[cfg.n_split - 1];
  }
  berth_log_kv(BERTH_LOG_INFO, rt != NULL ? "route changed" : "route added",
               "route", name, NULL);
  return BERTH_OK;
}

/* ---- REST ------------------------------------------------------------------- */

void berth_rest_routes_list(berth_engine *e, berth_http_req *req,
                            const berth_rest_match *mt) {
  (void)mt;
  json_t *list = berth_router_index(e);
  berth_rest_respond_doc(
      e, req, 200, list != NULL ? json_pack("{s:o}", "routes", list) : NULL);
}

/* The route's name (129 bytes with the NUL), or false after a 404. */
static bool route_name(berth_engine *e, berth_http_req *req,
                       const berth_rest_match *mt, char name[130]) {
  if (!berth_slice_valid_name(mt->name) || mt->name.n > 128) {
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND,
                             "no such endpoint; see /v2/routes and "
                             "/v2/routes/{name}");
    return false;
  }
  snprintf(name, 130, "%.*s", (int)mt->name.n, mt->name.p);
  return true;
}

void berth_rest_route_get(berth_engine *e, berth_http_req *req,
                          const berth_rest_match *mt) {
  char name[130], msg[400];
  if (!route_name(e, req, mt, name))
    return;
  berth_route *rt = berth_router_find(e, mt->name.p, mt->name.n);
  if (rt == NULL) {
    snprintf(msg, sizeof msg, "no route '%s'; GET /v2/routes lists them", name);
    berth_rest_respond_error(e, req, BERTH_E_NOT_FOUND, msg);
    return;
  }
  berth_rest_respond_doc(e, req, 200, berth_router_route_doc(rt));
}

void berth_rest_route_update(berth_engine *e, berth_http_req *req,
                             const berth_rest_match *mt) {
  char name[130], msg[400];
  if (!route_name(e, req, mt, name))
    return;
  size_t blen = 0;
  const char *body = berth_http_body(req, &blen);
  json_error_t jerr;
  json_t *doc =
      json_loadb(body != NULL ? body : "", blen, JSON_REJECT_DUPLICATES, &jerr);
  if (doc == NULL) {
    snprintf(msg, sizeof msg, "the body is not JSON: %.200s (line %d)",
             jerr.text, jerr.line);
    berth_rest_respond_error(e, req, BERTH_E_PARSE, msg);
    return;
  }
  berth_errmsg err;
  int rc = berth_router_update(e, name, doc, &err);
  json_decref(doc);
  if (rc != BERTH_OK) {
    berth_rest_respond_error(e, req, rc, err.msg);
    return;
  }
  berth_route *rt = berth_router_find(e, mt->name.p, mt->name.n);
  berth_rest_respond_doc(e, req, 200,
                         rt != NULL ? berth_router_route_doc(rt) : NULL);
}
