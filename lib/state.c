/* State lifetime, memory, the tensor registry and the read-only getters.
 * The setters of mixed precision are in mixed.c, those of the external
 * optimizer mode in external.c. */
#include "internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- Memory ---------------------------------------------------------------
 * Every allocation goes through the caller's allocator.  Large buffers are
 * aligned to MGPO_ALIGNMENT by over-allocating and storing the raw pointer
 * just before the aligned one, so the caller's allocator needs only malloc's
 * guarantees. */

static void *default_alloc(void *ctx, size_t size) { (void)ctx; return malloc(size); }
static void default_free(void *ctx, void *ptr, size_t size) { (void)ctx; (void)size; free(ptr); }

#define MGPO_ALLOC_EXTRA (MGPO_ALIGNMENT + sizeof(void *))

void *mgpo_alloc(const mgpo_state *st, size_t size)
{
    if (size == 0 || size > SIZE_MAX - MGPO_ALLOC_EXTRA) return NULL;
    unsigned char *raw = st->allocator.alloc(st->allocator.ctx, size + MGPO_ALLOC_EXTRA);
    if (!raw) return NULL;
    uintptr_t at = ((uintptr_t)raw + sizeof(void *) + MGPO_ALIGNMENT - 1) &
                   ~(uintptr_t)(MGPO_ALIGNMENT - 1);
    unsigned char *aligned = raw + (at - (uintptr_t)raw);
    memcpy(aligned - sizeof(void *), &raw, sizeof raw);
    return aligned;
}

void mgpo_free(const mgpo_state *st, void *ptr, size_t size)
{
    if (!ptr) return;
    void *raw;
    memcpy(&raw, (unsigned char *)ptr - sizeof(void *), sizeof raw);
    st->allocator.free(st->allocator.ctx, raw, size + MGPO_ALLOC_EXTRA);
}

mgpo_status mgpo_grow(const mgpo_state *st, void **array, size_t *capacity,
                      size_t needed, size_t elem_size)
{
    if (needed <= *capacity) return MGPO_OK;
    size_t cap = *capacity ? *capacity : 4;
    while (cap < needed) {
        if (cap > SIZE_MAX / 2 / elem_size) return MGPO_ERR_OUT_OF_MEMORY;
        cap *= 2;
    }
    void *grown = mgpo_alloc(st, cap * elem_size);
    if (!grown) return MGPO_ERR_OUT_OF_MEMORY;
    if (*array) {
        memcpy(grown, *array, *capacity * elem_size);
        mgpo_free(st, *array, *capacity * elem_size);
    }
    *array = grown;
    *capacity = cap;
    return MGPO_OK;
}

static void free_slot(mgpo_state *st, mgpo_slot *sl);

/* ---- Create / destroy ---------------------------------------------------- */

mgpo_status mgpo_create(mgpo_state **out, const mgpo_config *config,
                        const mgpo_allocator *allocator)
{
    if (!out) return MGPO_ERR_NULL_ARGUMENT;
    *out = NULL;
    mgpo_config cfg = config ? *config : mgpo_config_default();
    mgpo_status s = mgpo_config_validate(&cfg);
    if (s != MGPO_OK) return s;
    if (allocator && (!allocator->alloc || !allocator->free)) return MGPO_ERR_NULL_ARGUMENT;
    const mgpo_kernels *kernels;
    s = mgpo_kernels_choose(&kernels);
    if (s != MGPO_OK) return s;

    mgpo_state boot;
    memset(&boot, 0, sizeof boot);
    if (allocator) {
        boot.allocator = *allocator;
    } else {
        boot.allocator.alloc = default_alloc;
        boot.allocator.free = default_free;
    }
    mgpo_state *st = mgpo_alloc(&boot, sizeof *st);
    if (!st) return MGPO_ERR_OUT_OF_MEMORY;
    *st = boot;
    st->config = cfg;
    st->grad_scale = 1.0;
    st->grad_unscale = 1.0f;
    st->lr = cfg.lr;
    st->stats.lr = cfg.lr;
    st->kernels = kernels;
    st->max_threads = mgpo_parallel_max_threads(&cfg);
    if (st->max_threads > 1) {
        st->partials = mgpo_alloc(st, 2 * (size_t)st->max_threads * sizeof *st->partials);
        if (!st->partials) {
            mgpo_destroy(st);
            return MGPO_ERR_OUT_OF_MEMORY;
        }
    }
    if (cfg.scope == MGPO_SCOPE_GLOBAL) {
        s = mgpo_grow(st, (void **)&st->units, &st->unit_capacity, 1, sizeof *st->units);
        if (s == MGPO_OK)
            s = mgpo_grow(st, (void **)&st->reduce_buf, &st->reduce_capacity, 4,
                          sizeof(double));
        if (s != MGPO_OK) {
            mgpo_destroy(st);
            return s;
        }
        memset(&st->units[0], 0, sizeof st->units[0]);
        st->unit_count = 1;
    }
    *out = st;
    return MGPO_OK;
}

