/* Berth engine, gateway mode: the replica set's pure rules (gw_set.h). */
#include "gw_set.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double berth_gw_hist_bounds[BERTH_GW_HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1,     2.5,  5,     10};

void berth_gw_hist_observe(berth_gw_hist *h, double seconds) {
  h->count++;
  h->sum += seconds;
  for (size_t i = 0; i < BERTH_GW_HIST_BUCKETS; i++)
    if (seconds <= berth_gw_hist_bounds[i]) {
      h->buckets[i]++;
      return;
    }
}

const char *berth_gw_state_name(berth_gw_state s) {
  switch (s) {
  case BERTH_GW_PROBING:
    return "probing";
  case BERTH_GW_HEALTHY:
    return "healthy";
  case BERTH_GW_EJECTED:
    return "ejected";
  default:
    return "draining";
  }
}

/* ---- URLs ------------------------------------------------------------- */

static bool is_loopback(const char *host, bool v6) {
  unsigned char a[16];
  if (v6)
    return inet_pton(AF_INET6, host, a) == 1 &&
           memcmp(a, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16) == 0;
  return inet_pton(AF_INET, host, a) == 1 && a[0] == 127;
}

int berth_gw_parse_url(const char *url, bool allow_remote, char *host,
                       size_t cap, uint16_t *port, berth_errmsg *err) {
  static const char scheme[] = "http://";
  size_t ul = url != NULL ? strlen(url) : 0;
  if (ul == 0 || ul > 200 || strncmp(url, scheme, sizeof scheme - 1) != 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "replica URL must look like http://127.0.0.1:PORT "
                      "(h2c, no TLS)");
  const char *p = url + sizeof scheme - 1;
  const char *end;
  bool v6 = p[0] == '[';
  if (v6) {
    end = strchr(p, ']');
    if (end == NULL || end[1] != ':')
      return berth_errf(err, BERTH_E_INVALID,
                        "replica URL %s: expected [IPv6]:PORT", url);
    p++;
  } else {
    end = strchr(p, ':');
    if (end == NULL)
      return berth_errf(err, BERTH_E_INVALID,
                        "replica URL %s: the port is missing", url);
  }
  size_t hl = (size_t)(end - p);
  if (hl == 0 || hl >= cap || hl >= 64)
    return berth_errf(err, BERTH_E_INVALID, "replica URL %s: bad address", url);
  memcpy(host, p, hl);
  host[hl] = '\0';
  unsigned char a[16];
  if (inet_pton(v6 ? AF_INET6 : AF_INET, host, a) != 1)
    return berth_errf(err, BERTH_E_INVALID,
                      "replica URL %s: the address must be numeric (no "
                      "host names)",
                      url);
  const char *q = end + (v6 ? 2 : 1);
  unsigned long v = 0;
  size_t digits = 0;
  while (q[digits] >= '0' && q[digits] <= '9' && digits < 6)
    v = v * 10 + (unsigned long)(q[digits++] - '0');
  const char *rest = q + digits;
  if (digits == 0 || v == 0 || v > 65535 ||
      !(rest[0] == '\0' || (rest[0] == '/' && rest[1] == '\0')))
    return berth_errf(err, BERTH_E_INVALID,
                      "replica URL %s: expected a port 1-65535 and no path",
                      url);
  if (!allow_remote && !is_loopback(host, v6))
    return berth_errf(err, BERTH_E_INVALID,
                      "replica URL %s: only loopback addresses (127.0.0.0/8, "
                      "::1) are allowed; set gateway.allow_remote to forward "
                      "to other machines",
                      url);
  *port = (uint16_t)v;
  return BERTH_OK;
}

/* ---- the set ---------------------------------------------------------- */

static bool valid_name(const char *s) {
  size_t n = s != NULL ? strlen(s) : 0;
  if (n == 0 || n > 128)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return false;
  }
  return true;
}

static void replica_free(berth_gw_replica *r) {
  if (r == NULL)
    return;
  free(r->name);
  free(r->url);
  free(r);
}

