/* Issue 20, the library side: promises of include/mgpo.h that 0.3 broke,
 * each checked where it broke.
 * - fp_env: mgpo_set_grad_scale and the rho*scale_max bound of
 *   mgpo_config_validate (so mgpo_create, mgpo_set_rho) compute in the
 *   library's environment: no SIGFPE under the caller's traps, no flag
 *   leaked, the same result under another rounding mode (finding 2);
 * - alignment: float32 buffers at addresses that are not a multiple of 4
 *   are refused (finding 3);
 * - random_direction: in external mode the random vector's norm counts
 *   only items with a momentum attached, so the parameters move by the
 *   reported perturbation norm (finding 5);
 * - saturation: no finite master, perturbation or step writes Inf into a
 *   bf16/fp16 buffer: 65504, 65520, 70000, bfloat16's largest (finding 6);
 * - momentum_alias: an external momentum may not overlap a gradient, nor a
 *   gradient an attached momentum (finding 7);
 * - nan_bits: a skipped unit's NaN momentum norm has the same bits with
 *   every kernel table, in the statistics and in the checkpoint (finding 8);
 * - newcomer: precise error strings, zero-filled options refused, untyped
 *   setters never change an element type, the public conversions, the
 *   loss-scale getter, registration after an external-mode perturb. */
#define _GNU_SOURCE /* feenableexcept */
#include <check.h>
#include <fenv.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test_util.h"

static mgpo_config external_config(void)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    return c;
}

/* Every kernel table this CPU can run, fastest first, the portable one last
 * (as tests/test_kernels.c's all_tables): the promises hold for each. */
#define MAX_TABLES 8
static size_t runnable_tables(const mgpo_kernels **tables)
{
    size_t count = mgpo_kernels_runnable(tables, MAX_TABLES);
    ck_assert_uint_ge(count, 1);
    ck_assert_uint_le(count, MAX_TABLES);
    ck_assert_ptr_eq(tables[count - 1], mgpo_kernels_portable());
    return count;
}

static uint64_t double_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* ---- Finding 2: the floating-point environment ----------------------------- */

#define ALL_TRAPS (FE_DIVBYZERO | FE_INVALID | FE_OVERFLOW | FE_UNDERFLOW | FE_INEXACT)

/* A configuration whose rho * scale_max overflows a double. */
static mgpo_config overflowing_rho(void)
{
    mgpo_config c = mgpo_config_default();
    c.rho = 1e300;
    c.scale_max = 1e300;
    return c;
}

START_TEST(fp_env_no_flags_leak)
{
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    mgpo_config big = overflowing_rho();
    feclearexcept(FE_ALL_EXCEPT);
    ck_assert_int_eq(mgpo_set_grad_scale(st, 3.0), MGPO_OK);    /* 1/3: inexact */
    ck_assert_int_eq(mgpo_set_grad_scale(st, NAN), MGPO_ERR_BAD_GRAD_SCALE); /* invalid */
    ck_assert_int_eq(mgpo_config_validate(&big), MGPO_ERR_BAD_RHO); /* overflow */
    ck_assert_int_eq(mgpo_set_rho(st, 1e29), MGPO_OK); /* 1e29 * 10: inexact */
    ck_assert_int_eq(fetestexcept(FE_ALL_EXCEPT), 0);
    mgpo_destroy(st);
}
END_TEST

START_TEST(fp_env_traps)
{
    mgpo_state *st = NULL, *other = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    mgpo_config big = overflowing_rho();
    mgpo_config ok_cfg = mgpo_config_default();
    ok_cfg.rho = 1e29;
    feclearexcept(FE_ALL_EXCEPT);
    feenableexcept(ALL_TRAPS);
    /* Any arithmetic of the library under the caller's traps would raise
     * SIGFPE here, and Check would report the signal. */
    mgpo_status a = mgpo_set_grad_scale(st, 3.0);
    mgpo_status b = mgpo_set_grad_scale(st, NAN);
    mgpo_status c = mgpo_config_validate(&big);
    mgpo_status d = mgpo_create(&other, &big, NULL);
    mgpo_status e = mgpo_set_rho(st, 1e29);
    mgpo_status f = mgpo_create(&other, &ok_cfg, NULL);
    fedisableexcept(ALL_TRAPS);
    ck_assert_int_eq(a, MGPO_OK);
    ck_assert_int_eq(b, MGPO_ERR_BAD_GRAD_SCALE);
    ck_assert_int_eq(c, MGPO_ERR_BAD_RHO);
    ck_assert_int_eq(d, MGPO_ERR_BAD_RHO);
    ck_assert_int_eq(e, MGPO_OK);
    ck_assert_int_eq(f, MGPO_OK);
    mgpo_destroy(other);
    mgpo_destroy(st);
}
END_TEST