void mgpo_destroy(mgpo_state *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->item_count; i++) mgpo_lora_free(st, &st->items[i]);
    for (size_t i = 0; i < st->slot_count; i++) free_slot(st, &st->slots[i]);
    mgpo_free(st, st->items, st->item_capacity * sizeof *st->items);
    mgpo_free(st, st->slots, st->slot_capacity * sizeof *st->slots);
    mgpo_free(st, st->units, st->unit_capacity * sizeof *st->units);
    mgpo_free(st, st->partials, 2 * (size_t)st->max_threads * sizeof *st->partials);
    mgpo_free(st, st->reduce_buf, st->reduce_capacity * sizeof(double));
    mgpo_state copy = *st;
    mgpo_free(&copy, st, sizeof *st);
}

/* ---- Registry ------------------------------------------------------------ */

bool mgpo_ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes)
{
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

static bool overlaps_lora_base(const mgpo_state *st, const void *p, size_t bytes)
{
    for (size_t i = 0; i < st->item_count; i++) {
        const mgpo_lora_item *l = st->items[i].lora;
        if (l && l->desc.base_weight &&
            mgpo_ranges_overlap(p, bytes, l->desc.base_weight,
                                l->desc.n_out * l->desc.n_in * mgpo_dtype_size(l->desc.base_type)))
            return true;
    }
    return false;
}

/* A buffer the library will write must not overlap anything registered. */
mgpo_status mgpo_check_writable(const mgpo_state *st, const void *p, size_t bytes)
{
    for (size_t i = 0; i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        if (mgpo_ranges_overlap(p, bytes, mgpo_slot_caller_params(sl), mgpo_slot_caller_bytes(sl)) ||
            (sl->grads && mgpo_ranges_overlap(p, bytes, sl->grads, mgpo_slot_grad_bytes(sl))) ||
            (sl->dir && sl->dir != sl->m &&
             mgpo_ranges_overlap(p, bytes, sl->dir, sl->count * sizeof(float))) ||
            (sl->dir_typed && mgpo_ranges_overlap(p, bytes, sl->dir_typed,
                                                  sl->count * mgpo_dtype_size(sl->dir_type))))
            return MGPO_ERR_OVERLAP;
    }
    return overlaps_lora_base(st, p, bytes) ? MGPO_ERR_OVERLAP : MGPO_OK;
}

/* A buffer the library only reads must not overlap anything it writes. */
mgpo_status mgpo_check_readable(const mgpo_state *st, const void *p, size_t bytes)
{
    for (size_t i = 0; i < st->slot_count; i++) {
        const mgpo_slot *sl = &st->slots[i];
        if (mgpo_ranges_overlap(p, bytes, mgpo_slot_caller_params(sl), mgpo_slot_caller_bytes(sl)))
            return MGPO_ERR_OVERLAP;
    }
    return overlaps_lora_base(st, p, bytes) ? MGPO_ERR_OVERLAP : MGPO_OK;
}

mgpo_status mgpo_add_item(mgpo_state *st, mgpo_item_kind kind, bool perturb, size_t *index)
{
    mgpo_status s = mgpo_grow(st, (void **)&st->items, &st->item_capacity,
                              st->item_count + 1, sizeof *st->items);
    if (s != MGPO_OK) return s;
    if (st->config.scope == MGPO_SCOPE_TENSOR) {
        s = mgpo_grow(st, (void **)&st->units, &st->unit_capacity, st->unit_count + 1,
                      sizeof *st->units);
        /* The all-reduce buffer holds one value per unit plus the total
         * gradient norm used by clipping, then a copy of the local values
         * to check the hook's result against. */
        if (s == MGPO_OK)
            s = mgpo_grow(st, (void **)&st->reduce_buf, &st->reduce_capacity,
                          2 * (st->unit_count + 2), sizeof(double));
        if (s != MGPO_OK) return s;
        memset(&st->units[st->unit_count], 0, sizeof st->units[0]);
        st->unit_count++;
    }
    mgpo_item *it = &st->items[st->item_count];
    memset(it, 0, sizeof *it);
    it->kind = kind;
    it->perturb = perturb;
    it->first_slot = st->slot_count;
    it->unit = st->config.scope == MGPO_SCOPE_TENSOR ? st->item_count : 0;
    *index = st->item_count++;
    return MGPO_OK;
}

/* Streaming stores pay off only when the whole state misses the caches. */
static void update_stream_flags(mgpo_state *st)
{
    size_t total = 0;
    for (size_t i = 0; i < st->slot_count; i++) total += st->slots[i].count;
    for (size_t i = 0; i < st->slot_count; i++)
        st->slots[i].stream = total >= MGPO_STREAM_MIN_FLOATS;
}

/* Offsets of a slot's parts in its one allocation.  Each part starts at the
 * next multiple of MGPO_ALIGNMENT (the first at 0, which mgpo_alloc
 * aligns); the allocation reserves MGPO_ALIGNMENT - 1 bytes per later part
 * for that, so its overhead does not depend on the sizes (as one
 * allocation per part had a fixed overhead each), and is smaller. */
typedef struct slot_layout {
    size_t used, total;
    size_t gap; /* MGPO_STAGGER_BYTES for large slots, else 0 */
    bool overflow;
} slot_layout;

/* Appends a part of `bytes` (0: none) and returns its offset.  A later
 * part starts z->gap bytes beyond the aligned end of the one before. */
static size_t layout_part(slot_layout *z, size_t bytes)
{
    size_t gap = z->total == 0 ? 0 : z->gap;
    size_t at = (z->used + MGPO_ALIGNMENT - 1) / MGPO_ALIGNMENT * MGPO_ALIGNMENT + gap;
    if (bytes == 0) return at;
    size_t reserve = z->total == 0 ? 0 : MGPO_ALIGNMENT - 1 + gap;
    if (bytes > SIZE_MAX - reserve || bytes + reserve > SIZE_MAX - z->total) {
        z->overflow = true;
        return at;
    }
    z->total += bytes + reserve;
    z->used = at + bytes; /* <= total: at <= the previous used + reserve */
    return at;
}

mgpo_status mgpo_add_slot(mgpo_state *st, void *params, mgpo_dtype param_type,
                          const void *grads, mgpo_dtype grad_type, size_t count,
                          const mgpo_tensor_options *o, size_t item, bool perturb)
{
    size_t blocks = (count + MGPO_BLOCK_FLOATS - 1) / MGPO_BLOCK_FLOATS;
    mgpo_status s = mgpo_grow(st, (void **)&st->slots, &st->slot_capacity,
                              st->slot_count + 1, sizeof *st->slots);
    if (s != MGPO_OK) return s;

    size_t bytes = count * sizeof(float);
    /* In external mode the moments are the caller's optimizer's. */
    bool own = !mgpo_external(st);
    bool adamw = own && st->config.optimizer == MGPO_OPTIMIZER_ADAMW;
    /* A bf16/fp16 buffer is restored from its float32 master: no backup.
     * In external mode the caller's optimizer keeps the master, so the
     * buffer gets a backup in its own type instead (exact restore). */
    bool typed = param_type != MGPO_DTYPE_FLOAT32;
    bool master = typed && own;
    bool exact = perturb && st->config.restore_mode == MGPO_RESTORE_EXACT;
    bool backup = exact && !typed, out_backup = exact && typed && !own;
    /* SGD's coupled decay: the step bounds its update by max |theta|.  (No
     * product here: it would compute in the caller's environment.) */
    bool sgd_decay = own && !adamw && st->config.weight_decay != 0.0 &&
                     o->weight_decay_scale != 0.0;

    /* Every state-owned array of the slot comes from one allocation, each
     * part at a multiple of MGPO_ALIGNMENT (so aligned as its own
     * allocation was), freed at once by free_slot. */
    slot_layout z = {0};
    z.gap = bytes >= MGPO_STAGGER_MIN_BYTES ? MGPO_STAGGER_BYTES : 0;
    size_t at_m = layout_part(&z, own ? bytes : 0), at_v = layout_part(&z, adamw ? bytes : 0);
    size_t at_b = layout_part(&z, backup ? bytes : 0), at_w = layout_part(&z, master ? bytes : 0);
    size_t at_ob = layout_part(&z, out_backup ? count * mgpo_dtype_size(param_type) : 0);
    size_t at_bm = layout_part(&z, sgd_decay ? blocks * sizeof(double) : 0);
    unsigned char *storage = NULL;
    if (z.total > 0) {
        storage = z.overflow ? NULL : mgpo_alloc(st, z.total);
        if (!storage) return MGPO_ERR_OUT_OF_MEMORY;
    }
    float *m = own ? (float *)(void *)(storage + at_m) : NULL;
    float *v = adamw ? (float *)(void *)(storage + at_v) : NULL;
    float *b = backup ? (float *)(void *)(storage + at_b) : NULL;
    float *w = master ? (float *)(void *)(storage + at_w) : NULL;
    void *ob = out_backup ? storage + at_ob : NULL;
    double *bm = sgd_decay ? (double *)(void *)(storage + at_bm) : NULL;
    if (m) memset(m, 0, bytes);
    if (v) memset(v, 0, bytes);
    /* Exact: every bf16/fp16 value is a float32.  A NaN or Inf could never
     * leave the master (nor a checkpoint of it load): refused. */
    if (w) {
        /* In the library's environment: a caller's flush-to-zero would
         * flush a float16 subnormal's widening. */
        fenv_t caller;
        mgpo_fp_enter(&caller);
        mgpo_kernel_load(w, params, param_type, count, 1.0f);
        mgpo_fp_leave(&caller);
        bool finite = true;
        for (size_t i = 0; i < count; i++) finite &= isfinite(w[i]) != 0;
        if (!finite) {
            mgpo_free(st, storage, z.total);
            return MGPO_ERR_INVALID_ARGUMENT;
        }
    }

    mgpo_slot *sl = &st->slots[st->slot_count];
    memset(sl, 0, sizeof *sl);
    sl->kind = !typed ? MGPO_SLOT_FLOAT32 : master ? MGPO_SLOT_MASTER : MGPO_SLOT_TYPED_OUT;
    sl->params = typed ? w : params; /* NULL: external mode, no master */
    sl->out = typed ? params : NULL;
    sl->storage = storage;
    sl->storage_bytes = z.total;
    sl->out_backup = ob;
    sl->block_max = bm;
    sl->out_type = param_type;
    sl->grads = grads;
    sl->grad_type = grad_type;
    sl->count = count;
    sl->m = m;
    sl->dir = m;
    sl->v = v;
    sl->backup = b;
    sl->item = item;
    sl->first_block = st->block_count;
    sl->block_count = blocks;
    sl->lr_scale = o->lr_scale;
    sl->weight_decay_scale = o->weight_decay_scale;
    sl->perturb = perturb;
    st->block_count += blocks;
    st->slot_count++;
    update_stream_flags(st);
    st->items[item].slot_count++;
    return MGPO_OK;
}

/* The state-owned arrays of a slot: one allocation (mgpo_add_slot). */
static void free_slot(mgpo_state *st, mgpo_slot *sl)
{
    mgpo_free(st, sl->storage, sl->storage_bytes);
    sl->storage = NULL;
}

void mgpo_drop_last_item(mgpo_state *st, size_t slot_count_before)
{
    while (st->slot_count > slot_count_before) {
        mgpo_slot *sl = &st->slots[--st->slot_count];
        st->block_count -= sl->block_count;
        free_slot(st, sl);
    }
    update_stream_flags(st);
    mgpo_item *it = &st->items[--st->item_count];
    mgpo_lora_free(st, it);
    if (st->config.scope == MGPO_SCOPE_TENSOR) st->unit_count--;
}

mgpo_status mgpo_check_registration(const mgpo_state *st)
{
    return (st->step > 0 || st->perturbed) ? MGPO_ERR_WRONG_PHASE : MGPO_OK;
}

mgpo_status mgpo_add_tensor_typed(mgpo_state *st, void *params, mgpo_dtype param_type,
                                  const void *grads, mgpo_dtype grad_type, size_t count,
                                  const mgpo_tensor_options *options, size_t *index)
{
    if (!st || !params) return MGPO_ERR_NULL_ARGUMENT;
    if (count == 0 || count > SIZE_MAX / 4 / sizeof(float)) return MGPO_ERR_INVALID_ARGUMENT;
    if (!mgpo_dtype_valid(param_type) || !mgpo_dtype_valid(grad_type)) return MGPO_ERR_BAD_ENUM;
    if (!mgpo_typed_aligned(params, param_type) || !mgpo_typed_aligned(grads, grad_type))
        return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_tensor_options o = options ? *options : mgpo_tensor_options_default();
    mgpo_status s = mgpo_check_options(&st->config, &o);
    if (s == MGPO_OK) s = mgpo_check_registration(st);
    if (s != MGPO_OK) return s;
    /* The random direction's paths assume float32 parameters. */
    if (param_type != MGPO_DTYPE_FLOAT32 && st->config.direction == MGPO_DIRECTION_RANDOM)
        return MGPO_ERR_UNSUPPORTED;
    size_t pbytes = count * mgpo_dtype_size(param_type), gbytes = count * mgpo_dtype_size(grad_type);
    if (grads && mgpo_ranges_overlap(params, pbytes, grads, gbytes)) return MGPO_ERR_OVERLAP;
    s = mgpo_check_writable(st, params, pbytes);
    if (s == MGPO_OK && grads) s = mgpo_check_grads_buffer(st, grads, gbytes);
    if (s != MGPO_OK) return s;

    size_t slots_before = st->slot_count, item;
    s = mgpo_add_item(st, MGPO_ITEM_TENSOR, o.perturb != 0, &item);
    if (s != MGPO_OK) return s;
    s = mgpo_add_slot(st, params, param_type, grads, grad_type, count, &o, item, o.perturb != 0);
    if (s != MGPO_OK) {
        mgpo_drop_last_item(st, slots_before);
        return s;
    }
    if (index) *index = item;
    return MGPO_OK;
}

mgpo_status mgpo_add_tensor(mgpo_state *st, float *params, const float *grads, size_t count,
                            const mgpo_tensor_options *options, size_t *index)
{
    return mgpo_add_tensor_typed(st, params, MGPO_DTYPE_FLOAT32, grads, MGPO_DTYPE_FLOAT32,
                                 count, options, index);
}

mgpo_status mgpo_set_grad_typed(mgpo_state *st, size_t index, const void *grads,
                                mgpo_dtype grad_type)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (index >= st->item_count || st->items[index].kind != MGPO_ITEM_TENSOR)
        return MGPO_ERR_INVALID_ARGUMENT;
    if (!mgpo_dtype_valid(grad_type)) return MGPO_ERR_BAD_ENUM;
    if (!mgpo_typed_aligned(grads, grad_type)) return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_slot *sl = &st->slots[st->items[index].first_slot];
    if (grads) {
        mgpo_status s = mgpo_check_grads_buffer(st, grads, sl->count * mgpo_dtype_size(grad_type));
        if (s != MGPO_OK) return s;
    }
    sl->grads = grads;
    sl->grad_type = grad_type;
    return MGPO_OK;
}

