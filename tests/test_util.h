/* Shared helpers of the Check test programs: a deterministic PRNG, a small
 * model (a few float tensors of odd sizes with a separable quadratic loss),
 * snapshots of everything a state and its buffers hold, and scalar reference
 * implementations of torch's AdamW and SGD written in torch's operation order.
 * Compiled with -ffp-contract=off like the library, so that the references
 * round exactly as the library's kernels must. */
#ifndef MGPO_TEST_UTIL_H
#define MGPO_TEST_UTIL_H

#include "mgpo.h"
#include "internal.h" /* mgpo_internal_moment: the state's moments */

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#define TU_MAX_TENSORS 8

/* 1, 7, 1000 and 4097 elements: a scalar, a short tail, a block remainder
 * and a tensor spanning two reduction blocks. */
#define TU_ODD_COUNT 4
extern const size_t tu_odd_sizes[TU_ODD_COUNT];

/* ---- PRNG (splitmix64) -------------------------------------------------- */
uint64_t tu_rand_next(uint64_t *state);
/* Uniform in [lo, hi). */
float tu_rand_float(uint64_t *state, float lo, float hi);
/* Fills x with uniform values in [lo, hi). */
void tu_fill(float *x, size_t n, uint64_t seed, float lo, float hi);
/* Fills x with finite floats of random sign and of magnitudes spread over
 * 2^min_exp .. 2^max_exp, plus some zeros, negative zeros and subnormals. */
void tu_fill_wide(float *x, size_t n, uint64_t seed, int min_exp, int max_exp);

/* ---- Model -------------------------------------------------------------- */

/* L = sum_i 0.5 * curv_i * (p_i - target_i)^2, so g = curv * (p - target),
 * times grad_scale (to make the gradient norm tiny or large). */
typedef struct tu_model {
    size_t count;
    size_t sizes[TU_MAX_TENSORS];
    float *params[TU_MAX_TENSORS];
    float *grads[TU_MAX_TENSORS];
    float *target[TU_MAX_TENSORS];
    float *curv[TU_MAX_TENSORS];
    float *ref_m[TU_MAX_TENSORS]; /* moments of the plain reference optimizer */
    float *ref_v[TU_MAX_TENSORS];
    float grad_scale;
    mgpo_state *st;               /* NULL until tu_model_register */
} tu_model;

/* Allocates and fills the buffers (same seed, same values); no state yet. */
void tu_model_init(tu_model *m, const size_t *sizes, size_t count, uint64_t seed);
/* Creates m->st with cfg and registers every tensor with its gradient buffer
 * and opts[i] (opts NULL: defaults).  Asserts success. */
void tu_model_register(tu_model *m, const mgpo_config *cfg,
                       const mgpo_tensor_options *opts);
/* Destroys the state (if any) and frees the buffers. */
void tu_model_free(tu_model *m);
/* Writes the gradient at the current parameters into grads. */
void tu_model_grad(tu_model *m);
/* Adds the gradient at the current parameters to grads (micro-batch
 * accumulation), using `target_shift` added to every target. */
void tu_model_grad_accumulate(tu_model *m, float target_shift);
/* One full iteration on m->st: perturb, gradient, step (asserts MGPO_OK). */
void tu_model_iterate(tu_model *m);

/* ---- The eight sign x scope x optimizer combinations --------------------- */
#define TU_COMBOS 8
/* Default config with optimizer = i&1 (AdamW, SGD), scope = (i>>1)&1 (global,
 * tensor), sign = (i>>2)&1 (lookahead, ascent), and an lr that moves. */
mgpo_config tu_combo_config(int i);
const char *tu_combo_name(int i);

/* ---- Snapshots ---------------------------------------------------------- */
typedef struct tu_snapshot {
    size_t count;
    size_t sizes[TU_MAX_TENSORS];
    float *params[TU_MAX_TENSORS];
    float *grads[TU_MAX_TENSORS];
    float *m[TU_MAX_TENSORS];
    float *v[TU_MAX_TENSORS]; /* NULL for SGD */
    mgpo_stats stats;
    size_t unit_count, tensor_count;
    mgpo_unit_stats units[TU_MAX_TENSORS];
    int perturbed;
} tu_snapshot;

