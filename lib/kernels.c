/* The fused elementwise passes over one block, in portable C.
 *
 * Each follows torch's operation order (torch.optim.AdamW / SGD, 1.13), with
 * two liberties that keep results within float32 rounding of PyTorch's (the
 * golden tests) and make the in-cache step about twice as fast: multiply-adds
 * are fused, written out as fmaf() (torch's own CPU kernels fuse them too),
 * and AdamW multiplies by the reciprocal of the per-step constant sqrt(bc2)
 * instead of dividing by it.  The library is built with -ffp-contract=off, so
 * the compiler fuses nothing on its own: every implementation of these loops
 * (this one, and kernels_avx2.c with FMA instructions at the same places)
 * rounds the same operations in the same order and gives the same bits.
 * Where the target has no FMA instruction, fmaf() is a libm call (correctly
 * rounded in software on x86-64 without FMA): slow, but the same bits.  The
 * perturbation and its undo stay unfused: the exact restore compares against
 * (p + c*m) - c*m computed the same way (internal.h, MGPO_FULL_BACKUP).
 * The norm of the new momentum is accumulated in sixteen double lanes (lane =
 * index mod 16) in the shape of mgpo_sum_squares, so a norm fused into a
 * step has the same bits as a separate pass over m.
 *
 * The loops run over chunks of eight with every load of a chunk before its
 * stores, which lets the compiler vectorise them even though `src` may be
 * `params` itself (an in-place step). */
#include "internal.h"

#include <math.h>
#include <string.h>

void mgpo_kernel_perturb(float *restrict params, float *restrict backup,
                         const float *restrict m, float coefficient, size_t n)
{
    if (backup) {
        for (size_t i = 0; i < n; i++) {
            float p = params[i];
            backup[i] = p;
            params[i] = p + coefficient * m[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) params[i] = params[i] + coefficient * m[i];
    }
}

void mgpo_kernel_unperturb(float *restrict params, const float *restrict m,
                           float coefficient, size_t n)
{
    for (size_t i = 0; i < n; i++) params[i] = mgpo_unperturbed(params[i], coefficient, m[i]);
}

void mgpo_restore_range(float *dst, const float *params, const float *m, float coefficient,
                        mgpo_exception_reader *list, size_t base, size_t count)
{
    for (size_t i = 0; i < count; i++)
        dst[i] = mgpo_unperturbed(params[base + i], coefficient, m[base + i]);
    mgpo_apply_exceptions(list, dst, base, count);
}

/* The clean values of the first `count` elements of a block of n floats
 * perturbed by mgpo_kernel_perturb_exact, to dst (which may be params). */
static void restore_exact_prefix(float *dst, const float *params, const float *backup,
                                 const float *m, float coefficient, size_t n, size_t count)
{
    mgpo_exception_reader r = mgpo_exceptions_of(backup, n);
    mgpo_restore_range(dst, params, m, coefficient, &r, 0, count);
}

void mgpo_kernel_restore_exact(float *dst, const float *params, const float *backup,
                               const float *m, float coefficient, size_t n)
{
    restore_exact_prefix(dst, params, backup, m, coefficient, n, n);
}

/* See MGPO_FULL_BACKUP in internal.h for the exception list. */
uint32_t mgpo_kernel_perturb_exact(float *restrict params, float *restrict backup,
                                   const float *restrict m, float coefficient, size_t n)
{
    uint16_t *index = (uint16_t *)(void *)(backup + 1);
    float *value = backup + mgpo_exception_value_offset(n);
    size_t capacity = mgpo_exception_capacity(n);
    uint32_t used = 0;
    for (size_t i = 0; i < n; i++) {
        float p = params[i], b = coefficient * m[i];
        float t = p + b;
        float r = mgpo_unperturbed(t, coefficient, m[i]); /* the restore's bits */
        if (mgpo_float_bits(r) != mgpo_float_bits(p)) {
            if (used == capacity) {
                memcpy(backup, &used, sizeof used);
                restore_exact_prefix(params, params, backup, m, coefficient, n, i);
                const uint32_t overflow = MGPO_FULL_BACKUP;
                memcpy(backup, &overflow, sizeof overflow);
                return overflow;
            }
            index[used] = (uint16_t)i;
            value[used++] = p;
        }
        params[i] = t;
    }
    memcpy(backup, &used, sizeof used);
    return used;
}

/* torch: p.mul_(1 - lr*wd); m.mul_(b1).add_(g, alpha=1-b1);
 * v.mul_(b2).addcmul_(g, g, value=1-b2);
 * p.addcdiv_(m, v.sqrt() / sqrt(bc2) + eps, value=-lr/bc1) */
typedef struct adamw_constants {
    float decay, step, grad_scale, beta1, one_minus_beta1, beta2, one_minus_beta2,
        inv_bias2_sqrt, eps, undo;
} adamw_constants;

/* `has_undo` is a constant in each instantiation (see mgpo_kernel_adamw), so
 * the loops stay branch-free and vectorise. */
static inline void adamw_chunk(float *params, const float *src, const float *grads,
                               float *m, float *v, double *lane, size_t count,
                               adamw_constants c, bool has_undo,
                               mgpo_exception_reader *exact, size_t base)
{
    float p[8], g[8], mi[8], vi[8];
    for (size_t k = 0; k < count; k++) {
        p[k] = src[k];
        g[k] = grads[k];
        mi[k] = m[k];
        vi[k] = v[k];
    }
    if (has_undo)
        for (size_t k = 0; k < count; k++) p[k] = mgpo_unperturbed(p[k], c.undo, mi[k]);
    if (exact) mgpo_apply_exceptions(exact, p, base, count);
    for (size_t k = 0; k < count; k++) {
        float gk = g[k] * c.grad_scale;
        float pk = p[k] * c.decay;
        mi[k] = fmaf(mi[k], c.beta1, c.one_minus_beta1 * gk);
        vi[k] = fmaf(vi[k], c.beta2, (c.one_minus_beta2 * gk) * gk);
        float denom = fmaf(sqrtf(vi[k]), c.inv_bias2_sqrt, c.eps);
        /* (step * m) / denom, torch's addcdiv order: m / denom alone can
         * overflow where a tiny eps meets a tiny v (beta2 near 0), while
         * the bounds on lr keep step * m / denom finite. */
        p[k] = pk + (c.step * mi[k]) / denom;
        lane[k] += (double)mi[k] * (double)mi[k]; /* exact product: no fma needed */
    }
    for (size_t k = 0; k < count; k++) {
        params[k] = p[k];
        m[k] = mi[k];
        v[k] = vi[k];
    }
}

static inline void adamw_run(float *params, const float *src, const float *grads, float *m,
                             float *v, double *lane, size_t n, adamw_constants c,
                             bool has_undo, mgpo_exception_reader *exact)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        adamw_chunk(params + i, src + i, grads + i, m + i, v + i, lane + (i & 8), 8, c,
                    has_undo, exact, i);
    if (i < n)
        adamw_chunk(params + i, src + i, grads + i, m + i, v + i, lane + (i & 8), n - i, c,
                    has_undo, exact, i);
}

