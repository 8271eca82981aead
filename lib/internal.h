/* Private state layout shared by the library sources.  Not installed. */
#ifndef MGPO_INTERNAL_H
#define MGPO_INTERNAL_H

#include "mgpo.h"

#include <fenv.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Work is done in blocks of this many floats of one slot.  A norm is a sum
 * over blocks of per-block partials in double (fixed bits, MGPO_LANES lanes); the
 * partials are added exactly (mgpo_exact_sum) and rounded once, so the norm
 * does not depend on how blocks are spread over threads. */
#define MGPO_BLOCK_FLOATS 4096u
/* Thread counts above this are clamped (each thread may leave two exact
 * partial sums in the state: mgpo_state.partials). */
#define MGPO_MAX_THREADS 1024
/* Alignment of the library's own large buffers (one cache line, AVX-512). */
#define MGPO_ALIGNMENT 64u
/* From this many registered floats on (64 MiB, beyond any L3 cache) a
 * buffer written without being read in the same pass is stored with
 * streaming stores, saving the read of each destination line; below it the
 * data may still be cached when the caller's forward pass reads it.
 * Overridable at build time (-DMGPO_STREAM_MIN_FLOATS=...) for experiments. */
#ifndef MGPO_STREAM_MIN_FLOATS
#define MGPO_STREAM_MIN_FLOATS (16u << 20)
#endif

/* A slot's state-owned arrays share one allocation.  When they are this
 * large (beyond L2), each starts MGPO_STAGGER_BYTES (a page and a cache
 * line) after the end of the one before: arrays exactly a power of two
 * apart made the AdamW step at 64 Mi floats about 40 % slower on Zen 4
 * (docs/performance.md, "Memory owned by the library").  Smaller slots
 * are packed (the padding would be a large share of them). */
#define MGPO_STAGGER_MIN_BYTES (4u << 20)
#define MGPO_STAGGER_BYTES (4096u + MGPO_ALIGNMENT)

/* What a slot's caller buffer is and who keeps its float32 values: set once
 * at registration (mgpo_add_slot) and never re-derived from which pointers
 * are NULL.  The pointer fields below stay as they were (checkpoint.c reads
 * them); this says which of them exist. */
typedef enum mgpo_slot_kind {
    /* The caller's float32 parameters, in `params`: the kernels step and
     * perturb them in place (integrated or external mode). */
    MGPO_SLOT_FLOAT32 = 0,
    /* The caller's bf16/fp16 buffer `out`; the state's float32 master in
     * `params` (integrated mode): the master is stepped, never perturbed,
     * and `out` receives its rounding. */
    MGPO_SLOT_MASTER = 1,
    /* The caller's bf16/fp16 buffer `out` with no master (external mode,
     * params NULL): perturbed and restored in place, through float32. */
    MGPO_SLOT_TYPED_OUT = 2
} mgpo_slot_kind;

/* One float buffer that the base optimizer steps: a plain tensor, or the A or
 * the B matrix of a LoRA pair. */
