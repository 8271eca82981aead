/* Inline AVX2 + MGPO_F16C helpers for the element types, shared by
 * convert_avx2.c and the fused mixed-precision kernels of kernels_avx2.c.
 * Private; x86-64 with GCC or clang only (the includers check). */
#ifndef MGPO_CONVERT_AVX2_H
#define MGPO_CONVERT_AVX2_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "internal.h"

#define MGPO_F16C __attribute__((target("avx2,fma,f16c")))

static MGPO_F16C inline __m256 typed_load8(const void *src, mgpo_dtype type, size_t i)
{
    const __m128i *h = (const __m128i *)(const void *)((const uint16_t *)src + i);
    switch (type) {
    case MGPO_DTYPE_FLOAT32: return _mm256_loadu_ps((const float *)src + i);
    case MGPO_DTYPE_BFLOAT16:
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(h)), 16));
    case MGPO_DTYPE_FLOAT16: return _mm256_cvtph_ps(_mm_loadu_si128(h));
    }
    /* Unknown type: fail closed as mgpo_kernel_load (NaN, which the step
     * refuses and perturb skips). */
    return _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
}

/* convert.c's bf16_saturate on eight lanes: h (32-bit lanes, each a
 * bfloat16 pattern rounded from b) is 0x7f80 or 0xff80 from a finite b:
 * one less, the largest finite value of its sign. */
static MGPO_F16C inline __m256i bf16_saturate8(__m256i b, __m256i h)
{
    const __m256i exp = _mm256_set1_epi32(0x7f800000);
    __m256i finite = _mm256_xor_si256(_mm256_cmpeq_epi32(_mm256_and_si256(b, exp), exp),
                                      _mm256_set1_epi32(-1));
    __m256i at_inf = _mm256_cmpeq_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x7fff)),
                                        _mm256_set1_epi32(0x7f80));
    /* All-ones lanes are -1. */
    return _mm256_add_epi32(h, _mm256_and_si256(finite, at_inf));
}

/* Finite lanes clamped to [-65504, 65504], float16's largest finite value,
 * so that vcvtps2ph saturates as mgpo_f32_to_f16 does; Inf and NaN lanes
 * unchanged (max/min return their second operand, x, for a NaN). */
static MGPO_F16C inline __m256 f16_saturate8(__m256 x)
{
    const __m256 limit = _mm256_set1_ps(65504.0f);
    __m256 clamped = _mm256_min_ps(limit, _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), limit), x));
    __m256 magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    __m256 inf = _mm256_cmp_ps(magnitude, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ);
    return _mm256_blendv_ps(clamped, x, inf);
}

/* Round to nearest even into bfloat16, NaNs quieted, saturated
 * (mgpo_f32_to_bf16). */
static MGPO_F16C inline __m128i bf16_nearest8(__m256 x)
{
    __m256i b = _mm256_castps_si256(x);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), odd), 16);
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x40));
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    rounded = bf16_saturate8(b, rounded);
    __m256i h = _mm256_blendv_epi8(rounded, quiet, nan);
    /* 32-bit lanes (each < 2^16) to 16-bit: pack within 128-bit halves,
     * then bring the two halves' results together. */
    __m256i packed = _mm256_packus_epi32(h, h);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

static MGPO_F16C inline void typed_store8(void *dst, mgpo_dtype type, size_t i, __m256 x)
{
    __m128i *h = (__m128i *)(void *)((uint16_t *)dst + i);
    switch (type) {
    case MGPO_DTYPE_FLOAT32: /* exact: no rounding to do */
        _mm256_storeu_ps((float *)dst + i, x);
        return;
    case MGPO_DTYPE_BFLOAT16: _mm_storeu_si128(h, bf16_nearest8(x)); return;
    case MGPO_DTYPE_FLOAT16:
        _mm_storeu_si128(h, _mm256_cvtps_ph(f16_saturate8(x), _MM_FROUND_TO_NEAREST_INT));
        return;
    }
    /* Unknown type: its element size is unknown, so nothing is written
     * (as mgpo_kernel_store). */
}

#endif
