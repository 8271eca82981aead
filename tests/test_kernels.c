/* Every kernel table gives the same bits as the portable C kernels: kernel by
 * kernel on unaligned buffers with odd tails, in place and from a backup, and
 * over whole MGPO trainings.  The fused momentum norm equals a separate
 * mgpo_sum_squares pass, bit for bit.  The exact-mode perturbation lists just
 * the elements subtraction cannot restore, falls back when the list would not
 * fit, and its restore and fused step give back every clean bit.  On a CPU without AVX2 only the
 * portable table exists and the comparisons are skipped (the test says so). */
#define _ISOC11_SOURCE
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "perf_model.h"
#include "test_util.h"

/* Sizes around the chunk of eight and the block. */
static const size_t lengths[] = {1,    7,    8,    9,  15, 16, 17, 31, 33,
                                 1000, MGPO_BLOCK_FLOATS - 1, MGPO_BLOCK_FLOATS};
#define LENGTHS (sizeof lengths / sizeof lengths[0])

/* Every table this CPU can run, fastest first, the portable one last. */
#define MAX_TABLES 8
typedef struct table_set {
    const mgpo_kernels *k[MAX_TABLES];
    size_t count;
} table_set;

static table_set all_tables(void)
{
    table_set t;
    t.count = mgpo_kernels_runnable(t.k, MAX_TABLES);
    ck_assert_uint_ge(t.count, 1);
    ck_assert_uint_le(t.count, MAX_TABLES);
    ck_assert_ptr_eq(t.k[t.count - 1], mgpo_kernels_portable());
    if (t.count == 1) printf("kernels: no SIMD table on this CPU; only the portable one is tested\n");
    return t;
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

/* The outputs of an update kernel (params, m, v) agree bit for bit. */
static void assert_same_update(const buffers *a, const buffers *b, size_t n, const char *what)
{
    ck_assert_msg(memcmp(a->params, b->params, n * sizeof(float)) == 0,
                  "%s: params differ (n=%zu)", what, n);
    ck_assert_msg(memcmp(a->m, b->m, n * sizeof(float)) == 0, "%s: m differs (n=%zu)", what, n);
    ck_assert_msg(memcmp(a->v, b->v, n * sizeof(float)) == 0, "%s: v differs (n=%zu)", what, n);
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
        c->inv_bias2_sqrt = 1.0f / sqrtf(1.0f - 0.999f * 0.999f);
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

/* Runs update kernel `which` (3 to 6) of table k on buffers b as they are;
 * `exact` is the exception list of an exact-mode perturbation (or NULL). */
static double run_update(const mgpo_kernels *k, int which, size_t n, const float *src,
                         float undo, mgpo_exception_reader *exact, bool stream, buffers *b)
{
    mgpo_slot s;
    mgpo_step_constants c;
    update_constants(which, &s, &c);
    s.stream = stream;
    return which == 3 ? k->adamw(b->params, src, b->grads, b->m, b->v, &s, &c, n, undo, exact)
                      : k->sgd(b->params, src, b->grads, b->m, &s, &c, n, undo, exact);
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
    default: return run_update(k, which, n, src, undo, NULL, stream, b);
    }
}

static const char *const kernel_names[] = {"sum_squares", "perturb",      "unperturb",
                                           "adamw",       "sgd nesterov", "sgd first",
                                           "sgd plain",   "copy"};

START_TEST(test_kernel_bitwise)
{
    int which = _i;
    table_set tables = all_tables();
    const mgpo_kernels *ref = mgpo_kernels_portable();
    static const size_t offsets[] = {0, 1, 4, 8};
    for (size_t t = 0; t + 1 < tables.count; t++)
    for (size_t l = 0; l < LENGTHS; l++)
        for (size_t o = 0; o < 4; o++)
            for (int mode = 0; mode < 8; mode++) {
                const mgpo_kernels *fast = tables.k[t];
                ck_assert_ptr_ne(fast, ref);
                size_t n = lengths[l], offset = offsets[o];
                bool in_place = mode & 1, stream = mode & 2;
                float undo = mode & 4 ? 0.37f : 0.0f;
                if (undo != 0.0f && !in_place) continue;
                buffers a, b;
                double ra = run_kernel(ref, which, n, offset, in_place, false, undo, &a);
                double rb = run_kernel(fast, which, n, offset, in_place, stream, undo, &b);
                assert_same_double(ra, rb, kernel_names[which]);
                assert_same_update(&a, &b, n, kernel_names[which]);
                assert_same(a.src, b.src, n, "src/backup");
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

/* ---- Extreme values (issue 15, section 4) ----------------------------------
 * The same comparison for the largest constants and the most extreme
 * elements the step can meet: weight decay and lr at the float limits (and
 * wd = +Inf, which the bounds now refuse, but whose tail lanes must stay
 * neutral anyway), subnormals, Inf and NaN in the caller's parameters.  Every
 * length 1..17 covers each length mod 8 with and without a full chunk.
 * NaN results compare equal whatever their payload; everything else by bits. */

static bool same_or_both_nan(float a, float b)
{
    return mgpo_float_bits(a) == mgpo_float_bits(b) || (isnan(a) && isnan(b));
}

static void assert_same_extreme(const float *a, const float *b, size_t n, const char *what,
                                int which)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(same_or_both_nan(a[i], b[i]), "case %d: %s[%zu] of %zu: %a vs %a", which,
                      what, i, n, (double)a[i], (double)b[i]);
}

#define EXTREME_CASES 6

/* Case `which`: kernel, constants and inputs (n elements, seeded). */
static double run_extreme(const mgpo_kernels *k, int which, size_t n, buffers *b)
{
    fill(b, n, 1, 40 + n);
    mgpo_slot s = slot_constants();
    mgpo_step_constants c;
    update_constants(4, &s, &c); /* SGD, Nesterov, decay */
    switch (which) {
    case 0: /* the example: 0.01 * weight_decay_scale 1e300 -> +Inf */
        s.k_decay = INFINITY;
        for (size_t i = 0; i < n; i++) {
            b->params[i] = 1.0f + fabsf(b->params[i]);
            b->grads[i] = fabsf(b->grads[i]);
        }
        break;
    case 1: /* the largest accepted SGD constants, subnormal inputs */
        s.k_decay = FLT_MAX;
        s.k_lr = -FLT_MAX;
        c.nesterov = false;
        tu_fill_wide(b->params, n, 3 + n, -149, -126);
        tu_fill_wide(b->grads, n, 4 + n, -149, -126);
        tu_fill_wide(b->m, n, 5 + n, -149, -126);
        break;
    case 2: /* SGD with Inf/NaN parameters (the caller's) and huge values */
        c.first = true;
        s.k_decay = 1.0f;
        tu_fill_wide(b->params, n, 6 + n, -149, 127);
        tu_fill_wide(b->grads, n, 7 + n, -149, 50);
        b->params[n / 2] = INFINITY;
        if (n > 2) b->params[n - 1] = NAN;
        break;
    case 3: /* AdamW with the smallest eps and subnormal moments */
        update_constants(3, &s, &c);
        c.eps = FLT_MIN;
        s.k_decay = 0.0f;
        s.k_step = -FLT_MAX;
        tu_fill_wide(b->grads, n, 8 + n, -149, -126);
        tu_fill_wide(b->m, n, 9 + n, -149, -126);
        for (size_t i = 0; i < n; i++) b->v[i] = fabsf(b->m[i]);
        break;
    case 4: /* AdamW with Inf/NaN and huge parameters, huge moments */
        update_constants(3, &s, &c);
        s.k_step = -1e30f;
        tu_fill_wide(b->params, n, 10 + n, -149, 127);
        tu_fill_wide(b->grads, n, 11 + n, -149, 50);
        tu_fill_wide(b->m, n, 12 + n, -149, 127);
        for (size_t i = 0; i < n; i++) b->v[i] = FLT_MAX;
        b->params[0] = -INFINITY;
        if (n > 3) b->params[n - 2] = NAN;
        break;
    default: /* perturb by the largest coefficient; subnormal momentum */
        tu_fill_wide(b->m, n, 13 + n, -149, -100);
        b->m[n - 1] = 0.0f;
        k->perturb(b->params, b->src, b->m, FLT_MAX, n, false);
        k->unperturb(b->params, b->m, -FLT_MAX, n);
        return k->sum_squares(b->params, n);
    }
    return which >= 3 ? k->adamw(b->params, b->params, b->grads, b->m, b->v, &s, &c, n, 0.0f, NULL)
                      : k->sgd(b->params, b->params, b->grads, b->m, &s, &c, n, 0.0f, NULL);
}

START_TEST(test_extreme_bitwise)
{
    table_set tables = all_tables();
    const mgpo_kernels *ref = mgpo_kernels_portable();
    for (size_t t = 0; t + 1 < tables.count; t++)
    for (size_t n = 1; n <= 33; n++) {
        const mgpo_kernels *fast = tables.k[t];
        buffers a, b;
        double ra = run_extreme(ref, _i, n, &a);
        double rb = run_extreme(fast, _i, n, &b);
        ck_assert_msg(memcmp(&ra, &rb, sizeof ra) == 0 || (isnan(ra) && isnan(rb)),
                      "case %d n=%zu: sum %.17g vs %.17g", _i, n, ra, rb);
        /* The sum is the portable norm of the new momentum (the params for
         * the perturbation case), and case 0's momentum is +Inf, not NaN. */
        if (_i == 0) ck_assert_msg(isinf(ra) && isinf(rb), "case 0 n=%zu: %g %g", n, ra, rb);
        assert_same_extreme(a.params, b.params, n, "params", _i);
        assert_same_extreme(a.m, b.m, n, "m", _i);
        assert_same_extreme(a.v, b.v, n, "v", _i);
        assert_same_extreme(a.src, b.src, n, "backup", _i);
        free(a.mem);
        free(b.mem);
    }
}
END_TEST

/* A padded tail must not write past the end. */
START_TEST(test_kernel_tail_untouched)
{
    table_set all = all_tables();
    const mgpo_kernels *const *tables = all.k;
    for (size_t t = 0; t < all.count; t++)
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
    table_set all = all_tables();
    const mgpo_kernels *const *tables = all.k;
    for (size_t t = 0; t < all.count; t++)
        for (int which = 3; which <= 6; which++)
            for (size_t l = 0; l < LENGTHS; l++) {
                size_t n = lengths[l];
                buffers fused, split;
                double rf = run_kernel(tables[t], which, n, 1, true, false, 0.37f, &fused);
                fill(&split, n, 1, 7 + n);
                mgpo_kernel_unperturb(split.params, split.m, 0.37f, n);
                /* Re-run the plain kernel on the unperturbed copy. */
                buffers plain = split;
                double rs =
                    run_update(tables[t], which, n, plain.params, 0.0f, NULL, false, &plain);
                assert_same_double(rf, rs, "fused-undo norm");
                assert_same_update(&fused, &plain, n, "fused undo");
                free(fused.mem);
                free(split.mem);
            }
}
END_TEST

/* ---- Exact restore by exception list --------------------------------------
 * perturb_exact lists the elements whose undo (p + c*m) - c*m misses p's
 * bits; restore_exact and the fused step put every clean bit back.  Reached
 * only through the kernels and mgpo_exceptions_of: the list's layout is the
 * library's business. */

/* Negative like a lookahead, large, and small: c*m over many decades. */
static const float coefficients[] = {-1.5f, 1024.5f, -3e-3f};
#define COEFFICIENTS (sizeof coefficients / sizeof coefficients[0])
static const size_t offsets[] = {0, 1, 4};
#define OFFSETS (sizeof offsets / sizeof offsets[0])

static float from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* The test's own account of which elements the list must hold, rounded the
 * way the kernels round (-ffp-contract=off). */
static bool needs_listing(float p, float m, float c)
{
    float b = c * m;
    return mgpo_float_bits((p + b) - b) != mgpo_float_bits(p);
}

static size_t count_needing_listing(const float *p, const float *m, float c, size_t n)
{
    size_t listed = 0;
    for (size_t i = 0; i < n; i++) listed += needs_listing(p[i], m[i], c);
    return listed;
}

/* Random sign, magnitude in [2^lo, 2^(hi+1)), mantissa at least 256 ulps
 * from a power of two, so adding a few ulps never changes the binade. */
static float spread_value(uint64_t *rng, int lo, int hi)
{
    uint64_t r = tu_rand_next(rng);
    int e = lo + (int)(r % (uint64_t)(hi - lo + 1));
    uint32_t mant = (uint32_t)(r >> 32) & 0x7FFFFFu;
    if (mant < 256u) mant = 256u;
    if (mant > 0x7FFFFFu - 256u) mant = 0x7FFFFFu - 256u;
    float x = ldexpf(1.0f + (float)mant * 0x1.0p-23f, e);
    return (r >> 63) ? -x : x;
}

/* The hard cases in turn: signed zeros, subnormals, infinities, NaNs with
 * payloads (a signalling one comes back quietened, so it must be listed), a
 * sum overflowing to infinity, c*m itself NaN or infinite.  `for_step` puts
 * tiny values in place of the NaNs (a step spreads them into the momentum
 * norm, where two payloads meeting in one lane have no defined bits) and
 * keeps m finite. */
static void special_element(size_t kind, float c, bool for_step, float *p, float *m)
{
    *m = 0.3f / c;
    switch (kind % 10) {
    case 0: *p = -0.0f; break; /* -0 + x - x is +0 */
    case 1: *p = 0.0f; break;
    case 2: *p = for_step ? from_bits(0x00000001u) : from_bits(0x7F800123u); break;
    case 3: *p = for_step ? FLT_MIN : from_bits(0xFFC00042u); break;
    case 4: *p = INFINITY; break;
    case 5:
        *p = -INFINITY;
        if (!for_step) *m = copysignf(INFINITY, c); /* -inf + inf is NaN */
        break;
    case 6: *p = FLT_MAX; *m = 1e32f / c; break; /* p + c*m overflows */
    case 7: *p = from_bits(0x80000123u); break;  /* negative subnormal */
    case 8: *p = 0.75f; *m = for_step ? 1e30f : from_bits(0x7FC00777u); break;
    default: *p = -0.75f; *m = for_step ? 0.0f : INFINITY; break;
    }
}

/* Parameters and momentum for coefficient c, by place in each run of 8:
 *   0, 2, 4, 6  c*m a few ulps of p: p moves, subtraction gives it back;
 *   1, 7        c*m from 2^-12 to 16 times p: listed or not, by the bits;
 *   5           p far below c*m, swamped by it: listed;
 *   3           a special value (special_element).
 * So about a quarter of the elements are listed, and at most half of any
 * prefix: the list (about 2/3 of the block) never overflows. */
static void fill_exact(buffers *b, size_t n, size_t offset, uint64_t seed, float c,
                       bool for_step)
{
    fill(b, n, offset, seed);
    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        float p, cm;
        switch (i % 8) {
        case 3: special_element(i / 8, c, for_step, &b->params[i], &b->m[i]); continue;
        case 5:
            p = spread_value(&rng, -100, -60);
            cm = spread_value(&rng, -5, 5);
            break;
        case 1:
        case 7:
            p = spread_value(&rng, -60, 60);
            cm = p * spread_value(&rng, -12, 3);
            break;
        default: {
            p = spread_value(&rng, -60, 60);
            float ulp = ldexpf(1.0f, ilogbf(p) - 23);
            cm = (float)(1 + tu_rand_next(&rng) % 64) * ulp;
            if (tu_rand_next(&rng) & 1) cm = -cm;
            break;
        }
        }
        b->params[i] = p;
        b->m[i] = cm / c;
    }
}

/* Nothing written past the n floats of params and of the backup range. */
static void assert_padding_kept(const buffers *b, const buffers *fresh, size_t n)
{
    ck_assert_msg(memcmp(b->params + n, fresh->params + n, 8 * sizeof(float)) == 0,
                  "params written past the end (n=%zu)", n);
    ck_assert_msg(memcmp(b->src + n, fresh->src + n, 8 * sizeof(float)) == 0,
                  "backup written past the end (n=%zu)", n);
}

/* perturb_exact leaves exactly p + c*m and lists exactly the elements
 * subtraction misses; restore_exact gives back every bit, in place or to
 * another buffer.  Each table is held to the same expectations, so they
 * agree with each other too. */
START_TEST(test_exact_round_trip)
{
    table_set all = all_tables();
    const mgpo_kernels *const *tables = all.k;
    for (size_t l = 0; l < LENGTHS; l++)
        for (size_t o = 0; o < OFFSETS; o++)
            for (size_t ci = 0; ci < COEFFICIENTS; ci++) {
                size_t n = lengths[l];
                float c = coefficients[ci];
                uint64_t seed = 1000 * n + ci;
                buffers clean, want;
                fill_exact(&clean, n, offsets[o], seed, c, false);
                fill_exact(&want, n, offsets[o], seed, c, false);
                mgpo_kernel_perturb(want.params, NULL, want.m, c, n);
                size_t listed = count_needing_listing(clean.params, clean.m, c, n);
                ck_assert_uint_le(listed, mgpo_exception_capacity(n));
                if (n >= 1000) ck_assert_uint_gt(listed, n / 5);
                for (size_t t = 0; t < all.count; t++) {
                    buffers b;
                    fill_exact(&b, n, offsets[o], seed, c, false);
                    uint32_t got = tables[t]->perturb_exact(b.params, b.src, b.m, c, n);
                    ck_assert_msg(got == listed, "%s listed %u of n=%zu, expected %zu",
                                  tables[t]->name, got, n, listed);
                    assert_same(b.params, want.params, n, "perturbed params");
                    if (t == 0) {
                        /* The clean values to another buffer, params kept. */
                        mgpo_kernel_restore_exact(b.v, b.params, b.src, b.m, c, n);
                        assert_same(b.v, clean.params, n, "restored copy");
                        assert_same(b.params, want.params, n, "params under a copy");
                    }
                    tables[t]->restore_exact(b.params, b.src, b.m, c, n);
                    assert_same(b.params, clean.params, n, "restored params");
                    assert_same(b.m, clean.m, n, "m");
                    assert_padding_kept(&b, &clean, n);
                    free(b.mem);
                }
                free(clean.mem);
                free(want.mem);
            }
}
END_TEST

/* Parameters swamped by c*m: every element would be listed, so the block
 * must fall back to a plain copy and be left exactly as it was. */
START_TEST(test_exact_overflow_leaves_params)
{
    table_set all = all_tables();
    const mgpo_kernels *const *tables = all.k;
    for (size_t l = 0; l < LENGTHS; l++)
        for (size_t o = 0; o < OFFSETS; o++)
            for (size_t t = 0; t < all.count; t++) {
                size_t n = lengths[l];
                buffers b, clean;
                fill(&b, n, offsets[o], 5 + n);
                uint64_t rng = n;
                for (size_t i = 0; i < n; i++) b.params[i] = spread_value(&rng, -110, -90);
                fill(&clean, n, offsets[o], 5 + n);
                memcpy(clean.params, b.params, n * sizeof(float));
                ck_assert_uint_eq(count_needing_listing(b.params, b.m, -1.5f, n), n);
                uint32_t got = tables[t]->perturb_exact(b.params, b.src, b.m, -1.5f, n);
                ck_assert_msg(got == MGPO_FULL_BACKUP, "%s: %u listed of n=%zu",
                              tables[t]->name, got, n);
                assert_same(b.params, clean.params, n, "params after an overflow");
                assert_padding_kept(&b, &clean, n);
                free(b.mem);
                free(clean.mem);
            }
}
END_TEST

/* An element that must be listed, of several kinds. */
static void listed_element(size_t kind, uint64_t *rng, float *p, float *m)
{
    *m = 0.2f;
    switch (kind % 4) {
    case 0: *p = spread_value(rng, -110, -90); break;
    case 1: *p = -0.0f; break;
    case 2: *p = from_bits(0x7F800123u); break;
    default: *p = from_bits(0x80000123u); break;
    }
}

/* A list filled to capacity is kept; one more listed element and the block
 * falls back, even when that element is the last one, after all the others
 * were perturbed (the overflow must put that whole prefix back).  With n = 1
 * the capacity is 0: no element listed gives 0, one gives the fallback. */
START_TEST(test_exact_capacity_boundary)
{
    table_set all = all_tables();
    const mgpo_kernels *const *tables = all.k;
    const float c = -1.5f;
    for (size_t l = 0; l < LENGTHS; l++)
        for (size_t extra = 0; extra <= 1; extra++)
            for (size_t t = 0; t < all.count; t++) {
                size_t n = lengths[l], want = mgpo_exception_capacity(n) + extra;
                buffers b, clean;
                fill(&b, n, 1, 9 + n);
                uint64_t rng = n;
                size_t placed = 0;
                for (size_t i = 0; i < n; i++) {
                    /* `want` listed elements spread evenly, the last at n-1. */
                    if ((i + 1) * want / n > i * want / n) {
                        listed_element(placed++, &rng, &b.params[i], &b.m[i]);
                    } else {
                        b.params[i] = spread_value(&rng, -20, 20);
                        b.m[i] = ldexpf(3.0f, ilogbf(b.params[i]) - 23) / c;
                    }
                }
                ck_assert_uint_eq(count_needing_listing(b.params, b.m, c, n), want);
                fill(&clean, n, 1, 9 + n);
                memcpy(clean.params, b.params, n * sizeof(float));
                memcpy(clean.m, b.m, n * sizeof(float));
                uint32_t got = tables[t]->perturb_exact(b.params, b.src, b.m, c, n);
                if (extra) {
                    ck_assert_msg(got == MGPO_FULL_BACKUP, "%s: n=%zu listed %u beyond %zu",
                                  tables[t]->name, n, got, want - 1);
                    assert_same(b.params, clean.params, n, "params after an overflow");
                } else {
                    ck_assert_msg(got == want, "%s: n=%zu listed %u, expected %zu",
                                  tables[t]->name, n, got, want);
                    ck_assert(memcmp(b.params, clean.params, n * sizeof(float)) != 0);
                    tables[t]->restore_exact(b.params, b.src, b.m, c, n);
                    assert_same(b.params, clean.params, n, "params restored from a full list");
                }
                assert_padding_kept(&b, &clean, n);
                free(b.mem);
                free(clean.mem);
            }
}
END_TEST

/* A step that undoes the perturbation itself (undo = c and the block's
 * list) is bitwise restore_exact followed by the plain in-place step, in
 * every table, and the tables agree. */
START_TEST(test_fused_exact_is_restore_then_step)
{
    table_set all = all_tables();
    const mgpo_kernels *const *tables = all.k;
    int which = 3 + _i;
    for (size_t l = 0; l < LENGTHS; l++)
        for (size_t o = 0; o < OFFSETS; o++)
            for (size_t ci = 0; ci < COEFFICIENTS; ci++) {
                size_t n = lengths[l];
                float c = coefficients[ci];
                uint64_t seed = 77 * n + ci;
                buffers first;
                memset(&first, 0, sizeof first);
                double first_norm = 0.0;
                for (size_t t = 0; t < all.count; t++) {
                    const mgpo_kernels *k = tables[t];
                    buffers fused, split;
                    fill_exact(&fused, n, offsets[o], seed, c, true);
                    uint32_t listed = k->perturb_exact(fused.params, fused.src, fused.m, c, n);
                    ck_assert_uint_ne(listed, MGPO_FULL_BACKUP);
                    if (n >= 8) ck_assert_uint_gt(listed, 0);
                    mgpo_exception_reader list = mgpo_exceptions_of(fused.src, n);
                    double rf = run_update(k, which, n, fused.params, c, &list, false, &fused);
                    ck_assert_uint_eq(list.next, listed); /* the whole list was used */

                    fill_exact(&split, n, offsets[o], seed, c, true);
                    ck_assert_uint_eq(k->perturb_exact(split.params, split.src, split.m, c, n),
                                      listed);
                    k->restore_exact(split.params, split.src, split.m, c, n);
                    double rs = run_update(k, which, n, split.params, 0.0f, NULL, false, &split);

                    assert_same_double(rf, rs, "fused-exact norm");
                    assert_same_update(&fused, &split, n, "fused exact");
                    if (t == 0) {
                        first = fused;
                        first_norm = rf;
                    } else {
                        assert_same_double(first_norm, rf, "norm across tables");
                        assert_same_update(&first, &fused, n, "across tables");
                        free(fused.mem);
                    }
                    free(split.mem);
                }
                free(first.mem);
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
    table_set tables = all_tables();
    for (size_t t = 0; t + 1 < tables.count; t++) {
    pm_model a, b;
    float *ma, *mb;
    train(_i, mgpo_kernels_portable(), &a, &ma);
    train(_i, tables.k[t], &b, &mb);
    for (size_t t = 0; t < a.tensors; t++)
        assert_same(a.params[t], b.params[t], a.count[t], "trained params");
    assert_same(ma, mb, a.count[0], "trained m");
    ck_assert(a.params[0][0] != 0.5f * pm_noise(1, 0, 0));
    free(ma);
    free(mb);
    pm_free(&a, 1);
    pm_free(&b, 1);
    }
}
END_TEST

/* Issue 20: the stores into bf16/fp16 saturate a finite value beyond the
 * type's largest (never Inf), with the same bits in every table: nearest,
 * perturb_store and stochastic (the fused AdamW step: test_promises.c), at the edges
 * (65504, 65519, 65520, 65535, 70000, bfloat16's tie with Inf, FLT_MAX),
 * at every lane position of a vector and in the scalar tails. */
START_TEST(test_saturating_stores)
{
    const mgpo_kernels *port = mgpo_kernels_portable();
    table_set tables = all_tables();
    enum { N = 45 };
    const float edges[] = {65504.0f, 65519.0f, 65520.0f, 65535.0f, 70000.0f, 1e30f,
                           FLT_MAX, mgpo_bits_float(0x7f7f7fffu), mgpo_bits_float(0x7f7f8000u),
                           mgpo_bits_float(0x7f7f0000u), INFINITY, 1.0f, 0.0f};
    const size_t E = sizeof edges / sizeof edges[0];
    float x[N], m[N];
    uint16_t a[N], b[N];
    for (size_t rot = 0; rot < 8; rot++) {
        for (size_t i = 0; i < N; i++) {
            float e = edges[(i + rot) % E];
            x[i] = (i & 1) ? -e : e;
            m[i] = (i % 3 == 0) ? 0.0f : ((i & 1) ? -1.0f : 1.0f);
        }
        for (int t = 0; t < 2; t++) {
            mgpo_dtype type = t ? MGPO_DTYPE_BFLOAT16 : MGPO_DTYPE_FLOAT16;
            const uint16_t inf = t ? 0x7f80u : 0x7c00u, max = t ? 0x7f7fu : 0x7bffu;
            port->store(a, type, x, N);
            for (size_t i = 0; i < N; i++) {
                uint16_t mag = (uint16_t)(a[i] & 0x7fffu);
                if (isinf(x[i])) ck_assert_uint_eq(mag, inf);
                else ck_assert_msg(mag != inf, "type %d: %g stored as Inf", t, (double)x[i]);
                if (isfinite(x[i]) && fabsf(x[i]) >= (t ? FLT_MAX : 65520.0f))
                    ck_assert_uint_eq(mag, max);
            }
            for (size_t k = 0; k + 1 < tables.count; k++) {
                tables.k[k]->store(b, type, x, N);
                ck_assert_mem_eq(a, b, sizeof a);
            }
            /* A perturbation of 1e4 outwards (or none) from every edge. */
            port->perturb_store(a, type, x, m, 1e4f, N);
            for (size_t i = 0; i < N; i++)
                if (isfinite(x[i])) ck_assert_uint_ne(a[i] & 0x7fffu, inf);
            for (size_t k = 0; k + 1 < tables.count; k++) {
                tables.k[k]->perturb_store(b, type, x, m, 1e4f, N);
                ck_assert_mem_eq(a, b, sizeof a);
            }
            for (uint64_t key = 1; key < 5; key++) {
                port->store_stochastic(a, type, x, N, key, rot);
                for (size_t i = 0; i < N; i++)
                    if (isfinite(x[i])) ck_assert_uint_ne(a[i] & 0x7fffu, inf);
                for (size_t k = 0; k + 1 < tables.count; k++) {
                    tables.k[k]->store_stochastic(b, type, x, N, key, rot);
                    ck_assert_mem_eq(a, b, sizeof a);
                }
            }
        }
    }
}
END_TEST

/* An element type no table knows (registration refuses one, so only a
 * bug could pass it): every table fails closed as the portable kernels,
 * a load yields the quiet NaN 0x7fc00000 (which the step refuses and
 * perturb skips) and a store writes nothing, in the vectors and in the
 * tails; float32 stores as the exact copy the portable table makes. */
START_TEST(test_unknown_type_fails_closed)
{
    table_set tables = all_tables();
    const mgpo_kernels *ref = mgpo_kernels_portable();
    static const mgpo_dtype unknown[] = {(mgpo_dtype)3, (mgpo_dtype)77};
    static const size_t sizes[] = {5, 8, 16, 37, 100};
    enum { MAX = 100, PAD = 8 };
    float src[MAX], m[MAX], out[MAX + PAD], want[MAX + PAD];
    uint32_t raw[MAX + PAD];
    for (size_t i = 0; i < MAX; i++) {
        src[i] = 0.75f * (float)i - 20.0f + 0x1p-20f * (float)i;
        m[i] = 0.5f - 0.01f * (float)i;
    }
    for (size_t i = 0; i < MAX + PAD; i++) raw[i] = 0x3f80u + 0x10001u * (uint32_t)i;
    for (size_t t = 0; t < tables.count; t++) {
        const mgpo_kernels *k = tables.k[t];
        for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
            const size_t n = sizes[z];
            for (size_t u = 0; u < 2; u++) {
                const mgpo_dtype type = unknown[u];
                for (size_t i = 0; i < MAX + PAD; i++) out[i] = 1.0f;
                k->load(out, raw, type, n, 2.0f);
                for (size_t i = 0; i < n; i++)
                    ck_assert_msg(mgpo_float_bits(out[i]) == 0x7fc00000u,
                                  "%s load type %d n %zu element %zu: %#x", k->name, (int)type,
                                  n, i, mgpo_float_bits(out[i]));
                for (size_t i = n; i < MAX + PAD; i++) ck_assert(out[i] == 1.0f);
                ck_assert_msg(isnan(k->sum_squares_typed(raw, type, n, 1.0f)),
                              "%s sum_squares_typed type %d n %zu", k->name, (int)type, n);
                uint32_t dst[MAX + PAD];
                for (int op = 0; op < 3; op++)
                    for (uint64_t first = 0; first < 4; first++) {
                        memset(dst, 0xa5, sizeof dst);
                        if (op == 0) k->store(dst, type, src, n);
                        if (op == 1) k->perturb_store(dst, type, src, m, -0.25f, n);
                        if (op == 2) k->store_stochastic(dst, type, src, n, 1234u, first);
                        for (size_t i = 0; i < MAX + PAD; i++)
                            ck_assert_msg(dst[i] == 0xa5a5a5a5u,
                                          "%s store op %d type %d n %zu: wrote word %zu",
                                          k->name, op, (int)type, n, i);
                    }
            }
            /* float32: the portable table's bits (a copy, or p + c*m). */
            for (int op = 0; op < 3; op++) {
                memset(out, 0xa5, sizeof out);
                memset(want, 0xa5, sizeof want);
                if (op == 0) {
                    k->store(out, MGPO_DTYPE_FLOAT32, src, n);
                    ref->store(want, MGPO_DTYPE_FLOAT32, src, n);
                } else if (op == 1) {
                    k->perturb_store(out, MGPO_DTYPE_FLOAT32, src, m, -0.25f, n);
                    ref->perturb_store(want, MGPO_DTYPE_FLOAT32, src, m, -0.25f, n);
                } else {
                    k->store_stochastic(out, MGPO_DTYPE_FLOAT32, src, n, 1234u, 3);
                    ref->store_stochastic(want, MGPO_DTYPE_FLOAT32, src, n, 1234u, 3);
                }
                ck_assert_msg(!memcmp(out, want, sizeof out), "%s float32 op %d n %zu", k->name,
                              op, n);
                if (op != 1) /* store and stochastic: float32 is exact */
                    for (size_t i = 0; i < n; i++)
                        ck_assert_uint_eq(mgpo_float_bits(out[i]), mgpo_float_bits(src[i]));
            }
        }
    }
}
END_TEST

START_TEST(test_best_is_fast)
{
    table_set tables = all_tables();
    ck_assert_ptr_eq(mgpo_kernels_best(), tables.k[0]);
    /* The tables' own probes agree with the selector's list. */
    const mgpo_kernels *avx512 = mgpo_kernels_avx512(), *avx2 = mgpo_kernels_avx2();
    ck_assert_ptr_eq(mgpo_kernels_best(),
                     avx512 ? avx512 : avx2 ? avx2 : mgpo_kernels_portable());
    ck_assert_uint_eq(tables.count, 1u + (avx2 != NULL) + (avx512 != NULL));
    for (size_t t = 0; t < tables.count; t++) {
        ck_assert_ptr_eq(mgpo_kernels_named(tables.k[t]->name), tables.k[t]);
        printf("kernels: this CPU runs the '%s' table%s\n", tables.k[t]->name,
               t == 0 ? " (the one a state uses)" : "");
    }
    ck_assert_ptr_null(mgpo_kernels_named("avx1024"));
    ck_assert_ptr_null(mgpo_kernels_named(NULL));
    if (!avx512) ck_assert_ptr_null(mgpo_kernels_named("avx512"));
    if (!avx2) ck_assert_ptr_null(mgpo_kernels_named("avx2"));
}
END_TEST

/* MGPO_KERNELS forces a table at mgpo_create; a name the CPU or build cannot
 * run, or an unknown one, fails the creation instead of being replaced. */
START_TEST(test_forced_table)
{
    static const char *const names[] = {"portable", "avx2", "avx512", "sse9", ""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        ck_assert_int_eq(setenv("MGPO_KERNELS", names[i], 1), 0);
        mgpo_state *st = NULL;
        mgpo_status s = mgpo_create(&st, NULL, NULL);
        const mgpo_kernels *want = *names[i] ? mgpo_kernels_named(names[i]) : mgpo_kernels_best();
        if (want) {
            ck_assert_int_eq(s, MGPO_OK);
            ck_assert_ptr_eq(st->kernels, want);
            ck_assert_str_eq(st->kernels->name, *names[i] ? names[i] : mgpo_kernels_best()->name);
        } else {
            ck_assert_int_eq(s, MGPO_ERR_UNSUPPORTED);
            ck_assert_ptr_null(st);
        }
        mgpo_destroy(st);
    }
    ck_assert_int_eq(unsetenv("MGPO_KERNELS"), 0);
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    ck_assert_ptr_eq(st->kernels, mgpo_kernels_best());
    mgpo_destroy(st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("bitwise");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_kernel_bitwise, 0, 8);
    tcase_add_test(tc, test_kernel_tail_untouched);
    tcase_add_loop_test(tc, test_extreme_bitwise, 0, EXTREME_CASES);
    tcase_add_test(tc, test_fused_undo_is_unperturb);
    tcase_add_test(tc, test_exact_round_trip);
    tcase_add_test(tc, test_exact_overflow_leaves_params);
    tcase_add_test(tc, test_exact_capacity_boundary);
    tcase_add_loop_test(tc, test_fused_exact_is_restore_then_step, 0, 4);
    tcase_add_loop_test(tc, test_training_bitwise, 0, 8);
    tcase_add_test(tc, test_saturating_stores);
    tcase_add_test(tc, test_unknown_type_fails_closed);
    tcase_add_test(tc, test_best_is_fast);
    tcase_add_test(tc, test_forced_table);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
