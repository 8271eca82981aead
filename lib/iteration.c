/* perturb / restore / step: walks the scope units and runs the kernels.
 *
 * Data flow of one iteration (N = perturbed floats, P = all floats):
 *   perturb  reads theta, m; writes theta and, in exact mode, the short
 *            list of elements that subtracting c*m will not restore
 *            bit-exactly (norms come cached from the last step)
 *   step     pass 1 reads g: sum of squares per block (a NaN/Inf anywhere
 *            makes the sum non-finite, which is the finite check);
 *            pass 2 reads theta, the list, g, m, v; writes theta, m, v and
 *            sums the new m's squares for the next perturb.
 * Only per-unit scalars cross between phases.
 * External optimizer mode (the caller's optimizer owns m and steps): perturb
 * first reads m for its norm; step runs pass 1, then a plain restore, and
 * updates only the per-unit scalars. */
#include "internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

static double unit_scale(const mgpo_state *st, const mgpo_unit *u)
{
    /* APN off (the Fig. 4 ablation): the perturbation has norm rho. */
    if (!u->gbar_set || !st->config.normalize) return 1.0;
    double s = 1.0 / (u->gbar + st->config.norm_eps);
    return s < st->config.scale_max ? s : st->config.scale_max;
}

/* Sums the first `count` values of reduce_buf across ranks through the
 * caller's hook.  Every value is a sum of squares, so the true global sum is
 * never below this rank's own contribution (IEEE addition of non-negative
 * numbers is monotonic in any order); a result below it, or a finite result
 * where this rank contributed NaN, proves the hook did not sum (a MIN or an
 * average, a wrong count, an unwritten buffer) and is reported instead of
 * silently training on wrong norms.  The local values are kept in the second
 * half of reduce_buf (sized 2 * (unit_count + 1) by state.c). */
static mgpo_status all_reduce(mgpo_state *st, size_t count)
{
    if (!st->allreduce) return MGPO_OK;
    double *sum = st->reduce_buf, *local = st->reduce_buf + count;
    memcpy(local, sum, count * sizeof *sum);
    if (st->allreduce(sum, count, st->allreduce_ctx) != 0) return MGPO_ERR_ALLREDUCE;
    for (size_t i = 0; i < count; i++)
        if (isnan(local[i]) ? !isnan(sum[i]) : sum[i] < local[i]) return MGPO_ERR_ALLREDUCE;
    return MGPO_OK;
}

/* ---- perturb ------------------------------------------------------------- */

/* Exact mode keeps an exception list in each block's backup range.  When a
 * block's list would overflow, the block is left unperturbed and returns 1,
 * so that the pass's per-slot sum counts such blocks; the slot then keeps
 * plain copies in every block (perturb_copy_block), and one flag per slot
 * says which form all its blocks are in. */
static double perturb_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                            void *arg)
{
    (void)arg;
    if (sl->applied == 0.0f) return 0.0;
    float scratch[MGPO_BLOCK_FLOATS];
    const float *m = mgpo_direction_block(st, sl, begin, count, scratch);
    /* A bf16/fp16 buffer (params is NULL in external mode). */
    if (mgpo_slot_typed_out(sl)) {
        mgpo_perturb_out_block(st, sl, m, begin, count);
        return 0.0;
    }
    float *p = sl->params + begin;
    if (!sl->backup) {
        st->kernels->perturb(p, NULL, m, sl->applied, count, false);
        return 0.0;
    }
    if (sl->copy_backup) {
        st->kernels->perturb(p, sl->backup + begin, m, sl->applied, count, sl->stream);
        return 0.0;
    }
    uint32_t listed = st->kernels->perturb_exact(p, sl->backup + begin, m, sl->applied, count);
    return listed == MGPO_FULL_BACKUP ? 1.0 : 0.0;
}

/* Turns a block of a full_copy slot from its list (or its untouched values,
 * when the list overflowed) into a plain copy, perturbed. */
static double perturb_copy_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                                 void *arg)
{
    (void)arg;
    if (sl->applied == 0.0f || !sl->full_copy || sl->copy_backup) return 0.0;
    float *p = sl->params + begin, *backup = sl->backup + begin, scratch[MGPO_BLOCK_FLOATS];
    const float *m = mgpo_direction_block(st, sl, begin, count, scratch);
    uint32_t listed;
    memcpy(&listed, backup, sizeof listed);
    if (listed != MGPO_FULL_BACKUP) st->kernels->restore_exact(p, backup, m, sl->applied, count);
    st->kernels->perturb(p, backup, m, sl->applied, count, sl->stream);
    return 0.0;
}

