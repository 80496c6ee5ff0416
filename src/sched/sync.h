/* Condition variables on the monotonic clock, so deadlines computed with
 * hadm_now() are used as they are and wall-clock jumps do not matter. */
#ifndef HADM_SCHED_SYNC_H
#define HADM_SCHED_SYNC_H
#include <errno.h>
#include <pthread.h>
#include <time.h>

static inline void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* Waits until signalled or until `until` (hadm_now() seconds); returns
 * ETIMEDOUT once the time has passed. */
static inline int cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, double until)
{
    struct timespec ts;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_nsec = 999999999L;
    return pthread_cond_timedwait(c, m, &ts);
}
#endif