typedef struct mgpo_slot {
    mgpo_slot_kind kind;
    float *params;          /* caller's; for a bf16/fp16 buffer the state's
                               float32 master weights (`out` is the caller's) */
    const void *grads;      /* caller's, may be NULL until set */
    mgpo_dtype grad_type;   /* of grads */
    void *out;              /* caller's bf16/fp16 parameter buffer, or NULL: it
                               receives round(master) and perturbations; the
                               master itself is never perturbed.  In external
                               mode there is no master (params is NULL): the
                               perturbation goes into `out` directly */
    mgpo_dtype out_type;    /* of out (FLOAT32 when out is NULL) */
    void *out_backup;       /* external mode, exact restore: while perturbed, a
                               copy of `out` in its own type */
    size_t count;
    float *m;               /* AdamW exp_avg or SGD momentum buffer; NULL in
                               external mode */
    const float *dir;       /* the momentum perturb follows: m, or in external
                               mode the caller's buffer (NULL until attached) */
    const void *dir_typed;  /* external mode: the caller's bf16/fp16 momentum
                               instead (dir is then NULL) */
    mgpo_dtype dir_type;    /* of dir_typed */
    float *v;               /* AdamW exp_avg_sq; NULL for SGD */
    float *backup;          /* exact mode: while perturbed, each block's range
                               holds its exception list or a plain copy (see
                               MGPO_FULL_BACKUP); NULL in low-memory mode */
    bool copy_backup;       /* always a plain copy (LoRA A and B) */
    bool full_copy;         /* while perturbed: every block's range holds a plain
                               copy (some block's list overflowed) */
    size_t item;            /* owning item */
    size_t first_block, block_count; /* in the state's numbering of all blocks */
    double block_total;     /* the last parallel pass's per-slot sum */
    double lr_scale, weight_decay_scale;
    bool perturb;           /* perturbation moves this buffer (adapter mode) */
    float applied;          /* coefficient c added to params now (0 = untouched) */
    double momentum_sq;     /* ||m||^2 after the last step (cached for perturb) */
    bool stream;            /* state too big for the caches: write-once outputs
                               (backup, restored params) bypass them */
    double *block_max;      /* SGD with weight decay: max |theta| of each block
                               at the last step's pass 1 (block_count values) */
    /* Per-step constants, filled serially before the parallel update. */
    float k_decay, k_step, k_lr;
    /* The one allocation m, v, backup, the master, out_backup and block_max
     * point into (state.c), and its size; NULL when the slot owns none. */
    void *storage;
    size_t storage_bytes;
} mgpo_slot;

typedef enum mgpo_item_kind { MGPO_ITEM_TENSOR = 0, MGPO_ITEM_LORA = 1 } mgpo_item_kind;

/* Private part of a LoRA pair (lib/lora.c). */
typedef struct mgpo_lora_item {
    mgpo_lora_pair_typed desc; /* caller's description, pointers are the caller's */
    void *base_backup;      /* copy of W (of W's type) while perturbed (base mode) */
    double *work;           /* (2r)^2 Gram scratch, sized at registration */
    size_t work_count;
    float base_applied;     /* c applied to W now (base mode), 0 = untouched */
} mgpo_lora_item;

/* A registration: a tensor (one slot) or a LoRA pair (slots A then B). */
typedef struct mgpo_item {
    mgpo_item_kind kind;
    size_t first_slot, slot_count;
    bool perturb;
    size_t unit;
    mgpo_lora_item *lora;   /* NULL for tensors */
} mgpo_item;

/* A scope unit: the items sharing one momentum norm and one gradient EMA. */
typedef struct mgpo_unit {
    bool gbar_set;
    double gbar;            /* EMA of gamma */
    double gamma;           /* gradient norm at the last step */
    double momentum_norm;   /* n_U at the last perturb */
    double scale;           /* s_U at the last perturb */
    double coefficient;     /* c_U applied at the last perturb */
} mgpo_unit;

/* The floats of the block of `slot` that starts at `begin` (a multiple of
 * MGPO_BLOCK_FLOATS): the last block of a slot may be short. */
static inline size_t mgpo_block_length(const mgpo_slot *slot, size_t begin)
{
    size_t left = slot->count - begin;
    return left < MGPO_BLOCK_FLOATS ? left : MGPO_BLOCK_FLOATS;
}

/* An exact sum of non-negative doubles (reduce.c): a fixed-point integer
 * whose least significant bit is worth 2^-1074, wide enough for 2^64 sums
 * of the largest double. */
#define MGPO_EXACT_WORDS 34
typedef struct mgpo_exact_sum {
    uint64_t word[MGPO_EXACT_WORDS];
    bool nan, inf;
} mgpo_exact_sum;

/* A thread's exact sum over the blocks it ran of a slot it shared with
 * another thread (parallel.c). */
typedef struct mgpo_partial {
    size_t slot;
    bool used;
    mgpo_exact_sum sum;
} mgpo_partial;

struct mgpo_state {
    mgpo_config config;
    double grad_scale;      /* loss scale S (mgpo_set_grad_scale), 1 by default */
    float grad_unscale;     /* (float)(1 / S): multiplies every gradient read */
    mgpo_allocator allocator;
    mgpo_allreduce_fn allreduce;
    void *allreduce_ctx;

