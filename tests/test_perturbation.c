/* The perturbation itself: none on the first step, rho = 0 is the plain
 * optimizer (bitwise, against a torch-order reference), theta~ - theta = c*m
 * with c recomputed here in double from the moments, the s_max clamp, the
 * two signs, the two scopes, the gradient-norm EMA, and skipped units. */
#include "test_util.h"

#include <math.h>
#include <string.h>

static tu_model M, R; /* M drives a state; R is a twin for references */

static void setup(void)
{
    tu_model_init(&M, tu_odd_sizes, TU_ODD_COUNT, 11);
    tu_model_init(&R, tu_odd_sizes, TU_ODD_COUNT, 11);
}

static void teardown(void)
{
    tu_model_free(&M);
    tu_model_free(&R);
}

static int is_perturbed(const tu_model *m)
{
    int p = -1;
    ck_assert_int_eq(mgpo_is_perturbed(m->st, &p), MGPO_OK);
    return p;
}

static mgpo_unit_stats unit_stats(const tu_model *m, size_t u)
{
    mgpo_unit_stats s;
    ck_assert_int_eq(mgpo_get_unit_stats(m->st, u, &s), MGPO_OK);
    return s;
}

/* ---- Tests ---------------------------------------------------------------- */

START_TEST(first_step_is_unperturbed)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&M, &cfg, NULL);
    tu_snapshot before, after;
    tu_snapshot_take(&before, &M);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(is_perturbed(&M), 0);
    tu_snapshot_take(&after, &M);
    tu_assert_same(&before, &after, TU_CMP_ALL);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);

    /* So the first update is exactly the base optimizer's. */
    tu_model_grad(&M);
    tu_model_grad(&R);
    ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
    tu_model_ref_step(&R, &cfg, 1, cfg.lr, NULL, 1.0f);
    tu_assert_matches_ref(&M, &R);
}
END_TEST

/* Variants of the base optimizer: _i & 7 is the combination, _i >> 3 adds
 * weight decay, Nesterov, dampening, momentum 0, other betas. */
static mgpo_config variant_config(int i)
{
    mgpo_config c = tu_combo_config(i & 7);
    switch (i >> 3) {
    case 1:
        c.weight_decay = 0.1;
        c.nesterov = 1;
        break;
    case 2:
        c.weight_decay = 0.01;
        c.momentum = 0.5;
        c.dampening = 0.25;
        c.beta1 = 0.5;
        c.beta2 = 0.9;
        break;
    case 3:
        c.momentum = 0.0;
        c.eps = 1e-3;
        break;
    default: break;
    }
    return c;
}

START_TEST(rho_zero_is_the_plain_optimizer)
{
    mgpo_config cfg = variant_config(_i);
    cfg.rho = 0.0;
    tu_model_register(&M, &cfg, NULL);
    for (uint64_t t = 1; t <= 30; t++) {
        ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
        ck_assert_int_eq(is_perturbed(&M), 0);
        tu_model_grad(&M);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
        tu_model_grad(&R);
        tu_model_ref_step(&R, &cfg, t, cfg.lr, NULL, 1.0f);
        tu_assert_matches_ref(&M, &R);
    }
}
END_TEST

START_TEST(perturbation_is_c_times_m)
{
    mgpo_config cfg = variant_config(_i);
    cfg.rho = 0.1;
    tu_model_register(&M, &cfg, NULL);
    tu_ref_units r;
    tu_ref_units_init(&r, &cfg, M.count, NULL);
    size_t perturbed_units = 0;
    for (int it = 0; it < 25; it++) {
        tu_snapshot clean;
        tu_snapshot_take(&clean, &M);
        ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
        if (it > 0) perturbed_units += tu_check_perturbation(&M, &cfg, &r, &clean);
        tu_snapshot_free(&clean);
        tu_model_grad(&M);
        tu_ref_units_step(&r, &cfg, &M);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
    }
    ck_assert_uint_eq(perturbed_units, 24 * r.count);
}
END_TEST

START_TEST(gbar_starts_at_first_norm_then_ema)
{
    mgpo_config cfg = tu_combo_config(_i);
    cfg.norm_ema = 0.7;
    tu_model_register(&M, &cfg, NULL);
    tu_ref_units r;
    tu_ref_units_init(&r, &cfg, M.count, NULL);
    for (int it = 0; it < 12; it++) {
        tu_model_iterate(&M);
        /* tu_model_iterate left the step's gradients in M.grads. */
        tu_ref_units_step(&r, &cfg, &M);
        double ema_sq = 0.0;
        for (size_t u = 0; u < r.count; u++) {
            mgpo_unit_stats us = unit_stats(&M, u);
            if (it == 0) /* initialised with gamma itself, not (1-beta)*gamma */
                ck_assert(memcmp(&us.grad_norm_ema, &us.grad_norm, sizeof(double)) == 0);
            ck_assert_msg(tu_close(us.grad_norm_ema, r.gbar[u], 1e-12),
                          "it %d unit %zu: %.17g vs %.17g", it, u, us.grad_norm_ema,
                          r.gbar[u]);
            ema_sq += r.gbar[u] * r.gbar[u];
        }
        mgpo_stats st;
        ck_assert_int_eq(mgpo_get_stats(M.st, &st), MGPO_OK);
        ck_assert(tu_close(st.grad_norm_ema, sqrt(ema_sq), 1e-12));
    }
}
END_TEST

