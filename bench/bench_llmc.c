/* bench_llmc: libmgpo against the optimizer loop it replaces in llm.c, as
 * llm.c builds that loop (bench/llmc_loops.c, compiled with llm.c's Makefile
 * flags), in one process, on the same data.
 *
 *   bench_llmc [--sizes 100k,1M,4M,16M,64M] [--threads 1,2] [--reps 7]
 *              [--rounds 1] [--small 1000] [--portable] [--short]
 *
 * Cases, each on one tensor of N floats unless said otherwise:
 *   llmc_adamw       llm.c's gpt2_update loop (serial, as llm.c runs it)
 *   llmc_adamw_omp   the same loop under omp parallel for (2 threads only)
 *   mgpo_adamw       mgpo_step, AdamW, rho = 0
 *   mgpo_iter_fused  mgpo_perturb + mgpo_step (the step restores, fused), AdamW,
 *                    rho 0.05: the llm.c recipe's iteration
 *   mgpo_iteration   mgpo_perturb + mgpo_restore + mgpo_step, AdamW, rho 0.05
 *   llmc_sgd         the equivalent momentum-SGD loop, same flags
 *   llmc_sgd_omp     the same under omp parallel for (2 threads only)
 *   mgpo_sgd         mgpo_step, SGD (momentum 0.9), rho = 0
 *   mgpo_sgd_iter    mgpo_perturb + mgpo_restore + mgpo_step, SGD, rho 0.05
 * and, for per-call overhead, the same N split into tensors of 1,000 floats
 * (--small, default 1000 tensors: N = 1,000,000):
 *   small_llmc_adamw    the llm.c loop over the N floats (one array)
 *   small_mgpo_adamw    mgpo_step over 1,000 registered tensors
 *   small_mgpo_iter     the MGPO iteration over them
 *
 * --portable runs libmgpo with its portable C kernels instead of the best
 * table for this CPU (an internal hook, as in the tests): what a CPU
 * without AVX2 and FMA gets.
 *
 * A timing calls the case enough times in a row for about 20 ms of work
 * and divides; a figure is the best of --reps timings after warm-up calls,
 * and of --rounds sweeps.  Wall clock: on a shared machine, run it when the
 * load is low and compare rounds.  Ratios are against llmc_adamw
 * (llmc_sgd) in the same row; at 2 threads also against the _omp loop.
 * Not a test: nothing here asserts a speed; --short only keeps it working. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "internal.h" /* --portable: mgpo_state.kernels */
#include "llmc_loops.h"
#include "bench_common.h"
#include "mgpo.h"

#define MAX_LIST 8
#define SMALL_FLOATS 1000

enum {
    LLMC_ADAMW, LLMC_ADAMW_OMP, MGPO_ADAMW, MGPO_FUSED, MGPO_ITER, LLMC_SGD, LLMC_SGD_OMP, MGPO_SGD,
    MGPO_SGD_ITER, CASES
};
static const char *const case_names[CASES] = {
    "llmc_adamw", "llmc_adamw_omp", "mgpo_adamw", "mgpo_iter_fused", "mgpo_iteration",
    "llmc_sgd",   "llmc_sgd_omp",   "mgpo_sgd",   "mgpo_sgd_iter"};
/* Floats moved per parameter (each array read or written once; the
 * exception lists of the exact restore, a few bytes, not counted). */
static const int case_floats[CASES] = {7, 7, 8, 11, 14, 5, 5, 6, 12};

typedef struct options {
    size_t sizes[MAX_LIST];
    int size_count, threads[MAX_LIST], thread_count, reps, rounds, small;
    bool short_mode, portable;
} options;

static const float LR = 1e-3f, BETA1 = 0.9f, BETA2 = 0.999f, EPS = 1e-8f, MOMENTUM = 0.9f;

static void check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) {
        fprintf(stderr, "bench_llmc: %s: %s\n", what, mgpo_strerror(s));
        exit(EXIT_FAILURE);
    }
}

static float *alloc_floats(size_t n)
{
    float *p = malloc(n * sizeof(float)); /* as a C trainer would: 16-byte aligned */
    if (!p) {
        fprintf(stderr, "bench_llmc: out of memory for %zu floats\n", n);
        exit(EXIT_FAILURE);
    }
    return p;
}

static void fill_random(float *x, size_t n, uint32_t seed, float scale)
{
    uint32_t s = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = scale * ((float)(s >> 8) / 8388608.0f - 1.0f);
    }
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K') v *= 1e3;
    else if (*end == 'M') v *= 1024.0 * 1024.0;
    else if (*end == 'm') v *= 1e6;
    return v >= 1.0 ? (size_t)v : 0;
}

