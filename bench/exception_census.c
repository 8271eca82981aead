/* exception_census: how many elements the exact restore has to list.
 *
 *   exception_census [--short]
 *
 * For a few kinds of parameters, perturbation sizes and scopes, trains a
 * two-tensor AdamW model for a few MGPO iterations and prints the share of
 * perturbed elements that subtracting c*m would not give back bit-exactly
 * (the exception lists, docs/performance.md), and how many blocks fell back
 * to plain copies.  A report, not a test: nothing is asserted.  Uses the
 * internal census hook, so it links the static library and sees lib/. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static uint64_t rng_state = 88172645463325252u;

static double uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

static double gaussian(void)
{
    double a = uniform() + 1e-300, b = uniform();
    return sqrt(-2.0 * log(a)) * cos(6.283185307179586 * b);
}

typedef struct scenario {
    const char *params;
    double scale;   /* half-width (uniform) or standard deviation */
    int is_gaussian;
    double rho;
    mgpo_scope scope;
    size_t n;
} scenario;

static int run(const scenario *sc, int iterations)
{
    size_t n = sc->n, half = n / 2;
    float *p = malloc(n * sizeof *p), *g = malloc(n * sizeof *g);
    if (!p || !g) return 1;
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(sc->is_gaussian ? sc->scale * gaussian() : sc->scale * (2 * uniform() - 1));
    mgpo_config c = mgpo_config_default();
    c.lr = 1e-3;
    c.rho = sc->rho;
    c.scope = sc->scope;
    mgpo_state *st = NULL;
    if (mgpo_create(&st, &c, NULL) != MGPO_OK ||
        mgpo_add_tensor(st, p, g, half, NULL, NULL) != MGPO_OK ||
        mgpo_add_tensor(st, p + half, g + half, n - half, NULL, NULL) != MGPO_OK)
        return 1;
    size_t listed = 0, perturbed = 0, copies = 0, blocks = 0;
    for (int it = 0; it < iterations; it++) {
        if (mgpo_perturb(st) != MGPO_OK) return 1;
        mgpo_restore_census k = mgpo_internal_restore_census(st);
        if (it > 0) { /* the first iteration has no momentum: nothing moves */
            listed += k.exceptions;
            copies += k.copy_blocks;
            blocks += k.list_blocks + k.copy_blocks;
            perturbed += n;
        }
        /* A noisy quadratic: gradients 0.1 p + N(0, 0.01^2) at the nudged point. */
        for (size_t i = 0; i < n; i++) g[i] = (float)(0.01 * gaussian() + 0.1 * p[i]);
        if (mgpo_step(st) != MGPO_OK) return 1;
    }
    printf("  %-28s %5.2f  %-7s %9zu  %10.5f %%  %zu of %zu\n", sc->params, sc->rho,
           sc->scope == MGPO_SCOPE_GLOBAL ? "global" : "tensor", n,
           100.0 * (double)listed / (double)perturbed, copies, blocks);
    mgpo_destroy(st);
    free(p);
    free(g);
    return 0;
}

int main(int argc, char **argv)
{
    int short_mode = argc > 1 && !strcmp(argv[1], "--short");
    if (argc > 1 && !short_mode) {
        fprintf(stderr, "usage: %s [--short]\n", argv[0]);
        return 2;
    }
    const size_t big = short_mode ? 1u << 14 : 1u << 22, mid = 1u << 16;
    const scenario scenarios[] = {
        {"uniform in [-1, 1]", 1.0, 0, 0.05, MGPO_SCOPE_GLOBAL, big},
        {"N(0, 0.02^2)", 0.02, 1, 0.05, MGPO_SCOPE_GLOBAL, big},
        {"N(0, 0.02^2)", 0.02, 1, 0.5, MGPO_SCOPE_GLOBAL, big},
        {"N(0, 0.02^2)", 0.02, 1, 0.05, MGPO_SCOPE_TENSOR, mid},
        {"N(0, 0.02^2)", 0.02, 1, 0.5, MGPO_SCOPE_TENSOR, mid},
        {"N(0, 1e-4^2)", 1e-4, 1, 0.5, MGPO_SCOPE_TENSOR, mid},
        {"zeros at the start", 0.0, 0, 0.5, MGPO_SCOPE_TENSOR, mid},
        {"N(0, 0.02^2)", 0.02, 1, 2.0, MGPO_SCOPE_TENSOR, 4096},
    };
    printf("exception_census: AdamW lr 1e-3, two tensors, 6 iterations (5 perturbs counted)%s\n",
           short_mode ? " (--short)" : "");
    printf("  %-28s %5s  %-7s %9s  %12s  %s\n", "parameters", "rho", "scope", "N", "listed",
           "copy blocks");
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (run(&scenarios[i], 6) != 0) {
            fprintf(stderr, "exception_census: a libmgpo call failed\n");
            return 1;
        }
    return 0;
}
