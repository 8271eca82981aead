/* loss_scaling: a dynamic loss scale over float16 parameters and float16
 * gradients, run the way torch's GradScaler runs one.
 *
 * The model (linear regression on synthetic data) reads float16 weights;
 * libmgpo keeps their float32 master copy (mgpo_add_tensor_typed) and writes
 * the rounded master back after every step.  The gradient of a float16
 * backward pass of the loss times S is imitated here: it is computed in
 * float32 at the float16 weights, multiplied by S and rounded to float16, so
 * a value of 65520 or more becomes Inf, as it would in a real fp16 backward.
 *
 * The scaler (GradScaler's rules, with a short growth interval):
 *   - start at S = 65536;
 *   - before each step, mgpo_set_grad_scale(S): the library then uses
 *     g * (1/S) for everything (norms, EMA, NaN/Inf check, update) and never
 *     writes the gradient buffer;
 *   - MGPO_ERR_NONFINITE_GRADIENT (an Inf from the overflow): the step is
 *     skipped, the weights are clean, halve S;
 *   - after GROWTH_INTERVAL good steps in a row, double S.
 *
 * Exits 0 only if the loss fell by LOSS_FACTOR, at least one overflow was
 * skipped, S grew at least once, the library's counts of good and skipped
 * steps agree with the loop's, the gradient norm it reports is that of the
 * unscaled gradient, and the float16 weights are the master weights rounded
 * to nearest, so ctest can run it.
 *
 *   cc loss_scaling.c $(pkg-config --cflags --libs mgpo) -lm \
 *       -Wl,-rpath,$(pkg-config --variable=libdir mgpo) && ./a.out
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "example_math.h"
#include "mgpo.h"

enum { N = 512, D = 16, STEPS = 400, GROWTH_INTERVAL = 20 };
#define LOSS_FACTOR 1000.0 /* the final loss must be this many times below the first */

/* ---- float16 <-> float32 ---------------------------------------------------
 * The public API takes float16 buffers as uint16_t bit patterns (IEEE
 * binary16) and offers no converter; _Float16 is not available on every
 * target the project builds for (GCC on armhf and s390x, clang 14 on
 * x86-64).  These two are written for reading, not speed. */

/* Round to nearest, ties to even (in the default rounding mode, which lrintf
 * uses); 65520 and above become Inf, as torch's .half() does. */
static uint16_t half_from_float(float x)
{
    if (isnan(x)) return 0x7e00u;
    uint16_t sign = signbit(x) ? 0x8000u : 0u;
    float a = fabsf(x);
    if (a >= 65520.0f) return sign | 0x7c00u;
    /* Subnormal range: a whole number of steps of 2^-24 (1024 steps is the
     * smallest normal, 0x0400, so rounding up into it needs no care). */
    if (a < 0x1p-14f) return sign | (uint16_t)lrintf(a * 0x1p24f);
    /* Normal: a = f * 2^e with f in [0.5, 1); keep 11 significant bits.  A
     * rounding up to 2048 carries into the exponent field by itself. */
    int e;
    frexpf(a, &e);
    long significand = lrintf(ldexpf(a, 11 - e)); /* 1024 ... 2048 */
    return sign | (uint16_t)(((long)(e + 13) << 10) + significand);
}

static float float_from_half(uint16_t h)
{
    int exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    float a;
    if (exponent == 0x1f) a = fraction ? NAN : INFINITY;
    else if (exponent == 0) a = ldexpf((float)fraction, -24);
    else a = ldexpf((float)(fraction + 1024), exponent - 25);
    return (h & 0x8000u) ? -a : a;
}

/* ---- The model ------------------------------------------------------------ */

/* Half the mean squared error of w.x + b at the float16 weights (D weights,
 * then b); with grad16 non-NULL also the scaled gradient, rounded to float16. */
static double loss_and_scaled_grad(const float *x, const float *y, const uint16_t *w16,
                                   float scale, uint16_t *grad16)
{
    float w[D + 1], grad[D + 1] = {0};
    for (int j = 0; j <= D; j++) w[j] = float_from_half(w16[j]);
    double loss = 0.0;
    for (int i = 0; i < N; i++) {
        float r = dot(w, x + i * D, D) + w[D] - y[i];
        loss += 0.5 * (double)r * r;
        axpy(grad, r / N, x + i * D, D);
        grad[D] += r / N;
    }
    if (grad16)
        for (int j = 0; j <= D; j++) grad16[j] = half_from_float(grad[j] * scale);
    return loss / N;
}

static int check(mgpo_status s, const char *what)
{
    if (s != MGPO_OK) fprintf(stderr, "%s: %s\n", what, mgpo_strerror(s));
    return s != MGPO_OK;
}

/* Whether the float16 weights hold exactly the master weights rounded to
 * nearest: the clean state, after a step and after a skipped one. */
static int weights_are_rounded_master(const mgpo_state *st, const uint16_t *w16)
{
    float master[D + 1];
    if (check(mgpo_get_master_weights(st, 0, master, D + 1), "mgpo_get_master_weights"))
        return 0;
    for (int j = 0; j <= D; j++)
        if (half_from_float(master[j]) != w16[j]) return 0;
    return 1;
}

