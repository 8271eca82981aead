/*
 * Golden tests: libmgpo against PyTorch.
 *
 * tests/golden/generate.py ran every case with torch.optim.AdamW / SGD (and,
 * for rho > 0, MGPO written in torch operations after the numerical
 * contract) and stored the configuration, the inputs and the results in
 * tests/golden/<case>.bin (format: tests/golden/README.md).  This program
 * replays each case through the public API:
 *
 *     for t: mgpo_set_lr(lr[t]); mgpo_perturb; g = a*(p - c) + noise(t); mgpo_step
 *
 * and compares the final parameters, m and v, the perturbed parameters of
 * the last step, and every per-step statistic.  The gradient depends on the
 * (perturbed) parameters, so the perturbation shapes the whole trajectory;
 * it is computed with the same float32 operations as the generator, so both
 * sides get identical gradient bits for identical parameters.  What remains
 * is float32 rounding inside the optimizers (torch uses fused multiply-adds
 * in its vector kernels, the library does not), hence the tolerances below.
 *
 * Per case the largest errors are printed to stderr, whether or not it
 * passes, so that the margins can be watched.
 */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_io.h"
#include "mgpo.h"
#include "test_util.h"

#ifndef MGPO_GOLDEN_DIR
#error "define MGPO_GOLDEN_DIR as the directory holding the golden .bin files"
#endif

/* Test hook of the static library (lib/internal.h): moment `which` (0 = m,
 * 1 = v) of tensor `index`, `count` floats. */
const float *mgpo_internal_moment(const mgpo_state *st, size_t index, int which);

/* Tolerance: |got - want| <= RTOL * |want| + floor, floor ATOL for params,
 * m, v and the norms; the perturbed parameters and c_U get ATOL carried
 * through their formulas (see the checks and tests/golden/README.md).  With
 * the library as built, float32 rounding uses at most ~60 % of it. */
#define RTOL 1e-6
#define ATOL 1e-7

/* Must match tests/golden/generate.py (CASES). */
static const char *const case_names[] = {
    "adamw_default",
    "adamw_decay",
    "adamw_betas",
    "adamw_clip",
    "adamw_cosine",
    "sgd_momentum",
    "sgd_dampening",
    "sgd_nesterov",
    "sgd_decay",
    "sgd_no_momentum",
    "sgd_clip_cosine",
    "mgpo_adamw_lookahead_global",
    "mgpo_adamw_ascent_global",
    "mgpo_adamw_lookahead_tensor",
    "mgpo_adamw_ascent_tensor",
    "mgpo_sgd_lookahead_global",
    "mgpo_sgd_ascent_global",
    "mgpo_sgd_lookahead_tensor",
    "mgpo_sgd_ascent_tensor",
    "mgpo_adamw_apn_off_global",
    "mgpo_sgd_apn_off_tensor",
    "mgpo_adamw_random_global",
    "mgpo_sgd_random_tensor",
    "mgpo_adamw_random_apn_off_tensor",
};
#define CASE_COUNT (sizeof case_names / sizeof case_names[0])

/* ---- The golden file ------------------------------------------------------ */

#define GOLDEN_VERSION 2u
#define FLAG_HAS_M 1u
#define FLAG_HAS_V 2u
#define FLAG_HAS_THETA_TILDE 4u
#define FLAG_CLAMP_HIT 8u

typedef struct golden_tensor {
    size_t count;
    int perturb;
    unsigned noise_shift;
    mgpo_tensor_options options;
    uint64_t grad0_hash;                    /* FNV-1a of the step-0 gradient bits */
    float *p0, *a, *c;                      /* inputs */
    float *params, *m, *v, *theta_tilde;    /* expected; m, v, theta_tilde may be NULL */
} golden_tensor;

typedef struct golden_case {
    char name[64];
    mgpo_config config;
    uint32_t flags, seed, noise_halving;
    size_t tensor_count, step_count, unit_count;
    double *lr;                  /* [step_count] */
    golden_tensor *tensors;      /* [tensor_count] */
    double *grad_norm;           /* [step_count], all tensors, raw */
    int *clipped;                /* [step_count] */
    golden_unit_step *units;     /* [step_count][unit_count] */
} golden_case;

