/* The loader accepts exactly what a run reaches (issue 20, findings 1 and 4):
 * every state a run reaches loads back (APN off with scale_max < 1 included),
 * and values no run produces in the statistics, the units' EMAs and an
 * external-mode momentum_sq are refused with MGPO_ERR_CHECKPOINT_LAYOUT,
 * leaving the state as it was. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_format.h"
#include "ckpt_fixture.h"
#include "mgpo.h"

enum { N = 300, TENSORS = 2 };

/* A small run of either mode: two tensors, gradients that depend on the
 * parameters, and in external mode a caller's momentum it updates itself
 * (m = 0.9 m + g after each OK step, as SGD with momentum). */
typedef struct run {
    mgpo_state *st;
    float params[TENSORS][N], grads[TENSORS][N], momentum[TENSORS][N];
    int external;
} run;

static void run_init(run *r, const mgpo_config *cfg)
{
    memset(r, 0, sizeof *r);
    r->external = cfg->optimizer_mode == MGPO_OPTIMIZER_EXTERNAL;
    ck_assert_int_eq(mgpo_create(&r->st, cfg, NULL), MGPO_OK);
    for (size_t k = 0; k < TENSORS; k++) {
        for (size_t i = 0; i < N; i++) r->params[k][i] = (float)((int)((i * 37 + k * 11) % 97) - 48) / 64.0f;
        ck_assert_int_eq(mgpo_add_tensor(r->st, r->params[k], r->grads[k], N, NULL, NULL), MGPO_OK);
        if (r->external) ck_assert_int_eq(mgpo_set_momentum(r->st, k, r->momentum[k]), MGPO_OK);
    }
}

static void run_grads(run *r, unsigned t)
{
    for (size_t k = 0; k < TENSORS; k++)
        for (size_t i = 0; i < N; i++)
            r->grads[k][i] = r->params[k][i] * 0.5f - (float)((i + t) % 7) / 8.0f;
}

static void run_iterate(run *r, unsigned t)
{
    ck_assert_int_eq(mgpo_perturb(r->st), MGPO_OK);
    run_grads(r, t);
    ck_assert_int_eq(mgpo_step(r->st), MGPO_OK);
    if (!r->external) return;
    for (size_t k = 0; k < TENSORS; k++)
        for (size_t i = 0; i < N; i++) {
            r->momentum[k][i] = 0.9f * r->momentum[k][i] + r->grads[k][i];
            r->params[k][i] -= 0.01f * r->momentum[k][i];
        }
}

static unsigned char *save(const mgpo_state *st, size_t *size)
{
    unsigned char *b = fx_save(st, size);
    ck_assert_ptr_nonnull(b);
    return b;
}

/* The checkpoint loads into a fresh state of the same registrations and
 * saves back to the same bytes. */
static void assert_loads_back(const mgpo_config *cfg, const unsigned char *ck, size_t size)
{
    run *fresh = malloc(sizeof *fresh);
    ck_assert_ptr_nonnull(fresh);
    run_init(fresh, cfg);
    ck_assert_int_eq(mgpo_load(fresh->st, ck, size), MGPO_OK);
    ck_assert(fx_state_is(fresh->st, ck, size));
    mgpo_destroy(fresh->st);
    free(fresh);
}

/* ---- Finding 1: APN off with scale_max < 1 --------------------------------
 * _i: bit 0 external mode, bit 1 the scope, bit 2 low-memory restore, bit 3
 * APN on (then external mode's perturb before the first step has scale 1 >
 * scale_max, which its unit keeps after the step: found by the differential
 * fuzzer).  Every checkpoint of the run, clean (after a step) and perturbed
 * (after perturb), loads back. */
