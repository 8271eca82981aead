/* The exact summation behind every norm (lib/reduce.c): mgpo_exact_round of
 * non-negative doubles added with mgpo_exact_add / mgpo_exact_merge is the
 * correctly rounded (to nearest, ties to even) exact sum, whatever the order
 * and grouping, and mgpo_parallel_blocks hands each slot that value for any
 * thread count.  Results are compared bit for bit against two references
 * that share no code with the library: CPython's fsum algorithm in floating
 * point, and 128-bit integers converted by the compiler. */
#include <float.h>
#include <math.h>
#include <stdio.h>

#include "perf_model.h"
#include "test_util.h"

__extension__ typedef unsigned __int128 u128;

static uint64_t bits_of(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static double from_bits(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* %a shows every bit, so a failure says which way the rounding went. */
#define ASSERT_BITS(got, want, ...)                                                      \
    do {                                                                                 \
        double got_ = (got), want_ = (want);                                             \
        if (bits_of(got_) != bits_of(want_)) {                                           \
            char what_[160];                                                             \
            snprintf(what_, sizeof what_, __VA_ARGS__);                                  \
            ck_abort_msg("%s: got %a, want %a", what_, got_, want_);                     \
        }                                                                                \
    } while (0)

static double exact_sum(const double *x, size_t n)
{
    mgpo_exact_sum s;
    mgpo_exact_clear(&s);
    for (size_t i = 0; i < n; i++) mgpo_exact_add(&s, x[i]);
    return mgpo_exact_round(&s);
}

static double naive_sum(const double *x, size_t n)
{
    volatile double acc = 0.0; /* kept in double: no wider evaluation */
    for (size_t i = 0; i < n; i++) acc += x[i];
    return acc;
}

static uint64_t rand_below(uint64_t *rng, uint64_t n) { return tu_rand_next(rng) % n; }

/* ---- Reference 1: CPython's math.fsum (Shewchuk's msum) -------------------
 * Why it is exact: after each input, p[0..np) holds the running sum exactly,
 * as non-overlapping doubles of increasing magnitude.  Fast TwoSum with
 * |x| >= |y| splits x + y into hi = fl(x + y) and lo = y - (hi - x), and lo
 * is then exactly the rounding error: true for all finite doubles, subnormals
 * included, as long as nothing overflows (callers keep sums below 2^1000).
 * Rounding the expansion: adding partials from the largest down, every
 * addition is exact until the first one that is not, giving (hi, lo) with
 * hi = fl(hi + lo); the partials still below are smaller than an ulp of lo,
 * so hi is already the correctly rounded sum unless lo is exactly half an
 * ulp of hi (then hi + 2*lo is representable) and the next partial pushes
 * the same way as lo, past the tie: then the answer is hi + 2*lo. */
static double ref_fsum(const double *x, size_t n)
{
    double *p = malloc((n + 1) * sizeof *p);
    ck_assert_ptr_nonnull(p);
    size_t np = 0;
    for (size_t k = 0; k < n; k++) {
        double v = x[k];
        size_t kept = 0;
        for (size_t j = 0; j < np; j++) {
            double y = p[j];
            if (fabs(v) < fabs(y)) {
                double t = v;
                v = y;
                y = t;
            }
            double hi = v + y;
            double lo = y - (hi - v);
            if (lo != 0.0) p[kept++] = lo;
            v = hi;
        }
        np = kept;
        if (v != 0.0) p[np++] = v;
    }
    double hi = 0.0, lo = 0.0;
    if (np > 0) {
        hi = p[--np];
        while (np > 0) {
            double v = hi, y = p[--np];
            hi = v + y;
            lo = y - (hi - v);
            if (lo != 0.0) break;
        }
        if (np > 0 && ((lo < 0.0 && p[np - 1] < 0.0) || (lo > 0.0 && p[np - 1] > 0.0))) {
            double y = lo * 2.0, v = hi + y;
            if (y == v - hi) hi = v;
        }
    }
    free(p);
    return hi;
}

/* ---- Reference 2: integers ------------------------------------------------
 * Terms k_i * 2^e with k_i < 2^113 of at most 53 significant bits are exact
 * doubles, and their sum is the integer sum (exact in 128 bits for up to 2^14
 * terms) times 2^e.  GCC and Clang convert integers to double correctly
 * rounded to nearest (C11 Annex F), and scaling that by 2^e >= 2^-1074 is
 * exact: a result with 53 significant bits is >= 2^(53 + e) >= 2^-1021,
 * normal; a smaller one is an integer below 2^53, already exact, times 2^e. */
static double ref_int_sum(u128 sum, int e) { return ldexp((double)sum, e); }

/* A random k with at most 53 significant bits, below 2^113. */
static u128 rand_k(uint64_t *rng)
{
    uint64_t mant = tu_rand_next(rng) >> (11 + rand_below(rng, 53));
    return (u128)mant << rand_below(rng, 61);
}

/* ---- Random doubles -------------------------------------------------------- */

/* A finite double >= 0 with biased exponent field in [emin, emax] (0 is
 * subnormal) and a random or a sparse fraction: sparse fractions (a few
 * set bits) make sums land on or near ties far more often. */
static double rand_double(uint64_t *rng, unsigned emin, unsigned emax, bool sparse)
{
    uint64_t e = emin + rand_below(rng, emax - emin + 1);
    uint64_t frac = 0;
    if (sparse) {
        for (uint64_t b = rand_below(rng, 4); b > 0; b--)
            frac |= UINT64_C(1) << rand_below(rng, 52);
    } else {
        frac = tu_rand_next(rng) >> 12;
    }
    return from_bits(e << 52 | frac);
}

/* One random multiset (n values) of one of several shapes; emax <= 2000
 * keeps every sum of up to a few thousand values far below overflow. */
static void rand_set(uint64_t *rng, double *x, size_t n)
{
    unsigned shape = (unsigned)rand_below(rng, 6);
    unsigned base = (unsigned)rand_below(rng, 1941), width = (unsigned)rand_below(rng, 60);
    bool sparse = rand_below(rng, 2);
    for (size_t i = 0; i < n; i++) {
        switch (shape) {
        case 0: /* the whole range */
            x[i] = rand_double(rng, 0, 2000, sparse);
            break;
        case 1: /* a narrow band of exponents, anywhere */
            x[i] = rand_double(rng, base, base + width, sparse);
            break;
        case 2: /* subnormals and the first normals */
            x[i] = rand_double(rng, 0, 2, sparse);
            break;
        case 3: /* one large value, many tiny ones */
            x[i] = i == 0 ? rand_double(rng, base + 60, base + 60, sparse)
                          : rand_double(rng, base > 60 ? base - 60 : 0, base, sparse);
            break;
        case 4: /* a few exact zeros among a band */
            x[i] = rand_below(rng, 4) == 0 ? 0.0 : rand_double(rng, base, base + 3, sparse);
            break;
        default: /* two bands 53..112 binades apart: ties and sticky bits */
            base %= 1880;
            x[i] = rand_double(rng, rand_below(rng, 2) ? base + 53 + width : base,
                               base + 53 + width, sparse);
            break;
        }
    }
}

static void shuffle(uint64_t *rng, double *x, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand_below(rng, i);
        double t = x[i - 1];
        x[i - 1] = x[j];
        x[j] = t;
    }
}

/* ---- 1. Known exact cases ----------------------------------------------------- */

START_TEST(test_known_cases)
{
    /* 1 + 2^-53 + 2^-53: each half-ulp tie alone rounds back to 1 (even), but
     * together they are one whole ulp. */
    double a[] = {1.0, 0x1p-53, 0x1p-53};
    ck_assert(naive_sum(a, 3) == 1.0);
    ASSERT_BITS(exact_sum(a, 3), 1.0 + 0x1p-52, "1 + 2^-53 + 2^-53");

    /* 2^100 plus 2^48 ones: each 1 vanishes next to 2^100 in double, but
     * together they are one ulp of it (the ones come from merging a sum into
     * itself 48 times). */
    {
        mgpo_exact_sum s, copy;
        mgpo_exact_clear(&s);
        mgpo_exact_add(&s, 1.0);
        for (int k = 0; k < 48; k++) {
            copy = s;
            mgpo_exact_merge(&s, &copy);
        }
        mgpo_exact_add(&s, 0x1p100);
        ck_assert(0x1p100 + 1.0 == 0x1p100);
        ASSERT_BITS(mgpo_exact_round(&s), 0x1p100 + 0x1p48, "2^100 + 2^48 * 1");
    }

    /* One large term and 2^20 tiny ones worth 2^20 * 2^-60 = 2^-40: naive
     * summation drops every one of them. */
    {
        mgpo_exact_sum s;
        mgpo_exact_clear(&s);
        mgpo_exact_add(&s, 1.0);
        double naive = 1.0;
        for (int i = 0; i < 1 << 20; i++) {
            mgpo_exact_add(&s, 0x1p-60);
            naive += 0x1p-60;
        }
        ck_assert(naive == 1.0);
        ASSERT_BITS(mgpo_exact_round(&s), 1.0 + 0x1p-40, "1 + 2^20 * 2^-60");
    }
    /* 2^-53 three times plus 1: 1 + 1.5 * 2^-52 rounds up to 1 + 2^-51. */
    double c[] = {0x1p-53, 0x1p-53, 0x1p-53, 1.0};
    ASSERT_BITS(exact_sum(c, 4), 1.0 + 0x1p-51, "3 * 2^-53 + 1");

    /* Ties to even, both directions, and a sticky bit far below (in another
     * word of the accumulator) that breaks the tie upwards. */
    double even[] = {1.0, 0x1p-53, 0x1p-1074};
    ASSERT_BITS(exact_sum(even, 2), 1.0, "1 + half ulp: tie, even stays");
    ASSERT_BITS(exact_sum(even, 3), 1.0 + 0x1p-52, "1 + half ulp + 2^-1074");
    double odd[] = {1.0 + 0x1p-52, 0x1p-53, 0x1p-1074};
    ASSERT_BITS(exact_sum(odd, 2), 1.0 + 0x1p-51, "odd + half ulp: tie, odd goes up");
    ASSERT_BITS(exact_sum(odd, 3), 1.0 + 0x1p-51, "odd + half ulp + 2^-1074");
    /* Just below the tie: 2^-54 + (2^-54 - 2^-106) is half an ulp less a
     * little, so even an odd mantissa stays. */
    double below[] = {1.0 + 0x1p-52, 0x1p-54, 0x1p-54 - 0x1p-106};
    ASSERT_BITS(exact_sum(below, 3), 1.0 + 0x1p-52, "odd + (half ulp - tiny)");
}
END_TEST

/* A tie and a sticky bit at every possible guard position: the sum is
 * M * 2^(g+1) + 2^g (+ 2^s, s < g) in units of 2^-1074, so its rounding
 * looks at bit g and everything below, across every word boundary. */
START_TEST(test_ties_every_position)
{
    uint64_t rng = 11;
    for (int g = 0; g + 53 <= 2097; g++) {
        for (int parity = 0; parity < 2; parity++) {
            uint64_t m = (UINT64_C(1) << 52) | (tu_rand_next(&rng) >> 12 & ~UINT64_C(1)) |
                         (uint64_t)parity;
            double big = ldexp((double)m, g + 1 - 1074), half = ldexp(1.0, g - 1074);
            double down = big, up = ldexp((double)(m + 1), g + 1 - 1074);
            double t[] = {big, half, 0.0};
            ASSERT_BITS(exact_sum(t, 2), parity ? up : down, "tie at bit %d, parity %d", g,
                        parity);
            if (g > 0) {
                int s = (int)rand_below(&rng, (uint64_t)g);
                t[2] = ldexp(1.0, s - 1074);
                ASSERT_BITS(exact_sum(t, 3), up, "tie at bit %d + sticky bit %d", g, s);
                /* Without the half, the sticky bit alone is below it. */
                t[1] = 0.0;
                ASSERT_BITS(exact_sum(t, 3), down, "bit %d below guard %d", s, g);
            }
        }
    }
}
END_TEST

/* Carries through every word: the bits 0..2066 all set, as 39 doubles of 53
 * ones each, then one more unit (added, or merged from another sum). */
START_TEST(test_carry_chain)
{
    mgpo_exact_sum s, one;
    mgpo_exact_clear(&s);
    for (int j = 0; j < 39; j++) mgpo_exact_add(&s, ldexp(0x1.fffffffffffffp52, 53 * j - 1074));
    /* 2^993 - 2^-1074: the ones below the top 53 make it round up. */
    ASSERT_BITS(mgpo_exact_round(&s), 0x1p993, "2^993 - 2^-1074");
    mgpo_exact_clear(&one);
    mgpo_exact_add(&one, 0x1p-1074);
    mgpo_exact_sum merged = s;
    mgpo_exact_merge(&merged, &one);
    mgpo_exact_add(&s, 0x1p-1074);
    for (int w = 0; w < MGPO_EXACT_WORDS; w++) {
        uint64_t want = w == 2067 / 64 ? UINT64_C(1) << 2067 % 64 : 0;
        ck_assert_msg(s.word[w] == want, "word %d after adding the carry", w);
        ck_assert_msg(merged.word[w] == want, "word %d after merging the carry", w);
    }
    ASSERT_BITS(mgpo_exact_round(&s), 0x1p993, "2^993 exactly");
    /* A term straddling two words whose low part wraps the lower word. */
    mgpo_exact_clear(&s);
    mgpo_exact_add(&s, ldexp((double)(UINT64_C(1) << 53) - 1.0, -1074)); /* bits 0..52 */
    mgpo_exact_add(&s, ldexp(0x1.fffffffffffffp52, 40 - 1074));          /* bits 40..92 */
    ASSERT_BITS(mgpo_exact_round(&s), ldexp((double)(UINT64_C(1) << 53) - 1.0, -1074) +
                                          ldexp(0x1.fffffffffffffp52, 40 - 1074),
                "two straddling terms"); /* (2^53-1)(1+2^40) rounded: one rounding */
}
END_TEST

/* ---- 2. Subnormals ------------------------------------------------------------ */

START_TEST(test_subnormals)
{
    /* Subnormal sums that stay subnormal are exact. */
    double a[] = {0x1p-1074, 0x3p-1074, 0x1p-1060, 0x0.8p-1022};
    ASSERT_BITS(exact_sum(a, 4), 0x4p-1074 + 0x1p-1060 + 0x0.8p-1022, "subnormals");
    /* Crossing into the normal range: the largest subnormal plus 2^-1074. */
    double b[] = {0x0.fffffffffffffp-1022, 0x1p-1074};
    ASSERT_BITS(exact_sum(b, 2), DBL_MIN, "largest subnormal + 2^-1074");
    /* Subnormal terms whose sum must round: 2^-1021 + 2^-1074 is a tie
     * between 2^-1021 (even) and 2^-1021 + 2^-1073. */
    double c[] = {0x0.fffffffffffffp-1022, 0x0.fffffffffffffp-1022, 0x0.0000000000003p-1022};
    ASSERT_BITS(exact_sum(c, 3), 0x1p-1021, "2 * (2^-1022 - 2^-1074) + 3 * 2^-1074");

    /* The smallest subnormal 2^k times, by repeated adds (small k) and by
     * merging a sum into itself (every k the accumulator holds, up to one
     * past the largest binade, which overflows). */
    for (int k = 0; k <= 12; k++) {
        mgpo_exact_sum s;
        mgpo_exact_clear(&s);
        for (int i = 0; i < 1 << k; i++) mgpo_exact_add(&s, 0x1p-1074);
        ASSERT_BITS(mgpo_exact_round(&s), ldexp(1.0, k - 1074), "2^%d adds of 2^-1074", k);
    }
    mgpo_exact_sum s;
    mgpo_exact_clear(&s);
    mgpo_exact_add(&s, 0x1p-1074);
    for (int k = 0; k <= 2098; k++) {
        ASSERT_BITS(mgpo_exact_round(&s), k <= 2097 ? ldexp(1.0, k - 1074) : INFINITY,
                    "2^%d merges of 2^-1074", k);
        mgpo_exact_sum copy = s;
        mgpo_exact_merge(&s, &copy);
    }

    /* Random subnormals (and a few small normals) against integer sums. */
    uint64_t rng = 2;
    for (int set = 0; set < 500; set++) {
        size_t n = 1 + (size_t)rand_below(&rng, 300);
        mgpo_exact_sum acc;
        mgpo_exact_clear(&acc);
        uint64_t units = 0;
        for (size_t i = 0; i < n; i++) {
            /* Up to 2^54 units: subnormals, and normals from 2^-1022 up. */
            uint64_t k = tu_rand_next(&rng) >> (10 + rand_below(&rng, 54));
            if (k >> 53) k &= ~UINT64_C(1); /* 54 bits: keep it a double */
            units += k;
            mgpo_exact_add(&acc, ldexp((double)k, -1074));
        }
        ASSERT_BITS(mgpo_exact_round(&acc), ref_int_sum(units, -1074), "subnormal set %d",
                    set);
    }
}
END_TEST

/* ---- 3. Range, NaN and infinity --------------------------------------------- */

START_TEST(test_range_and_flags)
{
    mgpo_exact_sum s, t;
    mgpo_exact_clear(&s);
    ASSERT_BITS(mgpo_exact_round(&s), 0.0, "no terms"); /* +0.0, not -0.0 */
    mgpo_exact_add(&s, 0.0);
    mgpo_exact_add(&s, -0.0); /* -0.0 >= 0: a zero term, not a negative one */
    ASSERT_BITS(mgpo_exact_round(&s), 0.0, "zeros");

    double max2[] = {DBL_MAX, DBL_MAX};
    ASSERT_BITS(exact_sum(max2, 1), DBL_MAX, "DBL_MAX alone");
    ASSERT_BITS(exact_sum(max2, 2), INFINITY, "DBL_MAX + DBL_MAX");
    /* The overflow threshold is DBL_MAX + half its ulp (2^970): a tie, and
     * DBL_MAX's mantissa is odd, so it rounds up to 2^1024 = +Inf. */
    double near[] = {DBL_MAX, 0x1p969, 0x1p968, 0x1p-1074};
    ASSERT_BITS(exact_sum(near, 3), DBL_MAX, "DBL_MAX + 0.75 half ulp");
    ASSERT_BITS(exact_sum(near, 4), DBL_MAX, "DBL_MAX + 0.75 half ulp + tiny");
    double over[] = {DBL_MAX, 0x1p969, 0x1p969};
    ASSERT_BITS(exact_sum(over, 3), INFINITY, "DBL_MAX + half ulp");
    double even[] = {DBL_MAX - 0x1p971, 0x1p970, 0x1p-1074};
    ASSERT_BITS(exact_sum(even, 2), DBL_MAX - 0x1p971, "tie below DBL_MAX stays even");
    ASSERT_BITS(exact_sum(even, 3), DBL_MAX, "tie below DBL_MAX + tiny");
    /* 2^64 copies of DBL_MAX, by merging, still round (to +Inf) instead of
     * wrapping the top word. */
    mgpo_exact_clear(&s);
    mgpo_exact_add(&s, DBL_MAX);
    for (int k = 0; k < 64; k++) {
        t = s;
        mgpo_exact_merge(&s, &t);
        ASSERT_BITS(mgpo_exact_round(&s), INFINITY, "2^%d * DBL_MAX", k + 1);
    }
    ck_assert(s.word[MGPO_EXACT_WORDS - 1] != 0);
    ck_assert(!s.inf && !s.nan);

    /* Infinity and NaN: NaN wins over +Inf, in either order and by merging;
     * a negative term (also -Inf, a negative subnormal, a negative NaN) is
     * reported as NaN; clearing forgets both. */
    double cases[][3] = {
        {1.0, INFINITY, 2.0},   {INFINITY, NAN, 1.0},       {NAN, INFINITY, 1.0},
        {1.0, -1.0, INFINITY},  {-INFINITY, 1.0, 0.0},      {-0x1p-1074, 1.0, 0.0},
        {-NAN, 1.0, 0.0},       {INFINITY, INFINITY, DBL_MAX},
    };
    const int expect_nan[] = {0, 1, 1, 1, 1, 1, 1, 0};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double r = exact_sum(cases[c], 3);
        if (expect_nan[c]) ck_assert_msg(isnan(r), "case %zu: %a is not NaN", c, r);
        else ASSERT_BITS(r, INFINITY, "case %zu", c);
    }
    mgpo_exact_clear(&s);
    mgpo_exact_clear(&t);
    mgpo_exact_add(&s, INFINITY);
    mgpo_exact_add(&t, NAN);
    mgpo_exact_sum u = s;
    mgpo_exact_merge(&u, &t);
    ck_assert(isnan(mgpo_exact_round(&u)));
    mgpo_exact_merge(&t, &s);
    ck_assert(isnan(mgpo_exact_round(&t)));
    mgpo_exact_clear(&u);
    mgpo_exact_merge(&u, &s);
    ASSERT_BITS(mgpo_exact_round(&u), INFINITY, "merged Inf");
    mgpo_exact_clear(&u);
    mgpo_exact_add(&u, 3.0);
    ASSERT_BITS(mgpo_exact_round(&u), 3.0, "cleared after NaN and Inf");
}
END_TEST

