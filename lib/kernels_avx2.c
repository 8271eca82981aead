/* The elementwise kernels with AVX2 and FMA intrinsics, chosen at run time
 * (the CPU must have both).
 *
 * Same operations, same order and same rounding as kernels.c: a fused
 * multiply-add exactly where kernels.c calls fmaf(), and nowhere else (the
 * library is built with -ffp-contract=off), and the momentum norm uses the
 * same sixteen double lanes: vector element k of a chunk starting at index i
 * is lane (i mod 16) + k, kept in four vectors of four.  The squares are
 * accumulated with FMA: a product of two floats is exact in double, so
 * fma(a, a, s) rounds once, as s + a*a does.  tests/test_kernels.c checks
 * every kernel and whole iterations bit for bit against the portable ones.
 *
 * A tail shorter than eight runs the same vector code with masked loads and
 * stores; the masked-off elements are zeros, which add +0.0 to their lanes
 * and so leave the sums' bits unchanged.  A value summed that is computed
 * from them by a constant that may be huge (SGD's wd*p) is masked to +0.0
 * before it is summed, so the tail lanes stay neutral for every constant.
 *
 * The exact-mode kernels (perturb_exact, restore_exact and the step's
 * exception reader) keep a tensor's restore information as an exception list
 * (internal.h, MGPO_FULL_BACKUP) and work in place.  For a state too large
 * for the caches (mgpo_slot.stream), the plain-copy fallback writes buffers
 * that are not read in the same pass with streaming stores, which skip the
 * read of the destination line: the copy in perturb, and the parameters in an
 * explicit restore from a copy (docs/performance.md).  Streaming stores need
 * 16-byte alignment: the library's buffers have it, a caller's buffer that
 * lacks it gets ordinary stores. */
#include "internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(MGPO_PORTABLE_ONLY)

#include <immintrin.h>

#include "convert_avx2.h"
#include "cpu_x86.h"
#include <stdint.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,fma")))

/* Whether a step that reads the clean values from a plain copy streams its
 * parameter stores too.  It saves the read of each line in theory, but on
 * the machine measured it made that step slower (docs/performance.md), so it
 * is off; kept switchable at build time for other machines. */
#ifndef MGPO_STREAM_STEP_PARAMS
#define MGPO_STREAM_STEP_PARAMS 0
#endif

/* Lanes k of mask are set for k < count (count <= 8). */
static AVX2 inline __m256i tail_mask(size_t count)
{
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), index);
}

static AVX2 inline __m256 load(const float *p, const __m256i *mask)
{
    return mask ? _mm256_maskload_ps(p, *mask) : _mm256_loadu_ps(p);
}

static AVX2 inline void store(float *p, __m256 x, const __m256i *mask)
{
    if (mask) _mm256_maskstore_ps(p, *mask, x);
    else _mm256_storeu_ps(p, x);
}

/* 2: 32-byte aligned, 1: 16-byte aligned (two half stores), 0: no streaming.
 * Chunks advance by 32 bytes, so the alignment of the start holds for all. */
static inline int stream_mode(const float *p, bool want)
{
    uintptr_t a = (uintptr_t)p;
    if (!want) return 0;
    return (a & 31u) == 0 ? 2 : (a & 15u) == 0 ? 1 : 0;
}

static AVX2 inline void store_out(float *p, __m256 x, const __m256i *mask, int stream)
{
    if (mask || stream == 0) {
        store(p, x, mask);
    } else if (stream == 2) {
        _mm256_stream_ps(p, x);
    } else {
        _mm_stream_ps(p, _mm256_castps256_ps128(x));
        _mm_stream_ps(p + 4, _mm256_extractf128_ps(x, 1));
    }
}

/* The sixteen lanes: acc[0] holds lanes 0..3, ..., acc[3] lanes 12..15.
 * The chunk at index i adds to acc[0..1] or, when i mod 16 is 8, acc[2..3]. */
typedef struct lanes {
    __m256d acc[4];
} lanes;

/* acc2 points at acc[0] or acc[2]; loops pass a constant one so that the
 * lanes stay in registers. */
static AVX2 inline void add_squares(__m256d *acc2, __m256 x)
{
    __m256d *lo = acc2, *hi = acc2 + 1;
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    *lo = _mm256_fmadd_pd(a, a, *lo);
    *hi = _mm256_fmadd_pd(b, b, *hi);
}

