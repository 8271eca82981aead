/* The one place that knows about threads.
 *
 * Blocks are numbered across all slots and split into one contiguous range
 * per thread.  Each block writes only its own elements.  With `sums`, a
 * thread adds each block's result exactly into a running sum for the slot;
 * a slot wholly inside its range is rounded and stored at once, and the (at
 * most two) slots it shares with neighbours leave their exact partials in
 * st->partials, merged afterwards.  Exact addition is associative, so every
 * slot's total has the same bits for any number of threads, and the state
 * needs two partials per thread instead of one value per block.
 *
 * Workers do not inherit the caller's floating-point environment in every
 * OpenMP runtime (libgomp's keep the MXCSR they started with, libomp's copy
 * the caller's), so each one sets the library's own for the region and puts
 * its previous one back after it. */
#include "internal.h"

#include <fenv.h>

#ifdef MGPO_WITH_OPENMP
#include <omp.h>
#endif

void mgpo_fp_enter(fenv_t *caller)
{
    fegetenv(caller);
    fesetenv(FE_DFL_ENV);
}

/* fesetenv, not feupdateenv: re-raising the flags of the library's own
 * arithmetic would trap in a caller that enabled floating-point traps. */
void mgpo_fp_leave(const fenv_t *caller) { fesetenv(caller); }

int mgpo_parallel_max_threads(const mgpo_config *config)
{
#ifdef MGPO_WITH_OPENMP
    int threads = config->num_threads ? config->num_threads : omp_get_max_threads();
    if (threads > MGPO_MAX_THREADS) threads = MGPO_MAX_THREADS;
    return threads > 1 ? threads : 1;
#else
    (void)config;
    return 1;
#endif
}

int mgpo_parallel_threads(const mgpo_state *st)
{
#ifdef MGPO_WITH_OPENMP
    int threads = st->config.num_threads ? st->config.num_threads : omp_get_max_threads();
    if (threads > st->max_threads) threads = st->max_threads;
    return threads > 1 ? threads : 1;
#else
    (void)st;
    return 1;
#endif
}

/* The slot holding block b (slots are in block order). */
static size_t slot_of_block(const mgpo_state *st, size_t b)
{
    size_t lo = 0, hi = st->slot_count;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (st->slots[mid].first_block <= b) lo = mid;
        else hi = mid;
    }
    return lo;
}

/* Runs blocks [lo, hi); `shared` receives the partials of slots not wholly
 * inside the range (NULL when the range is all blocks). */
static void run_range(mgpo_state *st, mgpo_block_fn fn, void *arg, bool sums, size_t lo,
                      size_t hi, mgpo_partial shared[2])
{
    size_t next_shared = 0;
    mgpo_exact_sum sum;
    for (size_t s = lo < hi ? slot_of_block(st, lo) : 0; lo < hi; s++) {
        mgpo_slot *sl = &st->slots[s];
        size_t k0 = lo - sl->first_block;
        size_t k1 = hi - sl->first_block < sl->block_count ? hi - sl->first_block
                                                            : sl->block_count;
        if (sums && k0 == 0 && k1 == 1 && sl->block_count == 1) {
            /* A slot of one block: the exact sum of one double is that
             * double, so the fixed-point sum (the cost of a small tensor)
             * is skipped, with the same bits. */
            sl->block_total = fn(st, sl, 0, sl->count, arg);
            lo = sl->first_block + 1;
            continue;
        }
        if (sums) mgpo_exact_clear(&sum);
        for (size_t k = k0; k < k1; k++) {
            size_t begin = k * MGPO_BLOCK_FLOATS;
            size_t count = mgpo_block_length(sl, begin);
            double r = fn(st, sl, begin, count, arg);
            if (sums) mgpo_exact_add(&sum, r);
        }
        if (sums) {
            if (k0 == 0 && k1 == sl->block_count) {
                sl->block_total = mgpo_exact_round(&sum);
            } else {
                mgpo_partial *p = &shared[next_shared++];
                p->slot = s;
                p->used = true;
                p->sum = sum;
            }
        }
        lo = sl->first_block + k1;
    }
}

void mgpo_parallel_blocks(mgpo_state *st, mgpo_block_fn fn, void *arg, bool sums)
{
    size_t n = st->block_count;
#ifdef MGPO_WITH_OPENMP
    int threads = mgpo_parallel_threads(st);
    if (threads > 1 && n > 1) {
        mgpo_partial *partials = st->partials;
        for (int i = 0; i < 2 * threads; i++) partials[i].used = false;
#pragma omp parallel num_threads(threads)
        {
            size_t t = (size_t)omp_get_thread_num(), team = (size_t)omp_get_num_threads();
            fenv_t worker;
            mgpo_fp_enter(&worker);
            run_range(st, fn, arg, sums, n * t / team, n * (t + 1) / team, partials + 2 * t);
            mgpo_fp_leave(&worker);
        }
        if (!sums) return;
        /* Shared slots appear in thread order; merge each one's partials. */
        mgpo_exact_sum total;
        size_t slot = st->slot_count;
        for (int i = 0; i < 2 * threads; i++) {
            if (!partials[i].used) continue;
            if (partials[i].slot != slot) {
                if (slot != st->slot_count) st->slots[slot].block_total = mgpo_exact_round(&total);
                slot = partials[i].slot;
                mgpo_exact_clear(&total);
            }
            mgpo_exact_merge(&total, &partials[i].sum);
        }
        if (slot != st->slot_count) st->slots[slot].block_total = mgpo_exact_round(&total);
        return;
    }
#endif
    run_range(st, fn, arg, sums, 0, n, NULL);
}