static void golden_free(golden_case *gc)
{
    if (gc->tensors) {
        for (size_t k = 0; k < gc->tensor_count; k++) {
            golden_tensor *t = &gc->tensors[k];
            free(t->p0);
            free(t->a);
            free(t->c);
            free(t->params);
            free(t->m);
            free(t->v);
            free(t->theta_tilde);
        }
    }
    free(gc->tensors);
    free(gc->lr);
    free(gc->grad_norm);
    free(gc->clipped);
    free(gc->units);
    memset(gc, 0, sizeof *gc);
}

/* Parses a golden file into *gc.  Returns NULL or a static error message. */
static const char *golden_load(const char *path, golden_case *gc)
{
    memset(gc, 0, sizeof *gc);
    size_t size = 0;
    unsigned char *data = golden_read_file(path, &size);
    if (!data) return "cannot read the file (run tests/golden/generate.py?)";
    golden_reader r = {data, data + size, 1};
    const char *err = NULL;

    golden_header h;
    err = golden_read_header(&r, "MGPOGOLD", GOLDEN_VERSION, &h);
    if (err) goto done;
    memcpy(gc->name, h.name, sizeof gc->name);
    gc->config = h.config;
    gc->flags = h.flags;
    gc->seed = h.seed;
    gc->noise_halving = h.noise_halving;
    gc->tensor_count = h.tensor_count;
    gc->step_count = h.step_count;
    gc->unit_count = h.unit_count;

    gc->lr = malloc(gc->step_count * sizeof *gc->lr);
    gc->tensors = calloc(gc->tensor_count, sizeof *gc->tensors);
    gc->grad_norm = malloc(gc->step_count * sizeof *gc->grad_norm);
    gc->clipped = malloc(gc->step_count * sizeof *gc->clipped);
    gc->units = malloc(gc->step_count * gc->unit_count * sizeof *gc->units);
    if (!gc->lr || !gc->tensors || !gc->grad_norm || !gc->clipped || !gc->units) {
        err = "out of memory";
        goto done;
    }
    for (size_t t = 0; t < gc->step_count; t++) gc->lr[t] = golden_f64(&r);
    for (size_t k = 0; k < gc->tensor_count; k++) {
        golden_tensor *ts = &gc->tensors[k];
        ts->count = golden_u32(&r);
        ts->perturb = golden_u32(&r) != 0;
        ts->noise_shift = golden_u32(&r);
        (void)golden_u32(&r); /* reserved */
        ts->options.lr_scale = golden_f64(&r);
        ts->options.weight_decay_scale = golden_f64(&r);
        ts->grad0_hash = (uint64_t)golden_u32(&r);
        ts->grad0_hash |= (uint64_t)golden_u32(&r) << 32;
        ts->options.perturb = ts->perturb;
        if (ts->count == 0 || ts->count > GOLDEN_MAX_COUNT || ts->noise_shift > 64) {
            err = "bad tensor table";
            goto done;
        }
    }
    for (size_t k = 0; k < gc->tensor_count; k++) {
        golden_tensor *ts = &gc->tensors[k];
        ts->p0 = golden_f32_array(&r, ts->count);
        ts->a = golden_f32_array(&r, ts->count);
        ts->c = golden_f32_array(&r, ts->count);
    }
    for (size_t k = 0; k < gc->tensor_count; k++) {
        golden_tensor *ts = &gc->tensors[k];
        ts->params = golden_f32_array(&r, ts->count);
        if (gc->flags & FLAG_HAS_M) ts->m = golden_f32_array(&r, ts->count);
        if (gc->flags & FLAG_HAS_V) ts->v = golden_f32_array(&r, ts->count);
        if (gc->flags & FLAG_HAS_THETA_TILDE) ts->theta_tilde = golden_f32_array(&r, ts->count);
    }
    for (size_t t = 0; t < gc->step_count; t++) {
        gc->grad_norm[t] = golden_f64(&r);
        gc->clipped[t] = golden_u32(&r) != 0;
        (void)golden_u32(&r);
        for (size_t u = 0; u < gc->unit_count; u++)
            gc->units[t * gc->unit_count + u] = golden_read_unit_step(&r);
    }
    const unsigned char *end = golden_take(&r, 8);
    if (!r.ok || !end || memcmp(end, "MGPO_END", 8) != 0)
        err = "truncated or corrupt data";
    else if (r.p != r.end)
        err = "trailing bytes after the end marker";
done:
    free(data);
    if (err) golden_free(gc);
    return err;
}

