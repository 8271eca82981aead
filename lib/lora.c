/* LoRA pairs: not yet implemented (issue 5). */
#include "internal.h"

mgpo_status mgpo_add_lora_pair(mgpo_state *st, const mgpo_lora_pair *pair,
                               const mgpo_tensor_options *options, size_t *index)
{
    (void)options;
    (void)index;
    if (!st || !pair) return MGPO_ERR_NULL_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

mgpo_status mgpo_set_lora_grads(mgpo_state *st, size_t index, const float *grad_a,
                                const float *grad_b)
{
    (void)grad_a;
    (void)grad_b;
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (index >= st->item_count || st->items[index].kind != MGPO_ITEM_LORA)
        return MGPO_ERR_INVALID_ARGUMENT;
    return MGPO_ERR_UNSUPPORTED;
}

double mgpo_lora_momentum_sq(const mgpo_state *st, const mgpo_item *item)
{
    (void)st;
    (void)item;
    return 0.0;
}

double mgpo_lora_grad_sq(const mgpo_state *st, const mgpo_item *item)
{
    (void)st;
    (void)item;
    return 0.0;
}

void mgpo_lora_base_perturb(mgpo_state *st, mgpo_item *item, float coefficient)
{
    (void)st;
    (void)item;
    (void)coefficient;
}

void mgpo_lora_base_restore(mgpo_state *st, mgpo_item *item)
{
    (void)st;
    (void)item;
}

void mgpo_lora_free(mgpo_state *st, mgpo_item *item)
{
    (void)st;
    (void)item;
}
