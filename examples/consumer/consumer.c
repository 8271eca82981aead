/* The smallest complete libmgpo program, built against an installed library
 * (see Makefile for pkg-config, CMakeLists.txt for find_package).
 *
 * It fits w to a fixed target under L(w) = 0.5 * ||w - target||^2 with MGPO
 * on AdamW, and exits non-zero unless every call succeeds, the library's
 * version matches the header's, and the loss has fallen by 100x. */
#include <mgpo.h>

#include <stdio.h>
#include <stdlib.h>

#define N 8
#define STEPS 60

/* Exits with the library's own message on any error. */
#define CHECK(call)                                                          \
    do {                                                                     \
        mgpo_status check_status_ = (call);                                  \
        if (check_status_ != MGPO_OK) {                                      \
            fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__,   \
                    #call, mgpo_strerror(check_status_));                    \
            exit(EXIT_FAILURE);                                              \
        }                                                                    \
    } while (0)

/* Forward and backward pass of the toy model: returns the loss at w and
 * writes its gradient. */
static double forward_backward(const float *w, const float *target, float *grad)
{
    double loss = 0.0;
    for (int i = 0; i < N; i++) {
        float d = w[i] - target[i];
        grad[i] = d;
        loss += 0.5 * (double)d * (double)d;
    }
    return loss;
}

int main(void)
{
    if (mgpo_version_number() != MGPO_VERSION_NUMBER) {
        fprintf(stderr, "header %s but library %s\n", MGPO_VERSION_STRING,
                mgpo_version_string());
        return EXIT_FAILURE;
    }

    float w[N] = {0}, grad[N], target[N];
    for (int i = 0; i < N; i++) target[i] = 0.25f * (float)(i + 1);

    mgpo_config config = mgpo_config_default();
    config.lr = 0.1;
    mgpo_state *st = NULL;
    CHECK(mgpo_create(&st, &config, NULL));
    CHECK(mgpo_add_tensor(st, w, grad, N, NULL, NULL));

    double first = 0.0, loss = 0.0;
    for (int step = 0; step < STEPS; step++) {
        CHECK(mgpo_perturb(st));                  /* w += c*m before forward */
        loss = forward_backward(w, target, grad); /* loss at the perturbed w */
        CHECK(mgpo_restore(st));                  /* back to the clean w */
        CHECK(mgpo_step(st));                     /* AdamW on the clean w */
        if (step == 0) first = loss;
        if (step % 10 == 0 || step == STEPS - 1) printf("step %2d  loss %.6f\n", step, loss);
    }

    mgpo_stats stats;
    CHECK(mgpo_get_stats(st, &stats));
    printf("libmgpo %s: %llu steps, |g| EMA %.4g, last perturbation %.4g\n",
           mgpo_version_string(), (unsigned long long)stats.step, stats.grad_norm_ema,
           stats.perturbation_norm);
    mgpo_destroy(st);

    if (stats.step != STEPS || !(loss < first / 100.0)) {
        fprintf(stderr, "loss did not fall: %g -> %g\n", first, loss);
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}
