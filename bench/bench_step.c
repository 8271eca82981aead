/* bench_step: how close libmgpo's AdamW step and MGPO iteration come to the
 * machine's memory bandwidth, against bandwidth references that reach what
 * the machine can do (bandwidth_ref.h: vectorised for this CPU, on all its
 * threads, and glibc's memcpy) and a plain llm.c-style scalar AdamW loop,
 * over the same sizes and thread counts.
 *
 *   bench_step [--sizes 16M,64M] [--threads 1,2] [--reps 5] [--rounds 1]
 *              [--cases a,b] [--short]
 *
 * Every figure is the best of --reps timed runs after three warm-up runs, and
 * of --rounds sweeps over all sizes, thread counts and cases.
 * Bytes per parameter count each array read or written once (the STREAM
 * convention: a store's write-allocate read is not counted).  Every case is
 * reported as a fraction of the best reference at the same size (on all
 * threads, or on one when that was faster); a verdict against it is printed only when no peer loop (nor any
 * case) beats it (else the reference is no limit, and the line says so).  --short runs
 * tiny sizes so that ctest keeps this program compiling and working; its
 * timings mean nothing.  Not a test: nothing here asserts a speed. */
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

#include "bandwidth_ref.h"
#include "bench_common.h"
#include "mgpo.h"
#include "naive_adamw.h"

#define MAX_LIST 8

typedef struct options {
    size_t sizes[MAX_LIST];
    int size_count;
    int threads[MAX_LIST];
    int thread_count;
    int reps;
    int rounds;
    bool short_mode;
    bool skip[16]; /* cases left out by --cases */
    int all_threads; /* the references' thread count: every processor */
} options;

/* The cases, in table order; bytes moved per parameter. */
enum {
    NAIVE_LLMC, NAIVE, ADAMW, MGPO, MGPO_RESTORE, MGPO_LOWMEM,
    BF16_ADAMW, BF16_MGPO, BF16_MGPO_SR, CASES
};
static const char *const case_names[CASES] = {
    "naive_llmc_O2", "naive_hoisted_O2", "mgpo_adamw_step",
    "mgpo_iteration", "mgpo_iter_restore", "mgpo_iter_lowmem", "bf16_adamw_step",
    "bf16_iteration", "bf16_iteration_sr"};
/* naive: r p g m v, w p m v.
 * libmgpo step: pass 1 r g; pass 2 r p g m v, w p m v.  exact perturb: r p m,
 * w p (and the exception list, a few bytes: not counted); its step reads p in
 * place and undoes c*m as it reads (the same traffic as a plain step).
 * explicit restore: r p m, w p.  low-memory mode: the same as exact, with no
 * list.  bf16 (params and grads bf16, float32 master M in the state): step
 * pass 1 r g (2); pass 2 r M g m v (14), w M m v and the bf16 params (14);
 * perturb r M m (8), w the bf16 params (2). */
static const double case_bytes[CASES] = {28, 28, 32, 44, 56, 44, 30, 40, 40};
static const char *const case_notes[CASES] = {
    "llm.c gpt2_update loop as written (powf per element)",
    "same loop, bias corrections hoisted",
    "mgpo_step, rho = 0 (norm pass + fused update)",
    "mgpo_perturb + mgpo_step (restore fused into the step)",
    "mgpo_perturb + mgpo_restore + mgpo_step",
    "as mgpo_iteration, MGPO_RESTORE_LOW_MEMORY",
    "mgpo_step, bf16 params and grads, rho = 0",
    "mgpo_perturb + mgpo_step, bf16 params and grads",
    "as bf16_iteration, stochastic rounding"};

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'K' || *end == 'k') v *= 1024.0;
    else if (*end == 'M' || *end == 'm') v *= 1024.0 * 1024.0;
    else if (*end == 'G' || *end == 'g') v *= 1024.0 * 1024.0 * 1024.0;
    return v >= 1.0 ? (size_t)v : 0;
}

