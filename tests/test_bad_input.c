/* Bad input: every documented error code, and that a refused call changes
 * nothing (parameters, gradients and state are snapshotted before and
 * compared after).  Also error names, versions and the caller's allocator. */
#include "test_util.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tu_model M, R; /* M gets the bad calls; R is a twin that never does */

static void setup(void)
{
    tu_model_init(&M, tu_odd_sizes, TU_ODD_COUNT, 31);
    tu_model_init(&R, tu_odd_sizes, TU_ODD_COUNT, 31);
}

static void teardown(void)
{
    tu_model_free(&M);
    tu_model_free(&R);
}

/* Runs `call` (an expression) and asserts it returns `code` and leaves M's
 * buffers and state bitwise as they were. */
#define ASSERT_REFUSED(call, code)                                           \
    do {                                                                     \
        tu_snapshot before_, after_;                                         \
        tu_snapshot_take(&before_, &M);                                      \
        ck_assert_int_eq((call), (code));                                    \
        tu_snapshot_take(&after_, &M);                                       \
        tu_assert_same(&before_, &after_, TU_CMP_ALL);                       \
        tu_snapshot_free(&before_);                                          \
        tu_snapshot_free(&after_);                                           \
    } while (0)

/* Iterates M and R together and asserts they stay bitwise equal. */
static void assert_twins_agree(int iterations, unsigned ignore)
{
    for (int it = 0; it < iterations; it++) {
        tu_model_iterate(&M);
        tu_model_iterate(&R);
    }
    tu_snapshot a, b;
    tu_snapshot_take(&a, &M);
    tu_snapshot_take(&b, &R);
    tu_assert_same(&a, &b, ignore);
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);
}

/* ---- configuration ---------------------------------------------------------- */

typedef struct field_value {
    size_t offset; /* in mgpo_config; 0 with is_int -1 ends the list */
    int is_int;    /* int or enum field, else double */
    double value;
} field_value;

typedef struct bad_config {
    const char *what;
    field_value set[2];
    mgpo_status expected;
} bad_config;

#define D(field, v) {offsetof(mgpo_config, field), 0, (v)}
#define I(field, v) {offsetof(mgpo_config, field), 1, (v)}
#define NONE {0, -1, 0}
#define BAD1(f, code) {#f, {f, NONE}, code}
#define BAD2(f, g, code) {#f ", " #g, {f, g}, code}