/* ---- 4. Random sets against the references --------------------------------- */

START_TEST(test_random_vs_fsum)
{
    uint64_t rng = 4;
    enum { MAX_N = 400 };
    double x[MAX_N];
    int differs_from_naive = 0;
    for (int set = 0; set < 4000; set++) {
        size_t n = 1 + (size_t)rand_below(&rng, set % 10 == 0 ? MAX_N : 40);
        rand_set(&rng, x, n);
        double want = ref_fsum(x, n);
        ASSERT_BITS(exact_sum(x, n), want, "random set %d (n=%zu)", set, n);
        differs_from_naive += bits_of(naive_sum(x, n)) != bits_of(want);
    }
    /* The sets must be hard: naive summation gets many of them wrong. */
    ck_assert_int_gt(differs_from_naive, 700);
}
END_TEST

START_TEST(test_random_vs_integers)
{
    uint64_t rng = 5;
    int differs_from_naive = 0;
    for (int set = 0; set < 3000; set++) {
        size_t n = 1 + (size_t)rand_below(&rng, 64);
        int e = -1074 + (int)rand_below(&rng, 1975); /* up to 2^113 * 2^900 */
        u128 units = 0;
        double x[64];
        for (size_t i = 0; i < n; i++) {
            u128 k = rand_k(&rng);
            units += k;
            x[i] = ldexp((double)k, e); /* exact: see ref_int_sum */
        }
        double want = ref_int_sum(units, e);
        ASSERT_BITS(exact_sum(x, n), want, "integer set %d (n=%zu, e=%d)", set, n, e);
        /* The two references agree too, so neither is wrong in the same way. */
        ASSERT_BITS(ref_fsum(x, n), want, "fsum reference, integer set %d", set);
        differs_from_naive += bits_of(naive_sum(x, n)) != bits_of(want);
    }
    ck_assert_int_gt(differs_from_naive, 900);
}
END_TEST