START_TEST(fp_env_rounding_mode)
{
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    const float want = (float)(1.0 / 3.0); /* this test runs in the default mode */
    ck_assert_int_eq(fesetround(FE_DOWNWARD), 0);
    ck_assert_int_eq(mgpo_set_grad_scale(st, 3.0), MGPO_OK);
    fesetround(FE_TONEAREST);
    ck_assert_uint_eq(mgpo_float_bits(st->grad_unscale), mgpo_float_bits(want));

    /* A rho whose exact product with k lies above 2^100 but rounds to at
     * most 2^100 to nearest: accepted, whatever the caller's mode. */
    const double bound = MGPO_PERTURBATION_MAX;
    double rho = 0.0, k = 0.0;
    for (int odd = 3; odd < 1000 && rho == 0.0; odd += 2) {
        double r = nextafter(bound / odd, INFINITY);
        for (int step = 0; step < 4 && rho == 0.0; step++, r = nextafter(r, INFINITY))
            if (r * odd <= bound && fma(r, (double)odd, -bound) > 0.0) rho = r, k = odd;
    }
    ck_assert(rho > 0.0);
    mgpo_config cfg = mgpo_config_default();
    cfg.rho = rho;
    cfg.scale_max = k;
    ck_assert_int_eq(mgpo_config_validate(&cfg), MGPO_OK);
    ck_assert_int_eq(fesetround(FE_UPWARD), 0);
    mgpo_status up = mgpo_config_validate(&cfg);
    mgpo_state *other = NULL;
    mgpo_status created = mgpo_create(&other, &cfg, NULL);
    fesetround(FE_TONEAREST);
    ck_assert_int_eq(up, MGPO_OK);
    ck_assert_int_eq(created, MGPO_OK);
    mgpo_destroy(other);
    mgpo_destroy(st);
}
END_TEST

/* ---- Finding 3: alignment ---------------------------------------------------- */

START_TEST(alignment_float32_refused)
{
    /* Storage aligned for floats; +1 byte is misaligned. */
    static float store[4][40];
    unsigned char *params = (unsigned char *)store[0] + 1, *grads = (unsigned char *)store[1] + 2;
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, (float *)(void *)params, store[1], 8, NULL, NULL),
                     MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_add_tensor(st, store[0], (const float *)(void *)grads, 8, NULL, NULL),
                     MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_add_tensor_typed(st, params + 1, MGPO_DTYPE_BFLOAT16, grads + 1,
                                           MGPO_DTYPE_FLOAT32, 8, NULL, NULL),
                     MGPO_ERR_INVALID_ARGUMENT); /* bf16 params fine, fp32 grads at +3 not */
    ck_assert_int_eq(mgpo_add_tensor(st, store[0], store[1], 8, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad(st, 0, (const float *)(void *)grads), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_grad_typed(st, 0, grads, MGPO_DTYPE_FLOAT32),
                     MGPO_ERR_INVALID_ARGUMENT);
    mgpo_lora_pair p;
    memset(&p, 0, sizeof p);
    p.a = (float *)(void *)((unsigned char *)store[2] + 2);
    p.b = store[3];
    p.rank = 1;
    p.n_in = 4;
    p.n_out = 4;
    p.scaling = 1.0;
    ck_assert_int_eq(mgpo_add_lora_pair(st, &p, NULL, NULL), MGPO_ERR_INVALID_ARGUMENT);
    mgpo_destroy(st);

    mgpo_config ext = external_config();
    ck_assert_int_eq(mgpo_create(&st, &ext, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, store[0], store[1], 8, NULL, NULL), MGPO_OK);
    p.a = store[2];
    ck_assert_int_eq(mgpo_add_lora_pair(st, &p, NULL, NULL), MGPO_OK);
    float *odd = (float *)(void *)((unsigned char *)store[2] + 20 + 1);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, odd), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_momentum_typed(st, 0, odd, MGPO_DTYPE_FLOAT32),
                     MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_lora_momentum(st, 1, odd, store[3] + 20), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_lora_momentum(st, 1, store[3] + 20, odd), MGPO_ERR_INVALID_ARGUMENT);
    mgpo_destroy(st);
}
END_TEST

/* ---- Finding 5: the random direction in external mode ----------------------- */

START_TEST(random_direction_attached_only)
{
    enum { N = 64 };
    float p[2][N], g[2][N], m[N], clean[N];
    for (int i = 0; i < N; i++) {
        p[0][i] = p[1][i] = clean[i] = 0.01f * (float)i;
        g[0][i] = g[1][i] = 0.0f;
        m[i] = 0.5f - 0.01f * (float)i;
    }
    mgpo_config cfg = external_config();
    cfg.direction = MGPO_DIRECTION_RANDOM;
    cfg.rho = 0.5;
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(mgpo_add_tensor(st, p[k], g[k], N, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, m), MGPO_OK); /* tensor 1: none yet */
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    mgpo_stats s;
    ck_assert_int_eq(mgpo_get_stats(st, &s), MGPO_OK);
    ck_assert_int_eq(s.perturbed, 1);
    double moved = 0.0;
    for (int i = 0; i < N; i++) {
        double d = (double)p[0][i] - (double)clean[i];
        moved += d * d;
        ck_assert_uint_eq(mgpo_float_bits(p[1][i]), mgpo_float_bits(clean[i]));
    }
    moved = sqrt(moved);
    /* |c| * ||m|| without APN before the first step: rho. */
    ck_assert_double_eq_tol(s.perturbation_norm, cfg.rho, 1e-12);
    ck_assert_msg(fabs(moved - s.perturbation_norm) <= 1e-4 * s.perturbation_norm,
                  "moved %.9g, reported %.9g", moved, s.perturbation_norm);
    ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
    for (int i = 0; i < N; i++) ck_assert_uint_eq(mgpo_float_bits(p[0][i]), mgpo_float_bits(clean[i]));
    mgpo_destroy(st);
}
END_TEST