static AVX2 inline lanes no_lanes(void)
{
    lanes l;
    for (int k = 0; k < 4; k++) l.acc[k] = _mm256_setzero_pd();
    return l;
}

static AVX2 inline double combine(const lanes *l)
{
    double lane[MGPO_LANES];
    for (int k = 0; k < 4; k++) _mm256_storeu_pd(lane + 4 * k, l->acc[k]);
    return mgpo_combine_lanes16(lane);
}

static AVX2 double sum_squares(const float *x, size_t n)
{
    lanes l = no_lanes();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        add_squares(&l.acc[0], _mm256_loadu_ps(x + i));
        add_squares(&l.acc[2], _mm256_loadu_ps(x + i + 8));
    }
    if (i + 8 <= n) {
        add_squares(&l.acc[0], _mm256_loadu_ps(x + i));
        i += 8;
    }
    if (i < n) {
        __m256i mask = tail_mask(n - i);
        add_squares(&l.acc[i & 8 ? 2 : 0], load(x + i, &mask));
    }
    return combine(&l);
}

static AVX2 void perturb(float *params, float *backup, const float *m, float coefficient,
                         size_t n, bool want_stream)
{
    const __m256 c = _mm256_set1_ps(coefficient);
    size_t i = 0;
    int stream = backup ? stream_mode(backup, want_stream) : 0;
    for (; i + 8 <= n; i += 8) {
        __m256 p = _mm256_loadu_ps(params + i);
        if (backup) store_out(backup + i, p, NULL, stream);
        _mm256_storeu_ps(params + i, _mm256_add_ps(p, _mm256_mul_ps(c, _mm256_loadu_ps(m + i))));
    }
    if (i < n) {
        __m256i mask = tail_mask(n - i);
        __m256 p = load(params + i, &mask);
        if (backup) store(backup + i, p, &mask);
        store(params + i, _mm256_add_ps(p, _mm256_mul_ps(c, load(m + i, &mask))), &mask);
    }
    /* Order the streaming stores before whatever reads the backup next. */
    if (stream) _mm_sfence();
}

static AVX2 void unperturb(float *params, const float *m, float coefficient, size_t n)
{
    const __m256 c = _mm256_set1_ps(coefficient);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(params + i, _mm256_sub_ps(_mm256_loadu_ps(params + i),
                                                   _mm256_mul_ps(c, _mm256_loadu_ps(m + i))));
    if (i < n) {
        __m256i mask = tail_mask(n - i);
        store(params + i,
              _mm256_sub_ps(load(params + i, &mask), _mm256_mul_ps(c, load(m + i, &mask))),
              &mask);
    }
}

static AVX2 void copy(float *dst, const float *src, size_t n, bool want_stream)
{
    int stream = stream_mode(dst, want_stream);
    if (!stream) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    size_t i = 0;
    for (; i + 8 <= n; i += 8) store_out(dst + i, _mm256_loadu_ps(src + i), NULL, stream);
    for (; i < n; i++) dst[i] = src[i];
    _mm_sfence();
}

/* Replaces the listed elements of chunk `base` (`count` <= 8 elements). */
static AVX2 inline __m256 apply_exceptions8(mgpo_exception_reader *r, __m256 x, size_t base,
                                            size_t count)
{
    if (mgpo_next_listed(r) >= base + count) return x;
    float lane[8];
    _mm256_storeu_ps(lane, x);
    mgpo_apply_exceptions(r, lane, base, count);
    return _mm256_loadu_ps(lane);
}

/* The vector form of kernels.c's restore_exact_prefix, in place. */
static AVX2 void restore_exact_prefix(float *params, const float *backup, const float *m,
                                      float coefficient, size_t n, size_t count)
{
    mgpo_exception_reader r = mgpo_exceptions_of(backup, n);
    const __m256 c = _mm256_set1_ps(coefficient);
    size_t i = 0, listed_at = mgpo_next_listed(&r);
    for (; i + 8 <= count; i += 8) {
        __m256 x = _mm256_sub_ps(_mm256_loadu_ps(params + i),
                                 _mm256_mul_ps(c, _mm256_loadu_ps(m + i)));
        if (listed_at < i + 8) {
            x = apply_exceptions8(&r, x, i, 8);
            listed_at = mgpo_next_listed(&r);
        }
        _mm256_storeu_ps(params + i, x);
    }
    if (i < count) {
        __m256i mask = tail_mask(count - i);
        __m256 x = _mm256_sub_ps(load(params + i, &mask), _mm256_mul_ps(c, load(m + i, &mask)));
        store(params + i, apply_exceptions8(&r, x, i, count - i), &mask);
    }
}