START_TEST(test_apn_off_small_scale_max_loads)
{
    mgpo_config cfg = mgpo_config_default();
    cfg.normalize = (_i & 8) ? 1 : 0;
    cfg.scale_max = 0.5;
    cfg.rho = 0.1;
    cfg.lr = 1e-3;
    if (_i & 1) cfg.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    if (_i & 2) cfg.scope = MGPO_SCOPE_TENSOR;
    if (_i & 4) cfg.restore_mode = MGPO_RESTORE_LOW_MEMORY;
    run *r = malloc(sizeof *r);
    ck_assert_ptr_nonnull(r);
    run_init(r, &cfg);
    if (r->external) /* a momentum to follow from the start */
        for (size_t k = 0; k < TENSORS; k++)
            for (size_t i = 0; i < N; i++) r->momentum[k][i] = (float)((int)(i % 5) - 2) / 4.0f;
    for (unsigned t = 0; t < 4; t++) {
        size_t size = 0;
        unsigned char *clean = save(r->st, &size);
        assert_loads_back(&cfg, clean, size);
        free(clean);
        ck_assert_int_eq(mgpo_perturb(r->st), MGPO_OK);
        mgpo_stats s;
        ck_assert_int_eq(mgpo_get_stats(r->st, &s), MGPO_OK);
        unsigned char *perturbed = save(r->st, &size);
        assert_loads_back(&cfg, perturbed, size);
        free(perturbed);
        run_grads(r, t);
        ck_assert_int_eq(mgpo_step(r->st), MGPO_OK);
        if (r->external)
            for (size_t k = 0; k < TENSORS; k++)
                for (size_t i = 0; i < N; i++) r->momentum[k][i] = 0.9f * r->momentum[k][i] + r->grads[k][i];
    }
    /* The run did perturb with the fixed scale 1 > scale_max (APN off), or
     * with at most scale_max (APN on, after the first step). */
    mgpo_unit_stats u;
    ck_assert_int_eq(mgpo_perturb(r->st), MGPO_OK);
    ck_assert_int_eq(mgpo_get_unit_stats(r->st, 0, &u), MGPO_OK);
    ck_assert(cfg.normalize ? u.scale > 0.0 && u.scale <= 0.5 : u.scale == 1.0);
    mgpo_destroy(r->st);
    free(r);
}
END_TEST

/* ---- Finding 4: values no run produces ------------------------------------ */

#define P(off) (MGPO_CKPT_HEADER_SIZE + (off))
#define STATS P(160) /* lr, grad_norm, grad_norm_ema, momentum_norm,
                        perturbation_norm, perturbation_scale */
#define UNIT0 P(MGPO_CKPT_STATE_SIZE)
#define SLOT(i) (UNIT0 + units * MGPO_CKPT_UNIT_SIZE + TENSORS * MGPO_CKPT_ITEM_SIZE + \
                 (i) * MGPO_CKPT_SLOT_SIZE)

/* ck with the double at `at` set to x and resealed: refused with LAYOUT,
 * and the state keeps saving `before`; with expect_ok, accepted instead. */
static void expect_double(mgpo_state *st, const unsigned char *ck, size_t size, size_t at,
                          double x, int expect_ok, const unsigned char *before, size_t before_size,
                          int line)
{
    unsigned char *c = malloc(size);
    ck_assert_ptr_nonnull(c);
    memcpy(c, ck, size);
    fx_store_le(c + at, &x, 8);
    fx_reseal(c, size);
    mgpo_status s = mgpo_load(st, c, size);
    if (expect_ok) {
        ck_assert_msg(s == MGPO_OK, "line %d: %g at %zu refused (%d)", line, x, at, (int)s);
        ck_assert(mgpo_load(st, before, before_size) == MGPO_OK);
    } else {
        ck_assert_msg(s == MGPO_ERR_CHECKPOINT_LAYOUT, "line %d: %g at %zu gave %d", line, x,
                      at, (int)s);
    }
    ck_assert(fx_state_is(st, before, before_size));
    free(c);
}
#define REFUSED(at, x) expect_double(r->st, ck, size, at, x, 0, before, before_size, __LINE__)
#define ACCEPTED(at, x) expect_double(r->st, ck, size, at, x, 1, before, before_size, __LINE__)

