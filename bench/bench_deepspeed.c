/* bench_deepspeed: libmgpo's AdamW step and MGPO iteration against
 * DeepSpeed's CPU Adam (Step_AVX<8>, the kernel of ZeRO-Offload, built as
 * DeepSpeed builds it: deepspeed_shim.cpp) and llm.c's update loop at llm.c's
 * -Ofast -march=native (llmc_loops.c), all in this one process.
 *
 *   bench_deepspeed [--sizes 128K,1M,4M,16M,64M] [--threads 1,2] [--reps 7]
 *                   [--rounds 3] [--huge-pages] [--short]
 *
 * Every time is the median of --rounds rounds, each the median of --reps
 * runs after three warm-up runs (the best single run is printed beside it); the rounds sweep every size, thread count
 * and case in turn, so a burst of load from elsewhere spoils one round of a
 * case, not all of them.  Ratios are of those medians (below 1: libmgpo is
 * faster).  The targets are issue 22's; "in cache" means N <= 1 Mi floats.
 * Without a DeepSpeed checkout (configure with -DMGPO_DEEPSPEED_DIR=...) the
 * DeepSpeed columns are skipped with the reason printed.  MGPO_KERNELS
 * (portable|avx2|avx512) picks libmgpo's kernel table.  Not a test: nothing
 * here asserts a speed (--short only keeps the program working under ctest).
 * --huge-pages: every array of 2 MiB or more, the benchmark's and the ones
 * libmgpo allocates (through mgpo_allocator), is 2 MiB-aligned and advised
 * MADV_HUGEPAGE, so that transparent huge pages back them when the kernel's
 * setting is "madvise"; on a VM, where a TLB miss walks two page tables,
 * this takes the page size out of the comparison at 16 and 64 Mi. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* madvise, MADV_HUGEPAGE */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_common.h"
#include "deepspeed_shim.h"
#include "internal.h" /* the state's kernel table name */
#include "llmc_loops.h"
#include "mgpo.h"

#define MAX_LIST 8
#define MAX_ROUNDS 15
#define WARMUP 3

enum { DS_F32, MGPO_ADAMW, MGPO_ITER, DS_BF16, MGPO_BF16, LLMC, CASES };
static const char *const case_names[CASES] = {"deepspeed_adam", "mgpo_adamw_step",
                                              "mgpo_iteration", "deepspeed_bf16",
                                              "mgpo_bf16_step", "llmc_loop"};
/* Bytes per parameter, each array read or written once. */
static const double case_bytes[CASES] = {28, 32, 44, 22, 30, 28};

static const float LR = 1e-3f, BETA1 = 0.9f, BETA2 = 0.999f, EPS = 1e-8f, WD = 0.0f;

typedef struct options {
    size_t sizes[MAX_LIST];
    int size_count, threads[MAX_LIST], thread_count, reps, rounds;
    bool short_mode, huge_pages;
} options;

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'K' || *end == 'k') v *= 1024.0;
    else if (*end == 'M' || *end == 'm') v *= 1024.0 * 1024.0;
    return v >= 1.0 ? (size_t)v : 0;
}

static bool parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 7;
    o->rounds = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--short")) {
            o->short_mode = true;
        } else if (!strcmp(argv[i], "--huge-pages")) {
            o->huge_pages = true;
        } else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            for (char *t = strtok(argv[++i], ","); t && o->size_count < MAX_LIST;
                 t = strtok(NULL, ","))
                if ((o->sizes[o->size_count] = parse_size(t)) > 0) o->size_count++;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            for (char *t = strtok(argv[++i], ","); t && o->thread_count < MAX_LIST;
                 t = strtok(NULL, ","))
                if ((o->threads[o->thread_count] = atoi(t)) > 0) o->thread_count++;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            o->reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            o->rounds = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--sizes 128K,1M] [--threads 1,2] [--reps 7] "
                            "[--rounds 3] [--huge-pages] [--short]\n", argv[0]);
            return false;
        }
    }
    if (o->reps < 1) o->reps = 1;
    if (o->rounds < 1) o->rounds = 1;
    if (o->rounds > MAX_ROUNDS) o->rounds = MAX_ROUNDS;
    if (o->short_mode) {
        o->size_count = 1;
        o->sizes[0] = 4096 * 3;
        o->reps = 2;
        o->rounds = 1;
    }
    if (o->size_count == 0) {
        static const size_t def[] = {128u << 10, 1u << 20, 4u << 20, 16u << 20, 64u << 20};
        for (int i = 0; i < 5; i++) o->sizes[o->size_count++] = def[i];
    }
    if (o->thread_count == 0) {
        o->threads[o->thread_count++] = 1;
        o->threads[o->thread_count++] = 2;
    }
    return true;
}