/* _i: bit 0 optimizer, bit 1 scope, bit 2 clamp (tiny gradients) or not. */
START_TEST(scale_clamped_only_for_tiny_gbar)
{
    mgpo_config cfg = tu_combo_config(_i & 3);
    int clamp = (_i & 4) != 0;
    M.grad_scale = clamp ? 1e-7f : 1e3f;
    if (cfg.optimizer == MGPO_OPTIMIZER_SGD && !clamp)
        cfg.lr /= M.grad_scale; /* keeps SGD stable on the steep loss */
    tu_model_register(&M, &cfg, NULL);
    tu_ref_units r;
    tu_ref_units_init(&r, &cfg, M.count, NULL);
    for (int it = 0; it < 6; it++) {
        tu_snapshot clean;
        tu_snapshot_take(&clean, &M);
        ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
        if (it > 0) {
            ck_assert_uint_eq(tu_check_perturbation(&M, &cfg, &r, &clean), r.count);
            for (size_t u = 0; u < r.count; u++) {
                mgpo_unit_stats us = unit_stats(&M, u);
                if (clamp) {
                    ck_assert(us.scale == cfg.scale_max);
                } else {
                    ck_assert(us.scale < cfg.scale_max);
                    ck_assert(us.scale == 1.0 / (r.gbar[u] + cfg.norm_eps) ||
                              tu_close(us.scale, 1.0 / (r.gbar[u] + cfg.norm_eps), 1e-12));
                }
            }
        }
        tu_snapshot_free(&clean);
        tu_model_grad(&M);
        tu_ref_units_step(&r, &cfg, &M);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
    }
}
END_TEST

/* Two states with the same history (steps on clean gradients, no perturb),
 * differing only in sign or scope, then one perturb each. */
static void same_history(tu_model *a, tu_model *b, int steps)
{
    for (int it = 0; it < steps; it++) {
        tu_model_grad(a);
        tu_model_grad(b);
        ck_assert_int_eq(mgpo_step(a->st), MGPO_OK);
        ck_assert_int_eq(mgpo_step(b->st), MGPO_OK);
    }
}

START_TEST(ascent_and_lookahead_are_opposite)
{
    mgpo_config la = tu_combo_config(_i & 3), as = tu_combo_config((_i & 3) | 4);
    ck_assert_int_eq(la.sign, MGPO_SIGN_LOOKAHEAD);
    ck_assert_int_eq(as.sign, MGPO_SIGN_ASCENT);
    tu_model_register(&M, &la, NULL);
    tu_model_register(&R, &as, NULL);
    same_history(&M, &R, 4);
    tu_snapshot clean;
    tu_snapshot_take(&clean, &M);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(R.st), MGPO_OK);
    size_t units;
    ck_assert_int_eq(mgpo_get_unit_count(M.st, &units), MGPO_OK);
    for (size_t u = 0; u < units; u++) {
        mgpo_unit_stats a = unit_stats(&M, u), b = unit_stats(&R, u);
        ck_assert(a.coefficient < 0.0 && b.coefficient > 0.0);
        ck_assert(a.coefficient == -b.coefficient);
    }
    size_t moved = 0;
    for (size_t i = 0; i < M.count; i++) {
        const float *mom = mgpo_internal_moment(M.st, i, 0);
        for (size_t k = 0; k < M.sizes[i]; k++) {
            float p0 = clean.params[i][k];
            float dl = M.params[i][k] - p0, da = R.params[i][k] - p0;
            /* lookahead moves against m, ascent along it */
            if (!(dl * mom[k] <= 0.0f && da * mom[k] >= 0.0f))
                ck_abort_msg("tensor %zu [%zu] moved the wrong way", i, k);
            moved += dl != 0.0f && da != 0.0f;
        }
    }
    ck_assert_uint_gt(moved, 4000);
    tu_snapshot_free(&clean);
}
END_TEST

