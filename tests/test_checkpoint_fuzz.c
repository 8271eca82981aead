/* Fuzz-style robustness of mgpo_load, without a fuzzing compiler: thousands
 * of random byte flips, truncations and field overwrites of valid
 * checkpoints (some with the checksums recomputed, so that the parser behind
 * them is reached).  Every load must return MGPO_OK or a checkpoint error
 * code, never crash; an error must leave the state and the caller's
 * parameters exactly as they were, and a success must hold exactly the
 * loaded bytes (saving again reproduces them).  Seed: MGPO_FUZZ_SEED. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"
#include "internal.h"
#include "checkpoint_format.h"

enum { ROUNDS = 4000, CODES = 32 };

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: a fixed, portable sequence for a given seed. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* Values that tend to break parsers: zero, one, two, all-ones, sign bits,
 * NaN and infinity patterns. */
static const uint64_t interesting[] = {0, 1, 2, 0xFFFFFFFFull, 0xFFFFFFFFFFFFFFFFull,
                                       0x80000000ull, 0x7FF8000000000000ull,
                                       0x7FF0000000000000ull, 0x7FC00000ull,
                                       0x7F800000ull, 0xBFF0000000000000ull,
                                       0x3FF0000000000000ull, 1ull << 40};

/* Mutates buf (size bytes valid, capacity bytes available) in one of five
 * ways; returns the new size. */
static size_t mutate(unsigned char *buf, size_t size)
{
    size_t kind = below(5), n = size;
    switch (kind) {
    case 0: /* flip 1-4 bits or bytes, checksums left stale */
    case 2: /* the same, checksums recomputed */
        for (size_t k = 1 + below(4); k > 0; k--) buf[below(n)] ^= (unsigned char)(1 + below(255));
        break;
    case 1: /* truncate, header left as it was */
        n = below(size);
        break;
    case 3: /* truncate, header made consistent (total size, checksums) */
        n = MGPO_CKPT_HEADER_SIZE + below(size - MGPO_CKPT_HEADER_SIZE);
        {
            uint64_t total = n;
            memcpy(buf + MGPO_CKPT_OFF_TOTAL_SIZE, &total, sizeof total);
        }
        break;
    default: { /* an aligned field set to an interesting value */
        size_t width = below(2) ? 8 : 4, at = below(size / width) * width;
        uint64_t v = interesting[below(sizeof interesting / sizeof interesting[0])];
        memcpy(buf + at, &v, width); /* the low half on little-endian */
        break;
    }
    }
    if (kind >= 2 && n >= MGPO_CKPT_HEADER_SIZE) fx_reseal(buf, n);
    return n;
}

START_TEST(test_random_corruption)
{
    const char *env = getenv("MGPO_FUZZ_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 0x5EEDull + (uint64_t)_i;
    rng_state = seed ? seed : 1;
    fx f;
    ck_assert_int_eq(fx_prepare(&f, _i), MGPO_OK);
    size_t size = 0;
    unsigned char *valid = fx_save(f.st, &size), *buf = malloc(size);
    ck_assert_ptr_nonnull(valid);
    float *params[FX_TENSORS];
    for (size_t k = 0; k < FX_TENSORS; k++) {
        params[k] = malloc(f.count[k] * sizeof(float));
        memcpy(params[k], f.params[k], f.count[k] * sizeof(float));
    }

    unsigned seen[CODES] = {0};
    for (int round = 0; round < ROUNDS; round++) {
        memcpy(buf, valid, size);
        size_t n = mutate(buf, size);
        mgpo_status s = mgpo_load(f.st, buf, n);
        ck_assert_msg(s == MGPO_OK || (s >= MGPO_ERR_CHECKPOINT_MAGIC &&
                                       s <= MGPO_ERR_CHECKPOINT_TRUNCATED),
                      "seed %llu round %d: status %d", (unsigned long long)seed, round, (int)s);
        seen[s]++;
        if (s == MGPO_OK) {
            ck_assert_msg(fx_state_is(f.st, buf, n), "seed %llu round %d: not a round trip",
                          (unsigned long long)seed, round);
            ck_assert_int_eq(mgpo_load(f.st, valid, size), MGPO_OK);
        }
        ck_assert_msg(fx_state_is(f.st, valid, size), "seed %llu round %d: state changed",
                      (unsigned long long)seed, round);
        for (size_t k = 0; k < FX_TENSORS; k++)
            ck_assert(memcmp(params[k], f.params[k], f.count[k] * sizeof(float)) == 0);
    }
    /* Every kind of refusal was reached, and some edits (of moment values,
     * statistics) were valid checkpoints. */
    for (int code = MGPO_ERR_CHECKPOINT_MAGIC; code <= MGPO_ERR_CHECKPOINT_TRUNCATED; code++)
        if (code != MGPO_ERR_CHECKPOINT_ENDIAN) ck_assert_uint_gt(seen[code], 0);
    ck_assert_uint_gt(seen[MGPO_OK], 0);
    printf("layout %d: %d inputs: ok %u magic %u version %u endian %u layout %u "
           "checksum %u truncated %u\n",
           _i, ROUNDS, seen[0], seen[MGPO_ERR_CHECKPOINT_MAGIC], seen[MGPO_ERR_CHECKPOINT_VERSION],
           seen[MGPO_ERR_CHECKPOINT_ENDIAN], seen[MGPO_ERR_CHECKPOINT_LAYOUT],
           seen[MGPO_ERR_CHECKPOINT_CHECKSUM], seen[MGPO_ERR_CHECKPOINT_TRUNCATED]);
    for (size_t k = 0; k < FX_TENSORS; k++) free(params[k]);
    free(valid);
    free(buf);
    fx_free(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_fuzz");
    TCase *tc = tcase_create("corruption");
    tcase_add_loop_test(tc, test_random_corruption, 0, FX_LAYOUTS);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