START_TEST(test_refuses_unreachable_statistics)
{
    mgpo_config cfg = mgpo_config_default();
    cfg.lr = 1e-3;
    cfg.scope = MGPO_SCOPE_TENSOR;
    run *r = malloc(sizeof *r);
    ck_assert_ptr_nonnull(r);
    run_init(r, &cfg);
    for (unsigned t = 0; t < 3; t++) run_iterate(r, t);
    size_t size = 0, before_size = 0;
    unsigned char *ck = save(r->st, &size);
    run_iterate(r, 3);
    unsigned char *before = save(r->st, &before_size);
    ck_assert_int_eq(mgpo_load(r->st, ck, size), MGPO_OK); /* the control */
    ck_assert_int_eq(mgpo_load(r->st, before, before_size), MGPO_OK);

    const double nan = NAN, inf = INFINITY;
    const double never[5] = {nan, inf, -inf, -1.0, -0.0};
    for (size_t f = 0; f < 6; f++)
        for (size_t k = 0; k < 5; k++) {
            double x = never[k];
            /* The lr may be -0.0 (mgpo_set_lr accepts it); the momentum
             * norm +Inf (a sum of squares over units that overflows). */
            if ((f == 0 && k == 4) || (f == 3 && k == 1)) ACCEPTED(STATS + 8 * f, x);
            else REFUSED(STATS + 8 * f, x);
        }
    /* A unit's EMA or norm whose square overflows: the next OK step would
     * report grad_norm_ema = +Inf from finite gradients. */
    REFUSED(UNIT0 + 8, DBL_MAX);
    REFUSED(UNIT0 + 8, 1e300);
    REFUSED(UNIT0 + 16, 1e300);
    /* Two EMAs whose squares are finite but whose sum is not. */
    {
        unsigned char *c = malloc(size);
        ck_assert_ptr_nonnull(c);
        memcpy(c, ck, size);
        const double big = 1e154;
        fx_store_le(c + UNIT0 + 8, &big, 8);
        fx_store_le(c + UNIT0 + MGPO_CKPT_UNIT_SIZE + 8, &big, 8);
        fx_reseal(c, size);
        ck_assert_int_eq(mgpo_load(r->st, c, size), MGPO_ERR_CHECKPOINT_LAYOUT);
        ck_assert(fx_state_is(r->st, before, before_size));
        free(c);
    }
    /* Below the bound: accepted, and the next step reports a finite EMA. */
    {
        unsigned char *c = malloc(size);
        ck_assert_ptr_nonnull(c);
        memcpy(c, ck, size);
        const double large = 1e150;
        fx_store_le(c + UNIT0 + 8, &large, 8);
        fx_reseal(c, size);
        ck_assert_int_eq(mgpo_load(r->st, c, size), MGPO_OK);
        run_iterate(r, 3);
        mgpo_stats s;
        ck_assert_int_eq(mgpo_get_stats(r->st, &s), MGPO_OK);
        ck_assert(isfinite(s.grad_norm_ema) && s.grad_norm_ema > 1e149);
        free(c);
    }
    free(ck);
    free(before);
    mgpo_destroy(r->st);
    free(r);
}
END_TEST

/* External mode: the slot's momentum_sq (the caller's momentum's sum of
 * squares at the last perturb) is >= +0.0, +Inf or, only when the unit's
 * momentum norm is NaN, NaN; a run with a NaN in the caller's momentum
 * reaches that and loads back. */
