/* Berth engine: registered system shared-memory regions (Triton's
 * shared-memory extension, docs/rest-api.md).
 *
 * A region is a named window [offset, offset + byte_size) of a POSIX
 * shared-memory object (key "/name"), mapped read/write once at register.
 * Regions are reference counted: the registry holds one reference while
 * the name is registered, and every request that reads or writes a region
 * holds one (berth_shm_acquire) until it is over, so an unregister while a
 * request runs unmaps only when that request ends. A region the client
 * unlinks stays mapped until it is unregistered.
 *
 * Everything runs on the loop thread; no locking. */
#ifndef BERTH_SHM_REGISTRY_H
#define BERTH_SHM_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

typedef struct berth_shm_registry berth_shm_registry;

/* One mapped region. Owned by the registry and by each holder. */
typedef struct berth_shm_region {
  char *name;         /* owned: the client's name for it */
  char *key;          /* owned: the shm object's name ("/x") */
  uint64_t offset;    /* into the object */
  uint64_t byte_size; /* the window's length */
  uint8_t *base;      /* the window's first byte (mapping + page slack) */
  void *map;          /* the mapping (munmap) */
  size_t map_len;
  unsigned refs;
} berth_shm_region;

/* A registry allowing at most max_regions regions whose windows add up to
 * at most max_bytes. NULL when out of memory. */
berth_shm_registry *berth_shm_registry_new(size_t max_regions,
                                           uint64_t max_bytes);
/* Unmaps every region nobody holds; held ones go at their last release. */
void berth_shm_registry_free(berth_shm_registry *r);

/* Whether key is a POSIX shm name Berth opens: "/" then 1..250 bytes of
 * [A-Za-z0-9._-], not "." or "..". */
bool berth_shm_key_valid(const char *key);

/* Opens key, checks that [offset, offset + byte_size) lies within the
 * object (overflow-safe), maps it read/write and registers it as name.
 * BERTH_E_INVALID: bad name/key/size, no such shm object, or name
 * already registered; BERTH_E_TOO_LARGE: a limit;
 * BERTH_E_IO, BERTH_E_FORBIDDEN: the system refused. */
int berth_shm_register(berth_shm_registry *r, const char *name, const char *key,
                       uint64_t offset, uint64_t byte_size, berth_errmsg *err);
/* Unregisters name (NULL: every region). BERTH_E_NOT_FOUND for an unknown
 * name (Triton answers an unknown name with success; the frontend
 * decides). */
int berth_shm_unregister(berth_shm_registry *r, const char *name,
                         berth_errmsg *err);

/* The registered region called name, or NULL. Borrowed. */
const berth_shm_region *berth_shm_find(const berth_shm_registry *r,
                                       const char *name);
/* The i-th registered region (i < berth_shm_count), for status. */
size_t berth_shm_count(const berth_shm_registry *r);
const berth_shm_region *berth_shm_at(const berth_shm_registry *r, size_t i);
/* Bytes of all registered windows together. */
uint64_t berth_shm_total_bytes(const berth_shm_registry *r);

/* Takes a reference on the region called name and points *out at
 * [offset, offset + len) of it (overflow-safe bounds check).
 * BERTH_E_NOT_FOUND: no such region; BERTH_E_INVALID: out of its range. */
int berth_shm_acquire(berth_shm_registry *r, const char *name, uint64_t offset,
                      uint64_t len, berth_shm_region **region, uint8_t **out,
                      berth_errmsg *err);
/* Drops a reference from berth_shm_acquire. */
void berth_shm_release(berth_shm_region *region);

#endif