static const bad_config bad_configs[] = {
    BAD1(D(lr, -1.0), MGPO_ERR_BAD_LR),
    BAD1(D(lr, NAN), MGPO_ERR_BAD_LR),
    BAD1(D(lr, INFINITY), MGPO_ERR_BAD_LR),
    BAD1(D(beta1, 1.0), MGPO_ERR_BAD_BETA),
    BAD1(D(beta1, -0.1), MGPO_ERR_BAD_BETA),
    BAD1(D(beta1, NAN), MGPO_ERR_BAD_BETA),
    BAD1(D(beta2, 1.0), MGPO_ERR_BAD_BETA),
    BAD1(D(beta2, -0.1), MGPO_ERR_BAD_BETA),
    BAD1(D(momentum, 1.0), MGPO_ERR_BAD_BETA),
    BAD1(D(momentum, -0.1), MGPO_ERR_BAD_BETA),
    BAD1(D(dampening, 1.0), MGPO_ERR_BAD_BETA),
    BAD1(D(dampening, -0.1), MGPO_ERR_BAD_BETA),
    BAD1(D(norm_ema, 1.0), MGPO_ERR_BAD_BETA),
    BAD1(D(norm_ema, -0.1), MGPO_ERR_BAD_BETA),
    BAD2(I(nesterov, 1), D(momentum, 0.0), MGPO_ERR_BAD_BETA),
    BAD2(I(nesterov, 1), D(dampening, 0.5), MGPO_ERR_BAD_BETA),
    BAD1(D(eps, 0.0), MGPO_ERR_BAD_EPSILON),
    BAD1(D(eps, -1e-8), MGPO_ERR_BAD_EPSILON),
    BAD1(D(eps, NAN), MGPO_ERR_BAD_EPSILON),
    BAD1(D(norm_eps, -1.0), MGPO_ERR_BAD_EPSILON),
    BAD1(D(norm_eps, 0.0), MGPO_ERR_BAD_EPSILON),
    BAD1(D(norm_eps, INFINITY), MGPO_ERR_BAD_EPSILON),
    BAD1(D(weight_decay, -1.0), MGPO_ERR_BAD_WEIGHT_DECAY),
    BAD1(D(weight_decay, NAN), MGPO_ERR_BAD_WEIGHT_DECAY),
    BAD1(D(rho, -1.0), MGPO_ERR_BAD_RHO),
    BAD1(D(rho, NAN), MGPO_ERR_BAD_RHO),
    BAD1(D(rho, INFINITY), MGPO_ERR_BAD_RHO),
    BAD1(D(scale_max, 0.0), MGPO_ERR_BAD_SCALE_MAX),
    BAD1(D(scale_max, -10.0), MGPO_ERR_BAD_SCALE_MAX),
    BAD1(D(scale_max, INFINITY), MGPO_ERR_BAD_SCALE_MAX),
    BAD1(I(optimizer, 2), MGPO_ERR_BAD_ENUM),
    BAD1(I(optimizer, -1), MGPO_ERR_BAD_ENUM),
    BAD1(I(sign, 0), MGPO_ERR_BAD_ENUM),
    BAD1(I(sign, 2), MGPO_ERR_BAD_ENUM),
    BAD1(I(scope, 2), MGPO_ERR_BAD_ENUM),
    BAD1(I(restore_mode, 2), MGPO_ERR_BAD_ENUM),
    BAD1(I(restore_mode, -1), MGPO_ERR_BAD_ENUM),
    BAD1(I(nesterov, 2), MGPO_ERR_BAD_ENUM),
    BAD1(D(max_grad_norm, -1.0), MGPO_ERR_BAD_CLIP),
    BAD1(D(max_grad_norm, NAN), MGPO_ERR_BAD_CLIP),
    BAD1(D(max_grad_norm, INFINITY), MGPO_ERR_BAD_CLIP),
    BAD1(I(num_threads, -1), MGPO_ERR_BAD_THREADS),
};
#define BAD_CONFIGS ((int)(sizeof bad_configs / sizeof bad_configs[0]))

/* Boundary values that must be accepted. */
static const bad_config good_configs[] = {
    BAD1(D(lr, 0.0), MGPO_OK),
    BAD1(D(beta1, 0.0), MGPO_OK),
    BAD1(D(rho, 0.0), MGPO_OK),
    BAD1(D(weight_decay, 0.0), MGPO_OK),
    BAD1(D(max_grad_norm, 0.0), MGPO_OK),
    BAD1(I(num_threads, 0), MGPO_OK),
    BAD1(I(num_threads, 3), MGPO_OK),
    BAD1(I(optimizer, MGPO_OPTIMIZER_SGD), MGPO_OK),
    BAD2(I(nesterov, 1), I(optimizer, MGPO_OPTIMIZER_SGD), MGPO_OK),
    BAD1(I(restore_mode, MGPO_RESTORE_LOW_MEMORY), MGPO_OK),
};
#define GOOD_CONFIGS ((int)(sizeof good_configs / sizeof good_configs[0]))

static mgpo_config apply(const bad_config *b)
{
    ck_assert_uint_eq(sizeof(mgpo_optimizer), sizeof(int));
    mgpo_config c = mgpo_config_default();
    for (int k = 0; k < 2 && b->set[k].is_int >= 0; k++) {
        unsigned char *at = (unsigned char *)&c + b->set[k].offset;
        if (b->set[k].is_int) {
            int v = (int)b->set[k].value;
            memcpy(at, &v, sizeof v);
        } else {
            memcpy(at, &b->set[k].value, sizeof(double));
        }
    }
    return c;
}