START_TEST(test_refuses_unreachable_external_momentum_sq)
{
    mgpo_config cfg = mgpo_config_default();
    cfg.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    cfg.scope = MGPO_SCOPE_TENSOR;
    const size_t units = TENSORS;
    run *r = malloc(sizeof *r);
    ck_assert_ptr_nonnull(r);
    run_init(r, &cfg);
    for (unsigned t = 0; t < 3; t++) run_iterate(r, t);
    size_t size = 0, before_size = 0;
    unsigned char *ck = save(r->st, &size);
    run_iterate(r, 3);
    unsigned char *before = save(r->st, &before_size);
    const size_t sq = MGPO_CKPT_SLOT_OFF_MOMENTUM_SQ;
    REFUSED(SLOT(0) + sq, NAN);
    REFUSED(SLOT(1) + sq, -1.0);
    REFUSED(SLOT(1) + sq, -0.0);
    REFUSED(SLOT(0) + sq, -INFINITY);
    ACCEPTED(SLOT(0) + sq, INFINITY);
    ACCEPTED(SLOT(0) + sq, 0.0);

    /* Reached by a run: a NaN in the caller's momentum. */
    r->momentum[1][5] = NAN;
    ck_assert_int_eq(mgpo_perturb(r->st), MGPO_OK);
    mgpo_unit_stats u;
    ck_assert_int_eq(mgpo_get_unit_stats(r->st, 1, &u), MGPO_OK);
    ck_assert(isnan(u.momentum_norm));
    size_t nan_size = 0;
    unsigned char *with_nan = save(r->st, &nan_size);
    assert_loads_back(&cfg, with_nan, nan_size);
    free(with_nan);
    free(ck);
    free(before);
    mgpo_destroy(r->st);
    free(r);
}
END_TEST

/* ---- Finding 9: the size formula of mgpo_checkpoint_size's doc ----------
 * External mode, exact restore: a perturbed bf16/fp16 tensor adds 2 bytes
 * per element (its clean copy in its own type), a float32 one 4. */
START_TEST(test_size_external_typed_backup)
{
    mgpo_config cfg = mgpo_config_default();
    cfg.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
    enum { NB = 100, NF = 30 };
    uint16_t half[NB], mh[NB];
    float f32[NF], g32[NB], gf[NF], mf[NF];
    for (size_t i = 0; i < NB; i++) {
        half[i] = 0x3F80; /* 1.0 in bf16 */
        mh[i] = (uint16_t)(0x3C00 + i % 7); /* fp16 momentum near 1 */
        g32[i] = 0.25f;
    }
    for (size_t i = 0; i < NF; i++) {
        f32[i] = 1.0f;
        gf[i] = 0.5f;
        mf[i] = (float)(i % 3) - 1.0f;
    }
    ck_assert_int_eq(mgpo_add_tensor_typed(st, half, MGPO_DTYPE_BFLOAT16, g32, MGPO_DTYPE_FLOAT32,
                                           NB, NULL, NULL),
                     MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, f32, gf, NF, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum_typed(st, 0, mh, MGPO_DTYPE_FLOAT16), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(st, 1, mf), MGPO_OK);
    size_t clean = 0, perturbed = 0;
    ck_assert_int_eq(mgpo_checkpoint_size(st, &clean), MGPO_OK);
    /* 48 + 264 + 48 per unit (1) + 72 per tensor (2) + 56 per slot (2). */
    ck_assert_uint_eq(clean, 48 + 264 + 48 + 2 * 72 + 2 * 56);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    ck_assert_int_eq(mgpo_checkpoint_size(st, &perturbed), MGPO_OK);
    ck_assert_uint_eq(perturbed, clean + 2 * NB + 4 * NF);
    mgpo_destroy(st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_bounds");
    TCase *tc = tcase_create("bounds");
    tcase_add_loop_test(tc, test_apn_off_small_scale_max_loads, 0, 16);
    tcase_add_test(tc, test_refuses_unreachable_statistics);
    tcase_add_test(tc, test_refuses_unreachable_external_momentum_sq);
    tcase_add_test(tc, test_size_external_typed_backup);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
