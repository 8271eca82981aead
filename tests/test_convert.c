/* The element-type conversions of mixed precision (lib/convert.c and the
 * AVX2/F16C table), against references written here independently in
 * double arithmetic with libm (frexp, ldexp, rint):
 * - bfloat16 and float16 to float32: every one of the 65536 patterns;
 * - float32 to them, round to nearest even: a stride through all 2^32
 *   patterns plus every upper half with the low bits at and around the
 *   rounding boundaries (MGPO_CONVERT_STRIDE=1 in the environment walks all
 *   2^32: the ctest test_convert_exhaustive);
 * - every SIMD table (AVX2/F16C, AVX-512) gives the bits of the portable
 *   one on every input,
 *   NaNs included, with the scale of a loss-scaled load, and for tails;
 * - stochastic rounding: always one of the two neighbours, exact values
 *   stay, and the share rounded up equals the dropped fraction. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "test_util.h"

static float f_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint32_t bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* ---- References ----------------------------------------------------------- */

/* The value of a float16 pattern, from the IEEE binary16 definition. */
static double ref_f16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* Round a finite x to a grid of gap 2^q (q chosen by the caller) to nearest
 * even: rint rounds ties to even in the default mode. */
static double round_to_gap(double x, int q) { return ldexp(rint(ldexp(x, -q)), q); }

/* The gap exponent of binary format (p bits of precision, emin) at x. */
static int gap_exponent(double x, int p, int emin)
{
    int e;
    frexp(x, &e); /* x = f * 2^e, f in [0.5, 1) */
    e -= 1;       /* x = g * 2^e, g in [1, 2) */
    if (e < emin) e = emin;
    return e - (p - 1);
}

/* float32 -> float16 pattern, nearest even, NaN quieted with its payload's
 * top bits as x86's vcvtps2ph does. */
static uint16_t ref_to_f16(float x)
{
    uint32_t b = bits(x);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    if (isnan(x)) return (uint16_t)(sign | 0x7e00 | ((b >> 13) & 0x3ff));
    double a = fabs((double)x);
    if (a == 0) return sign;
    double r = isinf(x) ? INFINITY : round_to_gap(a, gap_exponent(a, 11, -14));
    if (isinf(r)) return (uint16_t)(sign | 0x7c00);
    /* Beyond the largest finite float16: saturated (issue 20). */
    if (r >= 65536.0) return (uint16_t)(sign | 0x7bff);
    if (r == 0) return sign;
    /* r is a float16 value: find its pattern. */
    int e;
    double f = frexp(r, &e); /* r = f * 2^e */
    if (e - 1 < -14) return (uint16_t)(sign | (uint16_t)ldexp(r, 24));
    uint16_t m = (uint16_t)(ldexp(f, 11) - 1024);
    return (uint16_t)(sign | ((e - 1 + 15) << 10) | m);
}

/* float32 -> bfloat16 pattern, nearest even, NaN quieted. */
static uint16_t ref_to_bf16(float x)
{
    uint32_t b = bits(x);
    if (isnan(x)) return (uint16_t)((b >> 16) | 0x40);
    if (isinf(x) || x == 0) return (uint16_t)(b >> 16);
    double a = fabs((double)x), r = round_to_gap(a, gap_exponent(a, 8, -126));
    /* Beyond the largest finite bfloat16: saturated to it (issue 20). */
    float rf = r > FLT_MAX ? f_of(0x7f7f0000u) : (float)r; /* exact: r is a bfloat16 value */
    return (uint16_t)((bits(rf) >> 16) | ((b >> 16) & 0x8000));
}

/* ---- Inputs ------------------------------------------------------------------- */

/* Calls fn on a batch of float patterns: every `stride`-th one from 0, and
 * every upper half with the low 16 bits at the boundaries of bfloat16's and
 * float16's rounding (and NaN payloads, through the upper halves). */
typedef void (*batch_fn)(const float *x, size_t n);

static void walk(batch_fn fn, uint64_t stride)
{
    static const uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000,
                                    0x3000, 0x7fff, 0x8000, 0x8001, 0xefff, 0xf000, 0xffff};
    float x[MGPO_BLOCK_FLOATS];
    size_t n = 0;
    for (uint64_t u = 0; u <= UINT32_MAX; u += stride) {
        x[n++] = f_of((uint32_t)u);
        if (n == MGPO_BLOCK_FLOATS) fn(x, n), n = 0;
    }
    for (uint32_t hi = 0; hi <= 0xffff; hi++)
        for (size_t k = 0; k < sizeof lows / sizeof lows[0]; k++) {
            x[n++] = f_of(hi << 16 | lows[k]);
            if (n == MGPO_BLOCK_FLOATS) fn(x, n), n = 0;
        }
    if (n) fn(x, n);
}

