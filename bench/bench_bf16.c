/* bench_bf16: libmgpo's mixed-precision step (bf16 parameters and
 * gradients, float32 master weights in the state) against llm.c's
 * mixed-precision AdamW update written as a C loop (bench/llmc_adamw_bf16.c,
 * built with llm.c's CPU flags), on the same data, in one process.
 *
 *   bench_bf16 [--sizes 1M,16M,64M] [--threads 1,2] [--reps 5] [--short]
 *
 * Cases, on one tensor of N parameters:
 *   llmc_bf16_port     gradient-norm pass + llm.c's adamw_update<bf16, bf16>
 *                      with stochastic rounding and clipping at 1.0
 *   mgpo_bf16_sr       mgpo_step, rho 0, max_grad_norm 1.0, stochastic rounding
 *   mgpo_bf16_nearest  the same with round-to-nearest-even
 *   mgpo_bf16_iter_sr  mgpo_perturb + mgpo_step, rho 0.05, stochastic rounding
 * Each moves 30 bytes per parameter in the step (r g; r g m v M, w m v M p),
 * the iteration 10 more (perturb: r M m, w p).  A figure is the best of
 * --reps timings, each of enough calls for about 20 ms, after warm-up calls.
 * Not a test: nothing here asserts a speed; --short only keeps it working. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_common.h"
#include "llmc_adamw_bf16.h"
#include "mgpo.h"

enum { LLMC, MGPO_SR, MGPO_NEAREST, MGPO_ITER_SR, CASES };
static const char *const case_names[CASES] = {"llmc_bf16_port", "mgpo_bf16_sr",
                                              "mgpo_bf16_nearest", "mgpo_bf16_iter_sr"};
static const double case_bytes[CASES] = {30, 30, 30, 40};

static const float LR = 1e-3f, BETA1 = 0.9f, BETA2 = 0.999f, EPS = 1e-8f, CLIP = 1.0f;

typedef struct buffers {
    size_t n;
    uint16_t *params, *grads; /* bf16, the caller's */
    float *master, *m, *v;    /* the llm.c loop's own state */
} buffers;

static void *alloc_or_die(size_t bytes)
{
    void *p = malloc(bytes);
    if (!p) {
        fprintf(stderr, "bench_bf16: out of memory for %zu bytes\n", bytes);
        exit(EXIT_FAILURE);
    }
    return p;
}

static void check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) {
        fprintf(stderr, "bench_bf16: %s: %s\n", what, mgpo_strerror(s));
        exit(EXIT_FAILURE);
    }
}

/* Parameters in [-1, 1) and gradients in [-0.01, 0.01) as bf16 (truncated). */
static void fill(buffers *b)
{
    uint32_t s = 12345u;
    for (size_t i = 0; i < b->n; i++) {
        s = s * 1664525u + 1013904223u;
        float p = (float)(s >> 8) / 8388608.0f - 1.0f, g = 0.01f * p * p - 0.004f;
        uint32_t u, v;
        memcpy(&u, &p, sizeof u);
        memcpy(&v, &g, sizeof v);
        b->params[i] = (uint16_t)(u >> 16);
        b->grads[i] = (uint16_t)(v >> 16);
    }
}

typedef struct bench_case {
    buffers *b;
    int which, threads, t;
    mgpo_state *st;
} bench_case;

static void run_once(bench_case *c)
{
    buffers *b = c->b;
    if (c->which == LLMC) {
        c->t++;
        llmc_adamw_bf16(b->params, b->master, b->grads, b->m, b->v, b->n, LR, BETA1, BETA2, EPS,
                        0.0f, CLIP, c->t, 0x9e3779b9u * (unsigned)c->t, c->threads);
        return;
    }
    if (c->which == MGPO_ITER_SR) check(mgpo_perturb(c->st), "perturb");
    check(mgpo_step(c->st), "step");
}