static void check_config(const bad_config *b)
{
    mgpo_config c = apply(b);
    ck_assert_msg(mgpo_config_validate(&c) == b->expected, "%s: validate gives %d, want %d",
                  b->what, (int)mgpo_config_validate(&c), (int)b->expected);
    mgpo_state *st = (mgpo_state *)&c; /* must be overwritten */
    ck_assert_msg(mgpo_create(&st, &c, NULL) == b->expected, "%s: create", b->what);
    if (b->expected != MGPO_OK) ck_assert_ptr_null(st);
    mgpo_destroy(st);
}

START_TEST(config_field_out_of_range)
{
    check_config(&bad_configs[_i]);
}
END_TEST

START_TEST(config_boundary_accepted)
{
    check_config(&good_configs[_i]);
}
END_TEST

START_TEST(setters_refuse_bad_values)
{
    tu_model_register(&M, NULL, NULL);
    const double bad[] = {-1.0, NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        mgpo_config before, after;
        ck_assert_int_eq(mgpo_get_config(M.st, &before), MGPO_OK);
        ASSERT_REFUSED(mgpo_set_lr(M.st, bad[k]), MGPO_ERR_BAD_LR);
        ASSERT_REFUSED(mgpo_set_rho(M.st, bad[k]), MGPO_ERR_BAD_RHO);
        ck_assert_int_eq(mgpo_get_config(M.st, &after), MGPO_OK);
        ck_assert(memcmp(&before.lr, &after.lr, sizeof(double)) == 0);
        ck_assert(memcmp(&before.rho, &after.rho, sizeof(double)) == 0);
    }
    ASSERT_REFUSED(mgpo_set_lr(NULL, 1e-3), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_set_rho(NULL, 0.1), MGPO_ERR_NULL_ARGUMENT);
}
END_TEST

/* ---- NULL pointers -------------------------------------------------------- */