static int parse_list(char *list, size_t *sizes, int *ints)
{
    int count = 0;
    for (char *tok = strtok(list, ","); tok && count < MAX_LIST; tok = strtok(NULL, ",")) {
        if (sizes && (sizes[count] = parse_size(tok)) > 0) count++;
        if (ints && (ints[count] = atoi(tok)) > 0) count++;
    }
    return count;
}

static bool parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 7;
    o->rounds = 1;
    o->small = 1000;
    for (int i = 1; i < argc; i++) {
        bool more = i + 1 < argc;
        if (!strcmp(argv[i], "--short")) o->short_mode = true;
        else if (!strcmp(argv[i], "--sizes") && more)
            o->size_count = parse_list(argv[++i], o->sizes, NULL);
        else if (!strcmp(argv[i], "--threads") && more)
            o->thread_count = parse_list(argv[++i], NULL, o->threads);
        else if (!strcmp(argv[i], "--reps") && more) o->reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && more) o->rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--small") && more) o->small = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--portable")) o->portable = true;
        else {
            fprintf(stderr, "usage: %s [--sizes 100k,1M,...] [--threads 1,2] [--reps 7] "
                            "[--rounds 1] [--small 1000] [--portable] [--short]\n", argv[0]);
            return false;
        }
    }
    if (o->reps < 1) o->reps = 1;
    if (o->rounds < 1) o->rounds = 1;
    if (o->small < 1) o->small = 1;
    if (o->short_mode) {
        o->size_count = 1;
        o->sizes[0] = 3 * 4096 + 5;
        o->reps = 1;
        o->small = 3;
    }
    if (o->size_count == 0) {
        const size_t d[] = {100000, 1u << 20, 4u << 20, 16u << 20, 64u << 20};
        o->size_count = 5;
        memcpy(o->sizes, d, sizeof d);
    }
    if (o->thread_count == 0) {
        o->thread_count = 2;
        o->threads[0] = 1;
        o->threads[1] = 2;
    }
    return true;
}

/* ---- one case ------------------------------------------------------------ */

typedef struct bench_case {
    int which, threads, t;
    bool portable;
    size_t n, tensors;          /* tensors of n / tensors floats each */
    float *params, *grads, *m, *v; /* params/grads: the caller's; m, v: llm.c's */
    mgpo_state *st;
} bench_case;

static bool is_llmc(int which)
{
    return which == LLMC_ADAMW || which == LLMC_ADAMW_OMP || which == LLMC_SGD ||
           which == LLMC_SGD_OMP;
}

static void run_once(bench_case *c)
{
    switch (c->which) {
    case LLMC_ADAMW:
        llmc_adamw(c->params, c->grads, c->m, c->v, c->n, LR, BETA1, BETA2, EPS, 0.0f, ++c->t);
        break;
    case LLMC_ADAMW_OMP:
        llmc_adamw_omp(c->params, c->grads, c->m, c->v, c->n, LR, BETA1, BETA2, EPS, 0.0f,
                       ++c->t, c->threads);
        break;
    case LLMC_SGD: llmc_sgd(c->params, c->grads, c->m, c->n, LR, MOMENTUM, 0.0f); break;
    case LLMC_SGD_OMP:
        llmc_sgd_omp(c->params, c->grads, c->m, c->n, LR, MOMENTUM, 0.0f, c->threads);
        break;
    case MGPO_ADAMW:
    case MGPO_SGD: check(mgpo_step(c->st), "step"); break;
    case MGPO_FUSED:
        check(mgpo_perturb(c->st), "perturb");
        check(mgpo_step(c->st), "step");
        break;
    default:
        check(mgpo_perturb(c->st), "perturb");
        check(mgpo_restore(c->st), "restore");
        check(mgpo_step(c->st), "step");
        break;
    }
}

static mgpo_state *make_state(const bench_case *c)
{
    mgpo_config cfg = mgpo_config_default();
    if (c->which == MGPO_SGD || c->which == MGPO_SGD_ITER) cfg.optimizer = MGPO_OPTIMIZER_SGD;
    cfg.lr = LR;
    cfg.beta1 = BETA1;
    cfg.beta2 = BETA2;
    cfg.eps = EPS;
    cfg.momentum = MOMENTUM;
    cfg.num_threads = c->threads;
    cfg.rho = c->which == MGPO_ADAMW || c->which == MGPO_SGD ? 0.0 : 0.05;
    mgpo_state *st = NULL;
    check(mgpo_create(&st, &cfg, NULL), "create");
    if (c->portable) st->kernels = mgpo_kernels_portable();
    size_t each = c->n / c->tensors;
    for (size_t k = 0; k < c->tensors; k++)
        check(mgpo_add_tensor(st, c->params + k * each, c->grads + k * each, each, NULL, NULL),
              "add_tensor");
    return st;
}

