/* Berth engine: the C library allocator's settings for a server that moves
 * large tensors.
 *
 * glibc serves a request of more than its mmap threshold (128 KiB, raised
 * on the fly up to the size of the largest block freed) with a fresh
 * mapping, and gives the top of the heap back to the kernel once more than
 * twice that is free. A server that takes a 1 MiB body, answers with a
 * 1 MiB body and frees both, request after request, then maps, faults in
 * (zeroes) and unmaps every page of every tensor: measured, half of
 * berthd's CPU per 1 MiB request at concurrency 1 (bench/large_ab.sh,
 * bench/results/NOTES-wirepath.md). berth_malloc_tune keeps blocks up to
 * 32 MiB in the heap and up to 128 MiB of free heap in the process, so the
 * pages of one request are reused by the next; larger blocks are still
 * mapped and unmapped.
 */
#ifndef BERTH_MALLOC_TUNE_H
#define BERTH_MALLOC_TUNE_H

/* Sets the allocator's thresholds (glibc only; elsewhere it does nothing),
 * unless the environment already sets them (GLIBC_TUNABLES naming
 * glibc.malloc, MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_). Call
 * once, at the start of main, before any thread starts. */
void berth_malloc_tune(void);

#endif
