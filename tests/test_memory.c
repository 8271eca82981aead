/* Memory the library owns per parameter, and the low-memory restore mode.
 *
 * A counting allocator measures every byte the state holds: exact restore
 * keeps m, v and a backup of the perturbed tensors (12 B per parameter for
 * AdamW), low-memory restore keeps no backup (8 B), plus a fixed amount of
 * bookkeeping that does not grow with the parameter count.  Low-memory
 * restore is
 * not bit-exact; the tests bound its error after one restore and its drift
 * from exact mode after 1000 iterations. */
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "perf_model.h"
#include "test_util.h"

typedef struct counting {
    size_t live, peak, calls;
} counting;

static void *count_alloc(void *ctx, size_t size)
{
    counting *c = ctx;
    void *p = malloc(size);
    if (p) {
        c->live += size;
        c->calls++;
        if (c->live > c->peak) c->peak = c->live;
    }
    return p;
}

static void count_free(void *ctx, void *ptr, size_t size)
{
    counting *c = ctx;
    c->live -= size;
    free(ptr);
}

/* Library-owned bytes for a model of three tensors (`scale` times the
 * base sizes), and the allocations made during 3 iterations (must be none:
 * nothing is allocated after setup). */
static const size_t base_sizes[] = {60000, 1000, 40003};

static size_t state_bytes(mgpo_optimizer opt, mgpo_restore_mode mode, mgpo_optimizer_mode owner,
                          size_t scale, size_t *params, size_t *extra_calls)
{
    /* Tensor 1 stays small (and is not perturbed, so it has no backup). */
    const size_t sizes[] = {base_sizes[0] * scale, base_sizes[1], base_sizes[2] * scale};
    pm_model md;
    pm_init(&md, sizes, 3, 0);
    counting c = {0, 0, 0};
    mgpo_allocator a = {count_alloc, count_free, &c};
    mgpo_config cfg = mgpo_config_default();
    cfg.optimizer = opt;
    cfg.restore_mode = mode;
    cfg.optimizer_mode = owner;
    cfg.num_threads = 2; /* the per-thread partial sums are counted too */
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &cfg, &a), MGPO_OK);
    pm_register(&md, st);
    size_t setup_calls = c.calls, setup_live = c.live;
    pm_train(&md, st, 0, 3);
    *extra_calls = c.calls - setup_calls;
    ck_assert_uint_eq(c.live, setup_live);
    mgpo_destroy(st);
    ck_assert_uint_eq(c.live, 0);
    pm_free(&md, 0);
    *params = sizes[0] + sizes[1] + sizes[2];
    return setup_live;
}

START_TEST(test_bytes_per_parameter)
{
    struct {
        mgpo_optimizer opt;
        mgpo_restore_mode mode;
        mgpo_optimizer_mode owner;
        size_t floats; /* state floats per parameter of a perturbed tensor */
        const char *name, *parts;
    } cases[] = {
        {MGPO_OPTIMIZER_ADAMW, MGPO_RESTORE_EXACT, MGPO_OPTIMIZER_INTEGRATED, 3, "AdamW exact", "m, v, backup"},
        {MGPO_OPTIMIZER_ADAMW, MGPO_RESTORE_LOW_MEMORY, MGPO_OPTIMIZER_INTEGRATED, 2,
         "AdamW low-memory", "m, v"},
        {MGPO_OPTIMIZER_SGD, MGPO_RESTORE_EXACT, MGPO_OPTIMIZER_INTEGRATED, 2, "SGD exact", "m, backup"},
        {MGPO_OPTIMIZER_SGD, MGPO_RESTORE_LOW_MEMORY, MGPO_OPTIMIZER_INTEGRATED, 1,
         "SGD low-memory", "m"},
        /* The caller's optimizer owns m and v: only the restore data. */
        {MGPO_OPTIMIZER_ADAMW, MGPO_RESTORE_EXACT, MGPO_OPTIMIZER_EXTERNAL, 1, "external exact", "backup"},
        {MGPO_OPTIMIZER_ADAMW, MGPO_RESTORE_LOW_MEMORY, MGPO_OPTIMIZER_EXTERNAL, 0,
         "external low-memory", "nothing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t fixed[2], params = 0;
        for (size_t k = 0; k < 2; k++) {
            size_t calls, scale = k ? 10 : 1;
            size_t bytes = state_bytes(cases[i].opt, cases[i].mode, cases[i].owner, scale,
                                       &params, &calls);
            ck_assert_uint_eq(calls, 0);
            /* The unperturbed tensor has no backup in exact mode. */
            size_t floats = cases[i].floats * params;
            if (cases[i].mode == MGPO_RESTORE_EXACT) floats -= base_sizes[1];
            ck_assert_uint_ge(bytes, 4 * floats);
            fixed[k] = bytes - 4 * floats;
            if (k)
                printf("memory: %-19s %.4f bytes of library state per parameter "
                       "(%zu parameters: %zu B of %s, plus %zu B fixed)\n",
                       cases[i].name, (double)bytes / (double)params, params, 4 * floats,
                       cases[i].parts, fixed[k]);
        }
        /* Beyond the per-parameter buffers the state holds only bookkeeping
         * per state, tensor and thread: the same bytes for a model 10 times
         * larger with the same tensors (no per-block tables). */
        ck_assert_msg(fixed[0] == fixed[1], "%s: fixed bytes %zu at 1x, %zu at 10x",
                      cases[i].name, fixed[0], fixed[1]);
        ck_assert_uint_le(fixed[1], 4096);
    }
}
END_TEST

static const size_t drift_sizes[] = {3 * MGPO_BLOCK_FLOATS + 11, 77, 2500};

static mgpo_state *drift_state(pm_model *md, mgpo_restore_mode mode, mgpo_optimizer opt)
{
    pm_init(md, drift_sizes, 3, 0);
    mgpo_config c = mgpo_config_default();
    c.optimizer = opt;
    c.restore_mode = mode;
    c.lr = 1e-3;
    c.rho = 0.05;
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    pm_register(md, st);
    return st;
}

/* One restore in low-memory mode is off by at most one rounding of the
 * add and one of the subtract: |theta'' - theta| <= ulp(max |.|). */
/* A slot whose arrays are 4 MiB or more (AdamW exact: m, v and the restore
 * range) puts a page and a cache line (4160 bytes) between them; a smaller
 * one packs them (docs/api.md, the bytes-per-parameter table). */
static size_t one_tensor_bytes(size_t n)
{
    counting c = {0, 0, 0};
    mgpo_allocator a = {count_alloc, count_free, &c};
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, &a), MGPO_OK);
    size_t before = c.live;
    float *p = calloc(n, sizeof *p), *g = calloc(n, sizeof *g);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, n, NULL, NULL), MGPO_OK);
    size_t bytes = c.live - before;
    mgpo_destroy(st);
    free(p);
    free(g);
    return bytes;
}

