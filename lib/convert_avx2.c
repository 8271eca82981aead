/* The mixed-precision block kernels with AVX2 and F16C: the same bits as
 * convert.c's portable ones (tests/test_convert.c).  float16 goes through
 * vcvtph2ps / vcvtps2ph (round to nearest even by the immediate, whatever
 * MXCSR says), bfloat16 through integer shifts with the portable code's
 * rounding; the tail of a block (under eight elements) uses the portable
 * functions themselves. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(MGPO_PORTABLE_ONLY)

#include <immintrin.h>

#define F16C __attribute__((target("avx2,fma,f16c")))

static F16C inline __m256 load8(const void *src, mgpo_dtype type, size_t i)
{
    if (type == MGPO_DTYPE_FLOAT32) return _mm256_loadu_ps((const float *)src + i);
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)((const uint16_t *)src + i));
    if (type == MGPO_DTYPE_FLOAT16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Round to nearest even into bfloat16, NaNs quieted (mgpo_f32_to_bf16). */
static F16C inline __m128i to_bf16(__m256 x)
{
    __m256i b = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), odd), 16);
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    __m256i h = _mm256_blendv_epi8(rounded, quiet, nan);
    /* 32-bit lanes (each < 2^16) to 16-bit: pack within 128-bit halves,
     * then bring the two halves' results together. */
    __m256i packed = _mm256_packus_epi32(h, h);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

static F16C inline void store8(void *dst, mgpo_dtype type, size_t i, __m256 x)
{
    __m128i h = type == MGPO_DTYPE_FLOAT16 ? _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT)
                                           : to_bf16(x);
    _mm_storeu_si128((__m128i *)(void *)((uint16_t *)dst + i), h);
}

F16C void mgpo_avx2_load(float *dst, const void *src, mgpo_dtype type, size_t n, float scale)
{
    const __m256 s = _mm256_set1_ps(scale);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(load8(src, type, i), s));
    if (i < n) {
        size_t size = mgpo_dtype_size(type);
        mgpo_kernel_load(dst + i, (const unsigned char *)src + i * size, type, n - i, scale);
    }
}

F16C void mgpo_avx2_store(void *dst, mgpo_dtype type, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) store8(dst, type, i, _mm256_loadu_ps(src + i));
    if (i < n) mgpo_kernel_store((uint16_t *)dst + i, type, src + i, n - i);
}

F16C void mgpo_avx2_perturb_store(void *dst, mgpo_dtype type, const float *p, const float *m,
                               float coefficient, size_t n)
{
    const __m256 c = _mm256_set1_ps(coefficient);
    size_t i = 0;
    /* p + c*m unfused, as mgpo_kernel_perturb. */
    for (; i + 8 <= n; i += 8)
        store8(dst, type, i,
               _mm256_add_ps(_mm256_loadu_ps(p + i), _mm256_mul_ps(c, _mm256_loadu_ps(m + i))));
    if (i < n) mgpo_kernel_perturb_store((uint16_t *)dst + i, type, p + i, m + i, coefficient, n - i);
}

#endif
