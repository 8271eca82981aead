/* Mixed precision, behaviour (the numbers against torch are in
 * test_mixed_golden.c): bf16/fp16 parameter buffers restored bit-exactly
 * with no backup and 12 (AdamW) or 8 (SGD) bytes per parameter, stochastic
 * rounding identical for any thread count and tracking updates smaller
 * than half a gap, an overflowing fp16 gradient refused cleanly, the loss
 * scale applied as g * (float)(1/S), master weights set and read, typed
 * LoRA pairs, and bf16 tensors in external mode (no master). */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test_util.h"

enum { N = 9000 }; /* three blocks, the last one short */

static uint16_t to_type(float x, mgpo_dtype t)
{
    return t == MGPO_DTYPE_FLOAT16 ? mgpo_f32_to_f16(x) : mgpo_f32_to_bf16(x);
}

static float from_type(uint16_t h, mgpo_dtype t)
{
    return t == MGPO_DTYPE_FLOAT16 ? mgpo_f16_to_f32(h) : mgpo_bf16_to_f32(h);
}

/* A model of two typed tensors (bf16 and fp16 params) with gradients of the
 * other type, g = (p - target) computed at the typed params as a forward
 * pass would see them, times the loss scale, rounded to the gradient type. */
typedef struct typed_model {
    uint16_t p[2][N], g[2][N];
    float target[2][N];
    mgpo_dtype pt[2], gt[2];
    float scale;
} typed_model;

static void model_init(typed_model *m, uint64_t seed)
{
    m->pt[0] = MGPO_DTYPE_BFLOAT16;
    m->gt[0] = MGPO_DTYPE_FLOAT16;
    m->pt[1] = MGPO_DTYPE_FLOAT16;
    m->gt[1] = MGPO_DTYPE_BFLOAT16;
    m->scale = 1.0f;
    for (int k = 0; k < 2; k++) {
        float x[N];
        tu_fill(x, N, seed + (uint64_t)k, -1.0f, 1.0f);
        tu_fill(m->target[k], N, seed + 10 + (uint64_t)k, -0.5f, 0.5f);
        for (int i = 0; i < N; i++) m->p[k][i] = to_type(x[i], m->pt[k]);
    }
}

static void model_grad(typed_model *m)
{
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++) {
            float g = (from_type(m->p[k][i], m->pt[k]) - m->target[k][i]) * m->scale;
            m->g[k][i] = to_type(g, m->gt[k]);
        }
}

static mgpo_state *model_state(typed_model *m, const mgpo_config *cfg)
{
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, cfg, NULL), MGPO_OK);
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(mgpo_add_tensor_typed(st, m->p[k], m->pt[k], m->g[k], m->gt[k], N, NULL,
                                               NULL),
                         MGPO_OK);
    return st;
}

static mgpo_config mixed_config(mgpo_optimizer opt, mgpo_restore_mode restore)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer = opt;
    c.restore_mode = restore;
    c.lr = 1e-2;
    c.rho = 0.5;
    c.scope = MGPO_SCOPE_TENSOR;
    return c;
}

/* The rounded master is what the caller's buffer holds when clean. */
static void assert_buffer_is_rounded_master(const mgpo_state *st, const typed_model *m)
{
    static float master[N];
    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(mgpo_get_master_weights(st, (size_t)k, master, N), MGPO_OK);
        for (int i = 0; i < N; i++) ck_assert_uint_eq(m->p[k][i], to_type(master[i], m->pt[k]));
    }
}

START_TEST(restore_is_bit_exact_without_backup)
{
    /* Both restore modes, both roundings (a stochastic rounding is
     * recomputed at the restore: it must give the published bits again). */
    for (int mode = 0; mode < 4; mode++) {
        static typed_model m;
        model_init(&m, 3);
        mgpo_config c = mixed_config(MGPO_OPTIMIZER_ADAMW, (mgpo_restore_mode)(mode & 1));
        c.rounding = mode >> 1 ? MGPO_ROUNDING_STOCHASTIC : MGPO_ROUNDING_NEAREST;
        mgpo_state *st = model_state(&m, &c);
        static uint16_t clean[2][N];
        for (int t = 0; t < 6; t++) {
            memcpy(clean, m.p, sizeof clean);
            ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
            if (t > 0) ck_assert(memcmp(clean, m.p, sizeof clean) != 0); /* it moved */
            model_grad(&m);
            ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
            ck_assert_int_eq(memcmp(clean, m.p, sizeof clean), 0);
            ck_assert_int_eq(mgpo_step(st), MGPO_OK);
            if (c.rounding == MGPO_ROUNDING_NEAREST) assert_buffer_is_rounded_master(st, &m);
        }
        mgpo_destroy(st);
    }
}
END_TEST

