/* The elementwise kernels with AVX-512 (F, BW, VL, DQ) and FMA intrinsics,
 * chosen at run time (cpu_x86.h: the CPU must have them and the OS must save
 * the ZMM state).  Compiled with a function-level target attribute, so the
 * library never needs -march; valgrind, which hides AVX-512 from CPUID, and
 * older CPUs get the AVX2 or portable table.
 *
 * The same operations, order and rounding as kernels.c and kernels_avx2.c:
 * a fused multiply-add exactly where kernels.c calls fmaf() (the library is
 * built with -ffp-contract=off), and the momentum norm in kernels.c's
 * sixteen double lanes.  A chunk is sixteen floats starting at a multiple of
 * sixteen, so vector element k of a chunk is lane k: two vectors of eight
 * doubles hold all the lanes, and each lane adds its elements in index order,
 * with the same roundings as the portable loop (a float's square is exact in
 * double, so fma(a, a, s) rounds once, as s + a*a does).
 * tests/test_kernels.c and tests/test_convert.c compare every kernel with
 * the portable table bit for bit.
 *
 * A tail shorter than sixteen runs the same vector code under a mask:
 * masked-off elements load as zeros and are never stored, and every value
 * summed is zeroed outside the mask, so the tail lanes add +0.0 (which
 * leaves a lane's bits unchanged: lanes start at +0.0 and only grow).
 *
 * Conversions: float16 goes through vcvtph2ps / vcvtps2ph with the rounding
 * in the immediate (nearest even, whatever MXCSR says), the instructions the
 * AVX2 table uses.  bfloat16 is rounded with integer operations, as the
 * portable code rounds it: AVX512-BF16's vcvtneps2bf16 also rounds to
 * nearest even but treats subnormal inputs as zero, so it would change the
 * bits of tiny values.  The random bits of stochastic rounding use
 * AVX512-DQ's 64-bit multiply (vpmullq): eight hashes per vector.
 *
 * Where a 512-bit path was measured slower than AVX2 on the CPU at hand it
 * would delegate; on AMD Zen 4 (the machine of docs/performance.md) none
 * was, so every entry is 512 bits wide. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(MGPO_PORTABLE_ONLY)

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "cpu_x86.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

#ifndef MGPO_STREAM_STEP_PARAMS
#define MGPO_STREAM_STEP_PARAMS 0 /* see kernels_avx2.c */
#endif

#define FULL ((__mmask16)0xffff)

/* Lanes k < count (count <= 16). */
static inline __mmask16 tail_mask(size_t count) { return (__mmask16)((1u << count) - 1u); }

/* Loads and stores under a mask; with the constant FULL (the compiler
 * propagates it) they are plain vector loads and stores. */
static AVX512 inline __m512 load(const float *p, __mmask16 mask)
{
    return mask == FULL ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mask, p);
}

static AVX512 inline void store(float *p, __m512 x, __mmask16 mask)
{
    if (mask == FULL) _mm512_storeu_ps(p, x);
    else _mm512_mask_storeu_ps(p, mask, x);
}

/* 3: 64-byte aligned, 2: 32-byte, 1: 16-byte, 0: no streaming.  Chunks
 * advance by 64 bytes, so the alignment of the start holds for all. */
static inline int stream_mode(const float *p, bool want)
{
    uintptr_t a = (uintptr_t)p;
    if (!want) return 0;
    return (a & 63u) == 0 ? 3 : (a & 31u) == 0 ? 2 : (a & 15u) == 0 ? 1 : 0;
}

