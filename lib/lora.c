/* LoRA pairs: registration, weight-space norms through the Gram identity,
 * and the base-mode perturbation W <- W + c*D.
 *
 * A pair W_eff = W + s*B*A (A: r x n_in, B: n_out x r, row-major) is one item
 * with two slots, A then B, stepped by the generic kernels.  Its norms are
 * taken in weight space:
 *
 *   ||s*(X_B*A + B*X_A)||_F^2 = s^2 * trace(P*Q),
 *   P = U^T U, U = [X_B  B] (n_out x 2r),   Q = V V^T, V = [A; X_A] (2r x n_in)
 *
 * with X = m (momentum norm) or X = g (gradient norm).  P is accumulated
 * four rows of U at a time into the (2r)^2 + 8r scratch sized at
 * registration, Q is never stored: each entry is a dot product of two rows of V, multiplied into the
 * trace as soon as it is known.  Work O((n_out + n_in) * r^2), no n_out x n_in
 * temporary, no allocation.  Everything runs serially in a fixed order in
 * double precision, so the result does not depend on threads. */
#include "internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Columns of W handled per pass of the base perturbation: the double
 * accumulators for one chunk of a row live on the stack (2 KiB). */
#define LORA_CHUNK 256u

/* A read-only view of a row-major matrix whose true (clean) value is
 * x - c*m when m is not NULL: an adapter-mode A or B that is perturbed in
 * low-memory mode, whose clean value exists only implicitly.  The expression
 * is mgpo_unperturbed, so the view has the bits a restore would give.
 * A gradient of another element type, or under a loss scale, is read as
 * the kernels read it: load(typed) * scale (mgpo_slot_grads). */
typedef struct lora_view {
    const float *x;
    const float *m;
    float c;
    const void *typed;  /* non-NULL: a gradient read through mgpo_kernel_load */
    mgpo_dtype type;
    float scale;
} lora_view;

static inline double view_at(lora_view v, size_t i)
{
    if (v.typed) {
        float g;
        mgpo_kernel_load(&g, (const unsigned char *)v.typed + i * mgpo_dtype_size(v.type), v.type,
                         1, v.scale);
        return (double)g;
    }
    return v.m ? (double)mgpo_unperturbed(v.x[i], v.c, v.m[i]) : (double)v.x[i];
}

static lora_view plain_view(const float *x)
{
    lora_view v = {x, NULL, 0.0f, NULL, MGPO_DTYPE_FLOAT32, 1.0f};
    return v;
}

/* The clean value of a slot's parameters: the backup while an exact-mode
 * perturbation is applied (a plain copy: pair slots have copy_backup), an
 * implicit x - c*m in low-memory mode, else the parameters themselves (the
 * master weights of a bf16/fp16 buffer are never perturbed). */
static lora_view clean_params(const mgpo_slot *sl)
{
    lora_view v = plain_view(sl->params);
    if (sl->applied != 0.0f && sl->kind == MGPO_SLOT_FLOAT32) {
        if (sl->backup) v.x = sl->backup;
        else {
            v.m = sl->dir;
            v.c = sl->applied;
        }
    }
    return v;
}

/* A slot's gradient as the step uses it. */
static lora_view grad_view(const mgpo_state *st, const mgpo_slot *sl)
{
    if (mgpo_slot_grads_direct(st, sl))
        return plain_view(sl->grads);
    lora_view v = plain_view(NULL);
    v.typed = sl->grads;
    v.type = sl->grad_type;
    v.scale = st->grad_unscale;
    return v;
}

/* Dot product of row i of `a` and row j of `b` (length n), in eight lanes
 * like mgpo_sum_squares so that the plain case vectorises with fixed bits. */