static bool parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 5;
    o->rounds = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--short")) {
            o->short_mode = true;
        } else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            char *list = argv[++i];
            for (char *tok = strtok(list, ","); tok && o->size_count < MAX_LIST;
                 tok = strtok(NULL, ","))
                if ((o->sizes[o->size_count] = parse_size(tok)) > 0) o->size_count++;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            char *list = argv[++i];
            for (char *tok = strtok(list, ","); tok && o->thread_count < MAX_LIST;
                 tok = strtok(NULL, ","))
                if ((o->threads[o->thread_count] = atoi(tok)) > 0) o->thread_count++;
        } else if (!strcmp(argv[i], "--cases") && i + 1 < argc) {
            const char *list = argv[++i];
            for (int c = 0; c < CASES; c++) {
                const char *at = strstr(list, case_names[c]);
                size_t len = strlen(case_names[c]);
                o->skip[c] = !(at && (at == list || at[-1] == ',') &&
                               (at[len] == ',' || at[len] == '\0'));
            }
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            o->reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            o->rounds = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--sizes 16M,64M] [--threads 1,2] [--reps 5] [--rounds 1] "
                    "[--cases mgpo_adamw_step,...] [--short]\n",
                    argv[0]);
            return false;
        }
    }
    if (o->reps < 1) o->reps = 1;
    if (o->rounds < 1) o->rounds = 1;
    if (o->short_mode) {
        o->size_count = 1;
        o->sizes[0] = 3 * 4096 + 5;
        o->reps = 2;
    }
    if (o->size_count == 0) {
        o->sizes[0] = 16u << 20;
        o->sizes[1] = 64u << 20;
        o->size_count = 2;
    }
    o->all_threads = 1;
#ifdef _OPENMP
    o->all_threads = omp_get_num_procs();
#endif
    if (o->thread_count == 0) {
        o->threads[o->thread_count++] = 1;
#ifdef _OPENMP
        if (omp_get_num_procs() > 1) o->threads[o->thread_count++] = omp_get_num_procs();
#endif
    }
    return true;
}

/* ---- buffers ------------------------------------------------------------ */

typedef struct buffers {
    size_t n;
    float *params, *grads;     /* the caller's, given to libmgpo */
    uint16_t *params16, *grads16; /* the same as bfloat16 (truncated) */
    float *a, *b, *c;          /* STREAM arrays; then the naive loop's p, m, v */
} buffers;

static float *alloc_floats(size_t n)
{
    /* malloc, as a C trainer would: only 16-byte aligned. */
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_step: out of memory for %zu floats\n", n);
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

/* ---- timing ------------------------------------------------------------- */

typedef struct run_ctx {
    buffers *buf;
    int threads;
    int t;                 /* naive loop's step counter */
    mgpo_state *st;
    int which;
} run_ctx;

static const float LR = 1e-3f, BETA1 = 0.9f, BETA2 = 0.999f, EPS = 1e-8f;

static void check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) {
        fprintf(stderr, "bench_step: %s: %s\n", what, mgpo_strerror(s));
        exit(EXIT_FAILURE);
    }
}

static void run_once(run_ctx *x)
{
    buffers *b = x->buf;
    switch (x->which) {
    case NAIVE_LLMC:
        naive_adamw_llmc(b->a, b->grads, b->b, b->c, b->n, LR, BETA1, BETA2, EPS, 0.0f, ++x->t,
                         x->threads);
        break;
    case NAIVE:
        naive_adamw_hoisted(b->a, b->grads, b->b, b->c, b->n, LR, BETA1, BETA2, EPS, 0.0f,
                            ++x->t, x->threads);
        break;
    case ADAMW:
    case BF16_ADAMW: check(mgpo_step(x->st), "step"); break;
    case MGPO:
    case MGPO_LOWMEM:
    case BF16_MGPO:
    case BF16_MGPO_SR:
        check(mgpo_perturb(x->st), "perturb");
        check(mgpo_step(x->st), "step");
        break;
    default:
        check(mgpo_perturb(x->st), "perturb");
        check(mgpo_restore(x->st), "restore");
        check(mgpo_step(x->st), "step");
        break;
    }
}