/* Set once from --huge-pages before any allocation. */
static bool huge_pages;

enum { HUGE_PAGE = 2u << 20 };

static void *xmalloc(size_t bytes)
{
    void *p;
    if (huge_pages && bytes >= HUGE_PAGE) {
        size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        p = aligned_alloc(HUGE_PAGE, rounded);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (p) (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: ignore a refusal */
#endif
    } else {
        p = malloc(bytes);
    }
    if (!p) {
        fprintf(stderr, "bench_deepspeed: out of memory for %zu bytes\n", bytes);
        exit(EXIT_FAILURE);
    }
    return p;
}

static void *state_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return xmalloc(size);
}

static void state_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

static const mgpo_allocator huge_page_allocator = {state_alloc, state_free, NULL};

static void check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) {
        fprintf(stderr, "bench_deepspeed: %s: %s\n", what, mgpo_strerror(s));
        exit(EXIT_FAILURE);
    }
}

/* The arrays of one case: float32 or bf16 params and grads, float32 m, v. */
typedef struct arrays {
    size_t n;
    float *p, *g, *m, *v;
    uint16_t *p16, *g16;
} arrays;

static uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static void fill(arrays *a, size_t n, bool bf16)
{
    memset(a, 0, sizeof *a);
    a->n = n;
    uint32_t s = 12345u;
    if (bf16) {
        a->p16 = xmalloc(n * sizeof *a->p16);
        a->g16 = xmalloc(n * sizeof *a->g16);
    } else {
        a->p = xmalloc(n * sizeof *a->p);
        a->g = xmalloc(n * sizeof *a->g);
    }
    a->m = xmalloc(n * sizeof *a->m);
    a->v = xmalloc(n * sizeof *a->v);
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float p = (float)(s >> 8) / 8388608.0f - 1.0f, g = 1e-2f * (p * 0.5f + 0.25f);
        if (bf16) {
            a->p16[i] = to_bf16(p);
            a->g16[i] = to_bf16(g);
        } else {
            a->p[i] = p;
            a->g[i] = g;
        }
        a->m[i] = 0.0f;
        a->v[i] = 0.0f;
    }
}