static uint64_t stride_from_env(uint64_t fallback)
{
    const char *s = getenv("MGPO_CONVERT_STRIDE");
    return s && strtoull(s, NULL, 10) > 0 ? strtoull(s, NULL, 10) : fallback;
}

/* The SIMD tables this CPU runs (every runnable table but the portable). */
enum { MAX_SIMD = 8 };
static size_t simd_tables(const mgpo_kernels **out)
{
    const mgpo_kernels *all[MAX_SIMD + 1];
    size_t n = mgpo_kernels_runnable(all, MAX_SIMD + 1);
    ck_assert_uint_le(n, MAX_SIMD + 1);
    ck_assert_ptr_eq(all[n - 1], mgpo_kernels_portable());
    for (size_t i = 0; i + 1 < n; i++) out[i] = all[i];
    return n - 1;
}

/* ---- float32 -> bf16/fp16, nearest ------------------------------------------ */

static size_t mismatches;
/* Every runnable table, the portable one last: listed once per walk, not
 * per batch (each listing reads CPUID, a VM exit under a hypervisor). */
static const mgpo_kernels *walk_tables[MAX_SIMD + 1];
static size_t walk_table_count;

static void check_nearest(const float *x, size_t n)
{
    /* The reference and the scalar converter once per element and type,
     * then every table against them (the exhaustive walk's cost grows by
     * one store per table, not by a reference per table). */
    uint16_t want[MGPO_BLOCK_FLOATS], h[MGPO_BLOCK_FLOATS];
    const mgpo_kernels *const *tables = walk_tables;
    size_t table_count = walk_table_count;
    for (int t = 0; t < 2; t++) {
        mgpo_dtype type = t ? MGPO_DTYPE_FLOAT16 : MGPO_DTYPE_BFLOAT16;
        for (size_t i = 0; i < n; i++) {
            want[i] = t ? ref_to_f16(x[i]) : ref_to_bf16(x[i]);
            uint16_t scalar = t ? mgpo_f32_to_f16(x[i]) : mgpo_f32_to_bf16(x[i]);
            if (scalar != want[i] && mismatches++ < 5)
                fprintf(stderr, "%s of 0x%08x: reference 0x%04x, scalar 0x%04x\n",
                        t ? "f16" : "bf16", bits(x[i]), want[i], scalar);
        }
        for (size_t f = 0; f < table_count; f++) {
            tables[f]->store(h, type, x, n);
            for (size_t i = 0; i < n; i++)
                if (h[i] != want[i] && mismatches++ < 5)
                    fprintf(stderr, "%s of 0x%08x: reference 0x%04x, table '%s' 0x%04x\n",
                            t ? "f16" : "bf16", bits(x[i]), want[i], tables[f]->name, h[i]);
        }
    }
}

START_TEST(nearest_matches_reference)
{
    mismatches = 0;
    walk_table_count = simd_tables(walk_tables);
    walk_tables[walk_table_count++] = mgpo_kernels_portable();
    walk(check_nearest, stride_from_env(4099));
    ck_assert_uint_eq(mismatches, 0);
}
END_TEST

/* ---- bf16/fp16 -> float32, and the scaled load ------------------------------ */

START_TEST(widening_is_exact)
{
    static uint16_t h[65536];
    static float portable[65536], simd_out[65536];
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    const mgpo_kernels *simd[MAX_SIMD];
    size_t simd_count = simd_tables(simd);
    for (size_t f = 0; f < (simd_count ? simd_count : 1); f++)
    for (int t = 0; t < 2; t++) {
        const mgpo_kernels *fast = simd_count ? simd[f] : NULL;
        mgpo_dtype type = t ? MGPO_DTYPE_FLOAT16 : MGPO_DTYPE_BFLOAT16;
        mgpo_kernels_portable()->load(portable, h, type, 65536, 1.0f);
        if (fast) fast->load(simd_out, h, type, 65536, 1.0f);
        for (uint32_t i = 0; i < 65536; i++) {
            float want = t ? (float)ref_f16_value((uint16_t)i) : f_of(i << 16);
            if (isnan(want)) {
                /* NaNs come back quiet, sign and payload kept. */
                ck_assert(isnan(portable[i]));
                ck_assert_uint_eq(bits(portable[i]) & 0x80400000u, (i & 0x8000u) << 16 | 0x400000u);
            } else {
                ck_assert_msg(bits(portable[i]) == bits(want), "%s 0x%04x", t ? "f16" : "bf16", i);
            }
            if (fast) ck_assert_uint_eq(bits(simd_out[i]), bits(portable[i]));
            /* Widening then rounding back gives the pattern (NaNs quieted). */
            uint16_t back = t ? mgpo_f32_to_f16(portable[i]) : mgpo_f32_to_bf16(portable[i]);
            if (!isnan(want)) ck_assert_uint_eq(back, i);
        }
    }
}
END_TEST