/* The untyped setter never changes the gradient type: on a tensor with
 * bf16/fp16 gradients a buffer is refused (it would be read as floats,
 * twice its bytes), NULL unsets and keeps the type. */
mgpo_status mgpo_set_grad(mgpo_state *st, size_t index, const float *grads)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (index >= st->item_count || st->items[index].kind != MGPO_ITEM_TENSOR)
        return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_dtype type = st->slots[st->items[index].first_slot].grad_type;
    if (grads && type != MGPO_DTYPE_FLOAT32) return MGPO_ERR_INVALID_ARGUMENT;
    return mgpo_set_grad_typed(st, index, grads, type);
}

mgpo_status mgpo_get_moments(const mgpo_state *st, size_t index, mgpo_moment which, float *dst,
                             size_t count)
{
    if (!st || !dst) return MGPO_ERR_NULL_ARGUMENT;
    if (which != MGPO_MOMENT_FIRST && which != MGPO_MOMENT_SECOND) return MGPO_ERR_BAD_ENUM;
    if (index >= st->item_count || mgpo_external(st)) return MGPO_ERR_INVALID_ARGUMENT;
    if (which == MGPO_MOMENT_SECOND && st->config.optimizer != MGPO_OPTIMIZER_ADAMW)
        return MGPO_ERR_INVALID_ARGUMENT;
    const mgpo_item *it = &st->items[index];
    size_t total = 0;
    for (size_t k = 0; k < it->slot_count; k++) total += st->slots[it->first_slot + k].count;
    if (count != total) return MGPO_ERR_INVALID_ARGUMENT;
    for (size_t k = 0; k < it->slot_count; k++) {
        const mgpo_slot *sl = &st->slots[it->first_slot + k];
        memcpy(dst, which == MGPO_MOMENT_FIRST ? sl->m : sl->v, sl->count * sizeof *dst);
        dst += sl->count;
    }
    return MGPO_OK;
}

