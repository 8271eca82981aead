/* Restore is bit-exact, perturb + restore changes nothing, and a step on a
 * perturbed state is bitwise a restore followed by a step.  Every test runs
 * for the eight optimizer x scope x sign combinations (loop index _i). */
#include "test_util.h"

#include <math.h>
#include <string.h>

static tu_model A, B; /* twins: same sizes, same seed, same values */

static void setup(void)
{
    tu_model_init(&A, tu_odd_sizes, TU_ODD_COUNT, 7);
    tu_model_init(&B, tu_odd_sizes, TU_ODD_COUNT, 7);
}

static void teardown(void)
{
    tu_model_free(&A);
    tu_model_free(&B);
}

static int perturbed(const tu_model *m)
{
    int p = -1;
    ck_assert_int_eq(mgpo_is_perturbed(m->st, &p), MGPO_OK);
    return p;
}

/* Number of parameter elements that differ (bitwise) from the snapshot. */
static size_t count_changed(const tu_model *m, const tu_snapshot *s)
{
    size_t changed = 0;
    for (size_t i = 0; i < m->count; i++)
        for (size_t k = 0; k < m->sizes[i]; k++)
            changed += memcmp(&m->params[i][k], &s->params[i][k], sizeof(float)) != 0;
    return changed;
}

START_TEST(restore_exact_on_random_buffers)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&A, &cfg, NULL);
    for (int round = 0; round < 6; round++) {
        /* Fresh random parameters and gradients over a wide range of
         * magnitudes, with zeros, -0 and subnormals, before each step. */
        for (size_t i = 0; i < A.count; i++) {
            tu_fill_wide(A.params[i], A.sizes[i], 1000 + 10 * round + i, -30, 30);
            tu_fill_wide(A.grads[i], A.sizes[i], 2000 + 10 * round + i, -20, 4);
        }
        tu_snapshot clean;
        tu_snapshot_take(&clean, &A);
        ck_assert_int_eq(mgpo_perturb(A.st), MGPO_OK);
        ck_assert_int_eq(perturbed(&A), round > 0);
        if (round > 0) ck_assert_uint_gt(count_changed(&A, &clean), 1000);
        ck_assert_int_eq(mgpo_restore(A.st), MGPO_OK);
        ck_assert_int_eq(perturbed(&A), 0);
        tu_assert_params_same(&A, &clean);
        tu_snapshot_free(&clean);
        ck_assert_int_eq(mgpo_step(A.st), MGPO_OK);
    }
}
END_TEST

START_TEST(restore_exact_after_many_iterations)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&A, &cfg, NULL);
    int perturbations = 0;
    for (int it = 0; it < 200; it++) {
        tu_snapshot clean;
        tu_snapshot_take(&clean, &A);
        ck_assert_int_eq(mgpo_perturb(A.st), MGPO_OK);
        if (perturbed(&A)) {
            perturbations++;
            ck_assert_uint_gt(count_changed(&A, &clean), 0);
        }
        tu_model_grad(&A); /* at the perturbed point, as a trainer would */
        ck_assert_int_eq(mgpo_restore(A.st), MGPO_OK);
        tu_assert_params_same(&A, &clean);
        tu_snapshot_free(&clean);
        ck_assert_int_eq(mgpo_step(A.st), MGPO_OK);
    }
    ck_assert_int_eq(perturbations, 199); /* all but the first iteration */
}
END_TEST

START_TEST(perturb_restore_changes_nothing)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&A, &cfg, NULL);
    tu_model_register(&B, &cfg, NULL);
    for (int it = 0; it < 5; it++) {
        tu_model_iterate(&A);
        tu_model_iterate(&B);
    }

    tu_snapshot before, after, sa, sb;
    tu_snapshot_take(&before, &A);
    ck_assert_int_eq(mgpo_perturb(A.st), MGPO_OK);
    ck_assert_int_eq(perturbed(&A), 1);
    ck_assert_uint_gt(count_changed(&A, &before), 0);
    ck_assert_int_eq(mgpo_restore(A.st), MGPO_OK);
    tu_snapshot_take(&after, &A);
    /* Everything but the report of the last perturb is as before. */
    tu_assert_same(&before, &after, TU_IGNORE_PERTURB_REPORT);

    /* And the future is the same as for the twin that never perturbed. */
    tu_model_grad(&A);
    tu_model_grad(&B);
    ck_assert_int_eq(mgpo_step(A.st), MGPO_OK);
    ck_assert_int_eq(mgpo_step(B.st), MGPO_OK);
    tu_model_iterate(&A);
    tu_model_iterate(&B);
    tu_snapshot_take(&sa, &A);
    tu_snapshot_take(&sb, &B);
    tu_assert_same(&sa, &sb, TU_CMP_ALL);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    tu_snapshot_free(&sa);
    tu_snapshot_free(&sb);
}
END_TEST