static double row_dot(lora_view a, size_t i, lora_view b, size_t j, size_t n)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t ai = i * n, bj = j * n;
    if (!a.m && !b.m && !a.typed && !b.typed) {
        const float *x = a.x + ai, *y = b.x + bj;
        size_t l = 0;
        for (; l + 8 <= n; l += 8)
            for (size_t k = 0; k < 8; k++) lane[k] += (double)x[l + k] * (double)y[l + k];
        for (size_t k = 0; l < n; l++, k++) lane[k] += (double)x[l] * (double)y[l];
    } else {
        for (size_t l = 0; l < n; l++) lane[l & 7] += view_at(a, ai + l) * view_at(b, bj + l);
    }
    return mgpo_combine_lanes(lane);
}

/* Rows of U = [X_B  B] are read LORA_ROWS at a time, so that each pass over
 * the upper triangle of P adds LORA_ROWS outer products. */
#define LORA_ROWS 4u

/* P = U^T U (upper triangle) into p (2r x 2r); u is LORA_ROWS * 2r scratch. */
static void gram_p(size_t r, size_t n_out, lora_view b, lora_view xb, double *p, double *u)
{
    const size_t k2 = 2 * r;
    memset(p, 0, k2 * k2 * sizeof *p);
    for (size_t i0 = 0; i0 < n_out; i0 += LORA_ROWS) {
        /* Missing rows of the last block are zero: adding 0 changes nothing. */
        memset(u, 0, LORA_ROWS * k2 * sizeof *u);
        for (size_t t = 0; t < LORA_ROWS && i0 + t < n_out; t++)
            for (size_t k = 0; k < r; k++) {
                u[t * k2 + k] = view_at(xb, (i0 + t) * r + k);
                u[t * k2 + r + k] = view_at(b, (i0 + t) * r + k);
            }
        const double *u0 = u, *u1 = u + k2, *u2 = u + 2 * k2, *u3 = u + 3 * k2;
        for (size_t j = 0; j < k2; j++) {
            const double c0 = u0[j], c1 = u1[j], c2 = u2[j], c3 = u3[j];
            double *row = p + j * k2;
            for (size_t k = j; k < k2; k++)
                row[k] += (c0 * u0[k] + c1 * u1[k]) + (c2 * u2[k] + c3 * u3[k]);
        }
    }
}

/* Row j of V = [A; X_A]. */
static lora_view v_row(size_t r, lora_view a, lora_view xa, size_t j, size_t *row)
{
    *row = j < r ? j : j - r;
    return j < r ? a : xa;
}

/* ||s*(xb*a + b*xa)||_F^2 by the Gram identity.  a, xa: r x n_in;
 * b, xb: n_out x r.  l->work ((2r)^2 + LORA_ROWS*2r doubles) is pure
 * scratch, written even through a const state: it carries nothing from one
 * call to the next, and only perturb and step (which own the state
 * exclusively) get here. */
static double weight_space_sq(const mgpo_lora_item *l, lora_view a, lora_view b,
                              lora_view xa, lora_view xb)
{
    const size_t r = l->desc.rank, n_in = l->desc.n_in;
    const size_t k2 = 2 * r;
    double *p = l->work;
    gram_p(r, l->desc.n_out, b, xb, p, l->work + k2 * k2);

    /* trace(P Q) = sum_jk P_jk Q_jk, both symmetric: the diagonal once, the
     * upper triangle twice.  Q is never stored: each entry is a dot product
     * of two rows of V and goes straight into the sum. */
    double diag = 0.0, off = 0.0;
    for (size_t j = 0; j < k2; j++) {
        size_t rj, rk;
        lora_view vj = v_row(r, a, xa, j, &rj);
        for (size_t k = j; k < k2; k++) {
            lora_view vk = v_row(r, a, xa, k, &rk);
            double q = row_dot(vj, rj, vk, rk, n_in);
            if (k == j) diag += p[j * k2 + k] * q;
            else off += p[j * k2 + k] * q;
        }
    }
    double sq = l->desc.scaling * l->desc.scaling * (diag + 2.0 * off);
    /* Rounding can leave a tiny negative value when the matrix is ~0. */
    return sq < 0.0 ? 0.0 : sq;
}

