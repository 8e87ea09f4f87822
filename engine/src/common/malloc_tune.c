/* Berth engine: allocator settings (malloc_tune.h). */
#include "malloc_tune.h"

#include <stdlib.h>
#include <string.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#define MMAP_THRESHOLD (32 << 20)
#define TRIM_THRESHOLD (128 << 20)

void berth_malloc_tune(void) {
#ifdef __GLIBC__
  const char *t = getenv("GLIBC_TUNABLES");
  if ((t != NULL && strstr(t, "glibc.malloc.") != NULL) ||
      getenv("MALLOC_MMAP_THRESHOLD_") != NULL ||
      getenv("MALLOC_TRIM_THRESHOLD_") != NULL)
    return; /* the operator's choice */
  /* Failure only leaves glibc's defaults: nothing to report. */
  (void)mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
  (void)mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
#endif
}