static mgpo_state *make_state(buffers *b, int which, int threads)
{
    mgpo_config c = mgpo_config_default();
    c.lr = LR;
    c.beta1 = BETA1;
    c.beta2 = BETA2;
    c.eps = EPS;
    c.num_threads = threads;
    c.rho = which == ADAMW || which == BF16_ADAMW ? 0.0 : 0.05;
    if (which == MGPO_LOWMEM) c.restore_mode = MGPO_RESTORE_LOW_MEMORY;
    if (which == BF16_MGPO_SR) c.rounding = MGPO_ROUNDING_STOCHASTIC;
    mgpo_state *st = NULL;
    check(mgpo_create(&st, &c, NULL), "create");
    if (which >= BF16_ADAMW)
        check(mgpo_add_tensor_typed(st, b->params16, MGPO_DTYPE_BFLOAT16, b->grads16,
                                    MGPO_DTYPE_BFLOAT16, b->n, NULL, NULL),
              "add_tensor_typed");
    else
        check(mgpo_add_tensor(st, b->params, b->grads, b->n, NULL, NULL), "add_tensor");
    return st;
}

/* Best seconds over reps after WARMUP untimed calls.  Freshly allocated
 * memory is slow for its first few passes on the machine measured (page
 * faults, and the hypervisor backing the pages), and MGPO's first call
 * perturbs nothing (no momentum yet), so one warm-up call is not enough. */
#define WARMUP 3
static double time_case(buffers *b, int which, int threads, int reps)
{
    run_ctx x;
    memset(&x, 0, sizeof x);
    x.buf = b;
    x.threads = threads;
    x.which = which;
    if (which == NAIVE || which == NAIVE_LLMC) {
        memcpy(b->a, b->params, b->n * sizeof(float));
        memset(b->b, 0, b->n * sizeof(float));
        memset(b->c, 0, b->n * sizeof(float));
    }
    if (which >= ADAMW) x.st = make_state(b, which, threads);
    if (which == NAIVE_LLMC && reps > 2) reps = 2; /* slow; variance is small */
    for (int w = 0; w < WARMUP; w++) run_once(&x);
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        run_once(&x);
        double dt = bench_now() - t0;
        if (dt < best) best = dt;
    }
    mgpo_destroy(x.st);
    return best;
}

/* One step from the same start with the naive loop and with libmgpo agree
 * (to float rounding: the two order the bias corrections differently), so the
 * benchmark compares equal work. */
static bool same_work(buffers *b)
{
    size_t n = b->n < 100000 ? b->n : 100000;
    float *saved = alloc_floats(n);
    memcpy(saved, b->params, n * sizeof(float));
    memcpy(b->a, b->params, n * sizeof(float));
    memset(b->b, 0, n * sizeof(float));
    memset(b->c, 0, n * sizeof(float));
    naive_adamw_hoisted(b->a, b->grads, b->b, b->c, n, LR, BETA1, BETA2, EPS, 0.0f, 1, 1);
    mgpo_config c = mgpo_config_default();
    c.lr = LR;
    c.rho = 0.0;
    mgpo_state *st = NULL;
    check(mgpo_create(&st, &c, NULL), "create");
    check(mgpo_add_tensor(st, b->params, b->grads, n, NULL, NULL), "add_tensor");
    check(mgpo_step(st), "step");
    mgpo_destroy(st);
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)b->params[i] - (double)b->a[i]);
        if (d > worst) worst = d;
    }
    memcpy(b->params, saved, n * sizeof(float));
    free(saved);
    if (worst > 1e-3 * LR) {
        fprintf(stderr, "bench_step: libmgpo and the naive loop disagree by %g\n", worst);
        return false;
    }
    return true;
}

/* ---- report ------------------------------------------------------------- */

typedef struct result {
    size_t n;
    int threads;
    double seconds[CASES];
    double ref[BW_KINDS]; /* GB/s of each reference at this size: all threads or one */
} result;

static double ns_per_param(const result *r, int c) { return r->seconds[c] * 1e9 / (double)r->n; }
static double gbps(const result *r, int c, double bytes)
{
    return bytes * (double)r->n / r->seconds[c] / 1e9;
}

/* The best reference at the row's size, and its name. */
static double reference(const result *r, const char **name)
{
    int best = 0;
    for (int k = 1; k < BW_KINDS; k++)
        if (r->ref[k] > r->ref[best]) best = k;
    if (name) *name = bw_name(best);
    return r->ref[best];
}

/* A verdict against a limit; none against a bandwidth reference that a peer
 * loop beats (`beaten_by` names it): that reference is not the limit. */