void tu_snapshot_take(tu_snapshot *s, const tu_model *m);
void tu_snapshot_free(tu_snapshot *s);

enum {
    TU_CMP_ALL = 0,
    TU_IGNORE_SKIPPED = 1u,        /* stats.skipped_steps */
    TU_IGNORE_PERTURB_REPORT = 2u, /* what the last perturb reported: stats
                                      momentum/perturbation norm and scale,
                                      unit momentum_norm/scale/coefficient */
    TU_IGNORE_GRADS = 4u
};
/* Asserts bitwise equality of everything in two snapshots except `ignore`. */
void tu_assert_same(const tu_snapshot *a, const tu_snapshot *b, unsigned ignore);
/* Asserts the model's current parameters are bitwise those of s. */
void tu_assert_params_same(const tu_model *m, const tu_snapshot *s);

/* ---- References --------------------------------------------------------- */

/* torch.optim.AdamW (1.13, amsgrad off, single-tensor path), step t >= 1,
 * on a gradient multiplied by gscale first (clip_grad_norm_'s mul_). */
void tu_ref_adamw(float *p, const float *g, float *m, float *v, size_t n, uint64_t t,
                  double lr, double beta1, double beta2, double eps, double wd,
                  float gscale);
/* torch.optim.SGD (1.13); b is the momentum buffer (holds d when mu = 0). */
void tu_ref_sgd(float *p, const float *g, float *b, size_t n, uint64_t t, double lr,
                double momentum, double dampening, int nesterov, double wd, float gscale);
/* Steps every tensor of m with the plain base optimizer of cfg at step t,
 * using m->ref_m/ref_v, per-tensor opts (NULL: defaults) and lr. */
void tu_model_ref_step(tu_model *m, const mgpo_config *cfg, uint64_t t, double lr,
                       const mgpo_tensor_options *opts, float gscale);
/* Asserts m's parameters and its state's moments are bitwise those of the
 * reference model ref (its params and ref_m/ref_v) for every tensor. */
void tu_assert_matches_ref(const tu_model *m, const tu_model *ref);
/* clip_grad_norm_'s factor for the model's gradients: 1, or
 * max_norm / (||g|| + 1e-6) as float when that is below 1. */
float tu_clip_factor(const tu_model *m, double max_norm);

/* An independent double-precision model of the scope units: gbar_U from
 * gamma_U = ||g_U|| (first value, then the EMA), over perturbed tensors. */
typedef struct tu_ref_units {
    size_t count;                    /* units */
    int perturb[TU_MAX_TENSORS];     /* per tensor */
    double gbar[TU_MAX_TENSORS];     /* per unit */
    int set[TU_MAX_TENSORS];
} tu_ref_units;

size_t tu_unit_of(const mgpo_config *cfg, size_t tensor);
/* opts: the per-tensor options the state was registered with (NULL: all on). */
void tu_ref_units_init(tu_ref_units *r, const mgpo_config *cfg, size_t tensors,
                       const mgpo_tensor_options *opts);
/* Updates gbar from the model's current gradients (call before mgpo_step). */
void tu_ref_units_step(tu_ref_units *r, const mgpo_config *cfg, const tu_model *m);
/* Checks the perturbation just applied to m (clean params in `clean`) against
 * c_U = sign*rho*min(1/(gbar_U+eps_n), s_max)/(||m_U||+eps_n) recomputed in
 * double from the state's moments: unit stats to 1e-12 relative, every
 * element theta~ - theta = c_U*m to float rounding, untouched tensors bitwise,
 * and the aggregate stats.  Returns the number of units perturbed. */
size_t tu_check_perturbation(const tu_model *m, const mgpo_config *cfg,
                             const tu_ref_units *r, const tu_snapshot *clean);

/* Sum of squares in double, plainly left to right. */
double tu_sum_sq(const float *x, size_t n);
/* |a - b| <= rel * max(|a|, |b|) (and a == b for zeros). */
int tu_close(double a, double b, double rel);

/* Run a suite and return the process exit status. */
int tu_run_suite(Suite *s);

#endif