/* ---- 5. Order and grouping --------------------------------------------------- */

static void assert_same_sum(const mgpo_exact_sum *a, const mgpo_exact_sum *b, const char *what,
                            int set)
{
    ck_assert_msg(memcmp(a->word, b->word, sizeof a->word) == 0, "%s %d: words differ", what,
                  set);
    ck_assert_msg(a->nan == b->nan && a->inf == b->inf, "%s %d: flags differ", what, set);
    ASSERT_BITS(mgpo_exact_round(a), mgpo_exact_round(b), "%s %d", what, set);
}

START_TEST(test_order_and_grouping)
{
    uint64_t rng = 6;
    enum { MAX_N = 120, MAX_GROUPS = 9 };
    double x[MAX_N];
    mgpo_exact_sum group[MAX_GROUPS];
    for (int set = 0; set < 400; set++) {
        size_t n = 1 + (size_t)rand_below(&rng, MAX_N);
        rand_set(&rng, x, n);
        /* Now and then an infinity or a NaN, whose flag must survive any
         * grouping too. */
        if (set % 17 == 0) x[rand_below(&rng, n)] = set % 34 ? INFINITY : NAN;
        mgpo_exact_sum first;
        mgpo_exact_clear(&first);
        for (size_t i = 0; i < n; i++) mgpo_exact_add(&first, x[i]);
        for (int trial = 0; trial < 12; trial++) {
            shuffle(&rng, x, n);
            size_t groups = 1 + (size_t)rand_below(&rng, MAX_GROUPS);
            for (size_t g = 0; g < groups; g++) mgpo_exact_clear(&group[g]);
            for (size_t i = 0; i < n; i++)
                mgpo_exact_add(&group[rand_below(&rng, groups)], x[i]);
            /* Merge the groups in a random order, into a fresh sum or into
             * one of them, as parallel.c merges thread partials. */
            size_t order[MAX_GROUPS];
            for (size_t g = 0; g < groups; g++) order[g] = g;
            for (size_t g = groups; g > 1; g--) {
                size_t j = (size_t)rand_below(&rng, g), t = order[g - 1];
                order[g - 1] = order[j];
                order[j] = t;
            }
            mgpo_exact_sum fresh, *total = &fresh;
            size_t g0 = 0;
            if (trial % 2) {
                total = &group[order[0]];
                g0 = 1;
            } else {
                mgpo_exact_clear(&fresh);
            }
            for (size_t g = g0; g < groups; g++) mgpo_exact_merge(total, &group[order[g]]);
            assert_same_sum(total, &first, "grouped set", set);
        }
    }
}
END_TEST