double mgpo_lora_momentum_sq(const mgpo_state *st, const mgpo_item *item)
{
    const mgpo_slot *sa = &st->slots[item->first_slot], *sb = sa + 1;
    /* Perturb only runs on a clean state, but the views also cover a caller
     * (stats, tests) asking while perturbed. */
    return weight_space_sq(item->lora, clean_params(sa), clean_params(sb), plain_view(sa->dir),
                           plain_view(sb->dir));
}

double mgpo_lora_grad_sq(const mgpo_state *st, const mgpo_item *item)
{
    /* The gradient norm is measured at the clean A and B (the values the
     * step updates), also when adapter mode has perturbed them. */
    const mgpo_slot *sa = &st->slots[item->first_slot], *sb = sa + 1;
    return weight_space_sq(item->lora, clean_params(sa), clean_params(sb), grad_view(st, sa),
                           grad_view(st, sb));
}

/* W <- W + c*D, D = s*(m_B A + B m_A), after saving W.  Each element of D is
 * summed over the rank in double and W + c*D is rounded once to float (then,
 * for a bf16/fp16 W, to nearest in W's type).  A and B are the clean values:
 * in base mode they are never perturbed (their master, if any, is them). */
void mgpo_lora_base_perturb(mgpo_state *st, mgpo_item *item, float coefficient)
{
    mgpo_lora_item *l = item->lora;
    const mgpo_slot *sa = &st->slots[item->first_slot], *sb = sa + 1;
    const size_t r = l->desc.rank, n_in = l->desc.n_in, n_out = l->desc.n_out;
    const float *a = sa->params, *ma = sa->dir, *b = sb->params, *mb = sb->dir;
    const mgpo_dtype type = l->desc.base_type;
    const size_t size = mgpo_dtype_size(type);
    unsigned char *w = l->desc.base_weight;
    const double cs = (double)coefficient * l->desc.scaling;
    double acc[LORA_CHUNK];
    float row[LORA_CHUNK];

    memcpy(l->base_backup, w, n_out * n_in * size);
    for (size_t i = 0; i < n_out; i++) {
        for (size_t j0 = 0; j0 < n_in; j0 += LORA_CHUNK) {
            size_t n = n_in - j0 < LORA_CHUNK ? n_in - j0 : LORA_CHUNK;
            unsigned char *wi = w + (i * n_in + j0) * size;
            memset(acc, 0, n * sizeof *acc);
            for (size_t k = 0; k < r; k++) {
                const double x = mb[i * r + k], y = b[i * r + k];
                const float *ak = a + k * n_in + j0, *mak = ma + k * n_in + j0;
                for (size_t j = 0; j < n; j++)
                    acc[j] += x * (double)ak[j] + y * (double)mak[j];
            }
            /* A float32 W in place; a bf16/fp16 one through float32 (every
             * type: registration refused any other, BAD_ENUM). */
            switch (type) {
            case MGPO_DTYPE_FLOAT32: {
                float *wf = (float *)(void *)wi;
                for (size_t j = 0; j < n; j++) wf[j] = (float)((double)wf[j] + cs * acc[j]);
                break;
            }
            case MGPO_DTYPE_BFLOAT16:
            case MGPO_DTYPE_FLOAT16:
                st->kernels->load(row, wi, type, n, 1.0f);
                for (size_t j = 0; j < n; j++) row[j] = (float)((double)row[j] + cs * acc[j]);
                st->kernels->store(wi, type, row, n);
                break;
            }
        }
    }
    l->base_applied = coefficient;
}

void mgpo_lora_base_restore(mgpo_state *st, mgpo_item *item)
{
    (void)st;
    mgpo_lora_item *l = item->lora;
    memcpy(l->desc.base_weight, l->base_backup,
           l->desc.n_out * l->desc.n_in * mgpo_dtype_size(l->desc.base_type));
    l->base_applied = 0.0f;
}

