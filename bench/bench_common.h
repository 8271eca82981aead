/* Helpers every benchmark program shares (header-only: each program is one
 * translation unit plus its baseline loops). */
#ifndef MGPO_BENCH_COMMON_H
#define MGPO_BENCH_COMMON_H

#include <time.h>

/* Seconds on the monotonic clock. */
static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
