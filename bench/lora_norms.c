/* Benchmark: the momentum norm ||D||_F of a LoRA pair, D = s*(m_B A + B m_A),
 * through the library's 2r x 2r Gram identity against forming D explicitly
 * (n_out x n_in floats, as a torch reference would) and summing its squares.
 * Also times the base-mode perturbation W += c*D for reference.
 *
 *   lora_norms            (n_out, n_in, r) = (4096, 4096, 8) and (4096, 4096, 64)
 *   lora_norms --short    small sizes, for ctest: checks that both norms agree
 *
 * Prints one line per size (best CPU time of a few runs); exits nonzero only
 * if the two norms disagree. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "mgpo.h"

/* Process CPU time: the timed code is single-threaded, and CPU time stays
 * meaningful on a machine shared with other jobs, where wall time does not. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill(uint64_t *s, float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        x[i] = scale * (float)((double)(*s >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
}

/* The straightforward way: D in float, row by row, then its sum of squares. */
static double explicit_sq(const float *a, const float *b, const float *ma, const float *mb,
                          float *d, size_t n_out, size_t n_in, size_t r, float s)
{
    for (size_t i = 0; i < n_out; i++) {
        float *di = d + i * n_in;
        memset(di, 0, n_in * sizeof *di);
        for (size_t k = 0; k < r; k++) {
            const float x = mb[i * r + k], y = b[i * r + k];
            const float *ak = a + k * n_in, *mak = ma + k * n_in;
            for (size_t j = 0; j < n_in; j++) di[j] += x * ak[j] + y * mak[j];
        }
        for (size_t j = 0; j < n_in; j++) di[j] *= s;
    }
    return mgpo_sum_squares(d, n_out * n_in);
}

/* Best time of `reps` runs of the selected method; *value gets its result. */
typedef enum method { GRAM, EXPLICIT, BASE_PERTURB } method;

static double time_method(method m, mgpo_state *st, const float *bufs[4], float *d,
                          const mgpo_lora_pair *p, int reps, double *value)
{
    double best = INFINITY;
    for (int k = 0; k < reps; k++) {
        double t0 = now();
        if (m == GRAM) {
            *value = mgpo_lora_momentum_sq(st, &st->items[0]);
        } else if (m == EXPLICIT) {
            *value = explicit_sq(bufs[0], bufs[1], bufs[2], bufs[3], d, p->n_out, p->n_in,
                                 p->rank, (float)p->scaling);
        } else {
            mgpo_lora_base_perturb(st, &st->items[0], 0.01f);
            mgpo_lora_base_restore(st, &st->items[0]);
        }
        double t = now() - t0;
        if (t < best) best = t;
    }
    return best;
}

static int run(size_t n_out, size_t n_in, size_t r, int reps)
{
    uint64_t seed = 0x2545f4914f6cdd1dull;
    size_t na = r * n_in, nb = n_out * r, nw = n_out * n_in;
    float *a = malloc(na * sizeof(float)), *b = malloc(nb * sizeof(float));
    float *w = malloc(nw * sizeof(float)), *d = malloc(nw * sizeof(float));
    if (!a || !b || !w || !d) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    fill(&seed, a, na, 0.02f);
    fill(&seed, b, nb, 0.02f);
    fill(&seed, w, nw, 0.02f);

    mgpo_state *st = NULL;
    mgpo_lora_pair p = {a, NULL, b, NULL, w, r, n_in, n_out, 16.0 / (double)r, MGPO_LORA_BASE};
    if (mgpo_create(&st, NULL, NULL) != MGPO_OK ||
        mgpo_add_lora_pair(st, &p, NULL, NULL) != MGPO_OK) {
        fprintf(stderr, "registration failed\n");
        return 1;
    }
    float *ma = st->slots[0].m, *mb = st->slots[1].m;
    fill(&seed, ma, na, 0.001f);
    fill(&seed, mb, nb, 0.001f);
    const float *bufs[4] = {a, b, ma, mb};

    double gram_sq = 0.0, explicit_value = 0.0, unused = 0.0;
    double t_gram = time_method(GRAM, st, bufs, d, &p, reps * 5, &gram_sq);
    double t_expl = time_method(EXPLICIT, st, bufs, d, &p, reps, &explicit_value);
    double t_base = time_method(BASE_PERTURB, st, bufs, d, &p, reps, &unused);
    double rel = fabs(sqrt(gram_sq) - sqrt(explicit_value)) / sqrt(explicit_value);
    printf("n_out %5zu n_in %5zu r %3zu | gram %9.3f ms | explicit D %9.3f ms | "
           "ratio %7.1fx | base perturb+restore %9.3f ms | norm rel diff %.1e\n",
           n_out, n_in, r, 1e3 * t_gram, 1e3 * t_expl, t_expl / t_gram, 1e3 * t_base, rel);
    mgpo_destroy(st);
    free(a);
    free(b);
    free(w);
    free(d);
    /* D is formed in float by the explicit method: agreement to ~1e-5. */
    return rel < 1e-4 ? 0 : 1;
}

int main(int argc, char **argv)
{
    int short_mode = argc > 1 && strcmp(argv[1], "--short") == 0;
    int failed = 0;
    if (short_mode) {
        failed |= run(256, 192, 8, 1);
        failed |= run(192, 256, 64, 1);
    } else {
        failed |= run(4096, 4096, 8, 3);
        failed |= run(4096, 4096, 64, 3);
    }
    return failed;
}
