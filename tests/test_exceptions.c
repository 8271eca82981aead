/* Exact restore by exception list, through the public API.  One perturb
 * leaves, side by side, blocks whose list is empty, blocks with a non-empty
 * list and blocks that fell back to a plain copy; whatever the mix, a
 * restore gives the clean bits back, a step on the perturbed state equals a
 * restore and then a step, the thread count changes nothing, and a
 * checkpoint taken while perturbed resumes to the uninterrupted run.
 *
 * The mix comes from the tensors' magnitudes against the perturbation c*m:
 *   ORDINARY  values in [-1, 1): a few elements per block need listing;
 *   SWAMPED   values ~1e-30 and -0, frozen (lr_scale 0): nearly every
 *             element needs listing, so its lists overflow and the whole
 *             tensor keeps plain copies; its second block starts with
 *             ordinary values, so the overflow is found late in the block,
 *             after much of it was perturbed, and its short last block has
 *             ordinary values whose list fits, so that block is turned from
 *             a list into a copy;
 *   HUGE      values ~2^18, far above c*m: subtraction restores them all;
 *   PLAIN     not perturbed at all. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ORDINARY, SWAMPED, HUGE, PLAIN, TENSORS };
#define BLOCK MGPO_BLOCK_FLOATS
static const size_t sizes[TENSORS] = {2 * BLOCK + 33, 2 * BLOCK + 5, BLOCK + 100, 37};
#define ITERATIONS 50

/* _i of the loop tests: optimizer (AdamW, SGD momentum, SGD Nesterov) x
 * scope (global, tensor). */
#define VARIANTS 6
static const char *const variant_names[VARIANTS] = {
    "adamw/global", "sgd/global", "sgd-nesterov/global",
    "adamw/tensor", "sgd/tensor", "sgd-nesterov/tensor"};

static mgpo_config make_config(int variant, int threads)
{
    mgpo_config c = mgpo_config_default();
    int opt = variant % 3;
    c.optimizer = opt == 0 ? MGPO_OPTIMIZER_ADAMW : MGPO_OPTIMIZER_SGD;
    c.lr = opt == 0 ? 1e-2 : 0.05;
    c.weight_decay = 0.01;
    c.nesterov = opt == 2;
    c.scope = variant >= 3 ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
    c.rho = 0.5;
    c.num_threads = threads;
    return c;
}

static void model_init(tu_model *md)
{
    tu_model_init(md, sizes, TENSORS, 11);
    /* Small gradients: the perturbation scale 1/gbar reaches its cap. */
    md->grad_scale = 1e-3f;
    uint64_t rng = 5;
    float *swamped = md->params[SWAMPED];
    for (size_t k = 0; k < sizes[SWAMPED]; k++) {
        if ((k >= BLOCK && k < BLOCK + BLOCK / 4) || k >= 2 * BLOCK) continue;
        swamped[k] = k % 7 == 0 ? -0.0f : 1e-30f * tu_rand_float(&rng, -1.0f, 1.0f);
    }
    for (size_t k = 0; k < sizes[HUGE]; k++) {
        float p = tu_rand_float(&rng, 1.25f, 1.75f) * 0x1.0p18f;
        md->params[HUGE][k] = k % 2 ? -p : p;
        md->target[HUGE][k] = md->params[HUGE][k] + tu_rand_float(&rng, -1.0f, 1.0f);
    }
}

static void model_register(tu_model *md, const mgpo_config *cfg)
{
    mgpo_tensor_options o[TENSORS];
    for (size_t t = 0; t < TENSORS; t++) o[t] = mgpo_tensor_options_default();
    o[SWAMPED].lr_scale = 0.0;
    o[SWAMPED].weight_decay_scale = 0.0;
    o[HUGE].weight_decay_scale = 0.0;
    o[PLAIN].perturb = 0;
    tu_model_register(md, cfg, o);
}

static void setup_model(tu_model *md, const mgpo_config *cfg)
{
    model_init(md);
    model_register(md, cfg);
}

/* ---- An independent account of the blocks ---------------------------------- */

typedef struct block_kinds {
    size_t empty, listing, copies, exceptions;
} block_kinds;