/* Seconds per call: best of `reps` timings of `inner` calls in a row. */
static double time_case(bench_case *c, int reps)
{
    if (!is_llmc(c->which)) c->st = make_state(c);
    double work = 20e-3, one = INFINITY;
    for (int w = 0; w < 3; w++) { /* warm-up; MGPO's first call perturbs nothing */
        double t0 = bench_now();
        run_once(c);
        one = fmin(one, bench_now() - t0);
    }
    long inner = one > 0 ? (long)(work / one) : 1;
    if (inner < 1) inner = 1;
    if (inner > 100000) inner = 100000;
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        for (long k = 0; k < inner; k++) run_once(c);
        best = fmin(best, (bench_now() - t0) / (double)inner);
    }
    mgpo_destroy(c->st);
    c->st = NULL;
    return best;
}

/* One AdamW step from the same start by the llm.c loop and by libmgpo agree
 * to float rounding (-Ofast's estimates included), so both do the same work. */
static bool same_work(float *const buf[6], size_t n)
{
    if (n > 100000) n = 100000;
    float *p = buf[2], *m = buf[3], *v = buf[4], *q = buf[5];
    memcpy(p, buf[0], n * sizeof(float));
    memcpy(q, buf[0], n * sizeof(float));
    memset(m, 0, n * sizeof(float));
    memset(v, 0, n * sizeof(float));
    llmc_adamw(p, buf[1], m, v, n, LR, BETA1, BETA2, EPS, 0.0f, 1);
    bench_case c = {MGPO_ADAMW, 1, 0, false, n, 1, q, buf[1], NULL, NULL, NULL};
    mgpo_state *st = make_state(&c);
    check(mgpo_step(st), "step");
    mgpo_destroy(st);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)p[i] - (double)q[i]));
    printf("one AdamW step, llm.c loop vs libmgpo: largest difference %.3g (lr %g)\n", worst,
           (double)LR);
    return worst <= 1e-3 * LR;
}

/* The L3 size as Linux reports it (sysconf's CPUID answer can be the
 * host's in a VM); 32 MiB when unknown. */
static long last_level_cache_bytes(void)
{
    long kib = 0;
    FILE *f = fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f) {
        if (fscanf(f, "%ldK", &kib) != 1) kib = 0;
        fclose(f);
    }
    return kib > 0 ? kib << 10 : 32l << 20;
}

/* ---- sweep ----------------------------------------------------------------- */

typedef struct row {
    size_t n, tensors;
    int threads;
    double sec[CASES];
} row;

static void run_row(row *r, const options *o, float *const buf[6], int round)
{
    for (int which = 0; which < CASES; which++) {
        bool omp = which == LLMC_ADAMW_OMP || which == LLMC_SGD_OMP;
        if (omp && r->threads == 1) {
            r->sec[which] = NAN;
            continue;
        }
        if (r->tensors > 1 && which != LLMC_ADAMW && which != MGPO_ADAMW && which != MGPO_FUSED &&
            which != MGPO_ITER) {
            r->sec[which] = NAN;
            continue;
        }
        bench_case c = {which, r->threads, 0, o->portable, r->n,
                        is_llmc(which) ? 1 : r->tensors, buf[2], buf[1], buf[3], buf[4], NULL};
        memcpy(c.params, buf[0], r->n * sizeof(float));
        memset(c.m, 0, r->n * sizeof(float));
        memset(c.v, 0, r->n * sizeof(float));
        double s = time_case(&c, o->reps);
        if (round == 0 || s < r->sec[which]) r->sec[which] = s;
    }
}

static void print_ratio(const char *what, double value, double limit)
{
    if (isnan(value)) return;
    printf("    %-44s %5.2f  (target <= %.2f) %s\n", what, value, limit,
           value <= limit ? "met" : "NOT met");
}

