/* Per-tensor options (perturb off, weight decay scale, lr scale), the lr
 * setter, lazily set gradients, clipping and the statistics. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static tu_model M, R; /* M drives a state; R is a twin for references */

static void setup(void)
{
    tu_model_init(&M, tu_odd_sizes, TU_ODD_COUNT, 23);
    tu_model_init(&R, tu_odd_sizes, TU_ODD_COUNT, 23);
}

static void teardown(void)
{
    tu_model_free(&M);
    tu_model_free(&R);
}

static void all_default(mgpo_tensor_options opts[TU_MAX_TENSORS])
{
    for (size_t i = 0; i < TU_MAX_TENSORS; i++) opts[i] = mgpo_tensor_options_default();
}

static mgpo_unit_stats unit_stats(const tu_model *m, size_t u)
{
    mgpo_unit_stats s;
    ck_assert_int_eq(mgpo_get_unit_stats(m->st, u, &s), MGPO_OK);
    return s;
}

static mgpo_stats stats(const tu_model *m)
{
    mgpo_stats s;
    ck_assert_int_eq(mgpo_get_stats(m->st, &s), MGPO_OK);
    return s;
}

static void assert_unit_same(mgpo_unit_stats a, mgpo_unit_stats b)
{
    ck_assert(memcmp(&a.grad_norm, &b.grad_norm, sizeof(double)) == 0);
    ck_assert(memcmp(&a.grad_norm_ema, &b.grad_norm_ema, sizeof(double)) == 0);
    ck_assert(memcmp(&a.momentum_norm, &b.momentum_norm, sizeof(double)) == 0);
    ck_assert(memcmp(&a.scale, &b.scale, sizeof(double)) == 0);
    ck_assert(memcmp(&a.coefficient, &b.coefficient, sizeof(double)) == 0);
}

/* ---- perturb off ---------------------------------------------------------- */

/* M has all four tensors with tensor 1's perturbation off; W ("without")
 * holds copies of tensors 0, 2, 3 only.  The loss is separable, so a correct
 * library gives W's tensors exactly M's values and norms. */
START_TEST(perturb_off_tensor_untouched_and_not_in_norms)
{
    enum { OFF = 1 };
    mgpo_config cfg = tu_combo_config(_i);
    mgpo_tensor_options opts[TU_MAX_TENSORS];
    all_default(opts);
    opts[OFF].perturb = 0;

    tu_model W;
    const size_t keep[3] = {0, 2, 3};
    size_t sizes[3];
    for (size_t j = 0; j < 3; j++) sizes[j] = M.sizes[keep[j]];
    tu_model_init(&W, sizes, 3, 99);
    for (size_t j = 0; j < 3; j++) {
        size_t bytes = sizes[j] * sizeof(float);
        memcpy(W.params[j], M.params[keep[j]], bytes);
        memcpy(W.target[j], M.target[keep[j]], bytes);
        memcpy(W.curv[j], M.curv[keep[j]], bytes);
    }
    tu_model_register(&M, &cfg, opts);
    tu_model_register(&W, &cfg, NULL);

    size_t units;
    ck_assert_int_eq(mgpo_get_unit_count(M.st, &units), MGPO_OK);
    for (uint64_t t = 1; t <= 15; t++) {
        tu_snapshot clean;
        tu_snapshot_take(&clean, &M);
        ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(W.st), MGPO_OK);
        ck_assert_mem_eq(M.params[OFF], clean.params[OFF], M.sizes[OFF] * sizeof(float));
        for (size_t j = 0; j < 3; j++)
            ck_assert_mem_eq(M.params[keep[j]], W.params[j], sizes[j] * sizeof(float));
        if (cfg.scope == MGPO_SCOPE_GLOBAL) {
            ck_assert_uint_eq(units, 1);
            assert_unit_same(unit_stats(&M, 0), unit_stats(&W, 0));
        } else {
            ck_assert_uint_eq(units, 4);
            for (size_t j = 0; j < 3; j++)
                assert_unit_same(unit_stats(&M, keep[j]), unit_stats(&W, j));
            mgpo_unit_stats off = unit_stats(&M, OFF); /* documented all-zero */
            ck_assert(off.grad_norm == 0.0 && off.grad_norm_ema == 0.0 &&
                      off.momentum_norm == 0.0 && off.scale == 0.0 &&
                      off.coefficient == 0.0);
        }
        mgpo_stats a = stats(&M), b = stats(&W);
        ck_assert(memcmp(&a.momentum_norm, &b.momentum_norm, sizeof(double)) == 0);
        ck_assert(memcmp(&a.perturbation_norm, &b.perturbation_norm, sizeof(double)) == 0);
        ck_assert(memcmp(&a.perturbation_scale, &b.perturbation_scale, sizeof(double)) == 0);
        ck_assert(memcmp(&a.grad_norm_ema, &b.grad_norm_ema, sizeof(double)) == 0);
        tu_snapshot_free(&clean);

        tu_model_grad(&M);
        tu_model_grad(&W);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
        ck_assert_int_eq(mgpo_step(W.st), MGPO_OK);
        /* The unperturbed tensor is still stepped, as the plain optimizer:
         * its gradient was taken at its clean values. */
        tu_model_grad(&R);
        tu_model_ref_step(&R, &cfg, t, cfg.lr, NULL, 1.0f);
        ck_assert_mem_eq(M.params[OFF], R.params[OFF], M.sizes[OFF] * sizeof(float));
    }
    tu_model_free(&W);
}
END_TEST

