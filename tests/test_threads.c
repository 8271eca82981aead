/* Results do not depend on the thread count: after many MGPO iterations the
 * parameters, moments and statistics are bitwise identical for 1, 2 and 3
 * threads, for AdamW and SGD, global and per-tensor scope.  Built without
 * OpenMP the library ignores num_threads; the test still runs and says so. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>

#include "perf_model.h"
#include "test_util.h"

/* Several blocks per tensor with odd tails, a tiny tensor and an exact block,
 * so static schedules over 2 and 3 threads cut the work differently. */
static const size_t sizes[] = {3 * MGPO_BLOCK_FLOATS + 17, 2 * MGPO_BLOCK_FLOATS - 1, 5,
                               10001, MGPO_BLOCK_FLOATS};
#define TENSORS (sizeof sizes / sizeof sizes[0])
#define STEPS 100

typedef struct run_result {
    pm_model model;
    float *m[TENSORS], *v[TENSORS];
    mgpo_stats stats;
    mgpo_unit_stats units[TENSORS];
    size_t unit_count;
} run_result;

static mgpo_config make_config(int variant, int threads)
{
    mgpo_config c = mgpo_config_default();
    c.num_threads = threads;
    c.lr = 1e-2;
    c.rho = 0.05;
    if (variant & 1) {
        c.optimizer = MGPO_OPTIMIZER_SGD;
        c.nesterov = 1;
        c.weight_decay = 1e-3;
    } else {
        c.weight_decay = 0.01;
    }
    if (variant & 2) c.scope = MGPO_SCOPE_TENSOR;
    /* The random direction: generated per block, whichever thread runs it. */
    if (variant & 4) {
        c.direction = MGPO_DIRECTION_RANDOM;
        c.seed = 2024;
    }
    /* Clipping is global over all tensors: engage it so its reduction is
     * covered too. */
    c.max_grad_norm = 20.0;
    return c;
}

static float *copy_floats(const float *src, size_t n)
{
    float *dst = malloc(n * sizeof *dst);
    ck_assert_ptr_nonnull(dst);
    memcpy(dst, src, n * sizeof *dst);
    return dst;
}

static void run(int variant, int threads, run_result *r)
{
    memset(r, 0, sizeof *r);
    pm_init(&r->model, sizes, TENSORS, 1);
    mgpo_config c = make_config(variant, threads);
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    pm_register(&r->model, st);
    pm_train(&r->model, st, 0, STEPS);
    /* End perturbed, so the perturb pass's output is compared too. */
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    for (size_t t = 0; t < TENSORS; t++) {
        r->m[t] = copy_floats(mgpo_internal_moment(st, t, 0), sizes[t]);
        const float *v = mgpo_internal_moment(st, t, 1);
        r->v[t] = v ? copy_floats(v, sizes[t]) : NULL;
    }
    ck_assert_int_eq(mgpo_get_stats(st, &r->stats), MGPO_OK);
    ck_assert_int_eq(mgpo_get_unit_count(st, &r->unit_count), MGPO_OK);
    for (size_t u = 0; u < r->unit_count; u++)
        ck_assert_int_eq(mgpo_get_unit_stats(st, u, &r->units[u]), MGPO_OK);
    ck_assert_uint_eq(r->stats.step, STEPS);
    ck_assert_int_eq(r->stats.perturbed, 1);
    mgpo_destroy(st);
}

static void free_result(run_result *r)
{
    for (size_t t = 0; t < TENSORS; t++) {
        free(r->m[t]);
        free(r->v[t]);
    }
    pm_free(&r->model, 1);
}

#define ASSERT_SAME_BITS(a, b) ck_assert_int_eq(memcmp(&(a), &(b), sizeof(a)), 0)

