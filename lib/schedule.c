/* Learning-rate schedules, as transformers' get_{cosine,linear}_schedule_with_
 * warmup, with a floor: lr = min + (peak - min) * factor after warm-up. */
#include "internal.h"

#include <math.h>

mgpo_schedule mgpo_schedule_paper(double peak_lr, uint64_t total_steps)
{
    mgpo_schedule s;
    s.kind = MGPO_SCHEDULE_WARMUP_COSINE;
    s.peak_lr = peak_lr;
    s.min_lr = 0.0;
    /* 3 % of the steps, rounded up, computed in integers to avoid 0.03's
     * binary rounding deciding the count: with total = 100q + r,
     * ceil(3 total / 100) = 3q + ceil(3r / 100), which cannot overflow. */
    s.warmup_steps = total_steps / 100 * 3 + (total_steps % 100 * 3 + 99) / 100;
    s.total_steps = total_steps;
    return s;
}

mgpo_status mgpo_schedule_lr(const mgpo_schedule *s, uint64_t step, double *lr)
{
    if (!s || !lr) return MGPO_ERR_NULL_ARGUMENT;
    if (s->kind != MGPO_SCHEDULE_CONSTANT && s->kind != MGPO_SCHEDULE_WARMUP_COSINE &&
        s->kind != MGPO_SCHEDULE_WARMUP_LINEAR)
        return MGPO_ERR_BAD_ENUM;
    if (!isfinite(s->peak_lr) || !isfinite(s->min_lr) || s->min_lr < 0.0 ||
        s->peak_lr < s->min_lr)
        return MGPO_ERR_BAD_LR;
    if (s->warmup_steps > s->total_steps) return MGPO_ERR_INVALID_ARGUMENT;

    if (step < s->warmup_steps) {
        *lr = s->peak_lr * (double)step / (double)s->warmup_steps;
        return MGPO_OK;
    }
    double factor = 1.0;
    uint64_t decay_steps = s->total_steps - s->warmup_steps;
    if (s->kind != MGPO_SCHEDULE_CONSTANT) {
        double progress = decay_steps == 0 || step >= s->total_steps
                              ? 1.0
                              : (double)(step - s->warmup_steps) / (double)decay_steps;
        factor = s->kind == MGPO_SCHEDULE_WARMUP_COSINE
                     ? 0.5 * (1.0 + mgpo_cos_pi(progress))
                     : 1.0 - progress;
    }
    *lr = s->min_lr + (s->peak_lr - s->min_lr) * factor;
    return MGPO_OK;
}