/* ---- The gradient, bit for bit as in generate.py ------------------------- */

/* g_i = a_i * (p_i - c_i) + noise_i in float32, one rounding per operation.
 * The volatile product keeps a compiler from fusing the multiply and the add
 * into an FMA (torch runs them as two kernels, each rounding). */
static void golden_gradient(const golden_case *gc, size_t k, size_t t, const float *p,
                            float *g)
{
    const golden_tensor *ts = &gc->tensors[k];
    unsigned shift = ts->noise_shift + (gc->noise_halving ? (unsigned)(t / gc->noise_halving) : 0u);
    for (size_t i = 0; i < ts->count; i++) {
        volatile float prod = ts->a[i] * (p[i] - ts->c[i]);
        g[i] = prod + golden_noise(gc->seed, t, k, shift, i);
    }
}

/* FNV-1a (64 bit) over the little-endian bytes of the floats: generate.py
 * stores it for the step-0 gradient, which both sides compute from the same
 * p0, so it must match bit for bit. */
static uint64_t golden_fnv1a_floats(const float *x, size_t n)
{
    uint64_t h = GOLDEN_FNV_BASIS;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &x[i], sizeof bits);
        h = golden_fnv1a(h, bits, 4);
    }
    return h;
}

/* ---- Comparison ---------------------------------------------------------- */

typedef golden_errors error_stats;

static void check_value(error_stats *es, const golden_case *gc, double got, double want,
                        double floor, const char *where, size_t a, size_t b)
{
    golden_check(es, gc->name, got, want, RTOL, floor, where, a, b);
}

static void check_array(error_stats *es, const golden_case *gc, const float *got,
                        const float *want, size_t n, double floor, size_t tensor)
{
    for (size_t i = 0; i < n; i++)
        check_value(es, gc, got[i], want[i], floor, "tensor/element", tensor, i);
}

/* ---- The replay ---------------------------------------------------------- */

enum {
    E_PARAMS, E_M, E_V, E_THETA, E_GRAD_NORM, E_GBAR, E_MNORM, E_SCALE, E_COEF, E_PNORM,
    E_COUNT
};

