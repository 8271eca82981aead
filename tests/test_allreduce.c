/* The all-reduce hook (mgpo_set_allreduce), without MPI.
 *
 * - a recording hook checks that perturb and step call it exactly once, with
 *   the documented counts and this rank's squared norms;
 * - a hook that doubles every value stands for two identical ranks, and must
 *   give the same bits as one state holding both copies;
 * - two threads in lock-step stand for two ZeRO-1 ranks that each hold half
 *   of every tensor, and must give the same bits as one unsharded state
 *   (halves split on the library's reduction blocks, so the sums group alike);
 * - failing, non-summing and NaN-injecting hooks must leave the documented
 *   state behind. */
#define _POSIX_C_SOURCE 200809L /* pthread barriers under -std=c11 */
#include <check.h>

#include "test_util.h"
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mgpo.h"

#define HALF MGPO_BLOCK_FLOATS
#define STEPS 6

/* ---- fixtures ------------------------------------------------------------ */

/* A deterministic "loss" 0.5 * sum a_i (theta_i - target_i)^2 with a drift
 * over steps, so gradients depend on the perturbed parameters.  `index` is
 * the element's position in the unsharded tensor. */
static float target_of(size_t index, int step)
{
    return (float)sin(0.37 * (double)index + 0.1 * step);
}

static void fill_grads(float *g, const float *p, size_t first_index, size_t n, int step)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = first_index + i;
        float a = 0.5f + (float)(k % 7) * 0.25f;
        g[i] = a * (p[i] - target_of(k, step));
    }
}

static void fill_params(float *p, size_t first_index, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (float)cos(0.11 * (double)(first_index + i));
}

static mgpo_config test_config(mgpo_scope scope, double clip)
{
    mgpo_config c = mgpo_config_default();
    c.lr = 1e-2;
    c.weight_decay = 0.01;
    c.rho = 0.05;
    c.scope = scope;
    c.max_grad_norm = clip;
    return c;
}

static mgpo_state *make_state(const mgpo_config *c)
{
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, c, NULL), MGPO_OK);
    return st;
}

static double sum_sq(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

static void assert_close(double got, double want)
{
    ck_assert_msg(fabs(got - want) <= 1e-12 * fabs(want), "%.17g vs %.17g", got, want);
}

/* ---- a recording hook: one rank, so the sum is the identity --------------- */

typedef struct recorder {
    int calls;
    size_t count;
    double values[8];
} recorder;

static int record_hook(double *values, size_t count, void *ctx)
{
    recorder *r = ctx;
    r->calls++;
    r->count = count;
    for (size_t i = 0; i < count && i < 8; i++) r->values[i] = values[i];
    return 0;
}

/* Global scope: one unit (tensor 0, perturbed) plus tensor 1 with perturb
 * off, which counts only toward the clipping total. */
START_TEST(test_calls_global_scope)
{
    enum { N0 = 100, N1 = 30 };
    static float p0[N0], g0[N0], p1[N1], g1[N1];
    fill_params(p0, 0, N0);
    fill_params(p1, N0, N1);
    mgpo_config c = test_config(MGPO_SCOPE_GLOBAL, 0.0);
    mgpo_state *st = make_state(&c);
    mgpo_tensor_options off = mgpo_tensor_options_default();
    off.perturb = 0;
    ck_assert_int_eq(mgpo_add_tensor(st, p0, g0, N0, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, p1, g1, N1, &off, NULL), MGPO_OK);
    recorder r = {0};
    ck_assert_int_eq(mgpo_set_allreduce(st, record_hook, &r), MGPO_OK);

    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK); /* t = 0: nothing to reduce */
    ck_assert_int_eq(r.calls, 0);
    fill_grads(g0, p0, 0, N0, 0);
    fill_grads(g1, p1, N0, N1, 0);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_uint_eq(r.count, 2);
    assert_close(r.values[0], sum_sq(g0, N0));
    assert_close(r.values[1], sum_sq(g0, N0) + sum_sq(g1, N1));

    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    ck_assert_int_eq(r.calls, 2);
    ck_assert_uint_eq(r.count, 1);
    assert_close(r.values[0], sum_sq(mgpo_internal_moment(st, 0, 0), N0));
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK); /* already perturbed */
    ck_assert_int_eq(r.calls, 2);
    ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
    ck_assert_int_eq(r.calls, 2);

    ck_assert_int_eq(mgpo_set_rho(st, 0.0), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK); /* rho 0: plain optimizer */
    ck_assert_int_eq(r.calls, 2);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    ck_assert_int_eq(r.calls, 3);

    ck_assert_int_eq(mgpo_set_allreduce(st, NULL, &r), MGPO_OK);
    ck_assert_int_eq(mgpo_set_rho(st, 0.05), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    ck_assert_int_eq(r.calls, 3);
    mgpo_destroy(st);
}
END_TEST

