/* The one place that knows about threads.  Work is split into the fixed
 * blocks of the registry; every block writes only its own elements and its
 * own entry of block_sums, so any schedule gives the same bits. */
#include "internal.h"

#ifdef MGPO_WITH_OPENMP
#include <omp.h>
#endif

int mgpo_parallel_threads(const mgpo_state *st)
{
#ifdef MGPO_WITH_OPENMP
    int threads = st->config.num_threads;
    if (threads == 0) threads = omp_get_max_threads();
    return threads > 1 ? threads : 1;
#else
    (void)st;
    return 1;
#endif
}

void mgpo_parallel_blocks(mgpo_state *st, mgpo_block_fn fn, void *arg)
{
    size_t n = st->block_count;
#ifdef MGPO_WITH_OPENMP
    int threads = mgpo_parallel_threads(st);
    if (threads > 1 && n > 1) {
        long count = (long)n;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (long b = 0; b < count; b++) fn(st, (size_t)b, arg);
        return;
    }
#endif
    for (size_t b = 0; b < n; b++) fn(st, b, arg);
}