START_TEST(null_pointers)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&M, &cfg, NULL);
    tu_model_register(&R, &cfg, NULL);
    assert_twins_agree(3, TU_CMP_ALL);

    mgpo_stats stats;
    mgpo_unit_stats unit;
    mgpo_config config;
    size_t n;
    int flag;
    ck_assert_int_eq(mgpo_create(NULL, &cfg, NULL), MGPO_ERR_NULL_ARGUMENT);
    ck_assert_int_eq(mgpo_config_validate(NULL), MGPO_ERR_NULL_ARGUMENT);
    mgpo_allocator half = {NULL, NULL, NULL};
    mgpo_state *st = M.st;
    ck_assert_int_eq(mgpo_create(&st, &cfg, &half), MGPO_ERR_NULL_ARGUMENT);
    ck_assert_ptr_null(st);

    ASSERT_REFUSED(mgpo_add_tensor(NULL, M.params[0], M.grads[0], 1, NULL, NULL),
                   MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_add_tensor(M.st, NULL, NULL, 1, NULL, NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_set_grad(NULL, 0, M.grads[0]), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_perturb(NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_restore(NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_step(NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_is_perturbed(NULL, &flag), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_is_perturbed(M.st, NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_stats(NULL, &stats), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_stats(M.st, NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_unit_stats(NULL, 0, &unit), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_unit_stats(M.st, 0, NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_unit_count(NULL, &n), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_unit_count(M.st, NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_tensor_count(NULL, &n), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_tensor_count(M.st, NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_config(NULL, &config), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_config(M.st, NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_schedule_lr(NULL, 0, NULL), MGPO_ERR_NULL_ARGUMENT);
    mgpo_destroy(NULL);

    /* The same calls while perturbed change nothing either. */
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(R.st), MGPO_OK);
    ASSERT_REFUSED(mgpo_step(NULL), MGPO_ERR_NULL_ARGUMENT);
    ASSERT_REFUSED(mgpo_restore(NULL), MGPO_ERR_NULL_ARGUMENT);
    tu_model_grad(&M);
    tu_model_grad(&R);
    ck_assert_int_eq(mgpo_step(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_step(R.st), MGPO_OK);
    assert_twins_agree(3, TU_CMP_ALL);
}
END_TEST

/* ---- registration ------------------------------------------------------------ */

START_TEST(registration_errors)
{
    mgpo_config cfg = tu_combo_config(_i);
    ck_assert_int_eq(mgpo_create(&M.st, &cfg, NULL), MGPO_OK);
    ASSERT_REFUSED(mgpo_step(M.st), MGPO_ERR_NO_TENSORS);
    ASSERT_REFUSED(mgpo_perturb(M.st), MGPO_ERR_NO_TENSORS);
    ASSERT_REFUSED(mgpo_restore(M.st), MGPO_OK);
    mgpo_destroy(M.st);
    M.st = NULL;
    tu_model_register(&M, &cfg, NULL);
    tu_model_register(&R, &cfg, NULL);

    float fresh[64] = {0};
    float *p2 = M.params[2], *g2 = M.grads[2]; /* 1000 floats each */
    mgpo_tensor_options o = mgpo_tensor_options_default();
    size_t index = 12345;

    /* Counts. */
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, NULL, 0, NULL, &index),
                   MGPO_ERR_INVALID_ARGUMENT);
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, NULL, SIZE_MAX, NULL, &index),
                   MGPO_ERR_INVALID_ARGUMENT);
    /* Params and grads of one new tensor overlap. */
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, fresh, 64, NULL, &index), MGPO_ERR_OVERLAP);
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, fresh + 16, 32, NULL, &index),
                   MGPO_ERR_OVERLAP);
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh + 16, fresh, 32, NULL, &index),
                   MGPO_ERR_OVERLAP);
    /* New params overlapping an older tensor's params or gradients. */
    ASSERT_REFUSED(mgpo_add_tensor(M.st, p2 + 100, NULL, 50, NULL, &index), MGPO_ERR_OVERLAP);
    ASSERT_REFUSED(mgpo_add_tensor(M.st, p2 + 999, NULL, 1, NULL, &index), MGPO_ERR_OVERLAP);
    ASSERT_REFUSED(mgpo_add_tensor(M.st, g2 + 10, NULL, 5, NULL, &index), MGPO_ERR_OVERLAP);
    /* New gradients overlapping an older tensor's params. */
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, p2 + 10, 5, NULL, &index), MGPO_ERR_OVERLAP);
    /* Bad per-tensor options. */
    o.lr_scale = -1.0;
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, NULL, 64, &o, &index), MGPO_ERR_BAD_LR);
    o.lr_scale = NAN;
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, NULL, 64, &o, &index), MGPO_ERR_BAD_LR);
    o = mgpo_tensor_options_default();
    o.weight_decay_scale = -1.0;
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, NULL, 64, &o, &index),
                   MGPO_ERR_BAD_WEIGHT_DECAY);
    o.weight_decay_scale = INFINITY;
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, NULL, 64, &o, &index),
                   MGPO_ERR_BAD_WEIGHT_DECAY);
    ck_assert_uint_eq(index, 12345);
    /* set_grad onto some parameters, or with a bad index. */
    ASSERT_REFUSED(mgpo_set_grad(M.st, 0, M.params[0]), MGPO_ERR_OVERLAP);
    ASSERT_REFUSED(mgpo_set_grad(M.st, 1, p2 + 500), MGPO_ERR_OVERLAP);
    ASSERT_REFUSED(mgpo_set_grad(M.st, 3, M.params[0]), MGPO_ERR_OVERLAP);
    ASSERT_REFUSED(mgpo_set_grad(M.st, TU_ODD_COUNT, fresh), MGPO_ERR_INVALID_ARGUMENT);
    ASSERT_REFUSED(mgpo_set_grad(M.st, SIZE_MAX, fresh), MGPO_ERR_INVALID_ARGUMENT);

    /* None of it disturbed the state. */
    assert_twins_agree(4, TU_CMP_ALL);

    /* Registration after the first step, and a bad unit index. */
    ASSERT_REFUSED(mgpo_add_tensor(M.st, fresh, NULL, 64, NULL, &index),
                   MGPO_ERR_WRONG_PHASE);
    ck_assert_uint_eq(index, 12345);
    size_t units;
    ck_assert_int_eq(mgpo_get_unit_count(M.st, &units), MGPO_OK);
    mgpo_unit_stats out, untouched;
    memset(&out, 0xA5, sizeof out);
    untouched = out;
    ASSERT_REFUSED(mgpo_get_unit_stats(M.st, units, &out), MGPO_ERR_INVALID_ARGUMENT);
    ASSERT_REFUSED(mgpo_get_unit_stats(M.st, SIZE_MAX, &out), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_mem_eq(&out, &untouched, sizeof out);

    /* Restore without perturb. */
    ASSERT_REFUSED(mgpo_restore(M.st), MGPO_OK);
    assert_twins_agree(2, TU_CMP_ALL);
}
END_TEST

