/* Berth engine, gateway mode: the replica set and its pure rules
 * (docs/gateway.md) — replica URLs, the health and ejection state machine,
 * the power-of-two-choices pick and the atomic replacement of the set. No
 * I/O: gw_upstream.c owns the connections, gateway.c the timers.
 *
 * Ownership: a berth_gw_set owns its replicas (active and draining) and
 * their strings; a replica's transport pointer belongs to gateway.c, which
 * attaches it after berth_gw_set_replace and releases it before
 * berth_gw_set_reap frees a drained replica.
 */
#ifndef BERTH_GW_SET_H
#define BERTH_GW_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

#define BERTH_GW_MAX_REPLICAS 256
#define BERTH_GW_HIST_BUCKETS 14

typedef enum berth_gw_state {
  BERTH_GW_PROBING = 0, /* new: no traffic until a health check passes */
  BERTH_GW_HEALTHY,     /* takes traffic */
  BERTH_GW_EJECTED,     /* failed eject_after_failures times in a row: no
                           traffic until eject_for_ms passed and a health
                           check passed */
  BERTH_GW_DRAINING,    /* removed from the set: its in-flight requests
                           finish, then it is freed */
} berth_gw_state;

const char *berth_gw_state_name(berth_gw_state s);

/* The rules' numbers (config gateway:). */
typedef struct berth_gw_policy {
  uint32_t eject_after_failures;
  uint64_t eject_for_ms;
} berth_gw_policy;

/* Forwarding latency (seconds), fixed buckets (berth_gw_hist_bounds). */
typedef struct berth_gw_hist {
  uint64_t buckets[BERTH_GW_HIST_BUCKETS]; /* not cumulative */
  uint64_t count;
  double sum;
} berth_gw_hist;
extern const double berth_gw_hist_bounds[BERTH_GW_HIST_BUCKETS];
void berth_gw_hist_observe(berth_gw_hist *h, double seconds);

typedef struct berth_gw_replica {
  char *name;    /* owned */
  char *url;     /* owned, as given */
  char host[64]; /* numeric address (IPv6 without brackets) */
  uint16_t port;
  berth_gw_state state;
  uint32_t consecutive_failures;
  uint64_t ejected_until_ms; /* EJECTED: monotonic ms */
  uint64_t in_flight;        /* forwarded, not finished (gateway's count) */
  uint64_t requests;         /* forwarded attempts, total */
  uint64_t failures;         /* failed attempts and health checks */
  uint64_t ejections;
  berth_gw_hist latency;
  void *transport; /* gateway.c's (gw_upstream.h), NULL until attached */
} berth_gw_replica;

typedef struct berth_gw_set {
  berth_gw_replica **active; /* owned array of owned replicas */
  size_t n_active;
  berth_gw_replica **draining; /* owned array of owned replicas */
  size_t n_draining;
} berth_gw_set;

/* A replica as the config or PUT /v2/gateway/replicas names it. */
typedef struct berth_gw_spec {
  const char *name; /* borrowed, NUL-terminated */
  const char *url;
} berth_gw_spec;

/* Splits "http://ADDRESS:PORT" (an optional trailing "/"; ADDRESS a
 * numeric IPv4 address or a bracketed IPv6 one; no names, no path) into
 * host (cap bytes) and port 1..65535. Unless allow_remote, ADDRESS must be
 * a loopback address (127.0.0.0/8 or ::1). BERTH_E_INVALID with why. */
int berth_gw_parse_url(const char *url, bool allow_remote, char *host,
                       size_t cap, uint16_t *port, berth_errmsg *err);

/* Replaces the set's active replicas with specs, all or nothing: every
 * name valid and unique, every URL parsed as above, at most
 * BERTH_GW_MAX_REPLICAS. A spec whose name and URL match an active replica
 * keeps it (state, counts, transport); the others start PROBING with no
 * transport; active replicas no longer listed move to draining
 * (DRAINING). BERTH_E_INVALID (err names the entry) or BERTH_E_NOMEM, and
 * the set unchanged. */
int berth_gw_set_replace(berth_gw_set *s, const berth_gw_spec *specs, size_t n,
                         bool allow_remote, berth_errmsg *err);
/* Frees the draining replicas with nothing in flight whose transport is
 * NULL (the caller detaches transports first); returns how many. */
size_t berth_gw_set_reap(berth_gw_set *s);
/* Frees every replica (transports must be detached). */
void berth_gw_set_free(berth_gw_set *s);
/* The active replica called name, or NULL. */
berth_gw_replica *berth_gw_set_find(const berth_gw_set *s, const char *name);

/* The state machine. now_ms: monotonic milliseconds. */
/* A forwarded request answered without a failure. */
void berth_gw_on_success(berth_gw_replica *r);
/* A failure (connect error, reset, 5xx, failed health check): counted; a
 * HEALTHY replica with eject_after_failures failures in a row is ejected
 * until now + eject_for_ms (true returned then). */
bool berth_gw_on_failure(berth_gw_replica *r, const berth_gw_policy *p,
                         uint64_t now_ms);
/* A health check's result. PROBING: a pass makes it HEALTHY. EJECTED: a
 * pass once the ejection time is over makes it HEALTHY; a failure counts
 * (and, once the time is over, ejects it again). HEALTHY: as a request's
 * result. Returns true when the replica was ejected by this result. */
bool berth_gw_on_health(berth_gw_replica *r, bool ok, const berth_gw_policy *p,
                        uint64_t now_ms);
/* Whether r takes new requests. */
bool berth_gw_eligible(const berth_gw_replica *r);

/* Power of two choices: among the eligible active replicas not in exclude
 * (n_ex pointers), two distinct ones drawn at random (rnd() returns a
 * uniform 32-bit number), the one with fewer in flight (the first on a
 * tie). One eligible: it. None: NULL. */
berth_gw_replica *berth_gw_pick(const berth_gw_set *s,
                                berth_gw_replica *const *exclude, size_t n_ex,
                                uint32_t (*rnd)(void *), void *rnd_ctx);
/* Number of HEALTHY active replicas. */
size_t berth_gw_healthy_count(const berth_gw_set *s);

#endif
