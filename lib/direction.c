/* The random-direction baseline (MGPO_DIRECTION_RANDOM, the paper's
 * Table 4): the perturbation moves the parameters along an isotropic
 * Gaussian direction z instead of the momentum m, scaled to the norm the
 * momentum perturbation would have had.  z is never stored: it is a pure
 * function of (config.seed, completed steps, slot index, element index)
 * (random.c), regenerated block by block wherever perturb, restore, the
 * fused step and a checkpoint need it, so it costs no memory and is the same
 * for any thread count and block split.  Within one perturbation the step
 * count does not change, so every regeneration gives the same bits. */
#include "internal.h"

static void fill_block(const mgpo_state *st, size_t slot_index, size_t begin, size_t count,
                       float *out)
{
    uint64_t key = mgpo_random_key(st->config.seed, st->step, (uint64_t)slot_index);
    mgpo_random_normal_fill(out, count, key, (uint64_t)begin);
}

const float *mgpo_direction_block(const mgpo_state *st, const mgpo_slot *sl, size_t begin,
                                  size_t count, float *scratch)
{
    if (st->config.direction == MGPO_DIRECTION_MOMENTUM) {
        if (!sl->dir_typed) return sl->dir + begin;
        /* A bf16/fp16 momentum (external mode), widened exactly. */
        st->kernels->load(scratch,
                          (const unsigned char *)sl->dir_typed + begin * mgpo_dtype_size(sl->dir_type),
                          sl->dir_type, count, 1.0f);
        return scratch;
    }
    fill_block(st, (size_t)(sl - st->slots), begin, count, scratch);
    return scratch;
}

double mgpo_direction_sq_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                               void *arg)
{
    (void)arg;
    /* Only the items that move count (external mode: those with a momentum
     * attached), so that z's norm is the norm of what is added. */
    if (!sl->perturb || !mgpo_item_attached(st, &st->items[sl->item])) return 0.0;
    float z[MGPO_BLOCK_FLOATS];
    fill_block(st, (size_t)(sl - st->slots), begin, count, z);
    return st->kernels->sum_squares(z, count);
}
