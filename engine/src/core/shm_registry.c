/* Berth engine: registered system shared-memory regions (shm_registry.h). */
#include "shm_registry.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct berth_shm_registry {
  berth_shm_region **regions; /* owned references */
  size_t n, cap;
  size_t max_regions;
  uint64_t max_bytes, total;
};

berth_shm_registry *berth_shm_registry_new(size_t max_regions,
                                           uint64_t max_bytes) {
  berth_shm_registry *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  r->max_regions = max_regions;
  r->max_bytes = max_bytes;
  return r;
}

static void region_free(berth_shm_region *g) {
  if (g->map != NULL)
    munmap(g->map, g->map_len);
  free(g->name);
  free(g->key);
  free(g);
}

void berth_shm_release(berth_shm_region *g) {
  if (g != NULL && --g->refs == 0)
    region_free(g);
}

void berth_shm_registry_free(berth_shm_registry *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n; i++)
    berth_shm_release(r->regions[i]);
  free(r->regions);
  free(r);
}

bool berth_shm_key_valid(const char *key) {
  if (key == NULL || key[0] != '/')
    return false;
  size_t n = strlen(key + 1);
  if (n == 0 || n > 250 || strcmp(key, "/.") == 0 || strcmp(key, "/..") == 0)
    return false;
  for (const char *p = key + 1; *p; p++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok)
      return false;
  }
  return true;
}

static ssize_t find_index(const berth_shm_registry *r, const char *name) {
  for (size_t i = 0; i < r->n; i++)
    if (strcmp(r->regions[i]->name, name) == 0)
      return (ssize_t)i;
  return -1;
}

const berth_shm_region *berth_shm_find(const berth_shm_registry *r,
                                       const char *name) {
  ssize_t i = find_index(r, name);
  return i < 0 ? NULL : r->regions[i];
}

size_t berth_shm_count(const berth_shm_registry *r) { return r->n; }

const berth_shm_region *berth_shm_at(const berth_shm_registry *r, size_t i) {
  return i < r->n ? r->regions[i] : NULL;
}

uint64_t berth_shm_total_bytes(const berth_shm_registry *r) { return r->total; }

/* Checks the request against the limits and the names already there. */
static int check_new(const berth_shm_registry *r, const char *name,
                     const char *key, uint64_t byte_size, berth_errmsg *err) {
  if (name == NULL || name[0] == '\0' || strlen(name) > 256)
    return berth_errf(err, BERTH_E_INVALID,
                      "a shared memory region needs a "
                      "name of 1 to 256 bytes");
  if (!berth_shm_key_valid(key))
    return berth_errf(err, BERTH_E_INVALID,
                      "shared memory key '%.64s' is not "
                      "a POSIX shared memory name: '/' then letters, digits, "
                      "'.', '_' or '-' (no further '/')",
                      key ? key : "");
  if (find_index(r, name) >= 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "shared memory region '%.256s' "
                      "already in manager; unregister it first",
                      name);
  if (byte_size == 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "shared memory region '%.256s': "
                      "byte_size must be positive",
                      name);
  if (r->n >= r->max_regions)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "%zu shared memory regions are "
                      "registered, the limit (server.shm_max_regions); "
                      "unregister one first",
                      r->n);
  if (byte_size > r->max_bytes - r->total)
    return berth_errf(err, BERTH_E_TOO_LARGE,
                      "registering %llu more bytes of "
                      "shared memory would pass the limit of %llu bytes "
                      "(server.shm_max_bytes); %llu are registered",
                      (unsigned long long)byte_size,
                      (unsigned long long)r->max_bytes,
                      (unsigned long long)r->total);
  return BERTH_OK;
}