static void release(arrays *a)
{
    free(a->p);
    free(a->g);
    free(a->m);
    free(a->v);
    free(a->p16);
    free(a->g16);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static double minimum(const double *x, int n)
{
    double m = x[0];
    for (int i = 1; i < n; i++) m = x[i] < m || isnan(m) ? x[i] : m;
    return m;
}

/* Median seconds of one step of case c over n on `threads` threads; NAN
 * when the case cannot run (no DeepSpeed). */
static double time_case(int c, size_t n, int threads, int reps, const char **table, double *best)
{
    bool bf16 = c == DS_BF16 || c == MGPO_BF16;
    *best = NAN;
    if ((c == DS_F32 || c == DS_BF16) && ds_missing_reason()) return NAN;
    arrays a;
    fill(&a, n, bf16);
    mgpo_state *st = NULL;
    void *ds = NULL;
    if (c == MGPO_ADAMW || c == MGPO_ITER || c == MGPO_BF16) {
        mgpo_config cfg = mgpo_config_default();
        cfg.lr = LR;
        cfg.beta1 = BETA1;
        cfg.beta2 = BETA2;
        cfg.eps = EPS;
        cfg.weight_decay = WD;
        cfg.num_threads = threads;
        cfg.rho = c == MGPO_ITER ? 0.05 : 0.0;
        check(mgpo_create(&st, &cfg, huge_pages ? &huge_page_allocator : NULL), "create");
        *table = st->kernels->name;
        if (bf16)
            check(mgpo_add_tensor_typed(st, a.p16, MGPO_DTYPE_BFLOAT16, a.g16, MGPO_DTYPE_BFLOAT16,
                                        n, NULL, NULL),
                  "add_tensor_typed");
        else
            check(mgpo_add_tensor(st, a.p, a.g, n, NULL, NULL), "add_tensor");
    } else if (c == DS_F32 || c == DS_BF16) {
        ds = ds_adam_create(LR, BETA1, BETA2, EPS, WD);
    }
    double t[64];
    if (reps > 64) reps = 64;
    size_t step = 0;
    for (int r = -WARMUP; r < reps; r++) {
        double t0 = bench_now();
        step++;
        switch (c) {
        case DS_F32:
            if (!ds_adam_step_f32(ds, step, a.p, a.g, a.m, a.v, n, threads)) {
                fprintf(stderr, "bench_deepspeed: DeepSpeed step refused n=%zu\n", n);
                exit(EXIT_FAILURE);
            }
            break;
        case DS_BF16:
            if (!ds_adam_step_bf16(ds, step, a.p16, a.g16, a.m, a.v, n, threads)) {
                fprintf(stderr, "bench_deepspeed: DeepSpeed bf16 step refused n=%zu\n", n);
                exit(EXIT_FAILURE);
            }
            break;
        case MGPO_ADAMW:
        case MGPO_BF16: check(mgpo_step(st), "step"); break;
        case MGPO_ITER:
            check(mgpo_perturb(st), "perturb");
            check(mgpo_step(st), "step");
            break;
        case LLMC:
            if (threads == 1)
                llmc_adamw(a.p, a.g, a.m, a.v, n, LR, BETA1, BETA2, EPS, WD, (int)step);
            else
                llmc_adamw_omp(a.p, a.g, a.m, a.v, n, LR, BETA1, BETA2, EPS, WD, (int)step,
                               threads);
            break;
        default: break;
        }
        double dt = bench_now() - t0;
        if (r >= 0) t[r] = dt;
    }
    mgpo_destroy(st);
    if (ds) ds_adam_destroy(ds);
    release(&a);
    double m = median(t, reps);
    *best = t[0]; /* sorted by median() */
    return m;
}

/* DeepSpeed's step and libmgpo's give the same parameters to float rounding
 * (both AdamW, bias-corrected; they order the operations differently), so
 * the comparison is of equal work. */
static void same_work(void)
{
    if (ds_missing_reason()) return;
    const size_t n = 4096;
    arrays a, b;
    fill(&a, n, false);
    fill(&b, n, false);
    void *ds = ds_adam_create(LR, BETA1, BETA2, EPS, WD);
    mgpo_config cfg = mgpo_config_default();
    cfg.lr = LR;
    cfg.rho = 0.0;
    cfg.weight_decay = WD;
    mgpo_state *st = NULL;
    check(mgpo_create(&st, &cfg, NULL), "create");
    check(mgpo_add_tensor(st, b.p, b.g, n, NULL, NULL), "add_tensor");
    double worst = 0.0;
    for (size_t step = 1; step <= 3; step++) {
        ds_adam_step_f32(ds, step, a.p, a.g, a.m, a.v, n, 1);
        check(mgpo_step(st), "step");
    }
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a.p[i] - (double)b.p[i]));
    mgpo_destroy(st);
    ds_adam_destroy(ds);
    release(&a);
    release(&b);
    printf("same work: DeepSpeed and libmgpo parameters after 3 steps differ by at most %.3g "
           "(lr %g)\n", worst, (double)LR);
    if (worst > 1e-3 * LR) {
        fprintf(stderr, "bench_deepspeed: DeepSpeed and libmgpo disagree\n");
        exit(EXIT_FAILURE);
    }
}

static void verdict(const char *what, double value, double limit)
{
    if (isnan(value)) printf("  %-58s    -     (target <= %.2f)  skipped\n", what, limit);
    else printf("  %-58s %6.2f  (target <= %.2f)  %s\n", what, value, limit,
                value <= limit ? "met" : "NOT met");
}