static void assert_identical(const run_result *a, const run_result *b)
{
    for (size_t t = 0; t < TENSORS; t++) {
        size_t bytes = sizes[t] * sizeof(float);
        ck_assert_msg(memcmp(a->model.params[t], b->model.params[t], bytes) == 0,
                      "params of tensor %zu differ", t);
        ck_assert_msg(memcmp(a->m[t], b->m[t], bytes) == 0, "m of tensor %zu differs", t);
        ck_assert(!a->v[t] == !b->v[t]);
        if (a->v[t]) ck_assert_msg(memcmp(a->v[t], b->v[t], bytes) == 0, "v of %zu differs", t);
    }
    ASSERT_SAME_BITS(a->stats.grad_norm, b->stats.grad_norm);
    ASSERT_SAME_BITS(a->stats.grad_norm_ema, b->stats.grad_norm_ema);
    ASSERT_SAME_BITS(a->stats.momentum_norm, b->stats.momentum_norm);
    ASSERT_SAME_BITS(a->stats.perturbation_norm, b->stats.perturbation_norm);
    ck_assert_int_eq(a->stats.clipped, b->stats.clipped);
    ck_assert_uint_eq(a->unit_count, b->unit_count);
    for (size_t u = 0; u < a->unit_count; u++) {
        ASSERT_SAME_BITS(a->units[u].grad_norm, b->units[u].grad_norm);
        ASSERT_SAME_BITS(a->units[u].grad_norm_ema, b->units[u].grad_norm_ema);
        ASSERT_SAME_BITS(a->units[u].momentum_norm, b->units[u].momentum_norm);
        ASSERT_SAME_BITS(a->units[u].coefficient, b->units[u].coefficient);
    }
}

static const char *const variant_names[] = {
    "AdamW global",        "SGD global",        "AdamW tensor",        "SGD tensor",
    "AdamW global random", "SGD global random", "AdamW tensor random", "SGD tensor random"};

START_TEST(test_bitwise_across_threads)
{
    int variant = _i;
    run_result serial, other;
    run(variant, 1, &serial);
    /* The run must have moved: a frozen model would pass trivially. */
    ck_assert_float_ne(serial.model.params[0][0], 0.5f * pm_noise(1, 0, 0));
    ck_assert(serial.stats.perturbation_norm > 0.0);
    for (int threads = 2; threads <= 3; threads++) {
        run(variant, threads, &other);
        assert_identical(&serial, &other);
        free_result(&other);
    }
    free_result(&serial);
    printf("threads: %s bitwise identical for 1, 2, 3 threads after %d steps\n",
           variant_names[variant], STEPS);
}
END_TEST

/* ---- the work really is spread over the requested threads ----------------- */

#define MAX_BLOCKS 64
typedef struct block_owners {
    pthread_t owner[MAX_BLOCKS];
} block_owners;

static double record_owner(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                           void *arg)
{
    (void)st;
    (void)count;
    ((block_owners *)arg)->owner[sl->first_block + begin / MGPO_BLOCK_FLOATS] = pthread_self();
    return 0.0;
}

static size_t distinct_owners(const block_owners *o, size_t blocks)
{
    size_t distinct = 0;
    for (size_t b = 0; b < blocks; b++) {
        bool seen = false;
        for (size_t a = 0; a < b && !seen; a++) seen = pthread_equal(o->owner[a], o->owner[b]);
        if (!seen) distinct++;
    }
    return distinct;
}

START_TEST(test_threads_used)
{
    pm_model md;
    pm_init(&md, sizes, TENSORS, 0);
    for (int threads = 1; threads <= 3; threads++) {
        mgpo_config c = make_config(0, threads);
        mgpo_state *st = NULL;
        ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
        pm_register(&md, st);
        ck_assert_uint_le(st->block_count, MAX_BLOCKS);
        ck_assert_uint_ge(st->block_count, 3);
        block_owners owners;
        mgpo_parallel_blocks(st, record_owner, &owners, false);
        size_t used = distinct_owners(&owners, st->block_count);
        int expected = mgpo_parallel_threads(st);
#ifdef MGPO_TEST_OPENMP
        ck_assert_int_eq(expected, threads);
#else
        ck_assert_int_eq(expected, 1);
#endif
        ck_assert_uint_eq(used, (size_t)expected);
        if (threads == 3)
            printf("threads: %s; num_threads=3 ran %zu blocks on %zu threads\n",
#ifdef MGPO_TEST_OPENMP
                   "built with OpenMP",
#else
                   "built WITHOUT OpenMP: num_threads is ignored, every run is serial",
#endif
                   st->block_count, used);
        mgpo_destroy(st);
    }
    pm_free(&md, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("determinism");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_bitwise_across_threads, 0, 8);
    tcase_add_test(tc, test_threads_used);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