/* Bytes the state allocates, through a counting allocator. */
typedef struct counter {
    size_t live;
} counter;

static void *count_alloc(void *ctx, size_t size)
{
    ((counter *)ctx)->live += size;
    return malloc(size);
}

static void count_free(void *ctx, void *p, size_t size)
{
    ((counter *)ctx)->live -= size;
    free(p);
}

START_TEST(bytes_per_parameter)
{
    /* AdamW: master, m, v (12 B); SGD: master, m (8 B).  No backup: a
     * float32 tensor in exact mode holds m, v and a backup instead (the
     * caller holds its parameters), the same 12 or 8. */
    static uint16_t p[N];
    static float f[N];
    const size_t want[2][2] = {{12, 12}, {8, 8}}; /* [sgd][float32] */
    for (int sgd = 0; sgd < 2; sgd++)
        for (int f32 = 0; f32 < 2; f32++) {
            counter cnt = {0};
            mgpo_allocator a = {count_alloc, count_free, &cnt};
            mgpo_config c = mixed_config(sgd ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW,
                                         MGPO_RESTORE_EXACT);
            mgpo_state *st = NULL;
            ck_assert_int_eq(mgpo_create(&st, &c, &a), MGPO_OK);
            size_t before = cnt.live;
            ck_assert_int_eq(mgpo_add_tensor_typed(st, f32 ? (void *)f : (void *)p,
                                                   f32 ? MGPO_DTYPE_FLOAT32 : MGPO_DTYPE_BFLOAT16,
                                                   NULL, MGPO_DTYPE_FLOAT32, N, NULL, NULL),
                             MGPO_OK);
            size_t bytes = cnt.live - before;
            /* Per buffer: 64-byte alignment and a pointer; one slot record. */
            ck_assert_msg(bytes >= want[sgd][f32] * N && bytes < want[sgd][f32] * N + 2048,
                          "sgd %d f32 %d: %zu bytes for %d parameters", sgd, f32, bytes, N);
            mgpo_destroy(st);
            ck_assert_uint_eq(cnt.live, 0);
        }
}
END_TEST

static void run_threads(int threads, mgpo_rounding rounding, typed_model *m, float *masters)
{
    model_init(m, 5);
    mgpo_config c = mixed_config(MGPO_OPTIMIZER_ADAMW, MGPO_RESTORE_EXACT);
    c.num_threads = threads;
    c.rounding = rounding;
    c.seed = 77;
    mgpo_state *st = model_state(m, &c);
    for (int t = 0; t < 5; t++) {
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        model_grad(m);
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    }
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(mgpo_get_master_weights(st, (size_t)k, masters + k * N, N), MGPO_OK);
    mgpo_destroy(st);
}

START_TEST(stochastic_rounding_same_bits_any_threads)
{
    static typed_model one, other, nearest;
    static float m1[2 * N], m2[2 * N], mn[2 * N];
    run_threads(1, MGPO_ROUNDING_STOCHASTIC, &one, m1);
    for (int threads = 2; threads <= 3; threads++) {
        run_threads(threads, MGPO_ROUNDING_STOCHASTIC, &other, m2);
        ck_assert_int_eq(memcmp(one.p, other.p, sizeof one.p), 0);
        ck_assert_int_eq(memcmp(m1, m2, sizeof m1), 0);
    }
    /* And it is not nearest rounding: some published values differ. */
    run_threads(1, MGPO_ROUNDING_NEAREST, &nearest, mn);
    size_t differ = 0;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < N; i++) differ += one.p[k][i] != nearest.p[k][i];
    ck_assert_uint_gt(differ, N / 10);
}
END_TEST

/* An update below half a bf16 gap: nearest rounding never moves the buffer,
 * stochastic rounding makes its mean follow the master. */