static void print_verdict(const char *what, double value, double limit, bool at_most,
                          const char *beaten_by)
{
    if (isnan(value)) {
        printf("  %-52s      -  (target %s %.2f)  not run (--cases)\n", what, at_most ? "<=" : ">=",
               limit);
        return;
    }
    bool met = at_most ? value <= limit : value >= limit;
    printf("  %-52s %6.2f  (target %s %.2f)  ", what, value, at_most ? "<=" : ">=", limit);
    if (beaten_by) printf("no verdict: %s beats the reference\n", beaten_by);
    else printf("%s\n", met ? "met" : "NOT met");
}

/* a / b of two cases' times; NaN when either case was not run (+inf). */
static double time_ratio(double a, double b)
{
    return a < INFINITY && b < INFINITY ? a / b : NAN;
}

static void print_ratios(const result *r)
{
    const char *ref_name;
    double ref = reference(r, &ref_name);
    /* A peer loop, or any case, that moves more than the reference shows it
     * is not the limit (on a shared machine a reference can miss the quiet
     * moments a case caught). */
    const char *beaten_by = NULL;
    for (int c = 0; c < CASES; c++)
        if (r->seconds[c] < INFINITY && gbps(r, c, case_bytes[c]) > ref) beaten_by = case_names[c];
    printf("ratios for N = %zu, %d thread%s (reference: %s, %.2f GB/s):\n", r->n,
           r->threads, r->threads > 1 ? "s" : "", ref_name, ref);
    print_verdict("MGPO iteration / libmgpo AdamW step", time_ratio(r->seconds[MGPO], r->seconds[ADAMW]),
                  1.6, true, NULL);
    print_verdict("AdamW step bandwidth (32 B/param) / reference",
                  gbps(r, ADAMW, case_bytes[ADAMW]) / ref, 0.85, false, beaten_by);
    print_verdict("libmgpo AdamW step / naive loop (hoisted)",
                  time_ratio(r->seconds[ADAMW], r->seconds[NAIVE]), 1.0, true, NULL);
    print_verdict("MGPO iteration / naive loop (hoisted)",
                  time_ratio(r->seconds[MGPO], r->seconds[NAIVE]), 1.7, true, NULL);
    print_verdict("libmgpo AdamW step / naive loop (llm.c as written)",
                  time_ratio(r->seconds[ADAMW], r->seconds[NAIVE_LLMC]), 1.0, true, NULL);
    print_verdict("MGPO iteration / naive loop (llm.c as written)",
                  time_ratio(r->seconds[MGPO], r->seconds[NAIVE_LLMC]), 1.7, true, NULL);
    /* Mixed precision (no targets: reported beside the float32 rows). */
    printf("  %-52s %6.2f\n", "bf16 AdamW step / float32 AdamW step",
           time_ratio(r->seconds[BF16_ADAMW], r->seconds[ADAMW]));
    printf("  %-52s %6.2f\n", "bf16 MGPO iteration / float32 MGPO iteration",
           time_ratio(r->seconds[BF16_MGPO], r->seconds[MGPO]));
    printf("  %-52s %6.2f\n", "bf16 iteration, stochastic / nearest rounding",
           time_ratio(r->seconds[BF16_MGPO_SR], r->seconds[BF16_MGPO]));
}

static void run_size(const options *o, size_t n, result *row, int round)
{
    buffers b;
    b.n = n;
    b.params = alloc_floats(n);
    b.grads = alloc_floats(n);
    b.a = alloc_floats(n);
    b.b = alloc_floats(n);
    b.c = alloc_floats(n);
    fill_random(b.params, n, 1, 1.0f);
    fill_random(b.grads, n, 2, 1e-2f);
    fill_random(b.a, n, 3, 1.0f);
    fill_random(b.b, n, 4, 1.0f);
    fill_random(b.c, n, 5, 1.0f);
    b.params16 = malloc(n * sizeof *b.params16);
    b.grads16 = malloc(n * sizeof *b.grads16);
    if (!b.params16 || !b.grads16) {
        fprintf(stderr, "bench_step: out of memory for %zu bf16 values\n", n);
        exit(EXIT_FAILURE);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t u, v;
        memcpy(&u, &b.params[i], sizeof u);
        memcpy(&v, &b.grads[i], sizeof v);
        b.params16[i] = (uint16_t)(u >> 16);
        b.grads16[i] = (uint16_t)(v >> 16);
    }
    if (round == 0 && !same_work(&b)) exit(EXIT_FAILURE);
    /* The references on all threads and on one, once per size and round;
     * the better of the two (on a shared machine one thread can beat two). */
    double ref[BW_KINDS];
    for (int k = 0; k < BW_KINDS; k++) {
        ref[k] = bw_measure(k, n, o->all_threads, o->reps);
        if (o->all_threads > 1) ref[k] = fmax(ref[k], bw_measure(k, n, 1, o->reps));
    }
    for (int t = 0; t < o->thread_count; t++) {
        result *r = &row[t];
        r->n = n;
        r->threads = o->threads[t];
        for (int k = 0; k < BW_KINDS; k++)
            if (round == 0 || ref[k] > r->ref[k]) r->ref[k] = ref[k];
        for (int c = 0; c < CASES; c++) {
            /* A case left out counts as infinitely slow in the ratios. */
            double sec = o->skip[c] ? INFINITY : time_case(&b, c, r->threads, o->reps);
            if (round == 0 || sec < r->seconds[c]) r->seconds[c] = sec;
        }
    }
    free(b.params);
    free(b.grads);
    free(b.a);
    free(b.b);
    free(b.c);
    free(b.params16);
    free(b.grads16);
}

