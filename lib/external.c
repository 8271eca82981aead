/* The external optimizer mode's registry (docs/integration.md, "Your own
 * optimizer"): the caller's momentum buffers that perturb follows, and the
 * rule that keeps them apart from the gradients. */
#include "internal.h"

/* The caller's external momentum of a slot, or NULL (in integrated mode
 * dir is the state's own m). */
static const void *external_momentum(const mgpo_slot *sl, size_t *bytes)
{
    if (sl->dir_typed) {
        *bytes = sl->count * mgpo_dtype_size(sl->dir_type);
        return sl->dir_typed;
    }
    *bytes = sl->count * sizeof(float);
    return sl->dir && sl->dir != sl->m ? sl->dir : NULL;
}

/* Gradients and external momenta are both only read, but not at the same
 * moments: the caller's backward pass writes the gradients between perturb
 * and the restore, which subtracts c*m read again from the momentum, so an
 * alias would restore wrong parameters with every call returning OK.  So
 * neither may overlap the other (gradients may alias gradients, momenta
 * momenta). */
mgpo_status mgpo_check_grads_buffer(const mgpo_state *st, const void *p, size_t bytes)
{
    mgpo_status s = mgpo_check_readable(st, p, bytes);
    for (size_t i = 0; s == MGPO_OK && i < st->slot_count; i++) {
        size_t mb;
        const void *m = external_momentum(&st->slots[i], &mb);
        if (m && mgpo_ranges_overlap(p, bytes, m, mb)) s = MGPO_ERR_OVERLAP;
    }
    return s;
}

mgpo_status mgpo_check_momentum_buffer(const mgpo_state *st, const void *p, size_t bytes)
{
    mgpo_status s = mgpo_check_readable(st, p, bytes);
    for (size_t i = 0; s == MGPO_OK && i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        if (sl->grads && mgpo_ranges_overlap(p, bytes, sl->grads, mgpo_slot_grad_bytes(sl)))
            s = MGPO_ERR_OVERLAP;
    }
    return s;
}

/* The caller's momentum of a slot: read-only, so it may overlap other
 * momenta, but nothing the library writes and no gradient (above).  The perturbation
 * being applied was computed from (and is undone with) the buffers now
 * attached, so they cannot change while perturbed. */
static mgpo_status check_momentum_target(const mgpo_state *st, size_t index,
                                         mgpo_item_kind kind)
{
    if (index >= st->item_count || st->items[index].kind != kind || !mgpo_external(st))
        return MGPO_ERR_INVALID_ARGUMENT;
    return st->perturbed ? MGPO_ERR_WRONG_PHASE : MGPO_OK;
}

mgpo_status mgpo_set_momentum_typed(mgpo_state *st, size_t index, const void *m,
                                    mgpo_dtype type)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_status s = check_momentum_target(st, index, MGPO_ITEM_TENSOR);
    if (s != MGPO_OK) return s;
    if (!mgpo_dtype_valid(type)) return MGPO_ERR_BAD_ENUM;
    if (!mgpo_typed_aligned(m, type)) return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_slot *sl = &st->slots[st->items[index].first_slot];
    if (m) {
        s = mgpo_check_momentum_buffer(st, m, sl->count * mgpo_dtype_size(type));
        if (s != MGPO_OK) return s;
    }
    bool typed = m && type != MGPO_DTYPE_FLOAT32;
    sl->dir = typed ? NULL : m;
    sl->dir_typed = typed ? m : NULL;
    sl->dir_type = type; /* kept when detached: see mgpo_set_momentum */
    return MGPO_OK;
}

/* The untyped setter never changes the element type: a bf16/fp16 momentum
 * (or one detached after it) is replaced through mgpo_set_momentum_typed
 * only, so that a bf16 buffer passed here is not read as twice as many
 * bytes of floats.  NULL detaches and keeps the type. */
mgpo_status mgpo_set_momentum(mgpo_state *st, size_t index, const float *m)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_status s = check_momentum_target(st, index, MGPO_ITEM_TENSOR);
    if (s != MGPO_OK) return s;
    mgpo_dtype type = st->slots[st->items[index].first_slot].dir_type;
    if (m && type != MGPO_DTYPE_FLOAT32) return MGPO_ERR_INVALID_ARGUMENT;
    return mgpo_set_momentum_typed(st, index, m, type);
}

mgpo_status mgpo_set_lora_momentum(mgpo_state *st, size_t index, const float *m_a,
                                   const float *m_b)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_status s = check_momentum_target(st, index, MGPO_ITEM_LORA);
    if (s != MGPO_OK) return s;
    if (!mgpo_typed_aligned(m_a, MGPO_DTYPE_FLOAT32) || !mgpo_typed_aligned(m_b, MGPO_DTYPE_FLOAT32))
        return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_slot *sa = &st->slots[st->items[index].first_slot], *sb = sa + 1;
    if (m_a) s = mgpo_check_momentum_buffer(st, m_a, sa->count * sizeof(float));
    if (s == MGPO_OK && m_b) s = mgpo_check_momentum_buffer(st, m_b, sb->count * sizeof(float));
    if (s != MGPO_OK) return s;
    sa->dir = m_a;
    sb->dir = m_b;
    return MGPO_OK;
}