START_TEST(stochastic_rounding_tracks_small_updates)
{
    static uint16_t p[N];
    static float g[N], master[N];
    for (int i = 0; i < N; i++) {
        p[i] = mgpo_f32_to_bf16(1.0f);
        g[i] = -1.0f; /* SGD without momentum: theta += lr each step */
    }
    for (int r = 0; r < 2; r++) {
        for (int i = 0; i < N; i++) p[i] = mgpo_f32_to_bf16(1.0f);
        mgpo_config c = mgpo_config_default();
        c.optimizer = MGPO_OPTIMIZER_SGD;
        c.momentum = 0.0;
        c.rho = 0.0;
        c.lr = 1.0 / 1024; /* a bf16 gap above 1 is 1/128: 1/8 of it */
        c.rounding = r ? MGPO_ROUNDING_STOCHASTIC : MGPO_ROUNDING_NEAREST;
        mgpo_state *st = NULL;
        ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor_typed(st, p, MGPO_DTYPE_BFLOAT16, g, MGPO_DTYPE_FLOAT32,
                                               N, NULL, NULL),
                         MGPO_OK);
        for (int t = 0; t < 3; t++) ck_assert_int_eq(mgpo_step(st), MGPO_OK);
        ck_assert_int_eq(mgpo_get_master_weights(st, 0, master, N), MGPO_OK);
        double mean = 0;
        for (int i = 0; i < N; i++) mean += mgpo_bf16_to_f32(p[i]);
        mean /= N;
        ck_assert_float_eq(master[0], 1.0f + 3.0f / 1024); /* exact */
        if (!r) {
            ck_assert_double_eq(mean, 1.0);
        } else {
            /* Each value is 1 or 1 + 1/128 with p = 3/8: sd of the mean
             * (1/128) * sqrt(p(1-p)/N) = 4e-5. */
            ck_assert_msg(fabs(mean - master[0]) < 6 * 4.0e-5, "mean %.7f master %.7f", mean,
                          (double)master[0]);
        }
        mgpo_destroy(st);
    }
}
END_TEST