/* ---- Setters and getters ------------------------------------------------- */

/* In the library's floating-point environment (the products of the rate
 * bounds would raise FE_INEXACT in the caller's: mgpo_set_lr). */
mgpo_status mgpo_check_slot_rates(const mgpo_state *st, const mgpo_config *c)
{
    fenv_t caller;
    mgpo_fp_enter(&caller);
    volatile mgpo_status s = MGPO_OK;
    for (size_t i = 0; i < st->slot_count && s == MGPO_OK; i++)
        s = mgpo_check_rates(c, st->slots[i].lr_scale, st->slots[i].weight_decay_scale);
    mgpo_fp_leave(&caller);
    return s;
}

mgpo_status mgpo_set_lr(mgpo_state *st, double lr)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_config c = st->config;
    c.lr = lr;
    mgpo_status s = mgpo_config_validate(&c);
    /* Too large for some registered buffer's scales. */
    if (s == MGPO_OK && mgpo_check_slot_rates(st, &c) != MGPO_OK) s = MGPO_ERR_BAD_LR;
    if (s != MGPO_OK) return s;
    st->lr = lr;
    st->config.lr = lr;
    return MGPO_OK;
}

mgpo_status mgpo_set_rho(mgpo_state *st, double rho)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_config c = st->config;
    c.rho = rho;
    mgpo_status s = mgpo_config_validate(&c);
    if (s != MGPO_OK) return s;
    st->config.rho = rho;
    return MGPO_OK;
}