/* Maps [offset, offset + byte_size) of the open object fd into g. */
static int map_window(int fd, const char *name, uint64_t offset,
                      uint64_t byte_size, berth_shm_region *g,
                      berth_errmsg *err) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return berth_errf(err, BERTH_E_IO, "shared memory region '%.256s': %s",
                      name, strerror(errno));
  uint64_t size = st.st_size < 0 ? 0 : (uint64_t)st.st_size;
  if (offset > size || byte_size > size - offset)
    return berth_errf(err, BERTH_E_INVALID,
                      "shared memory region '%.256s': "
                      "offset %llu + byte_size %llu is beyond the object's "
                      "%llu bytes",
                      name, (unsigned long long)offset,
                      (unsigned long long)byte_size, (unsigned long long)size);
  long page = sysconf(_SC_PAGESIZE);
  uint64_t pg = page > 0 ? (uint64_t)page : 4096;
  uint64_t start = offset - offset % pg, slack = offset - start;
  if (byte_size + slack > SIZE_MAX)
    return berth_errf(err, BERTH_E_TOO_LARGE, "shared memory region too large");
  g->map_len = (size_t)(byte_size + slack);
  void *p = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                 (off_t)start);
  if (p == MAP_FAILED)
    return berth_errf(err, BERTH_E_IO,
                      "shared memory region '%.256s': mmap: "
                      "%s",
                      name, strerror(errno));
  g->map = p;
  g->base = (uint8_t *)p + slack;
  return BERTH_OK;
}

static int open_key(const char *name, const char *key, berth_errmsg *err) {
  int fd = shm_open(key, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd >= 0)
    return fd;
  int e = errno;
  if (e == ENOENT)
    return berth_errf(err, BERTH_E_INVALID,
                      "Unable to open shared memory "
                      "region '%.256s': no shared memory object '%.64s'",
                      name, key);
  return berth_errf(err, e == EACCES ? BERTH_E_FORBIDDEN : BERTH_E_IO,
                    "Unable to open shared memory region '%.256s' (key "
                    "'%.64s'): %s",
                    name, key, strerror(e));
}

int berth_shm_register(berth_shm_registry *r, const char *name, const char *key,
                       uint64_t offset, uint64_t byte_size, berth_errmsg *err) {
  int rc = check_new(r, name, key, byte_size, err);
  if (rc != BERTH_OK)
    return rc;
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 8;
    berth_shm_region **p = realloc(r->regions, cap * sizeof *p);
    if (p == NULL)
      return berth_errf(err, BERTH_E_NOMEM, "out of memory");
    r->regions = p;
    r->cap = cap;
  }
  berth_shm_region *g = calloc(1, sizeof *g);
  if (g == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  g->refs = 1;
  g->name = strdup(name);
  g->key = strdup(key);
  g->offset = offset;
  g->byte_size = byte_size;
  if (g->name == NULL || g->key == NULL) {
    region_free(g);
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  }
  int fd = open_key(name, key, err);
  if (fd < 0) {
    region_free(g);
    return fd;
  }
  rc = map_window(fd, name, offset, byte_size, g, err);
  close(fd); /* the mapping stays */
  if (rc != BERTH_OK) {
    region_free(g);
    return rc;
  }
  r->regions[r->n++] = g;
  r->total += byte_size;
  return BERTH_OK;
}

static void drop_at(berth_shm_registry *r, size_t i) {
  berth_shm_region *g = r->regions[i];
  r->total -= g->byte_size;
  memmove(&r->regions[i], &r->regions[i + 1],
          (r->n - i - 1) * sizeof *r->regions);
  r->n--;
  berth_shm_release(g);
}

int berth_shm_unregister(berth_shm_registry *r, const char *name,
                         berth_errmsg *err) {
  if (name == NULL) {
    while (r->n > 0)
      drop_at(r, r->n - 1);
    return BERTH_OK;
  }
  ssize_t i = find_index(r, name);
  if (i < 0)
    return berth_errf(err, BERTH_E_NOT_FOUND,
                      "no shared memory region "
                      "'%.256s' is registered",
                      name);
  drop_at(r, (size_t)i);
  return BERTH_OK;
}

int berth_shm_acquire(berth_shm_registry *r, const char *name, uint64_t offset,
                      uint64_t len, berth_shm_region **region, uint8_t **out,
                      berth_errmsg *err) {
  ssize_t i = find_index(r, name);
  if (i < 0)
    return berth_errf(err, BERTH_E_INVALID,
                      "Unable to find shared memory "
                      "region: '%.256s'",
                      name);
  berth_shm_region *g = r->regions[i];
  if (offset > g->byte_size || len > g->byte_size - offset)
    return berth_errf(err, BERTH_E_INVALID,
                      "shared memory region '%.256s': "
                      "offset %llu + byte size %llu is beyond its %llu bytes",
                      name, (unsigned long long)offset, (unsigned long long)len,
                      (unsigned long long)g->byte_size);
  g->refs++;
  *region = g;
  *out = g->base + offset;
  return BERTH_OK;
}