/* ---- 6. Single values and multiples ------------------------------------------ */

START_TEST(test_round_trip)
{
    const double edges[] = {0.0,      0x1p-1074, 0x0.fffffffffffffp-1022, DBL_MIN,
                            1.0,      1.0 + 0x1p-52, 0x1.fffffffffffffp0,  0x1p1023,
                            DBL_MAX,  0x1.8p-1073};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        ASSERT_BITS(exact_sum(&edges[i], 1), edges[i], "edge value %zu", i);
    uint64_t rng = 7;
    for (int i = 0; i < 200000; i++) {
        uint64_t u = tu_rand_next(&rng) >> 1; /* sign clear */
        /* Half the draws from the low exponents, where subnormals live. */
        if (i % 2) u &= (UINT64_C(1) << 56) - 1;
        if (u >> 52 == 0x7ff) continue;
        double x = from_bits(u);
        ASSERT_BITS(exact_sum(&x, 1), x, "round trip of %016llx", (unsigned long long)u);
    }
    /* x added m times is m * x exactly, and a single IEEE multiplication of
     * the (exact) integer m by x rounds that correctly: another independent
     * reference, which reaches overflow too. */
    for (int i = 0; i < 2000; i++) {
        /* A quarter near the top, where m * x overflows. */
        double x = rand_double(&rng, i % 4 ? 0 : 2000, 2046, i % 3 == 0);
        int m = 1 + (int)rand_below(&rng, 200);
        mgpo_exact_sum s;
        mgpo_exact_clear(&s);
        for (int k = 0; k < m; k++) mgpo_exact_add(&s, x);
        ASSERT_BITS(mgpo_exact_round(&s), (double)m * x, "%d * %a", m, x);
    }
}
END_TEST