/* ---- non-finite gradients ------------------------------------------------- */

static float bad_value(int kind)
{
    return kind == 0 ? NAN : kind == 1 ? INFINITY : -INFINITY;
}

/* _i: kind = _i % 3 (NaN, +Inf, -Inf), combination = _i / 3; the bad
 * element moves over the tensors (tensor 1 has its perturbation off). */
START_TEST(nonfinite_gradient_skips_the_step)
{
    int kind = _i % 3, combo = _i / 3;
    size_t bad_tensor = (size_t)combo % TU_ODD_COUNT;
    mgpo_config cfg = tu_combo_config(combo);
    mgpo_tensor_options opts[TU_MAX_TENSORS];
    for (size_t i = 0; i < TU_MAX_TENSORS; i++) opts[i] = mgpo_tensor_options_default();
    opts[1].perturb = 0;
    tu_model_register(&M, &cfg, opts);
    tu_model_register(&R, &cfg, opts);
    assert_twins_agree(3, TU_CMP_ALL);

    /* M: perturb, a poisoned gradient, step.  R: perturb, restore. */
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(R.st), MGPO_OK);
    tu_model_grad(&M);
    M.grads[bad_tensor][M.sizes[bad_tensor] - 1] = bad_value(kind);
    tu_snapshot poisoned;
    tu_snapshot_take(&poisoned, &M);
    ck_assert_int_eq(poisoned.perturbed, 1);
    ck_assert_int_eq(mgpo_step(M.st), MGPO_ERR_NONFINITE_GRADIENT);
    ck_assert_int_eq(mgpo_restore(R.st), MGPO_OK);

    tu_snapshot a, b;
    tu_snapshot_take(&a, &M);
    tu_snapshot_take(&b, &R);
    tu_assert_same(&a, &b, TU_IGNORE_SKIPPED | TU_IGNORE_GRADS);
    ck_assert_uint_eq(a.stats.skipped_steps, b.stats.skipped_steps + 1);
    for (size_t i = 0; i < M.count; i++) /* the caller's gradient is not touched */
        ck_assert_mem_eq(M.grads[i], poisoned.grads[i], M.sizes[i] * sizeof(float));
    tu_snapshot_free(&poisoned);
    tu_snapshot_free(&a);
    tu_snapshot_free(&b);

    /* The next steps are those of the twin that never saw the bad one. */
    assert_twins_agree(3, TU_IGNORE_SKIPPED);
}
END_TEST

/* A bad very first step leaves gbar unset: the first good step initialises
 * it, exactly as in a state that never saw the bad one. */
START_TEST(nonfinite_first_gradient)
{
    mgpo_config cfg = tu_combo_config(_i);
    tu_model_register(&M, &cfg, NULL);
    tu_model_register(&R, &cfg, NULL);
    tu_snapshot before, after;
    tu_snapshot_take(&before, &M);
    tu_model_grad(&M);
    M.grads[3][0] = NAN;
    ck_assert_int_eq(mgpo_step(M.st), MGPO_ERR_NONFINITE_GRADIENT);
    tu_snapshot_take(&after, &M);
    tu_assert_same(&before, &after, TU_IGNORE_SKIPPED | TU_IGNORE_GRADS);
    ck_assert_uint_eq(after.stats.skipped_steps, 1);
    tu_snapshot_free(&before);
    tu_snapshot_free(&after);
    assert_twins_agree(4, TU_IGNORE_SKIPPED);
}
END_TEST