static AVX512 inline void store_out(float *p, __m512 x, __mmask16 mask, int stream)
{
    if (mask != FULL || stream == 0) {
        store(p, x, mask);
    } else if (stream == 3) {
        _mm512_stream_ps(p, x);
    } else if (stream == 2) {
        _mm256_stream_ps(p, _mm512_castps512_ps256(x));
        _mm256_stream_ps(p + 8, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    } else {
        for (int q = 0; q < 4; q++) {
            float part[4];
            memcpy(part, (const float *)&x + 4 * q, sizeof part);
            _mm_stream_ps(p + 4 * q, _mm_loadu_ps(part));
        }
    }
}

/* The sixteen lanes: acc[0] holds lanes 0..7, acc[1] lanes 8..15. */
typedef struct lanes {
    __m512d acc[2];
} lanes;

/* A float's square is exact in double, so fma(a, a, s) rounds once, as
 * the portable loop's s + a*a does. */
static AVX512 inline void add_squares(lanes *l, __m512 x)
{
    __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    l->acc[0] = _mm512_fmadd_pd(a, a, l->acc[0]);
    l->acc[1] = _mm512_fmadd_pd(b, b, l->acc[1]);
}

static AVX512 inline lanes no_lanes(void)
{
    lanes l = {{_mm512_setzero_pd(), _mm512_setzero_pd()}};
    return l;
}

static AVX512 inline double combine(const lanes *l)
{
    double lane[MGPO_LANES];
    _mm512_storeu_pd(lane, l->acc[0]);
    _mm512_storeu_pd(lane + 8, l->acc[1]);
    return mgpo_combine_lanes16(lane);
}

/* Runs BODY(at, mask) over n elements in chunks of sixteen, the last one
 * masked. */
#define CHUNKS(n, BODY)                                                                   \
    do {                                                                                  \
        size_t at_ = 0;                                                                   \
        for (; at_ + 16 <= (n); at_ += 16) BODY(at_, FULL);                               \
        if (at_ < (n)) BODY(at_, tail_mask((n) - at_));                                   \
    } while (0)

/* The norm passes in 256-bit registers, loaded as such.  A lane adds its
 * elements in index order, so each accumulator is a chain of dependent
 * FMAs, one per sixteen floats whatever the width (4 cycles each on Zen 4).
 * Measured on Zen 4 (docs/performance.md): pass 1 ran at 0.076 ns/float
 * with ymm loads, as the AVX2 table; at 0.11-0.13 with a zmm load split by
 * vextractf64x4, and slower still with separate multiplies and adds (the
 * adds and the widening conversions share two pipes). */
typedef struct lanes4 {
    __m256d acc[4]; /* lanes 0..3, 4..7, 8..11, 12..15 */
} lanes4;

static AVX512 inline void add_squares8(__m256d *acc2, __m256 x)
{
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    acc2[0] = _mm256_fmadd_pd(a, a, acc2[0]);
    acc2[1] = _mm256_fmadd_pd(b, b, acc2[1]);
}

/* Sixteen floats as two ymm loads (no 512-bit extract). */
static AVX512 inline void add_squares4(lanes4 *l, const float *x, __mmask16 mask)
{
    __m256 lo, hi;
    if (mask == FULL) {
        lo = _mm256_loadu_ps(x);
        hi = _mm256_loadu_ps(x + 8);
    } else {
        lo = _mm256_maskz_loadu_ps((__mmask8)mask, x);
        hi = _mm256_maskz_loadu_ps((__mmask8)(mask >> 8), x + 8);
    }
    add_squares8(&l->acc[0], lo);
    add_squares8(&l->acc[2], hi);
}

static AVX512 inline double combine4(const lanes4 *l)
{
    double lane[MGPO_LANES];
    for (int k = 0; k < 4; k++) _mm256_storeu_pd(lane + 4 * k, l->acc[k]);
    return mgpo_combine_lanes16(lane);
}

static AVX512 double sum_squares(const float *x, size_t n)
{
    lanes4 l = {{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                 _mm256_setzero_pd()}};
#define SQ(at, mask) add_squares4(&l, x + (at), mask)
    CHUNKS(n, SQ);
#undef SQ
    return combine4(&l);
}

static AVX512 void perturb(float *params, float *backup, const float *m, float coefficient,
                           size_t n, bool want_stream)
{
    const __m512 c = _mm512_set1_ps(coefficient);
    int stream = backup ? stream_mode(backup, want_stream) : 0;
#define PERTURB(at, mask)                                                                 \
    do {                                                                                  \
        __m512 p = load(params + (at), mask);                                             \
        if (backup) store_out(backup + (at), p, mask, stream);                            \
        store(params + (at), _mm512_add_ps(p, _mm512_mul_ps(c, load(m + (at), mask))), mask); \
    } while (0)
    CHUNKS(n, PERTURB);
#undef PERTURB
    /* Order the streaming stores before whatever reads the backup next. */
    if (stream) _mm_sfence();
}

static AVX512 void unperturb(float *params, const float *m, float coefficient, size_t n)
{
    const __m512 c = _mm512_set1_ps(coefficient);
#define UNPERTURB(at, mask)                                                               \
    store(params + (at),                                                                  \
          _mm512_sub_ps(load(params + (at), mask), _mm512_mul_ps(c, load(m + (at), mask))), \
          mask)
    CHUNKS(n, UNPERTURB);
#undef UNPERTURB
}

static AVX512 void copy(float *dst, const float *src, size_t n, bool want_stream)
{
    int stream = stream_mode(dst, want_stream);
    if (!stream) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
#define COPY(at, mask) store_out(dst + (at), load(src + (at), mask), mask, stream)
    CHUNKS(n, COPY);
#undef COPY
    _mm_sfence();
}

/* Replaces the listed elements of chunk `base` (`count` <= 16 elements). */
static AVX512 inline __m512 apply_exceptions16(mgpo_exception_reader *r, __m512 x, size_t base,
                                               size_t count)
{
    if (mgpo_next_listed(r) >= base + count) return x;
    float lane[16];
    _mm512_storeu_ps(lane, x);
    mgpo_apply_exceptions(r, lane, base, count);
    return _mm512_loadu_ps(lane);
}

static inline size_t chunk_count(__mmask16 mask)
{
    return mask == FULL ? 16 : (size_t)__builtin_popcount((unsigned)mask);
}

/* The vector form of kernels.c's restore_exact_prefix, in place. */
static AVX512 void restore_exact_prefix(float *params, const float *backup, const float *m,
                                        float coefficient, size_t n, size_t count)
{
    mgpo_exception_reader r = mgpo_exceptions_of(backup, n);
    const __m512 c = _mm512_set1_ps(coefficient);
    size_t listed_at = mgpo_next_listed(&r);
#define RESTORE(at, mask)                                                                 \
    do {                                                                                  \
        __m512 x = _mm512_sub_ps(load(params + (at), mask),                               \
                                 _mm512_mul_ps(c, load(m + (at), mask)));                 \
        if (listed_at < (at) + 16) {                                                      \
            x = apply_exceptions16(&r, x, at, chunk_count(mask));                         \
            listed_at = mgpo_next_listed(&r);                                             \
        }                                                                                 \
        store(params + (at), x, mask);                                                    \
    } while (0)
    CHUNKS(count, RESTORE);
#undef RESTORE
}

static AVX512 void restore_exact(float *params, const float *backup, const float *m,
                                 float coefficient, size_t n)
{
    restore_exact_prefix(params, backup, m, coefficient, n, n);
}

/* Lists the lanes of chunk `base` whose undo r differs from p; false when the
 * list is full. */
static bool list_exceptions(const float *p, const float *r, size_t base, size_t count,
                            uint16_t *index, float *value, size_t capacity, size_t *used)
{
    for (size_t k = 0; k < count; k++) {
        if (mgpo_float_bits(r[k]) == mgpo_float_bits(p[k])) continue;
        if (*used == capacity) return false;
        index[*used] = (uint16_t)(base + k);
        value[(*used)++] = p[k];
    }
    return true;
}

/* One chunk of mgpo_kernel_perturb_exact: compares r = (p + c*m) - c*m with p
 * as bits and lists the lanes that differ; false when the list is full. */
static AVX512 inline bool perturb_exact16(float *params, const float *m, __m512 c, size_t base,
                                          __mmask16 mask, uint16_t *index, float *value,
                                          size_t capacity, size_t *used)
{
    __m512 p = load(params + base, mask);
    __m512 b = _mm512_mul_ps(c, load(m + base, mask));
    __m512 t = _mm512_add_ps(p, b);
    __m512 r = _mm512_sub_ps(t, b);
    if (_mm512_mask_cmpneq_epi32_mask(mask, _mm512_castps_si512(p), _mm512_castps_si512(r))) {
        float pl[16], rl[16];
        _mm512_storeu_ps(pl, p);
        _mm512_storeu_ps(rl, r);
        if (!list_exceptions(pl, rl, base, chunk_count(mask), index, value, capacity, used))
            return false;
    }
    store(params + base, t, mask);
    return true;
}

static AVX512 uint32_t perturb_exact(float *params, float *backup, const float *m,
                                     float coefficient, size_t n)
{
    uint16_t *index = (uint16_t *)(void *)(backup + 1);
    float *value = backup + mgpo_exception_value_offset(n);
    size_t capacity = mgpo_exception_capacity(n), used = 0;
    const __m512 c = _mm512_set1_ps(coefficient);
    size_t i = 0;
    bool fits = true;
    for (; fits && i + 16 <= n; i += 16)
        fits = perturb_exact16(params, m, c, i, FULL, index, value, capacity, &used);
    if (fits && i < n) {
        fits = perturb_exact16(params, m, c, i, tail_mask(n - i), index, value, capacity, &used);
        i += 16;
    }
    uint32_t count = (uint32_t)used;
    memcpy(backup, &count, sizeof count);
    if (fits) return count;
    /* The chunk at i - 16 stored nothing: put back the ones before it. */
    restore_exact_prefix(params, backup, m, coefficient, n, i - 16);
    count = MGPO_FULL_BACKUP;
    memcpy(backup, &count, sizeof count);
    return count;
}

typedef struct adamw_vectors {
    __m512 decay, step, grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2,
        inv_bias2_sqrt, eps, undo;
    bool has_undo;
} adamw_vectors;

/* The per-step constants of a block as vectors. */
static AVX512 inline adamw_vectors adamw_constants(const mgpo_slot *slot,
                                                   const mgpo_step_constants *s, float undo)
{
    adamw_vectors k;
    k.decay = _mm512_set1_ps(slot->k_decay);
    k.step = _mm512_set1_ps(slot->k_step);
    k.grad_scale = _mm512_set1_ps(s->grad_scale);
    k.beta1 = _mm512_set1_ps(s->beta1);
    k.one_minus_beta1 = _mm512_set1_ps(s->one_minus_beta1);
    k.beta2 = _mm512_set1_ps(s->beta2);
    k.one_minus_beta2 = _mm512_set1_ps(s->one_minus_beta2);
    k.inv_bias2_sqrt = _mm512_set1_ps(s->inv_bias2_sqrt);
    k.eps = _mm512_set1_ps(s->eps);
    k.undo = _mm512_set1_ps(undo);
    k.has_undo = undo != 0.0f;
    return k;
}

/* One chunk of sixteen from the gradient vector `raw`, in kernels.c's order
 * (see mgpo_kernel_adamw). */
static AVX512 inline void adamw16(float *params, const float *src, __m512 raw, float *m,
                                  float *v, const adamw_vectors *k, lanes *l, __mmask16 mask,
                                  int stream, mgpo_exception_reader *exact, size_t base)
{
    __m512 g = _mm512_mul_ps(raw, k->grad_scale);
    __m512 mo = load(m, mask);
    __m512 p = load(src, mask);
    if (k->has_undo) p = _mm512_sub_ps(p, _mm512_mul_ps(k->undo, mo));
    if (exact) p = apply_exceptions16(exact, p, base, chunk_count(mask));
    p = _mm512_mul_ps(p, k->decay);
    __m512 mi = _mm512_fmadd_ps(mo, k->beta1, _mm512_mul_ps(k->one_minus_beta1, g));
    __m512 vi = _mm512_fmadd_ps(load(v, mask), k->beta2,
                                _mm512_mul_ps(_mm512_mul_ps(k->one_minus_beta2, g), g));
    __m512 denom = _mm512_fmadd_ps(_mm512_sqrt_ps(vi), k->inv_bias2_sqrt, k->eps);
    /* (step * m) / denom: torch's order, kept finite by the lr bounds. */
    p = _mm512_add_ps(p, _mm512_div_ps(_mm512_mul_ps(k->step, mi), denom));
    store_out(params, p, mask, stream);
    store(m, mi, mask);
    store(v, vi, mask);
    /* Masked-off lanes of mi are zeros (all inputs zero). */
    add_squares(l, mi);
}

static AVX512 double adamw(float *params, const float *src, const float *grads, float *m,
                           float *v, const mgpo_slot *slot, const mgpo_step_constants *s,
                           size_t n, float undo, mgpo_exception_reader *exact)
{
    adamw_vectors k = adamw_constants(slot, s, undo);
    /* In place, params were just read: their lines are cached already. */
    int stream = stream_mode(params, MGPO_STREAM_STEP_PARAMS && slot->stream && src != params);
    lanes l = no_lanes();
    size_t listed_at = exact ? mgpo_next_listed(exact) : SIZE_MAX;
#define ADAMW(at, mask)                                                                   \
    do {                                                                                  \
        mgpo_exception_reader *patch = listed_at < (at) + 16 ? exact : NULL;              \
        adamw16(params + (at), src + (at), load(grads + (at), mask), m + (at), v + (at),  \
                &k, &l, mask, mask == FULL ? stream : 0, patch, at);                      \
        if (patch) listed_at = mgpo_next_listed(exact);                                   \
    } while (0)
    CHUNKS(n, ADAMW);
#undef ADAMW
    if (stream) _mm_sfence();
    return combine(&l);
}

typedef struct sgd_vectors {
    __m512 wd, neg_lr, grad_scale, momentum, one_minus_dampening, undo;
    bool decay, restart, plain, nesterov, has_undo;
} sgd_vectors;

/* One chunk of sixteen, in kernels.c's order: see mgpo_kernel_sgd. */
static AVX512 inline void sgd16(float *params, const float *src, const float *grads, float *m,
                                const sgd_vectors *k, lanes *l, __mmask16 mask, int stream,
                                mgpo_exception_reader *exact, size_t base)
{
    __m512 p = load(src, mask);
    __m512 mo = k->restart && !k->has_undo ? _mm512_setzero_ps() : load(m, mask);
    if (k->has_undo) p = _mm512_sub_ps(p, _mm512_mul_ps(k->undo, mo));
    if (exact) p = apply_exceptions16(exact, p, base, chunk_count(mask));
    __m512 d = _mm512_mul_ps(load(grads, mask), k->grad_scale);
    if (k->decay) d = _mm512_fmadd_ps(k->wd, p, d);
    __m512 b = k->restart ? d
                          : _mm512_fmadd_ps(mo, k->momentum,
                                            _mm512_mul_ps(k->one_minus_dampening, d));
    __m512 dir = k->plain ? d : k->nesterov ? _mm512_fmadd_ps(k->momentum, b, d) : b;
    store_out(params, _mm512_fmadd_ps(k->neg_lr, dir, p), mask, stream);
    store(m, b, mask);
    /* Masked-off lanes: 0 * wd is NaN when wd is Inf in float. */
    if (mask != FULL) b = _mm512_maskz_mov_ps(mask, b);
    add_squares(l, b);
}

/* The loop of sgd with the mode flags as constants (see kernels.c's
 * SGD_RUN): each instantiation is branch-free. */
static AVX512 inline void sgd_run(float *params, const float *src, const float *grads, float *m,
                                  sgd_vectors k, bool decay, bool restart, bool plain,
                                  bool nesterov, bool has_undo, lanes *l, size_t n, int stream,
                                  mgpo_exception_reader *exact)
{
    k.decay = decay;
    k.restart = restart;
    k.plain = plain;
    k.nesterov = nesterov;
    k.has_undo = has_undo;
    size_t listed_at = exact ? mgpo_next_listed(exact) : SIZE_MAX;
#define SGD(at, mask)                                                                     \
    do {                                                                                  \
        mgpo_exception_reader *patch = listed_at < (at) + 16 ? exact : NULL;              \
        sgd16(params + (at), src + (at), grads + (at), m + (at), &k, l, mask,             \
              mask == FULL ? stream : 0, patch, at);                                      \
        if (patch) listed_at = mgpo_next_listed(exact);                                   \
    } while (0)
    CHUNKS(n, SGD);
#undef SGD
}

static AVX512 double sgd(float *params, const float *src, const float *grads, float *m,
                         const mgpo_slot *slot, const mgpo_step_constants *s, size_t n,
                         float undo, mgpo_exception_reader *exact)
{
    sgd_vectors k;
    k.wd = _mm512_set1_ps(slot->k_decay);
    k.neg_lr = _mm512_set1_ps(slot->k_lr);
    k.grad_scale = _mm512_set1_ps(s->grad_scale);
    k.momentum = _mm512_set1_ps(s->momentum);
    k.one_minus_dampening = _mm512_set1_ps(s->one_minus_dampening);
    k.undo = _mm512_set1_ps(undo);
    const bool decay = slot->k_decay != 0.0f, plain = s->momentum == 0.0f;
    const bool restart = s->first || plain, nesterov = s->nesterov, has_undo = undo != 0.0f;
    int stream = stream_mode(params, MGPO_STREAM_STEP_PARAMS && slot->stream && src != params);
    lanes l = no_lanes();
    /* The common modes get constant flags; the rest share one loop. */
    if (!has_undo && !exact && !plain && !restart && !nesterov)
        sgd_run(params, src, grads, m, k, decay, false, false, false, false, &l, n, stream,
                NULL);
    else if (!has_undo && !exact && plain)
        sgd_run(params, src, grads, m, k, decay, true, true, false, false, &l, n, stream, NULL);
    else
        sgd_run(params, src, grads, m, k, decay, restart, plain, nesterov, has_undo, &l, n,
                stream, exact);
    if (stream) _mm_sfence();
    return combine(&l);
}

/* ---- Element types ---------------------------------------------------------
 * The same bits as convert.c (tests/test_convert.c). */

/* Sixteen 16-bit elements from h, lanes outside `mask` zero. */
static AVX512 inline __m256i load16(const uint16_t *h, __mmask16 mask)
{
    return mask == FULL ? _mm256_loadu_si256((const __m256i *)(const void *)h)
                        : _mm256_maskz_loadu_epi16(mask, h);
}

static AVX512 inline __m512 typed_load16(const void *src, mgpo_dtype type, size_t i,
                                         __mmask16 mask)
{
    const uint16_t *h = (const uint16_t *)src + i;
    switch (type) {
    case MGPO_DTYPE_FLOAT32: return load((const float *)src + i, mask);
    case MGPO_DTYPE_BFLOAT16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load16(h, mask)), 16));
    case MGPO_DTYPE_FLOAT16: return _mm512_cvtph_ps(load16(h, mask));
    }
    /* Unknown type: fail closed as mgpo_kernel_load (NaN, which the step
     * refuses and perturb skips); lanes outside `mask` zero. */
    return _mm512_maskz_mov_ps(mask, _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
}