/* ---- Finding 6: saturation ---------------------------------------------------- */

static int is_inf16(uint16_t h, mgpo_dtype t)
{
    return t == MGPO_DTYPE_FLOAT16 ? (h & 0x7fffu) == 0x7c00u : (h & 0x7fffu) == 0x7f80u;
}

START_TEST(saturation_master_weights)
{
    enum { N = 8 };
    const float f16_in[N] = {65504.0f, 65519.0f, 65520.0f, 70000.0f,
                             -70000.0f, FLT_MAX, -65520.0f, 1.0f};
    const uint16_t f16_want[N] = {0x7bff, 0x7bff, 0x7bff, 0x7bff, 0xfbff, 0x7bff, 0xfbff, 0x3c00};
    const float bf_max = mgpo_bits_float(0x7f7f0000u);
    const float bf_in[N] = {bf_max, mgpo_bits_float(0x7f7f7fffu), mgpo_bits_float(0x7f7f8000u),
                            FLT_MAX, -FLT_MAX, 1.0f, -bf_max, 3.0e38f};
    const uint16_t bf_want[N] = {0x7f7f, 0x7f7f, 0x7f7f, 0x7f7f, 0xff7f, 0x3f80, 0xff7f, 0x7f62};
    for (int t = 0; t < 2; t++) {
        mgpo_dtype type = t ? MGPO_DTYPE_BFLOAT16 : MGPO_DTYPE_FLOAT16;
        const float *in = t ? bf_in : f16_in;
        const uint16_t *want = t ? bf_want : f16_want;
        uint16_t buf[N] = {0}, g[N] = {0};
        mgpo_state *st = NULL;
        ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor_typed(st, buf, type, g, type, N, NULL, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_set_master_weights(st, 0, in, N), MGPO_OK);
        float back[N];
        ck_assert_int_eq(mgpo_get_master_weights(st, 0, back, N), MGPO_OK);
        for (int i = 0; i < N; i++) {
            ck_assert_msg(buf[i] == want[i], "type %d element %d: %#x, want %#x", t, i, buf[i],
                          want[i]);
            ck_assert_uint_eq(mgpo_float_bits(back[i]), mgpo_float_bits(in[i])); /* master kept */
        }
        mgpo_destroy(st);
    }
}
END_TEST