/* SGD with weight decay over parameters near the end of the float range:
 * the new momentum buffer (~ wd * theta / (1 - mu)) would overflow, so the
 * step is refused before anything is written (the fuzzer's finding
 * tests/fuzz/findings-api/reload-sgd-momentum-overflow); parameters below
 * the bound step normally. */
START_TEST(sgd_update_bound)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer = MGPO_OPTIMIZER_SGD;
    c.weight_decay = 0.5;
    c.lr = 0.1;
    float p[3] = {3.0e38f, -3.0e38f, 1.0f}, g[3] = {0.5f, 0.25f, -1.0f}, before[3];
    memcpy(before, p, sizeof p);
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, 3, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_step(st), MGPO_ERR_NONFINITE_GRADIENT);
    ck_assert_int_eq(memcmp(p, before, sizeof p), 0);
    mgpo_stats s;
    ck_assert_int_eq(mgpo_get_stats(st, &s), MGPO_OK);
    ck_assert_uint_eq(s.step, 0);
    ck_assert_uint_eq(s.skipped_steps, 1);
    /* 1e29 * 0.5 * (1 + 0.9) * 0.1 is far below 2^100: steps. */
    p[0] = 1e29f;
    p[1] = -1e29f;
    for (int t = 0; t < 3; t++) ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    ck_assert(isfinite(p[0]) && p[0] < 1e29f);
    mgpo_destroy(st);
}
END_TEST

/* ---- names and versions ---------------------------------------------------- */

START_TEST(strerror_names_every_code)
{
#define NAME(code) {code, #code}
    static const struct {
        mgpo_status code;
        const char *name;
    } names[] = {
        NAME(MGPO_OK), NAME(MGPO_ERR_NULL_ARGUMENT), NAME(MGPO_ERR_INVALID_ARGUMENT),
        NAME(MGPO_ERR_OUT_OF_MEMORY), NAME(MGPO_ERR_BAD_LR), NAME(MGPO_ERR_BAD_BETA),
        NAME(MGPO_ERR_BAD_EPSILON), NAME(MGPO_ERR_BAD_WEIGHT_DECAY), NAME(MGPO_ERR_BAD_RHO),
        NAME(MGPO_ERR_BAD_SCALE_MAX), NAME(MGPO_ERR_BAD_ENUM), NAME(MGPO_ERR_BAD_CLIP),
        NAME(MGPO_ERR_BAD_THREADS), NAME(MGPO_ERR_OVERLAP), NAME(MGPO_ERR_NO_TENSORS),
        NAME(MGPO_ERR_NO_GRADIENT), NAME(MGPO_ERR_NONFINITE_GRADIENT),
        NAME(MGPO_ERR_WRONG_PHASE), NAME(MGPO_ERR_SHAPE), NAME(MGPO_ERR_BUFFER_TOO_SMALL),
        NAME(MGPO_ERR_IO), NAME(MGPO_ERR_CHECKPOINT_MAGIC), NAME(MGPO_ERR_CHECKPOINT_VERSION),
        NAME(MGPO_ERR_CHECKPOINT_ENDIAN), NAME(MGPO_ERR_CHECKPOINT_LAYOUT),
        NAME(MGPO_ERR_CHECKPOINT_CHECKSUM), NAME(MGPO_ERR_CHECKPOINT_TRUNCATED),
        NAME(MGPO_ERR_ALLREDUCE), NAME(MGPO_ERR_UNSUPPORTED), NAME(MGPO_ERR_BAD_GRAD_SCALE),
        NAME(MGPO_ERR_RESERVED_FIELD),
    };
#undef NAME
    const size_t count = sizeof names / sizeof names[0];
    const char *unknown = mgpo_strerror((mgpo_status)count);
    ck_assert_ptr_nonnull(unknown);
    for (size_t i = 0; i < count; i++) {
        /* Values are pinned: the enum is dense from 0. */
        ck_assert_int_eq((int)names[i].code, (int)i);
        const char *text = mgpo_strerror(names[i].code);
        ck_assert_ptr_nonnull(text);
        size_t len = strlen(names[i].name);
        ck_assert_msg(strncmp(text, names[i].name, len) == 0 && text[len] == ':',
                      "\"%s\" does not start with %s:", text, names[i].name);
        ck_assert_str_ne(text, unknown);
        for (size_t j = 0; j < i; j++) ck_assert_str_ne(text, mgpo_strerror(names[j].code));
    }
    const int others[] = {-1, 31, 1000, 0x7fffffff};
    for (size_t k = 0; k < sizeof others / sizeof others[0]; k++)
        ck_assert_str_eq(mgpo_strerror((mgpo_status)others[k]), unknown);
}
END_TEST