/* convert.c's bf16_saturate on sixteen lanes: h (32-bit lanes, each a
 * bfloat16 pattern rounded from b) is 0x7f80 or 0xff80 from a finite b:
 * one less, the largest finite value of its sign. */
static AVX512 inline __m512i bf16_saturate16(__m512i b, __m512i h)
{
    const __m512i exp = _mm512_set1_epi32(0x7f800000);
    __mmask16 finite = _mm512_cmpneq_epi32_mask(_mm512_and_si512(b, exp), exp);
    __mmask16 at_inf = _mm512_cmpeq_epi32_mask(_mm512_and_si512(h, _mm512_set1_epi32(0x7fff)),
                                               _mm512_set1_epi32(0x7f80));
    return _mm512_mask_sub_epi32(h, finite & at_inf, h, _mm512_set1_epi32(1));
}

/* Finite lanes clamped to [-65504, 65504], float16's largest finite value,
 * so that vcvtps2ph saturates as mgpo_f32_to_f16 does; Inf and NaN lanes
 * unchanged (max/min return their second operand, x, for a NaN). */
static AVX512 inline __m512 f16_saturate16(__m512 x)
{
    const __m512 limit = _mm512_set1_ps(65504.0f);
    __m512 clamped = _mm512_min_ps(limit, _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), limit), x));
    __m512 magnitude = _mm512_abs_ps(x);
    __mmask16 inf = _mm512_cmp_ps_mask(magnitude, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(inf, clamped, x);
}