/* An fp16 parameter at 65504 perturbed upwards, and stepped upwards. */
START_TEST(saturation_perturb_and_step)
{
    enum { N = 16 };
    const mgpo_kernels *tables[MAX_TABLES];
    size_t count = runnable_tables(tables);
    for (size_t table = 0; table < count; table++) {
        const mgpo_kernels *k = tables[table];
        /* External mode: perturb writes round(p + c*m) into the buffer. */
        uint16_t p[N], g[N], clean[N];
        float m[N];
        for (int i = 0; i < N; i++) {
            p[i] = clean[i] = i & 1 ? 0xfbff : 0x7bff; /* -65504, 65504 */
            g[i] = 0;
            m[i] = i & 1 ? 1.0f : -1.0f; /* lookahead: theta - |c|*m moves outwards */
        }
        mgpo_config cfg = external_config();
        cfg.rho = 400.0; /* 100 per element */
        mgpo_state *st = NULL;
        ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
        st->kernels = k;
        ck_assert_int_eq(
            mgpo_add_tensor_typed(st, p, MGPO_DTYPE_FLOAT16, g, MGPO_DTYPE_FLOAT16, N, NULL, NULL),
            MGPO_OK);
        ck_assert_int_eq(mgpo_set_momentum(st, 0, m), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        int perturbed = 0;
        ck_assert_int_eq(mgpo_is_perturbed(st, &perturbed), MGPO_OK);
        ck_assert_int_eq(perturbed, 1);
        for (int i = 0; i < N; i++) {
            ck_assert_msg(!is_inf16(p[i], MGPO_DTYPE_FLOAT16), "table %s: perturb wrote Inf",
                          k->name);
            ck_assert_uint_eq(p[i], clean[i]); /* saturated at the edge it started from */
        }
        ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
        for (int i = 0; i < N; i++) ck_assert_uint_eq(p[i], clean[i]);
        mgpo_destroy(st);

        /* Integrated AdamW: masters at 65500 pushed past 65520 by one step
         * (lr 100: the first AdamW update moves by about lr). */
        mgpo_config ic = mgpo_config_default();
        ic.lr = 100.0;
        ic.rho = 0.0;
        float master[N];
        for (int i = 0; i < N; i++) {
            master[i] = i & 1 ? -65500.0f : 65500.0f;
            g[i] = i & 1 ? 0x3c00 : 0xbc00; /* +-1: descent moves outwards */
        }
        for (int type = 0; type < 2; type++) {
            mgpo_dtype t = type ? MGPO_DTYPE_BFLOAT16 : MGPO_DTYPE_FLOAT16;
            uint16_t buf[N] = {0};
            ck_assert_int_eq(mgpo_create(&st, &ic, NULL), MGPO_OK);
            st->kernels = k;
            ck_assert_int_eq(
                mgpo_add_tensor_typed(st, buf, t, g, MGPO_DTYPE_FLOAT16, N, NULL, NULL), MGPO_OK);
            /* bfloat16: masters on the tie between its largest value and
             * Inf (0x7f7f8000, even neighbour: Inf); the step moves them by
             * about 100, far below their ulp. */
            if (t == MGPO_DTYPE_BFLOAT16)
                for (int i = 0; i < N; i++)
                    master[i] = mgpo_bits_float(i & 1 ? 0xff7f8000u : 0x7f7f8000u);
            ck_assert_int_eq(mgpo_set_master_weights(st, 0, master, N), MGPO_OK);
            ck_assert_int_eq(mgpo_step(st), MGPO_OK);
            float after[N];
            ck_assert_int_eq(mgpo_get_master_weights(st, 0, after, N), MGPO_OK);
            for (int i = 0; i < N; i++) {
                ck_assert(isfinite(after[i]));
                ck_assert_msg(!is_inf16(buf[i], t), "table %s type %d: step wrote Inf", k->name,
                              type);
                ck_assert_uint_eq(buf[i], i & 1 ? (t == MGPO_DTYPE_FLOAT16 ? 0xfbff : 0xff7f)
                                                : (t == MGPO_DTYPE_FLOAT16 ? 0x7bff : 0x7f7f));
            }
            if (t == MGPO_DTYPE_FLOAT16) ck_assert(fabsf(after[0]) > 65520.0f);
            mgpo_destroy(st);
        }
        for (int i = 0; i < N; i++) master[i] = i & 1 ? -65500.0f : 65500.0f;

        /* Integrated perturb: round(master + c*m) at masters of +-65500,
         * moved outwards by about 62 per element (rho 1000, s = 1/4). */
        {
            mgpo_config pc = mgpo_config_default();
            pc.lr = 1e-3;
            pc.rho = 1000.0;
            uint16_t buf[N] = {0};
            ck_assert_int_eq(mgpo_create(&st, &pc, NULL), MGPO_OK);
            st->kernels = k;
            ck_assert_int_eq(mgpo_add_tensor_typed(st, buf, MGPO_DTYPE_FLOAT16, g,
                                                   MGPO_DTYPE_FLOAT16, N, NULL, NULL),
                             MGPO_OK);
            ck_assert_int_eq(mgpo_set_master_weights(st, 0, master, N), MGPO_OK);
            ck_assert_int_eq(mgpo_step(st), MGPO_OK);
            ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
            mgpo_unit_stats us;
            ck_assert_int_eq(mgpo_get_unit_stats(st, 0, &us), MGPO_OK);
            ck_assert(us.coefficient != 0.0);
            for (int i = 0; i < N; i++)
                ck_assert_uint_eq(buf[i], i & 1 ? 0xfbff : 0x7bff); /* not Inf */
            ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
            for (int i = 0; i < N; i++) ck_assert_uint_eq(buf[i], i & 1 ? 0xfbff : 0x7bff);
            mgpo_destroy(st);
        }

        /* Stochastic rounding saturates too. */
        ic.rounding = MGPO_ROUNDING_STOCHASTIC;
        for (int type = 0; type < 2; type++) {
            mgpo_dtype t = type ? MGPO_DTYPE_BFLOAT16 : MGPO_DTYPE_FLOAT16;
            uint16_t buf[N] = {0};
            for (int i = 0; i < N; i++)
                master[i] = t == MGPO_DTYPE_BFLOAT16 ? (i & 1 ? -FLT_MAX : FLT_MAX)
                                                     : (i & 1 ? -65535.0f : 65535.0f);
            ck_assert_int_eq(mgpo_create(&st, &ic, NULL), MGPO_OK);
            st->kernels = k;
            ck_assert_int_eq(
                mgpo_add_tensor_typed(st, buf, t, g, MGPO_DTYPE_FLOAT16, N, NULL, NULL), MGPO_OK);
            ck_assert_int_eq(mgpo_set_master_weights(st, 0, master, N), MGPO_OK);
            for (int i = 0; i < N; i++) ck_assert(!is_inf16(buf[i], t));
            mgpo_destroy(st);
        }
    }
}
END_TEST

/* ---- Finding 7: a momentum aliasing a gradient -------------------------------- */

START_TEST(momentum_alias_refused)
{
    enum { N = 32 };
    static float p[2][N], g[2][N], other[N], mom[2 * N];
    mgpo_config cfg = external_config();
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, p[0], g[0], N, NULL, NULL), MGPO_OK);
    /* Its own gradient, and another tensor's (registered later). */
    ck_assert_int_eq(mgpo_set_momentum(st, 0, g[0]), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_momentum_typed(st, 0, g[0] + 8, MGPO_DTYPE_BFLOAT16),
                     MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, mom), MGPO_OK);
    /* A gradient over an attached momentum: at registration and later. */
    ck_assert_int_eq(mgpo_add_tensor(st, p[1], mom + N / 2, N, NULL, NULL), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_add_tensor(st, p[1], g[1], N, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad(st, 1, mom + 1), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_grad(st, 0, mom), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_grad_typed(st, 1, mom + N - 1, MGPO_DTYPE_FLOAT16), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_momentum(st, 1, g[0] + 4), MGPO_ERR_OVERLAP);
    /* Momenta may share a buffer (both only read); gradients too. */
    ck_assert_int_eq(mgpo_set_momentum(st, 1, mom), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad(st, 1, g[0]), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad(st, 1, other), MGPO_OK);
    /* A pair: its momenta against gradients, its gradients against momenta. */
    static float a[8], b[8], ga[8], gb[8], ma[8], mb[8];
    mgpo_lora_pair pr;
    memset(&pr, 0, sizeof pr);
    pr.a = a;
    pr.b = b;
    pr.grad_a = mom; /* over tensor 0's momentum */
    pr.grad_b = gb;
    pr.rank = 2;
    pr.n_in = 4;
    pr.n_out = 4;
    pr.scaling = 1.0;
    ck_assert_int_eq(mgpo_add_lora_pair(st, &pr, NULL, NULL), MGPO_ERR_OVERLAP);
    pr.grad_a = ga;
    ck_assert_int_eq(mgpo_add_lora_pair(st, &pr, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_lora_momentum(st, 2, ma, gb), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_lora_momentum(st, 2, other, mb), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_lora_momentum(st, 2, ma, mb), MGPO_OK);
    ck_assert_int_eq(mgpo_set_lora_grads(st, 2, mb, gb), MGPO_ERR_OVERLAP);
    mgpo_destroy(st);
}
END_TEST

/* ---- Finding 8: NaN bits across kernel tables ---------------------------------- */

START_TEST(nan_bits_canonical)
{
    const mgpo_kernels *tables[MAX_TABLES];
    size_t count = runnable_tables(tables);
    enum { N = 4103, R = 2, IN = 40, OUT = 24 };
    float *p = malloc(N * sizeof *p), *g = calloc(N, sizeof *g), *m = malloc(N * sizeof *m);
    float a[R * IN], b[OUT * R], ga[R * IN] = {0}, gb[OUT * R] = {0}, ma[R * IN], mb[OUT * R];
    unsigned char *ck[MAX_TABLES] = {NULL};
    size_t size[MAX_TABLES] = {0};
    uint64_t norm_bits[MAX_TABLES][2];
    for (size_t table = 0; table < count; table++) {
        const mgpo_kernels *k = tables[table];
        for (int i = 0; i < N; i++) {
            p[i] = 0.001f * (float)(i % 97);
            m[i] = 0.25f - 0.002f * (float)(i % 89);
        }
        for (int i = 0; i < R * IN; i++) a[i] = ma[i] = 0.01f * (float)(i % 7) - 0.02f;
        for (int i = 0; i < OUT * R; i++) b[i] = mb[i] = 0.03f - 0.01f * (float)(i % 5);
        /* NaNs of both signs and with payloads. */
        m[5] = mgpo_bits_float(0xffc12345u);
        m[4100] = mgpo_bits_float(0x7fa00001u);
        ma[3] = mgpo_bits_float(0xff800001u);
        mb[7] = mgpo_bits_float(0x7fc00abcu);
        mgpo_config cfg = external_config();
        cfg.scope = MGPO_SCOPE_TENSOR;
        mgpo_state *st = NULL;
        ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
        st->kernels = k;
        ck_assert_int_eq(mgpo_add_tensor(st, p, g, N, NULL, NULL), MGPO_OK);
        mgpo_lora_pair pr;
        memset(&pr, 0, sizeof pr);
        pr.a = a;
        pr.b = b;
        pr.grad_a = ga;
        pr.grad_b = gb;
        pr.rank = R;
        pr.n_in = IN;
        pr.n_out = OUT;
        pr.scaling = 2.0;
        ck_assert_int_eq(mgpo_add_lora_pair(st, &pr, NULL, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_set_momentum(st, 0, m), MGPO_OK);
        ck_assert_int_eq(mgpo_set_lora_momentum(st, 1, ma, mb), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK); /* both units skipped: NaN norms */
        for (size_t u = 0; u < 2; u++) {
            mgpo_unit_stats us;
            ck_assert_int_eq(mgpo_get_unit_stats(st, u, &us), MGPO_OK);
            norm_bits[table][u] = double_bits(us.momentum_norm);
            ck_assert_msg(norm_bits[table][u] == MGPO_CANONICAL_NAN_BITS,
                          "table %s unit %zu: norm bits %#llx", k->name, u,
                          (unsigned long long)norm_bits[table][u]);
        }
        ck_assert_int_eq(mgpo_checkpoint_size(st, &size[table]), MGPO_OK);
        ck[table] = malloc(size[table]);
        size_t written = 0;
        ck_assert_int_eq(mgpo_save(st, ck[table], size[table], &written), MGPO_OK);
        mgpo_destroy(st);
    }
    /* Each table's checkpoint is the portable one's, byte for byte. */
    const size_t portable = count - 1;
    for (size_t t = 0; t < portable; t++) {
        ck_assert_uint_eq(size[t], size[portable]);
        ck_assert_msg(!memcmp(ck[t], ck[portable], size[portable]),
                      "checkpoint bytes differ between tables %s and %s", tables[t]->name,
                      tables[portable]->name);
    }
    for (size_t t = 0; t < count; t++) free(ck[t]);
    free(p);
    free(g);
    free(m);
}
END_TEST

/* ---- Newcomer items ------------------------------------------------------------- */

START_TEST(newcomer_error_strings)
{
    ck_assert_ptr_nonnull(strstr(mgpo_strerror(MGPO_ERR_BAD_LR), "min_lr"));
    ck_assert_ptr_nonnull(strstr(mgpo_strerror(MGPO_ERR_BAD_WEIGHT_DECAY), "lr * weight_decay"));
    ck_assert_ptr_nonnull(strstr(mgpo_strerror(MGPO_ERR_BAD_CLIP), "external"));
    const char *r = mgpo_strerror(MGPO_ERR_RESERVED_FIELD);
    const char *uninit = strstr(r, "uninitialised"), *newer = strstr(r, "newer header");
    ck_assert(uninit && newer && uninit < newer);
    ck_assert_ptr_nonnull(strstr(mgpo_strerror(MGPO_ERR_BAD_ENUM), "zero-filled mgpo_config"));
    ck_assert_ptr_nonnull(strstr(mgpo_strerror(MGPO_ERR_INVALID_ARGUMENT), "alignment"));
    /* Each code the strings name is the one these inputs give. */
    mgpo_schedule sch = {MGPO_SCHEDULE_CONSTANT, 1e-3, 1e-2, 0, 10};
    double lr;
    ck_assert_int_eq(mgpo_schedule_lr(&sch, 0, &lr), MGPO_ERR_BAD_LR);
    mgpo_config c = mgpo_config_default();
    c.lr = 0.5;
    c.weight_decay = 4.0;
    ck_assert_int_eq(mgpo_config_validate(&c), MGPO_ERR_BAD_WEIGHT_DECAY);
    c = external_config();
    c.max_grad_norm = 1.0;
    ck_assert_int_eq(mgpo_config_validate(&c), MGPO_ERR_BAD_CLIP);
    memset(&c, 0, sizeof c); /* sign 0 is no sign */
    ck_assert_int_eq(mgpo_config_validate(&c), MGPO_ERR_BAD_ENUM);
}
END_TEST

START_TEST(newcomer_zero_options_refused)
{
    float p[8] = {0}, g[8] = {0}, a[8] = {0}, b[8] = {0};
    mgpo_tensor_options zero;
    memset(&zero, 0, sizeof zero);
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, 8, &zero, NULL), MGPO_ERR_INVALID_ARGUMENT);
    mgpo_lora_pair pr;
    memset(&pr, 0, sizeof pr);
    pr.a = a;
    pr.b = b;
    pr.rank = 2;
    pr.n_in = 4;
    pr.n_out = 4;
    pr.scaling = 1.0;
    ck_assert_int_eq(mgpo_add_lora_pair(st, &pr, &zero, NULL), MGPO_ERR_INVALID_ARGUMENT);
    size_t count = 1;
    ck_assert_int_eq(mgpo_get_tensor_count(st, &count), MGPO_OK);
    ck_assert_uint_eq(count, 0);
    /* Stepped but not perturbed, or perturbed but frozen: accepted. */
    mgpo_tensor_options o = zero;
    o.lr_scale = 1.0;
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, 8, &o, NULL), MGPO_OK);
    o.lr_scale = 0.0;
    o.perturb = 1;
    ck_assert_int_eq(mgpo_add_lora_pair(st, &pr, &o, NULL), MGPO_OK);
    mgpo_destroy(st);
}
END_TEST

