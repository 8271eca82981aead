/* Gradient accumulation: one perturb, several micro-batches added into the
 * gradient buffers by the caller, one step, and gbar moves once per step.
 * A second perturb is a no-op. */
#include "test_util.h"

#include <math.h>
#include <string.h>

static tu_model M;

static void setup(void) { tu_model_init(&M, tu_odd_sizes, TU_ODD_COUNT, 53); }
static void teardown(void) { tu_model_free(&M); }

static mgpo_unit_stats unit_stats(size_t u)
{
    mgpo_unit_stats s;
    ck_assert_int_eq(mgpo_get_unit_stats(M.st, u, &s), MGPO_OK);
    return s;
}

START_TEST(gbar_moves_once_per_step)
{
    mgpo_config cfg = tu_combo_config(_i);
    cfg.norm_ema = 0.6;
    tu_model_register(&M, &cfg, NULL);
    tu_ref_units r;
    tu_ref_units_init(&r, &cfg, M.count, NULL);
    for (uint64_t t = 1; t <= 8; t++) {
        double previous[TU_MAX_TENSORS];
        memcpy(previous, r.gbar, sizeof previous);
        ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
        /* Two micro-batches at the same perturbed point, summed by the
         * caller into the gradient buffers. */
        tu_model_grad(&M);
        tu_model_grad_accumulate(&M, 0.25f);
        int perturbed;
        ck_assert_int_eq(mgpo_is_perturbed(M.st, &perturbed), MGPO_OK);
        ck_assert_int_eq(perturbed, t > 1);
        tu_ref_units_step(&r, &cfg, &M);
        ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);

        mgpo_stats s;
        ck_assert_int_eq(mgpo_get_stats(M.st, &s), MGPO_OK);
        ck_assert_uint_eq(s.step, t);
        for (size_t u = 0; u < r.count; u++) {
            double gamma = unit_stats(u).grad_norm;
            double once = r.gbar[u];
            ck_assert_msg(tu_close(unit_stats(u).grad_norm_ema, once, 1e-12),
                          "t %d unit %zu: %.17g vs %.17g", (int)t, u,
                          unit_stats(u).grad_norm_ema, once);
            if (t > 1) { /* an EMA fed twice (once per micro-batch) differs */
                double b = cfg.norm_ema;
                double twice = b * (b * previous[u] + (1 - b) * gamma) + (1 - b) * gamma;
                ck_assert(!tu_close(once, twice, 1e-6));
            }
        }
    }
}
END_TEST

START_TEST(second_perturb_is_a_noop)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&M, &cfg, NULL);
    for (int it = 0; it < 4; it++) tu_model_iterate(&M);

    tu_snapshot clean, once, twice;
    tu_snapshot_take(&clean, &M);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    tu_snapshot_take(&once, &M);
    ck_assert_int_eq(once.perturbed, 1);
    /* Even with a new rho the applied perturbation stays as it is. */
    ck_assert_int_eq(mgpo_set_rho(M.st, 2.0 * cfg.rho), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    tu_snapshot_take(&twice, &M);
    tu_assert_same(&once, &twice, TU_CMP_ALL);

    /* The backup still holds the clean values. */
    ck_assert_int_eq(mgpo_restore(M.st), MGPO_OK);
    tu_assert_params_same(&M, &clean);

    /* The next perturb uses the new rho: every coefficient doubles. */
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    for (size_t u = 0; u < once.unit_count; u++) {
        ck_assert(once.units[u].coefficient != 0.0);
        ck_assert(unit_stats(u).coefficient == 2.0 * once.units[u].coefficient);
    }
    ck_assert_int_eq(mgpo_restore(M.st), MGPO_OK);
    tu_assert_params_same(&M, &clean);
    tu_snapshot_free(&clean);
    tu_snapshot_free(&once);
    tu_snapshot_free(&twice);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("accumulation");
    TCase *tc = tcase_create("accumulation");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, gbar_moves_once_per_step, 0, TU_COMBOS);
    tcase_add_loop_test(tc, second_perturb_is_a_noop, 0, TU_COMBOS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