    mgpo_item *items;    size_t item_count, item_capacity;
    mgpo_slot *slots;    size_t slot_count, slot_capacity;
    size_t block_count;  /* blocks of all slots */
    mgpo_unit *units;    size_t unit_count, unit_capacity;
    mgpo_partial *partials; /* 2 per thread, sized at creation */
    int max_threads;
    double *reduce_buf;  /* unit_count + 1 values for the all-reduce hook, then
                            a copy of them (2 * (unit_count + 1) in all) */
    size_t reduce_capacity;

    uint64_t step;
    uint64_t skipped_steps;
    double lr;
    bool perturbed;
    const struct mgpo_kernels *kernels; /* chosen at creation; tests may swap it */
    mgpo_stats stats;
};

/* The caller's optimizer steps; the state keeps no moments (mgpo_set_momentum). */
static inline bool mgpo_external(const mgpo_state *st)
{
    return st->config.optimizer_mode == MGPO_OPTIMIZER_EXTERNAL;
}

/* The slot keeps float32 master weights (in params) for a bf16/fp16 buffer. */
static inline bool mgpo_slot_has_master(const mgpo_slot *sl) { return sl->kind == MGPO_SLOT_MASTER; }

/* The caller's parameter buffer is bf16/fp16 (`out`), with or without a
 * master. */
static inline bool mgpo_slot_typed_out(const mgpo_slot *sl) { return sl->kind != MGPO_SLOT_FLOAT32; }

/* Bytes of the caller's parameter buffer of a slot, and its address. */
static inline void *mgpo_slot_caller_params(const mgpo_slot *sl)
{
    return mgpo_slot_typed_out(sl) ? sl->out : (void *)sl->params;
}
static inline size_t mgpo_slot_caller_bytes(const mgpo_slot *sl)
{
    return sl->count * mgpo_dtype_size(mgpo_slot_typed_out(sl) ? sl->out_type : MGPO_DTYPE_FLOAT32);
}

/* Bytes of a slot's gradient buffer. */
static inline size_t mgpo_slot_grad_bytes(const mgpo_slot *sl)
{
    return sl->count * mgpo_dtype_size(sl->grad_type);
}

/* Every slot of the item has a momentum to follow (always in integrated mode). */
static inline bool mgpo_item_attached(const mgpo_state *st, const mgpo_item *it)
{
    for (size_t k = 0; k < it->slot_count; k++)
        if (!st->slots[it->first_slot + k].dir && !st->slots[it->first_slot + k].dir_typed)
            return false;
    return true;
}

/* state.c: allocation through the caller's allocator, aligned. */
void *mgpo_alloc(const mgpo_state *st, size_t size);
void mgpo_free(const mgpo_state *st, void *ptr, size_t size);
mgpo_status mgpo_grow(const mgpo_state *st, void **array, size_t *capacity,
                      size_t needed, size_t elem_size);
/* config.c: the options' own checks, then mgpo_check_rates under config c. */
mgpo_status mgpo_check_options(const mgpo_config *c, const mgpo_tensor_options *o);
/* The numeric bounds on the rates a buffer with these scales derives from c
 * (lr * lr_scale, weight_decay * weight_decay_scale and their products, see
 * docs/api.md): MGPO_OK, MGPO_ERR_BAD_LR or MGPO_ERR_BAD_WEIGHT_DECAY. */
mgpo_status mgpo_check_rates(const mgpo_config *c, double lr_scale, double wd_scale);
/* state.c: mgpo_check_rates for every registered buffer under c. */
mgpo_status mgpo_check_slot_rates(const mgpo_state *st, const mgpo_config *c);
/* The byte range [p, p + bytes) against everything registered. */
mgpo_status mgpo_check_writable(const mgpo_state *st, const void *p, size_t bytes);
mgpo_status mgpo_check_readable(const mgpo_state *st, const void *p, size_t bytes);
bool mgpo_ranges_overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes);
/* mgpo_check_readable for a gradient buffer, which also must not overlap an
 * external momentum, and for an external momentum, which must not overlap a
 * gradient buffer (MGPO_ERR_OVERLAP). */
