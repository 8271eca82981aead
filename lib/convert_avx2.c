/* The mixed-precision block kernels with AVX2 and MGPO_F16C: the same bits as
 * convert.c's portable ones (tests/test_convert.c).  float16 goes through
 * vcvtph2ps / vcvtps2ph (round to nearest even by the immediate, whatever
 * MXCSR says), bfloat16 through integer shifts with the portable code's
 * rounding; the tail of a block (under eight elements) uses the portable
 * functions themselves. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(MGPO_PORTABLE_ONLY)

#include <immintrin.h>

#include "convert_avx2.h"

MGPO_F16C void mgpo_avx2_load(float *dst, const void *src, mgpo_dtype type, size_t n, float scale)
{
    const __m256 s = _mm256_set1_ps(scale);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(typed_load8(src, type, i), s));
    if (i < n) {
        size_t size = mgpo_dtype_size(type);
        mgpo_kernel_load(dst + i, (const unsigned char *)src + i * size, type, n - i, scale);
    }
}

MGPO_F16C void mgpo_avx2_store(void *dst, mgpo_dtype type, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) typed_store8(dst, type, i, _mm256_loadu_ps(src + i));
    if (i < n) mgpo_kernel_store((unsigned char *)dst + i * mgpo_dtype_size(type), type, src + i, n - i);
}

MGPO_F16C void mgpo_avx2_perturb_store(void *dst, mgpo_dtype type, const float *p, const float *m,
                               float coefficient, size_t n)
{
    const __m256 c = _mm256_set1_ps(coefficient);
    size_t i = 0;
    /* p + c*m unfused, as mgpo_kernel_perturb. */
    for (; i + 8 <= n; i += 8)
        typed_store8(dst, type, i,
               _mm256_add_ps(_mm256_loadu_ps(p + i), _mm256_mul_ps(c, _mm256_loadu_ps(m + i))));
    if (i < n)
        mgpo_kernel_perturb_store((unsigned char *)dst + i * mgpo_dtype_size(type), type, p + i,
                                  m + i, coefficient, n - i);
}

/* ---- Stochastic rounding --------------------------------------------------
 * The generator's 64-bit multiplies from 32-bit ones (AVX2 has no vpmullq):
 * four hashes per vector, each serving four bfloat16 or two float16
 * elements as mgpo_store_stochastic specifies. */

static MGPO_F16C inline __m256i mul64(__m256i a, __m256i b)
{
    __m256i lo = _mm256_mul_epu32(a, b);
    __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                     _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));
    return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}

static MGPO_F16C inline __m256i mix4(__m256i x)
{
    x = _mm256_xor_si256(x, _mm256_srli_epi64(x, 30));
    x = mul64(x, _mm256_set1_epi64x((long long)UINT64_C(0xBF58476D1CE4E5B9)));
    x = _mm256_xor_si256(x, _mm256_srli_epi64(x, 27));
    x = mul64(x, _mm256_set1_epi64x((long long)UINT64_C(0x94D049BB133111EB)));
    return _mm256_xor_si256(x, _mm256_srli_epi64(x, 31));
}

/* mgpo_random_bits(key, index + k) for k = 0..3. */
static MGPO_F16C inline __m256i bits4(uint64_t key, uint64_t index)
{
    __m256i i = _mm256_add_epi64(_mm256_set1_epi64x((long long)index), _mm256_set_epi64x(3, 2, 1, 0));
    __m256i inner = mix4(_mm256_add_epi64(i, _mm256_set1_epi64x((long long)MGPO_GOLDEN_GAMMA)));
    return mix4(_mm256_xor_si256(_mm256_set1_epi64x((long long)key), inner));
}

