/* The mixed-precision side of a slot: gradients of any element type under a
 * loss scale, and bf16/fp16 parameter buffers driven from float32 master
 * weights (docs/algorithm.md, "Mixed precision").
 *
 * A slot with an `out` buffer keeps its master in `params`, which the
 * kernels step like any float32 tensor.  The caller's buffer only ever
 * receives values computed from the master: round(master) after a step and
 * at a restore, round_nearest(master + c*dir) at a perturb.  So the restore
 * is bit-exact with no backup, in either restore mode, and a stochastic
 * rounding is recomputed, not stored: its random bits are a pure function
 * of (config.seed, completed steps, slot, element). */
#include "internal.h"

#include <math.h>
#include <string.h>

/* Stochastic rounding's streams, apart from the random direction's (which
 * uses the slot index itself). */
#define MGPO_ROUNDING_STREAM (UINT64_C(1) << 63)

static inline const unsigned char *typed_at(const void *base, mgpo_dtype type, size_t index)
{
    return (const unsigned char *)base + index * mgpo_dtype_size(type);
}

const float *mgpo_slot_grads(const mgpo_state *st, const mgpo_slot *sl, size_t begin,
                             size_t count, float *scratch)
{
    if (mgpo_slot_grads_direct(st, sl))
        return (const float *)sl->grads + begin;
    st->kernels->load(scratch, typed_at(sl->grads, sl->grad_type, begin), sl->grad_type, count,
                      st->grad_unscale);
    return scratch;
}

mgpo_typed_rounding mgpo_slot_rounding(const mgpo_state *st, const mgpo_slot *sl, size_t begin,
                                       uint64_t step)
{
    mgpo_typed_rounding r = {false, 0, (uint64_t)begin};
    if (st->config.rounding == MGPO_ROUNDING_STOCHASTIC) {
        uint64_t stream = MGPO_ROUNDING_STREAM | (uint64_t)(sl - st->slots);
        r.stochastic = true;
        r.key = mgpo_random_key(st->config.seed, step, stream);
    }
    return r;
}

void mgpo_publish_block(const mgpo_state *st, const mgpo_slot *sl, size_t begin, size_t count,
                        uint64_t step)
{
    void *dst = (void *)typed_at(sl->out, sl->out_type, begin);
    mgpo_typed_rounding r = mgpo_slot_rounding(st, sl, begin, step);
    if (r.stochastic)
        st->kernels->store_stochastic(dst, sl->out_type, sl->params + begin, count, r.key,
                                      r.first_index);
    else
        st->kernels->store(dst, sl->out_type, sl->params + begin, count);
}

void mgpo_perturb_out_block(const mgpo_state *st, const mgpo_slot *sl, const float *dir,
                            size_t begin, size_t count)
{
    void *dst = (void *)typed_at(sl->out, sl->out_type, begin);
    if (sl->kind == MGPO_SLOT_MASTER) {
        st->kernels->perturb_store(dst, sl->out_type, sl->params + begin, dir, sl->applied, count);
        return;
    }
    /* External mode: the caller's buffer is the only copy of the values. */
    float clean[MGPO_BLOCK_FLOATS];
    if (sl->out_backup)
        memcpy((unsigned char *)sl->out_backup + begin * mgpo_dtype_size(sl->out_type), dst,
               count * mgpo_dtype_size(sl->out_type));
    st->kernels->load(clean, dst, sl->out_type, count, 1.0f);
    st->kernels->perturb_store(dst, sl->out_type, clean, dir, sl->applied, count);
}

void mgpo_restore_out_block(const mgpo_state *st, const mgpo_slot *sl, const float *dir,
                            size_t begin, size_t count)
{
    const size_t size = mgpo_dtype_size(sl->out_type);
    void *dst = (void *)typed_at(sl->out, sl->out_type, begin);
    if (sl->out_backup) {
        memcpy(dst, (const unsigned char *)sl->out_backup + begin * size, count * size);
        return;
    }
    /* Low-memory mode: subtract c*dir again (not bit-exact, as for float32). */
    float value[MGPO_BLOCK_FLOATS];
    st->kernels->load(value, dst, sl->out_type, count, 1.0f);
    st->kernels->unperturb(value, dir, sl->applied, count);
    st->kernels->store(dst, sl->out_type, value, count);
}