static berth_gw_replica *replica_new(const berth_gw_spec *sp, const char *host,
                                     uint16_t port) {
  berth_gw_replica *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  r->name = strdup(sp->name);
  r->url = strdup(sp->url);
  if (r->name == NULL || r->url == NULL) {
    replica_free(r);
    return NULL;
  }
  snprintf(r->host, sizeof r->host, "%s", host);
  r->port = port;
  r->state = BERTH_GW_PROBING;
  return r;
}

/* Checks every spec; BERTH_OK or BERTH_E_INVALID naming it. */
static int check_specs(const berth_gw_spec *specs, size_t n, bool allow_remote,
                       berth_errmsg *err) {
  if (n > BERTH_GW_MAX_REPLICAS)
    return berth_errf(err, BERTH_E_INVALID, "at most %d replicas, got %zu",
                      BERTH_GW_MAX_REPLICAS, n);
  for (size_t i = 0; i < n; i++) {
    if (!valid_name(specs[i].name))
      return berth_errf(err, BERTH_E_INVALID,
                        "replicas[%zu].name: expected 1-128 characters of "
                        "[A-Za-z0-9_.-]",
                        i);
    for (size_t j = 0; j < i; j++)
      if (strcmp(specs[j].name, specs[i].name) == 0)
        return berth_errf(err, BERTH_E_INVALID,
                          "replicas[%zu].name: duplicate \"%s\"", i,
                          specs[i].name);
    char host[64];
    uint16_t port;
    berth_errmsg why;
    if (berth_gw_parse_url(specs[i].url, allow_remote, host, sizeof host, &port,
                           &why) != BERTH_OK)
      return berth_errf(err, BERTH_E_INVALID, "replicas[%zu].url: %s", i,
                        why.msg);
  }
  return BERTH_OK;
}

int berth_gw_set_replace(berth_gw_set *s, const berth_gw_spec *specs, size_t n,
                         bool allow_remote, berth_errmsg *err) {
  int rc = check_specs(specs, n, allow_remote, err);
  if (rc != BERTH_OK)
    return rc;
  berth_gw_replica **next = calloc(n ? n : 1, sizeof *next);
  bool *kept = calloc(s->n_active ? s->n_active : 1, sizeof *kept);
  berth_gw_replica **drain =
      realloc(s->draining, (s->n_draining + s->n_active + 1) * sizeof *drain);
  if (drain != NULL)
    s->draining = drain;
  if (next == NULL || kept == NULL || drain == NULL)
    goto nomem;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < s->n_active && next[i] == NULL; j++)
      if (!kept[j] && strcmp(s->active[j]->name, specs[i].name) == 0 &&
          strcmp(s->active[j]->url, specs[i].url) == 0) {
        next[i] = s->active[j];
        kept[j] = true;
      }
    if (next[i] != NULL)
      continue;
    char host[64];
    uint16_t port = 0;
    berth_errmsg why;
    berth_gw_parse_url(specs[i].url, allow_remote, host, sizeof host, &port,
                       &why);
    next[i] = replica_new(&specs[i], host, port);
    if (next[i] == NULL)
      goto nomem;
  }
  for (size_t j = 0; j < s->n_active; j++)
    if (!kept[j]) {
      s->active[j]->state = BERTH_GW_DRAINING;
      s->draining[s->n_draining++] = s->active[j];
    }
  free(s->active);
  free(kept);
  s->active = next;
  s->n_active = n;
  return BERTH_OK;
nomem:
  if (next != NULL)
    for (size_t i = 0; i < n; i++) {
      bool old = false;
      for (size_t j = 0; j < s->n_active; j++)
        old = old || next[i] == s->active[j];
      if (!old)
        replica_free(next[i]);
    }
  free(next);
  free(kept);
  return berth_errf(err, BERTH_E_NOMEM, "out of memory");
}

size_t berth_gw_set_reap(berth_gw_set *s) {
  size_t freed = 0, k = 0;
  for (size_t i = 0; i < s->n_draining; i++) {
    berth_gw_replica *r = s->draining[i];
    if (r->in_flight == 0 && r->transport == NULL) {
      replica_free(r);
      freed++;
    } else {
      s->draining[k++] = r;
    }
  }
  s->n_draining = k;
  return freed;
}