static void print_row(const row *r, size_t cache_floats)
{
    const char *label = r->tensors > 1 ? "tensors of 1000" : "one tensor";
    printf("\nN = %zu (%s), %d thread%s:\n", r->n, label, r->threads, r->threads > 1 ? "s" : "");
    for (int c = 0; c < CASES; c++) {
        if (isnan(r->sec[c])) continue;
        double ns = r->sec[c] * 1e9 / (double)r->n;
        printf("  %-16s %8.3f ns/param %7.2f GB/s (%2d floats/param)\n", case_names[c], ns,
               case_floats[c] * 4.0 * (double)r->n / r->sec[c] / 1e9, case_floats[c]);
    }
    /* In cache: the 7 (AdamW) arrays of N floats fit in the L2 + L3 measured. */
    double step_limit = r->n <= cache_floats && r->tensors == 1 ? 1.0 : 1.15;
    if (r->tensors > 1) step_limit = 1.0;
    const double *s = r->sec;
    print_ratio("mgpo_adamw / llmc_adamw", s[MGPO_ADAMW] / s[LLMC_ADAMW], step_limit);
    print_ratio("mgpo_iter_fused / llmc_adamw", s[MGPO_FUSED] / s[LLMC_ADAMW], 1.6);
    print_ratio("mgpo_iteration / llmc_adamw", s[MGPO_ITER] / s[LLMC_ADAMW], 1.6);
    print_ratio("mgpo_sgd / llmc_sgd", s[MGPO_SGD] / s[LLMC_SGD], step_limit);
    print_ratio("mgpo_sgd_iter / llmc_sgd", s[MGPO_SGD_ITER] / s[LLMC_SGD], 1.6);
    if (r->threads > 1) {
        print_ratio("mgpo_adamw / llmc_adamw_omp", s[MGPO_ADAMW] / s[LLMC_ADAMW_OMP], step_limit);
        print_ratio("mgpo_iter_fused / llmc_adamw_omp", s[MGPO_FUSED] / s[LLMC_ADAMW_OMP], 1.6);
        print_ratio("mgpo_iteration / llmc_adamw_omp", s[MGPO_ITER] / s[LLMC_ADAMW_OMP], 1.6);
        print_ratio("mgpo_sgd / llmc_sgd_omp", s[MGPO_SGD] / s[LLMC_SGD_OMP], step_limit);
        print_ratio("mgpo_sgd_iter / llmc_sgd_omp", s[MGPO_SGD_ITER] / s[LLMC_SGD_OMP], 1.6);
    }
}

int main(int argc, char **argv)
{
    options o;
    if (!parse_args(argc, argv, &o)) return EXIT_FAILURE;
    size_t small_n = (size_t)o.small * SMALL_FLOATS, max_n = small_n;
    for (int s = 0; s < o.size_count; s++)
        if (o.sizes[s] > max_n) max_n = o.sizes[s];
    /* 0: initial params, 1: grads, 2: params, 3, 4: llm.c's m and v */
    float *buf[6];
    for (int k = 0; k < 6; k++) buf[k] = alloc_floats(max_n);
    fill_random(buf[0], max_n, 1, 1.0f);
    fill_random(buf[1], max_n, 2, 1e-2f);

    int rows = (o.size_count + 1) * o.thread_count;
    row *table = calloc((size_t)rows, sizeof *table);
    if (!table) return EXIT_FAILURE;
    for (int s = 0; s <= o.size_count; s++)
        for (int t = 0; t < o.thread_count; t++) {
            row *r = &table[s * o.thread_count + t];
            r->n = s < o.size_count ? o.sizes[s] : small_n;
            r->tensors = s < o.size_count ? 1 : (size_t)o.small;
            r->threads = o.threads[t];
        }
    printf("libmgpo %s bench_llmc: best of %d round%s x %d timings, %s kernels%s\n",
           mgpo_version_string(), o.rounds, o.rounds > 1 ? "s" : "", o.reps,
           o.portable ? "portable" : mgpo_kernels_best()->name,
           o.short_mode ? " (--short: timings meaningless)" : "");
    if (!same_work(buf, max_n)) return EXIT_FAILURE;
    for (int round = 0; round < o.rounds; round++)
        for (int i = 0; i < rows; i++) run_row(&table[i], &o, buf, round);
    /* "In cache": llm.c's 7 arrays of N floats fit in the last-level cache. */
    long llc = last_level_cache_bytes();
    const size_t cache_floats = (size_t)llc / (7 * sizeof(float));
    printf("last-level cache %ld KiB: N <= %zu counts as in cache (target 1.0, else 1.15)\n",
           llc >> 10, cache_floats);
    for (int i = 0; i < rows; i++) print_row(&table[i], cache_floats);
    for (int k = 0; k < 6; k++) free(buf[k]);
    free(table);
    return EXIT_SUCCESS;
}