static AVX2 void restore_exact(float *params, const float *backup, const float *m,
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
static AVX2 inline bool perturb_exact8(float *params, const float *m, __m256 c, size_t base,
                                       const __m256i *mask, size_t count, uint16_t *index,
                                       float *value, size_t capacity, size_t *used)
{
    __m256 p = load(params + base, mask);
    __m256 b = _mm256_mul_ps(c, load(m + base, mask));
    __m256 t = _mm256_add_ps(p, b);
    __m256 r = _mm256_sub_ps(t, b);
    __m256i same = _mm256_cmpeq_epi32(_mm256_castps_si256(p), _mm256_castps_si256(r));
    if (_mm256_movemask_ps(_mm256_castsi256_ps(same)) != 0xff) {
        float pl[8], rl[8];
        _mm256_storeu_ps(pl, p);
        _mm256_storeu_ps(rl, r);
        if (!list_exceptions(pl, rl, base, count, index, value, capacity, used)) return false;
    }
    store(params + base, t, mask);
    return true;
}

static AVX2 uint32_t perturb_exact(float *params, float *backup, const float *m,
                                   float coefficient, size_t n)
{
    uint16_t *index = (uint16_t *)(void *)(backup + 1);
    float *value = backup + mgpo_exception_value_offset(n);
    size_t capacity = mgpo_exception_capacity(n), used = 0;
    const __m256 c = _mm256_set1_ps(coefficient);
    size_t i = 0;
    bool fits = true;
    for (; fits && i + 8 <= n; i += 8)
        fits = perturb_exact8(params, m, c, i, NULL, 8, index, value, capacity, &used);
    if (fits && i < n) {
        __m256i mask = tail_mask(n - i);
        fits = perturb_exact8(params, m, c, i, &mask, n - i, index, value, capacity, &used);
        i += 8;
    }
    uint32_t count = (uint32_t)used;
    memcpy(backup, &count, sizeof count);
    if (fits) return count;
    restore_exact_prefix(params, backup, m, coefficient, n, i - 8);
    count = MGPO_FULL_BACKUP;
    memcpy(backup, &count, sizeof count);
    return count;
}

typedef struct adamw_vectors {
    __m256 decay, step, grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2,
        inv_bias2_sqrt, eps, undo;
    bool has_undo;
} adamw_vectors;

/* One chunk of eight, in kernels.c's order: see mgpo_kernel_adamw. */
/* The per-step constants of a block as vectors. */
static AVX2 inline adamw_vectors adamw_constants(const mgpo_slot *slot,
                                                 const mgpo_step_constants *s, float undo)
{
    adamw_vectors k;
    k.decay = _mm256_set1_ps(slot->k_decay);
    k.step = _mm256_set1_ps(slot->k_step);
    k.grad_scale = _mm256_set1_ps(s->grad_scale);
    k.beta1 = _mm256_set1_ps(s->beta1);
    k.one_minus_beta1 = _mm256_set1_ps(s->one_minus_beta1);
    k.beta2 = _mm256_set1_ps(s->beta2);
    k.one_minus_beta2 = _mm256_set1_ps(s->one_minus_beta2);
    k.inv_bias2_sqrt = _mm256_set1_ps(s->inv_bias2_sqrt);
    k.eps = _mm256_set1_ps(s->eps);
    k.undo = _mm256_set1_ps(undo);
    k.has_undo = undo != 0.0f;
    return k;
}

/* One chunk of eight from the gradient vector `raw` (before clipping);
 * returns the new parameters it stored. */
static AVX2 inline __m256 adamw8_from(float *params, const float *src, __m256 raw, float *m,
                                      float *v, const adamw_vectors *k, __m256d *acc2,
                                      const __m256i *mask, int stream,
                                      mgpo_exception_reader *exact, size_t base, size_t count)
{
    __m256 g = _mm256_mul_ps(raw, k->grad_scale);
    __m256 mo = load(m, mask);
    __m256 p = load(src, mask);
    if (k->has_undo) p = _mm256_sub_ps(p, _mm256_mul_ps(k->undo, mo));
    if (exact) p = apply_exceptions8(exact, p, base, count);
    p = _mm256_mul_ps(p, k->decay);
    __m256 mi = _mm256_fmadd_ps(mo, k->beta1, _mm256_mul_ps(k->one_minus_beta1, g));
    __m256 vi = _mm256_fmadd_ps(load(v, mask), k->beta2,
                                _mm256_mul_ps(_mm256_mul_ps(k->one_minus_beta2, g), g));
    __m256 denom = _mm256_fmadd_ps(_mm256_sqrt_ps(vi), k->inv_bias2_sqrt, k->eps);
    /* (step * m) / denom: torch's order, kept finite by the lr bounds. */
    p = _mm256_add_ps(p, _mm256_div_ps(_mm256_mul_ps(k->step, mi), denom));
    store_out(params, p, mask, stream);
    store(m, mi, mask);
    store(v, vi, mask);
    add_squares(acc2, mi);
    return p;
}

static AVX2 inline void adamw8(float *params, const float *src, const float *grads,
                               float *m, float *v, const adamw_vectors *k, __m256d *acc2,
                               const __m256i *mask, int stream,
                               mgpo_exception_reader *exact, size_t base, size_t count)
{
    adamw8_from(params, src, load(grads, mask), m, v, k, acc2, mask, stream, exact, base, count);
}

static AVX2 double adamw(float *params, const float *src, const float *grads, float *m,
                         float *v, const mgpo_slot *slot, const mgpo_step_constants *s,
                         size_t n, float undo, mgpo_exception_reader *exact)
{
    adamw_vectors k = adamw_constants(slot, s, undo);
    /* In place, params were just read: their lines are cached already. */
    int stream = stream_mode(params, MGPO_STREAM_STEP_PARAMS && slot->stream && src != params);
    lanes l = no_lanes();
    size_t i = 0, listed_at = exact ? mgpo_next_listed(exact) : SIZE_MAX;
    /* Two chunks per turn, each with its own pair of lane vectors: constant
     * indices, so that the lanes stay in registers. */
#define ADAMW_AT(at, pair, mask, stream, count)                                           \
    do {                                                                                  \
        mgpo_exception_reader *patch = listed_at < (at) + 8 ? exact : NULL;               \
        adamw8(params + (at), src + (at), grads + (at), m + (at), v + (at), &k,           \
               &l.acc[pair], mask, stream, patch, at, count);                             \
        if (patch) listed_at = mgpo_next_listed(exact);                                   \
    } while (0)
    for (; i + 16 <= n; i += 16) {
        ADAMW_AT(i, 0, NULL, stream, 8);
        ADAMW_AT(i + 8, 2, NULL, stream, 8);
    }
    if (i + 8 <= n) {
        ADAMW_AT(i, 0, NULL, stream, 8);
        i += 8;
    }
    if (i < n) {
        __m256i mask = tail_mask(n - i);
        if (i & 8) ADAMW_AT(i, 2, &mask, 0, n - i);
        else ADAMW_AT(i, 0, &mask, 0, n - i);
    }
#undef ADAMW_AT
    if (stream) _mm_sfence();
    return combine(&l);
}

typedef struct sgd_vectors {
    __m256 wd, neg_lr, grad_scale, momentum, one_minus_dampening, undo;
    bool decay, restart, plain, nesterov, has_undo;
} sgd_vectors;

/* One chunk of eight, in kernels.c's order: see mgpo_kernel_sgd. */
static AVX2 inline void sgd8(float *params, const float *src, const float *grads, float *m,
                             const sgd_vectors *k, __m256d *acc2, const __m256i *mask, int stream, mgpo_exception_reader *exact,
                             size_t base, size_t count)
{
    __m256 p = load(src, mask);
    __m256 mo = k->restart && !k->has_undo ? _mm256_setzero_ps() : load(m, mask);
    if (k->has_undo) p = _mm256_sub_ps(p, _mm256_mul_ps(k->undo, mo));
    if (exact) p = apply_exceptions8(exact, p, base, count);
    __m256 d = _mm256_mul_ps(load(grads, mask), k->grad_scale);
    if (k->decay) d = _mm256_fmadd_ps(k->wd, p, d);
    __m256 b = k->restart ? d
                          : _mm256_fmadd_ps(mo, k->momentum,
                                            _mm256_mul_ps(k->one_minus_dampening, d));
    __m256 dir = k->plain ? d : k->nesterov ? _mm256_fmadd_ps(k->momentum, b, d) : b;
    store_out(params, _mm256_fmadd_ps(k->neg_lr, dir, p), mask, stream);
    store(m, b, mask);
    /* Masked-off lanes: 0 * wd is NaN when wd is Inf in float. */
    if (mask) b = _mm256_and_ps(b, _mm256_castsi256_ps(*mask));
    add_squares(acc2, b);
}

static AVX2 double sgd(float *params, const float *src, const float *grads, float *m,
                       const mgpo_slot *slot, const mgpo_step_constants *s, size_t n,
                       float undo, mgpo_exception_reader *exact)
{
    sgd_vectors k;
    k.wd = _mm256_set1_ps(slot->k_decay);
    k.neg_lr = _mm256_set1_ps(slot->k_lr);
    k.grad_scale = _mm256_set1_ps(s->grad_scale);
    k.momentum = _mm256_set1_ps(s->momentum);
    k.one_minus_dampening = _mm256_set1_ps(s->one_minus_dampening);
    k.decay = slot->k_decay != 0.0f;
    k.plain = s->momentum == 0.0f;
    k.restart = s->first || k.plain;
    k.nesterov = s->nesterov;
    k.undo = _mm256_set1_ps(undo);
    k.has_undo = undo != 0.0f;
    int stream = stream_mode(params, MGPO_STREAM_STEP_PARAMS && slot->stream && src != params);
    lanes l = no_lanes();
    size_t i = 0, listed_at = exact ? mgpo_next_listed(exact) : SIZE_MAX;
#define SGD_AT(at, pair, mask, stream, count)                                             \
    do {                                                                                  \
        mgpo_exception_reader *patch = listed_at < (at) + 8 ? exact : NULL;               \
        sgd8(params + (at), src + (at), grads + (at), m + (at), &k, &l.acc[pair], mask,   \
             stream, patch, at, count);                                                   \
        if (patch) listed_at = mgpo_next_listed(exact);                                   \
    } while (0)
    for (; i + 16 <= n; i += 16) {
        SGD_AT(i, 0, NULL, stream, 8);
        SGD_AT(i + 8, 2, NULL, stream, 8);
    }
    if (i + 8 <= n) {
        SGD_AT(i, 0, NULL, stream, 8);
        i += 8;
    }
    if (i < n) {
        __m256i mask = tail_mask(n - i);
        if (i & 8) SGD_AT(i, 2, &mask, 0, n - i);
        else SGD_AT(i, 0, &mask, 0, n - i);
    }
#undef SGD_AT
    if (stream) _mm_sfence();
    return combine(&l);
}

/* ---- Mixed precision, fused (AVX2 + F16C) -----------------------------------
 * The typed gradients are converted in registers and the rounded master is
 * stored right after the update, instead of passes through scratch blocks:
 * the same operations in the same order as the portable composition
 * (mgpo_kernel_sum_squares_typed, mgpo_kernel_adamw_typed), so the same
 * bits.  Tails (under eight elements) go through a small buffer. */

static MGPO_F16C double sum_squares_typed(const void *x, mgpo_dtype type, size_t n, float scale)
{
    const __m256 s = _mm256_set1_ps(scale);
    lanes l = no_lanes();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        add_squares(&l.acc[0], _mm256_mul_ps(typed_load8(x, type, i), s));
        add_squares(&l.acc[2], _mm256_mul_ps(typed_load8(x, type, i + 8), s));
    }
    if (i + 8 <= n) {
        add_squares(&l.acc[0], _mm256_mul_ps(typed_load8(x, type, i), s));
        i += 8;
    }
    if (i < n) {
        float tail[8];
        mgpo_kernel_load(tail, (const unsigned char *)x + i * mgpo_dtype_size(type), type, n - i,
                         scale);
        __m256i mask = tail_mask(n - i);
        add_squares(&l.acc[i & 8 ? 2 : 0], load(tail, &mask));
    }
    return combine(&l);
}