static void perturb_slots(mgpo_state *st)
{
    mgpo_parallel_blocks(st, perturb_block, NULL, true);
    bool any_copy = false;
    for (size_t i = 0; i < st->slot_count; i++) {
        mgpo_slot *sl = &st->slots[i];
        sl->full_copy = sl->backup && sl->applied != 0.0f &&
                        (sl->copy_backup || sl->block_total > 0.0);
        any_copy |= sl->full_copy && !sl->copy_backup;
    }
    if (any_copy) mgpo_parallel_blocks(st, perturb_copy_block, NULL, false);
}

/* Squared momentum norm of an item, in the space its unit measures; an
 * item whose external momentum is not attached yet has none. */
static double item_momentum_sq(const mgpo_state *st, const mgpo_item *it)
{
    if (!mgpo_item_attached(st, it)) return 0.0;
    if (it->kind == MGPO_ITEM_LORA) return mgpo_lora_momentum_sq(st, it);
    return st->slots[it->first_slot].momentum_sq;
}

/* Whether an adapter-mode pair's A and B can move by cf*m without a float
 * reaching Inf: its weight-space norm does not bound |m_A| or |m_B| (B may be
 * ~0 while m_A is large), so the coefficient is checked against the slots'
 * own momentum norms (cached by the last step).  Only this pair's data
 * decides, so ranks of a sharded run agree on every other item. */
static bool adapter_move_fits(const mgpo_state *st, const mgpo_item *it, float cf)
{
    for (size_t k = 0; k < it->slot_count; k++) {
        double norm = sqrt(st->slots[it->first_slot + k].momentum_sq);
        if (!(fabs((double)cf) * norm <= MGPO_PERTURBATION_MAX)) return false;
    }
    return true;
}

/* External mode: the caller's optimizer has changed m since the last
 * perturb, so its norm is measured here (the integrated step caches it).
 * Every attached buffer's norm is kept: adapter_move_fits reads A's and B's. */
static double momentum_sq_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                                void *arg)
{
    (void)arg;
    if (!sl->perturb) return 0.0;
    if (sl->dir_typed)
        return st->kernels->sum_squares_typed(
            (const unsigned char *)sl->dir_typed + begin * mgpo_dtype_size(sl->dir_type),
            sl->dir_type, count, 1.0f);
    return sl->dir ? st->kernels->sum_squares(sl->dir + begin, count) : 0.0;
}

/* Integrated: no momentum before the first step.  External: the authors'
 * rule, perturb whenever the momentum exists (attached). */
static bool perturb_is_noop(const mgpo_state *st)
{
    return st->perturbed || (!mgpo_external(st) && st->step == 0) || st->config.rho == 0.0;
}

