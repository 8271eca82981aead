/* Versions, error names, configuration profiles and their validation. */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

unsigned mgpo_version_number(void) { return MGPO_VERSION_NUMBER; }

const char *mgpo_version_string(void) { return MGPO_VERSION_STRING; }

const char *mgpo_strerror(mgpo_status status)
{
    switch (status) {
    case MGPO_OK: return "MGPO_OK: success";
    case MGPO_ERR_NULL_ARGUMENT: return "MGPO_ERR_NULL_ARGUMENT: a required pointer is NULL";
    case MGPO_ERR_INVALID_ARGUMENT: return "MGPO_ERR_INVALID_ARGUMENT: invalid count, index, size, value or alignment (a float32 buffer at an address not a multiple of 4, a bf16/fp16 one at an odd address), a gradient type change through an untyped setter, or tensor options that would never change the tensor (lr_scale 0 and perturb 0: a zero-filled mgpo_tensor_options)";
    case MGPO_ERR_OUT_OF_MEMORY: return "MGPO_ERR_OUT_OF_MEMORY: allocation failed";
    case MGPO_ERR_BAD_LR: return "MGPO_ERR_BAD_LR: learning rate or lr scale negative, not finite or beyond a numeric bound (docs/api.md), or a schedule's min_lr above its peak_lr";
    case MGPO_ERR_BAD_BETA: return "MGPO_ERR_BAD_BETA: beta, momentum, dampening or EMA outside [0, 1), or nesterov without momentum";
    case MGPO_ERR_BAD_EPSILON: return "MGPO_ERR_BAD_EPSILON: eps or norm_eps not positive and finite, or eps not a normal float";
    case MGPO_ERR_BAD_WEIGHT_DECAY: return "MGPO_ERR_BAD_WEIGHT_DECAY: weight decay (or its scale) negative or not finite, lr * weight_decay above 1, or an SGD weight decay above 1";
    case MGPO_ERR_BAD_RHO: return "MGPO_ERR_BAD_RHO: rho negative or not finite, or rho * scale_max above 2^100";
    case MGPO_ERR_BAD_SCALE_MAX: return "MGPO_ERR_BAD_SCALE_MAX: scale_max not positive and finite";
    case MGPO_ERR_BAD_ENUM: return "MGPO_ERR_BAD_ENUM: unknown optimizer, sign, scope, mode, direction, rounding, element type, or a flag other than 0 or 1 (a zero-filled mgpo_config has sign 0: start from mgpo_config_default())";
    case MGPO_ERR_BAD_CLIP: return "MGPO_ERR_BAD_CLIP: max_grad_norm negative or not finite, or nonzero in external optimizer mode (the caller's optimizer clips)";
    case MGPO_ERR_BAD_THREADS: return "MGPO_ERR_BAD_THREADS: num_threads negative";
    case MGPO_ERR_OVERLAP: return "MGPO_ERR_OVERLAP: a buffer overlaps another registered buffer the library writes, or a gradient overlaps an external momentum";
    case MGPO_ERR_NO_TENSORS: return "MGPO_ERR_NO_TENSORS: no tensors registered";
    case MGPO_ERR_NO_GRADIENT: return "MGPO_ERR_NO_GRADIENT: a gradient buffer is not set";
    case MGPO_ERR_NONFINITE_GRADIENT: return "MGPO_ERR_NONFINITE_GRADIENT: NaN or Inf in the gradient; step skipped";
    case MGPO_ERR_WRONG_PHASE: return "MGPO_ERR_WRONG_PHASE: call not allowed in the current phase";
    case MGPO_ERR_SHAPE: return "MGPO_ERR_SHAPE: LoRA pair dimensions inconsistent";
    case MGPO_ERR_BUFFER_TOO_SMALL: return "MGPO_ERR_BUFFER_TOO_SMALL: buffer too small";
    case MGPO_ERR_IO: return "MGPO_ERR_IO: file input/output failed";
    case MGPO_ERR_CHECKPOINT_MAGIC: return "MGPO_ERR_CHECKPOINT_MAGIC: not a libmgpo checkpoint";
    case MGPO_ERR_CHECKPOINT_VERSION: return "MGPO_ERR_CHECKPOINT_VERSION: unsupported checkpoint version";
    case MGPO_ERR_CHECKPOINT_ENDIAN: return "MGPO_ERR_CHECKPOINT_ENDIAN: checkpoint written with another byte order";
    case MGPO_ERR_CHECKPOINT_LAYOUT: return "MGPO_ERR_CHECKPOINT_LAYOUT: checkpoint does not match this state's tensors or configuration";
    case MGPO_ERR_CHECKPOINT_CHECKSUM: return "MGPO_ERR_CHECKPOINT_CHECKSUM: checkpoint checksum mismatch";
    case MGPO_ERR_CHECKPOINT_TRUNCATED: return "MGPO_ERR_CHECKPOINT_TRUNCATED: checkpoint truncated or with trailing bytes";
    case MGPO_ERR_ALLREDUCE: return "MGPO_ERR_ALLREDUCE: the all-reduce hook failed";
    case MGPO_ERR_UNSUPPORTED: return "MGPO_ERR_UNSUPPORTED: not supported by this build";
    case MGPO_ERR_BAD_GRAD_SCALE: return "MGPO_ERR_BAD_GRAD_SCALE: loss scale not finite or outside [2^-64, 2^64]";
    case MGPO_ERR_RESERVED_FIELD: return "MGPO_ERR_RESERVED_FIELD: a reserved field is nonzero: an uninitialised struct (start from mgpo_config_default(), mgpo_tensor_options_default() or a zero-filled mgpo_lora_pair_typed), or a program built against a newer header";
    }
    return "MGPO_ERR_UNKNOWN: unknown status code";
}

