/* The bandwidth references (bandwidth_ref.h).  The loops are written with
 * intrinsics under function-level target attributes, so the program needs
 * no -march and still runs the widest vectors the CPU has. */
#define _POSIX_C_SOURCE 200809L
#define _ISOC11_SOURCE
#include "bandwidth_ref.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BW_X86 1
#define T512 __attribute__((target("avx512f")))
#define T256 __attribute__((target("avx2,fma")))
#else
#define BW_X86 0
#endif

static const char *const names[BW_KINDS] = {"triad", "triad_nt", "update", "memcpy"};
static const double bytes[BW_KINDS] = {12, 12, 28, 8};

const char *bw_name(int kind) { return kind >= 0 && kind < BW_KINDS ? names[kind] : "?"; }
double bw_bytes(int kind) { return kind >= 0 && kind < BW_KINDS ? bytes[kind] : 0.0; }

static int isa_level(void)
{
#if BW_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

const char *bw_isa(void)
{
    static const char *const isa[] = {"scalar", "avx2", "avx512"};
    return isa[isa_level()];
}

/* ---- the loops over one thread's slice (n a multiple of 16, 64-byte
 * aligned starts) ---------------------------------------------------------- */

static void triad_c(float *a, const float *b, const float *c, float s, size_t n)
{
    for (size_t i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

static void update_c(float *p, const float *g, float *m, float *v, float s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        p[i] += s * gi;
        m[i] += gi;
        v[i] += gi * gi;
    }
}

#if BW_X86
static T512 void triad_512(float *a, const float *b, const float *c, float s, size_t n, int nt)
{
    const __m512 k = _mm512_set1_ps(s);
    for (size_t i = 0; i < n; i += 16) {
        __m512 x = _mm512_add_ps(_mm512_load_ps(b + i), _mm512_mul_ps(k, _mm512_load_ps(c + i)));
        if (nt) _mm512_stream_ps(a + i, x);
        else _mm512_store_ps(a + i, x);
    }
    if (nt) _mm_sfence();
}

static T512 void update_512(float *p, const float *g, float *m, float *v, float s, size_t n)
{
    const __m512 k = _mm512_set1_ps(s);
    for (size_t i = 0; i < n; i += 16) {
        __m512 gi = _mm512_load_ps(g + i);
        _mm512_store_ps(p + i, _mm512_add_ps(_mm512_load_ps(p + i), _mm512_mul_ps(k, gi)));
        _mm512_store_ps(m + i, _mm512_add_ps(_mm512_load_ps(m + i), gi));
        _mm512_store_ps(v + i, _mm512_add_ps(_mm512_load_ps(v + i), _mm512_mul_ps(gi, gi)));
    }
}

static T256 void triad_256(float *a, const float *b, const float *c, float s, size_t n, int nt)
{
    const __m256 k = _mm256_set1_ps(s);
    for (size_t i = 0; i < n; i += 8) {
        __m256 x = _mm256_add_ps(_mm256_load_ps(b + i), _mm256_mul_ps(k, _mm256_load_ps(c + i)));
        if (nt) _mm256_stream_ps(a + i, x);
        else _mm256_store_ps(a + i, x);
    }
    if (nt) _mm_sfence();
}

static T256 void update_256(float *p, const float *g, float *m, float *v, float s, size_t n)
{
    const __m256 k = _mm256_set1_ps(s);
    for (size_t i = 0; i < n; i += 8) {
        __m256 gi = _mm256_load_ps(g + i);
        _mm256_store_ps(p + i, _mm256_add_ps(_mm256_load_ps(p + i), _mm256_mul_ps(k, gi)));
        _mm256_store_ps(m + i, _mm256_add_ps(_mm256_load_ps(m + i), gi));
        _mm256_store_ps(v + i, _mm256_add_ps(_mm256_load_ps(v + i), _mm256_mul_ps(gi, gi)));
    }
}
#endif

typedef struct arrays {
    size_t n;
    float *x[4];
} arrays;

/* One run of `kind` on the thread's slice [begin, end). */
static void slice(int kind, int isa, arrays *a, size_t begin, size_t end)
{
    size_t n = end - begin;
    float *x0 = a->x[0] + begin, *x1 = a->x[1] + begin, *x2 = a->x[2] + begin,
          *x3 = a->x[3] + begin;
    /* Scales that keep the values bounded over many runs. */
    const float s = 1e-7f;
    switch (kind) {
    case BW_TRIAD:
    case BW_TRIAD_NT:
#if BW_X86
        if (isa == 2) triad_512(x0, x1, x2, s, n, kind == BW_TRIAD_NT);
        else if (isa == 1) triad_256(x0, x1, x2, s, n, kind == BW_TRIAD_NT);
        else
#endif
            triad_c(x0, x1, x2, s, n);
        break;
    case BW_UPDATE:
#if BW_X86
        if (isa == 2) update_512(x0, x1, x2, x3, s, n);
        else if (isa == 1) update_256(x0, x1, x2, x3, s, n);
        else
#endif
            update_c(x0, x1, x2, x3, s, n);
        break;
    case BW_MEMCPY: memcpy(x0, x1, n * sizeof(float)); break;
    default: break;
    }
}

/* Every thread takes an equal slice, a multiple of 16 floats. */
static void run(int kind, int isa, arrays *a, int threads)
{
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        size_t t = (size_t)omp_get_thread_num(), count = (size_t)omp_get_num_threads();
        size_t per = (a->n / count + 15) / 16 * 16;
        size_t begin = t * per < a->n ? t * per : a->n;
        size_t end = begin + per < a->n ? begin + per : a->n;
        if (begin < end) slice(kind, isa, a, begin, end);
    }
#else
    (void)threads;
    slice(kind, isa, a, 0, a->n);
#endif
}

double bw_measure(int kind, size_t n, int threads, int reps)
{
    arrays a;
    a.n = (n + 15) / 16 * 16;
    for (int k = 0; k < 4; k++) {
        a.x[k] = aligned_alloc(64, a.n * sizeof(float));
        if (!a.x[k]) {
            fprintf(stderr, "bandwidth_ref: out of memory for %zu floats\n", a.n);
            exit(EXIT_FAILURE);
        }
    }
    /* First touch by the threads that use each slice. */
    long count = (long)a.n;
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
    for (long i = 0; i < count; i++)
        for (int k = 0; k < 4; k++) a.x[k][i] = 1.0f + (float)(i & 255) * 1e-3f;
    int isa = isa_level();
    for (int w = 0; w < 2; w++) run(kind, isa, &a, threads);
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        run(kind, isa, &a, threads);
        double dt = bench_now() - t0;
        if (dt < best) best = dt;
    }
    for (int k = 0; k < 4; k++) free(a.x[k]);
    return bytes[kind] * (double)a.n / best / 1e9;
}