static mgpo_status perturb(mgpo_state *st)
{
    if (perturb_is_noop(st)) return MGPO_OK;
    if (mgpo_external(st)) {
        mgpo_parallel_blocks(st, momentum_sq_block, NULL, true);
        for (size_t i = 0; i < st->slot_count; i++)
            st->slots[i].momentum_sq = mgpo_canonical_nan(st->slots[i].block_total);
    }

    double *sq = st->reduce_buf;
    memset(sq, 0, st->unit_count * sizeof *sq);
    for (size_t i = 0; i < st->item_count; i++)
        if (st->items[i].perturb) sq[st->items[i].unit] += item_momentum_sq(st, &st->items[i]);
    mgpo_status s = all_reduce(st, st->unit_count);
    if (s != MGPO_OK) return s;

    const mgpo_config *c = &st->config;
    /* Random direction: z's squared norm per unit, so that c_U * n_U / ||z_U||
     * gives z the norm the momentum perturbation would have. */
    double *z_sq = st->reduce_buf + st->unit_count;
    if (c->direction == MGPO_DIRECTION_RANDOM) {
        mgpo_parallel_blocks(st, mgpo_direction_sq_block, NULL, true);
        memset(z_sq, 0, st->unit_count * sizeof *z_sq);
        for (size_t i = 0; i < st->slot_count; i++)
            z_sq[st->items[st->slots[i].item].unit] += st->slots[i].block_total;
    }
    double total_sq = 0.0, applied_sq = 0.0, max_scale = 0.0;
    bool any = false;
    for (size_t u = 0; u < st->unit_count; u++) {
        mgpo_unit *un = &st->units[u];
        /* A NaN norm (a NaN in the momentum; the unit is skipped) is kept
         * canonical: its bits would depend on the kernel table. */
        double n = mgpo_canonical_nan(sqrt(sq[u]));
        un->momentum_norm = n;
        un->scale = 0.0;
        un->coefficient = 0.0;
        if (!isfinite(n) || n <= c->norm_eps) continue;
        double scale = unit_scale(st, un);
        double coefficient = (double)c->sign * c->rho * scale / (n + c->norm_eps);
        /* Random direction: z scaled to the norm c_U * m_U would have. */
        double applied = coefficient;
        if (c->direction == MGPO_DIRECTION_RANDOM)
            applied = z_sq[u] > 0.0 ? coefficient * n / sqrt(z_sq[u]) : 0.0;
        /* It is applied as a float: a unit whose float coefficient would be
         * Inf (a momentum norm just above a tiny norm_eps) or 0 is skipped
         * like one with a non-finite norm. */
        if (!(fabs(applied) <= FLT_MAX) || (float)applied == 0.0f) continue;
        un->scale = scale;
        un->coefficient = applied;
        any = true;
        total_sq += n * n;
        applied_sq += (coefficient * n) * (coefficient * n);
        if (scale > max_scale) max_scale = scale;
    }
    if (!any) return MGPO_OK;

    for (size_t i = 0; i < st->item_count; i++) {
        mgpo_item *it = &st->items[i];
        float cf = it->perturb && mgpo_item_attached(st, it)
                       ? (float)st->units[it->unit].coefficient
                       : 0.0f;
        if (it->lora && it->lora->desc.mode == MGPO_LORA_BASE) {
            if (cf != 0.0f) mgpo_lora_base_perturb(st, it, cf);
            continue;
        }
        if (it->lora && cf != 0.0f && !adapter_move_fits(st, it, cf)) cf = 0.0f;
        for (size_t k = 0; k < it->slot_count; k++) st->slots[it->first_slot + k].applied = cf;
    }
    perturb_slots(st);

    st->perturbed = true;
    st->stats.momentum_norm = sqrt(total_sq);
    st->stats.perturbation_norm = sqrt(applied_sq);
    st->stats.perturbation_scale = max_scale;
    return MGPO_OK;
}

/* The public calls that compute run under the library's own floating-point
 * environment (mgpo_fp_enter), whatever the caller's. */
mgpo_status mgpo_perturb(mgpo_state *st)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (st->item_count == 0) return MGPO_ERR_NO_TENSORS;
    /* The random direction's norm is local; the hook's contract has no
     * room for a second sum. */
    if (st->config.direction == MGPO_DIRECTION_RANDOM && st->allreduce) return MGPO_ERR_UNSUPPORTED;
    /* The calls that do nothing skip the environment switch (~0.4 us). */
    if (perturb_is_noop(st)) return MGPO_OK;
    fenv_t caller;
    mgpo_fp_enter(&caller);
    mgpo_status s = perturb(st);
    mgpo_fp_leave(&caller);
    return s;
}

/* ---- restore ------------------------------------------------------------- */

static double restore_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                            void *arg)
{
    (void)arg;
    if (sl->applied == 0.0f) return 0.0;
    if (mgpo_slot_has_master(sl)) {
        mgpo_publish_block(st, sl, begin, count, st->step);
        return 0.0;
    }
    float scratch[MGPO_BLOCK_FLOATS];
    const float *m = mgpo_direction_block(st, sl, begin, count, scratch);
    if (sl->kind == MGPO_SLOT_TYPED_OUT) {
        mgpo_restore_out_block(st, sl, m, begin, count);
        return 0.0;
    }
    float *p = sl->params + begin;
    if (!sl->backup) st->kernels->unperturb(p, m, sl->applied, count);
    else if (sl->full_copy) st->kernels->copy(p, sl->backup + begin, count, sl->stream);
    else st->kernels->restore_exact(p, sl->backup + begin, m, sl->applied, count);
    return 0.0;
}

