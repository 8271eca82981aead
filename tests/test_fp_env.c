/* Results do not depend on the caller's floating-point environment (issue
 * 15, section 3): every kernel runs under the C default environment, which
 * the library installs on the calling thread and on each worker and takes
 * away again on return.
 *
 * On x86 the caller sets flush-to-zero and denormals-are-zero (MXCSR FTZ |
 * DAZ, what -ffast-math start-up code does) AFTER the OpenMP pool exists
 * (libgomp's workers keep the MXCSR they started with).  The data are
 * subnormal-heavy, so FTZ/DAZ would change their bits.  For AdamW and SGD on
 * 1, 2 and 3 threads the run gives bitwise the parameters, moments and
 * checkpoint of the default-environment run on 1 thread; the caller's MXCSR
 * is exactly as it set it after every call.  The same when the workers
 * themselves have FTZ|DAZ (libgomp's keep what they have).  With num_threads 0 a perturb
 * by a team of 2 and a restore by a team of 1 give the clean bits back.
 * Elsewhere (no SSE control register) the test says so and passes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"
#include "test_util.h"

#if defined(__SSE2__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_MXCSR 1
#include <xmmintrin.h>
#define MXCSR_FTZ 0x8000u
#define MXCSR_DAZ 0x0040u
#else
/* No MXCSR: the FTZ/DAZ cases skip themselves (set_ftz reports it), and the
 * masks below keep the shared code compiling. */
#define HAVE_MXCSR 0
#define MXCSR_FTZ 0u
#define MXCSR_DAZ 0u
#endif

#ifdef MGPO_TEST_OPENMP
#include <omp.h>
#endif

/* Three blocks and a tail, so 2 and 3 threads split the tensor. */
#define COUNT (3 * MGPO_BLOCK_FLOATS + 13)
#define STEPS 12

typedef struct run {
    float *params, *grads;
    unsigned char *checkpoint;
    size_t checkpoint_size;
} run;

static mgpo_config config(int variant, int threads)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer = variant ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW;
    /* Updates of the size of the subnormal parameters. */
    c.lr = variant ? 0.25 : 1e-37;
    c.eps = 1.2e-38; /* ~FLT_MIN: AdamW's step is lr * m / eps ~ lr / 100 */
    c.weight_decay = 0.0;
    c.rho = 1e-50;   /* perturbations ~rho * scale_max = 1e-40 */
    c.scale_max = 1e10;
    c.norm_eps = 1e-300;
    c.num_threads = threads;
    return c;
}

/* The test's own arithmetic (data and gradients) must not depend on the
 * environment either: it runs with FTZ/DAZ cleared and then puts the
 * caller's control register back. */
static unsigned plain_arithmetic_begin(void)
{
#if HAVE_MXCSR
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr & ~(MXCSR_FTZ | MXCSR_DAZ));
    return csr;
#else
    return 0;
#endif
}

static void plain_arithmetic_end(unsigned csr)
{
#if HAVE_MXCSR
    _mm_setcsr(csr);
#else
    (void)csr;
#endif
}

/* Parameters and gradients mostly subnormal (2^-149 .. 2^-120). */
static void fill_subnormal(float *x, size_t n, uint64_t seed)
{
    unsigned csr = plain_arithmetic_begin();
    tu_fill_wide(x, n, seed, -149, -120);
    plain_arithmetic_end(csr);
}

/* The gradient at the current parameters: subnormal, parameter-dependent. */
static void gradient(run *r, int step)
{
    unsigned csr = plain_arithmetic_begin();
    for (size_t i = 0; i < COUNT; i++)
        r->grads[i] = r->params[i] * 0.75f + (float)((i + (size_t)step) % 5) * 1e-44f;
    plain_arithmetic_end(csr);
}

/* The control bits of the caller's MXCSR (rounding, FTZ, DAZ, masks), not
 * its sticky status flags. */
static unsigned caller_mxcsr(void)
{
#if HAVE_MXCSR
    return _mm_getcsr() & ~0x3Fu;
#else
    return 0;
#endif
}