START_TEST(test_large_slot_staggered)
{
    const size_t large = (size_t)1 << 20, small = large - 16; /* 4 MiB and 64 bytes less */
    size_t got_large = one_tensor_bytes(large), got_small = one_tensor_bytes(small);
    /* Three arrays, two gaps, one slot record and alignment slack. */
    ck_assert_uint_ge(got_large, 3 * 4 * large + 2 * 4160);
    ck_assert_uint_lt(got_large, 3 * 4 * large + 2 * 4160 + 2048);
    ck_assert_uint_ge(got_small, 3 * 4 * small);
    ck_assert_uint_lt(got_small, 3 * 4 * small + 2048);
}
END_TEST

START_TEST(test_low_memory_single_restore)
{
    pm_model md;
    mgpo_state *st = drift_state(&md, MGPO_RESTORE_LOW_MEMORY, MGPO_OPTIMIZER_ADAMW);
    pm_train(&md, st, 0, 5);
    size_t n = md.count[0];
    float *clean = malloc(n * sizeof *clean), *perturbed = malloc(n * sizeof *perturbed);
    ck_assert_ptr_nonnull(clean);
    ck_assert_ptr_nonnull(perturbed);
    memcpy(clean, md.params[0], n * sizeof *clean);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    memcpy(perturbed, md.params[0], n * sizeof *perturbed);
    ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
    size_t moved = 0, inexact = 0;
    for (size_t i = 0; i < n; i++) {
        float r = md.params[0][i];
        float big = fmaxf(fmaxf(fabsf(clean[i]), fabsf(perturbed[i])), fabsf(r));
        ck_assert_float_le(fabsf(r - clean[i]), FLT_EPSILON * big);
        moved += perturbed[i] != clean[i];
        inexact += r != clean[i];
    }
    ck_assert_uint_gt(moved, n / 2);
    printf("memory: low-memory restore: %zu of %zu values not bit-exact after one restore\n",
           inexact, n);
    free(clean);
    free(perturbed);
    mgpo_destroy(st);
    pm_free(&md, 0);
}
END_TEST

/* 1000 iterations in both modes from the same start with the same data. */
START_TEST(test_low_memory_drift)
{
    mgpo_optimizer opt = _i ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW;
    pm_model exact, low;
    mgpo_state *se = drift_state(&exact, MGPO_RESTORE_EXACT, opt);
    mgpo_state *sl = drift_state(&low, MGPO_RESTORE_LOW_MEMORY, opt);
    pm_train(&exact, se, 0, 1000);
    pm_train(&low, sl, 0, 1000);
    double max_diff = 0.0, max_abs = 0.0, sum_sq_diff = 0.0, sum_sq = 0.0;
    size_t total = 0;
    for (size_t t = 0; t < exact.tensors; t++)
        for (size_t i = 0; i < exact.count[t]; i++) {
            double a = exact.params[t][i], b = low.params[t][i];
            max_diff = fmax(max_diff, fabs(a - b));
            max_abs = fmax(max_abs, fabs(a));
            sum_sq_diff += (a - b) * (a - b);
            sum_sq += a * a;
            total++;
        }
    /* Training moved the parameters far more than the drift. */
    double moved = 0.0;
    for (size_t i = 0; i < exact.count[0]; i++)
        moved = fmax(moved, fabs(exact.params[0][i] - 0.5f * pm_noise(1, 0, i)));
    double rel_rms = sqrt(sum_sq_diff / sum_sq);
    printf("memory: low-memory vs exact after 1000 %s iterations: max |diff| %.3g "
           "(max |theta| %.3g, moved %.3g), relative RMS %.3g\n",
           _i ? "SGD" : "AdamW", max_diff, max_abs, moved, rel_rms);
    /* Each restore errs by at most ~1 ulp of |theta| (the single-restore
     * test); 1000 of them give at most ~1000 ulp = 1.2e-4 * max|theta| if
     * they never cancel.  The noisy quadratic loss is contracting, so the
     * drift must stay under that worst case. */
    ck_assert(max_diff <= 1000.0 * FLT_EPSILON * max_abs);
    ck_assert(rel_rms <= 1e-5);
    ck_assert(moved > 1000.0 * max_diff);
    mgpo_destroy(se);
    mgpo_destroy(sl);
    pm_free(&exact, 0);
    pm_free(&low, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("memory");
    TCase *tc = tcase_create("memory");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_bytes_per_parameter);
    tcase_add_test(tc, test_large_slot_staggered);
    tcase_add_test(tc, test_low_memory_single_restore);
    tcase_add_loop_test(tc, test_low_memory_drift, 0, 2);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
