/* Element-type conversions for mixed precision, in portable C: bfloat16 and
 * float16 to float32 (exact), float32 to them rounded to nearest even or
 * stochastically, and the block kernels built from them.
 *
 * The AVX2 table (kernels_avx2.c, with F16C) gives the same bits: its
 * float16 instructions round to nearest even exactly as mgpo_f32_to_f16
 * does (tests/test_convert.c compares all 2^32 floats), and NaNs are quieted
 * the way the hardware quiets them, so no value depends on the table.
 *
 * Stochastic rounding rounds x up (away from zero) to the next value of the
 * target type with probability equal to the fraction of the gap that x has
 * passed, from random bits that are a pure function of (key, element)
 * (random.c; 16 bits per bfloat16 element, 32 per float16 one: see
 * mgpo_store_stochastic), so a block gives the same bits on any thread.  bfloat16 and
 * float16 normal values add uniform random bits below the kept ones and
 * truncate: exactly unbiased.  A float16 subnormal result (|x| < 2^-14)
 * compares the fraction with a 32-bit uniform: biased by less than 2^-32 of
 * its gap (2^-24).  Infinities and NaNs round to nearest. */
#include "internal.h"

/* Saturation (docs/algorithm.md, "Mixed precision"): a finite float32 whose
 * rounding would be Inf gets the type's largest finite value of its sign
 * instead, so that no finite master, perturbation or step ever writes Inf
 * into a caller's buffer (the float32 path keeps the same promise by its
 * numeric bounds, which cannot bound a bf16/fp16 buffer's much smaller
 * range).  Inf and NaN stay what they are.  h is b rounded (by any rule):
 * the bfloat16 Inf pattern from a finite b becomes 0x7f7f. */
static inline uint16_t bf16_saturate(uint32_t b, uint16_t h)
{
    bool finite = (b & 0x7f800000u) != 0x7f800000u;
    return (uint16_t)(h - (finite && (h & 0x7fffu) == 0x7f80u));
}

float mgpo_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) /* Inf, or NaN made quiet as F16C's vcvtph2ps does */
        return mgpo_bits_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e == 0) {
        /* Subnormal: m * 2^-24, exact in float. */
        float v = (float)m * 0x1p-24f;
        return mgpo_bits_float(sign | mgpo_float_bits(v));
    }
    return mgpo_bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t mgpo_f32_to_bf16(float x)
{
    uint32_t b = mgpo_float_bits(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40u); /* quiet NaN */
    return bf16_saturate(b, (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16));
}

uint16_t mgpo_f32_to_f16(float x)
{
    uint32_t b = mgpo_float_bits(x);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    uint32_t a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u); /* Inf */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7bffu); /* >= 65520: saturated, 65504 */
    if (a >= 0x38800000u) {                                  /* >= 2^-14: normal */
        uint32_t h = (a - 0x38000000u) >> 13, rest = a & 0x1fffu;
        h += rest > 0x1000u || (rest == 0x1000u && (h & 1u));
        return (uint16_t)(sign | h);
    }
    if (a <= 0x33000000u) return sign; /* <= 2^-25: 0 (2^-25 is a tie to even 0) */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u, shift = 126u - e;
    uint32_t h = m >> shift, rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    h += rest > half || (rest == half && (h & 1u));
    return (uint16_t)(sign | h);
}

uint16_t mgpo_f32_to_bf16_stochastic(float x, uint16_t random)
{
    uint32_t b = mgpo_float_bits(x);
    if ((b & 0x7f800000u) == 0x7f800000u) return mgpo_f32_to_bf16(x);
    /* Sign and magnitude: adding to the magnitude's bits moves away from 0,
     * carrying into the exponent where the gap doubles, as it should. */
    return bf16_saturate(b, (uint16_t)((b + random) >> 16));
}

uint16_t mgpo_f32_to_f16_stochastic(float x, uint32_t random)
{
    uint32_t b = mgpo_float_bits(x), a = b & 0x7fffffffu, sign = b & 0x80000000u;
    if (a >= 0x7f800000u) return mgpo_f32_to_f16(x);
    if (a >= 0x38800000u) {
        /* Normal float16: 13 bits are dropped.  The truncated sum is a
         * float16 value (or 65536: saturated).  From 65504 on both
         * neighbours saturate to 65504, and the clamp keeps the sum's
         * bits below Inf's. */
        if (a > 0x477fe000u) a = 0x477fe000u;
        uint32_t t = (a + (uint32_t)(random & 0x1fffu)) & ~0x1fffu;
        return mgpo_f32_to_f16(mgpo_bits_float(sign | t));
    }
    /* Subnormal float16: gaps of 2^-24.  q = |x| / 2^-24 < 1024, exact. */
    float q = mgpo_bits_float(a) * 0x1p24f;
    float whole = (float)(uint32_t)q, fraction = q - whole; /* both exact */
    /* Up when fraction + u reaches 1, u uniform on the 2^32 multiples of
     * 2^-32 in [0, 1), as the added bits carry in the normal case (0 random
     * bits truncate).  1 - u is exact in double, so is the comparison. */
    double u = (double)random * 0x1p-32;
    float rounded = (whole + ((double)fraction >= 1.0 - u ? 1.0f : 0.0f)) * 0x1p-24f;
    return mgpo_f32_to_f16(mgpo_bits_float(sign | mgpo_float_bits(rounded)));
}