/* Tensor scope: one value per tensor; a tensor with perturb off keeps a zero
 * unit value but still counts toward the total. */
START_TEST(test_calls_tensor_scope)
{
    enum { N = 50 };
    static float p[3][N], g[3][N];
    mgpo_config c = test_config(MGPO_SCOPE_TENSOR, 0.0);
    mgpo_state *st = make_state(&c);
    mgpo_tensor_options off = mgpo_tensor_options_default();
    off.perturb = 0;
    for (size_t k = 0; k < 3; k++) {
        fill_params(p[k], k * N, N);
        ck_assert_int_eq(mgpo_add_tensor(st, p[k], g[k], N, k == 1 ? &off : NULL, NULL),
                         MGPO_OK);
    }
    recorder r = {0};
    ck_assert_int_eq(mgpo_set_allreduce(st, record_hook, &r), MGPO_OK);
    for (size_t k = 0; k < 3; k++) fill_grads(g[k], p[k], k * N, N, 0);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_uint_eq(r.count, 4);
    assert_close(r.values[0], sum_sq(g[0], N));
    ck_assert(r.values[1] == 0.0);
    assert_close(r.values[2], sum_sq(g[2], N));
    assert_close(r.values[3], sum_sq(g[0], N) + sum_sq(g[1], N) + sum_sq(g[2], N));

    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    ck_assert_int_eq(r.calls, 2);
    ck_assert_uint_eq(r.count, 3);
    assert_close(r.values[0], sum_sq(mgpo_internal_moment(st, 0, 0), N));
    ck_assert(r.values[1] == 0.0);
    assert_close(r.values[2], sum_sq(mgpo_internal_moment(st, 2, 0), N));
    mgpo_destroy(st);
}
END_TEST

/* ---- two identical ranks: the hook doubles -------------------------------- */

static int double_hook(double *values, size_t count, void *ctx)
{
    (void)ctx;
    for (size_t i = 0; i < count; i++) values[i] *= 2.0;
    return 0;
}

/* One rank holding x with a doubling hook is the same as one state holding
 * two copies of x: s + s == 2 * s exactly, and clipping, the EMA and the
 * perturbation all see the doubled norms. */