/* Round to nearest even into bfloat16, NaNs quieted, saturated (mgpo_f32_to_bf16),
 * as 32-bit lanes. */
static AVX512 inline __m512i bf16_nearest16(__m512 x)
{
    __m512i b = _mm512_castps_si512(x);
    __m512i high = _mm512_srli_epi32(b, 16);
    __m512i odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
    __m512i rounded =
        _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), odd), 16);
    __m512i quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_blend_epi32(nan, bf16_saturate16(b, rounded), quiet);
}

static AVX512 inline void store16(uint16_t *dst, __m256i h, __mmask16 mask)
{
    if (mask == FULL) _mm256_storeu_si256((__m256i *)(void *)dst, h);
    else _mm256_mask_storeu_epi16(dst, mask, h);
}

static AVX512 inline void typed_store16(void *dst, mgpo_dtype type, size_t i, __m512 x,
                                        __mmask16 mask)
{
    uint16_t *h = (uint16_t *)dst + i;
    switch (type) {
    case MGPO_DTYPE_FLOAT32: /* exact: no rounding to do */
        store((float *)dst + i, x, mask);
        return;
    case MGPO_DTYPE_BFLOAT16: store16(h, _mm512_cvtepi32_epi16(bf16_nearest16(x)), mask); return;
    case MGPO_DTYPE_FLOAT16:
        store16(h, _mm512_cvtps_ph(f16_saturate16(x), _MM_FROUND_TO_NEAREST_INT), mask);
        return;
    }
    /* Unknown type: its element size is unknown, so nothing is written
     * (as mgpo_kernel_store). */
}