/* ---- 7. Through mgpo_parallel_blocks ------------------------------------------ */

/* Several blocks per slot with odd tails and one-block slots, so 2, 3 and 5
 * threads cut the slots at different places (21 blocks). */
static const size_t slot_sizes[] = {5 * MGPO_BLOCK_FLOATS + 1, 1, 3 * MGPO_BLOCK_FLOATS,
                                    2 * MGPO_BLOCK_FLOATS - 7, 7 * MGPO_BLOCK_FLOATS + 100, 3};
#define SLOTS (sizeof slot_sizes / sizeof slot_sizes[0])
#define MAX_BLOCKS 32

typedef struct block_values {
    double value[MAX_BLOCKS]; /* what the block function returns, by block */
    int calls[MAX_BLOCKS];
} block_values;

static double return_value(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count, void *arg)
{
    (void)st;
    (void)count;
    block_values *v = arg;
    size_t b = sl->first_block + begin / MGPO_BLOCK_FLOATS;
    v->calls[b]++; /* each block runs on one thread only */
    return v->value[b];
}

/* Per-block results of scenario `k`: random magnitudes over the whole
 * range or a band, half-ulp ties, and slots poisoned by +Inf and NaN next
 * to clean ones.  Blocks by slot: 0-5, 6, 7-9, 10-11, 12-19, 20; the Inf at
 * block 3 and the NaN and Inf at 12 and 19 fall on different threads for
 * some thread counts, so the flags have to survive the merge. */
