/* The fused elementwise passes over one block.
 *
 * Each follows torch's operation order (torch.optim.AdamW / SGD, 1.13) so that
 * results agree with PyTorch to float32 rounding.  The library is built with
 * -ffp-contract=off: no fused multiply-adds, so a vectorised loop gives the
 * same bits as the scalar one.  Loops are written over eight lanes, in the
 * shape of mgpo_sum_squares, so the norm of the new momentum that a step
 * computes on the fly has the same bits as a separate pass over m. */
#include "internal.h"

#include <math.h>
#include <string.h>

void mgpo_kernel_perturb(float *restrict params, float *restrict backup,
                         const float *restrict m, float coefficient, size_t n)
{
    if (backup) memcpy(backup, params, n * sizeof(float));
    for (size_t i = 0; i < n; i++) params[i] = params[i] + coefficient * m[i];
}

void mgpo_kernel_unperturb(float *restrict params, const float *restrict m,
                           float coefficient, size_t n)
{
    for (size_t i = 0; i < n; i++) params[i] = params[i] - coefficient * m[i];
}

/* torch: p.mul_(1 - lr*wd); m.mul_(b1).add_(g, alpha=1-b1);
 * v.mul_(b2).addcmul_(g, g, value=1-b2);
 * p.addcdiv_(m, v.sqrt() / sqrt(bc2) + eps, value=-lr/bc1) */
double mgpo_kernel_adamw(float *params, const float *src,
                         const float *restrict grads, float *restrict m,
                         float *restrict v, const mgpo_slot *slot, float grad_scale,
                         float beta1, float one_minus_beta1, float beta2,
                         float one_minus_beta2, float bias2_sqrt, float eps, size_t n)
{
    const float decay = slot->k_decay, step = slot->k_step;
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        float g = grads[i] * grad_scale;
        float p = src[i] * decay;
        float mi = m[i] * beta1 + one_minus_beta1 * g;
        float vi = v[i] * beta2 + one_minus_beta2 * g * g;
        float denom = sqrtf(vi) / bias2_sqrt + eps;
        params[i] = p + step * mi / denom;
        m[i] = mi;
        v[i] = vi;
        lane[i & 7] += (double)mi * (double)mi;
    }
    return mgpo_combine_lanes(lane);
}

/* torch: d = g + wd*p; b = d (first) | b.mul_(mu).add_(d, alpha=1-damp);
 * d = d + mu*b (nesterov) | b; p.add_(d, alpha=-lr).  With momentum 0 torch
 * keeps no buffer and steps along d; the library still stores d in m because
 * it is the perturbation direction. */
double mgpo_kernel_sgd(float *params, const float *src,
                       const float *restrict grads, float *restrict m,
                       const mgpo_slot *slot, float grad_scale, bool first,
                       float momentum, float one_minus_dampening, bool nesterov, size_t n)
{
    const float wd = slot->k_decay, neg_lr = slot->k_lr;
    const bool decay = wd != 0.0f, plain = momentum == 0.0f;
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        float p = src[i];
        float d = grads[i] * grad_scale;
        if (decay) d = d + wd * p;
        float b = (first || plain) ? d : m[i] * momentum + one_minus_dampening * d;
        float dir = plain ? d : nesterov ? d + momentum * b : b;
        params[i] = p + neg_lr * dir;
        m[i] = b;
        lane[i & 7] += (double)b * (double)b;
    }
    return mgpo_combine_lanes(lane);
}