double mgpo_kernel_adamw(float *params, const float *src, const float *grads,
                         float *m, float *v, const mgpo_slot *slot,
                         const mgpo_step_constants *k, size_t n, float undo,
                         mgpo_exception_reader *exact)
{
    adamw_constants c = {slot->k_decay,      slot->k_step, k->grad_scale,
                         k->beta1,           k->one_minus_beta1,
                         k->beta2,           k->one_minus_beta2,
                         k->inv_bias2_sqrt,  k->eps,       undo};
    double lane[MGPO_LANES] = {0};
    if (exact) {
        adamw_run(params, src, grads, m, v, lane, n, c, true, exact);
    } else if (undo != 0.0f) {
        adamw_run(params, src, grads, m, v, lane, n, c, true, NULL);
    } else {
        adamw_run(params, src, grads, m, v, lane, n, c, false, NULL);
    }
    return mgpo_combine_lanes16(lane);
}

/* torch: d = g + wd*p; b = d (first) | b.mul_(mu).add_(d, alpha=1-damp);
 * d = d + mu*b (nesterov) | b; p.add_(d, alpha=-lr).  With momentum 0 torch
 * keeps no buffer and steps along d; the library still stores d in m because
 * it is the perturbation direction.  The flags are the same for the whole
 * block; sgd_run is instantiated with them as constants so that each variant
 * is a branch-free loop the compiler vectorises. */
typedef struct sgd_constants {
    float wd, neg_lr, grad_scale, momentum, one_minus_dampening, undo;
} sgd_constants;

typedef struct sgd_mode {
    bool decay, restart, plain, nesterov, undo;
} sgd_mode;

static inline void sgd_chunk(float *params, const float *src, const float *grads,
                             float *m, double *lane, size_t count, sgd_constants c,
                             sgd_mode f, mgpo_exception_reader *exact, size_t base)
{
    float p[8], d[8], b[8];
    for (size_t k = 0; k < count; k++) {
        p[k] = src[k];
        d[k] = grads[k];
        /* A restarting step does not read the old buffer, unless it must
         * undo a perturbation along it. */
        b[k] = f.restart && !f.undo ? 0.0f : m[k];
    }
    if (f.undo)
        for (size_t k = 0; k < count; k++) p[k] = mgpo_unperturbed(p[k], c.undo, b[k]);
    if (exact) mgpo_apply_exceptions(exact, p, base, count);
    for (size_t k = 0; k < count; k++) {
        float dk = d[k] * c.grad_scale;
        if (f.decay) dk = fmaf(c.wd, p[k], dk);
        float bk = f.restart ? dk : fmaf(b[k], c.momentum, c.one_minus_dampening * dk);
        float dir = f.plain ? dk : f.nesterov ? fmaf(c.momentum, bk, dk) : bk;
        p[k] = fmaf(c.neg_lr, dir, p[k]);
        b[k] = bk;
        lane[k] += (double)bk * (double)bk;
    }
    for (size_t k = 0; k < count; k++) {
        params[k] = p[k];
        m[k] = b[k];
    }
}