START_TEST(test_identical_ranks_match_two_copies)
{
    enum { N = 300 };
    static float x[N], gx[N], c0[N], c1[N], g0[N], g1[N];
    fill_params(x, 0, N);
    memcpy(c0, x, sizeof x);
    memcpy(c1, x, sizeof x);
    mgpo_config c = test_config(MGPO_SCOPE_GLOBAL, 0.5); /* clipping active */
    mgpo_state *rank = make_state(&c), *both = make_state(&c);
    ck_assert_int_eq(mgpo_add_tensor(rank, x, gx, N, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_allreduce(rank, double_hook, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(both, c0, g0, N, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(both, c1, g1, N, NULL, NULL), MGPO_OK);
    for (int t = 0; t < STEPS; t++) {
        ck_assert_int_eq(mgpo_perturb(rank), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(both), MGPO_OK);
        ck_assert(memcmp(x, c0, sizeof x) == 0 && memcmp(x, c1, sizeof x) == 0);
        fill_grads(gx, x, 0, N, t);
        fill_grads(g0, c0, 0, N, t);
        fill_grads(g1, c1, 0, N, t);
        ck_assert_int_eq(mgpo_step(rank), MGPO_OK);
        ck_assert_int_eq(mgpo_step(both), MGPO_OK);
        ck_assert(memcmp(x, c0, sizeof x) == 0 && memcmp(x, c1, sizeof x) == 0);
    }
    mgpo_stats a, b;
    ck_assert_int_eq(mgpo_get_stats(rank, &a), MGPO_OK);
    ck_assert_int_eq(mgpo_get_stats(both, &b), MGPO_OK);
    ck_assert_int_eq(a.clipped, 1);
    ck_assert(a.grad_norm == b.grad_norm);
    ck_assert(a.momentum_norm == b.momentum_norm);
    ck_assert(a.perturbation_norm == b.perturbation_norm);
    ck_assert(a.grad_norm_ema == b.grad_norm_ema);
    mgpo_destroy(rank);
    mgpo_destroy(both);
}
END_TEST

/* ---- two sharded ranks on two threads ------------------------------------- */

#define MAX_VALUES 16

/* The shared side of a two-rank all-reduce: each rank publishes its buffer,
 * both add them in rank order, then each writes the sum back. */
typedef struct world {
    pthread_barrier_t barrier;
    double *values[2];
    size_t count[2];
} world;

typedef struct rank_ctx {
    world *w;
    int rank;
} rank_ctx;

static int thread_hook(double *values, size_t count, void *ctx)
{
    rank_ctx *rc = ctx;
    world *w = rc->w;
    w->values[rc->rank] = values;
    w->count[rc->rank] = count;
    pthread_barrier_wait(&w->barrier);
    double sum[MAX_VALUES];
    int ok = w->count[0] == w->count[1] && count <= MAX_VALUES;
    for (size_t i = 0; ok && i < count; i++) sum[i] = w->values[0][i] + w->values[1][i];
    pthread_barrier_wait(&w->barrier); /* both have read both inputs */
    if (!ok) return 1;
    memcpy(values, sum, count * sizeof *values);
    return 0;
}

/* ZeRO-1 layout: every tensor is 2 * HALF floats; rank r owns elements
 * [r * HALF, (r + 1) * HALF) of each and registers only those. */
typedef struct shard_run {
    mgpo_config config;
    size_t tensors;
    rank_ctx ctx;
    float *params, *grads; /* tensors * HALF floats each, tensor-major */
    mgpo_status status;
} shard_run;

static void *run_rank(void *arg)
{
    shard_run *sr = arg;
    mgpo_state *st = NULL;
    mgpo_status s = mgpo_create(&st, &sr->config, NULL);
    for (size_t k = 0; s == MGPO_OK && k < sr->tensors; k++)
        s = mgpo_add_tensor(st, sr->params + k * HALF, sr->grads + k * HALF, HALF, NULL,
                            NULL);
    if (s == MGPO_OK) s = mgpo_set_allreduce(st, thread_hook, &sr->ctx);
    for (int t = 0; s == MGPO_OK && t < STEPS; t++) {
        s = mgpo_perturb(st);
        for (size_t k = 0; s == MGPO_OK && k < sr->tensors; k++)
            fill_grads(sr->grads + k * HALF, sr->params + k * HALF,
                       k * 2 * HALF + (size_t)sr->ctx.rank * HALF, HALF, t);
        if (s == MGPO_OK) s = mgpo_step(st);
    }
    mgpo_destroy(st);
    sr->status = s;
    return NULL;
}

/* Runs the two ranks and an unsharded reference; the parameters must agree
 * bit for bit. */
static void check_sharded(mgpo_scope scope, double clip, size_t tensors)
{
    size_t n = tensors * 2 * HALF;
    float *ref = malloc(n * sizeof *ref), *ref_g = malloc(n * sizeof *ref_g);
    float *shard_p[2], *shard_g[2];
    ck_assert(ref && ref_g);
    for (size_t k = 0; k < tensors; k++) fill_params(ref + k * 2 * HALF, k * 2 * HALF, 2 * HALF);

    mgpo_config c = test_config(scope, clip);
    mgpo_state *st = make_state(&c);
    for (size_t k = 0; k < tensors; k++)
        ck_assert_int_eq(mgpo_add_tensor(st, ref + k * 2 * HALF, ref_g + k * 2 * HALF,
                                         2 * HALF, NULL, NULL), MGPO_OK);

    world w;
    ck_assert_int_eq(pthread_barrier_init(&w.barrier, NULL, 2), 0);
    shard_run runs[2];
    pthread_t threads[2];
    for (int r = 0; r < 2; r++) {
        shard_p[r] = malloc(tensors * HALF * sizeof(float));
        shard_g[r] = malloc(tensors * HALF * sizeof(float));
        ck_assert(shard_p[r] && shard_g[r]);
        for (size_t k = 0; k < tensors; k++)
            memcpy(shard_p[r] + k * HALF, ref + k * 2 * HALF + (size_t)r * HALF,
                   HALF * sizeof(float));
        runs[r] = (shard_run){c, tensors, {&w, r}, shard_p[r], shard_g[r], MGPO_OK};
        ck_assert_int_eq(pthread_create(&threads[r], NULL, run_rank, &runs[r]), 0);
    }

    for (int t = 0; t < STEPS; t++) {
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        for (size_t k = 0; k < tensors; k++)
            fill_grads(ref_g + k * 2 * HALF, ref + k * 2 * HALF, k * 2 * HALF, 2 * HALF, t);
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    }
    mgpo_stats stats;
    ck_assert_int_eq(mgpo_get_stats(st, &stats), MGPO_OK);
    ck_assert_int_eq(stats.clipped, clip > 0.0);

    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(pthread_join(threads[r], NULL), 0);
        ck_assert_int_eq(runs[r].status, MGPO_OK);
        for (size_t k = 0; k < tensors; k++)
            ck_assert(memcmp(shard_p[r] + k * HALF, ref + k * 2 * HALF + (size_t)r * HALF,
                             HALF * sizeof(float)) == 0);
        free(shard_p[r]);
        free(shard_g[r]);
    }
    pthread_barrier_destroy(&w.barrier);
    mgpo_destroy(st);
    free(ref);
    free(ref_g);
}

/* Global scope with clipping: each unit and the total are b0 + b1 on both
 * sides. */
START_TEST(test_sharded_global_scope_bitwise)
{
    check_sharded(MGPO_SCOPE_GLOBAL, 1.0, 1);
}
END_TEST

/* Tensor scope, same tensors registered in the same order on both ranks:
 * each unit sums its two halves.  (Without clipping: the total over several
 * tensors groups its block sums differently, so it agrees only to
 * rounding.) */
START_TEST(test_sharded_tensor_scope_bitwise)
{
    check_sharded(MGPO_SCOPE_TENSOR, 0.0, 3);
}
END_TEST

/* ---- hooks that fail or misbehave ---------------------------------------- */

typedef enum misbehaviour { FAIL, ZERO, NAN_FIRST, NAN_LAST } misbehaviour;

static int bad_hook(double *values, size_t count, void *ctx)
{
    switch (*(const misbehaviour *)ctx) {
    case FAIL: return -1;
    case ZERO: memset(values, 0, count * sizeof *values); return 0;
    case NAN_FIRST: values[0] = NAN; return 0;          /* another rank's NaN */
    case NAN_LAST: values[count - 1] = NAN; return 0;
    }
    return 0;
}

typedef struct snapshot {
    float params[64], m[64], v[64];
    mgpo_stats stats;
    int perturbed;
} snapshot;

static void take(mgpo_state *st, const float *p, snapshot *s)
{
    memset(s, 0, sizeof *s);
    memcpy(s->params, p, sizeof s->params);
    memcpy(s->m, mgpo_internal_moment(st, 0, 0), sizeof s->m);
    memcpy(s->v, mgpo_internal_moment(st, 0, 1), sizeof s->v);
    ck_assert_int_eq(mgpo_get_stats(st, &s->stats), MGPO_OK);
    ck_assert_int_eq(mgpo_is_perturbed(st, &s->perturbed), MGPO_OK);
}

static void assert_same(const snapshot *a, const snapshot *b)
{
    ck_assert(memcmp(a->params, b->params, sizeof a->params) == 0);
    ck_assert(memcmp(a->m, b->m, sizeof a->m) == 0);
    ck_assert(memcmp(a->v, b->v, sizeof a->v) == 0);
    ck_assert_int_eq(a->perturbed, b->perturbed);
    ck_assert_uint_eq(a->stats.step, b->stats.step);
    ck_assert_uint_eq(a->stats.skipped_steps, b->stats.skipped_steps);
    ck_assert(a->stats.grad_norm == b->stats.grad_norm);
    ck_assert(a->stats.grad_norm_ema == b->stats.grad_norm_ema);
    ck_assert(a->stats.momentum_norm == b->stats.momentum_norm);
}

/* A state after one good step, so that perturb has work to do. */
static mgpo_state *stepped_state(float *p, float *g, size_t n)
{
    mgpo_config c = test_config(MGPO_SCOPE_GLOBAL, 0.0);
    mgpo_state *st = make_state(&c);
    fill_params(p, 0, n);
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, n, NULL, NULL), MGPO_OK);
    fill_grads(g, p, 0, n, 0);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    fill_grads(g, p, 0, n, 1);
    return st;
}