START_TEST(newcomer_untyped_setters_keep_type)
{
    uint16_t p[8] = {0}, g16[8] = {0}, m16[8] = {0};
    float g32[8] = {0}, m32[8] = {0};
    mgpo_state *st = NULL;
    mgpo_config cfg = external_config();
    ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(
        mgpo_add_tensor_typed(st, p, MGPO_DTYPE_BFLOAT16, g16, MGPO_DTYPE_BFLOAT16, 8, NULL, NULL),
        MGPO_OK);
    /* A bf16 gradient buffer through the float setter: refused, not read
     * as 32 bytes of floats. */
    ck_assert_int_eq(mgpo_set_grad(st, 0, (const float *)(void *)g16), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_grad(st, 0, g32), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_grad(st, 0, NULL), MGPO_OK); /* unsets, keeps bf16 */
    ck_assert_int_eq(mgpo_set_grad(st, 0, g32), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(st->slots[0].grads);
    ck_assert_int_eq(st->slots[0].grad_type, MGPO_DTYPE_BFLOAT16);
    /* The typed setter changes it on purpose. */
    ck_assert_int_eq(mgpo_set_grad_typed(st, 0, g32, MGPO_DTYPE_FLOAT32), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad(st, 0, g32), MGPO_OK);
    /* Momentum: the same rule. */
    ck_assert_int_eq(mgpo_set_momentum_typed(st, 0, m16, MGPO_DTYPE_BFLOAT16), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, m32), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, m32), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_momentum_typed(st, 0, m32, MGPO_DTYPE_FLOAT32), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, m32), MGPO_OK);
    mgpo_destroy(st);

    /* A pair with fp16 gradients. */
    float a[8] = {0}, b[8] = {0};
    uint16_t ga[8] = {0}, gb[8] = {0};
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    mgpo_lora_pair_typed pr;
    memset(&pr, 0, sizeof pr);
    pr.a = a;
    pr.b = b;
    pr.grad_a = ga;
    pr.grad_b = gb;
    pr.grad_type = MGPO_DTYPE_FLOAT16;
    pr.rank = 2;
    pr.n_in = 4;
    pr.n_out = 4;
    pr.scaling = 1.0;
    ck_assert_int_eq(mgpo_add_lora_pair_typed(st, &pr, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_lora_grads(st, 0, g32, NULL), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_lora_grads(st, 0, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(st->slots[0].grad_type, MGPO_DTYPE_FLOAT16);
    ck_assert_int_eq(mgpo_set_lora_grads_typed(st, 0, ga, gb, MGPO_DTYPE_FLOAT16), MGPO_OK);
    mgpo_destroy(st);
}
END_TEST

/* Independent references: the IEEE definitions with libm, saturating. */
static float ref_f16_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

START_TEST(newcomer_public_conversions)
{
    /* Every pattern of both types widens exactly and narrows back to
     * itself (NaNs: quieted). */
    static uint16_t h[65536], back[65536];
    static float f[65536];
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    for (int t = 0; t < 2; t++) {
        mgpo_dtype type = t ? MGPO_DTYPE_BFLOAT16 : MGPO_DTYPE_FLOAT16;
        ck_assert_int_eq(mgpo_convert_to_float32(f, h, type, 65536), MGPO_OK);
        ck_assert_int_eq(mgpo_convert_from_float32(back, type, f, 65536), MGPO_OK);
        for (uint32_t i = 0; i < 65536; i++) {
            uint16_t mag = (uint16_t)(i & 0x7fffu);
            int nan = t ? mag > 0x7f80u : mag > 0x7c00u;
            if (nan) {
                ck_assert(isnan(f[i]));
                ck_assert_uint_eq(back[i], i | (t ? 0x40u : 0x200u));
                continue;
            }
            float want = t ? mgpo_bits_float(i << 16)
                           : ((i & 0x7c00u) == 0x7c00u ? ((i & 0x8000u) ? -INFINITY : INFINITY)
                                                        : ref_f16_value((uint16_t)i));
            ck_assert_uint_eq(mgpo_float_bits(f[i]), mgpo_float_bits(want));
            ck_assert_uint_eq(back[i], i);
        }
    }
    /* Edges of the narrowing: ties to even, saturation, Inf. */
    const float x[] = {65504.0f, 65519.99f, 65520.0f, 70000.0f, -1e30f, INFINITY, -INFINITY,
                       1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, FLT_MAX, 0x1p-25f, 0x1.8p-25f};
    const uint16_t f16_want[] = {0x7bff, 0x7bff, 0x7bff, 0x7bff, 0xfbff, 0x7c00, 0xfc00,
                                 0x3c00, 0x3c02, 0x7bff, 0x0000, 0x0001};
    enum { E = sizeof x / sizeof x[0] };
    uint16_t out[E];
    ck_assert_int_eq(mgpo_convert_from_float32(out, MGPO_DTYPE_FLOAT16, x, E), MGPO_OK);
    for (int i = 0; i < E; i++) ck_assert_msg(out[i] == f16_want[i], "%d: %#x", i, out[i]);
    const float y[] = {FLT_MAX, -FLT_MAX, mgpo_bits_float(0x7f7f8000u), INFINITY,
                       mgpo_bits_float(0x3f808000u), mgpo_bits_float(0x3f818000u)};
    const uint16_t bf_want[] = {0x7f7f, 0xff7f, 0x7f7f, 0x7f80, 0x3f80, 0x3f82};
    ck_assert_int_eq(mgpo_convert_from_float32(out, MGPO_DTYPE_BFLOAT16, y, 6), MGPO_OK);
    for (int i = 0; i < 6; i++) ck_assert_msg(out[i] == bf_want[i], "bf %d: %#x", i, out[i]);
    /* The float16 subnormals widen under the caller's flush-to-zero too:
     * the library computes in its own environment. */
    uint16_t sub = 0x0001;
    float w = 0.0f;
    ck_assert_int_eq(mgpo_convert_to_float32(&w, &sub, MGPO_DTYPE_FLOAT16, 1), MGPO_OK);
    ck_assert_float_eq(w, 0x1p-24f);
    /* float32 is copied bit for bit, a signalling NaN too. */
    float snan = mgpo_bits_float(0x7f800001u), copy = 0.0f;
    ck_assert_int_eq(mgpo_convert_to_float32(&copy, &snan, MGPO_DTYPE_FLOAT32, 1), MGPO_OK);
    ck_assert_uint_eq(mgpo_float_bits(copy), 0x7f800001u);
    ck_assert_int_eq(mgpo_convert_to_float32(NULL, NULL, MGPO_DTYPE_FLOAT16, 0), MGPO_OK);
}
END_TEST

START_TEST(newcomer_grad_scale_getter)
{
    float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    mgpo_state *st = NULL, *st2 = NULL;
    ck_assert_int_eq(mgpo_create(&st, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_create(&st2, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, 8, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st2, p, g, 8, NULL, NULL), MGPO_OK);
    double s = 0.0;
    ck_assert_int_eq(mgpo_get_grad_scale(st, &s), MGPO_OK);
    ck_assert_double_eq(s, 1.0);
    ck_assert_int_eq(mgpo_set_grad_scale(st, 32768.0), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad_scale(st, -1.0), MGPO_ERR_BAD_GRAD_SCALE);
    ck_assert_int_eq(mgpo_get_grad_scale(st, &s), MGPO_OK);
    ck_assert_double_eq(s, 32768.0);
    size_t size = 0, written = 0;
    ck_assert_int_eq(mgpo_checkpoint_size(st, &size), MGPO_OK);
    unsigned char *ck = malloc(size);
    ck_assert_int_eq(mgpo_save(st, ck, size, &written), MGPO_OK);
    ck_assert_int_eq(mgpo_load(st2, ck, written), MGPO_OK);
    ck_assert_int_eq(mgpo_get_grad_scale(st2, &s), MGPO_OK);
    ck_assert_double_eq(s, 32768.0);
    free(ck);
    mgpo_destroy(st);
    mgpo_destroy(st2);
}
END_TEST

/* docs/lora.md: registration is refused after the first step and while
 * perturbed; an integrated-mode perturb before the first step does
 * nothing, so it does not stop registration, an external-mode one does. */
START_TEST(newcomer_register_after_perturb)
{
    float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {0}, m[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    float a[8] = {0}, b[8] = {0};
    mgpo_lora_pair pr;
    memset(&pr, 0, sizeof pr);
    pr.a = a;
    pr.b = b;
    pr.rank = 2;
    pr.n_in = 4;
    pr.n_out = 4;
    pr.scaling = 1.0;
    for (int external = 0; external < 2; external++) {
        mgpo_config cfg = external ? external_config() : mgpo_config_default();
        mgpo_state *st = NULL;
        ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor(st, p, g, 8, NULL, NULL), MGPO_OK);
        if (external) ck_assert_int_eq(mgpo_set_momentum(st, 0, m), MGPO_OK);
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        int perturbed = -1;
        ck_assert_int_eq(mgpo_is_perturbed(st, &perturbed), MGPO_OK);
        ck_assert_int_eq(perturbed, external);
        ck_assert_int_eq(mgpo_add_lora_pair(st, &pr, NULL, NULL),
                         external ? MGPO_ERR_WRONG_PHASE : MGPO_OK);
        ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
        mgpo_destroy(st);
    }
}
END_TEST

static Suite *promises_suite(void)
{
    Suite *s = suite_create("promises");
    TCase *t = tcase_create("promises");
    tcase_add_test(t, fp_env_no_flags_leak);
    tcase_add_test(t, fp_env_traps);
    tcase_add_test(t, fp_env_rounding_mode);
    tcase_add_test(t, alignment_float32_refused);
    tcase_add_test(t, random_direction_attached_only);
    tcase_add_test(t, saturation_master_weights);
    tcase_add_test(t, saturation_perturb_and_step);
    tcase_add_test(t, momentum_alias_refused);
    tcase_add_test(t, nan_bits_canonical);
    tcase_add_test(t, newcomer_error_strings);
    tcase_add_test(t, newcomer_zero_options_refused);
    tcase_add_test(t, newcomer_untyped_setters_keep_type);
    tcase_add_test(t, newcomer_public_conversions);
    tcase_add_test(t, newcomer_grad_scale_getter);
    tcase_add_test(t, newcomer_register_after_perturb);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(promises_suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