/* Recounts, from the clean parameters, the perturbed ones and the momentum,
 * which elements of each perturbed block subtraction does not restore, and
 * so which blocks must hold an empty list, a non-empty list or a copy: a
 * tensor with any block whose list would overflow keeps copies in all its
 * blocks.  Checks on the way that the perturbed values are exactly p + c*m. */
static block_kinds classify(const tu_model *md, const mgpo_config *cfg,
                            const tu_snapshot *clean)
{
    block_kinds kinds = {0, 0, 0, 0};
    for (size_t t = 0; t < TENSORS; t++) {
        if (t == PLAIN) continue;
        mgpo_unit_stats u;
        ck_assert_int_eq(mgpo_get_unit_stats(md->st, tu_unit_of(cfg, t), &u), MGPO_OK);
        float c = (float)u.coefficient;
        ck_assert(c != 0.0f);
        const float *m = mgpo_internal_moment(md->st, t, 0);
        block_kinds tensor = {0, 0, 0, 0};
        bool overflow = false;
        for (size_t begin = 0; begin < sizes[t]; begin += BLOCK) {
            size_t n = sizes[t] - begin < BLOCK ? sizes[t] - begin : BLOCK, listed = 0;
            for (size_t k = begin; k < begin + n; k++) {
                float p = clean->params[t][k], b = c * m[k], moved = md->params[t][k];
                float sum = p + b, undone = moved - b;
                /* (Check's assertions cost a system call each: abort only.) */
                if (memcmp(&moved, &sum, sizeof sum) != 0)
                    ck_abort_msg("tensor %zu [%zu]: perturbed %a, p + c*m %a", t, k,
                                 (double)moved, (double)sum);
                listed += memcmp(&undone, &p, sizeof p) != 0;
            }
            overflow |= listed > mgpo_exception_capacity(n);
            tensor.copies++;
            tensor.exceptions += listed;
            if (listed) tensor.listing++;
            else tensor.empty++;
        }
        if (overflow) {
            kinds.copies += tensor.copies;
        } else {
            kinds.empty += tensor.empty;
            kinds.listing += tensor.listing;
            kinds.exceptions += tensor.exceptions;
        }
    }
    return kinds;
}

/* The census of the perturbation just applied agrees with the recount, and
 * all three kinds of block are present. */
static block_kinds check_census(const tu_model *md, const mgpo_config *cfg,
                                const tu_snapshot *clean)
{
    block_kinds kinds = classify(md, cfg, clean);
    mgpo_restore_census census = mgpo_internal_restore_census(md->st);
    ck_assert_uint_eq(census.list_blocks, kinds.empty + kinds.listing);
    ck_assert_uint_eq(census.copy_blocks, kinds.copies);
    ck_assert_uint_eq(census.exceptions, kinds.exceptions);
    ck_assert_msg(kinds.empty > 0 && kinds.listing > 0 && kinds.copies > 0,
                  "blocks: %zu empty lists, %zu non-empty lists, %zu copies", kinds.empty,
                  kinds.listing, kinds.copies);
    return kinds;
}

static void print_census(const char *what, const tu_model *md, block_kinds kinds)
{
    mgpo_restore_census c = mgpo_internal_restore_census(md->st);
    printf("exceptions: %s: census list_blocks=%zu (%zu empty, %zu non-empty) "
           "copy_blocks=%zu exceptions=%zu\n",
           what, c.list_blocks, kinds.empty, kinds.listing, c.copy_blocks, c.exceptions);
}

static void iterate(tu_model *md)
{
    ck_assert_int_eq(mgpo_perturb(md->st), MGPO_OK);
    tu_model_grad(md);
    ck_assert_int_eq(mgpo_step(md->st), MGPO_OK);
}

/* Perturbs, checks the census against the recount (from the second
 * iteration on: the first perturb has no momentum to move along), and
 * leaves the state perturbed. */
static void perturb_checked(tu_model *md, const mgpo_config *cfg)
{
    tu_snapshot clean;
    tu_snapshot_take(&clean, md);
    ck_assert_int_eq(mgpo_perturb(md->st), MGPO_OK);
    if (clean.stats.step > 0) check_census(md, cfg, &clean);
    tu_snapshot_free(&clean);
}

