/* quickstart: the smallest complete libmgpo program.
 *
 * Logistic regression on synthetic data, trained with MGPO (AdamW underneath).
 * The three library calls of one iteration are marked (1) (2) (3).
 * Exits 0 only if the final loss is below the initial loss, so ctest can run it.
 *
 *   cc quickstart.c $(pkg-config --cflags --libs mgpo) -lm \
 *       -Wl,-rpath,$(pkg-config --variable=libdir mgpo) && ./a.out
 *
 * (the rpath lets the binary find libmgpo.so at run time when it is not
 * installed in a system directory; README.md "Linking" has the other ways)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "mgpo.h"

enum { N = 256, D = 8, STEPS = 200 };

/* Mean binary cross-entropy of sigmoid(w.x + b); fills grad (D weights, then b). */
static float loss_and_grad(const float *x, const float *y, const float *params, float *grad)
{
    double loss = 0.0;
    for (int j = 0; j <= D; j++) grad[j] = 0.0f;
    for (int i = 0; i < N; i++) {
        float z = params[D];
        for (int j = 0; j < D; j++) z += params[j] * x[i * D + j];
        float p = 1.0f / (1.0f + expf(-z));
        loss -= y[i] > 0.5f ? log(p + 1e-7) : log(1.0 - p + 1e-7);
        float dz = (p - y[i]) / N; /* d loss / d z */
        for (int j = 0; j < D; j++) grad[j] += dz * x[i * D + j];
        grad[D] += dz;
    }
    return (float)(loss / N);
}

static float uniform(void) /* in [-1, 1) */
{
    return (float)(rand() / (RAND_MAX + 1.0)) * 2.0f - 1.0f;
}

static int check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) fprintf(stderr, "%s: %s\n", what, mgpo_strerror(s));
    return s != MGPO_OK;
}

int main(void)
{
    /* Synthetic data: labels from a hidden linear rule, 10 % of them flipped. */
    static float x[N * D], y[N];
    float truth[D];
    srand(1);
    for (int j = 0; j < D; j++) truth[j] = uniform();
    for (int i = 0; i < N; i++) {
        float z = 0.0f;
        for (int j = 0; j < D; j++) {
            x[i * D + j] = uniform();
            z += truth[j] * x[i * D + j];
        }
        y[i] = (z > 0.0f) != (rand() % 10 == 0) ? 1.0f : 0.0f;
    }

    /* The caller owns parameters and gradients; the library keeps a pointer. */
    float params[D + 1] = {0}, grad[D + 1] = {0};
    mgpo_config cfg = mgpo_config_default(); /* AdamW, rho 0.05, lookahead */
    cfg.lr = 0.05;
    mgpo_state *st = NULL;
    if (check(mgpo_create(&st, &cfg, NULL), "mgpo_create")) return 1;
    if (check(mgpo_add_tensor(st, params, grad, D + 1, NULL, NULL), "mgpo_add_tensor")) {
        mgpo_destroy(st);
        return 1;
    }

    float first = 0.0f, clean = 0.0f;
    int failed = 0, logged = 0, nudged_lower = 0;
    for (int step = 0; step < STEPS && !failed; step++) {
        /* The loss of the training forward is measured at the nudged weights.
         * It is not the clean loss, and not reliably above it: with the
         * lookahead sign it is often lower.  The clean loss on the same data
         * costs one more forward pass, before the nudge, when you log it. */
        int log_now = step % 20 == 0 || step == STEPS - 1;
        if (log_now) clean = loss_and_grad(x, y, params, grad);
        failed |= check(mgpo_perturb(st), "mgpo_perturb");  /* (1) nudge along momentum */
        float loss = loss_and_grad(x, y, params, grad);     /* forward + backward */
        failed |= check(mgpo_restore(st), "mgpo_restore");  /* (2) clean weights back */
        failed |= check(mgpo_step(st), "mgpo_step");        /* (3) AdamW update */
        if (step == 0) first = loss;
        if (log_now) {
            printf("step %3d  loss at nudged weights %.4f  at clean weights %.4f\n", step, loss,
                   clean);
            logged++;
            nudged_lower += loss < clean;
        }
    }
    float last = loss_and_grad(x, y, params, grad);
    printf("nudged loss below the clean loss on %d of %d logged steps\n", nudged_lower, logged);
    printf("final clean loss %.4f (initial %.4f)\n", last, first);
    mgpo_destroy(st);
    return failed || !(last < first);
}