static AVX512 void typed_load(float *dst, const void *src, mgpo_dtype type, size_t n,
                              float scale)
{
    const __m512 s = _mm512_set1_ps(scale);
#define LOAD(at, mask) store(dst + (at), _mm512_mul_ps(typed_load16(src, type, at, mask), s), mask)
    CHUNKS(n, LOAD);
#undef LOAD
}

static AVX512 void typed_store(void *dst, mgpo_dtype type, const float *src, size_t n)
{
#define STORE(at, mask) typed_store16(dst, type, at, load(src + (at), mask), mask)
    CHUNKS(n, STORE);
#undef STORE
}

static AVX512 void perturb_store(void *dst, mgpo_dtype type, const float *p, const float *m,
                                 float coefficient, size_t n)
{
    const __m512 c = _mm512_set1_ps(coefficient);
    /* p + c*m unfused, as mgpo_kernel_perturb. */
#define PSTORE(at, mask)                                                                  \
    typed_store16(dst, type, at,                                                          \
                  _mm512_add_ps(load(p + (at), mask), _mm512_mul_ps(c, load(m + (at), mask))), \
                  mask)
    CHUNKS(n, PSTORE);
#undef PSTORE
}

/* ---- Stochastic rounding ---------------------------------------------------
 * mgpo_random_bits with vpmullq: eight hashes per vector, each serving four
 * bfloat16 or two float16 elements as mgpo_store_stochastic specifies. */

