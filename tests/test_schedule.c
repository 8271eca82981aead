/* Learning-rate schedules against the closed forms of transformers'
 * get_cosine_schedule_with_warmup / get_linear_schedule_with_warmup (with a
 * min_lr floor: lr = min + (peak - min) * factor), exact spot values, the
 * paper's 3 % warm-up, and bad input. */
#include "test_util.h"

#include <math.h>

static const double PI = 3.14159265358979323846;

/* transformers' lr_lambda, with the header's rule that the lr stays at
 * min_lr from total_steps on. */
static double expected_lr(const mgpo_schedule *s, uint64_t step)
{
    double w = (double)s->warmup_steps, total = (double)s->total_steps;
    if (step < s->warmup_steps) return s->peak_lr * ((double)step / (w > 1 ? w : 1));
    double factor;
    switch (s->kind) {
    case MGPO_SCHEDULE_WARMUP_COSINE: {
        double span = total - w > 1 ? total - w : 1;
        double progress = step >= s->total_steps ? 1.0 : ((double)step - w) / span;
        factor = fmax(0.0, 0.5 * (1.0 + cos(PI * 2.0 * 0.5 * progress)));
        break;
    }
    case MGPO_SCHEDULE_WARMUP_LINEAR: {
        double span = total - w > 1 ? total - w : 1;
        factor = step >= s->total_steps ? 0.0 : fmax(0.0, (total - (double)step) / span);
        break;
    }
    default: factor = 1.0;
    }
    return s->min_lr + (s->peak_lr - s->min_lr) * factor;
}

static double lr_at(const mgpo_schedule *s, uint64_t step)
{
    double lr = -1.0;
    ck_assert_int_eq(mgpo_schedule_lr(s, step, &lr), MGPO_OK);
    return lr;
}

static mgpo_schedule schedule(mgpo_schedule_kind kind, double peak, double min,
                              uint64_t warmup, uint64_t total)
{
    mgpo_schedule s = {kind, peak, min, warmup, total};
    return s;
}

/* _i: kind x a few (warmup, total, min) shapes. */
START_TEST(matches_closed_form)
{
    static const struct { uint64_t warmup, total; double min; } shapes[] = {
        {10, 100, 0.0}, {10, 100, 1e-5}, {0, 37, 0.0}, {3, 1000, 2e-6}, {7, 8, 0.0}};
    mgpo_schedule_kind kind = (mgpo_schedule_kind)(_i % 3);
    const int shape = _i / 3;
    mgpo_schedule s = schedule(kind, 3e-4, shapes[shape].min, shapes[shape].warmup,
                               shapes[shape].total);
    for (uint64_t step = 0; step <= s.total_steps + 20; step++) {
        double got = lr_at(&s, step), want = expected_lr(&s, step);
        ck_assert_msg(tu_close(got, want, 1e-13) || fabs(got - want) < 1e-19,
                      "kind %d step %d: %.17g vs %.17g", (int)kind, (int)step, got, want);
        ck_assert(got >= s.min_lr || step < s.warmup_steps);
        ck_assert(got <= s.peak_lr);
    }
}
END_TEST