START_TEST(global_scope_shares_one_norm_tensor_scope_one_each)
{
    mgpo_config g = tu_combo_config(_i & 1), t = tu_combo_config((_i & 1) | 2);
    tu_model_register(&M, &g, NULL);
    tu_model_register(&R, &t, NULL);
    same_history(&M, &R, 3);
    tu_snapshot clean;
    tu_snapshot_take(&clean, &M);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(R.st), MGPO_OK);
    size_t gu, tu;
    ck_assert_int_eq(mgpo_get_unit_count(M.st, &gu), MGPO_OK);
    ck_assert_int_eq(mgpo_get_unit_count(R.st, &tu), MGPO_OK);
    ck_assert_uint_eq(gu, 1);
    ck_assert_uint_eq(tu, M.count);

    /* ||m||^2 of the global unit is the sum over the per-tensor units. */
    double sum_sq = 0.0;
    for (size_t u = 0; u < tu; u++) {
        mgpo_unit_stats us = unit_stats(&R, u);
        double n = sqrt(tu_sum_sq(mgpo_internal_moment(R.st, u, 0), R.sizes[u]));
        ck_assert(tu_close(us.momentum_norm, n, 1e-12));
        sum_sq += us.momentum_norm * us.momentum_norm;
    }
    ck_assert(tu_close(unit_stats(&M, 0).momentum_norm, sqrt(sum_sq), 1e-12));

    /* Global: one coefficient for all tensors.  Tensor: each its own, so the
     * small tensors move much further than under the shared norm. */
    double c_global = unit_stats(&M, 0).coefficient;
    for (size_t u = 0; u < tu; u++) {
        double c = unit_stats(&R, u).coefficient;
        ck_assert(fabs(c) > fabs(c_global));
    }
    tu_snapshot_free(&clean);
}
END_TEST

START_TEST(units_without_momentum_are_skipped)
{
    mgpo_config cfg = tu_combo_config(_i);
    /* Tensor 1 never has a gradient (exact zero momentum); tensor 2's is so
     * small that ||m|| <= norm_eps. */
    for (size_t k = 0; k < M.sizes[1]; k++) M.curv[1][k] = 0.0f;
    for (size_t k = 0; k < M.sizes[2]; k++) M.curv[2][k] *= 1e-30f;
    tu_model_register(&M, &cfg, NULL);
    tu_model_grad(&M);
    ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
    tu_model_grad(&M);
    ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);

    tu_snapshot clean;
    tu_snapshot_take(&clean, &M);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    if (cfg.scope == MGPO_SCOPE_TENSOR) {
        for (size_t u = 1; u <= 2; u++) {
            mgpo_unit_stats us = unit_stats(&M, u);
            ck_assert(us.coefficient == 0.0);
            ck_assert(us.momentum_norm <= cfg.norm_eps);
            ck_assert_mem_eq(M.params[u], clean.params[u], M.sizes[u] * sizeof(float));
        }
        ck_assert_int_eq(is_perturbed(&M), 1);
        ck_assert(memcmp(M.params[3], clean.params[3], M.sizes[3] * sizeof(float)) != 0);
        ck_assert_int_eq(mgpo_restore(M.st), MGPO_OK);
        tu_assert_params_same(&M, &clean);
    }
    tu_snapshot_free(&clean);

    /* With every gradient zero, no unit has a direction: nothing happens. */
    tu_model_free(&M);
    tu_model_init(&M, tu_odd_sizes, TU_ODD_COUNT, 11);
    for (size_t i = 0; i < M.count; i++) memset(M.curv[i], 0, M.sizes[i] * sizeof(float));
    tu_model_register(&M, &cfg, NULL);
    for (int it = 0; it < 3; it++) tu_model_iterate(&M);
    tu_snapshot_take(&clean, &M);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(is_perturbed(&M), 0);
    tu_assert_params_same(&M, &clean);
    for (size_t u = 0; u < clean.unit_count; u++)
        ck_assert(unit_stats(&M, u).coefficient == 0.0);
    tu_snapshot_free(&clean);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("perturbation");
    TCase *tc = tcase_create("perturbation");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, first_step_is_unperturbed, 0, TU_COMBOS);
    tcase_add_loop_test(tc, rho_zero_is_the_plain_optimizer, 0, 4 * TU_COMBOS);
    tcase_add_loop_test(tc, perturbation_is_c_times_m, 0, 4 * TU_COMBOS);
    tcase_add_loop_test(tc, gbar_starts_at_first_norm_then_ema, 0, TU_COMBOS);
    tcase_add_loop_test(tc, scale_clamped_only_for_tiny_gbar, 0, 8);
    tcase_add_loop_test(tc, ascent_and_lookahead_are_opposite, 0, 4);
    tcase_add_loop_test(tc, global_scope_shares_one_norm_tensor_scope_one_each, 0, 2);
    tcase_add_loop_test(tc, units_without_momentum_are_skipped, 0, TU_COMBOS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