START_TEST(test_golden_case)
{
    const char *name = case_names[_i];
    char path[1024];
    int n = snprintf(path, sizeof path, "%s/%s.bin", MGPO_GOLDEN_DIR, name);
    ck_assert_msg(n > 0 && (size_t)n < sizeof path, "path too long");
    golden_case gc;
    const char *err = golden_load(path, &gc);
    ck_assert_msg(err == NULL, "%s: %s", path, err ? err : "");
    ck_assert_str_eq(gc.name, name);

    const mgpo_config *cfg = &gc.config;
    int mgpo = cfg->rho > 0.0;
    /* Every MGPO case must reach the clamp s_max (the generator asserts it). */
    if (mgpo && gc.config.normalize) ck_assert_msg(gc.flags & FLAG_CLAMP_HIT, "%s: clamp never hit", name);

    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, cfg, NULL), MGPO_OK);
    float **params = calloc(gc.tensor_count, sizeof *params);
    float **grads = calloc(gc.tensor_count, sizeof *grads);
    ck_assert_ptr_nonnull(params);
    ck_assert_ptr_nonnull(grads);
    for (size_t k = 0; k < gc.tensor_count; k++) {
        const golden_tensor *ts = &gc.tensors[k];
        params[k] = malloc(ts->count * sizeof(float));
        grads[k] = calloc(ts->count, sizeof(float));
        ck_assert_ptr_nonnull(params[k]);
        ck_assert_ptr_nonnull(grads[k]);
        memcpy(params[k], ts->p0, ts->count * sizeof(float));
        size_t index = 99;
        ck_assert_int_eq(mgpo_add_tensor(st, params[k], grads[k], ts->count, &ts->options, &index),
                         MGPO_OK);
        ck_assert_uint_eq(index, k);
    }
    size_t units = 0;
    ck_assert_int_eq(mgpo_get_unit_count(st, &units), MGPO_OK);
    ck_assert_uint_eq(units, gc.unit_count);

    error_stats es[E_COUNT] = {
        {.what = "params"},        {.what = "m"},           {.what = "v"},
        {.what = "theta_tilde"},   {.what = "grad_norm"},   {.what = "grad_norm_ema"},
        {.what = "momentum_norm"}, {.what = "scale"},       {.what = "coefficient"},
        {.what = "perturb_norm"},
    };
    size_t clamp_seen = 0, flag_mismatches = 0;
    golden_reset_failures();

    for (size_t t = 0; t < gc.step_count; t++) {
        const golden_unit_step *want = &gc.units[t * gc.unit_count];
        ck_assert_int_eq(mgpo_set_lr(st, gc.lr[t]), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);

        int perturbed = -1;
        ck_assert_int_eq(mgpo_is_perturbed(st, &perturbed), MGPO_OK);
        int expect_perturbed = mgpo && t > 0;
        if (perturbed != expect_perturbed) {
            flag_mismatches++;
            fprintf(stderr, "golden %s: step %zu perturbed %d, want %d\n", name, t, perturbed,
                    expect_perturbed);
        }
        /* Aggregates over the perturbed units, as mgpo_stats documents them. */
        double n_sq = 0.0, eps_sq = 0.0, s_max_seen = 0.0;
        for (size_t u = 0; u < gc.unit_count; u++) {
            if (want[u].coefficient == 0.0) continue;
            n_sq += want[u].momentum_norm * want[u].momentum_norm;
            /* |c_U| * n_U = rho * s_U * n_U / (n_U + eps_n): the norm of the
             * momentum perturbation, which the random direction copies. */
            double n = want[u].momentum_norm;
            double e = cfg->rho * want[u].scale * n / (n + cfg->norm_eps);
            eps_sq += e * e;
            s_max_seen = fmax(s_max_seen, want[u].scale);
        }
        if (expect_perturbed) {
            mgpo_stats s;
            ck_assert_int_eq(mgpo_get_stats(st, &s), MGPO_OK);
            check_value(&es[E_MNORM], &gc, s.momentum_norm, sqrt(n_sq), ATOL, "step/total", t, 0);
            check_value(&es[E_PNORM], &gc, s.perturbation_norm, sqrt(eps_sq), ATOL, "step/total", t,
                        0);
            check_value(&es[E_SCALE], &gc, s.perturbation_scale, s_max_seen, 0.0, "step/total", t,
                        0);
        }
        for (size_t u = 0; u < gc.unit_count; u++) {
            mgpo_unit_stats us;
            ck_assert_int_eq(mgpo_get_unit_stats(st, u, &us), MGPO_OK);
            if (!expect_perturbed) {
                /* Skipped perturb: nothing applied. */
                check_value(&es[E_COEF], &gc, us.coefficient, 0.0, 0.0, "step/unit", t, u);
                continue;
            }
            check_value(&es[E_MNORM], &gc, us.momentum_norm, want[u].momentum_norm, ATOL,
                        "step/unit", t, u);
            check_value(&es[E_SCALE], &gc, us.scale, want[u].scale, 0.0, "step/unit", t, u);
            /* c = K / n carries n's allowance: relative ATOL / n on top. */
            double n_want = want[u].momentum_norm;
            double c_floor = n_want > 0.0 ? fabs(want[u].coefficient) * (RTOL + ATOL / n_want) : 0.0;
            check_value(&es[E_COEF], &gc, us.coefficient, want[u].coefficient, c_floor,
                        "step/unit", t, u);
            if (want[u].clamped) {
                /* min(1/(gbar+eps), s_max) returns s_max itself. */
                if (us.scale == cfg->scale_max) clamp_seen++;
                else flag_mismatches++;
            }
        }

        if (t + 1 == gc.step_count && (gc.flags & FLAG_HAS_THETA_TILDE)) {
            /* The perturbed point c_U * m is as exact as m times |c_U|. */
            for (size_t k = 0; k < gc.tensor_count; k++) {
                size_t u = cfg->scope == MGPO_SCOPE_GLOBAL ? 0 : k;
                double floor = ATOL * fmax(1.0, fabs(want[u].coefficient));
                check_array(&es[E_THETA], &gc, params[k], gc.tensors[k].theta_tilde,
                            gc.tensors[k].count, floor, k);
            }
        }

        for (size_t k = 0; k < gc.tensor_count; k++) {
            golden_gradient(&gc, k, t, params[k], grads[k]);
            /* At t = 0 both sides start from the same p0: identical bits, or
             * the gradient formula here and in generate.py have drifted. */
            if (t == 0)
                ck_assert_msg(golden_fnv1a_floats(grads[k], gc.tensors[k].count) ==
                                  gc.tensors[k].grad0_hash,
                              "%s: step-0 gradient of tensor %zu differs from generate.py",
                              name, k);
        }
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);

        mgpo_stats s;
        ck_assert_int_eq(mgpo_get_stats(st, &s), MGPO_OK);
        ck_assert_uint_eq(s.step, t + 1);
        ck_assert_int_eq(s.perturbed, 0);
        if (s.lr != gc.lr[t] || s.clipped != gc.clipped[t]) {
            flag_mismatches++;
            fprintf(stderr, "golden %s: step %zu lr %.17g clipped %d, want %.17g %d\n", name, t,
                    s.lr, s.clipped, gc.lr[t], gc.clipped[t]);
        }
        check_value(&es[E_GRAD_NORM], &gc, s.grad_norm, gc.grad_norm[t], ATOL, "step/total", t, 0);
        double gbar_sq = 0.0; /* stats.grad_norm_ema: root of the sum of squares */
        for (size_t u = 0; u < gc.unit_count; u++)
            gbar_sq += want[u].grad_norm_ema * want[u].grad_norm_ema;
        check_value(&es[E_GBAR], &gc, s.grad_norm_ema, sqrt(gbar_sq), ATOL, "step/total", t, 0);
        for (size_t u = 0; u < gc.unit_count; u++) {
            mgpo_unit_stats us;
            ck_assert_int_eq(mgpo_get_unit_stats(st, u, &us), MGPO_OK);
            check_value(&es[E_GRAD_NORM], &gc, us.grad_norm, want[u].grad_norm, ATOL,
                        "step/unit", t, u);
            check_value(&es[E_GBAR], &gc, us.grad_norm_ema, want[u].grad_norm_ema, ATOL,
                        "step/unit", t, u);
        }
    }

    for (size_t k = 0; k < gc.tensor_count; k++) {
        const golden_tensor *ts = &gc.tensors[k];
        check_array(&es[E_PARAMS], &gc, params[k], ts->params, ts->count, ATOL, k);
        if (ts->m) {
            const float *m = mgpo_internal_moment(st, k, 0);
            ck_assert_ptr_nonnull(m);
            check_array(&es[E_M], &gc, m, ts->m, ts->count, ATOL, k);
        }
        if (ts->v) {
            const float *v = mgpo_internal_moment(st, k, 1);
            ck_assert_ptr_nonnull(v);
            check_array(&es[E_V], &gc, v, ts->v, ts->count, ATOL, k);
        }
    }

    size_t failed = 0;
    for (int e = 0; e < E_COUNT; e++) {
        golden_print(gc.name, &es[e]);
        failed += es[e].failed;
    }
    size_t clamp_want = 0;
    for (size_t i = 0; i < gc.step_count * gc.unit_count; i++) clamp_want += gc.units[i].clamped;
    if (mgpo)
        fprintf(stderr, "golden %-28s clamp s_max hit %zu times (want %zu)\n", name, clamp_seen,
                clamp_want);

    mgpo_destroy(st);
    for (size_t k = 0; k < gc.tensor_count; k++) {
        free(params[k]);
        free(grads[k]);
    }
    free(params);
    free(grads);
    int normalize = gc.config.normalize; /* APN off: s = 1, never clamped */
    golden_free(&gc);

    ck_assert_msg(failed == 0, "%s: %zu values outside tolerance (see stderr)", name, failed);
    ck_assert_msg(flag_mismatches == 0, "%s: %zu perturbed/clipped/clamp/lr mismatches", name,
                  flag_mismatches);
    if (mgpo) ck_assert_msg((clamp_seen > 0 || !normalize) && clamp_seen == clamp_want,
                            "%s: clamp hit %zu times, want %zu", name, clamp_seen, clamp_want);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("torch");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_golden_case, 0, (int)CASE_COUNT);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