mgpo_config mgpo_config_default(void)
{
    mgpo_config c;
    c.optimizer = MGPO_OPTIMIZER_ADAMW;
    c.lr = 1e-4;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8;
    c.weight_decay = 0.0;
    c.momentum = 0.9;
    c.dampening = 0.0;
    c.nesterov = 0;
    c.rho = 0.05;
    c.norm_ema = 0.9;
    c.rounding = MGPO_ROUNDING_NEAREST;
    memset(c.reserved, 0, sizeof c.reserved);
    c.scale_max = 10.0;
    c.norm_eps = 1e-12;
    c.sign = MGPO_SIGN_LOOKAHEAD;
    c.scope = MGPO_SCOPE_GLOBAL;
    c.restore_mode = MGPO_RESTORE_EXACT;
    c.max_grad_norm = 0.0;
    c.num_threads = 1;
    c.optimizer_mode = MGPO_OPTIMIZER_INTEGRATED;
    c.normalize = 1;
    c.direction = MGPO_DIRECTION_MOMENTUM;
    c.seed = 0;
    return c;
}

mgpo_config mgpo_config_nlg(void)
{
    mgpo_config c = mgpo_config_default();
    c.lr = 2e-5;
    c.beta1 = 0.8;
    c.momentum = 0.8;
    c.norm_ema = 0.8;
    c.rho = 0.01;
    return c;
}

/* Hugging Face's Trainer, which ran the authors' experiments, clips at
 * max_grad_norm 1.0 unless told otherwise (docs/algorithm.md). */
mgpo_config mgpo_config_nlu_paper(void)
{
    mgpo_config c = mgpo_config_default();
    c.max_grad_norm = 1.0;
    return c;
}

mgpo_config mgpo_config_nlg_paper(void)
{
    mgpo_config c = mgpo_config_nlg();
    c.max_grad_norm = 1.0;
    return c;
}

static bool unit_interval(double x) { return isfinite(x) && x >= 0.0 && x < 1.0; }
static bool non_negative(double x) { return isfinite(x) && x >= 0.0; }
static bool positive(double x) { return isfinite(x) && x > 0.0; }

/* The numeric bounds (docs/api.md, "Numeric bounds"): every float the
 * library derives from a configuration must be finite in the type in which
 * it is applied, so that no accepted input can make a step write NaN or Inf
 * (the float conversions below are exact comparisons with FLT_MAX, not
 * casts, since a double beyond FLT_MAX does not convert to a finite float). */