void mgpo_lora_free(mgpo_state *st, mgpo_item *item)
{
    mgpo_lora_item *l = item->lora;
    if (!l) return;
    mgpo_free(st, l->base_backup, l->desc.n_out * l->desc.n_in * mgpo_dtype_size(l->desc.base_type));
    mgpo_free(st, l->work, l->work_count * sizeof(double));
    mgpo_free(st, l, sizeof *l);
    item->lora = NULL;
}

/* ---- Registration -------------------------------------------------------- */

/* Same per-buffer limit as mgpo_add_tensor. */
#define LORA_MAX_COUNT (SIZE_MAX / 4 / sizeof(float))

static bool product_fits(size_t x, size_t y, size_t *out)
{
    if (x != 0 && y > LORA_MAX_COUNT / x) return false;
    *out = x * y;
    return true;
}

typedef struct lora_sizes {
    size_t a, b, w, work;
} lora_sizes;

static mgpo_status pair_sizes(const mgpo_lora_pair_typed *p, lora_sizes *z)
{
    if (p->rank == 0 || p->n_in == 0 || p->n_out == 0) return MGPO_ERR_SHAPE;
    size_t k2 = 0, k2sq = 0;
    if (!product_fits(p->rank, p->n_in, &z->a) || !product_fits(p->n_out, p->rank, &z->b) ||
        !product_fits(2, p->rank, &k2) || !product_fits(k2, k2, &k2sq) ||
        k2 > LORA_MAX_COUNT / LORA_ROWS || k2sq > LORA_MAX_COUNT - LORA_ROWS * k2)
        return MGPO_ERR_SHAPE;
    z->work = k2sq + LORA_ROWS * k2;
    z->w = 0;
    if (p->mode == MGPO_LORA_BASE && !product_fits(p->n_out, p->n_in, &z->w))
        return MGPO_ERR_SHAPE;
    return MGPO_OK;
}

/* No buffer the library writes (A, B, W) may overlap another buffer of the
 * pair or anything registered before; the gradients may only alias each
 * other. */
static mgpo_status check_pair_buffers(const mgpo_state *st, const mgpo_lora_pair_typed *p,
                                      const lora_sizes *z)
{
    const size_t as = mgpo_dtype_size(p->adapter_type), gs = mgpo_dtype_size(p->grad_type);
    struct {
        const void *ptr;
        size_t bytes;
        bool written;
    } buf[5] = {{p->a, z->a * as, true},
                {p->b, z->b * as, true},
                {p->base_weight, z->w * mgpo_dtype_size(p->base_type), true},
                {p->grad_a, z->a * gs, false},
                {p->grad_b, z->b * gs, false}};
    for (size_t i = 0; i < 5; i++) {
        if (!buf[i].ptr) continue;
        for (size_t j = i + 1; j < 5; j++)
            if (buf[j].ptr && (buf[i].written || buf[j].written) &&
                mgpo_ranges_overlap(buf[i].ptr, buf[i].bytes, buf[j].ptr, buf[j].bytes))
                return MGPO_ERR_OVERLAP;
        mgpo_status s = buf[i].written ? mgpo_check_writable(st, buf[i].ptr, buf[i].bytes)
                                       : mgpo_check_grads_buffer(st, buf[i].ptr, buf[i].bytes);
        if (s != MGPO_OK) return s;
    }
    return MGPO_OK;
}