/* The scaled load and the perturbed store, portable against each SIMD
 * table, with every tail length and an odd start (the callers pass block
 * offsets). */
static void simd_table_matches_portable(const mgpo_kernels *fast)
{
    const mgpo_kernels *portable = mgpo_kernels_portable();
    enum { N = 203 };
    float p[N], m[N], x[N], a[N], b[N];
    uint16_t h[N + 1], ha[N], hb[N];
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = f_of((uint32_t)(s >> 32) & 0xbfffffffu); /* any sign, |x| < 2 * 2^127 */
        m[i] = (float)((int64_t)(s >> 11) % 1000) * 1e-3f;
        x[i] = f_of((uint32_t)s);
        h[i] = (uint16_t)(s >> 40);
    }
    static const float scales[] = {1.0f, 0x1p-16f, 1.0f / 3.0f, 0x1p16f};
    for (size_t n = 0; n <= 40; n++)
        for (int t = 0; t < 3; t++) {
            mgpo_dtype type = (mgpo_dtype)t;
            for (size_t k = 0; k < 4; k++) {
                const void *src = t ? (const void *)(h + 1) : (const void *)(x + 1);
                portable->load(a, src, type, n, scales[k]);
                fast->load(b, src, type, n, scales[k]);
                ck_assert_int_eq(memcmp(a, b, n * sizeof *a), 0);
            }
            if (type == MGPO_DTYPE_FLOAT32) continue;
            portable->store(ha, type, x + 1, n);
            fast->store(hb, type, x + 1, n);
            ck_assert_int_eq(memcmp(ha, hb, n * sizeof *ha), 0);
            portable->perturb_store(ha, type, p, m, -0.375f, n);
            fast->perturb_store(hb, type, p, m, -0.375f, n);
            ck_assert_int_eq(memcmp(ha, hb, n * sizeof *ha), 0);
        }
    /* Stochastic rounding over every kind of value (x: any bits; p:
     * float16 subnormals and normals mixed), from any start and length. */
    float tiny[N];
    for (int i = 0; i < N; i++) tiny[i] = (i % 3 ? 0x1p-20f : 1.5f) * m[i];
    for (uint64_t first = 0; first < 8; first++)
        for (size_t n = 0; n <= 60; n += 3)
            for (int t = 1; t <= 2; t++)
                for (int which = 0; which < 2; which++) {
                    const float *src = which ? tiny : x;
                    uint64_t key = mgpo_random_key(first, n, (uint64_t)t);
                    portable->store_stochastic(ha, (mgpo_dtype)t, src, n, key, 4096 * first + first);
                    fast->store_stochastic(hb, (mgpo_dtype)t, src, n, key, 4096 * first + first);
                    ck_assert_int_eq(memcmp(ha, hb, n * sizeof *ha), 0);
                }
    /* The perturbed store is round(p + c*m) with the sum rounded to float. */
    portable->perturb_store(ha, MGPO_DTYPE_BFLOAT16, p, m, 1.5f, N);
    for (int i = 0; i < N; i++) ck_assert_uint_eq(ha[i], ref_to_bf16(p[i] + 1.5f * m[i]));
}

START_TEST(simd_tables_match_portable)
{
    const mgpo_kernels *simd[MAX_SIMD];
    size_t count = simd_tables(simd);
    if (!count) printf("convert: no SIMD table on this CPU, nothing to compare\n");
    for (size_t f = 0; f < count; f++) simd_table_matches_portable(simd[f]);
}
END_TEST

/* The fused mixed-precision kernels of the AVX2 table against the portable
 * composition: pass 1's typed sum of squares and the AdamW step on a
 * master that stores the rounded result, every tail length and type
 * (float32 out: the exact copy; an unknown out type: nothing written). */