/* Marks everything clean; the caller has already put the values back. */
static void clear_perturbation(mgpo_state *st)
{
    for (size_t i = 0; i < st->slot_count; i++) st->slots[i].applied = 0.0f;
    for (size_t i = 0; i < st->item_count; i++)
        if (st->items[i].lora && st->items[i].lora->base_applied != 0.0f)
            mgpo_lora_base_restore(st, &st->items[i]);
    st->perturbed = false;
}

static void restore(mgpo_state *st)
{
    mgpo_parallel_blocks(st, restore_block, NULL, false);
    clear_perturbation(st);
}

mgpo_status mgpo_restore(mgpo_state *st)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (!st->perturbed) return MGPO_OK;
    fenv_t caller;
    mgpo_fp_enter(&caller);
    restore(st);
    mgpo_fp_leave(&caller);
    return MGPO_OK;
}

/* ---- step ---------------------------------------------------------------- */

static double grad_sq_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                            void *arg)
{
    (void)arg;
    double sq;
    if (mgpo_slot_grads_direct(st, sl))
        sq = st->kernels->sum_squares((const float *)sl->grads + begin, count);
    else
        sq = st->kernels->sum_squares_typed(mgpo_slot_grads_at(sl, begin), sl->grad_type, count,
                                            st->grad_unscale);
    /* SGD's coupled decay makes wd*theta part of the gradient it applies
     * (and stores as momentum): a NaN or Inf parameter of a decayed buffer
     * makes it non-finite, so it counts as a non-finite gradient.  0 times
     * a finite sum of squares adds +0.0 and leaves the norm's bits alone;
     * a perturbed value is finite exactly when its clean value is
     * (MGPO_PERTURBATION_MAX). */
    if (sl->block_max) {
        const float *p = sl->params + begin;
        sq += 0.0 * st->kernels->sum_squares(p, count);
        /* And the block's largest |theta|, for the bound on the update. */
        float largest = 0.0f;
        for (size_t i = 0; i < count; i++) largest = fmaxf(largest, fabsf(p[i]));
        sl->block_max[begin / MGPO_BLOCK_FLOATS] = (double)largest;
    }
    return sq;
}

static double update_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                           void *arg)
{
    const mgpo_step_constants *k = arg;
    float *p = sl->params + begin, *m = sl->m + begin;
    const float *src = p;
    float undo = 0.0f;
    mgpo_exception_reader list, *exact = NULL;
    /* The restore is fused into the step: the kernel reads the clean values
     * from a plain copy, or subtracts c*m from each perturbed value it reads
     * and, in exact mode, takes the listed elements' clean values instead.
     * A random direction is not m: such a block is restored on its own
     * first, and the kernel sees it clean.  A master is never perturbed:
     * the caller's buffer gets the new rounding after the update. */
    if (sl->kind == MGPO_SLOT_MASTER) {
        /* src is the clean master already. */
    } else if (sl->applied != 0.0f && st->config.direction == MGPO_DIRECTION_RANDOM) {
        restore_block(st, sl, begin, count, NULL);
    } else if (sl->applied != 0.0f) {
        if (sl->backup && sl->full_copy) {
            src = sl->backup + begin;
        } else {
            undo = sl->applied;
            if (sl->backup) {
                list = mgpo_exceptions_of(sl->backup + begin, count);
                exact = &list;
            }
        }
    }
    /* A master with AdamW: one fused pass. */
    if (sl->kind == MGPO_SLOT_MASTER && st->config.optimizer == MGPO_OPTIMIZER_ADAMW) {
        mgpo_typed_rounding r = mgpo_slot_rounding(st, sl, begin, k->step);
        return st->kernels->adamw_typed(
            p, mgpo_slot_grads_at(sl, begin), sl->grad_type, st->grad_unscale, m, sl->v + begin,
            (unsigned char *)sl->out + begin * mgpo_dtype_size(sl->out_type), sl->out_type, &r,
            sl, k, count);
    }
    float scratch[MGPO_BLOCK_FLOATS];
    const float *g = mgpo_slot_grads(st, sl, begin, count, scratch);
    double m_sq = st->config.optimizer == MGPO_OPTIMIZER_ADAMW
                      ? st->kernels->adamw(p, src, g, m, sl->v + begin, sl, k, count, undo, exact)
                      : st->kernels->sgd(p, src, g, m, sl, k, count, undo, exact);
    if (sl->kind == MGPO_SLOT_MASTER) mgpo_publish_block(st, sl, begin, count, k->step);
    return m_sq;
}