void berth_gw_set_free(berth_gw_set *s) {
  for (size_t i = 0; i < s->n_active; i++)
    replica_free(s->active[i]);
  for (size_t i = 0; i < s->n_draining; i++)
    replica_free(s->draining[i]);
  free(s->active);
  free(s->draining);
  memset(s, 0, sizeof *s);
}

berth_gw_replica *berth_gw_set_find(const berth_gw_set *s, const char *name) {
  for (size_t i = 0; i < s->n_active; i++)
    if (strcmp(s->active[i]->name, name) == 0)
      return s->active[i];
  return NULL;
}

/* ---- the state machine ------------------------------------------------ */

void berth_gw_on_success(berth_gw_replica *r) { r->consecutive_failures = 0; }

static void eject(berth_gw_replica *r, const berth_gw_policy *p,
                  uint64_t now_ms) {
  r->state = BERTH_GW_EJECTED;
  r->ejected_until_ms = now_ms + p->eject_for_ms;
  r->ejections++;
}

bool berth_gw_on_failure(berth_gw_replica *r, const berth_gw_policy *p,
                         uint64_t now_ms) {
  r->failures++;
  if (r->consecutive_failures < UINT32_MAX)
    r->consecutive_failures++;
  if (r->state == BERTH_GW_HEALTHY &&
      r->consecutive_failures >= p->eject_after_failures) {
    eject(r, p, now_ms);
    return true;
  }
  return false;
}

bool berth_gw_on_health(berth_gw_replica *r, bool ok, const berth_gw_policy *p,
                        uint64_t now_ms) {
  switch (r->state) {
  case BERTH_GW_PROBING:
    if (ok) {
      r->state = BERTH_GW_HEALTHY;
      r->consecutive_failures = 0;
    } else {
      berth_gw_on_failure(r, p, now_ms);
    }
    return false;
  case BERTH_GW_EJECTED:
    if (now_ms < r->ejected_until_ms)
      return false; /* no verdict until the time is over */
    if (ok) {
      r->state = BERTH_GW_HEALTHY;
      r->consecutive_failures = 0;
      return false;
    }
    r->failures++;
    eject(r, p, now_ms);
    return true;
  case BERTH_GW_HEALTHY:
    if (ok) {
      berth_gw_on_success(r);
      return false;
    }
    return berth_gw_on_failure(r, p, now_ms);
  default:
    return false;
  }
}

bool berth_gw_eligible(const berth_gw_replica *r) {
  return r->state == BERTH_GW_HEALTHY;
}

static bool excluded(const berth_gw_replica *r,
                     berth_gw_replica *const *exclude, size_t n_ex) {
  for (size_t i = 0; i < n_ex; i++)
    if (exclude[i] == r)
      return true;
  return false;
}

berth_gw_replica *berth_gw_pick(const berth_gw_set *s,
                                berth_gw_replica *const *exclude, size_t n_ex,
                                uint32_t (*rnd)(void *), void *rnd_ctx) {
  berth_gw_replica *cand[BERTH_GW_MAX_REPLICAS];
  size_t n = 0;
  for (size_t i = 0; i < s->n_active && n < BERTH_GW_MAX_REPLICAS; i++)
    if (berth_gw_eligible(s->active[i]) &&
        !excluded(s->active[i], exclude, n_ex))
      cand[n++] = s->active[i];
  if (n == 0)
    return NULL;
  if (n == 1)
    return cand[0];
  size_t a = rnd(rnd_ctx) % n;
  size_t b = rnd(rnd_ctx) % (n - 1);
  if (b >= a)
    b++; /* distinct from a */
  return cand[b]->in_flight < cand[a]->in_flight ? cand[b] : cand[a];
}

size_t berth_gw_healthy_count(const berth_gw_set *s) {
  size_t n = 0;
  for (size_t i = 0; i < s->n_active; i++)
    n += s->active[i]->state == BERTH_GW_HEALTHY;
  return n;
}
