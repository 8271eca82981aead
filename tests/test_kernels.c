/* Every kernel table gives the same bits as the portable C kernels: kernel by
 * kernel on unaligned buffers with odd tails, in place and from a backup, and
 * over whole MGPO trainings.  The fused momentum norm equals a separate
 * mgpo_sum_squares pass, bit for bit.  On a CPU without AVX2 only the
 * portable table exists and the comparisons are skipped (the test says so). */
#define _ISOC11_SOURCE
#include <math.h>
#include <stdio.h>

#include "perf_model.h"
#include "test_util.h"

/* Sizes around the chunk of eight and the block. */
static const size_t lengths[] = {1, 7, 8, 9, 31, 1000, MGPO_BLOCK_FLOATS - 1, MGPO_BLOCK_FLOATS};
#define LENGTHS (sizeof lengths / sizeof lengths[0])

static const mgpo_kernels *fast_table(void)
{
    const mgpo_kernels *k = mgpo_kernels_avx2();
    if (!k) printf("kernels: no AVX2 on this CPU; only the portable kernels are tested\n");
    return k;
}

/* Inputs of one kernel call: buffers shifted by `offset` floats. */
typedef struct buffers {
    float *mem, *params, *src, *grads, *m, *v;
} buffers;

static void fill(buffers *b, size_t n, size_t offset, uint64_t seed)
{
    size_t stride = n + 8;
    /* 64-byte aligned, so offsets 0, 4 and 1 give 32-, 16- and 4-byte
     * aligned buffers (each streaming-store case). */
    b->mem = aligned_alloc(64, (5 * stride * sizeof(float) + 64 + 63) / 64 * 64);
    ck_assert_ptr_nonnull(b->mem);
    /* Padding gets a known pattern so writes past the end are detectable. */
    for (size_t i = 0; i < 5 * stride + 16; i++) b->mem[i] = -1234.5f;
    b->params = b->mem + offset;
    b->src = b->params + stride;
    b->grads = b->src + stride;
    b->m = b->grads + stride;
    b->v = b->m + stride;
    for (size_t i = 0; i < n; i++) {
        b->params[i] = pm_noise(seed, 1, i);
        b->src[i] = pm_noise(seed, 2, i);
        /* Gradients over several decades, some exactly zero. */
        b->grads[i] = i % 13 == 5 ? 0.0f : pm_noise(seed, 3, i) * powf(10.0f, (float)(i % 5) - 3);
        b->m[i] = 0.1f * pm_noise(seed, 4, i);
        b->v[i] = 0.01f * fabsf(pm_noise(seed, 5, i));
    }
}

static void assert_same(const float *a, const float *b, size_t n, const char *what)
{
    ck_assert_msg(memcmp(a, b, n * sizeof(float)) == 0, "%s differs (n=%zu)", what, n);
}

static void assert_same_double(double a, double b, const char *what)
{
    ck_assert_msg(memcmp(&a, &b, sizeof a) == 0, "%s differs: %.17g vs %.17g", what, a, b);
}

static mgpo_slot slot_constants(void)
{
    mgpo_slot s;
    memset(&s, 0, sizeof s);
    s.k_decay = 1.0f - 1e-3f * 0.01f;
    s.k_step = -1e-3f / (1.0f - 0.9f * 0.9f);
    s.k_lr = -0.05f;
    return s;
}

/* The slot and step constants of update kernel `which` (3: AdamW with
 * clipping; 4: SGD, Nesterov, with decay; 5: SGD, first step, dampening, no
 * decay; 6: SGD without momentum). */
static void update_constants(int which, mgpo_slot *s, mgpo_step_constants *c)
{
    *s = slot_constants();
    memset(c, 0, sizeof *c);
    c->grad_scale = 1.0f;
    c->one_minus_dampening = 1.0f;
    switch (which) {
    case 3:
        c->grad_scale = 0.75f;
        c->beta1 = 0.9f;
        c->one_minus_beta1 = 0.1f;
        c->beta2 = 0.999f;
        c->one_minus_beta2 = 1.0f - 0.999f;
        c->bias2_sqrt = sqrtf(1.0f - 0.999f * 0.999f);
        c->eps = 1e-8f;
        break;
    case 4:
        c->momentum = 0.9f;
        c->nesterov = true;
        break;
    case 5:
        s->k_decay = 0.0f;
        c->grad_scale = 0.5f;
        c->first = true;
        c->momentum = 0.8f;
        c->one_minus_dampening = 0.9f;
        break;
    default: break;
    }
}