int main(void)
{
    /* y = truth.x + 0.5 + noise; weights of a few units, so that the first
     * gradients (about -truth) overflow float16 at S = 65536. */
    static float x[N * D], y[N];
    float truth[D];
    Rng rng = rng_stream(7, 0);
    for (int j = 0; j < D; j++) truth[j] = 1.5f * rng_normal(&rng);
    for (int i = 0; i < N; i++) {
        fill_normal(&rng, x + i * D, D, 1.0f);
        y[i] = dot(truth, x + i * D, D) + 0.5f + 0.1f * rng_normal(&rng);
    }

    /* The caller's buffers: float16 weights (the model reads them) and
     * float16 gradients (the backward pass writes them). */
    uint16_t w16[D + 1] = {0}, grad16[D + 1] = {0};
    mgpo_config cfg = mgpo_config_default(); /* AdamW, rho 0.05, lookahead */
    cfg.lr = 0.05;
    mgpo_state *st = NULL;
    if (check(mgpo_create(&st, &cfg, NULL), "mgpo_create")) return 1;
    if (check(mgpo_add_tensor_typed(st, w16, MGPO_DTYPE_FLOAT16, grad16, MGPO_DTYPE_FLOAT16,
                                    D + 1, NULL, NULL),
              "mgpo_add_tensor_typed")) {
        mgpo_destroy(st);
        return 1;
    }

    double first = loss_and_scaled_grad(x, y, w16, 1.0f, NULL), clean = first;
    double scale = 65536.0, worst_norm_error = 0.0;
    int good_in_row = 0, good = 0, overflows = 0, growths = 0, failed = 0, rounded_master = 1;
    for (int step = 0; step < STEPS && !failed; step++) {
        int log_now = step % 50 == 0 || step == STEPS - 1;
        if (log_now) clean = loss_and_scaled_grad(x, y, w16, 1.0f, NULL);
        failed |= check(mgpo_set_grad_scale(st, scale), "mgpo_set_grad_scale");
        failed |= check(mgpo_perturb(st), "mgpo_perturb"); /* w16 = round(master + c*m) */
        double loss = loss_and_scaled_grad(x, y, w16, (float)scale, grad16);
        mgpo_status s = mgpo_step(st); /* uses grad16 * (1/S); w16 = round(new master) */
        if (s == MGPO_ERR_NONFINITE_GRADIENT) {
            printf("step %3d: float16 gradient overflowed at S = %.0f, step skipped, S halved\n",
                   step, scale);
            overflows++;
            rounded_master &= weights_are_rounded_master(st, w16); /* clean again */
            scale *= 0.5;
            good_in_row = 0;
            continue;
        }
        failed |= check(s, "mgpo_step");
        good++;
        /* The norm the library reports (and feeds its EMA) is that of the
         * unscaled gradient, grad16 / S. */
        double norm_sq = 0.0;
        for (int j = 0; j <= D; j++) {
            double g = (double)float_from_half(grad16[j]) / scale;
            norm_sq += g * g;
        }
        mgpo_stats stats;
        failed |= check(mgpo_get_stats(st, &stats), "mgpo_get_stats");
        double error = fabs(stats.grad_norm - sqrt(norm_sq)) / sqrt(norm_sq);
        if (!(error <= worst_norm_error)) worst_norm_error = error; /* NaN counts too */
        if (++good_in_row == GROWTH_INTERVAL) {
            scale *= 2.0;
            good_in_row = 0;
            growths++;
        }
        if (log_now)
            printf("step %3d: loss at the clean weights %.5f, at the nudged weights %.5f\n", step,
                   clean, loss);
    }

    double last = loss_and_scaled_grad(x, y, w16, 1.0f, NULL);
    rounded_master &= weights_are_rounded_master(st, w16);
    mgpo_stats stats;
    failed |= check(mgpo_get_stats(st, &stats), "mgpo_get_stats");
    mgpo_destroy(st);
    if (failed) return 1;

    printf("%d good steps, %d overflows skipped, S doubled %d times, final S = %.0f\n", good,
           overflows, growths, scale);
    printf("library: %llu steps, %llu skipped\n", (unsigned long long)stats.step,
           (unsigned long long)stats.skipped_steps);
    printf("loss at the float16 weights %.6f (initial %.6f, %.0f times lower)\n", last, first,
           first / last);
    int ok = 1;
    if (!(last * LOSS_FACTOR < first)) {
        fprintf(stderr, "FAIL: the loss did not fall by a factor of %.0f\n", LOSS_FACTOR);
        ok = 0;
    }
    if (overflows == 0 || growths == 0) {
        fprintf(stderr, "FAIL: the scaler never %s\n", overflows == 0 ? "overflowed" : "grew");
        ok = 0;
    }
    if (stats.step != (uint64_t)good || stats.skipped_steps != (uint64_t)overflows) {
        fprintf(stderr, "FAIL: the library counted other steps than the loop\n");
        ok = 0;
    }
    if (!(worst_norm_error < 1e-12)) {
        fprintf(stderr, "FAIL: the gradient norm reported is not that of g / S (error %g)\n",
                worst_norm_error);
        ok = 0;
    }
    if (!rounded_master) {
        fprintf(stderr, "FAIL: the float16 weights are not the rounded master weights\n");
        ok = 0;
    }
    return ok ? 0 : 1;
}
