/* A guard for read-only file mappings whose file may shrink under them.
 *
 * A page of a MAP_PRIVATE file mapping that was never written follows the
 * file: if the file is truncated (an operator copying a new model over the
 * old one with cp truncates it first), touching that page raises SIGBUS and
 * the process dies. A guarded mapping that faults this way is replaced, in
 * the signal handler, by zero pages at the same address and marked hit; the
 * faulting code then reads zeros instead of crashing, and its owner must
 * check map_guard_hit() after using the mapping and discard what it computed.
 * Faults outside guarded mappings keep their previous handling (a crash). */
#ifndef HADM_IO_MAPGUARD_H
#define HADM_IO_MAPGUARD_H

#include <stddef.h>

/* Registers [base, base+len); returns a slot for the calls below, or -1 when
 * every slot is taken (the mapping is then unguarded). */
int map_guard_add(void *base, size_t len);
/* Before munmap. slot -1 is a no-op. */
void map_guard_remove(int slot);
/* 1 once the mapping faulted and now reads as zeros. */
int map_guard_hit(int slot);

#endif