/* Calls f and asserts it left the caller's control bits as they were. */
#define CALL(expr)                                                              \
    do {                                                                        \
        unsigned before_ = caller_mxcsr();                                      \
        ck_assert_int_eq((expr), MGPO_OK);                                      \
        ck_assert_uint_eq(caller_mxcsr(), before_);                             \
    } while (0)

static void train(int variant, int threads, run *r)
{
    r->params = malloc(COUNT * sizeof(float));
    r->grads = malloc(COUNT * sizeof(float));
    ck_assert(r->params && r->grads);
    fill_subnormal(r->params, COUNT, 15);
    mgpo_config c = config(variant, threads);
    mgpo_state *st;
    CALL(mgpo_create(&st, &c, NULL));
    CALL(mgpo_add_tensor(st, r->params, r->grads, COUNT, NULL, NULL));
    for (int t = 0; t < STEPS; t++) {
        CALL(mgpo_perturb(st));
        gradient(r, t);
        if (t % 2) CALL(mgpo_restore(st));
        CALL(mgpo_step(st));
    }
    CALL(mgpo_perturb(st)); /* end perturbed: the checkpoint rebuilds clean values */
    unsigned before = caller_mxcsr();
    r->checkpoint = fx_save(st, &r->checkpoint_size);
    ck_assert_uint_eq(caller_mxcsr(), before);
    ck_assert_ptr_nonnull(r->checkpoint);
    mgpo_destroy(st);
}

static void run_free(run *r)
{
    free(r->params);
    free(r->grads);
    free(r->checkpoint);
}

static void assert_same_run(const run *a, const run *b, const char *what)
{
    ck_assert_msg(memcmp(a->params, b->params, COUNT * sizeof(float)) == 0,
                  "%s: parameters differ", what);
    ck_assert_msg(a->checkpoint_size == b->checkpoint_size &&
                      memcmp(a->checkpoint, b->checkpoint, a->checkpoint_size) == 0,
                  "%s: optimizer state differs", what);
}

/* Creates the OpenMP pool in the default environment (3 workers). */
static void start_pool(void)
{
    run warm;
    train(0, 3, &warm);
    run_free(&warm);
}

static void set_ftz_daz(bool on)
{
#if HAVE_MXCSR
    unsigned csr = _mm_getcsr() & ~(MXCSR_FTZ | MXCSR_DAZ);
    _mm_setcsr(csr | (on ? MXCSR_FTZ | MXCSR_DAZ : 0u));
#else
    (void)on;
#endif
}

/* Whether this CPU (or emulator: valgrind ignores FTZ/DAZ) honours them: the
 * bits read back and a subnormal is flushed. */
static bool ftz_daz_work(void)
{
#if HAVE_MXCSR
    unsigned saved = _mm_getcsr();
    set_ftz_daz(true);
    volatile float tiny = 1e-40f, one = 1.0f;
    float product = tiny * one;
    bool works = (_mm_getcsr() & (MXCSR_FTZ | MXCSR_DAZ)) == (MXCSR_FTZ | MXCSR_DAZ) &&
                 product == 0.0f;
    _mm_setcsr(saved);
    if (!works) printf("fp_env: FTZ/DAZ not honoured here (an emulator?); not tested\n");
    return works;
#else
    printf("fp_env: no MXCSR on this target; FTZ/DAZ not tested\n");
    return false;
#endif
}

/* _i: variant (0 AdamW, 1 SGD). */
START_TEST(test_threads_and_ftz)
{
    if (!ftz_daz_work()) return;
    start_pool();
    run ref;
    train(_i, 1, &ref);
    /* The data are subnormal-heavy: FTZ/DAZ would flush them. */
    size_t subnormal = 0;
    for (size_t i = 0; i < COUNT; i++) subnormal += fpclassify(ref.params[i]) == FP_SUBNORMAL;
    ck_assert_uint_gt(subnormal, COUNT / 2);
    for (int ftz = 0; ftz <= 1; ftz++)
        for (int threads = 1; threads <= 3; threads++) {
            set_ftz_daz(ftz);
            run r;
            train(_i, threads, &r);
            /* The caller's environment is still its own. */
            ck_assert_uint_eq(caller_mxcsr() & (MXCSR_FTZ | MXCSR_DAZ),
                              ftz ? MXCSR_FTZ | MXCSR_DAZ : 0u);
            set_ftz_daz(false);
            char what[64];
            snprintf(what, sizeof what, "%s, %d thread(s), %s", _i ? "SGD" : "AdamW", threads,
                     ftz ? "FTZ|DAZ" : "default");
            assert_same_run(&ref, &r, what);
            run_free(&r);
        }
    run_free(&ref);
}
END_TEST