/* Eight bfloat16 roundings with 16 random bits each (zero-extended). */
static MGPO_F16C inline __m128i bf16_stochastic8(__m256 x, __m256i random)
{
    __m256i b = _mm256_castps_si256(x);
    __m256i up = bf16_saturate8(b, _mm256_srli_epi32(_mm256_add_epi32(b, random), 16));
    /* Inf and NaN round to nearest (exponent all ones). */
    __m256i exp = _mm256_and_si256(b, _mm256_set1_epi32(0x7f800000));
    __m256i special = _mm256_cmpeq_epi32(exp, _mm256_set1_epi32(0x7f800000));
    __m128i nearest = bf16_nearest8(x);
    __m256i h = _mm256_blendv_epi8(up, _mm256_cvtepu16_epi32(nearest), special);
    __m256i packed = _mm256_packus_epi32(h, h);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

/* Eight float16 roundings with 32 random bits each; 0 when a lane is a
 * float16 subnormal (|x| < 2^-14, not 0), which the scalar code handles. */
static MGPO_F16C inline int f16_stochastic8(__m256 x, __m256i random, __m128i *out)
{
    __m256i b = _mm256_castps_si256(x);
    __m256i a = _mm256_and_si256(b, _mm256_set1_epi32(0x7fffffff));
    __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x38800000), a);
    __m256i zero = _mm256_cmpeq_epi32(a, _mm256_setzero_si256());
    if (!_mm256_testz_si256(small, _mm256_xor_si256(small, zero) /* small and not 0 */)) return 0;
    __m256i special = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f7fffff));
    /* From 65504 on, saturated (mgpo_f32_to_f16_stochastic's clamp; the
     * special lanes are replaced below). */
    __m256i c = _mm256_min_epi32(a, _mm256_set1_epi32(0x477fe000));
    __m256i t = _mm256_and_si256(_mm256_add_epi32(c, _mm256_and_si256(random, _mm256_set1_epi32(0x1fff))),
                                 _mm256_set1_epi32(~0x1fff));
    t = _mm256_or_si256(t, _mm256_and_si256(b, _mm256_set1_epi32((int)0x80000000u)));
    /* 0 stays 0; Inf and NaN round to nearest. */
    __m256i keep = _mm256_or_si256(special, zero);
    __m256 v = _mm256_castsi256_ps(_mm256_blendv_epi8(t, b, keep));
    *out = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    return 1;
}

MGPO_F16C void mgpo_avx2_store_stochastic(void *dst, mgpo_dtype type, const float *src, size_t n,
                                     uint64_t key, uint64_t first_index)
{
    uint16_t *h = dst;
    /* float32 and unknown types whole, and up to a hash boundary: the
     * portable code (the tail too, below). */
    size_t i = 0;
    if (!mgpo_store_stochastic_head(dst, type, src, n, key, first_index, &i)) return;
    if (type == MGPO_DTYPE_BFLOAT16) {
        for (; i + 16 <= n; i += 16) {
            __m256i r = bits4(key, (first_index + i) / 4); /* 16 x 16 bits, in order */
            __m128i lo = bf16_stochastic8(_mm256_loadu_ps(src + i),
                                          _mm256_cvtepu16_epi32(_mm256_castsi256_si128(r)));
            __m128i hi = bf16_stochastic8(_mm256_loadu_ps(src + i + 8),
                                          _mm256_cvtepu16_epi32(_mm256_extracti128_si256(r, 1)));
            _mm_storeu_si128((__m128i *)(void *)(h + i), lo);
            _mm_storeu_si128((__m128i *)(void *)(h + i + 8), hi);
        }
    } else { /* MGPO_DTYPE_FLOAT16 */
        for (; i + 8 <= n; i += 8) {
            __m256i r = bits4(key, (first_index + i) / 2); /* 8 x 32 bits, in order */
            __m128i out;
            if (f16_stochastic8(_mm256_loadu_ps(src + i), r, &out))
                _mm_storeu_si128((__m128i *)(void *)(h + i), out);
            else
                mgpo_store_stochastic(h + i, type, src + i, 8, key, first_index + i);
        }
    }
    if (i < n) mgpo_store_stochastic(h + i, type, src + i, n - i, key, first_index + i);
}

#endif