static void fused_match_composition(const mgpo_kernels *fast)
{
    const mgpo_kernels *portable = mgpo_kernels_portable();
    enum { N = 4096 };
    static float master[2][N], m[2][N], v[2][N], x[N];
    static uint16_t g16[N];
    static uint32_t out[2][N]; /* room for float32 */
    tu_fill(x, N, 71, -1.0f, 1.0f);
    for (int i = 0; i < N; i++) g16[i] = mgpo_f32_to_bf16(x[i] * 0.01f);
    mgpo_slot slot;
    memset(&slot, 0, sizeof slot);
    slot.k_decay = 0.999f;
    slot.k_step = -1e-3f;
    mgpo_step_constants k;
    memset(&k, 0, sizeof k);
    k.grad_scale = 0.75f; /* clipping */
    k.beta1 = 0.9f;
    k.one_minus_beta1 = 0.1f;
    k.beta2 = 0.999f;
    k.one_minus_beta2 = 0.001f;
    k.inv_bias2_sqrt = 31.6f;
    k.eps = 1e-8f;
    const size_t lengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 511, 512, 513, 1000, N};
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++)
        for (int gt = 0; gt < 3; gt++)
            for (int ot = 0; ot <= 3; ot++) {
                size_t n = lengths[li];
                const void *grads = gt == 0 ? (const void *)x : (const void *)g16;
                const float scale = gt == 2 ? 1.0f / 1024 : 1.0f;
                double a = portable->sum_squares_typed(grads, (mgpo_dtype)gt, n, scale);
                double b = fast->sum_squares_typed(grads, (mgpo_dtype)gt, n, scale);
                ck_assert(memcmp(&a, &b, sizeof a) == 0);
                /* Nearest for bf16, stochastic for fp16 (any start); float32
                 * and the unknown type both ways (by the length's parity). */
                bool stochastic = ot == 2 || (ot != 1 && (li & 1));
                mgpo_typed_rounding r = {stochastic, mgpo_random_key(1, 2, 3), 4096 * 3};
                for (int t = 0; t < 2; t++) {
                    tu_fill(master[t], N, 72, -2.0f, 2.0f);
                    tu_fill(m[t], N, 73, -0.01f, 0.01f);
                    tu_fill(v[t], N, 74, 0.0f, 1e-4f);
                    memset(out[t], 0xa5, sizeof out[t]);
                    const mgpo_kernels *table = t ? fast : portable;
                    double sq = table->adamw_typed(master[t], grads, (mgpo_dtype)gt, scale, m[t],
                                                   v[t], out[t], (mgpo_dtype)ot, &r, &slot, &k, n);
                    if (t == 0) a = sq;
                    else b = sq;
                }
                ck_assert(memcmp(&a, &b, sizeof a) == 0);
                ck_assert_int_eq(memcmp(master[0], master[1], n * sizeof(float)), 0);
                ck_assert_int_eq(memcmp(m[0], m[1], n * sizeof(float)), 0);
                ck_assert_int_eq(memcmp(v[0], v[1], n * sizeof(float)), 0);
                ck_assert_int_eq(memcmp(out[0], out[1], sizeof out[0]), 0);
                const uint16_t *out16 = (const uint16_t *)(const void *)out[0];
                for (size_t i = 0; i < n && ot == 1; i++)
                    ck_assert_uint_eq(out16[i], ref_to_bf16(master[0][i]));
                for (size_t i = 0; i < n && ot == 0; i++)
                    ck_assert_uint_eq(out[0][i], mgpo_float_bits(master[0][i]));
                for (size_t i = 0; i < N && ot == 3; i++) ck_assert_uint_eq(out[0][i], 0xa5a5a5a5u);
            }
}

START_TEST(fused_kernels_match_composition)
{
    const mgpo_kernels *simd[MAX_SIMD];
    size_t count = simd_tables(simd);
    for (size_t f = 0; f < count; f++) fused_match_composition(simd[f]);
}
END_TEST

/* ---- Stochastic rounding ---------------------------------------------------- */

/* The two neighbours of x in the type: toward zero and away from it. */
static void neighbours(float x, mgpo_dtype type, double *lo, double *hi)
{
    double a = fabs((double)x);
    int q = type == MGPO_DTYPE_FLOAT16 ? gap_exponent(a, 11, -14) : gap_exponent(a, 8, -126);
    *lo = ldexp(floor(ldexp(a, -q)), q);
    *hi = *lo == a ? a : *lo + ldexp(1.0, q);
}

static double value_of(uint16_t h, mgpo_dtype type)
{
    return type == MGPO_DTYPE_FLOAT16 ? ref_f16_value(h) : (double)f_of((uint32_t)h << 16);
}

/* The bits each type takes: 32 for float16, 16 for bfloat16. */
static uint16_t sr(float x, mgpo_dtype type, uint64_t r)
{
    return type == MGPO_DTYPE_FLOAT16 ? mgpo_f32_to_f16_stochastic(x, (uint32_t)r)
                                      : mgpo_f32_to_bf16_stochastic(x, (uint16_t)r);
}