static void scenario_values(int k, uint64_t *rng, double *value, size_t blocks)
{
    for (size_t b = 0; b < blocks; b++) {
        switch (k) {
        case 0:
            value[b] = rand_double(rng, 0, 2000, false);
            break;
        case 1:
            value[b] = rand_double(rng, 900, 1000, true);
            break;
        case 2: /* 1 or 1 + ulp every seventh block, else half an ulp of 1 */
            value[b] = b % 7 == 0 ? 1.0 + 0x1p-52 * (double)(b % 2) : 0x1p-53;
            break;
        default:
            value[b] = rand_double(rng, 0, 1100, b % 2);
            if (b == 3) value[b] = INFINITY;
            if (b == 12) value[b] = NAN;
            if (b == 19) value[b] = INFINITY;
            break;
        }
    }
}

START_TEST(test_parallel_blocks)
{
    pm_model md;
    pm_init(&md, slot_sizes, SLOTS, 0);
    uint64_t rng = 8;
    const int thread_counts[] = {1, 2, 3, 5};
    for (int k = 0; k < 4; k++) {
        block_values v;
        memset(&v, 0, sizeof v);
        double first_totals[SLOTS];
        for (size_t ti = 0; ti < sizeof thread_counts / sizeof thread_counts[0]; ti++) {
            mgpo_config c = mgpo_config_default();
            c.num_threads = thread_counts[ti];
            mgpo_state *st = NULL;
            ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
            pm_register(&md, st);
            ck_assert_uint_eq(st->slot_count, SLOTS);
            ck_assert_uint_le(st->block_count, MAX_BLOCKS);
            if (ti == 0) scenario_values(k, &rng, v.value, st->block_count);
            memset(v.calls, 0, sizeof v.calls);
            /* A stale total must not pass for a computed one. */
            for (size_t i = 0; i < SLOTS; i++) st->slots[i].block_total = -1.0;
            mgpo_parallel_blocks(st, return_value, &v, true);
            for (size_t b = 0; b < st->block_count; b++) ck_assert_int_eq(v.calls[b], 1);
            for (size_t i = 0; i < SLOTS; i++) {
                const mgpo_slot *sl = &st->slots[i];
                const double *mine = v.value + sl->first_block;
                double want = exact_sum(mine, sl->block_count), got = sl->block_total;
                if (isnan(want)) {
                    ck_assert_msg(isnan(got), "scenario %d slot %zu: %a, not NaN", k, i, got);
                } else {
                    ASSERT_BITS(got, want, "scenario %d, %d threads, slot %zu", k,
                                thread_counts[ti], i);
                    if (isfinite(want))
                        ASSERT_BITS(got, ref_fsum(mine, sl->block_count),
                                    "scenario %d slot %zu vs fsum", k, i);
                }
                if (ti == 0) first_totals[i] = got;
                else ASSERT_BITS(got, first_totals[i], "scenario %d slot %zu, %d vs 1 thread",
                                 k, i, thread_counts[ti]);
            }
            if (k == 2) /* the ties scenario is one naive summation gets wrong */
                ck_assert(bits_of(st->slots[4].block_total) !=
                          bits_of(naive_sum(v.value + st->slots[4].first_block,
                                            st->slots[4].block_count)));
            if (k == 3) {
                ck_assert(isinf(st->slots[0].block_total)); /* block 3 */
                ck_assert(isnan(st->slots[4].block_total)); /* blocks 12 and 19 */
                ck_assert(isfinite(st->slots[1].block_total));
            }
            if (k == 0 && ti == sizeof thread_counts / sizeof thread_counts[0] - 1)
                printf("exact_sum: %zu blocks in %zu slots; num_threads=5 runs %d thread(s)%s\n",
                       st->block_count, st->slot_count, mgpo_parallel_threads(st),
                       mgpo_parallel_threads(st) == 1 ? " (no OpenMP: all runs serial)" : "");
            mgpo_destroy(st);
        }
    }
    pm_free(&md, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("exact_sum");
    TCase *tc = tcase_create("exact");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_known_cases);
    tcase_add_test(tc, test_ties_every_position);
    tcase_add_test(tc, test_carry_chain);
    tcase_add_test(tc, test_subnormals);
    tcase_add_test(tc, test_range_and_flags);
    tcase_add_test(tc, test_random_vs_fsum);
    tcase_add_test(tc, test_random_vs_integers);
    tcase_add_test(tc, test_order_and_grouping);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_parallel_blocks);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