START_TEST(overflowing_fp16_gradient_is_refused_cleanly)
{
    static typed_model m;
    model_init(&m, 9);
    mgpo_config c = mixed_config(MGPO_OPTIMIZER_ADAMW, MGPO_RESTORE_EXACT);
    mgpo_state *st = model_state(&m, &c);
    ck_assert_int_eq(mgpo_set_grad_scale(st, 1024.0), MGPO_OK);
    m.scale = 1024.0f;
    for (int t = 0; t < 2; t++) {
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        model_grad(&m);
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    }
    static uint16_t clean[2][N];
    static float m_before[N], m_after[N], master_before[N], master_after[N];
    memcpy(clean, m.p, sizeof clean);
    mgpo_stats before, after;
    ck_assert_int_eq(mgpo_get_stats(st, &before), MGPO_OK);
    ck_assert_int_eq(mgpo_get_moments(st, 0, MGPO_MOMENT_FIRST, m_before, N), MGPO_OK);
    ck_assert_int_eq(mgpo_get_master_weights(st, 0, master_before, N), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    model_grad(&m);
    m.g[0][N / 2] = 0x7c00; /* fp16 +Inf: a loss-scale overflow */
    ck_assert_int_eq(mgpo_step(st), MGPO_ERR_NONFINITE_GRADIENT);
    ck_assert_int_eq(memcmp(clean, m.p, sizeof clean), 0);
    ck_assert_int_eq(mgpo_get_stats(st, &after), MGPO_OK);
    ck_assert_uint_eq(after.step, before.step);
    ck_assert_uint_eq(after.skipped_steps, before.skipped_steps + 1);
    ck_assert_int_eq(after.perturbed, 0);
    ck_assert_double_eq(after.grad_norm_ema, before.grad_norm_ema);
    ck_assert_int_eq(mgpo_get_moments(st, 0, MGPO_MOMENT_FIRST, m_after, N), MGPO_OK);
    ck_assert_int_eq(mgpo_get_master_weights(st, 0, master_after, N), MGPO_OK);
    ck_assert_int_eq(memcmp(m_before, m_after, sizeof m_before), 0);
    ck_assert_int_eq(memcmp(master_before, master_after, sizeof master_before), 0);
    /* Halve the scale and go on. */
    ck_assert_int_eq(mgpo_set_grad_scale(st, 512.0), MGPO_OK);
    m.scale = 512.0f;
    model_grad(&m);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    mgpo_destroy(st);
}
END_TEST

/* Every use sees g * (float)(1/S): a run with S = 3 and gradients 3g equals
 * a run with S = 1 and gradients fl(fl(3g) * fl(1/3)), bit for bit; with
 * S = 2^10 and gradients 2^10 g it equals the unscaled run. */
START_TEST(loss_scale_multiplies_by_the_float_reciprocal)
{
    enum { M = 5000 };
    static float p1[M], p2[M], g1[M], g2[M], base[M];
    tu_fill(base, M, 21, -2.0f, 2.0f);
    const double scales[2] = {3.0, 1024.0};
    for (int s = 0; s < 2; s++) {
        const float inv = (float)(1.0 / scales[s]);
        tu_fill(p1, M, 22, -1.0f, 1.0f);
        memcpy(p2, p1, sizeof p1);
        mgpo_config c = mgpo_config_nlu_paper(); /* with clipping at 1 */
        c.rho = 0.1;
        mgpo_state *a = NULL, *b = NULL;
        ck_assert_int_eq(mgpo_create(&a, &c, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_create(&b, &c, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor(a, p1, g1, M, NULL, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor(b, p2, g2, M, NULL, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_set_grad_scale(a, scales[s]), MGPO_OK);
        for (int t = 0; t < 8; t++) {
            ck_assert_int_eq(mgpo_perturb(a), MGPO_OK);
            ck_assert_int_eq(mgpo_perturb(b), MGPO_OK);
            for (int i = 0; i < M; i++) {
                float g = (p1[i] - base[i]) * (float)(t + 1);
                g1[i] = g * (float)scales[s];
                g2[i] = s ? g : g1[i] * inv;
            }
            ck_assert_int_eq(mgpo_step(a), MGPO_OK);
            ck_assert_int_eq(mgpo_step(b), MGPO_OK);
            ck_assert_int_eq(memcmp(p1, p2, sizeof p1), 0);
        }
        mgpo_stats sa, sb;
        ck_assert_int_eq(mgpo_get_stats(a, &sa), MGPO_OK);
        ck_assert_int_eq(mgpo_get_stats(b, &sb), MGPO_OK);
        ck_assert_double_eq(sa.grad_norm, sb.grad_norm);
        ck_assert_double_eq(sa.grad_norm_ema, sb.grad_norm_ema);
        ck_assert_int_eq(sa.clipped, 1);
        mgpo_destroy(a);
        mgpo_destroy(b);
    }
}
END_TEST

START_TEST(master_weights_set_and_read)
{
    static uint16_t p[N], g[N];
    static float values[N], back[N];
    tu_fill(values, N, 31, -3.0f, 3.0f);
    memset(p, 0, sizeof p);
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor_typed(st, p, MGPO_DTYPE_FLOAT16, g, MGPO_DTYPE_FLOAT16, N,
                                           NULL, NULL),
                     MGPO_OK);
    ck_assert_int_eq(mgpo_set_master_weights(st, 0, values, N - 1), MGPO_ERR_INVALID_ARGUMENT);
    /* A NaN or Inf in the buffer cannot become a master: refused. */
    static uint16_t bad[N];
    bad[N - 1] = 0x7c00; /* fp16 +Inf */
    ck_assert_int_eq(mgpo_add_tensor_typed(st, bad, MGPO_DTYPE_FLOAT16, NULL, MGPO_DTYPE_FLOAT16,
                                           N, NULL, NULL),
                     MGPO_ERR_INVALID_ARGUMENT);
    size_t count = 0;
    ck_assert_int_eq(mgpo_get_tensor_count(st, &count), MGPO_OK);
    ck_assert_uint_eq(count, 1);
    values[7] = NAN;
    ck_assert_int_eq(mgpo_set_master_weights(st, 0, values, N), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_uint_eq(p[0], 0); /* nothing written on error */
    values[7] = 0.1f;
    ck_assert_int_eq(mgpo_set_master_weights(st, 0, values, N), MGPO_OK);
    ck_assert_int_eq(mgpo_get_master_weights(st, 0, back, N), MGPO_OK);
    ck_assert_int_eq(memcmp(values, back, sizeof back), 0); /* not rounded */
    for (int i = 0; i < N; i++) ck_assert_uint_eq(p[i], mgpo_f32_to_f16(values[i]));
    for (int i = 0; i < N; i++) g[i] = mgpo_f32_to_f16(0.5f);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    ck_assert_int_eq(mgpo_set_master_weights(st, 0, values, N), MGPO_ERR_WRONG_PHASE);
    mgpo_destroy(st);
}
END_TEST

/* A pair with bf16 A and B and fp16 gradients in adapter mode, and one in
 * base mode over a bf16 W: restore is bit-exact, W is restored from its own
 * bf16 backup, and the steps run. */
START_TEST(typed_lora_pairs)
{
    enum { R = 4, IN = 24, OUT = 20 };
    static uint16_t a[2][R * IN], b[2][OUT * R], ga[2][R * IN], gb[2][OUT * R], w[OUT * IN];
    float x[OUT * IN];
    tu_fill(x, OUT * IN, 41, -1.0f, 1.0f);
    for (int i = 0; i < OUT * IN; i++) w[i] = mgpo_f32_to_bf16(x[i]);
    for (int k = 0; k < 2; k++) {
        tu_fill(x, R * IN, 42 + (uint64_t)k, -0.5f, 0.5f);
        for (int i = 0; i < R * IN; i++) a[k][i] = mgpo_f32_to_bf16(x[i]);
        tu_fill(x, OUT * R, 44 + (uint64_t)k, -0.5f, 0.5f);
        for (int i = 0; i < OUT * R; i++) b[k][i] = mgpo_f32_to_bf16(x[i]);
    }
    mgpo_config c = mixed_config(MGPO_OPTIMIZER_ADAMW, MGPO_RESTORE_EXACT);
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    for (int k = 0; k < 2; k++) {
        mgpo_lora_pair_typed pair;
        memset(&pair, 0, sizeof pair);
        pair.a = a[k];
        pair.b = b[k];
        pair.grad_a = ga[k];
        pair.grad_b = gb[k];
        pair.adapter_type = MGPO_DTYPE_BFLOAT16;
        pair.grad_type = MGPO_DTYPE_FLOAT16;
        pair.base_type = MGPO_DTYPE_BFLOAT16;
        pair.rank = R;
        pair.n_in = IN;
        pair.n_out = OUT;
        pair.scaling = 2.0;
        pair.mode = k ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER;
        pair.base_weight = k ? w : NULL;
        ck_assert_int_eq(mgpo_add_lora_pair_typed(st, &pair, NULL, NULL), MGPO_OK);
    }
    static uint16_t a0[2][R * IN], b0[2][OUT * R], w0[OUT * IN];
    for (int t = 0; t < 6; t++) {
        memcpy(a0, a, sizeof a);
        memcpy(b0, b, sizeof b);
        memcpy(w0, w, sizeof w);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        if (t > 0) {
            ck_assert(memcmp(a0[0], a[0], sizeof a0[0]) != 0); /* adapter mode moves A */
            ck_assert(memcmp(w0, w, sizeof w) != 0);           /* base mode moves W */
            ck_assert_int_eq(memcmp(a0[1], a[1], sizeof a0[1]), 0); /* ... not its A */
        }
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < R * IN; i++)
                ga[k][i] = mgpo_f32_to_f16(0.25f * mgpo_bf16_to_f32(a[k][i]) - 0.01f);
            for (int i = 0; i < OUT * R; i++)
                gb[k][i] = mgpo_f32_to_f16(0.5f * mgpo_bf16_to_f32(b[k][i]) + 0.02f);
        }
        ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
        ck_assert_int_eq(memcmp(a0, a, sizeof a), 0);
        ck_assert_int_eq(memcmp(b0, b, sizeof b), 0);
        ck_assert_int_eq(memcmp(w0, w, sizeof w), 0);
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    }
    ck_assert(memcmp(a0, a, sizeof a) != 0); /* the steps moved A */
    mgpo_destroy(st);
}
END_TEST

/* External mode: the caller's optimizer keeps the master.  A bf16 tensor's
 * perturbation is round(p + c*m) from the buffer itself, the restore is a
 * copy of a 2-byte-per-element backup (exact) or round(p - c*m) (low
 * memory); the gradient norm is that of the unscaled fp16 gradients. */
START_TEST(external_mode_typed)
{
    static uint16_t p16[N], clean[N], g16[N];
    static float m[N], x[N];
    tu_fill(x, N, 51, -1.0f, 1.0f);
    tu_fill(m, N, 52, -0.2f, 0.2f);
    for (int mode = 0; mode < 2; mode++) {
        for (int i = 0; i < N; i++) p16[i] = mgpo_f32_to_bf16(x[i]);
        memcpy(clean, p16, sizeof clean);
        counter cnt = {0};
        mgpo_allocator a = {count_alloc, count_free, &cnt};
        mgpo_config c = mgpo_config_default();
        c.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
        c.restore_mode = (mgpo_restore_mode)mode;
        c.rho = 2.0; /* large enough to move bf16 values */
        mgpo_state *st = NULL;
        ck_assert_int_eq(mgpo_create(&st, &c, &a), MGPO_OK);
        size_t before = cnt.live;
        ck_assert_int_eq(mgpo_add_tensor_typed(st, p16, MGPO_DTYPE_BFLOAT16, g16,
                                               MGPO_DTYPE_FLOAT16, N, NULL, NULL),
                         MGPO_OK);
        size_t bytes = cnt.live - before;
        ck_assert_msg(mode ? bytes < 2048 : bytes >= 2 * N && bytes < 2 * N + 2048,
                      "mode %d: %zu bytes", mode, bytes);
        ck_assert_int_eq(mgpo_get_master_weights(st, 0, x, N), MGPO_ERR_INVALID_ARGUMENT);
        ck_assert_int_eq(mgpo_set_momentum(st, 0, m), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        mgpo_unit_stats u;
        ck_assert_int_eq(mgpo_get_unit_stats(st, 0, &u), MGPO_OK);
        const float cf = (float)u.coefficient;
        ck_assert(cf != 0.0f);
        size_t moved = 0;
        for (int i = 0; i < N; i++) {
            ck_assert_uint_eq(p16[i], mgpo_f32_to_bf16(mgpo_bf16_to_f32(clean[i]) + cf * m[i]));
            moved += p16[i] != clean[i];
        }
        ck_assert_uint_gt(moved, N / 2);
        double sq = 0;
        for (int i = 0; i < N; i++) {
            g16[i] = mgpo_f32_to_f16((float)(i % 17) * 64.0f);
            float g = mgpo_f16_to_f32(g16[i]) * (float)(1.0 / 256.0);
            sq += (double)g * g;
        }
        ck_assert_int_eq(mgpo_set_grad_scale(st, 256.0), MGPO_OK);
        ck_assert_int_eq(mgpo_step(st), MGPO_OK); /* restores */
        if (mode == 0) {
            ck_assert_int_eq(memcmp(p16, clean, sizeof clean), 0);
        } else {
            for (int i = 0; i < N; i++) {
                float want = mgpo_bf16_to_f32(
                    mgpo_f32_to_bf16(mgpo_bf16_to_f32(mgpo_f32_to_bf16(mgpo_bf16_to_f32(clean[i]) +
                                                                         cf * m[i])) -
                                     cf * m[i]));
                ck_assert_uint_eq(p16[i], mgpo_f32_to_bf16(want));
            }
        }
        mgpo_stats s;
        ck_assert_int_eq(mgpo_get_stats(st, &s), MGPO_OK);
        ck_assert(tu_close(s.grad_norm, sqrt(sq), 1e-12));
        mgpo_destroy(st);
        ck_assert_uint_eq(cnt.live, 0);
    }

    /* Not supported: bf16 A and B of a pair in external mode, and bf16
     * parameters with the random direction. */
    mgpo_config c = mgpo_config_default();
    c.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    mgpo_lora_pair_typed pair;
    memset(&pair, 0, sizeof pair);
    pair.a = p16;
    pair.b = p16 + 64;
    pair.adapter_type = MGPO_DTYPE_BFLOAT16;
    pair.rank = 2;
    pair.n_in = 8;
    pair.n_out = 8;
    pair.scaling = 1.0;
    ck_assert_int_eq(mgpo_add_lora_pair_typed(st, &pair, NULL, NULL), MGPO_ERR_UNSUPPORTED);
    mgpo_destroy(st);
    c.optimizer_mode = MGPO_OPTIMIZER_INTEGRATED;
    c.direction = MGPO_DIRECTION_RANDOM;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor_typed(st, p16, MGPO_DTYPE_FLOAT16, NULL, MGPO_DTYPE_FLOAT32,
                                           N, NULL, NULL),
                     MGPO_ERR_UNSUPPORTED);
    mgpo_destroy(st);
}
END_TEST

/* External mode, saved while perturbed before any step (the mode perturbs
 * as soon as the momentum is attached): the checkpoint carries the bf16
 * backup, so a resumed state restores the caller's buffer bit for bit. */
START_TEST(external_mode_typed_checkpoint)
{
    static uint16_t p16[N], clean[N], perturbed[N], g16[N];
    static float m[N], x[N];
    tu_fill(x, N, 61, -1.0f, 1.0f);
    tu_fill(m, N, 62, -0.2f, 0.2f);
    for (int i = 0; i < N; i++) p16[i] = mgpo_f32_to_bf16(x[i]);
    memcpy(clean, p16, sizeof clean);
    mgpo_config c = mgpo_config_default();
    c.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    c.rho = 2.0;
    mgpo_state *a = NULL, *b = NULL;
    ck_assert_int_eq(mgpo_create(&a, &c, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_create(&b, &c, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor_typed(a, p16, MGPO_DTYPE_BFLOAT16, g16, MGPO_DTYPE_BFLOAT16,
                                           N, NULL, NULL),
                     MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(a, 0, m), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(a), MGPO_OK);
    memcpy(perturbed, p16, sizeof perturbed);
    ck_assert(memcmp(perturbed, clean, sizeof clean) != 0);
    size_t size = 0, written = 0;
    ck_assert_int_eq(mgpo_checkpoint_size(a, &size), MGPO_OK);
    unsigned char *buf = malloc(size);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(mgpo_save(a, buf, size, &written), MGPO_OK);
    ck_assert_uint_eq(written, size);
    ck_assert_int_eq(mgpo_restore(a), MGPO_OK);
    ck_assert_int_eq(memcmp(p16, clean, sizeof clean), 0);
    mgpo_destroy(a);

    /* Resume: register, attach, put the buffer back as it was at the save. */
    static uint16_t q16[N];
    memcpy(q16, perturbed, sizeof q16);
    ck_assert_int_eq(mgpo_add_tensor_typed(b, q16, MGPO_DTYPE_BFLOAT16, g16, MGPO_DTYPE_BFLOAT16,
                                           N, NULL, NULL),
                     MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(b, 0, m), MGPO_OK);
    ck_assert_int_eq(mgpo_load(b, buf, written), MGPO_OK);
    int is_perturbed = 0;
    ck_assert_int_eq(mgpo_is_perturbed(b, &is_perturbed), MGPO_OK);
    ck_assert_int_eq(is_perturbed, 1);
    ck_assert_int_eq(mgpo_restore(b), MGPO_OK);
    ck_assert_int_eq(memcmp(q16, clean, sizeof clean), 0);
    /* One corrupted backup element is not detectable (any bits are a
     * valid bf16), but it is what comes back: the copy is really read. */
    buf[written - 1] ^= 0x01;
    mgpo_destroy(b);
    free(buf);
}
END_TEST

/* A bf16 or fp16 momentum (torch.optim's exp_avg of bf16 parameters)
 * perturbs exactly as its float32 widening does, and a state saved while
 * perturbed along it resumes once it is attached again. */
START_TEST(external_mode_typed_momentum)
{
    static uint16_t pa[N], pb[N], clean[N], m16[N];
    static float m32[N], x[N];
    tu_fill(x, N, 81, -1.0f, 1.0f);
    for (int t = 1; t <= 2; t++) {
        mgpo_dtype type = (mgpo_dtype)t;
        tu_fill(m32, N, 82, -0.2f, 0.2f);
        for (int i = 0; i < N; i++) {
            m16[i] = t == 1 ? mgpo_f32_to_bf16(m32[i]) : mgpo_f32_to_f16(m32[i]);
            m32[i] = t == 1 ? mgpo_bf16_to_f32(m16[i]) : mgpo_f16_to_f32(m16[i]);
            pa[i] = pb[i] = clean[i] = mgpo_f32_to_bf16(x[i]);
        }
        mgpo_config c = mgpo_config_default();
        c.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
        c.rho = 2.0;
        mgpo_state *a = NULL, *b = NULL;
        ck_assert_int_eq(mgpo_create(&a, &c, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_create(&b, &c, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor_typed(a, pa, MGPO_DTYPE_BFLOAT16, NULL,
                                               MGPO_DTYPE_FLOAT32, N, NULL, NULL),
                         MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor_typed(b, pb, MGPO_DTYPE_BFLOAT16, NULL,
                                               MGPO_DTYPE_FLOAT32, N, NULL, NULL),
                         MGPO_OK);
        ck_assert_int_eq(mgpo_set_momentum_typed(a, 0, m16, (mgpo_dtype)9), MGPO_ERR_BAD_ENUM);
        ck_assert_int_eq(mgpo_set_momentum_typed(a, 0, (const unsigned char *)m16 + 1, type),
                         MGPO_ERR_INVALID_ARGUMENT);
        ck_assert_int_eq(mgpo_set_momentum_typed(a, 0, pa, type), MGPO_ERR_OVERLAP);
        ck_assert_int_eq(mgpo_set_momentum_typed(a, 0, m16, type), MGPO_OK);
        ck_assert_int_eq(mgpo_set_momentum(b, 0, m32), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(a), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(b), MGPO_OK);
        ck_assert_int_eq(memcmp(pa, pb, sizeof pa), 0);
        ck_assert(memcmp(pa, clean, sizeof pa) != 0);
        mgpo_unit_stats ua, ub;
        ck_assert_int_eq(mgpo_get_unit_stats(a, 0, &ua), MGPO_OK);
        ck_assert_int_eq(mgpo_get_unit_stats(b, 0, &ub), MGPO_OK);
        ck_assert_double_eq(ua.coefficient, ub.coefficient);
        ck_assert_double_eq(ua.momentum_norm, ub.momentum_norm);
        /* The momentum cannot change while perturbed. */
        ck_assert_int_eq(mgpo_set_momentum_typed(a, 0, m16, type), MGPO_ERR_WRONG_PHASE);
        size_t size = 0;
        ck_assert_int_eq(mgpo_checkpoint_size(a, &size), MGPO_OK);
        unsigned char *buf = malloc(size);
        ck_assert_ptr_nonnull(buf);
        ck_assert_int_eq(mgpo_save(a, buf, size, &size), MGPO_OK);
        mgpo_destroy(a);
        /* Resume: register, attach the typed momentum, buffer as saved. */
        ck_assert_int_eq(mgpo_create(&a, &c, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor_typed(a, pa, MGPO_DTYPE_BFLOAT16, NULL,
                                               MGPO_DTYPE_FLOAT32, N, NULL, NULL),
                         MGPO_OK);
        ck_assert_int_eq(mgpo_load(a, buf, size), MGPO_ERR_CHECKPOINT_LAYOUT); /* not attached */
        ck_assert_int_eq(mgpo_set_momentum_typed(a, 0, m16, type), MGPO_OK);
        ck_assert_int_eq(mgpo_load(a, buf, size), MGPO_OK);
        ck_assert_int_eq(mgpo_restore(a), MGPO_OK);
        ck_assert_int_eq(memcmp(pa, clean, sizeof pa), 0);
        free(buf);
        mgpo_destroy(a);
        mgpo_destroy(b);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mixed");
    TCase *tc = tcase_create("mixed");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, restore_is_bit_exact_without_backup);
    tcase_add_test(tc, bytes_per_parameter);
    tcase_add_test(tc, stochastic_rounding_same_bits_any_threads);
    tcase_add_test(tc, stochastic_rounding_tracks_small_updates);
    tcase_add_test(tc, overflowing_fp16_gradient_is_refused_cleanly);
    tcase_add_test(tc, loss_scale_multiplies_by_the_float_reciprocal);
    tcase_add_test(tc, master_weights_set_and_read);
    tcase_add_test(tc, typed_lora_pairs);
    tcase_add_test(tc, external_mode_typed);
    tcase_add_test(tc, external_mode_typed_checkpoint);
    tcase_add_test(tc, external_mode_typed_momentum);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