mgpo_status mgpo_check_grads_buffer(const mgpo_state *st, const void *p, size_t bytes);
mgpo_status mgpo_check_momentum_buffer(const mgpo_state *st, const void *p, size_t bytes);
/* Appends one slot (with its blocks and moments) for item `item`. */
/* With param_type bf16/fp16 the slot gets master weights converted from
 * `params` and writes `params` as its `out` buffer. */
mgpo_status mgpo_add_slot(mgpo_state *st, void *params, mgpo_dtype param_type,
                          const void *grads, mgpo_dtype grad_type, size_t count,
                          const mgpo_tensor_options *o, size_t item, bool perturb);
/* A caller's buffer is read and written as elements of its type (float,
 * or uint16_t for bf16/fp16): its address must be a multiple of the
 * element size, else the kernels' accesses are undefined (NULL passes). */
static inline bool mgpo_typed_aligned(const void *p, mgpo_dtype t)
{
    return ((uintptr_t)p & (mgpo_dtype_size(t) - 1u)) == 0;
}
/* Unknown element type: MGPO_ERR_BAD_ENUM. */
static inline bool mgpo_dtype_valid(mgpo_dtype t)
{
    return t == MGPO_DTYPE_FLOAT32 || t == MGPO_DTYPE_BFLOAT16 || t == MGPO_DTYPE_FLOAT16;
}
/* Registration (and mgpo_set_master_weights) is allowed until the first
 * step and while not perturbed: else MGPO_ERR_WRONG_PHASE. */
mgpo_status mgpo_check_registration(const mgpo_state *st);
/* Appends an item (and its unit under tensor scope); returns its index. */
mgpo_status mgpo_add_item(mgpo_state *st, mgpo_item_kind kind, bool perturb,
                          size_t *index);
/* Undoes the last mgpo_add_item/mgpo_add_slot calls after a failure. */
void mgpo_drop_last_item(mgpo_state *st, size_t slot_count_before);

/* The largest update an SGD step may make from the pass-1 bounds (docs/api.md,
 * "Numeric bounds"): its momentum buffer and lr times its direction stay
 * below this, so no float reaches Inf. */
#define MGPO_SGD_STEP_MAX MGPO_PERTURBATION_MAX

/* The fixed combination of eight lane sums used by every norm, so that a norm
 * fused into a kernel has the same bits as mgpo_sum_squares. */