START_TEST(version_macros_match_runtime)
{
    ck_assert_uint_eq(MGPO_VERSION_NUMBER, MGPO_VERSION_MAJOR * 10000 +
                                               MGPO_VERSION_MINOR * 100 + MGPO_VERSION_PATCH);
    ck_assert_uint_eq(mgpo_version_number(), MGPO_VERSION_NUMBER);
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", MGPO_VERSION_MAJOR, MGPO_VERSION_MINOR,
             MGPO_VERSION_PATCH);
    ck_assert_str_eq(MGPO_VERSION_STRING, text);
    ck_assert_str_eq(mgpo_version_string(), MGPO_VERSION_STRING);
}
END_TEST

/* ---- the caller's allocator ----------------------------------------------- */

#define MAX_BLOCKS 512

typedef struct counting {
    size_t calls;      /* alloc calls, failed ones included */
    size_t fail_at;    /* 1-based alloc call that returns NULL; 0 = never */
    size_t live;       /* blocks not yet freed */
    size_t bad_frees;  /* free of an unknown pointer or with another size */
    size_t frees;
    void *ptr[MAX_BLOCKS];
    size_t size[MAX_BLOCKS];
} counting;

static void *counting_alloc(void *ctx, size_t size)
{
    counting *c = ctx;
    c->calls++;
    if (c->calls == c->fail_at || c->live == MAX_BLOCKS) return NULL;
    void *p = malloc(size);
    if (!p) return NULL;
    c->ptr[c->live] = p;
    c->size[c->live] = size;
    c->live++;
    return p;
}

static void counting_free(void *ctx, void *ptr, size_t size)
{
    counting *c = ctx;
    c->frees++;
    for (size_t k = 0; k < c->live; k++) {
        if (c->ptr[k] != ptr) continue;
        if (c->size[k] != size) c->bad_frees++;
        c->live--;
        c->ptr[k] = c->ptr[c->live];
        c->size[k] = c->size[c->live];
        free(ptr);
        return;
    }
    c->bad_frees++; /* not ours: leak it rather than crash */
}

static mgpo_allocator counting_allocator(counting *c)
{
    memset(c, 0, sizeof *c);
    mgpo_allocator a = {counting_alloc, counting_free, c};
    return a;
}

START_TEST(allocator_sees_every_block_back)
{
    mgpo_config cfg = tu_combo_config(_i);
    counting c;
    mgpo_allocator a = counting_allocator(&c);
    ck_assert_int_eq(mgpo_create(&M.st, &cfg, &a), MGPO_OK);
    for (size_t i = 0; i < M.count; i++)
        ck_assert_int_eq(mgpo_add_tensor(M.st, M.params[i], M.grads[i], M.sizes[i], NULL, NULL),
                         MGPO_OK);
    tu_model_register(&R, &cfg, NULL);
    size_t calls = c.calls;
    ck_assert_uint_gt(calls, M.count);
    ck_assert_uint_eq(c.frees + c.live, calls);

    /* perturb / restore / step never allocate, even on a refused step. */
    assert_twins_agree(5, TU_CMP_ALL);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_restore(M.st), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(M.st), MGPO_OK);
    M.grads[0][0] = INFINITY;
    ck_assert_int_eq(mgpo_step(M.st), MGPO_ERR_NONFINITE_GRADIENT);
    ck_assert_uint_eq(c.calls, calls);

    mgpo_destroy(M.st);
    M.st = NULL;
    ck_assert_uint_eq(c.live, 0);
    ck_assert_uint_eq(c.bad_frees, 0);
    ck_assert_uint_eq(c.calls, calls);
}
END_TEST