static MGPO_F16C double adamw_typed(float *master, const void *grads, mgpo_dtype grad_type,
                                    float scale, float *m, float *v, void *out,
                                    mgpo_dtype out_type, const mgpo_typed_rounding *rounding,
                                    const mgpo_slot *slot, const mgpo_step_constants *s,
                                    size_t n)
{
    adamw_vectors k = adamw_constants(slot, s, 0.0f);
    const __m256 unscale = _mm256_set1_ps(scale);
    lanes l = no_lanes();
    /* Pieces of PIECE elements: convert the gradients, update, round the
     * master out, each piece's arrays staying in L1.  The lane pairs follow
     * the global index as in adamw (PIECE is a multiple of 16). */
    enum { PIECE = 512 };
    float g[PIECE];
    const size_t whole = n & ~(size_t)7;
    size_t i = 0;
    for (size_t at = 0; at < whole; at += PIECE) {
        const size_t len = whole - at < PIECE ? whole - at : PIECE;
        float *pm = master + at, *pmo = m + at, *pv = v + at;
        for (size_t j = 0; j < len; j += 8)
            _mm256_storeu_ps(g + j, _mm256_mul_ps(typed_load8(grads, grad_type, at + j), unscale));
        size_t j = 0;
        for (; j + 16 <= len; j += 16) {
            adamw8_from(pm + j, pm + j, _mm256_loadu_ps(g + j), pmo + j, pv + j, &k, &l.acc[0],
                        NULL, 0, NULL, at + j, 8);
            adamw8_from(pm + j + 8, pm + j + 8, _mm256_loadu_ps(g + j + 8), pmo + j + 8,
                        pv + j + 8, &k, &l.acc[2], NULL, 0, NULL, at + j + 8, 8);
        }
        if (j < len) /* the last piece's final eight */
            adamw8_from(pm + j, pm + j, _mm256_loadu_ps(g + j), pmo + j, pv + j, &k, &l.acc[0],
                        NULL, 0, NULL, at + j, 8);
        if (rounding->stochastic)
            mgpo_avx2_store_stochastic((unsigned char *)out + at * mgpo_dtype_size(out_type), out_type,
                                       pm, len, rounding->key,
                                       rounding->first_index + at);
        else
            for (j = 0; j < len; j += 8)
                typed_store8(out, out_type, at + j, _mm256_loadu_ps(pm + j));
    }
    i = whole;
    if (i < n) {
        const size_t gs = mgpo_dtype_size(grad_type), os = mgpo_dtype_size(out_type);
        mgpo_kernel_load(g, (const unsigned char *)grads + i * gs, grad_type, n - i, scale);
        __m256i mask = tail_mask(n - i);
        adamw8(master + i, master + i, g, m + i, v + i, &k, &l.acc[i & 8 ? 2 : 0], &mask, 0, NULL,
               i, n - i);
        if (rounding->stochastic)
            mgpo_store_stochastic((unsigned char *)out + i * os, out_type, master + i, n - i,
                                  rounding->key, rounding->first_index + i);
        else
            mgpo_kernel_store((unsigned char *)out + i * os, out_type, master + i, n - i);
    }
    return combine(&l);
}

static const mgpo_kernels avx2 = {
    .name = "avx2",
    .sum_squares = sum_squares,
    .perturb = perturb,
    .unperturb = unperturb,
    .copy = copy,
    .perturb_exact = perturb_exact,
    .restore_exact = restore_exact,
    .adamw = adamw,
    .sgd = sgd,
    .load = mgpo_avx2_load,
    .store = mgpo_avx2_store,
    .perturb_store = mgpo_avx2_perturb_store,
    .store_stochastic = mgpo_avx2_store_stochastic,
    .sum_squares_typed = sum_squares_typed,
    .adamw_typed = adamw_typed,
};

const mgpo_kernels *mgpo_kernels_avx2(void)
{
    return mgpo_cpu_has_avx2() ? &avx2 : NULL;
}

#else

const mgpo_kernels *mgpo_kernels_avx2(void) { return NULL; }

#endif