static inline double mgpo_combine_lanes(const double lane[8])
{
    return ((lane[0] + lane[4]) + (lane[2] + lane[6])) +
           ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

/* The lanes of a block's sum of squares (lane = index mod 16): sixteen
 * independent additions keep the loop from waiting on the latency of one.
 * Combined in a fixed tree, so a norm fused into a kernel has the same bits
 * as mgpo_sum_squares. */
#define MGPO_LANES 16
static inline double mgpo_combine_lanes16(const double lane[MGPO_LANES])
{
    return mgpo_combine_lanes(lane) + mgpo_combine_lanes(lane + 8);
}

/* reduce.c: deterministic sums of squares, and exact sums. */
double mgpo_sum_squares(const float *x, size_t n);
void mgpo_exact_clear(mgpo_exact_sum *s);
void mgpo_exact_add(mgpo_exact_sum *s, double x);   /* x >= 0, +Inf or NaN */
void mgpo_exact_merge(mgpo_exact_sum *s, const mgpo_exact_sum *other);
double mgpo_exact_round(const mgpo_exact_sum *s);  /* to nearest, ties to even */

/* The scalars one optimizer step shares across every block, computed once by
 * mgpo_step (per-slot lr and decay live in the slot's k_* fields). */
typedef struct mgpo_step_constants {
    float grad_scale;      /* clipping factor, 1 when not clipping (the loss
                              scale is taken out before: mgpo_slot_grads) */
    float beta1, one_minus_beta1, beta2, one_minus_beta2, eps; /* AdamW */
    float inv_bias2_sqrt;  /* 1 / sqrt(1 - beta2^t): a product replaces torch's division */
    float momentum, one_minus_dampening; /* SGD */
    bool first, nesterov;  /* SGD: first step (the buffer starts at d), Nesterov */
    uint64_t step;         /* t, the step being taken (stochastic rounding's key) */
} mgpo_step_constants;

/* Exact restore by exception list.  Perturbing computes t = p + c*m, and
 * undoing it by subtraction, r = t - c*m, gives back p's exact bits for
 * nearly every element (always when |c*m| is below half an ulp of p, and
 * mostly above).  So while a block of n floats is perturbed, its backup range
 * holds only the elements for which r != p (compared as bits): a uint32
 * count, then their indices within the block, ascending, as uint16, then
 * from float offset mgpo_exception_value_offset(n) their clean values.  The
 * restore computes r for every element and takes the listed clean values
 * instead: the same bits as p, because t, c and m are unchanged in between
 * and every operation is rounded the same way.  A block whose list would
 * exceed mgpo_exception_capacity(n) keeps a plain copy instead
 * (MGPO_FULL_BACKUP).  Either way the bits are exact; the list moves a few
 * bytes where a copy moves 4 per float each way, and lets the step read the
 * perturbed values in place (docs/performance.md). */
#define MGPO_FULL_BACKUP UINT32_MAX

/* 4 + 2C + 2 (padding) + 4C bytes fit in the range's 4n. */
static inline size_t mgpo_exception_capacity(size_t n) { return n >= 2 ? (4 * n - 6) / 6 : 0; }
static inline size_t mgpo_exception_value_offset(size_t n)
{
    return 1 + (mgpo_exception_capacity(n) + 1) / 2;
}

static inline uint32_t mgpo_float_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float mgpo_bits_float(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Every NaN the state keeps (a skipped unit's momentum norm, a slot's
 * momentum_sq in external mode) is this one, the positive quiet NaN with
 * no payload: a NaN computed by the kernels has a sign and payload that
 * depend on the instruction set and the compiler's vectorisation, and the
 * statistics and checkpoint bytes must be the same with every table. */
#define MGPO_CANONICAL_NAN_BITS UINT64_C(0x7ff8000000000000)
static inline double mgpo_canonical_nan(double x)
{
    if (!isnan(x)) return x;
    uint64_t bits = MGPO_CANONICAL_NAN_BITS;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Walks a block's exception list in index order. */
typedef struct mgpo_exception_reader {
    const uint16_t *index;
    const float *value;
    size_t count, next;
} mgpo_exception_reader;

/* The list at the start of a block's backup range (n floats). */
static inline mgpo_exception_reader mgpo_exceptions_of(const float *backup, size_t n)
{
    uint32_t count;
    memcpy(&count, backup, sizeof count);
    mgpo_exception_reader r = {(const uint16_t *)(const void *)(backup + 1),
                               backup + mgpo_exception_value_offset(n), count, 0};
    return r;
}

/* The index of the next listed element, SIZE_MAX after the last: loops keep
 * it in a register and look at the list only when a chunk reaches it. */
static inline size_t mgpo_next_listed(const mgpo_exception_reader *r)
{
    return r->next < r->count ? r->index[r->next] : SIZE_MAX;
}

/* Replaces, in value[0..count), the elements from `base` that are listed. */
static inline void mgpo_apply_exceptions(mgpo_exception_reader *r, float *value, size_t base,
                                         size_t count)
{
    for (size_t at; (at = mgpo_next_listed(r)) < base + count; r->next++)
        value[at - base] = r->value[r->next];
}

/* The clean value of an element that holds p + c*m after a perturbation
 * along m with coefficient c: (p + c*m) - c*m, the product rounded, then
 * the difference (unfused: the library builds with -ffp-contract=off).
 * Written once: every restore, the step's fused undo, a checkpoint's clean
 * parameters (through mgpo_restore_range) and lora.c's views of a
 * low-memory perturbed A or B give these bits; the SIMD tables spell the
 * same two operations (a multiply, then a subtract).  The exact restore
 * lists the elements where this is not p (MGPO_FULL_BACKUP). */
static inline float mgpo_unperturbed(float perturbed, float coefficient, float m)
{
    return perturbed - coefficient * m;
}

/* kernels.c: the fused elementwise passes over one block, portable C. */
void mgpo_kernel_perturb(float *params, float *backup, const float *m,
                         float coefficient, size_t n);
void mgpo_kernel_unperturb(float *params, const float *m, float coefficient, size_t n);
/* The exact perturbation of a block of n floats: writes the block's
 * exception list to `backup` (see MGPO_FULL_BACKUP) and returns its length,
 * or returns MGPO_FULL_BACKUP with params unchanged when it would not fit
 * (the list's count then reads MGPO_FULL_BACKUP too). */
uint32_t mgpo_kernel_perturb_exact(float *params, float *backup, const float *m,
                                   float coefficient, size_t n);
/* The clean values of elements [base, base + count) of a block perturbed
 * by mgpo_kernel_perturb_exact, to dst[0..count) (which may be params +
 * base); `list` is the block's, read from `base` on, so successive ranges
 * may share it. */
void mgpo_restore_range(float *dst, const float *params, const float *m, float coefficient,
                        mgpo_exception_reader *list, size_t base, size_t count);
/* Writes the clean values of a block perturbed by mgpo_kernel_perturb_exact
 * to dst (which may be params). */
void mgpo_kernel_restore_exact(float *dst, const float *params, const float *backup,
                               const float *m, float coefficient, size_t n);
/* AdamW on one block; src is the clean params (backup or params); returns
 * the sum of squares of the new m over the block.  `undo` nonzero means the
 * block still holds params + undo*m (a perturbation, src == params): it is
 * subtracted from the value read, with the same rounding as
 * mgpo_kernel_unperturb, before the update; `exact` non-NULL (exact mode,
 * with undo) then replaces the listed elements by their clean values, as
 * mgpo_kernel_restore_exact does. */
double mgpo_kernel_adamw(float *params, const float *src, const float *grads,
                         float *m, float *v, const mgpo_slot *slot,
                         const mgpo_step_constants *k, size_t n, float undo,
                         mgpo_exception_reader *exact);
double mgpo_kernel_sgd(float *params, const float *src, const float *grads,
                       float *m, const mgpo_slot *slot, const mgpo_step_constants *k,
                       size_t n, float undo, mgpo_exception_reader *exact);

/* The kernel table type and its selector (kernels.h). */
#include "kernels.h"

/* convert.c: element types.  bf16/fp16 to float32 is exact; to them,
 * round to nearest even, or stochastic with 64 random bits. */
float mgpo_f16_to_f32(uint16_t h);
static inline float mgpo_bf16_to_f32(uint16_t h) { return mgpo_bits_float((uint32_t)h << 16); }
uint16_t mgpo_f32_to_bf16(float x);
uint16_t mgpo_f32_to_f16(float x);
uint16_t mgpo_f32_to_bf16_stochastic(float x, uint16_t random);
uint16_t mgpo_f32_to_f16_stochastic(float x, uint32_t random);
/* dst[i] = (float)src[i] * scale (a bf16/fp16 or float buffer). */
void mgpo_kernel_load(float *dst, const void *src, mgpo_dtype type, size_t n, float scale);
/* dst[i] = round_nearest(src[i]) into a bf16/fp16 buffer. */
void mgpo_kernel_store(void *dst, mgpo_dtype type, const float *src, size_t n);
/* dst[i] = round_nearest(p[i] + c*m[i]), the sum rounded as mgpo_kernel_perturb. */
void mgpo_kernel_perturb_store(void *dst, mgpo_dtype type, const float *p, const float *m,
                               float coefficient, size_t n);
/* dst[i] = round_stochastic(src[i]); element e = first_index + i takes its
 * bits from h = mgpo_random_bits(key, e / 4), 16 bits (e % 4) * 16 up, for
 * bfloat16, and from h = mgpo_random_bits(key, e / 2), 32 bits (e % 2) * 32
 * up, for float16: one hash per four or two elements. */
void mgpo_store_stochastic(void *dst, mgpo_dtype type, const float *src, size_t n,
                           uint64_t key, uint64_t first_index);
/* The part of a SIMD table's stochastic store that is the same in every
 * table: float32 (a copy) and an unknown type (nothing written) are done
 * here whole, and false is returned; for bfloat16 and float16 the elements
 * before the first hash boundary (a hash serves 4 or 2 elements) are stored
 * by mgpo_store_stochastic, *done is their count, and true is returned. */
bool mgpo_store_stochastic_head(void *dst, mgpo_dtype type, const float *src, size_t n,
                                uint64_t key, uint64_t first_index, size_t *done);

/* sum_squares(load(x, type, n, scale)): pass 1 over typed or scaled
 * gradients (n <= MGPO_BLOCK_FLOATS). */
double mgpo_kernel_sum_squares_typed(const void *x, mgpo_dtype type, size_t n, float scale);
/* The AdamW step of a block with a float32 master: the gradients loaded as
 * mgpo_slot_grads does (load(grads) * scale), mgpo_kernel_adamw in place on
 * the master, then the master rounded into `out` (mgpo_kernel_store or
 * mgpo_store_stochastic); returns the new m's sum of squares
 * (n <= MGPO_BLOCK_FLOATS). */
double mgpo_kernel_adamw_typed(float *master, const void *grads, mgpo_dtype grad_type,
                               float scale, float *m, float *v, void *out, mgpo_dtype out_type,
                               const mgpo_typed_rounding *rounding, const mgpo_slot *slot,
                               const mgpo_step_constants *k, size_t n);

/* mixed.c: the mixed-precision paths of perturb, restore and step. */
/* The gradients of a block as the kernels use them, g * grad_unscale in
 * float32: the caller's buffer itself when it is float32 and unscaled,
 * else converted into scratch (MGPO_BLOCK_FLOATS floats). */
const float *mgpo_slot_grads(const mgpo_state *st, const mgpo_slot *sl, size_t begin,
                             size_t count, float *scratch);
/* The kernels can read the slot's gradients in place: float32, no loss
 * scale (else they are converted as mgpo_slot_grads does). */
static inline bool mgpo_slot_grads_direct(const mgpo_state *st, const mgpo_slot *sl)
{
    return sl->grad_type == MGPO_DTYPE_FLOAT32 && st->grad_unscale == 1.0f;
}
/* The address of element `begin` of a slot's gradient buffer. */
static inline const void *mgpo_slot_grads_at(const mgpo_slot *sl, size_t begin)
{
    return (const unsigned char *)sl->grads + begin * mgpo_dtype_size(sl->grad_type);
}
/* The rounding of a block of the slot's master published after `step`
 * completed steps. */
mgpo_typed_rounding mgpo_slot_rounding(const mgpo_state *st, const mgpo_slot *sl, size_t begin,
                                       uint64_t step);
/* Writes the clean rounded master of a block into the caller's buffer:
 * round_nearest, or stochastic keyed by (seed, step, slot); `step` is the
 * count of completed steps the master holds. */
void mgpo_publish_block(const mgpo_state *st, const mgpo_slot *sl, size_t begin, size_t count,
                        uint64_t step);
/* Writes round_nearest(master + c*dir) of a block into the caller's buffer;
 * without a master (external mode), round_nearest(out + c*dir), after
 * copying `out` into out_backup (exact restore). */
void mgpo_perturb_out_block(const mgpo_state *st, const mgpo_slot *sl, const float *dir,
                            size_t begin, size_t count);
/* External mode without a master: puts a block of `out` back, from
 * out_backup (exact) or as round_nearest(out - c*dir) (low memory). */
void mgpo_restore_out_block(const mgpo_state *st, const mgpo_slot *sl, const float *dir,
                            size_t begin, size_t count);

/* convert_avx2.c: the same three with AVX2 and F16C (x86-64 only; the AVX2
 * table uses them). */
void mgpo_avx2_load(float *dst, const void *src, mgpo_dtype type, size_t n, float scale);
void mgpo_avx2_store(void *dst, mgpo_dtype type, const float *src, size_t n);
void mgpo_avx2_perturb_store(void *dst, mgpo_dtype type, const float *p, const float *m,
                             float coefficient, size_t n);
void mgpo_avx2_store_stochastic(void *dst, mgpo_dtype type, const float *src, size_t n,
                                uint64_t key, uint64_t first_index);

/* parallel.c: runs fn over every block (`count` floats from `begin` of
 * slot `sl`), on config.num_threads.  With `sums`, each slot's block_total
 * becomes the sum of fn's results over its blocks, the same bits for any
 * thread count; without, the results are ignored. */
typedef double (*mgpo_block_fn)(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                                void *arg);
void mgpo_parallel_blocks(mgpo_state *st, mgpo_block_fn fn, void *arg, bool sums);
/* The floating-point environment of every kernel: the C default (round to
 * nearest, no flush-to-zero or denormals-are-zero, exceptions masked),
 * whatever the caller or a worker thread had, so results have the same bits
 * on every thread and machine.  enter saves the calling thread's environment
 * and installs the default; leave puts the saved one back exactly (the
 * status flags raised in between are dropped, see docs/api.md).  Every public
 * call that computes wraps itself in the pair; mgpo_parallel_blocks does the
 * same on each worker. */
void mgpo_fp_enter(fenv_t *caller);
void mgpo_fp_leave(const fenv_t *caller);
/* Threads mgpo_parallel_blocks uses for this state: 1 without OpenMP. */
int mgpo_parallel_threads(const mgpo_state *st);
/* The thread count the state sizes its partials for, at creation. */
int mgpo_parallel_max_threads(const mgpo_config *config);

/* repro_math.c: the same bits on every platform (no libm). */
/* x^n by squaring, rounded multiplications only (the bias corrections). */
double mgpo_pow_u64(double x, uint64_t n);
/* cos(pi * x) for x in [0, 1] (the cosine schedule). */
double mgpo_cos_pi(double x);

/* lora.c: weight-space norms and the base-mode perturbation of a pair. */
double mgpo_lora_momentum_sq(const mgpo_state *st, const mgpo_item *item);
double mgpo_lora_grad_sq(const mgpo_state *st, const mgpo_item *item);
void mgpo_lora_base_perturb(mgpo_state *st, mgpo_item *item, float coefficient);
void mgpo_lora_base_restore(mgpo_state *st, mgpo_item *item);
void mgpo_lora_free(mgpo_state *st, mgpo_item *item);

/* random.c: a counter-based Gaussian generator (its spec is in random.c).
 * The key of (seed, step, stream), then the value of element `index`. */
uint64_t mgpo_random_key(uint64_t seed, uint64_t step, uint64_t stream);
/* mix and absorb of random.c's spec, inline so that the stochastic
 * rounding's loops keep them in registers. */
#define MGPO_GOLDEN_GAMMA UINT64_C(0x9E3779B97F4A7C15)
static inline uint64_t mgpo_random_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xBF58476D1CE4E5B9);
    x ^= x >> 27;
    x *= UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}
static inline uint64_t mgpo_random_absorb(uint64_t h, uint64_t x)
{
    return mgpo_random_mix(h ^ mgpo_random_mix(x + MGPO_GOLDEN_GAMMA));
}
static inline uint64_t mgpo_random_bits(uint64_t key, uint64_t index)
{
    return mgpo_random_absorb(key, index);
}
float mgpo_random_normal(uint64_t key, uint64_t index);
void mgpo_random_normal_fill(float *out, size_t count, uint64_t key, uint64_t first_index);

/* direction.c: the random-direction baseline (MGPO_DIRECTION_RANDOM).
 * The direction of a block of `sl` for the perturbation before the next
 * step: the slot's momentum, or the Gaussian direction generated into
 * `scratch` (MGPO_BLOCK_FLOATS floats). */
const float *mgpo_direction_block(const mgpo_state *st, const mgpo_slot *sl, size_t begin,
                                  size_t count, float *scratch);
/* A mgpo_block_fn: the sum of squares of the Gaussian direction over the
 * block (0 for a slot that is not perturbed). */
double mgpo_direction_sq_block(mgpo_state *st, mgpo_slot *sl, size_t begin, size_t count,
                               void *arg);

/* Test hook: how the exact-mode perturbation now applied is kept: blocks
 * with an exception list, blocks with a plain copy, and listed elements in
 * all (all zero when nothing is perturbed or in low-memory mode). */
typedef struct mgpo_restore_census {
    size_t list_blocks, copy_blocks, exceptions;
} mgpo_restore_census;
mgpo_restore_census mgpo_internal_restore_census(const mgpo_state *st);

/* Test hook: the moment `which` (0 = m, 1 = v) of slot 0 of item `index`. */
const float *mgpo_internal_moment(const mgpo_state *st, size_t index, int which);

#endif