START_TEST(restore_when_clean_is_a_noop)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&A, &cfg, NULL);
    for (int it = 0; it < 4; it++) {
        /* it 0: before any step; later: between steps, and twice after a
         * perturb + restore. */
        if (it >= 2) {
            ck_assert_int_eq(mgpo_perturb(A.st), MGPO_OK);
            ck_assert_int_eq(mgpo_restore(A.st), MGPO_OK);
        }
        tu_snapshot before, after;
        tu_snapshot_take(&before, &A);
        ck_assert_int_eq(mgpo_restore(A.st), MGPO_OK);
        tu_snapshot_take(&after, &A);
        tu_assert_same(&before, &after, TU_CMP_ALL);
        tu_snapshot_free(&before);
        tu_snapshot_free(&after);
        tu_model_grad(&A);
        ck_assert_int_eq(mgpo_step(A.st), MGPO_OK);
    }
}
END_TEST

START_TEST(step_on_perturbed_equals_restore_then_step)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&A, &cfg, NULL);
    tu_model_register(&B, &cfg, NULL);
    for (int it = 0; it < 20; it++) {
        ck_assert_int_eq(mgpo_perturb(A.st), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(B.st), MGPO_OK);
        ck_assert_int_eq(perturbed(&A), it > 0);
        tu_model_grad(&A);
        tu_model_grad(&B);
        ck_assert_int_eq(mgpo_step(A.st), MGPO_OK); /* restores inside */
        ck_assert_int_eq(mgpo_restore(B.st), MGPO_OK);
        ck_assert_int_eq(mgpo_step(B.st), MGPO_OK);
        tu_snapshot sa, sb;
        tu_snapshot_take(&sa, &A);
        tu_snapshot_take(&sb, &B);
        tu_assert_same(&sa, &sb, TU_CMP_ALL);
        tu_snapshot_free(&sa);
        tu_snapshot_free(&sb);
    }
}
END_TEST

/* Low-memory mode keeps no backup: restore subtracts c*m again, which is
 * exact only up to float rounding, and the step's fused undo must give the
 * bits of restore + step. */
START_TEST(low_memory_restore_is_close_and_step_fuses_it)
{
    mgpo_config cfg = tu_combo_config(_i);
    cfg.restore_mode = MGPO_RESTORE_LOW_MEMORY;
    tu_model_register(&A, &cfg, NULL);
    tu_model_register(&B, &cfg, NULL);
    for (int it = 0; it < 20; it++) {
        tu_snapshot clean;
        tu_snapshot_take(&clean, &A);
        ck_assert_int_eq(mgpo_perturb(A.st), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(B.st), MGPO_OK);
        ck_assert_int_eq(perturbed(&A), it > 0);
        if (it > 0) ck_assert_uint_gt(count_changed(&A, &clean), 1000);
        tu_model_grad(&A);
        tu_model_grad(&B);
        ck_assert_int_eq(mgpo_restore(B.st), MGPO_OK);
        ck_assert_int_eq(perturbed(&B), 0);
        for (size_t i = 0; i < B.count; i++)
            for (size_t k = 0; k < B.sizes[i]; k++)
                if (!tu_close(B.params[i][k], clean.params[i][k], 1e-6) &&
                    fabs(B.params[i][k] - clean.params[i][k]) > 1e-7)
                    ck_abort_msg("tensor %zu [%zu]: %.9g vs clean %.9g", i, k,
                                 (double)B.params[i][k], (double)clean.params[i][k]);
        tu_snapshot_free(&clean);
        ck_assert_int_eq(mgpo_step(A.st), MGPO_OK);
        ck_assert_int_eq(mgpo_step(B.st), MGPO_OK);
        tu_snapshot sa, sb;
        tu_snapshot_take(&sa, &A);
        tu_snapshot_take(&sb, &B);
        tu_assert_same(&sa, &sb, TU_CMP_ALL);
        tu_snapshot_free(&sa);
        tu_snapshot_free(&sb);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("restore");
    TCase *tc = tcase_create("exact");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, restore_exact_on_random_buffers, 0, TU_COMBOS);
    tcase_add_loop_test(tc, restore_exact_after_many_iterations, 0, TU_COMBOS);
    tcase_add_loop_test(tc, perturb_restore_changes_nothing, 0, TU_COMBOS);
    tcase_add_loop_test(tc, restore_when_clean_is_a_noop, 0, TU_COMBOS);
    tcase_add_loop_test(tc, step_on_perturbed_equals_restore_then_step, 0, TU_COMBOS);
    tcase_add_loop_test(tc, low_memory_restore_is_close_and_step_fuses_it, 0, TU_COMBOS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