size_t mgpo_dtype_size(mgpo_dtype type)
{
    switch (type) {
    case MGPO_DTYPE_FLOAT32: return 4;
    case MGPO_DTYPE_BFLOAT16:
    case MGPO_DTYPE_FLOAT16: return 2;
    }
    return 0;
}

/* ---- Block kernels (the portable table's) --------------------------------
 * Each switches on every element type.  Registration refuses an unknown
 * one (MGPO_ERR_BAD_ENUM), so none reaches here; should one ever, the
 * kernels fail closed: a load yields NaN (a gradient the step refuses, a
 * momentum norm perturb skips), a store writes nothing (its element size
 * is unknown). */

static void fill_nan(float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = mgpo_bits_float(0x7fc00000u);
}

void mgpo_kernel_load(float *dst, const void *src, mgpo_dtype type, size_t n, float scale)
{
    const float *f = src;
    const uint16_t *h = src;
    switch (type) {
    case MGPO_DTYPE_FLOAT32:
        for (size_t i = 0; i < n; i++) dst[i] = f[i] * scale;
        return;
    case MGPO_DTYPE_BFLOAT16:
        for (size_t i = 0; i < n; i++) dst[i] = mgpo_bits_float((uint32_t)h[i] << 16) * scale;
        return;
    case MGPO_DTYPE_FLOAT16:
        for (size_t i = 0; i < n; i++) dst[i] = mgpo_f16_to_f32(h[i]) * scale;
        return;
    }
    fill_nan(dst, n);
}

void mgpo_kernel_store(void *dst, mgpo_dtype type, const float *src, size_t n)
{
    uint16_t *h = dst;
    switch (type) {
    case MGPO_DTYPE_FLOAT32: /* exact: no rounding to do */
        memcpy(dst, src, n * sizeof(float));
        return;
    case MGPO_DTYPE_BFLOAT16:
        for (size_t i = 0; i < n; i++) h[i] = mgpo_f32_to_bf16(src[i]);
        return;
    case MGPO_DTYPE_FLOAT16:
        for (size_t i = 0; i < n; i++) h[i] = mgpo_f32_to_f16(src[i]);
        return;
    }
}

void mgpo_kernel_perturb_store(void *dst, mgpo_dtype type, const float *p, const float *m,
                               float coefficient, size_t n)
{
    /* p + c*m rounded as mgpo_kernel_perturb rounds it, then to the type. */
    float *f = dst;
    uint16_t *h = dst;
    switch (type) {
    case MGPO_DTYPE_FLOAT32:
        for (size_t i = 0; i < n; i++) f[i] = p[i] + coefficient * m[i];
        return;
    case MGPO_DTYPE_BFLOAT16:
        for (size_t i = 0; i < n; i++) h[i] = mgpo_f32_to_bf16(p[i] + coefficient * m[i]);
        return;
    case MGPO_DTYPE_FLOAT16:
        for (size_t i = 0; i < n; i++) h[i] = mgpo_f32_to_f16(p[i] + coefficient * m[i]);
        return;
    }
}

/* One 64-bit hash serves four bfloat16 or two float16 elements: the hash,
 * not the rounding, is the cost. */
void mgpo_store_stochastic(void *dst, mgpo_dtype type, const float *src, size_t n,
                           uint64_t key, uint64_t first_index)
{
    uint16_t *h = dst;
    uint64_t bits = 0;
    switch (type) {
    case MGPO_DTYPE_FLOAT32: /* exact: nothing to round */
        memcpy(dst, src, n * sizeof(float));
        return;
    case MGPO_DTYPE_BFLOAT16:
        for (size_t i = 0; i < n; i++) {
            uint64_t e = first_index + i;
            if (i == 0 || (e & 3u) == 0) bits = mgpo_random_bits(key, e >> 2);
            h[i] = mgpo_f32_to_bf16_stochastic(src[i], (uint16_t)(bits >> (16u * (e & 3u))));
        }
        return;
    case MGPO_DTYPE_FLOAT16:
        for (size_t i = 0; i < n; i++) {
            uint64_t e = first_index + i;
            if (i == 0 || (e & 1u) == 0) bits = mgpo_random_bits(key, e >> 1);
            h[i] = mgpo_f32_to_f16_stochastic(src[i], (uint32_t)(bits >> (32u * (e & 1u))));
        }
        return;
    }
}

/* ---- The composed forms of the fused kernels -------------------------------
 * The portable table's sum_squares_typed and adamw_typed: the definition
 * the AVX2 table's fused loops must match bit for bit. */