static void iterate_checked(tu_model *md, const mgpo_config *cfg)
{
    perturb_checked(md, cfg);
    tu_model_grad(md);
    ck_assert_int_eq(mgpo_step(md->st), MGPO_OK);
}

static void assert_same_state(const tu_model *a, const tu_model *b)
{
    tu_snapshot sa, sb;
    tu_snapshot_take(&sa, a);
    tu_snapshot_take(&sb, b);
    tu_assert_same(&sa, &sb, TU_CMP_ALL);
    tu_snapshot_free(&sa);
    tu_snapshot_free(&sb);
}

/* ---- Restore, and the restore fused into the step --------------------------
 * Twins in lockstep: A restores explicitly and must get the pre-perturb bits
 * back, then steps; B steps on the perturbed state.  They must stay equal,
 * every step, while every perturb mixes the three kinds of block.  _i:
 * variant, then 1 or 2 threads. */
START_TEST(test_restore_and_fused_step)
{
    int variant = _i % VARIANTS, threads = 1 + _i / VARIANTS;
    mgpo_config cfg = make_config(variant, threads);
    tu_model a, b;
    setup_model(&a, &cfg);
    setup_model(&b, &cfg);
    const float start = a.params[ORDINARY][0];
    iterate(&a); /* the first perturb is a no-op: no momentum yet */
    iterate(&b);
    for (int it = 1; it < ITERATIONS; it++) {
        tu_snapshot clean;
        tu_snapshot_take(&clean, &a);
        ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(b.st), MGPO_OK);
        block_kinds kinds = check_census(&a, &cfg, &clean);
        if (_i == 0 && it == ITERATIONS - 1) print_census(variant_names[variant], &a, kinds);
        /* The gradient at the perturbed point, as a backward pass gives it. */
        tu_model_grad(&a);
        tu_model_grad(&b);
        ck_assert_int_eq(mgpo_restore(a.st), MGPO_OK);
        tu_assert_params_same(&a, &clean);
        tu_snapshot_free(&clean);
        ck_assert_int_eq(mgpo_step(a.st), MGPO_OK);
        ck_assert_int_eq(mgpo_step(b.st), MGPO_OK);
        assert_same_state(&a, &b);
    }
    ck_assert_float_ne(a.params[ORDINARY][0], start); /* not vacuous: it trained */
    tu_model_free(&a);
    tu_model_free(&b);
}
END_TEST

/* ---- Thread counts ----------------------------------------------------------
 * The same run on 1, 2 and 3 threads, left perturbed at the end so that the
 * perturb pass is compared too, then restored.  _i: AdamW global, SGD
 * Nesterov per tensor. */
static void run_on_threads(tu_model *md, int variant, int threads)
{
    mgpo_config cfg = make_config(variant, threads);
    setup_model(md, &cfg);
    for (int it = 0; it < ITERATIONS; it++) iterate_checked(md, &cfg);
    perturb_checked(md, &cfg);
}

START_TEST(test_threads_agree)
{
    int variant = _i == 0 ? 0 : 5;
    tu_model serial;
    run_on_threads(&serial, variant, 1);
    tu_snapshot perturbed, restored;
    tu_snapshot_take(&perturbed, &serial);
    ck_assert_int_eq(mgpo_restore(serial.st), MGPO_OK);
    tu_snapshot_take(&restored, &serial);
    for (int threads = 2; threads <= 3; threads++) {
        tu_model other;
        run_on_threads(&other, variant, threads);
        tu_snapshot now;
        tu_snapshot_take(&now, &other);
        tu_assert_same(&perturbed, &now, TU_CMP_ALL);
        tu_snapshot_free(&now);
        ck_assert_int_eq(mgpo_restore(other.st), MGPO_OK);
        tu_snapshot_take(&now, &other);
        tu_assert_same(&restored, &now, TU_CMP_ALL);
        tu_snapshot_free(&now);
        tu_model_free(&other);
    }
    tu_snapshot_free(&perturbed);
    tu_snapshot_free(&restored);
    tu_model_free(&serial);
}
END_TEST

