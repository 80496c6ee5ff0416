/* Returning the memory of dead buffers early, without freeing them. */
#ifndef HADM_UTIL_PAGES_H
#define HADM_UTIL_PAGES_H
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* Gives the whole pages inside [p, p + bytes) back to the system; they read
 * as zeros when touched again. For anonymous memory whose contents are dead
 * until next overwritten (a mapped file's pages are re-read instead). */
static inline void pages_discard(void *p, size_t bytes)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + bytes) & ~(page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}
#endif
