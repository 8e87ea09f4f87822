/* Fuzz target: model files in a load request (repo_files.h) — the
 * "file:<path>" keys and their base64 contents come from the client. The
 * first byte splits the rest into a key and a base64 text; every key the
 * path rule accepts must be relative, without "." or ".." components, and
 * the files of one request must stay within the byte limit. Nothing is
 * written: only berth_repo_files_add* run, no folder is made. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether rel has a component "", "." or "..", or starts with '/'. */
static bool unsafe(const char *rel) {
  if (rel[0] == '/' || rel[0] == '\0')
    return true;
  const char *p = rel;
  while (*p != '\0') {
    size_t n = strcspn(p, "/");
    if (n == 0 || (n == 1 && p[0] == '.') ||
        (n == 2 && p[0] == '.' && p[1] == '.'))
      return true;
    p += n;
    if (*p == '/')
      p++;
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  size_t split = data[0] < size - 1 ? data[0] : size - 1;
  char *key = malloc(split + 1);
  char *b64 = malloc(size - 1 - split + 1);
  if (key == NULL || b64 == NULL) {
    free(key);
    free(b64);
    return 0;
  }
  memcpy(key, data + 1, split);
  key[split] = '\0';
  size_t blen = size - 1 - split;
  memcpy(b64, data + 1 + split, blen);
  b64[blen] = '\0';
  berth_errmsg err;
  (void)berth_repo_files_check_key(key, &err);
  berth_repo_files f;
  memset(&f, 0, sizeof f);
  const size_t limit = 4096;
  if (berth_repo_files_add_base64(&f, key, b64, blen, limit, &err) ==
      BERTH_OK) {
    if (f.n != 1 || f.total > limit || unsafe(f.v[0].rel))
      abort();
  }
  /* the same key twice is refused */
  if (f.n == 1 &&
      berth_repo_files_add(&f, key, "x", 1, limit, &err) == BERTH_OK)
    abort();
  berth_repo_files_clear(&f);
  free(key);
  free(b64);
  return 0;
}