/* ---- weight decay and lr scales -------------------------------------------- */

START_TEST(weight_decay_scale_zero_is_no_decay)
{
    enum { NODECAY = 2 };
    mgpo_config cfg = tu_combo_config(_i & 1);
    cfg.rho = 0.0;
    cfg.weight_decay = 0.2;
    mgpo_tensor_options opts[TU_MAX_TENSORS];
    all_default(opts);
    opts[NODECAY].weight_decay_scale = 0.0;
    tu_model_register(&M, &cfg, opts);

    mgpo_config none = cfg; /* the same run without any weight decay */
    none.weight_decay = 0.0;
    tu_model_register(&R, &none, NULL);
    tu_model E; /* torch-order reference with the options */
    tu_model_init(&E, tu_odd_sizes, TU_ODD_COUNT, 23);
    for (uint64_t t = 1; t <= 10; t++) {
        tu_model_iterate(&M);
        tu_model_iterate(&R);
        tu_model_grad(&E);
        tu_model_ref_step(&E, &cfg, t, cfg.lr, opts, 1.0f);
        tu_assert_matches_ref(&M, &E);
        ck_assert_mem_eq(M.params[NODECAY], R.params[NODECAY],
                         M.sizes[NODECAY] * sizeof(float));
        ck_assert(memcmp(M.params[3], R.params[3], M.sizes[3] * sizeof(float)) != 0);
    }
    tu_model_free(&E);
}
END_TEST

START_TEST(lr_scale_multiplies_lr)
{
    mgpo_config cfg = tu_combo_config(_i & 1);
    cfg.rho = 0.0;
    mgpo_tensor_options opts[TU_MAX_TENSORS];
    all_default(opts);
    opts[0].lr_scale = 0.0; /* frozen */
    opts[3].lr_scale = 3.0; /* LoRA+-style larger lr */
    tu_model_register(&M, &cfg, opts);
    tu_snapshot first;
    tu_snapshot_take(&first, &M);

    /* Tensor 3 against a reference run with lr * 3 on that tensor only. */
    mgpo_config triple = cfg;
    triple.lr = cfg.lr * 3.0;
    tu_model T;
    tu_model_init(&T, tu_odd_sizes, TU_ODD_COUNT, 23);
    for (uint64_t t = 1; t <= 10; t++) {
        tu_model_iterate(&M);
        tu_model_grad(&R);
        tu_model_ref_step(&R, &cfg, t, cfg.lr, opts, 1.0f);
        tu_assert_matches_ref(&M, &R);
        tu_model_grad(&T);
        tu_model_ref_step(&T, &triple, t, triple.lr, NULL, 1.0f);
        ck_assert_mem_eq(M.params[3], T.params[3], M.sizes[3] * sizeof(float));
        ck_assert_mem_eq(M.params[0], first.params[0], M.sizes[0] * sizeof(float));
    }
    tu_snapshot_free(&first);
    tu_model_free(&T);
}
END_TEST

