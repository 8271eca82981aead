/* Checkpoints of mixed-precision states (format version 3, issue 12): a
 * bf16 and an fp16 tensor, a float32 one, an adapter-mode pair with bf16 A
 * and B and fp16 gradients, and a base-mode pair with fp16 A and B over a
 * bf16 W.  Saved clean or while perturbed, under a loss scale of 1024, with
 * round-to-nearest or stochastic rounding, a resumed run is bitwise the
 * uninterrupted one (caller buffers, master weights, the whole state); the
 * loader refuses a non-finite master and any patched element type,
 * rounding or loss scale; the size is the formula of mgpo.h. */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_fixture.h"
#include "internal.h"
#include "checkpoint_format.h"
#include "test_util.h"

/* ---- The run --------------------------------------------------------------- */

enum { T0 = 5000, T1 = 300, T2 = 37, R = 2, IN = 6, OUT = 5 };
/* The buffers the library writes: three tensors, A1, B1 (adapter pair),
 * A2, B2, W2 (base pair). */
enum { BT0, BT1, BT2, BA1, BB1, BA2, BB2, BW2, NB };
#define GRADS (NB - 1) /* every buffer but W has a gradient */
#define ITEMS 5
#define LOSS_SCALE 1024.0

static const size_t counts[NB] = {T0, T1, T2, R * IN, OUT * R, R * IN, OUT * R, OUT * IN};
static const mgpo_dtype param_types[NB] = {
    MGPO_DTYPE_BFLOAT16, MGPO_DTYPE_FLOAT16, MGPO_DTYPE_FLOAT32, MGPO_DTYPE_BFLOAT16,
    MGPO_DTYPE_BFLOAT16, MGPO_DTYPE_FLOAT16, MGPO_DTYPE_FLOAT16, MGPO_DTYPE_BFLOAT16};
static const mgpo_dtype grad_types[GRADS] = {
    MGPO_DTYPE_BFLOAT16, MGPO_DTYPE_FLOAT16, MGPO_DTYPE_FLOAT32, MGPO_DTYPE_FLOAT16,
    MGPO_DTYPE_FLOAT16,  MGPO_DTYPE_FLOAT32, MGPO_DTYPE_FLOAT32};

typedef struct mixed_run {
    mgpo_state *st;
    void *buf[NB];
    void *grad[GRADS];
} mixed_run;

static size_t buf_bytes(int k) { return counts[k] * mgpo_dtype_size(param_types[k]); }