START_TEST(stochastic_picks_a_neighbour)
{
    uint64_t s = 99;
    for (int t = 1; t <= 2; t++) {
        mgpo_dtype type = (mgpo_dtype)t;
        for (int i = 0; i < 200000; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            /* Finite values up to the largest finite float16 or bfloat16. */
            float x = f_of((uint32_t)(s >> 32));
            if (!isfinite(x) || fabs(x) > (t == 2 ? 65504.0 : 3.38e38)) continue;
            double lo, hi;
            neighbours(x, type, &lo, &hi);
            uint64_t r = mgpo_random_bits(7, (uint64_t)i);
            double got = fabs(value_of(sr(x, type, r), type));
            ck_assert_msg(got == lo || got == hi, "x %a: got %a, neighbours %a %a", x, got, lo, hi);
            /* Random bits of 0 truncate; representable values stay. */
            ck_assert_msg(fabs(value_of(sr(x, type, 0), type)) == lo, "x %a type %d: %a, lo %a", x,
                          t, value_of(sr(x, type, 0), type), lo);
            float exact = (float)value_of(sr(x, type, 0), type);
            if (signbit(x)) exact = -exact;
            ck_assert_uint_eq(sr(exact, type, r), sr(exact, type, 0));
        }
    }
}
END_TEST

/* The block store takes each element's bits as internal.h specifies: four
 * bfloat16 or two float16 elements per hash, from any start. */
START_TEST(stochastic_store_follows_the_spec)
{
    enum { N = 37 };
    float x[N];
    uint16_t h[N];
    for (int i = 0; i < N; i++) x[i] = 1.0f + (float)i * 0x1p-12f + 0x1p-20f;
    const uint64_t key = mgpo_random_key(3, 4, 5), first = 3 * 4096 + 1;
    for (int t = 1; t <= 2; t++) {
        mgpo_dtype type = (mgpo_dtype)t;
        mgpo_store_stochastic(h, type, x, N, key, first);
        for (int i = 0; i < N; i++) {
            uint64_t e = first + (uint64_t)i;
            uint64_t bits = t == 1 ? mgpo_random_bits(key, e / 4) >> (16 * (e % 4))
                                   : mgpo_random_bits(key, e / 2) >> (32 * (e % 2));
            ck_assert_uint_eq(h[i], sr(x[i], type, bits));
        }
    }
}
END_TEST

/* The share rounded up is the fraction of the gap: within 6 standard
 * deviations over 2^17 draws, for a normal and a subnormal value of each
 * type and fractions 1/4, 1/3 and 0.9. */
START_TEST(stochastic_is_unbiased)
{
    const int draws = 1 << 17;
    for (int t = 1; t <= 2; t++) {
        mgpo_dtype type = (mgpo_dtype)t;
        double bases[2] = {t == 2 ? 3.0 : 3.0, t == 2 ? 0x1p-20 : 0x1p-130};
        double gaps[2] = {t == 2 ? 0x1p-9 : 0x1p-6, t == 2 ? 0x1p-24 : 0x1p-133};
        const double fractions[3] = {0.25, 1.0 / 3.0, 0.9};
        for (int b = 0; b < 2; b++)
            for (int f = 0; f < 3; f++)
                for (int sign = 0; sign < 2; sign++) {
                    float x = (float)(bases[b] + fractions[f] * gaps[b]);
                    if (sign) x = -x;
                    double lo, hi;
                    neighbours(x, type, &lo, &hi);
                    double p = (fabs((double)x) - lo) / (hi - lo); /* the exact fraction */
                    long up = 0;
                    for (int i = 0; i < draws; i++) {
                        uint64_t key = mgpo_random_key(11, (uint64_t)(b * 6 + f * 2 + sign), 5);
                        up += fabs(value_of(sr(x, type, mgpo_random_bits(key, (uint64_t)i)), type)) == hi;
                    }
                    double share = (double)up / draws, sd = sqrt(p * (1 - p) / draws);
                    ck_assert_msg(fabs(share - p) < 6 * sd, "type %d x %a: share %.6f, p %.6f", t,
                                  x, share, p);
                }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("convert");
    TCase *tc = tcase_create("convert");
    tcase_set_timeout(tc, 3600);
    tcase_add_test(tc, nearest_matches_reference);
    tcase_add_test(tc, widening_is_exact);
    tcase_add_test(tc, simd_tables_match_portable);
    tcase_add_test(tc, fused_kernels_match_composition);
    tcase_add_test(tc, stochastic_picks_a_neighbour);
    tcase_add_test(tc, stochastic_is_unbiased);
    tcase_add_test(tc, stochastic_store_follows_the_spec);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