START_TEST(exact_spot_values)
{
    const mgpo_schedule_kind kinds[] = {MGPO_SCHEDULE_WARMUP_COSINE,
                                        MGPO_SCHEDULE_WARMUP_LINEAR};
    for (int k = 0; k < 2; k++) {
        /* peak 2, min 0.5: (peak + min) / 2 = 1.25 is exact. */
        mgpo_schedule s = schedule(kinds[k], 2.0, 0.5, 10, 110);
        ck_assert(lr_at(&s, 0) == 0.0);   /* warm-up starts at 0 */
        ck_assert(lr_at(&s, 5) == 1.0);   /* half-way up */
        ck_assert(lr_at(&s, 10) == 2.0);  /* end of warm-up: peak */
        ck_assert(lr_at(&s, 60) == 1.25); /* middle of the decay */
        ck_assert(lr_at(&s, 110) == 0.5); /* end: min */
        ck_assert(lr_at(&s, 5000) == 0.5);
        ck_assert(lr_at(&s, UINT64_MAX) == 0.5);
        /* The paper's form (min 0). */
        s = schedule(kinds[k], 1e-4, 0.0, 3, 100);
        ck_assert(lr_at(&s, 0) == 0.0);
        ck_assert(lr_at(&s, 3) == 1e-4);
        ck_assert(lr_at(&s, 100) == 0.0);
    }
    /* Cosine at a quarter of the decay: (1 + cos(pi/4)) / 2. */
    mgpo_schedule s = schedule(MGPO_SCHEDULE_WARMUP_COSINE, 1.0, 0.0, 0, 100);
    ck_assert(tu_close(lr_at(&s, 25), 0.5 * (1.0 + sqrt(0.5)), 1e-15));
    ck_assert(lr_at(&s, 0) == 1.0); /* no warm-up: peak at step 0 */
    /* Constant: warm-up, then peak for ever. */
    s = schedule(MGPO_SCHEDULE_CONSTANT, 0.5, 0.0, 4, 10);
    ck_assert(lr_at(&s, 1) == 0.125);
    ck_assert(lr_at(&s, 4) == 0.5);
    ck_assert(lr_at(&s, 1000) == 0.5);
    /* No decay span (warmup == total): min from then on. */
    s = schedule(MGPO_SCHEDULE_WARMUP_LINEAR, 1.0, 0.25, 5, 5);
    ck_assert(lr_at(&s, 4) == 0.8);
    ck_assert(lr_at(&s, 5) == 0.25);
}
END_TEST

START_TEST(paper_schedule_warms_up_over_3_percent_rounded_up)
{
    static const uint64_t totals[][2] = {{0, 0},   {1, 1},    {33, 1},    {34, 2},
                                         {100, 3}, {101, 4},  {1000, 30}, {1001, 31},
                                         {3334, 101}, {100000, 3000}};
    for (size_t k = 0; k < sizeof totals / sizeof totals[0]; k++) {
        mgpo_schedule s = mgpo_schedule_paper(2e-5, totals[k][0]);
        ck_assert_int_eq(s.kind, MGPO_SCHEDULE_WARMUP_COSINE);
        ck_assert(s.peak_lr == 2e-5 && s.min_lr == 0.0);
        ck_assert_uint_eq(s.total_steps, totals[k][0]);
        ck_assert_uint_eq(s.warmup_steps, totals[k][1]);
    }
    for (uint64_t total = 0; total <= 5000; total++) {
        mgpo_schedule s = mgpo_schedule_paper(1.0, total);
        ck_assert_uint_eq(s.warmup_steps, (uint64_t)ceil(3.0 * (double)total / 100.0));
        double lr;
        ck_assert_int_eq(mgpo_schedule_lr(&s, total / 2, &lr), MGPO_OK);
    }
}
END_TEST

/* The library's own cos(pi x) and beta^t (lib/repro_math.c, the same bits on
 * every platform) against libm: a few ulp, and the exact points exact. */
START_TEST(reproducible_math_is_close_to_libm)
{
    const double pi = 3.14159265358979323846;
    double worst = 0.0;
    for (int i = 0; i <= 100000; i++) {
        double x = (double)i / 100000.0;
        double err = fabs(mgpo_cos_pi(x) - cos(pi * x));
        if (err > worst) worst = err;
    }
    /* cos(pi x) itself moves by pi*|x|*2^-53 when pi*x rounds: 1e-15 bounds
     * both functions' rounding. */
    ck_assert_msg(worst < 1e-15, "cos_pi off by %g", worst);
    ck_assert(mgpo_cos_pi(0.0) == 1.0 && mgpo_cos_pi(0.5) == 0.0 && mgpo_cos_pi(1.0) == -1.0);
    ck_assert(mgpo_cos_pi(0.25) == -mgpo_cos_pi(0.75));

    const double betas[] = {0.9, 0.99, 0.999, 0.95, 0.5};
    for (size_t b = 0; b < sizeof betas / sizeof betas[0]; b++) {
        ck_assert(mgpo_pow_u64(betas[b], 0) == 1.0 && mgpo_pow_u64(betas[b], 1) == betas[b]);
        for (uint64_t t = 1; t <= 1u << 20; t = t * 3 / 2 + 1) {
            double want = pow(betas[b], (double)t), got = mgpo_pow_u64(betas[b], t);
            /* Each squaring doubles the relative error: within 2t rounding
             * units of pow's (1.11e-16 each) ... */
            ck_assert_msg(fabs(got - want) <= want * (double)t * 2.3e-16 ||
                              (want < 1e-300 && got < 1e-300),
                          "%g^%llu: %.17g vs %.17g", betas[b], (unsigned long long)t, got, want);
            /* ... which leaves 1 - beta^t, the bias correction, within 1e-11
             * relative: 5000 times finer than float's rounding. */
            ck_assert(tu_close(1.0 - got, 1.0 - want, 1e-11));
        }
    }
}
END_TEST