START_TEST(set_lr_takes_effect_at_next_step)
{
    mgpo_config cfg = tu_combo_config(_i);
    cfg.rho = 0.0;
    tu_model_register(&M, &cfg, NULL);
    for (uint64_t t = 1; t <= 12; t++) {
        double lr = cfg.lr * (double)(t % 4 + 1) / 3.0;
        ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
        double last = stats(&M).lr;
        ck_assert_int_eq(mgpo_set_lr(M.st, lr), MGPO_OK);
        ck_assert(stats(&M).lr == last); /* reported after the step only */
        tu_model_grad(&M);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
        ck_assert(stats(&M).lr == lr);
        tu_model_grad(&R);
        tu_model_ref_step(&R, &cfg, t, lr, NULL, 1.0f);
        tu_assert_matches_ref(&M, &R);
    }
}
END_TEST

/* ---- gradients set after registration ------------------------------------- */

START_TEST(gradients_set_after_registration)
{
    mgpo_config cfg = tu_combo_config(_i);
    ck_assert_int_eq(mgpo_create(&M.st, &cfg, NULL), MGPO_OK);
    for (size_t i = 0; i < M.count; i++)
        ck_assert_int_eq(mgpo_add_tensor(M.st, M.params[i], NULL, M.sizes[i], NULL, NULL),
                         MGPO_OK);
    tu_model_register(&R, &cfg, NULL); /* the twin has its gradients from the start */

    /* No gradient anywhere, then all but one: the step refuses and changes
     * nothing. */
    tu_model_grad(&M);
    for (size_t missing = M.count; missing-- > 0;) {
        tu_snapshot before, after;
        tu_snapshot_take(&before, &M);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_ERR_NO_GRADIENT);
        tu_snapshot_take(&after, &M);
        tu_assert_same(&before, &after, TU_CMP_ALL);
        tu_snapshot_free(&before);
        tu_snapshot_free(&after);
        if (missing > 0) ck_assert_int_eq(mgpo_set_grad(M.st, missing, M.grads[missing]),
                                          MGPO_OK);
    }
    ck_assert_int_eq(mgpo_set_grad(M.st, 0, M.grads[0]), MGPO_OK);

    /* Halfway, the trainer moves its gradients to new buffers. */
    float *moved[TU_MAX_TENSORS];
    for (size_t i = 0; i < M.count; i++) {
        moved[i] = malloc(M.sizes[i] * sizeof(float));
        ck_assert_ptr_nonnull(moved[i]);
    }
    for (int it = 0; it < 10; it++) {
        if (it == 5) {
            for (size_t i = 0; i < M.count; i++) {
                free(M.grads[i]);
                M.grads[i] = moved[i];
                ck_assert_int_eq(mgpo_set_grad(M.st, i, M.grads[i]), MGPO_OK);
            }
        }
        tu_model_iterate(&M);
        tu_model_iterate(&R);
    }
    tu_snapshot a, b;
    tu_snapshot_take(&a, &M);
    tu_snapshot_take(&b, &R);
    tu_assert_same(&a, &b, TU_CMP_ALL);
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);

    /* Unsetting a gradient while perturbed: refused, still perturbed. */
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad(M.st, 2, NULL), MGPO_OK);
    tu_snapshot_take(&a, &M);
    ck_assert_int_eq(mgpo_step(M.st), MGPO_ERR_NO_GRADIENT);
    tu_snapshot_take(&b, &M);
    tu_assert_same(&a, &b, TU_CMP_ALL);
    ck_assert_int_eq(b.perturbed, 1);
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);
}
END_TEST

