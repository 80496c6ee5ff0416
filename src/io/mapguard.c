/* SIGBUS guard for file mappings (see mapguard.h). */
#include "io/mapguard.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

/* Two models, each mapped once, plus the CLI's short-lived files: 64 is ample. */
#define GUARD_SLOTS 64

typedef struct {
    uintptr_t base; /* 0: free; written last on add, first on remove (atomic) */
    size_t len;
    int hit;        /* atomic */
} guard_slot;

static guard_slot slots[GUARD_SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous;
static int installed;

/* Faults outside our mappings go to whoever handled SIGBUS before us (the
 * sanitizers' handler, or the default action, which ends the process when
 * the faulting access is retried). */
static void pass_on(int sig, siginfo_t *si, void *uctx)
{
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
        previous.sa_sigaction(sig, si, uctx);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &dfl, NULL);
}

/* mmap is not on POSIX's async-signal-safe list, but on Linux it is a bare
 * system call taking no user-space lock, which is what matters here. */
static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t b = __atomic_load_n(&slots[i].base, __ATOMIC_ACQUIRE);
        size_t n = slots[i].len;
        if (!b || a < b || a - b >= n)
            continue;
        if (mmap((void *)b, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
            break;
        __atomic_store_n(&slots[i].hit, 1, __ATOMIC_RELEASE);
        return; /* the access is retried and reads zeros */
    }
    pass_on(sig, si, uctx);
}

static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    installed = sigaction(SIGBUS, &sa, &previous) == 0;
}

int map_guard_add(void *base, size_t len)
{
    if (!base || !len)
        return -1;
    pthread_mutex_lock(&slots_lock);
    if (!installed)
        install();
    int slot = -1;
    for (int i = 0; installed && slot < 0 && i < GUARD_SLOTS; i++) {
        if (__atomic_load_n(&slots[i].base, __ATOMIC_ACQUIRE))
            continue;
        slots[i].len = len;
        __atomic_store_n(&slots[i].hit, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&slots[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
        slot = i;
    }
    pthread_mutex_unlock(&slots_lock);
    return slot;
}

void map_guard_remove(int slot)
{
    if (slot < 0 || slot >= GUARD_SLOTS)
        return;
    pthread_mutex_lock(&slots_lock);
    __atomic_store_n(&slots[slot].base, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&slots_lock);
}

int map_guard_hit(int slot)
{
    return slot >= 0 && slot < GUARD_SLOTS && __atomic_load_n(&slots[slot].hit, __ATOMIC_ACQUIRE);
}