static bool float_finite(double x) { return fabs(x) <= FLT_MAX; }

static mgpo_status check_rates(const mgpo_config *c, double lr_scale, double wd_scale)
{
    double lr = c->lr * lr_scale, wd = c->weight_decay * wd_scale;
    /* SGD applies -lr and wd as floats (lr <= 2^50, wd <= 1, so that one
     * step's lr*d and wd*theta stay in range); AdamW applies 1 - lr*wd (kept in
     * [0, 1], so decay never grows a parameter) and -lr / (1 - beta1^t),
     * largest at t = 1.  MGPO_LR_EPS_RATIO bounds AdamW's update
     * (lr / bias1) * m / (sqrt(v)/bias2 + eps), with |m| / bias1 below
     * MGPO_GRAD_NORM_MAX, to 2^100, and its numerator to 2^100 too
     * (docs/api.md). */
    if (!float_finite(lr)) return MGPO_ERR_BAD_LR;
    if (c->optimizer == MGPO_OPTIMIZER_ADAMW &&
        (!float_finite(lr / (1.0 - c->beta1)) ||
         lr > MGPO_LR_EPS_RATIO * fmin((double)(float)c->eps, 1.0)))
        return MGPO_ERR_BAD_LR;
    /* SGD adds wd*theta to the gradient: wd <= 1 keeps it within |theta|. */
    if (c->optimizer == MGPO_OPTIMIZER_SGD && lr > MGPO_LR_EPS_RATIO) return MGPO_ERR_BAD_LR;
    if (!float_finite(wd)) return MGPO_ERR_BAD_WEIGHT_DECAY;
    if (lr * wd > 1.0 || (c->optimizer == MGPO_OPTIMIZER_SGD && wd > 1.0))
        return MGPO_ERR_BAD_WEIGHT_DECAY;
    return MGPO_OK;
}

/* The products are rounded as the step rounds them, so that a value at a
 * bound is accepted or refused the same way under any caller rounding mode.
 * The status is volatile in this wrapper and its siblings: pure arithmetic
 * on values already loaded may otherwise be moved past mgpo_fp_leave (clang
 * did so for mgpo_set_grad_scale's reciprocal). */
mgpo_status mgpo_check_rates(const mgpo_config *c, double lr_scale, double wd_scale)
{
    fenv_t caller;
    mgpo_fp_enter(&caller);
    volatile mgpo_status s = check_rates(c, lr_scale, wd_scale);
    mgpo_fp_leave(&caller);
    return s;
}