static AVX512 inline __m512i mix8(__m512i x)
{
    x = _mm512_xor_si512(x, _mm512_srli_epi64(x, 30));
    x = _mm512_mullo_epi64(x, _mm512_set1_epi64((long long)UINT64_C(0xBF58476D1CE4E5B9)));
    x = _mm512_xor_si512(x, _mm512_srli_epi64(x, 27));
    x = _mm512_mullo_epi64(x, _mm512_set1_epi64((long long)UINT64_C(0x94D049BB133111EB)));
    return _mm512_xor_si512(x, _mm512_srli_epi64(x, 31));
}

/* mgpo_random_bits(key, index + k) for k = 0..7. */
static AVX512 inline __m512i bits8(uint64_t key, uint64_t index)
{
    __m512i i = _mm512_add_epi64(_mm512_set1_epi64((long long)index),
                                 _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    __m512i inner = mix8(_mm512_add_epi64(i, _mm512_set1_epi64((long long)MGPO_GOLDEN_GAMMA)));
    return mix8(_mm512_xor_si512(_mm512_set1_epi64((long long)key), inner));
}

/* Sixteen bfloat16 roundings with 16 random bits each (zero-extended). */
static AVX512 inline __m256i bf16_stochastic16(__m512 x, __m512i random)
{
    __m512i b = _mm512_castps_si512(x);
    __m512i up = bf16_saturate16(b, _mm512_srli_epi32(_mm512_add_epi32(b, random), 16));
    /* Inf and NaN round to nearest (exponent all ones). */
    __m512i exp = _mm512_and_si512(b, _mm512_set1_epi32(0x7f800000));
    __mmask16 special = _mm512_cmpeq_epi32_mask(exp, _mm512_set1_epi32(0x7f800000));
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(special, up, bf16_nearest16(x)));
}