/* Runs update kernel `which` (3 to 6) of table k on buffers b as they are. */
static double run_update(const mgpo_kernels *k, int which, size_t n, const float *src,
                         float undo, bool stream, buffers *b)
{
    mgpo_slot s;
    mgpo_step_constants c;
    update_constants(which, &s, &c);
    s.stream = stream;
    return which == 3 ? k->adamw(b->params, src, b->grads, b->m, b->v, &s, &c, n, undo, NULL)
                      : k->sgd(b->params, src, b->grads, b->m, &s, &c, n, undo, NULL);
}

/* Runs one kernel of table k on a fresh copy of the inputs; `stream` allows
 * streaming stores; `undo` is the low-memory perturbation still in params
 * (in place only). */
static double run_kernel(const mgpo_kernels *k, int which, size_t n, size_t offset,
                         bool in_place, bool stream, float undo, buffers *b)
{
    fill(b, n, offset, 7 + n);
    const float *src = in_place ? b->params : b->src;
    switch (which) {
    case 0: return k->sum_squares(b->grads, n);
    case 1:
        k->perturb(b->params, in_place ? NULL : b->src, b->m, -0.37f, n, stream);
        return 0.0;
    case 2: k->unperturb(b->params, b->m, 0.37f, n); return 0.0;
    case 7: k->copy(b->params, b->src, n, stream); return 0.0;
    default: return run_update(k, which, n, src, undo, stream, b);
    }
}

static const char *const kernel_names[] = {"sum_squares", "perturb",      "unperturb",
                                           "adamw",       "sgd nesterov", "sgd first",
                                           "sgd plain",   "copy"};

START_TEST(test_kernel_bitwise)
{
    int which = _i;
    const mgpo_kernels *fast = fast_table();
    if (!fast) return;
    const mgpo_kernels *ref = mgpo_kernels_portable();
    ck_assert_ptr_ne(fast, ref);
    static const size_t offsets[] = {0, 1, 4};
    for (size_t l = 0; l < LENGTHS; l++)
        for (size_t o = 0; o < 3; o++)
            for (int mode = 0; mode < 8; mode++) {
                size_t n = lengths[l], offset = offsets[o];
                bool in_place = mode & 1, stream = mode & 2;
                float undo = mode & 4 ? 0.37f : 0.0f;
                if (undo != 0.0f && !in_place) continue;
                buffers a, b;
                double ra = run_kernel(ref, which, n, offset, in_place, false, undo, &a);
                double rb = run_kernel(fast, which, n, offset, in_place, stream, undo, &b);
                assert_same_double(ra, rb, kernel_names[which]);
                assert_same(a.params, b.params, n, "params");
                assert_same(a.src, b.src, n, "src/backup");
                assert_same(a.m, b.m, n, "m");
                assert_same(a.v, b.v, n, "v");
                /* The fused norm is the norm of the new momentum. */
                if (which >= 3 && which <= 6) {
                    assert_same_double(ra, mgpo_sum_squares(a.m, n), "fused norm");
                    ck_assert(ra > 0.0);
                }
                /* And the kernels changed something (no vacuous equality). */
                if (which == 0) ck_assert(ra > 0.0);
                if (which != 0) ck_assert(a.params[0] != pm_noise(7 + n, 1, 0));
                free(a.mem);
                free(b.mem);
            }
}
END_TEST

/* A padded tail must not write past the end. */
START_TEST(test_kernel_tail_untouched)
{
    const mgpo_kernels *tables[2] = {mgpo_kernels_portable(), fast_table()};
    for (int t = 0; t < 2 && tables[t]; t++)
        for (int which = 1; which <= 7; which++) {
            buffers b;
            size_t n = 13;
            run_kernel(tables[t], which, n, 4, false, true, 0.0f, &b);
            buffers fresh;
            fill(&fresh, n, 4, 7 + n);
            for (size_t i = n; i < n + 7; i++) {
                ck_assert_msg(memcmp(&b.params[i], &fresh.params[i], sizeof(float)) == 0,
                              "%s wrote past the end (%s)", kernel_names[which],
                              tables[t]->name);
                ck_assert(memcmp(&b.m[i], &fresh.m[i], sizeof(float)) == 0);
                ck_assert(memcmp(&b.src[i], &fresh.src[i], sizeof(float)) == 0);
            }
            free(b.mem);
            free(fresh.mem);
        }
}
END_TEST