static mgpo_state *make_state(const bench_case *c)
{
    mgpo_config cfg = mgpo_config_default();
    cfg.lr = LR;
    cfg.beta1 = BETA1;
    cfg.beta2 = BETA2;
    cfg.eps = EPS;
    cfg.max_grad_norm = CLIP;
    cfg.num_threads = c->threads;
    cfg.rho = c->which == MGPO_ITER_SR ? 0.05 : 0.0;
    cfg.rounding = c->which == MGPO_NEAREST ? MGPO_ROUNDING_NEAREST : MGPO_ROUNDING_STOCHASTIC;
    mgpo_state *st = NULL;
    check(mgpo_create(&st, &cfg, NULL), "create");
    check(mgpo_add_tensor_typed(st, c->b->params, MGPO_DTYPE_BFLOAT16, c->b->grads,
                                MGPO_DTYPE_BFLOAT16, c->b->n, NULL, NULL),
          "add_tensor_typed");
    return st;
}

static double time_case(bench_case *c, int reps)
{
    buffers *b = c->b;
    fill(b);
    if (c->which == LLMC) {
        for (size_t i = 0; i < b->n; i++) {
            uint32_t u = (uint32_t)b->params[i] << 16;
            memcpy(&b->master[i], &u, sizeof u);
        }
        memset(b->m, 0, b->n * sizeof *b->m);
        memset(b->v, 0, b->n * sizeof *b->v);
        c->t = 0;
    } else {
        c->st = make_state(c);
    }
    for (int w = 0; w < 3; w++) run_once(c);
    double t0 = bench_now();
    run_once(c);
    double one = bench_now() - t0;
    int inner = one > 0 ? (int)(0.02 / one) + 1 : 1;
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        t0 = bench_now();
        for (int k = 0; k < inner; k++) run_once(c);
        best = fmin(best, (bench_now() - t0) / (double)inner);
    }
    mgpo_destroy(c->st);
    c->st = NULL;
    return best;
}

static int parse_list(char *list, size_t *sizes, int *ints)
{
    int count = 0;
    for (char *tok = strtok(list, ","); tok && count < 8; tok = strtok(NULL, ",")) {
        char *end;
        double v = strtod(tok, &end);
        if (*end == 'k' || *end == 'K') v *= 1024.0;
        else if (*end == 'M' || *end == 'm') v *= 1024.0 * 1024.0;
        if (v < 1.0) continue;
        if (sizes) sizes[count++] = (size_t)v;
        else ints[count++] = (int)v;
    }
    return count;
}

int main(int argc, char **argv)
{
    size_t sizes[8] = {1u << 20, 16u << 20, 64u << 20};
    int size_count = 3, threads[8] = {1, 2}, thread_count = 2, reps = 5;
    bool short_mode = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--short")) short_mode = true;
        else if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
            size_count = parse_list(argv[++i], sizes, NULL);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            thread_count = parse_list(argv[++i], NULL, threads);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--sizes 1M,16M,64M] [--threads 1,2] [--reps 5] [--short]\n",
                    argv[0]);
            return EXIT_FAILURE;
        }
    }
    if (short_mode) {
        sizes[0] = 3 * 4096 + 5;
        size_count = 1;
        thread_count = 1;
        reps = 1;
    }
    if (reps < 1) reps = 1;
    printf("libmgpo %s bench_bf16%s\n", mgpo_version_string(),
           short_mode ? " (--short: timings meaningless)" : "");
    printf("%10s %3s  %-18s %7s %9s %8s %9s\n", "N", "thr", "case", "B/param", "ns/param", "GB/s",
           "vs llm.c");
    for (int s = 0; s < size_count; s++) {
        buffers b;
        b.n = sizes[s];
        b.params = alloc_or_die(b.n * sizeof *b.params);
        b.grads = alloc_or_die(b.n * sizeof *b.grads);
        b.master = alloc_or_die(b.n * sizeof *b.master);
        b.m = alloc_or_die(b.n * sizeof *b.m);
        b.v = alloc_or_die(b.n * sizeof *b.v);
        for (int t = 0; t < thread_count; t++) {
            double sec[CASES];
            for (int c = 0; c < CASES; c++) {
                bench_case bc = {&b, c, threads[t], 0, NULL};
                sec[c] = time_case(&bc, reps);
                printf("%10zu %3d  %-18s %7.0f %9.3f %8.2f %8.2fx\n", b.n, threads[t],
                       case_names[c], case_bytes[c], sec[c] * 1e9 / (double)b.n,
                       case_bytes[c] * (double)b.n / sec[c] / 1e9, sec[c] / sec[LLMC]);
            }
        }
        free(b.params);
        free(b.grads);
        free(b.master);
        free(b.m);
        free(b.v);
    }
    return EXIT_SUCCESS;
}