/* Workers whose own environment is FTZ|DAZ (set by the caller's OpenMP code;
 * a libgomp worker keeps its MXCSR from one region to the next, as one
 * started by a caller in FTZ|DAZ has it from the start): still the
 * default-environment bits, which needs the switch on each worker. */
START_TEST(test_workers_in_ftz)
{
#ifndef MGPO_TEST_OPENMP
    printf("fp_env: built without OpenMP; no workers to test\n");
    return;
#else
    if (!ftz_daz_work()) return;
    run ref;
    train(_i, 1, &ref);
    unsigned worker_csr[3] = {0, 0, 0};
#pragma omp parallel num_threads(3)
    {
        set_ftz_daz(true);
        worker_csr[omp_get_thread_num()] = caller_mxcsr();
    }
    for (int t = 0; t < 3; t++)
        ck_assert_uint_eq(worker_csr[t] & (MXCSR_FTZ | MXCSR_DAZ), MXCSR_FTZ | MXCSR_DAZ);
    for (int threads = 2; threads <= 3; threads++) {
        run r;
        train(_i, threads, &r);
        char what[64];
        snprintf(what, sizeof what, "%s, %d threads, workers in FTZ|DAZ", _i ? "SGD" : "AdamW",
                 threads);
        assert_same_run(&ref, &r, what);
        run_free(&r);
    }
    /* Leave the workers as found (CK_FORK=no runs later tests on them). */
#pragma omp parallel num_threads(3)
    set_ftz_daz(false);
    run_free(&ref);
#endif
}
END_TEST

/* num_threads 0 follows omp_get_max_threads at each call: perturb with a
 * team of 2, restore with a team of 1, the caller in FTZ|DAZ throughout. */
START_TEST(test_team_change_restore)
{
#ifndef MGPO_TEST_OPENMP
    printf("fp_env: built without OpenMP; the team-change case is not tested\n");
    return;
#else
    if (!ftz_daz_work()) return;
    start_pool();
    int saved_max = omp_get_max_threads();
    omp_set_num_threads(2);
    mgpo_config c = config(1, 0); /* SGD: the parameters stay subnormal */
    mgpo_state *st;
    ck_assert_int_eq(mgpo_create(&st, &c, NULL), MGPO_OK);
    run r;
    r.params = malloc(COUNT * sizeof(float));
    r.grads = malloc(COUNT * sizeof(float));
    ck_assert(r.params && r.grads);
    fill_subnormal(r.params, COUNT, 21);
    ck_assert_int_eq(mgpo_add_tensor(st, r.params, r.grads, COUNT, NULL, NULL), MGPO_OK);
    gradient(&r, 0);
    ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    float *clean = malloc(COUNT * sizeof(float));
    ck_assert_ptr_nonnull(clean);
    memcpy(clean, r.params, COUNT * sizeof(float));
    set_ftz_daz(true);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    int perturbed = 0;
    ck_assert_int_eq(mgpo_is_perturbed(st, &perturbed), MGPO_OK);
    ck_assert_int_eq(perturbed, 1);
    ck_assert(memcmp(clean, r.params, COUNT * sizeof(float)) != 0);
    omp_set_num_threads(1);
    ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
    set_ftz_daz(false);
    omp_set_num_threads(saved_max);
    ck_assert_msg(memcmp(clean, r.params, COUNT * sizeof(float)) == 0,
                  "restore by another team in FTZ|DAZ is not bit-exact");
    mgpo_destroy(st);
    free(clean);
    r.checkpoint = NULL;
    run_free(&r);
#endif
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fp_env");
    TCase *tc = tcase_create("fp_env");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_threads_and_ftz, 0, 2);
    tcase_add_loop_test(tc, test_workers_in_ftz, 0, 2);
    tcase_add_test(tc, test_team_change_restore);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
