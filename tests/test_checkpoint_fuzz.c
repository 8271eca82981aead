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
#include "test_util.h"

enum { ROUNDS = 4000 };

START_TEST(test_random_corruption)
{
    const char *env = getenv("MGPO_FUZZ_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : 0x5EEDull + (uint64_t)_i;
    fx f;
    ck_assert_int_eq(fx_prepare(&f, _i), MGPO_OK);
    size_t size = 0;
    unsigned char *valid = fx_save(f.st, &size);
    ck_assert_ptr_nonnull(valid);
    float *params[FX_TENSORS];
    for (size_t k = 0; k < FX_TENSORS; k++) {
        params[k] = malloc(f.count[k] * sizeof(float));
        memcpy(params[k], f.params[k], f.count[k] * sizeof(float));
    }

    unsigned seen[FX_CODES] = {0};
    fx_params_check check = {&f, params};
    int bad = fx_corrupt_rounds(f.st, valid, size, ROUNDS, seed, seen, fx_params_same, &check);
    ck_assert_msg(bad < 0, "seed %llu round %d failed", (unsigned long long)seed, bad);
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
    return tu_run_suite(s);
}