mgpo_status mgpo_set_allreduce(mgpo_state *st, mgpo_allreduce_fn fn, void *ctx)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    st->allreduce = fn;
    st->allreduce_ctx = fn ? ctx : NULL;
    return MGPO_OK;
}

mgpo_status mgpo_get_config(const mgpo_state *st, mgpo_config *out)
{
    if (!st || !out) return MGPO_ERR_NULL_ARGUMENT;
    *out = st->config;
    return MGPO_OK;
}

mgpo_status mgpo_get_tensor_count(const mgpo_state *st, size_t *count)
{
    if (!st || !count) return MGPO_ERR_NULL_ARGUMENT;
    *count = st->item_count;
    return MGPO_OK;
}

mgpo_status mgpo_is_perturbed(const mgpo_state *st, int *perturbed)
{
    if (!st || !perturbed) return MGPO_ERR_NULL_ARGUMENT;
    *perturbed = st->perturbed ? 1 : 0;
    return MGPO_OK;
}

mgpo_status mgpo_get_stats(const mgpo_state *st, mgpo_stats *out)
{
    if (!st || !out) return MGPO_ERR_NULL_ARGUMENT;
    *out = st->stats;
    out->step = st->step;
    out->skipped_steps = st->skipped_steps;
    out->perturbed = st->perturbed ? 1 : 0;
    memset(out->reserved, 0, sizeof out->reserved);
    return MGPO_OK;
}

mgpo_status mgpo_get_unit_count(const mgpo_state *st, size_t *count)
{
    if (!st || !count) return MGPO_ERR_NULL_ARGUMENT;
    *count = st->unit_count;
    return MGPO_OK;
}

mgpo_status mgpo_get_unit_stats(const mgpo_state *st, size_t unit, mgpo_unit_stats *out)
{
    if (!st || !out) return MGPO_ERR_NULL_ARGUMENT;
    if (unit >= st->unit_count) return MGPO_ERR_INVALID_ARGUMENT;
    const mgpo_unit *u = &st->units[unit];
    out->grad_norm = u->gamma;
    out->grad_norm_ema = u->gbar;
    out->momentum_norm = u->momentum_norm;
    out->scale = u->scale;
    out->coefficient = u->coefficient;
    memset(out->reserved, 0, sizeof out->reserved);
    return MGPO_OK;
}

const float *mgpo_internal_moment(const mgpo_state *st, size_t index, int which)
{
    if (!st || index >= st->item_count) return NULL;
    const mgpo_slot *sl = &st->slots[st->items[index].first_slot];
    return which == 0 ? sl->m : sl->v;
}