static float load_at(const void *p, mgpo_dtype type, size_t i)
{
    if (type == MGPO_DTYPE_FLOAT32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return type == MGPO_DTYPE_BFLOAT16 ? mgpo_bf16_to_f32(h) : mgpo_f16_to_f32(h);
}

static void store_at(void *p, mgpo_dtype type, size_t i, float x)
{
    if (type == MGPO_DTYPE_FLOAT32) ((float *)p)[i] = x;
    else if (type == MGPO_DTYPE_BFLOAT16) ((uint16_t *)p)[i] = mgpo_f32_to_bf16(x);
    else ((uint16_t *)p)[i] = mgpo_f32_to_f16(x);
}

static float wave(uint64_t t, size_t k, size_t i)
{
    uint64_t z = (t * 2654435761u) ^ (k * 40503u) ^ (i * 2246822519u);
    z ^= z >> 13;
    z *= 0x9E3779B97F4A7C15ull;
    return (float)((double)(z >> 41) / (double)(1ull << 22) - 1.0);
}

static mgpo_lora_pair_typed pair_of(mixed_run *r, int base)
{
    mgpo_lora_pair_typed p;
    memset(&p, 0, sizeof p);
    int a = base ? BA2 : BA1;
    p.a = r->buf[a];
    p.grad_a = r->grad[a];
    p.b = r->buf[a + 1];
    p.grad_b = r->grad[a + 1];
    p.adapter_type = param_types[a];
    p.grad_type = grad_types[a];
    p.base_weight = base ? r->buf[BW2] : NULL;
    p.base_type = base ? param_types[BW2] : MGPO_DTYPE_FLOAT32;
    p.rank = R;
    p.n_in = IN;
    p.n_out = OUT;
    p.scaling = 2.0;
    p.mode = base ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER;
    return p;
}

/* Buffers from `seed` (rounded to their types), the state, registrations. */
static void run_init(mixed_run *r, const mgpo_config *cfg, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    for (int k = 0; k < NB; k++) {
        r->buf[k] = malloc(buf_bytes(k));
        ck_assert_ptr_nonnull(r->buf[k]);
        for (size_t i = 0; i < counts[k]; i++)
            store_at(r->buf[k], param_types[k], i, 0.5f * wave(seed, (size_t)k, i));
        if (k < GRADS) r->grad[k] = calloc(counts[k], mgpo_dtype_size(grad_types[k]));
    }
    ck_assert_int_eq(mgpo_create(&r->st, cfg, NULL), MGPO_OK);
    mgpo_tensor_options off = mgpo_tensor_options_default();
    off.perturb = 0;
    off.lr_scale = 0.5;
    for (int k = BT0; k <= BT2; k++)
        ck_assert_int_eq(mgpo_add_tensor_typed(r->st, r->buf[k], param_types[k], r->grad[k],
                                               grad_types[k], counts[k], k == BT2 ? &off : NULL,
                                               NULL),
                         MGPO_OK);
    for (int base = 0; base < 2; base++) {
        mgpo_lora_pair_typed p = pair_of(r, base);
        ck_assert_int_eq(mgpo_add_lora_pair_typed(r->st, &p, NULL, NULL), MGPO_OK);
    }
}

static void run_free(mixed_run *r)
{
    mgpo_destroy(r->st);
    for (int k = 0; k < NB; k++) free(r->buf[k]);
    for (int k = 0; k < GRADS; k++) free(r->grad[k]);
}

/* The caller's backward pass: a function of the typed values the model
 * reads (W included, so a wrong base-mode perturbation changes the run),
 * multiplied by the loss scale and stored in the gradients' types. */
static void grads(mixed_run *r, uint64_t t)
{
    for (int k = 0; k < GRADS; k++)
        for (size_t i = 0; i < counts[k]; i++) {
            float x = load_at(r->buf[k], param_types[k], i);
            float w = load_at(r->buf[BW2], param_types[BW2], i % (OUT * IN));
            float g = 0.5f * x + 0.25f * w + 0.1f * wave(t + 100, (size_t)k, i);
            store_at(r->grad[k], grad_types[k], i, (float)LOSS_SCALE * g);
        }
}

static void iterate(mixed_run *r, uint64_t t)
{
    ck_assert_int_eq(mgpo_set_lr(r->st, fx_lr(t)), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(r->st), MGPO_OK);
    grads(r, t);
    ck_assert_int_eq(mgpo_step(r->st), MGPO_OK);
}

typedef struct bufs_copy {
    unsigned char *data[NB];
} bufs_copy;

static void copy_bufs(const mixed_run *r, bufs_copy *c)
{
    for (int k = 0; k < NB; k++) {
        c->data[k] = malloc(buf_bytes(k));
        memcpy(c->data[k], r->buf[k], buf_bytes(k));
    }
}

static void put_bufs(mixed_run *r, const bufs_copy *c)
{
    for (int k = 0; k < NB; k++) memcpy(r->buf[k], c->data[k], buf_bytes(k));
}

static int bufs_equal(const mixed_run *r, const bufs_copy *c)
{
    for (int k = 0; k < NB; k++)
        if (memcmp(r->buf[k], c->data[k], buf_bytes(k)) != 0) return 0;
    return 1;
}

static void free_copy(bufs_copy *c)
{
    for (int k = 0; k < NB; k++) free(c->data[k]);
}

/* Elements of item i's master weights (0: none). */
static size_t master_count(size_t item)
{
    static const size_t n[ITEMS] = {T0, T1, 0, R * IN + OUT * R, R * IN + OUT * R};
    return n[item];
}

/* Caller buffers, master weights, statistics and saved bytes all equal. */
static void assert_same_run(const mixed_run *a, const mixed_run *b)
{
    for (int k = 0; k < NB; k++) ck_assert_mem_eq(a->buf[k], b->buf[k], buf_bytes(k));
    for (size_t i = 0; i < ITEMS; i++) {
        size_t n = master_count(i);
        float *ma = malloc((n ? n : 1) * sizeof(float)), *mb = malloc((n ? n : 1) * sizeof(float));
        if (n == 0) {
            ck_assert_int_eq(mgpo_get_master_weights(a->st, i, ma, 1), MGPO_ERR_INVALID_ARGUMENT);
        } else {
            ck_assert_int_eq(mgpo_get_master_weights(a->st, i, ma, n), MGPO_OK);
            ck_assert_int_eq(mgpo_get_master_weights(b->st, i, mb, n), MGPO_OK);
            ck_assert_mem_eq(ma, mb, n * sizeof(float));
        }
        free(ma);
        free(mb);
    }
    mgpo_stats sa, sb;
    ck_assert_int_eq(mgpo_get_stats(a->st, &sa), MGPO_OK);
    ck_assert_int_eq(mgpo_get_stats(b->st, &sb), MGPO_OK);
    ck_assert_mem_eq(&sa, &sb, sizeof sa);
    size_t n = 0;
    unsigned char *ca = fx_save(a->st, &n);
    ck_assert_ptr_nonnull(ca);
    ck_assert(fx_state_is(b->st, ca, n));
    free(ca);
}

static mgpo_config mixed_config(int combo)
{
    mgpo_config cfg = fx_config((combo & 1) ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW,
                                (combo & 8) ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL,
                                (combo & 8) ? MGPO_RESTORE_LOW_MEMORY : MGPO_RESTORE_EXACT);
    if (combo & 1) cfg.nesterov = (combo & 8) != 0;
    cfg.rounding = (combo & 2) ? MGPO_ROUNDING_STOCHASTIC : MGPO_ROUNDING_NEAREST;
    cfg.seed = 0x5EEDC0FFEE123457ull;
    /* Large enough that the perturbation moves bf16 values (an ulp of
     * 0.5 is 2^-9) under global scope too. */
    cfg.rho = 0.5;
    return cfg;
}

/* ---- Resume ------------------------------------------------------------------
 * _i: bit 0 SGD, bit 1 stochastic rounding, bit 2 save while perturbed,
 * bit 3 per-tensor scope and low-memory restore.  Run A sets the loss scale
 * once, before its first step; run B (other initial buffers, the other
 * rounding, a loss scale of 2) steps once, loads, gets the caller's buffers
 * back and never sets the scale: only the checkpoint can give it the
 * rounding, the scale and the master weights A has. */

enum { K = 8, J = 3 };

START_TEST(test_mixed_resume)
{
    const mgpo_config cfg = mixed_config(_i);
    const int perturbed_save = (_i & 4) != 0;
    mixed_run a, b;
    run_init(&a, &cfg, 0);
    ck_assert_int_eq(mgpo_set_grad_scale(a.st, LOSS_SCALE), MGPO_OK);
    for (uint64_t t = 0; t < J; t++) iterate(&a, t);
    bufs_copy clean, saved;
    copy_bufs(&a, &clean);
    ck_assert_int_eq(mgpo_set_lr(a.st, fx_lr(J)), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    grads(&a, J);
    unsigned char *ck = NULL;
    size_t size = 0;
    if (perturbed_save) {
        ck = fx_save(a.st, &size);
        copy_bufs(&a, &saved);
        /* The perturbation moved the typed buffers (and W). */
        ck_assert(memcmp(saved.data[BT0], clean.data[BT0], buf_bytes(BT0)) != 0);
        ck_assert(memcmp(saved.data[BW2], clean.data[BW2], buf_bytes(BW2)) != 0);
    }
    ck_assert_int_eq(mgpo_step(a.st), MGPO_OK);
    if (!perturbed_save) {
        ck = fx_save(a.st, &size);
        copy_bufs(&a, &saved);
    }
    ck_assert_ptr_nonnull(ck);
    for (uint64_t t = J + 1; t < K; t++) iterate(&a, t);

    mgpo_config other = cfg;
    other.rounding = cfg.rounding == MGPO_ROUNDING_NEAREST ? MGPO_ROUNDING_STOCHASTIC
                                                           : MGPO_ROUNDING_NEAREST;
    run_init(&b, &other, 1);
    ck_assert_int_eq(mgpo_set_grad_scale(b.st, 2.0), MGPO_OK);
    iterate(&b, 0);
    ck_assert_int_eq(mgpo_load(b.st, ck, size), MGPO_OK);
    put_bufs(&b, &saved);
    int p = -1;
    ck_assert_int_eq(mgpo_is_perturbed(b.st, &p), MGPO_OK);
    ck_assert_int_eq(p, perturbed_save);
    mgpo_config got;
    ck_assert_int_eq(mgpo_get_config(b.st, &got), MGPO_OK);
    ck_assert_int_eq(got.rounding, cfg.rounding);
    if (perturbed_save) {
        grads(&b, J);
        ck_assert_int_eq(mgpo_step(b.st), MGPO_OK);
    }
    for (uint64_t t = J + 1; t < K; t++) iterate(&b, t);
    assert_same_run(&a, &b);

    if (perturbed_save) {
        /* A restore right after a load gives the clean buffers exactly:
         * the rounded masters and the clean W from the checkpoint. */
        mixed_run c;
        run_init(&c, &other, 2);
        ck_assert_int_eq(mgpo_load(c.st, ck, size), MGPO_OK);
        put_bufs(&c, &saved);
        ck_assert(!bufs_equal(&c, &clean));
        ck_assert_int_eq(mgpo_restore(c.st), MGPO_OK);
        ck_assert(bufs_equal(&c, &clean));
        run_free(&c);
    }
    free(ck);
    free_copy(&saved);
    free_copy(&clean);
    run_free(&a);
    run_free(&b);
}
END_TEST

/* ---- Reading checkpoint fields (docs/checkpoint-format.md) ------------------ */

static uint64_t rd_le(const unsigned char *at, int width)
{
    uint64_t x = 0;
    for (int i = 0; i < width; i++) x |= (uint64_t)at[i] << (8 * i);
    return x;
}

#define P(off) (MGPO_CKPT_HEADER_SIZE + (off))

static size_t units_of(const unsigned char *ck) { return (size_t)rd_le(ck + P(232), 8); }
static size_t item_record(const unsigned char *ck, size_t i)
{
    return P(MGPO_CKPT_STATE_SIZE) + units_of(ck) * MGPO_CKPT_UNIT_SIZE + i * MGPO_CKPT_ITEM_SIZE;
}
static size_t slot_record(const unsigned char *ck, size_t s)
{
    return item_record(ck, ITEMS) + s * MGPO_CKPT_SLOT_SIZE;
}

/* Where slot s's master array starts, walking the arrays the records
 * announce (docs/checkpoint-format.md: m, v, copy, master per slot). */
static size_t master_array(const unsigned char *ck, size_t s)
{
    size_t at = slot_record(ck, 7);
    for (size_t i = 0;; i++) {
        size_t rec = slot_record(ck, i), count = (size_t)rd_le(ck + rec, 8);
        uint32_t arrays = (uint32_t)rd_le(ck + rec + MGPO_CKPT_SLOT_OFF_ARRAYS, 4);
        size_t before = (arrays & MGPO_CKPT_SLOT_EXTERNAL ? 0 : 1) +
                        (arrays & MGPO_CKPT_SLOT_HAS_V ? 1 : 0) +
                        (arrays & MGPO_CKPT_SLOT_HAS_BACKUP ? 1 : 0);
        if (i == s) {
            ck_assert(arrays & MGPO_CKPT_SLOT_MASTER);
            return at + 4 * count * before;
        }
        at += 4 * count * (before + (arrays & MGPO_CKPT_SLOT_MASTER ? 1 : 0));
    }
}

/* ---- Sizes ----------------------------------------------------------------------
 * mgpo.h's formula: 48 + 264 + 48 units + 72 items + 56 slots, then 4 bytes
 * per element for m and for v (AdamW), 4 per element of a bf16/fp16
 * parameter buffer (its master), 4 per perturbed float32 parameter while
 * perturbed in exact mode, and while perturbed W of a base-mode pair in its
 * own type (here bf16: 2 bytes per element). */
static size_t formula(const mgpo_config *cfg, int perturbed)
{
    const size_t slots = 3 + 4, units = cfg->scope == MGPO_SCOPE_TENSOR ? ITEMS : 1;
    size_t elements = 0, masters = 0;
    for (int k = 0; k < GRADS; k++) {
        elements += counts[k];
        if (param_types[k] != MGPO_DTYPE_FLOAT32) masters += counts[k];
    }
    size_t moments = cfg->optimizer == MGPO_OPTIMIZER_ADAMW ? 2 : 1;
    /* The only float32 parameters (T2) are not perturbed: no copy. */
    return 48 + 264 + 48 * units + 72 * ITEMS + 56 * slots + 4 * moments * elements +
           4 * masters + (perturbed ? 2 * OUT * IN : 0);
}

/* The bytes of the new arrays, read independently of the host's byte
 * order: the master of slot `s` (item `item`) as little-endian float32,
 * and W's backup (the last bytes) as the little-endian 16-bit patterns of
 * the clean bf16 W. */
static void assert_arrays_le(const mixed_run *r, const unsigned char *ck, size_t size,
                             const uint16_t *clean_w)
{
    float master[T0];
    ck_assert_int_eq(mgpo_get_master_weights(r->st, 0, master, T0), MGPO_OK);
    const unsigned char *at = ck + master_array(ck, 0);
    for (size_t i = 0; i < T0; i++) {
        uint32_t u;
        memcpy(&u, &master[i], 4);
        ck_assert_uint_eq(rd_le(at + 4 * i, 4), u);
    }
    const unsigned char *w = ck + size - 2 * OUT * IN;
    for (size_t i = 0; i < OUT * IN; i++) ck_assert_uint_eq(rd_le(w + 2 * i, 2), clean_w[i]);
}

START_TEST(test_mixed_sizes)
{
    const mgpo_config cfg = mixed_config(_i);
    mixed_run a;
    run_init(&a, &cfg, 0);
    ck_assert_int_eq(mgpo_set_grad_scale(a.st, LOSS_SCALE), MGPO_OK);
    uint16_t clean_w[OUT * IN];
    for (int perturbed = 0; perturbed < 2; perturbed++) {
        if (perturbed) {
            memcpy(clean_w, a.buf[BW2], sizeof clean_w);
            ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
            ck_assert(memcmp(clean_w, a.buf[BW2], sizeof clean_w) != 0);
        } else {
            for (uint64_t t = 0; t < 2; t++) iterate(&a, t);
        }
        size_t n = 0, written = 0;
        ck_assert_int_eq(mgpo_checkpoint_size(a.st, &n), MGPO_OK);
        ck_assert_uint_eq(n, formula(&cfg, perturbed));
        unsigned char *buf = malloc(n + 1);
        ck_assert_int_eq(mgpo_save(a.st, buf, n + 1, &written), MGPO_OK);
        ck_assert_uint_eq(written, n);
        if (perturbed) assert_arrays_le(&a, buf, n, clean_w);
        free(buf);
    }
    /* Perturbed, every backup this state can hold is present: the bound
     * the file loader applies before reading is exactly this size. */
    size_t n = 0;
    ck_assert_int_eq(mgpo_checkpoint_size(a.st, &n), MGPO_OK);
    ck_assert_uint_eq(mgpo_ckpt_max_size(a.st), n);
    /* And the file API round-trips it into a fresh state. */
    char path[] = "/tmp/mgpo-mixed-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(mgpo_save_file(a.st, path), MGPO_OK);
    mixed_run b;
    run_init(&b, &cfg, 1);
    ck_assert_int_eq(mgpo_load_file(b.st, path), MGPO_OK);
    unlink(path);
    unsigned char *ck = fx_save(a.st, &n);
    ck_assert(fx_state_is(b.st, ck, n));
    free(ck);
    run_free(&b);
    run_free(&a);
}
END_TEST

/* ---- Refusals ---------------------------------------------------------------- */

typedef struct refusal {
    mixed_run r;
    unsigned char *ck; /* a valid perturbed checkpoint of r */
    size_t size;
    bufs_copy bufs;    /* r's buffers */
} refusal;

/* Loads ck with `n` bytes at `at` replaced (resealed) into the moved-on
 * state: `want`, and when refused, the state and the caller's buffers as
 * before. */
#define expect_edit(f, at, value, n, want) expect_edit_at(f, at, value, n, want, __LINE__)
static void expect_edit_at(refusal *f, size_t at, const void *value, size_t n, mgpo_status want,
                           int line)
{
    unsigned char *c = malloc(f->size);
    memcpy(c, f->ck, f->size);
    fx_store_le(c + at, value, n);
    fx_reseal(c, f->size);
    size_t before_n = 0;
    unsigned char *before = fx_save(f->r.st, &before_n);
    mgpo_status got = mgpo_load(f->r.st, c, f->size);
    ck_assert_msg(got == want, "line %d: got %d, want %d", line, (int)got, (int)want);
    if (got != MGPO_OK) ck_assert_msg(fx_state_is(f->r.st, before, before_n), "line %d", line);
    else ck_assert_msg(fx_state_is(f->r.st, c, f->size), "line %d", line);
    ck_assert_msg(bufs_equal(&f->r, &f->bufs), "line %d: caller buffers changed", line);
    /* Back to the moved-on state for the next edit. */
    ck_assert_int_eq(mgpo_load(f->r.st, before, before_n), MGPO_OK);
    free(before);
    free(c);
}

START_TEST(test_mixed_refusals)
{
    refusal f;
    const mgpo_config cfg = mixed_config(2); /* AdamW, stochastic, global, exact */
    run_init(&f.r, &cfg, 0);
    ck_assert_int_eq(mgpo_set_grad_scale(f.r.st, LOSS_SCALE), MGPO_OK);
    for (uint64_t t = 0; t < 3; t++) iterate(&f.r, t);
    ck_assert_int_eq(mgpo_perturb(f.r.st), MGPO_OK);
    f.ck = fx_save(f.r.st, &f.size);
    grads(&f.r, 3);
    ck_assert_int_eq(mgpo_step(f.r.st), MGPO_OK);
    ck_assert_int_eq(mgpo_set_grad_scale(f.r.st, 4.0), MGPO_OK);
    copy_bufs(&f.r, &f.bufs);
    const mgpo_status L = MGPO_ERR_CHECKPOINT_LAYOUT;

    /* The control: the unedited checkpoint loads and restores the scale. */
    uint32_t same = (uint32_t)rd_le(f.ck + slot_record(f.ck, 0) + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, 4);
    ck_assert_uint_eq(same, MGPO_DTYPE_BFLOAT16);
    expect_edit(&f, slot_record(f.ck, 0) + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, &same, 4, MGPO_OK);
    ck_assert_int_eq(mgpo_load(f.r.st, f.ck, f.size), MGPO_OK);
    ck_assert(f.r.st->grad_scale == LOSS_SCALE && f.r.st->grad_unscale == 1.0f / 1024.0f);

    /* A master value that is not finite. */
    float nan = NAN, inf = INFINITY, finite = 0.375f;
    size_t slots[4] = {0, 1, 3, 6}; /* T0, T1, A1, B2: every typed kind */
    for (size_t k = 0; k < 4; k++) {
        size_t m = master_array(f.ck, slots[k]);
        expect_edit(&f, m, &nan, 4, L);
        expect_edit(&f, m + 4 * 7, &inf, 4, L); /* every slot here has 10 or more */
    }
    /* The last master element of the last slot (W's backup follows it);
     * any finite value is one a master can hold, and is taken. */
    size_t last = master_array(f.ck, 6) + 4 * (OUT * R - 1);
    expect_edit(&f, last, &nan, 4, L);
    expect_edit(&f, last, &finite, 4, MGPO_OK);

    /* Element types: a bf16 slot as fp16 or float32, a float32 slot as
     * bf16, an unknown type. */
    uint32_t f32 = MGPO_DTYPE_FLOAT32, bf16 = MGPO_DTYPE_BFLOAT16, f16 = MGPO_DTYPE_FLOAT16, bad = 7;
    expect_edit(&f, slot_record(f.ck, 0) + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, &f16, 4, L);
    expect_edit(&f, slot_record(f.ck, 0) + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, &f32, 4, L);
    expect_edit(&f, slot_record(f.ck, 1) + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, &bf16, 4, L);
    expect_edit(&f, slot_record(f.ck, 2) + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, &bf16, 4, L);
    expect_edit(&f, slot_record(f.ck, 5) + MGPO_CKPT_SLOT_OFF_PARAM_TYPE, &bad, 4, L);
    /* The master bit cleared or set where it does not belong. */
    uint32_t arrays0 = (uint32_t)rd_le(f.ck + slot_record(f.ck, 0) + MGPO_CKPT_SLOT_OFF_ARRAYS, 4);
    uint32_t arrays2 = (uint32_t)rd_le(f.ck + slot_record(f.ck, 2) + MGPO_CKPT_SLOT_OFF_ARRAYS, 4);
    uint32_t no_master = arrays0 & ~MGPO_CKPT_SLOT_MASTER, with_master = arrays2 | MGPO_CKPT_SLOT_MASTER;
    expect_edit(&f, slot_record(f.ck, 0) + MGPO_CKPT_SLOT_OFF_ARRAYS, &no_master, 4, L);
    expect_edit(&f, slot_record(f.ck, 2) + MGPO_CKPT_SLOT_OFF_ARRAYS, &with_master, 4, L);
    /* W's type: the base pair's bf16 W as fp16 or float32; a type on a
     * tensor or on the adapter pair (no W); the reserved word after it. */
    uint32_t one = 1;
    size_t base_type = item_record(f.ck, 4) + MGPO_CKPT_ITEM_OFF_BASE_TYPE;
    ck_assert_uint_eq(rd_le(f.ck + base_type, 4), MGPO_DTYPE_BFLOAT16);
    expect_edit(&f, base_type, &f16, 4, L);
    expect_edit(&f, base_type, &f32, 4, L);
    expect_edit(&f, base_type + 4, &one, 4, L);
    expect_edit(&f, item_record(f.ck, 0) + MGPO_CKPT_ITEM_OFF_BASE_TYPE, &bf16, 4, L);
    expect_edit(&f, item_record(f.ck, 3) + MGPO_CKPT_ITEM_OFF_BASE_TYPE, &bf16, 4, L);
    /* Rounding: an unknown value, the reserved word; the other valid value
     * is a hyper-parameter and is taken. */
    uint32_t two = 2, nearest = MGPO_ROUNDING_NEAREST;
    expect_edit(&f, P(MGPO_CKPT_STATE_OFF_ROUNDING), &two, 4, L);
    expect_edit(&f, P(MGPO_CKPT_STATE_OFF_ROUNDING) + 4, &one, 4, L);
    expect_edit(&f, P(MGPO_CKPT_STATE_OFF_ROUNDING), &nearest, 4, MGPO_OK);
    /* The loss scale: not finite, not positive, beyond the bounds; the
     * bounds themselves are accepted, with the reciprocal recomputed. */
    double bad_scales[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0, -1024.0,
                           MGPO_GRAD_SCALE_MIN / 2, MGPO_GRAD_SCALE_MAX * 2,
                           nextafter(MGPO_GRAD_SCALE_MIN, 0.0),
                           nextafter(MGPO_GRAD_SCALE_MAX, INFINITY)};
    for (size_t k = 0; k < sizeof bad_scales / sizeof bad_scales[0]; k++)
        expect_edit(&f, P(MGPO_CKPT_STATE_OFF_GRAD_SCALE), &bad_scales[k], 8, L);
    double bounds[2] = {MGPO_GRAD_SCALE_MIN, MGPO_GRAD_SCALE_MAX};
    for (int k = 0; k < 2; k++) {
        unsigned char *c = malloc(f.size);
        memcpy(c, f.ck, f.size);
        fx_store_le(c + P(MGPO_CKPT_STATE_OFF_GRAD_SCALE), &bounds[k], 8);
        fx_reseal(c, f.size);
        ck_assert_int_eq(mgpo_load(f.r.st, c, f.size), MGPO_OK);
        ck_assert(f.r.st->grad_scale == bounds[k]);
        ck_assert(f.r.st->grad_unscale == (float)(1.0 / bounds[k]));
        free(c);
    }
    ck_assert_int_eq(mgpo_load(f.r.st, f.ck, f.size), MGPO_OK);
    free(f.ck);
    free_copy(&f.bufs);
    run_free(&f.r);
}
END_TEST

/* A checkpoint only loads into a state with the same element types: the
 * bf16 tensor registered as fp16 or float32, or W as fp16, is refused. */
START_TEST(test_mixed_other_types)
{
    const mgpo_config cfg = mixed_config(0);
    mixed_run a;
    run_init(&a, &cfg, 0);
    for (uint64_t t = 0; t < 2; t++) iterate(&a, t);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    size_t size = 0;
    unsigned char *ck = fx_save(a.st, &size);
    for (int variant = 0; variant < 4; variant++) {
        mgpo_state *o = NULL;
        ck_assert_int_eq(mgpo_create(&o, &cfg, NULL), MGPO_OK);
        void *bufs[NB];
        for (int k = 0; k < NB; k++) bufs[k] = calloc(counts[k], sizeof(float));
        mgpo_tensor_options off = mgpo_tensor_options_default();
        off.perturb = 0;
        off.lr_scale = 0.5;
        for (int k = BT0; k <= BT2; k++) {
            mgpo_dtype t = param_types[k];
            if (k == BT0 && variant == 0) t = MGPO_DTYPE_FLOAT16;
            if (k == BT0 && variant == 1) t = MGPO_DTYPE_FLOAT32;
            ck_assert_int_eq(mgpo_add_tensor_typed(o, bufs[k], t, NULL, grad_types[k], counts[k],
                                                   k == BT2 ? &off : NULL, NULL),
                             MGPO_OK);
        }
        for (int base = 0; base < 2; base++) {
            mixed_run view;
            memset(&view, 0, sizeof view);
            memcpy(view.buf, bufs, sizeof bufs);
            mgpo_lora_pair_typed p = pair_of(&view, base);
            if (base && variant == 2) p.base_type = MGPO_DTYPE_FLOAT16;
            if (!base && variant == 3) p.adapter_type = MGPO_DTYPE_FLOAT32;
            ck_assert_int_eq(mgpo_add_lora_pair_typed(o, &p, NULL, NULL), MGPO_OK);
        }
        size_t n = 0;
        unsigned char *snap = fx_save(o, &n);
        ck_assert_int_eq(mgpo_load(o, ck, size), MGPO_ERR_CHECKPOINT_LAYOUT);
        ck_assert(fx_state_is(o, snap, n));
        free(snap);
        mgpo_destroy(o);
        for (int k = 0; k < NB; k++) free(bufs[k]);
    }
    free(ck);
    run_free(&a);
}
END_TEST

/* Version 2 had float32 buffers only: a checkpoint of one bf16 or fp16
 * tensor written in version 2's layout (master bit, type and array
 * included) is refused, while the same for a float32 tensor loads and
 * saves back to its version-3 bytes. */
START_TEST(test_mixed_version2_refused)
{
    const mgpo_dtype types[3] = {MGPO_DTYPE_BFLOAT16, MGPO_DTYPE_FLOAT16, MGPO_DTYPE_FLOAT32};
    mgpo_config cfg = mixed_config(0);
    uint16_t params[64];
    float grads[64];
    for (size_t i = 0; i < 64; i++) {
        params[i] = mgpo_f32_to_bf16(0.25f * wave(5, 0, i));
        grads[i] = wave(6, 0, i);
    }
    mgpo_state *st = NULL, *fresh = NULL;
    ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_create(&fresh, &cfg, NULL), MGPO_OK);
    uint16_t other[64] = {0};
    size_t count = types[_i] == MGPO_DTYPE_FLOAT32 ? 32 : 64; /* the same bytes */
    ck_assert_int_eq(mgpo_add_tensor_typed(st, params, types[_i], grads, MGPO_DTYPE_FLOAT32,
                                           count, NULL, NULL),
                     MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor_typed(fresh, other, types[_i], grads, MGPO_DTYPE_FLOAT32,
                                           count, NULL, NULL),
                     MGPO_OK);
    for (int t = 0; t < 2; t++) {
        ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
        ck_assert_int_eq(mgpo_step(st), MGPO_OK);
    }
    size_t n3 = 0, n2 = 0, n0 = 0;
    unsigned char *v3 = fx_save(st, &n3), *empty = fx_save(fresh, &n0);
    unsigned char *v2 = fx_downgrade_v2(v3, n3, &n2);
    ck_assert_ptr_nonnull(v2);
    if (types[_i] == MGPO_DTYPE_FLOAT32) {
        ck_assert_int_eq(mgpo_load(fresh, v2, n2), MGPO_OK);
        ck_assert(fx_state_is(fresh, v3, n3));
    } else {
        ck_assert_int_eq(mgpo_load(fresh, v2, n2), MGPO_ERR_CHECKPOINT_LAYOUT);
        ck_assert(fx_state_is(fresh, empty, n0));
        ck_assert_int_eq(mgpo_load(fresh, v3, n3), MGPO_OK);
    }
    free(v2);
    free(v3);
    free(empty);
    mgpo_destroy(st);
    mgpo_destroy(fresh);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("checkpoint_mixed");
    TCase *tc = tcase_create("mixed");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_mixed_resume, 0, 16);
    tcase_add_loop_test(tc, test_mixed_sizes, 0, 2);
    tcase_add_test(tc, test_mixed_refusals);
    tcase_add_test(tc, test_mixed_other_types);
    tcase_add_loop_test(tc, test_mixed_version2_refused, 0, 3);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
