/* The examples' shared helpers: deterministic random numbers and the two
 * small dense kernels their hand-written forward and backward passes use.
 * Header-only (static functions), so each example stays one program. */
#ifndef MGPO_EXAMPLE_MATH_H
#define MGPO_EXAMPLE_MATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Deterministic random numbers (splitmix64), one stream per purpose ---- */

typedef struct { uint64_t s; } Rng;

static inline Rng rng_stream(uint64_t seed, uint64_t stream)
{
    Rng r = {seed * 0x9E3779B97F4A7C15ull ^ (stream + 1) * 0xD1B54A32D192ED03ull};
    return r;
}
static inline uint64_t rng_next(Rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double rng_uniform(Rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }
static inline float rng_normal(Rng *r)
{
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2));
}
static inline void fill_normal(Rng *r, float *p, size_t n, float std)
{
    for (size_t i = 0; i < n; i++) p[i] = std * rng_normal(r);
}

/* ---- Small dense kernels ------------------------------------------------ */

/* Eight independent partial sums: the compiler can keep them in one SIMD
 * register (a single running sum is a serial dependency it may not reorder). */
static inline float dot(const float *a, const float *b, int n)
{
    float part[8] = {0.0f}, s = 0.0f;
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) part[j] += a[k + j] * b[k + j];
    for (; k < n; k++) s += a[k] * b[k];
    return s + ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}
static inline void axpy(float *y, float a, const float *x, int n)
{
    for (int k = 0; k < n; k++) y[k] += a * x[k];
}

#endif