static mgpo_status validate_pair(const mgpo_state *st, const mgpo_lora_pair_typed *p,
                                 const mgpo_tensor_options *o, lora_sizes *z)
{
    if (!p->a || !p->b) return MGPO_ERR_NULL_ARGUMENT;
    for (size_t i = 0; i < sizeof p->reserved / sizeof p->reserved[0]; i++)
        if (p->reserved[i] != 0) return MGPO_ERR_RESERVED_FIELD;
    if (p->mode != MGPO_LORA_ADAPTER && p->mode != MGPO_LORA_BASE) return MGPO_ERR_BAD_ENUM;
    if (!mgpo_dtype_valid(p->adapter_type) || !mgpo_dtype_valid(p->grad_type) ||
        !mgpo_dtype_valid(p->base_type))
        return MGPO_ERR_BAD_ENUM;
    if (p->mode == MGPO_LORA_BASE && !p->base_weight) return MGPO_ERR_NULL_ARGUMENT;
    if (p->mode == MGPO_LORA_ADAPTER && p->base_weight) return MGPO_ERR_INVALID_ARGUMENT;
    if (!mgpo_typed_aligned(p->a, p->adapter_type) || !mgpo_typed_aligned(p->b, p->adapter_type) ||
        !mgpo_typed_aligned(p->grad_a, p->grad_type) || !mgpo_typed_aligned(p->grad_b, p->grad_type) ||
        !mgpo_typed_aligned(p->base_weight, p->base_type))
        return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_status s = pair_sizes(p, z);
    if (s != MGPO_OK) return s;
    /* The weight-space norms multiply by scaling^2 (MGPO_LORA_SCALING_MAX).
     * Compared in the library's environment: clang evaluates the ordered
     * comparisons of a NaN too, which raised FE_INVALID in the caller's
     * (the differential fuzzer found it; finding 2's class). */
    fenv_t caller;
    mgpo_fp_enter(&caller);
    /* volatile: pure arithmetic may otherwise be sunk past the switch back. */
    volatile bool scaling_ok =
        isfinite(p->scaling) && p->scaling > 0.0 && p->scaling <= MGPO_LORA_SCALING_MAX;
    mgpo_fp_leave(&caller);
    if (!scaling_ok) return MGPO_ERR_INVALID_ARGUMENT;
    s = mgpo_check_options(&st->config, o);
    if (s != MGPO_OK) return s;
    if (st->step > 0 || st->perturbed) return MGPO_ERR_WRONG_PHASE;
    /* The caller's optimizer keeps its own master weights. */
    if (p->adapter_type != MGPO_DTYPE_FLOAT32 && mgpo_external(st)) return MGPO_ERR_UNSUPPORTED;
    return check_pair_buffers(st, p, z);
}

/* Allocates the pair's private part: the Gram scratch (only a perturbed pair
 * measures norms) and, in base mode, the backup of W. */
static mgpo_status alloc_lora_item(mgpo_state *st, mgpo_item *it, const mgpo_lora_pair_typed *p,
                                   const lora_sizes *z)
{
    mgpo_lora_item *l = mgpo_alloc(st, sizeof *l);
    if (!l) return MGPO_ERR_OUT_OF_MEMORY;
    memset(l, 0, sizeof *l);
    l->desc = *p;
    /* The slots own the gradient pointers (mgpo_set_lora_grads updates them). */
    l->desc.grad_a = NULL;
    l->desc.grad_b = NULL;
    it->lora = l;
    if (!it->perturb) return MGPO_OK;
    l->work = mgpo_alloc(st, z->work * sizeof(double));
    if (!l->work) return MGPO_ERR_OUT_OF_MEMORY;
    l->work_count = z->work;
    if (p->mode == MGPO_LORA_BASE) {
        l->base_backup = mgpo_alloc(st, z->w * mgpo_dtype_size(p->base_type));
        if (!l->base_backup) return MGPO_ERR_OUT_OF_MEMORY;
    }
    return MGPO_OK;
}