/* Squared gradient norm of an item in its unit's space (pass 1 has left
 * each slot's sum of squared raw gradients in block_total). */
static double item_grad_sq(const mgpo_state *st, const mgpo_item *it)
{
    if (it->kind == MGPO_ITEM_LORA) return mgpo_lora_grad_sq(st, it);
    return st->slots[it->first_slot].block_total;
}

static void set_slot_constants(mgpo_state *st, uint64_t t)
{
    const mgpo_config *c = &st->config;
    double bias1 = 1.0 - mgpo_pow_u64(c->beta1, t);
    for (size_t i = 0; i < st->slot_count; i++) {
        mgpo_slot *sl = &st->slots[i];
        double lr = st->lr * sl->lr_scale, wd = c->weight_decay * sl->weight_decay_scale;
        if (c->optimizer == MGPO_OPTIMIZER_ADAMW) {
            sl->k_decay = (float)(1.0 - lr * wd);
            sl->k_step = (float)(-(lr / bias1));
        } else {
            sl->k_decay = (float)wd;
            sl->k_lr = (float)(-lr);
        }
    }
}

static void finish_step(mgpo_state *st, uint64_t t, double grad_norm, double ema_sq)
{
    st->step = t;
    st->stats.lr = st->lr;
    st->stats.grad_norm = grad_norm;
    st->stats.grad_norm_ema = sqrt(ema_sq);
}

/* A refused step: the parameters clean again, one more skipped step,
 * nothing else changed. */
static mgpo_status skip_step(mgpo_state *st)
{
    if (st->perturbed) restore(st);
    st->skipped_steps++;
    return MGPO_ERR_NONFINITE_GRADIENT;
}

/* SGD: the new buffer b' = mu*b + (1-dampening)*(g + wd*theta) has every
 * element below mu*||b|| + ||g|| + wd*max|theta| (b' = d at the first
 * step), and the update lr*dir (dir = b', or d + mu*b' with Nesterov) below
 * (1 + mu) times that.  Both must stay below MGPO_SGD_STEP_MAX, so that
 * neither the buffer nor a parameter reaches Inf (adding less than 2^103 to
 * a finite float never does); else the step is refused before anything is
 * written.  Reached only with parameters near the float range's end. */
static bool sgd_update_fits(const mgpo_state *st, double grad_norm)
{
    const mgpo_config *c = &st->config;
    for (size_t i = 0; i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        double largest = 0.0;
        for (size_t b = 0; sl->block_max && b < sl->block_count; b++)
            largest = fmax(largest, sl->block_max[b]);
        double bound = c->momentum * sqrt(sl->momentum_sq) + grad_norm +
                       c->weight_decay * sl->weight_decay_scale * largest;
        double lr = st->lr * sl->lr_scale;
        if (!(bound < MGPO_SGD_STEP_MAX && lr * (1.0 + c->momentum) * bound < MGPO_SGD_STEP_MAX))
            return false;
    }
    return true;
}