/* ---- clipping --------------------------------------------------------------- */

/* _i: bit 0 optimizer, bit 1 whether max_grad_norm is below the norm. */
START_TEST(clipping_scales_update_not_caller_gradient)
{
    mgpo_config cfg = tu_combo_config(_i & 1);
    int active = (_i & 2) != 0;
    cfg.rho = 0.0;
    tu_model_grad(&M);
    double norm0 = 0.0;
    for (size_t i = 0; i < M.count; i++) norm0 += tu_sum_sq(M.grads[i], M.sizes[i]);
    norm0 = sqrt(norm0);
    cfg.max_grad_norm = active ? 0.3 * norm0 : 100.0 * norm0;
    tu_model_register(&M, &cfg, NULL);
    int clipped_steps = 0;
    for (uint64_t t = 1; t <= 10; t++) {
        tu_model_grad(&M);
        tu_snapshot g;
        tu_snapshot_take(&g, &M);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
        for (size_t i = 0; i < M.count; i++) /* the caller's gradient is intact */
            ck_assert_mem_eq(M.grads[i], g.grads[i], M.sizes[i] * sizeof(float));
        tu_snapshot_free(&g);

        tu_model_grad(&R);
        double raw = 0.0;
        for (size_t i = 0; i < R.count; i++) raw += tu_sum_sq(R.grads[i], R.sizes[i]);
        raw = sqrt(raw);
        float f = tu_clip_factor(&R, cfg.max_grad_norm);
        tu_model_ref_step(&R, &cfg, t, cfg.lr, NULL, f);

        mgpo_stats s = stats(&M);
        ck_assert_int_eq(s.clipped, f < 1.0f);
        clipped_steps += s.clipped;
        /* Norms and the EMA see the raw gradient. */
        ck_assert(tu_close(s.grad_norm, raw, 1e-12));
        ck_assert(tu_close(unit_stats(&M, 0).grad_norm, raw, 1e-12));
        /* The library's norm may differ from this one in the last bits, so
         * its float factor may differ by an ulp: compare to 1e-6. */
        for (size_t i = 0; i < M.count; i++) {
            const float *m = mgpo_internal_moment(M.st, i, 0);
            for (size_t k = 0; k < M.sizes[i]; k++) {
                if (!tu_close(M.params[i][k], R.params[i][k], 1e-6) ||
                    !tu_close(m[k], R.ref_m[i][k], 1e-6))
                    ck_abort_msg("t %d tensor %zu [%zu]: p %.9g vs %.9g, m %.9g vs %.9g",
                                 (int)t, i, k, (double)M.params[i][k],
                                 (double)R.params[i][k], (double)m[k],
                                 (double)R.ref_m[i][k]);
            }
        }
    }
    ck_assert_int_eq(clipped_steps > 0, active);
}
END_TEST

/* ---- statistics --------------------------------------------------------------- */

