/* bench_kernels: each kernel of each table this CPU runs, on one block
 * (MGPO_BLOCK_FLOATS floats, in L1/L2) or a span of blocks, on one thread,
 * without the state's per-call work (floating-point environment, block
 * loop, OpenMP): where the time of a step goes, kernel by kernel.
 *
 *   bench_kernels [--floats N] [--reps R] [--short]
 *
 * Prints the median ns per element of R timed passes over N floats (block
 * by block, as the library calls the kernels).  Uses the library's internal
 * tables (lib/kernels.h).  Not a test: nothing here asserts a speed. */
#define _POSIX_C_SOURCE 200809L
#define _ISOC11_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "internal.h"

enum { SUM_SQUARES, PERTURB, PERTURB_EXACT, ADAMW, ADAMW_UNDO, SGD, SUM_SQUARES_BF16,
       ADAMW_BF16, LOAD_BF16, STORE_BF16, STORE_SR_BF16, KERNELS };
static const char *const names[KERNELS] = {
    "sum_squares (pass 1)", "perturb (plain)", "perturb_exact", "adamw", "adamw + undo",
    "sgd momentum", "sum_squares_typed bf16", "adamw_typed bf16", "load bf16", "store bf16",
    "store_stochastic bf16"};

typedef struct arrays {
    float *p, *g, *m, *v, *backup;
    uint16_t *h, *gh;
} arrays;

static float *floats(size_t n)
{
    float *x = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!x) exit(EXIT_FAILURE);
    return x;
}

static double sink;

static void run(const mgpo_kernels *k, int which, arrays *a, size_t n, mgpo_slot *slot,
                const mgpo_step_constants *c)
{
    const mgpo_typed_rounding nearest = {false, 0, 0}, sr = {true, 12345, 0};
    (void)sr;
    for (size_t b = 0; b < n; b += MGPO_BLOCK_FLOATS) {
        size_t len = n - b < MGPO_BLOCK_FLOATS ? n - b : MGPO_BLOCK_FLOATS;
        float *p = a->p + b, *g = a->g + b, *m = a->m + b, *v = a->v + b;
        switch (which) {
        case SUM_SQUARES: sink += k->sum_squares(g, len); break;
        case PERTURB: k->perturb(p, NULL, m, 1e-3f, len, false); break;
        case PERTURB_EXACT:
            k->perturb_exact(p, a->backup + b, m, 1e-3f, len);
            k->perturb(p, NULL, m, -1e-3f, len, false); /* keep p from drifting */
            break;
        case ADAMW: sink += k->adamw(p, p, g, m, v, slot, c, len, 0.0f, NULL); break;
        case ADAMW_UNDO: sink += k->adamw(p, p, g, m, v, slot, c, len, 1e-3f, NULL); break;
        case SGD: sink += k->sgd(p, p, g, m, slot, c, len, 0.0f, NULL); break;
        case SUM_SQUARES_BF16:
            sink += k->sum_squares_typed(a->gh + b, MGPO_DTYPE_BFLOAT16, len, 1.0f);
            break;
        case ADAMW_BF16:
            sink += k->adamw_typed(p, a->gh + b, MGPO_DTYPE_BFLOAT16, 1.0f, m, v, a->h + b,
                                   MGPO_DTYPE_BFLOAT16, &nearest, slot, c, len);
            break;
        case LOAD_BF16: k->load(a->backup + b, a->h + b, MGPO_DTYPE_BFLOAT16, len, 1.0f); break;
        case STORE_BF16: k->store(a->h + b, MGPO_DTYPE_BFLOAT16, p, len); break;
        case STORE_SR_BF16:
            k->store_stochastic(a->h + b, MGPO_DTYPE_BFLOAT16, p, len, 12345, b);
            break;
        default: break;
        }
    }
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
    size_t n = MGPO_BLOCK_FLOATS;
    int reps = 201;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--floats") && i + 1 < argc) n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--short")) reps = 3;
        else {
            fprintf(stderr, "usage: %s [--floats N] [--reps R] [--short]\n", argv[0]);
            return EXIT_FAILURE;
        }
    }
    if (n < 1) n = 1;
    if (reps < 1) reps = 1;
    if (reps > 1001) reps = 1001;
    arrays a = {floats(n), floats(n), floats(n), floats(n), floats(n), NULL, NULL};
    a.h = malloc(n * sizeof *a.h);
    a.gh = malloc(n * sizeof *a.gh);
    if (!a.h || !a.gh) return EXIT_FAILURE;
    mgpo_slot slot;
    memset(&slot, 0, sizeof slot);
    slot.k_decay = 0.9999f;
    slot.k_step = -1e-3f;
    slot.k_lr = -1e-3f;
    mgpo_step_constants c;
    memset(&c, 0, sizeof c);
    c.grad_scale = 1.0f;
    c.beta1 = 0.9f;
    c.one_minus_beta1 = 0.1f;
    c.beta2 = 0.999f;
    c.one_minus_beta2 = 0.001f;
    c.inv_bias2_sqrt = 1.0f;
    c.eps = 1e-8f;
    c.momentum = 0.9f;
    c.one_minus_dampening = 1.0f;

    for (size_t i = 0; i < n; i++) {
        a.p[i] = 1.0f;
        a.g[i] = a.m[i] = a.v[i] = a.backup[i] = 0.0f;
    }
    const mgpo_kernels *tables[8];
    size_t count = mgpo_kernels_runnable(tables, 8);
    if (count > 8) count = 8;
    printf("bench_kernels: median ns/element of %d passes over %zu floats (%zu-float blocks), "
           "one thread\n%-24s", reps, n, (size_t)MGPO_BLOCK_FLOATS, "kernel");
    for (size_t t = 0; t < count; t++) printf(" %9s", tables[t]->name);
    printf("\n");
    static double times[1001];
    /* Half a second of work first: the first kernel timed should not pay
     * for the clock ramping up. */
    for (double t0 = bench_now(); bench_now() - t0 < 0.5;)
        run(tables[0], ADAMW, &a, n, &slot, &c);
    for (int w = 0; w < KERNELS; w++) {
        printf("%-24s", names[w]);
        for (size_t t = 0; t < count; t++) {
            for (size_t i = 0; i < n; i++) {
                a.p[i] = 1.0f + (float)(i % 97) * 1e-3f;
                a.g[i] = 1e-3f * (float)((int)(i % 31) - 15);
                a.m[i] = 1e-4f * (float)(i % 7);
                a.v[i] = 1e-6f * (float)(i % 5 + 1);
                a.gh[i] = (uint16_t)(mgpo_float_bits(a.g[i]) >> 16);
                a.h[i] = (uint16_t)(mgpo_float_bits(a.p[i]) >> 16);
            }
            run(tables[t], w, &a, n, &slot, &c); /* warm-up */
            for (int r = 0; r < reps; r++) {
                double t0 = bench_now();
                run(tables[t], w, &a, n, &slot, &c);
                times[r] = bench_now() - t0;
            }
            qsort(times, (size_t)reps, sizeof times[0], cmp);
            printf(" %9.4f", times[reps / 2] * 1e9 / (double)n);
        }
        printf("\n");
    }
    free(a.p);
    free(a.g);
    free(a.m);
    free(a.v);
    free(a.backup);
    free(a.h);
    free(a.gh);
    return sink == 12345.678 ? EXIT_FAILURE : EXIT_SUCCESS;
}
