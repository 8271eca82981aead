/* The two transcendental values the library needs, computed with IEEE
 * additions and multiplications only, in a fixed order, so that they have
 * the same bits on every platform (libm's pow and cos may round differently
 * from one C library or architecture to the next, e.g. where they use fused
 * multiply-adds).  The library is built with -ffp-contract=off, so the
 * compiler cannot fuse these operations either.  docs/performance.md, "Same
 * bits everywhere". */
#include "internal.h"

/* Exponentiation by squaring: at most 2 * 64 rounded multiplications.  Each
 * squaring doubles the relative error, so the result is within about 2n
 * rounding units of x^n; the bias correction 1 - beta^t, which the library
 * rounds to float, moves by at most t * beta^t * 2^-52 (below 1e-13 for
 * beta = 0.999 at any t), far below float's rounding (tests/test_schedule.c
 * bounds both). */
double mgpo_pow_u64(double x, uint64_t n)
{
    double result = 1.0;
    while (n) {
        if (n & 1u) result *= x;
        n >>= 1;
        if (n) x *= x;
    }
    return result;
}

/* Taylor polynomials of cos(z) and sin(z) for |z| <= pi/4, to the term of
 * z^16 and z^17: the first omitted term is below 2^-58 relative. */
static double cos_poly(double z)
{
    double z2 = z * z, p = 1.0 / 20922789888000.0; /* 1/16! */
    static const double c[] = {-1.0 / 87178291200.0, 1.0 / 479001600.0, -1.0 / 3628800.0,
                               1.0 / 40320.0,        -1.0 / 720.0,      1.0 / 24.0,
                               -1.0 / 2.0,           1.0};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) p = p * z2 + c[i];
    return p;
}

static double sin_poly(double z)
{
    double z2 = z * z, p = 1.0 / 355687428096000.0; /* 1/17! */
    static const double c[] = {-1.0 / 1307674368000.0, 1.0 / 6227020800.0, -1.0 / 39916800.0,
                               1.0 / 362880.0,         -1.0 / 5040.0,      1.0 / 120.0,
                               -1.0 / 6.0,             1.0};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) p = p * z2 + c[i];
    return p * z;
}

/* cos(pi * x) for x in [0, 1], within a few ulp; exactly 1, 0 and -1 at
 * x = 0, 1/2 and 1.  The reductions 1 - x and 1/2 - x are exact (Sterbenz),
 * so only the product by pi and the polynomial round. */
double mgpo_cos_pi(double x)
{
    const double pi = 3.14159265358979323846;
    if (x > 0.5) return -mgpo_cos_pi(1.0 - x);
    if (x <= 0.25) return cos_poly(pi * x);
    return sin_poly(pi * (0.5 - x));
}
