/* A synthetic model shared by the kernel, thread and memory tests: a few
 * tensors of awkward sizes (several blocks, odd tails) and a reproducible
 * noisy quadratic loss whose gradient depends on the perturbed parameters, so
 * the perturbation really feeds back into the trajectory. */
#ifndef MGPO_TEST_PERF_MODEL_H
#define MGPO_TEST_PERF_MODEL_H

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define PM_MAX_TENSORS 6

typedef struct pm_model {
    size_t tensors;
    size_t count[PM_MAX_TENSORS];
    float *params[PM_MAX_TENSORS];
    float *grads[PM_MAX_TENSORS];
    float *target[PM_MAX_TENSORS];
} pm_model;

/* Uniform in [-1, 1), a pure function of its arguments (splitmix64). */
static inline float pm_noise(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t z = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull ^
                 (c + 0x7F4A7C15ull) * 0x94D049BB133111EBull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 40) / (double)(1ull << 23) - 1.0);
}

/* Tensors of the given sizes with reproducible parameters and targets.
 * `offset` shifts each buffer by that many floats from malloc's alignment,
 * since callers' buffers need not be aligned. */
static inline void pm_init(pm_model *md, const size_t *counts, size_t tensors, size_t offset)
{
    ck_assert_uint_le(tensors, PM_MAX_TENSORS);
    memset(md, 0, sizeof *md);
    md->tensors = tensors;
    for (size_t t = 0; t < tensors; t++) {
        size_t n = counts[t];
        md->count[t] = n;
        /* One allocation per tensor: [params | grads | target], each shifted. */
        float *base = malloc((3 * n + 3 * offset + 3) * sizeof(float));
        ck_assert_ptr_nonnull(base);
        md->params[t] = base + offset;
        md->grads[t] = md->params[t] + n + offset + 1;
        md->target[t] = md->grads[t] + n + offset + 1;
        for (size_t i = 0; i < n; i++) {
            md->params[t][i] = 0.5f * pm_noise(1, t, i);
            md->target[t][i] = pm_noise(2, t, i);
            md->grads[t][i] = 0.0f;
        }
    }
}

static inline void pm_free(pm_model *md, size_t offset)
{
    for (size_t t = 0; t < md->tensors; t++) free(md->params[t] - offset);
    memset(md, 0, sizeof *md);
}

/* g = (theta - target) * (1 + t) + noise: evaluated at the (perturbed)
 * parameters, with per-tensor curvature and per-step noise. */
static inline void pm_gradients(pm_model *md, uint64_t step)
{
    for (size_t t = 0; t < md->tensors; t++)
        for (size_t i = 0; i < md->count[t]; i++)
            md->grads[t][i] = (md->params[t][i] - md->target[t][i]) * (1.0f + (float)t) +
                              0.3f * pm_noise(3 + step, t, i);
}

/* Registers every tensor; tensor 1 (if any) is stepped but not perturbed,
 * like a bias or head. */
static inline void pm_register(const pm_model *md, mgpo_state *st)
{
    for (size_t t = 0; t < md->tensors; t++) {
        mgpo_tensor_options o = mgpo_tensor_options_default();
        if (t == 1) {
            o.perturb = 0;
            o.weight_decay_scale = 0.0;
        }
        if (t == 2) o.lr_scale = 2.0;
        ck_assert_int_eq(mgpo_add_tensor(st, md->params[t], md->grads[t], md->count[t], &o,
                                         NULL),
                         MGPO_OK);
    }
}

/* `iterations` full MGPO iterations: perturb, gradient at the perturbed
 * point, (every third time an explicit restore), step. */
static inline void pm_train(pm_model *md, mgpo_state *st, uint64_t first, uint64_t iterations)
{
    for (uint64_t k = first; k < first + iterations; k++) {
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        pm_gradients(md, k);
        if (k % 3 == 0) ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    }
}

#endif