static mgpo_status step(mgpo_state *st)
{
    /* Pass 1: raw gradient norms per unit and in total. */
    mgpo_parallel_blocks(st, grad_sq_block, NULL, true);
    double *sq = st->reduce_buf;
    size_t units = st->unit_count;
    memset(sq, 0, (units + 1) * sizeof *sq);
    for (size_t i = 0; i < st->slot_count; i++) sq[units] += st->slots[i].block_total;
    for (size_t i = 0; i < st->item_count; i++)
        if (st->items[i].perturb) sq[st->items[i].unit] += item_grad_sq(st, &st->items[i]);
    mgpo_status s = all_reduce(st, units + 1);
    if (s != MGPO_OK) return s;

    /* A unit's norm can be NaN with finite raw gradients (a LoRA pair whose
     * A or B holds an Inf): refused like a NaN gradient, so that no EMA
     * becomes non-finite. */
    for (size_t u = 0; u <= units; u++)
        if (!isfinite(sq[u])) return skip_step(st);

    const mgpo_config *c = &st->config;
    double grad_norm = sqrt(sq[units]);
    mgpo_step_constants k;
    memset(&k, 0, sizeof k);
    k.grad_scale = 1.0f;
    int clipped = 0;
    if (c->max_grad_norm > 0.0) {
        /* torch.nn.utils.clip_grad_norm_: scale by max/(norm+1e-6) if below 1. */
        double coef = c->max_grad_norm / (grad_norm + 1e-6);
        if (coef < 1.0) {
            k.grad_scale = (float)coef;
            clipped = 1;
        }
    }
    /* Every element of the gradient the kernels apply is below the bound, so
     * AdamW's g*g cannot overflow a float (MGPO_GRAD_NORM_MAX). */
    if (!(grad_norm * (double)k.grad_scale < MGPO_GRAD_NORM_MAX)) return skip_step(st);
    if (!mgpo_external(st) && c->optimizer == MGPO_OPTIMIZER_SGD &&
        !sgd_update_fits(st, grad_norm * (double)k.grad_scale))
        return skip_step(st);

    /* The new EMAs, checked before any is stored (the second half of
     * reduce_buf is free once the all-reduce is done). */
    double *gbar = st->reduce_buf + units + 1, ema_sq = 0.0;
    for (size_t u = 0; u < units; u++) {
        const mgpo_unit *un = &st->units[u];
        double gamma = sqrt(sq[u]);
        gbar[u] = un->gbar_set ? c->norm_ema * un->gbar + (1.0 - c->norm_ema) * gamma : gamma;
        if (!isfinite(gbar[u])) return skip_step(st);
        ema_sq += gbar[u] * gbar[u];
    }
    /* Finite EMAs whose squares overflow (LoRA weight-space norms near the
     * double range's end) would report grad_norm_ema = +Inf. */
    if (!isfinite(ema_sq)) return skip_step(st);
    st->stats.clipped = clipped;
    for (size_t u = 0; u < units; u++) {
        mgpo_unit *un = &st->units[u];
        un->gamma = sqrt(sq[u]);
        un->gbar = gbar[u];
        un->gbar_set = true;
    }

    uint64_t t = st->step + 1;
    if (mgpo_external(st)) {
        /* The caller's optimizer steps next, from the clean parameters. */
        if (st->perturbed) restore(st);
        finish_step(st, t, grad_norm, ema_sq);
        return MGPO_OK;
    }
    set_slot_constants(st, t);
    k.step = t;
    k.first = t == 1;
    k.beta1 = (float)c->beta1;
    k.one_minus_beta1 = (float)(1.0 - c->beta1);
    k.beta2 = (float)c->beta2;
    k.one_minus_beta2 = (float)(1.0 - c->beta2);
    k.inv_bias2_sqrt = (float)(1.0 / sqrt(1.0 - mgpo_pow_u64(c->beta2, t)));
    k.eps = (float)c->eps;
    k.momentum = (float)c->momentum;
    k.one_minus_dampening = (float)(1.0 - c->dampening);
    k.nesterov = c->nesterov != 0;

    /* Pass 2: restore fused with the update; block_total now gets m^2. */
    mgpo_parallel_blocks(st, update_block, &k, true);
    for (size_t i = 0; i < st->slot_count; i++)
        st->slots[i].momentum_sq = mgpo_canonical_nan(st->slots[i].block_total);
    clear_perturbation(st);
    finish_step(st, t, grad_norm, ema_sq);
    return MGPO_OK;
}

mgpo_status mgpo_step(mgpo_state *st)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (st->item_count == 0) return MGPO_ERR_NO_TENSORS;
    for (size_t i = 0; i < st->slot_count; i++)
        if (!st->slots[i].grads) return MGPO_ERR_NO_GRADIENT;
    fenv_t caller;
    mgpo_fp_enter(&caller);
    mgpo_status s = step(st);
    mgpo_fp_leave(&caller);
    return s;
}

mgpo_restore_census mgpo_internal_restore_census(const mgpo_state *st)
{
    mgpo_restore_census c = {0, 0, 0};
    for (size_t i = 0; i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        if (!sl->backup || sl->applied == 0.0f) continue;
        if (sl->full_copy) {
            c.copy_blocks += sl->block_count;
            continue;
        }
        for (size_t k = 0; k < sl->block_count; k++) {
            size_t begin = k * MGPO_BLOCK_FLOATS;
            size_t n = mgpo_block_length(sl, begin);
            c.list_blocks++;
            c.exceptions += mgpo_exceptions_of(sl->backup + begin, n).count;
        }
    }
    return c;
}