int main(int argc, char **argv)
{
    options o;
    if (!parse_args(argc, argv, &o)) return EXIT_FAILURE;
    result results[MAX_LIST * MAX_LIST];
    int result_count = o.size_count * o.thread_count;

    printf("libmgpo %s bench_step: best of %d round%s x %d runs, each after %d warm-up runs%s\n",
           mgpo_version_string(), o.rounds, o.rounds > 1 ? "s" : "", o.reps, WARMUP,
           o.short_mode ? " (--short: timings meaningless)" : "");
#ifdef _OPENMP
    printf("OpenMP: yes, %d processors\n", omp_get_num_procs());
#else
    printf("OpenMP: no (thread counts above 1 run serially)\n");
#endif
    printf("references: %s loops on %d thread%s and on 1 (the better counts); fractions are "
           "of the best one\n", bw_isa(), o.all_threads, o.all_threads > 1 ? "s" : "");
    for (int k = 0; k < BW_KINDS; k++)
        printf("  %-18s %2.0f B/elem\n", bw_name(k), bw_bytes(k));
    printf("cases:\n");
    for (int c = 0; c < CASES; c++)
        printf("  %-18s %2.0f B/param  %s\n", case_names[c], case_bytes[c], case_notes[c]);

    /* Rounds sweep everything in turn, so a burst of other load on the
     * machine spoils one round of a case rather than all of its runs. */
    for (int round = 0; round < o.rounds; round++)
        for (int s = 0; s < o.size_count; s++)
            run_size(&o, o.sizes[s], &results[s * o.thread_count], round);

    printf("\n%10s %3s  %-18s %7s %9s %8s %7s\n", "N", "thr", "case", "B/param", "ns/param",
           "GB/s", "of ref");
    for (int i = 0; i < result_count; i++) {
        if (results[i].threads == o.threads[0])
            for (int k = 0; k < BW_KINDS; k++)
                printf("%10zu %3s  %-18s %7.0f %9s %8.2f %7.2f\n", results[i].n, "ref",
                       bw_name(k), bw_bytes(k), "-", results[i].ref[k],
                       results[i].ref[k] / reference(&results[i], NULL));
        for (int c = 0; c < CASES; c++)
            if (!o.skip[c])
                printf("%10zu %3d  %-18s %7.0f %9.3f %8.2f %7.2f\n", results[i].n,
                       results[i].threads, case_names[c], case_bytes[c],
                       ns_per_param(&results[i], c), gbps(&results[i], c, case_bytes[c]),
                       gbps(&results[i], c, case_bytes[c]) / reference(&results[i], NULL));
    }

    printf("\n");
    for (int i = 0; i < result_count; i++) print_ratios(&results[i]);
    for (int i = 0; i < result_count; i++)
        for (int j = 0; j < result_count; j++)
            if (results[i].n == results[j].n && results[i].threads == 1 &&
                results[j].threads == 2)
                printf("2-thread speed-up at N = %zu: AdamW step %.2fx, MGPO iteration %.2fx\n",
                       results[i].n, results[i].seconds[ADAMW] / results[j].seconds[ADAMW],
                       results[i].seconds[MGPO] / results[j].seconds[MGPO]);
    return EXIT_SUCCESS;
}