START_TEST(bad_input)
{
    mgpo_schedule good = schedule(MGPO_SCHEDULE_WARMUP_COSINE, 1e-3, 1e-5, 10, 100);
    double lr = 42.0;
    ck_assert_int_eq(mgpo_schedule_lr(NULL, 0, &lr), MGPO_ERR_NULL_ARGUMENT);
    ck_assert_int_eq(mgpo_schedule_lr(&good, 0, NULL), MGPO_ERR_NULL_ARGUMENT);

    const struct { mgpo_schedule s; mgpo_status code; } bad[] = {
        {{(mgpo_schedule_kind)3, 1e-3, 0.0, 1, 10}, MGPO_ERR_BAD_ENUM},
        {{(mgpo_schedule_kind)-1, 1e-3, 0.0, 1, 10}, MGPO_ERR_BAD_ENUM},
        {{MGPO_SCHEDULE_WARMUP_COSINE, -1e-3, 0.0, 1, 10}, MGPO_ERR_BAD_LR},
        {{MGPO_SCHEDULE_WARMUP_COSINE, NAN, 0.0, 1, 10}, MGPO_ERR_BAD_LR},
        {{MGPO_SCHEDULE_WARMUP_LINEAR, INFINITY, 0.0, 1, 10}, MGPO_ERR_BAD_LR},
        {{MGPO_SCHEDULE_WARMUP_LINEAR, 1e-3, -1e-6, 1, 10}, MGPO_ERR_BAD_LR},
        {{MGPO_SCHEDULE_WARMUP_LINEAR, 1e-3, NAN, 1, 10}, MGPO_ERR_BAD_LR},
        {{MGPO_SCHEDULE_CONSTANT, 1e-3, 2e-3, 1, 10}, MGPO_ERR_BAD_LR},
        {{MGPO_SCHEDULE_WARMUP_COSINE, 1e-3, 0.0, 11, 10}, MGPO_ERR_INVALID_ARGUMENT},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        for (uint64_t step = 0; step < 12; step += 5) {
            ck_assert_int_eq(mgpo_schedule_lr(&bad[k].s, step, &lr), bad[k].code);
            ck_assert(lr == 42.0); /* untouched */
        }
    }
}
END_TEST

/* Where total * 3 does not fit in 64 bits; expected values are exact
 * integers ceil(3 T / 100) computed in Python (arbitrary precision). */
START_TEST(paper_schedule_huge_step_counts)
{
    static const uint64_t totals[][2] = {
        {18446744073709551615ull, 553402322211286549ull}, /* UINT64_MAX */
        {18446744073709551614ull, 553402322211286549ull},
        {18446744073709551516ull, 553402322211286546ull},
        {9223372036854775808ull, 276701161105643275ull},  /* 2^63 */
        {6148914691236517206ull, 184467440737095517ull},  /* first T with 3T > UINT64_MAX */
        {6148914691236517205ull, 184467440737095517ull},
    };
    for (size_t k = 0; k < sizeof totals / sizeof totals[0]; k++) {
        mgpo_schedule s = mgpo_schedule_paper(1.0, totals[k][0]);
        ck_assert_uint_eq(s.warmup_steps, totals[k][1]);
        double lr;
        ck_assert_int_eq(mgpo_schedule_lr(&s, totals[k][0] - 1, &lr), MGPO_OK);
        ck_assert(lr >= 0.0 && lr < 1e-9); /* the end of the cosine */
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("schedule");
    TCase *tc = tcase_create("schedule");
    tcase_add_loop_test(tc, matches_closed_form, 0, 15);
    tcase_add_test(tc, exact_spot_values);
    tcase_add_test(tc, paper_schedule_warms_up_over_3_percent_rounded_up);
    tcase_add_test(tc, paper_schedule_huge_step_counts);
    tcase_add_test(tc, reproducible_math_is_close_to_libm);
    tcase_add_test(tc, bad_input);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