int main(int argc, char **argv)
{
    options o;
    if (!parse_args(argc, argv, &o)) return EXIT_FAILURE;
    huge_pages = o.huge_pages;
    const char *table = "?";
    printf("libmgpo %s bench_deepspeed: median of %d round%s, each the median of %d runs after "
           "%d warm-up runs%s\n",
           mgpo_version_string(), o.rounds, o.rounds > 1 ? "s" : "", o.reps, WARMUP,
           o.short_mode ? " (--short: timings meaningless)" : "");
    if (o.huge_pages) printf("arrays of 2 MiB or more: 2 MiB-aligned, MADV_HUGEPAGE\n");
    if (ds_missing_reason())
        printf("DeepSpeed: skipped: %s\n", ds_missing_reason());
    else
        printf("DeepSpeed: Adam_Optimizer::Step_AVX<8> built with %s\n", ds_flags());
#ifdef _OPENMP
    printf("OpenMP: yes, %d processors\n", omp_get_num_procs());
#endif
    same_work();

    static double t[MAX_LIST][MAX_LIST][CASES][MAX_ROUNDS], tb[MAX_LIST][MAX_LIST][CASES][MAX_ROUNDS];
    for (int r = 0; r < o.rounds; r++)
        for (int s = 0; s < o.size_count; s++)
            for (int h = 0; h < o.thread_count; h++)
                for (int c = 0; c < CASES; c++)
                    t[s][h][c][r] = time_case(c, o.sizes[s], o.threads[h], o.reps, &table,
                                              &tb[s][h][c][r]);
    printf("libmgpo kernel table: %s\n\n", table);

    /* The median is the figure; the best run is printed beside it because
     * on a shared machine other jobs slow some runs down (never speed one
     * up), most of all with 2 threads on 2 cores. */
    printf("%10s %3s  %-16s %7s %9s %8s %9s %8s\n", "N", "thr", "case", "B/param", "ms", "GB/s",
           "best ms", "GB/s");
    static double med[MAX_LIST][MAX_LIST][CASES], low[MAX_LIST][MAX_LIST][CASES];
    for (int s = 0; s < o.size_count; s++)
        for (int h = 0; h < o.thread_count; h++)
            for (int c = 0; c < CASES; c++) {
                double x = med[s][h][c] = median(t[s][h][c], o.rounds);
                double b = low[s][h][c] = minimum(tb[s][h][c], o.rounds);
                if (isnan(x)) continue;
                printf("%10zu %3d  %-16s %7.0f %9.4f %8.2f %9.4f %8.2f\n", o.sizes[s],
                       o.threads[h], case_names[c], case_bytes[c], x * 1e3,
                       case_bytes[c] * (double)o.sizes[s] / x / 1e9, b * 1e3,
                       case_bytes[c] * (double)o.sizes[s] / b / 1e9);
            }
    printf("\nratios of medians (issue 22's targets: in cache is N <= 1 Mi floats):\n");
    for (int s = 0; s < o.size_count; s++)
        for (int h = 0; h < o.thread_count; h++) {
            const double *m = med[s][h];
            bool cached = o.sizes[s] <= (1u << 20);
            printf("N = %zu, %d thread%s:\n", o.sizes[s], o.threads[h], o.threads[h] > 1 ? "s" : "");
            const double *b = low[s][h];
            printf("  %-58s %6.2f  %6.2f  %6.2f  %6.2f\n",
                   "(ratios of best runs: step, iteration, bf16, llm.c)",
                   b[MGPO_ADAMW] / b[DS_F32], b[MGPO_ITER] / b[DS_F32], b[MGPO_BF16] / b[DS_BF16],
                   b[MGPO_ADAMW] / b[LLMC]);
            verdict("libmgpo AdamW step / DeepSpeed Adam step", m[MGPO_ADAMW] / m[DS_F32],
                    cached ? 1.00 : 1.15);
            verdict("MGPO iteration / DeepSpeed Adam step", m[MGPO_ITER] / m[DS_F32],
                    cached ? 1.40 : 1.60);
            verdict("bf16 AdamW step (master kept) / DeepSpeed bf16 step",
                    m[MGPO_BF16] / m[DS_BF16], cached ? 1.00 : 1.40);
            if (o.threads[h] == 1)
                verdict("libmgpo AdamW step / llm.c loop (-Ofast -march=native)",
                        m[MGPO_ADAMW] / m[LLMC], cached ? 1.00 : 1.15);
            else
                printf("  %-58s %6.2f\n", "libmgpo AdamW step / llm.c loop under omp parallel for",
                       m[MGPO_ADAMW] / m[LLMC]);
        }
    return EXIT_SUCCESS;
}