/* Sixteen float16 roundings with 32 random bits each; false when a lane is
 * a float16 subnormal (|x| < 2^-14, not 0), which the scalar code handles. */
static AVX512 inline bool f16_stochastic16(__m512 x, __m512i random, __m256i *out)
{
    __m512i b = _mm512_castps_si512(x);
    __m512i a = _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff));
    __mmask16 small = _mm512_cmplt_epi32_mask(a, _mm512_set1_epi32(0x38800000));
    __mmask16 zero = _mm512_cmpeq_epi32_mask(a, _mm512_setzero_si512());
    if (small & ~zero) return false;
    __mmask16 special = _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7f7fffff));
    /* From 65504 on, saturated (mgpo_f32_to_f16_stochastic's clamp; the
     * special lanes are replaced below). */
    __m512i c = _mm512_min_epi32(a, _mm512_set1_epi32(0x477fe000));
    __m512i t = _mm512_and_si512(
        _mm512_add_epi32(c, _mm512_and_si512(random, _mm512_set1_epi32(0x1fff))),
        _mm512_set1_epi32(~0x1fff));
    t = _mm512_or_si512(t, _mm512_and_si512(b, _mm512_set1_epi32((int)0x80000000u)));
    /* 0 stays 0; Inf and NaN round to nearest. */
    __m512 v = _mm512_castsi512_ps(_mm512_mask_blend_epi32(special | zero, t, b));
    *out = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
    return true;
}

static AVX512 void store_stochastic(void *dst, mgpo_dtype type, const float *src, size_t n,
                                    uint64_t key, uint64_t first_index)
{
    uint16_t *h = dst;
    /* float32 and unknown types whole, and up to a hash boundary: the
     * portable code (the tail too, below). */
    size_t i = 0;
    if (!mgpo_store_stochastic_head(dst, type, src, n, key, first_index, &i)) return;
    if (type == MGPO_DTYPE_BFLOAT16) {
        for (; i + 32 <= n; i += 32) {
            __m512i r = bits8(key, (first_index + i) / 4); /* 32 x 16 bits, in order */
            __m256i lo = bf16_stochastic16(_mm512_loadu_ps(src + i),
                                           _mm512_cvtepu16_epi32(_mm512_castsi512_si256(r)));
            __m256i hi = bf16_stochastic16(_mm512_loadu_ps(src + i + 16),
                                           _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(r, 1)));
            store16(h + i, lo, FULL);
            store16(h + i + 16, hi, FULL);
        }
    } else { /* MGPO_DTYPE_FLOAT16 */
        for (; i + 16 <= n; i += 16) {
            __m512i r = bits8(key, (first_index + i) / 2); /* 16 x 32 bits, in order */
            __m256i out;
            if (f16_stochastic16(_mm512_loadu_ps(src + i), r, &out))
                store16(h + i, out, FULL);
            else
                mgpo_store_stochastic(h + i, type, src + i, 16, key, first_index + i);
        }
    }
    if (i < n) mgpo_store_stochastic(h + i, type, src + i, n - i, key, first_index + i);
}