static inline void sgd_run(float *params, const float *src, const float *grads, float *m,
                           double *lane, size_t n, sgd_constants c, sgd_mode f,
                           mgpo_exception_reader *exact)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        sgd_chunk(params + i, src + i, grads + i, m + i, lane + (i & 8), 8, c, f, exact, i);
    if (i < n)
        sgd_chunk(params + i, src + i, grads + i, m + i, lane + (i & 8), n - i, c, f, exact, i);
}

/* One instantiation with constant flags per combination of decay and undo;
 * an exact-mode undo shares one instantiation per mode, with the decay flag
 * as a variable. */
#define SGD_RUN(restart, plain, nesterov)                                                 \
    do {                                                                                  \
        if (exact)                                                                        \
            sgd_run(params, src, grads, m, lane, n, c,                                    \
                    (sgd_mode){decay, restart, plain, nesterov, true}, exact);            \
        else if (decay && undo != 0.0f)                                                   \
            sgd_run(params, src, grads, m, lane, n, c,                                    \
                    (sgd_mode){true, restart, plain, nesterov, true}, NULL);              \
        else if (decay)                                                                   \
            sgd_run(params, src, grads, m, lane, n, c,                                    \
                    (sgd_mode){true, restart, plain, nesterov, false}, NULL);             \
        else if (undo != 0.0f)                                                            \
            sgd_run(params, src, grads, m, lane, n, c,                                    \
                    (sgd_mode){false, restart, plain, nesterov, true}, NULL);             \
        else                                                                              \
            sgd_run(params, src, grads, m, lane, n, c,                                    \
                    (sgd_mode){false, restart, plain, nesterov, false}, NULL);            \
    } while (0)

double mgpo_kernel_sgd(float *params, const float *src, const float *grads, float *m,
                       const mgpo_slot *slot, const mgpo_step_constants *k, size_t n,
                       float undo, mgpo_exception_reader *exact)
{
    sgd_constants c = {slot->k_decay, slot->k_lr, k->grad_scale, k->momentum,
                       k->one_minus_dampening, undo};
    const bool decay = c.wd != 0.0f;
    double lane[MGPO_LANES] = {0};
    if (k->momentum == 0.0f) SGD_RUN(true, true, false);
    else if (k->first && k->nesterov) SGD_RUN(true, false, true);
    else if (k->first) SGD_RUN(true, false, false);
    else if (k->nesterov) SGD_RUN(false, false, true);
    else SGD_RUN(false, false, false);
    return mgpo_combine_lanes16(lane);
}

/* Portable C has no streaming store: the hint is ignored. */
static void perturb_entry(float *params, float *backup, const float *m, float coefficient,
                          size_t n, bool stream)
{
    (void)stream;
    mgpo_kernel_perturb(params, backup, m, coefficient, n);
}

static void copy_entry(float *dst, const float *src, size_t n, bool stream)
{
    (void)stream;
    memcpy(dst, src, n * sizeof(float));
}

static void restore_exact_entry(float *params, const float *backup, const float *m,
                                float coefficient, size_t n)
{
    mgpo_kernel_restore_exact(params, params, backup, m, coefficient, n);
}

/* The whole portable table; its functions live in kernels.c (float passes),
 * convert.c (element types) and reduce.c (sums of squares). */
static const mgpo_kernels portable = {
    .name = "portable",
    .sum_squares = mgpo_sum_squares,
    .perturb = perturb_entry,
    .unperturb = mgpo_kernel_unperturb,
    .copy = copy_entry,
    .perturb_exact = mgpo_kernel_perturb_exact,
    .restore_exact = restore_exact_entry,
    .adamw = mgpo_kernel_adamw,
    .sgd = mgpo_kernel_sgd,
    .load = mgpo_kernel_load,
    .store = mgpo_kernel_store,
    .perturb_store = mgpo_kernel_perturb_store,
    .store_stochastic = mgpo_store_stochastic,
    .sum_squares_typed = mgpo_kernel_sum_squares_typed,
    .adamw_typed = mgpo_kernel_adamw_typed,
};

const mgpo_kernels *mgpo_kernels_portable(void) { return &portable; }