/* ---- Setters and getters ------------------------------------------------- */

mgpo_status mgpo_set_grad_scale(mgpo_state *st, double scale)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    /* The comparisons (a NaN raises FE_INVALID) and the reciprocal (inexact,
     * rounded) run in the library's environment: the caller's traps, flags
     * and rounding mode must not see or change them. */
    fenv_t caller;
    mgpo_fp_enter(&caller);
    /* Through memory on both sides of the switch: the compiler may
     * otherwise compute with the argument before mgpo_fp_enter or sink the
     * division past mgpo_fp_leave (pure arithmetic moves across calls), as
     * clang did: the differential fuzzer saw FE_INEXACT in the caller's
     * flags. */
    volatile double scale_inside = scale;
    volatile bool valid_inside;
    volatile float unscale_inside;
    double x = scale_inside;
    valid_inside = x >= MGPO_GRAD_SCALE_MIN && x <= MGPO_GRAD_SCALE_MAX;
    /* As torch's GradScaler: the reciprocal in double, rounded to float. */
    unscale_inside = valid_inside ? (float)(1.0 / x) : 1.0f;
    mgpo_fp_leave(&caller);
    bool valid = valid_inside;
    float unscale = unscale_inside;
    if (!valid) return MGPO_ERR_BAD_GRAD_SCALE;
    st->grad_scale = scale;
    st->grad_unscale = unscale;
    return MGPO_OK;
}

mgpo_status mgpo_get_grad_scale(const mgpo_state *st, double *scale)
{
    if (!st || !scale) return MGPO_ERR_NULL_ARGUMENT;
    *scale = st->grad_scale;
    return MGPO_OK;
}

/* The item's slots hold master weights, and `count` is their total. */
static mgpo_status check_master_target(const mgpo_state *st, size_t index, size_t count)
{
    if (index >= st->item_count) return MGPO_ERR_INVALID_ARGUMENT;
    const mgpo_item *it = &st->items[index];
    size_t total = 0;
    for (size_t k = 0; k < it->slot_count; k++) {
        const mgpo_slot *sl = &st->slots[it->first_slot + k];
        if (!mgpo_slot_has_master(sl)) return MGPO_ERR_INVALID_ARGUMENT;
        total += sl->count;
    }
    return count == total ? MGPO_OK : MGPO_ERR_INVALID_ARGUMENT;
}

mgpo_status mgpo_set_master_weights(mgpo_state *st, size_t index, const float *values,
                                    size_t count)
{
    if (!st || !values) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_status s = check_master_target(st, index, count);
    if (s != MGPO_OK) return s;
    if (mgpo_check_registration(st) != MGPO_OK) return MGPO_ERR_WRONG_PHASE;
    for (size_t i = 0; i < count; i++)
        if (!isfinite(values[i])) return MGPO_ERR_INVALID_ARGUMENT;
    const mgpo_item *it = &st->items[index];
    fenv_t caller;
    mgpo_fp_enter(&caller);
    for (size_t k = 0; k < it->slot_count; k++) {
        mgpo_slot *sl = &st->slots[it->first_slot + k];
        memcpy(sl->params, values, sl->count * sizeof(float));
        values += sl->count;
        for (size_t begin = 0; begin < sl->count; begin += MGPO_BLOCK_FLOATS)
            mgpo_publish_block(st, sl, begin, mgpo_block_length(sl, begin), st->step);
    }
    mgpo_fp_leave(&caller);
    return MGPO_OK;
}

mgpo_status mgpo_get_master_weights(const mgpo_state *st, size_t index, float *dst, size_t count)
{
    if (!st || !dst) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_status s = check_master_target(st, index, count);
    if (s != MGPO_OK) return s;
    const mgpo_item *it = &st->items[index];
    for (size_t k = 0; k < it->slot_count; k++) {
        const mgpo_slot *sl = &st->slots[it->first_slot + k];
        memcpy(dst, sl->params, sl->count * sizeof(float));
        dst += sl->count;
    }
    return MGPO_OK;
}