START_TEST(stats_have_the_right_values)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_grad(&M);
    double norm0 = sqrt(tu_sum_sq(M.grads[3], M.sizes[3]));
    cfg.max_grad_norm = norm0; /* clips in some steps and not in others */
    tu_model_register(&M, &cfg, NULL);
    tu_ref_units r;
    tu_ref_units_init(&r, &cfg, M.count, NULL);

    mgpo_stats s = stats(&M);
    ck_assert(s.step == 0 && s.skipped_steps == 0 && s.grad_norm == 0.0 &&
              s.grad_norm_ema == 0.0 && s.momentum_norm == 0.0 &&
              s.perturbation_norm == 0.0 && s.perturbation_scale == 0.0 &&
              s.perturbed == 0 && s.clipped == 0 && s.lr == cfg.lr);
    for (size_t u = 0; u < r.count; u++) {
        mgpo_unit_stats us = unit_stats(&M, u);
        ck_assert(us.grad_norm == 0.0 && us.grad_norm_ema == 0.0 &&
                  us.momentum_norm == 0.0 && us.scale == 0.0 && us.coefficient == 0.0);
    }
    int clipped = 0;
    for (uint64_t t = 1; t <= 12; t++) {
        tu_snapshot clean;
        tu_snapshot_take(&clean, &M);
        ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
        if (t > 1) {
            ck_assert_uint_eq(tu_check_perturbation(&M, &cfg, &r, &clean), r.count);
            ck_assert_int_eq(stats(&M).perturbed, 1);
        }
        tu_snapshot_free(&clean);
        tu_model_grad(&M);
        tu_ref_units_step(&r, &cfg, &M);
        double raw = 0.0, ema_sq = 0.0;
        for (size_t i = 0; i < M.count; i++) raw += tu_sum_sq(M.grads[i], M.sizes[i]);
        raw = sqrt(raw);
        for (size_t u = 0; u < r.count; u++) ema_sq += r.gbar[u] * r.gbar[u];
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);

        s = stats(&M);
        ck_assert_uint_eq(s.step, t);
        ck_assert_uint_eq(s.skipped_steps, 0);
        ck_assert(s.lr == cfg.lr);
        ck_assert(tu_close(s.grad_norm, raw, 1e-12));
        ck_assert(tu_close(s.grad_norm_ema, sqrt(ema_sq), 1e-12));
        ck_assert_int_eq(s.clipped, raw + 1e-6 > cfg.max_grad_norm);
        ck_assert_int_eq(s.perturbed, 0);
        clipped += s.clipped;
    }
    ck_assert(clipped > 0 && clipped < 12);

    /* A refused step counts as skipped and leaves the step count. */
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    tu_model_grad(&M);
    M.grads[2][500] = NAN;
    ck_assert_int_eq(mgpo_step(M.st), MGPO_ERR_NONFINITE_GRADIENT);
    s = stats(&M);
    ck_assert_uint_eq(s.step, 12);
    ck_assert_uint_eq(s.skipped_steps, 1);
    ck_assert_int_eq(s.perturbed, 0);
}
END_TEST

/* ---- threads ----------------------------------------------------------------- */

/* Results are bitwise the same for any num_threads (the 4097-float tensor
 * spans two blocks, so work is really split when OpenMP is built in). */
START_TEST(thread_count_does_not_change_bits)
{
    mgpo_config one = tu_combo_config(_i), many = one;
    one.num_threads = 1;
    many.num_threads = 3;
    tu_model_register(&M, &one, NULL);
    tu_model_register(&R, &many, NULL);
    for (int it = 0; it < 10; it++) {
        tu_model_iterate(&M);
        tu_model_iterate(&R);
    }
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(R.st), MGPO_OK);
    tu_snapshot a, b;
    tu_snapshot_take(&a, &M);
    tu_snapshot_take(&b, &R);
    tu_assert_same(&a, &b, TU_CMP_ALL);
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("options");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, perturb_off_tensor_untouched_and_not_in_norms, 0, TU_COMBOS);
    tcase_add_loop_test(tc, weight_decay_scale_zero_is_no_decay, 0, 2);
    tcase_add_loop_test(tc, lr_scale_multiplies_lr, 0, 2);
    tcase_add_loop_test(tc, set_lr_takes_effect_at_next_step, 0, TU_COMBOS);
    tcase_add_loop_test(tc, gradients_set_after_registration, 0, TU_COMBOS);
    tcase_add_loop_test(tc, clipping_scales_update_not_caller_gradient, 0, 4);
    tcase_add_loop_test(tc, stats_have_the_right_values, 0, TU_COMBOS);
    tcase_add_loop_test(tc, thread_count_does_not_change_bits, 0, TU_COMBOS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