/* ---- Checkpoints taken while perturbed ---------------------------------------
 * A saves after perturb and the backward pass of iteration SAVE_AT, then
 * trains on; B, a fresh state registered alike that has been elsewhere,
 * loads that checkpoint, gets the caller's (perturbed) parameters back,
 * steps and trains on: the two must end bitwise equal.  C loads it too and
 * restores at once: the parameters must be the clean ones of before the
 * perturb, so the checkpoint held them exactly.  _i: the variant. */
enum { SAVE_AT = 20, RESUME_TO = 30 };

static unsigned char *save(const mgpo_state *st, size_t *size)
{
    ck_assert_int_eq(mgpo_checkpoint_size(st, size), MGPO_OK);
    unsigned char *buf = malloc(*size);
    ck_assert_ptr_nonnull(buf);
    size_t written = 0;
    ck_assert_int_eq(mgpo_save(st, buf, *size, &written), MGPO_OK);
    ck_assert_uint_eq(written, *size);
    return buf;
}

static void assert_saves_as(const mgpo_state *st, const unsigned char *bytes, size_t size)
{
    size_t n = 0;
    unsigned char *now = save(st, &n);
    ck_assert_uint_eq(n, size);
    ck_assert_msg(memcmp(now, bytes, size) == 0, "the states save differently");
    free(now);
}

/* A fresh model registered like the saved one, loaded from `ck`, with the
 * caller's parameters as they were at the save. */
static void resume(tu_model *md, const mgpo_config *cfg, const unsigned char *ck, size_t size,
                   const tu_snapshot *at_save)
{
    setup_model(md, cfg);
    iterate(md); /* what it held before must not matter */
    ck_assert_int_eq(mgpo_load(md->st, ck, size), MGPO_OK);
    for (size_t t = 0; t < TENSORS; t++)
        memcpy(md->params[t], at_save->params[t], sizes[t] * sizeof(float));
    int perturbed = 0;
    ck_assert_int_eq(mgpo_is_perturbed(md->st, &perturbed), MGPO_OK);
    ck_assert_int_eq(perturbed, 1);
}

START_TEST(test_checkpoint_while_perturbed)
{
    mgpo_config cfg = make_config(_i, 1);
    tu_model a, b, c;
    setup_model(&a, &cfg);
    for (int it = 0; it < SAVE_AT; it++) iterate(&a);
    tu_snapshot clean, at_save;
    tu_snapshot_take(&clean, &a);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    check_census(&a, &cfg, &clean);
    mgpo_restore_census saved = mgpo_internal_restore_census(a.st);
    tu_model_grad(&a);
    size_t size = 0;
    unsigned char *ck = save(a.st, &size);
    tu_snapshot_take(&at_save, &a);
    ck_assert_int_eq(mgpo_step(a.st), MGPO_OK);
    for (int it = SAVE_AT + 1; it < RESUME_TO; it++) iterate(&a);

    resume(&b, &cfg, ck, size, &at_save);
    tu_model_grad(&b); /* the backward pass of iteration SAVE_AT, again */
    ck_assert_int_eq(mgpo_step(b.st), MGPO_OK);
    for (int it = SAVE_AT + 1; it < RESUME_TO; it++) iterate(&b);
    assert_same_state(&a, &b);
    size_t end_size = 0;
    unsigned char *end = save(a.st, &end_size);
    assert_saves_as(b.st, end, end_size);

    resume(&c, &cfg, ck, size, &at_save);
    /* Still the same perturbation of the same blocks, however kept now. */
    mgpo_restore_census loaded = mgpo_internal_restore_census(c.st);
    ck_assert_uint_eq(loaded.list_blocks + loaded.copy_blocks,
                      saved.list_blocks + saved.copy_blocks);
    assert_saves_as(c.st, ck, size);
    ck_assert_int_eq(mgpo_restore(c.st), MGPO_OK);
    tu_assert_params_same(&c, &clean);

    free(ck);
    free(end);
    tu_snapshot_free(&clean);
    tu_snapshot_free(&at_save);
    tu_model_free(&a);
    tu_model_free(&b);
    tu_model_free(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("exceptions");
    TCase *tc = tcase_create("state");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_restore_and_fused_step, 0, 2 * VARIANTS);
    tcase_add_loop_test(tc, test_threads_agree, 0, 2);
    tcase_add_loop_test(tc, test_checkpoint_while_perturbed, 0, VARIANTS);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