/* Failing (nonzero return) and non-summing (result below the local value)
 * hooks: perturb and step return MGPO_ERR_ALLREDUCE and change nothing, clean
 * or perturbed. */
START_TEST(test_bad_hook_changes_nothing)
{
    static const misbehaviour kinds[] = {FAIL, ZERO};
    for (size_t k = 0; k < 2; k++) {
        float p[64], g[64];
        mgpo_state *st = stepped_state(p, g, 64);
        misbehaviour how = kinds[k];
        snapshot before, after;
        ck_assert_int_eq(mgpo_set_allreduce(st, bad_hook, &how), MGPO_OK);
        take(st, p, &before);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_ERR_ALLREDUCE);
        take(st, p, &after);
        assert_same(&before, &after);
        ck_assert_int_eq(mgpo_step(st), MGPO_ERR_ALLREDUCE);
        take(st, p, &after);
        assert_same(&before, &after);

        ck_assert_int_eq(mgpo_set_allreduce(st, NULL, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        ck_assert_int_eq(mgpo_set_allreduce(st, bad_hook, &how), MGPO_OK);
        take(st, p, &before);
        ck_assert_int_eq(before.perturbed, 1);
        ck_assert_int_eq(mgpo_step(st), MGPO_ERR_ALLREDUCE);
        take(st, p, &after);
        assert_same(&before, &after); /* still perturbed, same bits */
        mgpo_destroy(st);
    }
}
END_TEST

/* A NaN arriving from another rank: step skips exactly as for a local NaN
 * (restored, skipped +1, t unchanged); perturb skips the unit. */
START_TEST(test_remote_nan_skips)
{
    float p[64], g[64];
    mgpo_state *st = stepped_state(p, g, 64);
    misbehaviour how = NAN_FIRST;
    snapshot clean, after;
    take(st, p, &clean);
    ck_assert_int_eq(mgpo_set_allreduce(st, bad_hook, &how), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    take(st, p, &after);
    ck_assert_int_eq(after.perturbed, 0);
    ck_assert(memcmp(clean.params, after.params, sizeof clean.params) == 0);

    ck_assert_int_eq(mgpo_set_allreduce(st, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    how = NAN_LAST;
    ck_assert_int_eq(mgpo_set_allreduce(st, bad_hook, &how), MGPO_OK);
    ck_assert_int_eq(mgpo_step(st), MGPO_ERR_NONFINITE_GRADIENT);
    take(st, p, &after);
    ck_assert_int_eq(after.perturbed, 0);
    ck_assert(memcmp(clean.params, after.params, sizeof clean.params) == 0);
    ck_assert(memcmp(clean.m, after.m, sizeof clean.m) == 0);
    ck_assert_uint_eq(after.stats.step, 1);
    ck_assert_uint_eq(after.stats.skipped_steps, 1);
    mgpo_destroy(st);
}
END_TEST

/* A local NaN the hook turned into a finite number: the hook dropped this
 * rank's value, which is reported instead of stepping. */
START_TEST(test_hook_dropping_local_nan_fails)
{
    float p[64], g[64];
    mgpo_state *st = stepped_state(p, g, 64);
    misbehaviour how = ZERO;
    g[5] = NAN;
    ck_assert_int_eq(mgpo_set_allreduce(st, bad_hook, &how), MGPO_OK);
    ck_assert_int_eq(mgpo_step(st), MGPO_ERR_ALLREDUCE);
    mgpo_stats s;
    ck_assert_int_eq(mgpo_get_stats(st, &s), MGPO_OK);
    ck_assert_uint_eq(s.skipped_steps, 0);
    ck_assert_uint_eq(s.step, 1);
    mgpo_destroy(st);
}
END_TEST

START_TEST(test_set_allreduce_null_state)
{
    ck_assert_int_eq(mgpo_set_allreduce(NULL, double_hook, NULL), MGPO_ERR_NULL_ARGUMENT);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("allreduce");
    TCase *tc = tcase_create("hook");
    tcase_add_test(tc, test_calls_global_scope);
    tcase_add_test(tc, test_calls_tensor_scope);
    tcase_add_test(tc, test_identical_ranks_match_two_copies);
    tcase_add_test(tc, test_sharded_global_scope_bitwise);
    tcase_add_test(tc, test_sharded_tensor_scope_bitwise);
    tcase_add_test(tc, test_bad_hook_changes_nothing);
    tcase_add_test(tc, test_remote_nan_skips);
    tcase_add_test(tc, test_hook_dropping_local_nan_fails);
    tcase_add_test(tc, test_set_allreduce_null_state);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
