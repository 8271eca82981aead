/* Deterministic sums.
 *
 * A block's sum of squares uses sixteen interleaved double accumulators
 * (enough independent additions to hide the latency of each)
 * combined in a fixed tree, so the compiler may vectorise it without changing
 * a single bit.  Block partials are then added exactly, in a fixed-point
 * integer wide enough for any double, and rounded once: integer addition does
 * not care about order, so a slot's norm has the same bits however its
 * blocks are spread over threads, with no per-block storage. */
#include "internal.h"

#include <math.h>

double mgpo_sum_squares(const float *x, size_t n)
{
    double lane[MGPO_LANES] = {0};
    size_t i = 0;
    for (; i + MGPO_LANES <= n; i += MGPO_LANES)
        for (size_t k = 0; k < MGPO_LANES; k++) lane[k] += (double)x[i + k] * (double)x[i + k];
    for (size_t k = 0; i < n; i++, k++) lane[k] += (double)x[i] * (double)x[i];
    return mgpo_combine_lanes16(lane);
}

void mgpo_exact_clear(mgpo_exact_sum *s) { memset(s, 0, sizeof *s); }

/* Adds `value` at bit `pos` and carries; the width leaves room for 2^64
 * additions of the largest double, so the top word never overflows. */
static void add_at(mgpo_exact_sum *s, uint64_t value, unsigned pos)
{
    size_t w = pos / 64;
    unsigned shift = pos % 64;
    uint64_t lo = value << shift, hi = shift ? value >> (64 - shift) : 0;
    uint64_t before = s->word[w];
    s->word[w] += lo;
    uint64_t carry = s->word[w] < before;
    /* hi < 2^53, so hi + carry cannot wrap. */
    for (size_t i = w + 1; i < MGPO_EXACT_WORDS && (hi || carry); i++) {
        before = s->word[i];
        s->word[i] += hi + carry;
        carry = s->word[i] < before;
        hi = 0;
    }
}

void mgpo_exact_add(mgpo_exact_sum *s, double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    unsigned exponent = (unsigned)(bits >> 52 & 0x7ff);
    uint64_t mantissa = bits & ((UINT64_C(1) << 52) - 1);
    if (bits >> 63 && (exponent || mantissa)) {
        s->nan = true; /* a negative term: never a sum of squares */
        return;
    }
    if (exponent == 0x7ff) {
        if (mantissa) s->nan = true;
        else s->inf = true;
        return;
    }
    if (exponent) mantissa |= UINT64_C(1) << 52;
    /* x = mantissa * 2^(max(exponent, 1) - 1075): bit max(exponent, 1) - 1
     * of the integer whose unit is 2^-1074. */
    if (mantissa) add_at(s, mantissa, (exponent ? exponent : 1) - 1);
}

void mgpo_exact_merge(mgpo_exact_sum *s, const mgpo_exact_sum *other)
{
    uint64_t carry = 0;
    for (size_t i = 0; i < MGPO_EXACT_WORDS; i++) {
        uint64_t a = s->word[i], b = other->word[i];
        uint64_t sum = a + b;
        uint64_t c1 = sum < a;
        s->word[i] = sum + carry;
        carry = c1 | (s->word[i] < sum);
    }
    s->nan |= other->nan;
    s->inf |= other->inf;
}

double mgpo_exact_round(const mgpo_exact_sum *s)
{
    if (s->nan) return NAN;
    if (s->inf) return INFINITY;
    size_t top = MGPO_EXACT_WORDS;
    while (top > 0 && s->word[top - 1] == 0) top--;
    if (top == 0) return 0.0;
    unsigned high = 63;
    while (!(s->word[top - 1] >> high & 1)) high--;
    size_t msb = (top - 1) * 64 + high; /* the highest set bit */
    if (msb < 53) return ldexp((double)s->word[0], -1074); /* exact, maybe subnormal */

    /* The 53 bits from msb down, then round to nearest even on the rest. */
    size_t low = msb - 52;
    uint64_t mantissa = 0;
    for (size_t b = 0; b < 53; b++) {
        size_t bit = low + b;
        mantissa |= (s->word[bit / 64] >> (bit % 64) & 1) << b;
    }
    size_t guard = low - 1;
    bool half = s->word[guard / 64] >> (guard % 64) & 1, sticky = false;
    for (size_t w = 0; w <= guard / 64 && !sticky; w++) {
        uint64_t bits = s->word[w];
        if (w == guard / 64) bits &= (UINT64_C(1) << (guard % 64)) - 1;
        sticky = bits != 0;
    }
    if (half && (sticky || (mantissa & 1))) mantissa++; /* 2^53 is still exact */
    return ldexp((double)mantissa, (int)low - 1074);
}