mgpo_status mgpo_add_lora_pair_typed(mgpo_state *st, const mgpo_lora_pair_typed *pair,
                                     const mgpo_tensor_options *options, size_t *index)
{
    if (!st || !pair) return MGPO_ERR_NULL_ARGUMENT;
    /* A random direction for a pair would need its own weight-space norm. */
    if (st->config.direction == MGPO_DIRECTION_RANDOM) return MGPO_ERR_UNSUPPORTED;
    mgpo_tensor_options o = options ? *options : mgpo_tensor_options_default();
    lora_sizes z;
    mgpo_status s = validate_pair(st, pair, &o, &z);
    if (s != MGPO_OK) return s;

    const bool perturb = o.perturb != 0;
    /* In base mode W moves, A and B never do: their slots get no backup. */
    const bool slot_perturb = perturb && pair->mode == MGPO_LORA_ADAPTER;
    size_t slots_before = st->slot_count, item;
    s = mgpo_add_item(st, MGPO_ITEM_LORA, perturb, &item);
    if (s != MGPO_OK) return s;
    s = alloc_lora_item(st, &st->items[item], pair, &z);
    if (s == MGPO_OK)
        s = mgpo_add_slot(st, pair->a, pair->adapter_type, pair->grad_a, pair->grad_type, z.a, &o,
                          item, slot_perturb);
    if (s == MGPO_OK)
        s = mgpo_add_slot(st, pair->b, pair->adapter_type, pair->grad_b, pair->grad_type, z.b, &o,
                          item, slot_perturb);
    if (s != MGPO_OK) {
        mgpo_drop_last_item(st, slots_before);
        return s;
    }
    /* The Gram-identity norms read the clean A and B at every position many
     * times while they are perturbed: keep plain copies, not exception lists. */
    for (size_t i = slots_before; i < st->slot_count; i++) st->slots[i].copy_backup = true;
    if (index) *index = item;
    return MGPO_OK;
}

mgpo_status mgpo_add_lora_pair(mgpo_state *st, const mgpo_lora_pair *pair,
                               const mgpo_tensor_options *options, size_t *index)
{
    if (!st || !pair) return MGPO_ERR_NULL_ARGUMENT;
    mgpo_lora_pair_typed t;
    memset(&t, 0, sizeof t);
    t.a = pair->a;
    t.grad_a = pair->grad_a;
    t.b = pair->b;
    t.grad_b = pair->grad_b;
    t.base_weight = pair->base_weight;
    t.rank = pair->rank;
    t.n_in = pair->n_in;
    t.n_out = pair->n_out;
    t.scaling = pair->scaling;
    t.mode = pair->mode;
    return mgpo_add_lora_pair_typed(st, &t, options, index);
}

mgpo_status mgpo_set_lora_grads_typed(mgpo_state *st, size_t index, const void *grad_a,
                                      const void *grad_b, mgpo_dtype grad_type)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (index >= st->item_count || st->items[index].kind != MGPO_ITEM_LORA)
        return MGPO_ERR_INVALID_ARGUMENT;
    if (!mgpo_dtype_valid(grad_type)) return MGPO_ERR_BAD_ENUM;
    if (!mgpo_typed_aligned(grad_a, grad_type) || !mgpo_typed_aligned(grad_b, grad_type))
        return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_slot *sa = &st->slots[st->items[index].first_slot], *sb = sa + 1;
    const size_t size = mgpo_dtype_size(grad_type);
    /* Both are checked before either is set. */
    mgpo_status s = grad_a ? mgpo_check_grads_buffer(st, grad_a, sa->count * size) : MGPO_OK;
    if (s == MGPO_OK && grad_b) s = mgpo_check_grads_buffer(st, grad_b, sb->count * size);
    if (s != MGPO_OK) return s;
    sa->grads = grad_a;
    sb->grads = grad_b;
    sa->grad_type = sb->grad_type = grad_type;
    return MGPO_OK;
}

/* As mgpo_set_grad: the untyped setter keeps the pair's gradient type. */
mgpo_status mgpo_set_lora_grads(mgpo_state *st, size_t index, const float *grad_a,
                                const float *grad_b)
{
    if (!st) return MGPO_ERR_NULL_ARGUMENT;
    if (index >= st->item_count || st->items[index].kind != MGPO_ITEM_LORA)
        return MGPO_ERR_INVALID_ARGUMENT;
    mgpo_dtype type = st->slots[st->items[index].first_slot].grad_type;
    if ((grad_a || grad_b) && type != MGPO_DTYPE_FLOAT32) return MGPO_ERR_INVALID_ARGUMENT;
    return mgpo_set_lora_grads_typed(st, index, grad_a, grad_b, type);
}