double mgpo_kernel_sum_squares_typed(const void *x, mgpo_dtype type, size_t n, float scale)
{
    float g[MGPO_BLOCK_FLOATS];
    mgpo_kernel_load(g, x, type, n, scale);
    return mgpo_sum_squares(g, n);
}

double mgpo_kernel_adamw_typed(float *master, const void *grads, mgpo_dtype grad_type,
                               float scale, float *m, float *v, void *out, mgpo_dtype out_type,
                               const mgpo_typed_rounding *rounding, const mgpo_slot *slot,
                               const mgpo_step_constants *k, size_t n)
{
    float g[MGPO_BLOCK_FLOATS];
    mgpo_kernel_load(g, grads, grad_type, n, scale);
    double m_sq = mgpo_kernel_adamw(master, master, g, m, v, slot, k, n, 0.0f, NULL);
    if (rounding->stochastic)
        mgpo_store_stochastic(out, out_type, master, n, rounding->key, rounding->first_index);
    else
        mgpo_kernel_store(out, out_type, master, n);
    return m_sq;
}

bool mgpo_store_stochastic_head(void *dst, mgpo_dtype type, const float *src, size_t n,
                                uint64_t key, uint64_t first_index, size_t *done)
{
    uint64_t per_hash; /* elements one hash serves */
    switch (type) {
    case MGPO_DTYPE_FLOAT32: /* exact: nothing to round (a copy) */
        mgpo_store_stochastic(dst, type, src, n, key, first_index);
        return false;
    case MGPO_DTYPE_BFLOAT16: per_hash = 4; break;
    case MGPO_DTYPE_FLOAT16: per_hash = 2; break;
    default: return false; /* unknown type: nothing written, as mgpo_store_stochastic */
    }
    size_t head = (size_t)((per_hash - first_index % per_hash) % per_hash);
    *done = head < n ? head : n;
    mgpo_store_stochastic(dst, type, src, *done, key, first_index);
    return true;
}

/* ---- The public conversions ------------------------------------------------
 * Exactly the library's own converters (the table a state would pick, all
 * tables giving the same bits), in the library's floating-point
 * environment: a caller's denormals-are-zero would otherwise zero a float16
 * subnormal's widening. */

static mgpo_status check_conversion(const void *dst, size_t dst_size, const void *src,
                                    size_t src_size, mgpo_dtype type, size_t count)
{
    if ((!dst || !src) && count > 0) return MGPO_ERR_NULL_ARGUMENT;
    if (!mgpo_dtype_valid(type)) return MGPO_ERR_BAD_ENUM;
    if (count > SIZE_MAX / sizeof(float)) return MGPO_ERR_INVALID_ARGUMENT;
    if (!mgpo_typed_aligned(dst, dst_size == 4 ? MGPO_DTYPE_FLOAT32 : type) ||
        !mgpo_typed_aligned(src, src_size == 4 ? MGPO_DTYPE_FLOAT32 : type))
        return MGPO_ERR_INVALID_ARGUMENT;
    if (count > 0 && mgpo_ranges_overlap(dst, count * dst_size, src, count * src_size))
        return MGPO_ERR_INVALID_ARGUMENT;
    return MGPO_OK;
}

/* Widens (to_float32) or rounds `count` elements through the best
 * table's block kernels.  float32 to float32 is a byte copy (signalling
 * NaNs kept: the load's product by 1 would quiet them). */
static mgpo_status convert(void *dst, const void *src, mgpo_dtype type, size_t count,
                           bool to_float32)
{
    size_t typed = mgpo_dtype_size(type);
    mgpo_status s = to_float32 ? check_conversion(dst, sizeof(float), src, typed, type, count)
                               : check_conversion(dst, typed, src, sizeof(float), type, count);
    if (s != MGPO_OK || count == 0) return s;
    if (type == MGPO_DTYPE_FLOAT32) {
        memcpy(dst, src, count * sizeof(float));
        return MGPO_OK;
    }
    const mgpo_kernels *k = mgpo_kernels_best();
    fenv_t caller;
    mgpo_fp_enter(&caller);
    for (size_t i = 0; i < count; i += MGPO_BLOCK_FLOATS) {
        size_t n = count - i < MGPO_BLOCK_FLOATS ? count - i : MGPO_BLOCK_FLOATS;
        if (to_float32)
            k->load((float *)dst + i, (const unsigned char *)src + i * typed, type, n, 1.0f);
        else
            k->store((unsigned char *)dst + i * typed, type, (const float *)src + i, n);
    }
    mgpo_fp_leave(&caller);
    return MGPO_OK;
}

mgpo_status mgpo_convert_to_float32(float *dst, const void *src, mgpo_dtype type, size_t count)
{
    return convert(dst, src, type, count, true);
}

mgpo_status mgpo_convert_from_float32(void *dst, mgpo_dtype type, const float *src, size_t count)
{
    return convert(dst, src, type, count, false);
}