/* A step with `undo` equals mgpo_kernel_unperturb followed by the plain
 * step, bit for bit, in every table. */
START_TEST(test_fused_undo_is_unperturb)
{
    const mgpo_kernels *tables[2] = {mgpo_kernels_portable(), fast_table()};
    for (int t = 0; t < 2 && tables[t]; t++)
        for (int which = 3; which <= 6; which++)
            for (size_t l = 0; l < LENGTHS; l++) {
                size_t n = lengths[l];
                buffers fused, split;
                double rf = run_kernel(tables[t], which, n, 1, true, false, 0.37f, &fused);
                fill(&split, n, 1, 7 + n);
                mgpo_kernel_unperturb(split.params, split.m, 0.37f, n);
                /* Re-run the plain kernel on the unperturbed copy. */
                buffers plain = split;
                double rs = run_update(tables[t], which, n, plain.params, 0.0f, false, &plain);
                assert_same_double(rf, rs, "fused-undo norm");
                assert_same(fused.params, plain.params, n, "fused-undo params");
                assert_same(fused.m, plain.m, n, "fused-undo m");
                assert_same(fused.v, plain.v, n, "fused-undo v");
                free(fused.mem);
                free(split.mem);
            }
}
END_TEST

/* Whole trainings with each table, swapped in through the state. */
static void train(int variant, const mgpo_kernels *k, pm_model *md, float **m_out)
{
    static const size_t sizes[] = {2 * MGPO_BLOCK_FLOATS + 3, 301, 999};
    pm_init(md, sizes, 3, 1);
    mgpo_config c = mgpo_config_default();
    c.lr = 1e-2;
    if (variant & 1) {
        c.optimizer = MGPO_OPTIMIZER_SGD;
        c.weight_decay = 1e-3;
    }
    if (variant & 2) c.restore_mode = MGPO_RESTORE_LOW_MEMORY;
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    ck_assert_ptr_eq(st->kernels, mgpo_kernels_best());
    st->kernels = k;
    pm_register(md, st);
    /* Streaming stores engage only for huge states; force them here. */
    for (size_t i = 0; i < st->slot_count; i++) st->slots[i].stream = (variant & 4) != 0;
    pm_train(md, st, 0, 60);
    *m_out = malloc(sizes[0] * sizeof(float));
    ck_assert_ptr_nonnull(*m_out);
    memcpy(*m_out, mgpo_internal_moment(st, 0, 0), sizes[0] * sizeof(float));
    mgpo_destroy(st);
}

START_TEST(test_training_bitwise)
{
    const mgpo_kernels *fast = fast_table();
    if (!fast) return;
    pm_model a, b;
    float *ma, *mb;
    train(_i, mgpo_kernels_portable(), &a, &ma);
    train(_i, fast, &b, &mb);
    for (size_t t = 0; t < a.tensors; t++)
        assert_same(a.params[t], b.params[t], a.count[t], "trained params");
    assert_same(ma, mb, a.count[0], "trained m");
    ck_assert(a.params[0][0] != 0.5f * pm_noise(1, 0, 0));
    free(ma);
    free(mb);
    pm_free(&a, 1);
    pm_free(&b, 1);
}
END_TEST

START_TEST(test_best_is_fast)
{
    const mgpo_kernels *fast = mgpo_kernels_avx2();
    ck_assert_ptr_eq(mgpo_kernels_best(), fast ? fast : mgpo_kernels_portable());
    printf("kernels: this CPU uses the '%s' kernels\n", mgpo_kernels_best()->name);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("bitwise");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_kernel_bitwise, 0, 8);
    tcase_add_test(tc, test_kernel_tail_untouched);
    tcase_add_test(tc, test_fused_undo_is_unperturb);
    tcase_add_loop_test(tc, test_training_bitwise, 0, 8);
    tcase_add_test(tc, test_best_is_fast);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