static mgpo_status validate(const mgpo_config *c)
{
    for (size_t i = 0; i < sizeof c->reserved / sizeof c->reserved[0]; i++)
        if (c->reserved[i] != 0) return MGPO_ERR_RESERVED_FIELD;
    if ((c->optimizer != MGPO_OPTIMIZER_ADAMW && c->optimizer != MGPO_OPTIMIZER_SGD) ||
        (c->sign != MGPO_SIGN_LOOKAHEAD && c->sign != MGPO_SIGN_ASCENT) ||
        (c->scope != MGPO_SCOPE_GLOBAL && c->scope != MGPO_SCOPE_TENSOR) ||
        (c->restore_mode != MGPO_RESTORE_EXACT &&
         c->restore_mode != MGPO_RESTORE_LOW_MEMORY) ||
        (c->nesterov != 0 && c->nesterov != 1) ||
        (c->optimizer_mode != MGPO_OPTIMIZER_INTEGRATED &&
         c->optimizer_mode != MGPO_OPTIMIZER_EXTERNAL) ||
        (c->normalize != 0 && c->normalize != 1) ||
        (c->direction != MGPO_DIRECTION_MOMENTUM && c->direction != MGPO_DIRECTION_RANDOM) ||
        (c->rounding != MGPO_ROUNDING_NEAREST && c->rounding != MGPO_ROUNDING_STOCHASTIC))
        return MGPO_ERR_BAD_ENUM;
    if (!non_negative(c->lr)) return MGPO_ERR_BAD_LR;
    if (!unit_interval(c->beta1) || !unit_interval(c->beta2) ||
        !unit_interval(c->momentum) || !unit_interval(c->dampening) ||
        !unit_interval(c->norm_ema))
        return MGPO_ERR_BAD_BETA;
    /* torch.optim.SGD refuses the same combination. */
    if (c->nesterov && (c->momentum <= 0.0 || c->dampening != 0.0))
        return MGPO_ERR_BAD_BETA;
    /* AdamW divides by sqrt(v)/b + eps in float: eps must be a normal float. */
    if (!positive(c->eps) || !positive(c->norm_eps) || c->eps < FLT_MIN || c->eps > FLT_MAX)
        return MGPO_ERR_BAD_EPSILON;
    if (!non_negative(c->weight_decay)) return MGPO_ERR_BAD_WEIGHT_DECAY;
    /* A tensor's perturbation |c*m| is at most rho*scale_max. */
    if (!non_negative(c->rho)) return MGPO_ERR_BAD_RHO;
    if (!positive(c->scale_max)) return MGPO_ERR_BAD_SCALE_MAX;
    if (c->rho * c->scale_max > MGPO_PERTURBATION_MAX) return MGPO_ERR_BAD_RHO;
    if (!non_negative(c->max_grad_norm)) return MGPO_ERR_BAD_CLIP;
    /* In external mode the caller's optimizer clips, after mgpo_step. */
    if (c->optimizer_mode == MGPO_OPTIMIZER_EXTERNAL && c->max_grad_norm != 0.0)
        return MGPO_ERR_BAD_CLIP;
    if (c->num_threads < 0) return MGPO_ERR_BAD_THREADS;
    /* The rates of a tensor with the default options. */
    return check_rates(c, 1.0, 1.0);
}

/* rho * scale_max and the rates are computed: in the library's own
 * floating-point environment, so that a caller's traps, flags and rounding
 * mode neither see nor change them (mgpo_create, mgpo_set_rho and
 * mgpo_set_lr validate through here). */
mgpo_status mgpo_config_validate(const mgpo_config *c)
{
    if (!c) return MGPO_ERR_NULL_ARGUMENT;
    fenv_t caller;
    mgpo_fp_enter(&caller);
    volatile mgpo_status s = validate(c);
    mgpo_fp_leave(&caller);
    return s;
}

mgpo_tensor_options mgpo_tensor_options_default(void)
{
    mgpo_tensor_options o;
    o.lr_scale = 1.0;
    o.weight_decay_scale = 1.0;
    o.perturb = 1;
    memset(o.reserved, 0, sizeof o.reserved);
    return o;
}

static mgpo_status check_options(const mgpo_config *c, const mgpo_tensor_options *o)
{
    for (size_t i = 0; i < sizeof o->reserved / sizeof o->reserved[0]; i++)
        if (o->reserved[i] != 0) return MGPO_ERR_RESERVED_FIELD;
    if (!non_negative(o->lr_scale)) return MGPO_ERR_BAD_LR;
    if (!non_negative(o->weight_decay_scale)) return MGPO_ERR_BAD_WEIGHT_DECAY;
    /* A tensor neither stepped nor perturbed would never change: that is a
     * zero-filled struct (its defaults are not 0), refused rather than
     * registered to silently never train. */
    if (o->lr_scale == 0.0 && o->perturb == 0) return MGPO_ERR_INVALID_ARGUMENT;
    return mgpo_check_rates(c, o->lr_scale, o->weight_decay_scale);
}

/* In the library's floating-point environment, as mgpo_config_validate: a
 * NaN scale's comparison would otherwise raise FE_INVALID (or trap) in the
 * caller's (finding 2's class; the differential fuzzer found it in the
 * registrations). */
mgpo_status mgpo_check_options(const mgpo_config *c, const mgpo_tensor_options *o)
{
    fenv_t caller;
    mgpo_fp_enter(&caller);
    volatile mgpo_status s = check_options(c, o);
    mgpo_fp_leave(&caller);
    return s;
}