/* The k-th allocation fails, for every k until none does: create or
 * add_tensor reports OUT_OF_MEMORY, nothing leaks, and the state keeps
 * working (it then gives the same numbers as one that never failed). */
START_TEST(allocation_failure_at_every_call)
{
    mgpo_config cfg = tu_combo_config(_i);
    size_t failed_create = 0, failed_add = 0;
    for (size_t k = 1;; k++) {
        tu_model A, B;
        tu_model_init(&A, tu_odd_sizes, TU_ODD_COUNT, 41);
        tu_model_init(&B, tu_odd_sizes, TU_ODD_COUNT, 41);
        counting c;
        mgpo_allocator a = counting_allocator(&c);
        c.fail_at = k;
        A.st = (mgpo_state *)&c;
        mgpo_status s = mgpo_create(&A.st, &cfg, &a);
        if (s != MGPO_OK) {
            ck_assert_int_eq(s, MGPO_ERR_OUT_OF_MEMORY);
            ck_assert_ptr_null(A.st);
            ck_assert_uint_eq(c.live, 0);
            failed_create++;
        } else {
            for (size_t i = 0; i < A.count; i++) {
                s = mgpo_add_tensor(A.st, A.params[i], A.grads[i], A.sizes[i], NULL, NULL);
                if (s == MGPO_OK) continue;
                ck_assert_int_eq(s, MGPO_ERR_OUT_OF_MEMORY);
                size_t n;
                ck_assert_int_eq(mgpo_get_tensor_count(A.st, &n), MGPO_OK);
                ck_assert_uint_eq(n, i);
                failed_add++;
                c.fail_at = 0; /* memory is back: the same call succeeds */
                ck_assert_int_eq(mgpo_add_tensor(A.st, A.params[i], A.grads[i], A.sizes[i],
                                                 NULL, NULL),
                                 MGPO_OK);
            }
            tu_model_register(&B, &cfg, NULL);
            for (int it = 0; it < 3; it++) {
                tu_model_iterate(&A);
                tu_model_iterate(&B);
            }
            tu_snapshot sa, sb;
            tu_snapshot_take(&sa, &A);
            tu_snapshot_take(&sb, &B);
            tu_assert_same(&sa, &sb, TU_CMP_ALL);
            tu_snapshot_free(&sa);
            tu_snapshot_free(&sb);
            mgpo_destroy(A.st);
            A.st = NULL;
            ck_assert_uint_eq(c.live, 0);
            ck_assert_uint_eq(c.bad_frees, 0);
        }
        tu_model_free(&A);
        tu_model_free(&B);
        if (c.fail_at != 0 && c.calls < k) break; /* no call failed: all covered */
    }
    ck_assert_uint_gt(failed_create, 0);
    ck_assert_uint_gt(failed_add, 3);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bad_input");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, config_field_out_of_range, 0, BAD_CONFIGS);
    tcase_add_loop_test(tc, config_boundary_accepted, 0, GOOD_CONFIGS);
    tcase_add_test(tc, setters_refuse_bad_values);
    suite_add_tcase(s, tc);

    tc = tcase_create("calls");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, null_pointers, 0, TU_COMBOS);
    tcase_add_loop_test(tc, registration_errors, 0, TU_COMBOS);
    tcase_add_loop_test(tc, nonfinite_gradient_skips_the_step, 0, 3 * TU_COMBOS);
    tcase_add_loop_test(tc, nonfinite_first_gradient, 0, TU_COMBOS);
    suite_add_tcase(s, tc);

    tc = tcase_create("library");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, sgd_update_bound);
    tcase_add_test(tc, strerror_names_every_code);
    tcase_add_test(tc, version_macros_match_runtime);
    tcase_add_loop_test(tc, allocator_sees_every_block_back, 0, TU_COMBOS);
    tcase_add_loop_test(tc, allocation_failure_at_every_call, 0, 4);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