/* ---- Mixed precision, fused ------------------------------------------------
 * The typed gradients are converted in registers and the rounded master is
 * stored right after the update: the same operations in the same order as
 * the portable composition (mgpo_kernel_sum_squares_typed,
 * mgpo_kernel_adamw_typed), so the same bits. */

/* Eight typed elements from index i in a ymm register, lanes outside
 * `mask` zero (as typed_load16, without a 512-bit extract: see lanes4). */
static AVX512 inline __m256 typed_load8(const void *src, mgpo_dtype type, size_t i, __mmask8 mask)
{
    const uint16_t *h = (const uint16_t *)src + i;
    __m128i x;
    switch (type) {
    case MGPO_DTYPE_FLOAT32: {
        const float *f = (const float *)src + i;
        return mask == 0xff ? _mm256_loadu_ps(f) : _mm256_maskz_loadu_ps(mask, f);
    }
    case MGPO_DTYPE_BFLOAT16:
    case MGPO_DTYPE_FLOAT16:
        x = mask == 0xff ? _mm_loadu_si128((const __m128i *)(const void *)h)
                         : _mm_maskz_loadu_epi16(mask, h);
        if (type == MGPO_DTYPE_FLOAT16) return _mm256_cvtph_ps(x);
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16));
    }
    /* Unknown type: fail closed as typed_load16; lanes outside `mask` zero. */
    return _mm256_maskz_mov_ps(mask, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)));
}

static AVX512 double sum_squares_typed(const void *x, mgpo_dtype type, size_t n, float scale)
{
    const __m256 s = _mm256_set1_ps(scale);
    lanes4 l = {{_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                 _mm256_setzero_pd()}};
    /* maskz: a masked-off lane is +0.0 even when scale is huge. */
#define SQT(at, mask)                                                                     \
    do {                                                                                  \
        __mmask8 lo_ = (__mmask8)(mask), hi_ = (__mmask8)((mask) >> 8);                   \
        add_squares8(&l.acc[0], _mm256_maskz_mul_ps(lo_, typed_load8(x, type, at, lo_), s)); \
        add_squares8(&l.acc[2],                                                           \
                     _mm256_maskz_mul_ps(hi_, typed_load8(x, type, (at) + 8, hi_), s));   \
    } while (0)
    CHUNKS(n, SQT);
#undef SQT
    return combine4(&l);
}

static AVX512 double adamw_typed(float *master, const void *grads, mgpo_dtype grad_type,
                                 float scale, float *m, float *v, void *out, mgpo_dtype out_type,
                                 const mgpo_typed_rounding *rounding, const mgpo_slot *slot,
                                 const mgpo_step_constants *s, size_t n)
{
    adamw_vectors k = adamw_constants(slot, s, 0.0f);
    const __m512 unscale = _mm512_set1_ps(scale);
    lanes l = no_lanes();
    /* Pieces of PIECE elements (a multiple of sixteen, so chunks keep their
     * lanes): update, then round the piece of master out while it is in L1. */
    enum { PIECE = 512 };
    for (size_t at = 0; at < n; at += PIECE) {
        const size_t len = n - at < PIECE ? n - at : PIECE;
        float *pm = master + at, *pmo = m + at, *pv = v + at;
#define STEP(j, mask)                                                                     \
    adamw16(pm + (j), pm + (j),                                                           \
            _mm512_maskz_mul_ps(mask, typed_load16(grads, grad_type, at + (j), mask), unscale), \
            pmo + (j), pv + (j), &k, &l, mask, 0, NULL, at + (j))
        CHUNKS(len, STEP);
#undef STEP
        if (rounding->stochastic) {
            store_stochastic((unsigned char *)out + at * mgpo_dtype_size(out_type), out_type, pm,
                             len, rounding->key,
                             rounding->first_index + at);
        } else {
#define ROUND(j, mask) typed_store16(out, out_type, at + (j), load(pm + (j), mask), mask)
            CHUNKS(len, ROUND);
#undef ROUND
        }
    }
    return combine(&l);
}

static const mgpo_kernels avx512 = {
    .name = "avx512",
    .sum_squares = sum_squares,
    .perturb = perturb,
    .unperturb = unperturb,
    .copy = copy,
    .perturb_exact = perturb_exact,
    .restore_exact = restore_exact,
    .adamw = adamw,
    .sgd = sgd,
    .load = typed_load,
    .store = typed_store,
    .perturb_store = perturb_store,
    .store_stochastic = store_stochastic,
    .sum_squares_typed = sum_squares_typed,
    .adamw_typed = adamw_typed,
};

const mgpo_kernels *mgpo_kernels_avx512(void)
{
    return mgpo_cpu_has_avx512() ? &avx512 : NULL;
}

#else

const mgpo_kernels *mgpo_kernels_avx512(void) { return NULL; }

#endif
