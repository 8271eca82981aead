/* Checkpoints of states with LoRA pairs: resume equivalence with an adapter
 * pair and a base-mode pair (whose clean W travels in the checkpoint while
 * perturbed), and the pair-specific layout checks. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#include "ckpt_fixture.h"
#include "internal.h"
#include "checkpoint_format.h"

/* One tensor, one adapter-mode pair, one base-mode pair. */
enum { N_T = 50, R = 2, IN = 6, OUT = 5, BUFS = 6 };

typedef struct lora_run {
    mgpo_state *st;
    float *buf[BUFS];    /* tensor, A1, B1, A2, B2, W2: what the library writes */
    float *grad[BUFS];   /* gradients of the first five */
    size_t count[BUFS];
} lora_run;

static float wave(uint64_t t, size_t k, size_t i)
{
    uint64_t z = (t * 2654435761u) ^ (k * 40503u) ^ (i * 2246822519u);
    z ^= z >> 13;
    z *= 0x9E3779B97F4A7C15ull;
    return (float)((double)(z >> 41) / (double)(1ull << 22) - 1.0);
}

static mgpo_lora_pair pair_of(lora_run *r, size_t a, int base)
{
    mgpo_lora_pair p;
    memset(&p, 0, sizeof p);
    p.a = r->buf[a];
    p.grad_a = r->grad[a];
    p.b = r->buf[a + 1];
    p.grad_b = r->grad[a + 1];
    p.base_weight = base ? r->buf[5] : NULL;
    p.rank = R;
    p.n_in = IN;
    p.n_out = OUT;
    p.scaling = 2.0;
    p.mode = base ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER;
    return p;
}

static mgpo_status run_init(lora_run *r, const mgpo_config *cfg)
{
    const size_t counts[BUFS] = {N_T, R * IN, OUT * R, R * IN, OUT * R, OUT * IN};
    memset(r, 0, sizeof *r);
    for (size_t k = 0; k < BUFS; k++) {
        r->count[k] = counts[k];
        r->buf[k] = malloc(counts[k] * sizeof(float));
        r->grad[k] = calloc(counts[k], sizeof(float));
        for (size_t i = 0; i < counts[k]; i++) r->buf[k][i] = 0.5f * wave(0, k, i);
    }
    mgpo_status s = mgpo_create(&r->st, cfg, NULL);
    if (s == MGPO_OK) s = mgpo_add_tensor(r->st, r->buf[0], r->grad[0], N_T, NULL, NULL);
    mgpo_lora_pair p1 = pair_of(r, 1, 0), p2 = pair_of(r, 3, 1);
    if (s == MGPO_OK) s = mgpo_add_lora_pair(r->st, &p1, NULL, NULL);
    if (s == MGPO_OK) s = mgpo_add_lora_pair(r->st, &p2, NULL, NULL);
    return s;
}

static void run_free(lora_run *r)
{
    mgpo_destroy(r->st);
    for (size_t k = 0; k < BUFS; k++) {
        free(r->buf[k]);
        free(r->grad[k]);
    }
}

/* Gradients depend on the current (possibly perturbed) values, W included,
 * so a wrong perturbation after a load changes the run. */
static void grads(lora_run *r, uint64_t t)
{
    for (size_t k = 0; k < 5; k++)
        for (size_t i = 0; i < r->count[k]; i++)
            r->grad[k][i] = 0.5f * r->buf[k][i] + 0.25f * r->buf[5][i % (OUT * IN)] +
                            0.1f * wave(t + 1, k, i);
}

static void iterate(lora_run *r, uint64_t t)
{
    ck_assert_int_eq(mgpo_set_lr(r->st, fx_lr(t)), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(r->st), MGPO_OK);
    grads(r, t);
    ck_assert_int_eq(mgpo_step(r->st), MGPO_OK);
}

static float **copy_bufs(const lora_run *r)
{
    float **c = malloc(BUFS * sizeof *c);
    for (size_t k = 0; k < BUFS; k++) {
        c[k] = malloc(r->count[k] * sizeof(float));
        memcpy(c[k], r->buf[k], r->count[k] * sizeof(float));
    }
    return c;
}

static void free_bufs(float **c)
{
    for (size_t k = 0; k < BUFS; k++) free(c[k]);
    free(c);
}

enum { K = 7, J = 3 };

/* _i: bit 0 SGD, bit 1 per-tensor scope, bit 2 save while perturbed. */
START_TEST(test_lora_resume)
{
    mgpo_config cfg = fx_config((_i & 1) ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW,
                                (_i & 2) ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL,
                                MGPO_RESTORE_EXACT);
    int perturbed = (_i & 4) != 0;
    lora_run a, b;
    ck_assert_int_eq(run_init(&a, &cfg), MGPO_OK);
    for (uint64_t t = 0; t < J; t++) iterate(&a, t);
    float **clean = copy_bufs(&a), **saved = NULL;
    ck_assert_int_eq(mgpo_set_lr(a.st, fx_lr(J)), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    grads(&a, J);
    size_t size = 0;
    unsigned char *ck = NULL;
    if (perturbed) {
        ck = fx_save(a.st, &size);
        saved = copy_bufs(&a);
        /* W of the base pair is perturbed and its clean copy is saved. */
        ck_assert(memcmp(saved[5], clean[5], sizeof(float) * OUT * IN) != 0);
    }
    ck_assert_int_eq(mgpo_step(a.st), MGPO_OK);
    if (!perturbed) {
        ck = fx_save(a.st, &size);
        saved = copy_bufs(&a);
    }
    for (uint64_t t = J + 1; t < K; t++) iterate(&a, t);

    ck_assert_int_eq(run_init(&b, &cfg), MGPO_OK);
    iterate(&b, 0);
    ck_assert_int_eq(mgpo_load(b.st, ck, size), MGPO_OK);
    for (size_t k = 0; k < BUFS; k++) memcpy(b.buf[k], saved[k], b.count[k] * sizeof(float));
    if (perturbed) {
        grads(&b, J);
        ck_assert_int_eq(mgpo_step(b.st), MGPO_OK);
    }
    for (uint64_t t = J + 1; t < K; t++) iterate(&b, t);
    for (size_t k = 0; k < BUFS; k++)
        ck_assert_mem_eq(a.buf[k], b.buf[k], a.count[k] * sizeof(float));
    size_t n = 0;
    unsigned char *end = fx_save(a.st, &n);
    ck_assert(fx_state_is(b.st, end, n));

    if (perturbed) {
        /* The same checkpoint in version 2 (the float32 format before
         * mixed precision) loads to the same state: pair records of 64
         * bytes, the W backup in floats. */
        size_t n2 = 0;
        unsigned char *v2 = fx_downgrade_v2(ck, size, &n2);
        ck_assert_ptr_nonnull(v2);
        ck_assert_uint_lt(n2, size);
        ck_assert_int_eq(mgpo_load(b.st, v2, n2), MGPO_OK);
        ck_assert(fx_state_is(b.st, ck, size));
        free(v2);
        /* A restore right after loading gives the clean W and A, B exactly. */
        lora_run c;
        ck_assert_int_eq(run_init(&c, &cfg), MGPO_OK);
        ck_assert_int_eq(mgpo_load(c.st, ck, size), MGPO_OK);
        for (size_t k = 0; k < BUFS; k++) memcpy(c.buf[k], saved[k], c.count[k] * sizeof(float));
        ck_assert_int_eq(mgpo_restore(c.st), MGPO_OK);
        for (size_t k = 0; k < BUFS; k++)
            ck_assert_mem_eq(c.buf[k], clean[k], c.count[k] * sizeof(float));
        run_free(&c);
    }
    free(end);
    free(ck);
    free_bufs(clean);
    free_bufs(saved);
    run_free(&a);
    run_free(&b);
}
END_TEST

/* The checkpoint holds 4 bytes per W element while the base pair is
 * perturbed, and a pair must match in shape, scaling and mode. */
START_TEST(test_lora_layout)
{
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_TENSOR, MGPO_RESTORE_EXACT);
    lora_run a;
    ck_assert_int_eq(run_init(&a, &cfg), MGPO_OK);
    for (uint64_t t = 0; t < 2; t++) iterate(&a, t);
    size_t clean_size = 0, size = 0;
    ck_assert_int_eq(mgpo_checkpoint_size(a.st, &clean_size), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    unsigned char *ck = fx_save(a.st, &size);
    /* Backups: tensor and the adapter pair's A and B; W for the base pair. */
    ck_assert_uint_eq(size - clean_size, 4 * (N_T + R * IN + OUT * R + OUT * IN));

    for (int variant = 0; variant < 4; variant++) {
        lora_run o;
        memset(&o, 0, sizeof o);
        const size_t counts[BUFS] = {N_T, R * IN, OUT * R, R * IN, OUT * R, OUT * IN};
        for (size_t k = 0; k < BUFS; k++) {
            o.count[k] = counts[k];
            o.buf[k] = calloc(counts[k] + 8, sizeof(float));
            o.grad[k] = calloc(counts[k] + 8, sizeof(float));
        }
        ck_assert_int_eq(mgpo_create(&o.st, &cfg, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_tensor(o.st, o.buf[0], o.grad[0], N_T, NULL, NULL), MGPO_OK);
        mgpo_lora_pair p1 = pair_of(&o, 1, 0), p2 = pair_of(&o, 3, 1);
        if (variant == 0) p1.scaling = 4.0;
        if (variant == 1) { p1.rank = 1; p1.n_in = 2 * IN; }
        if (variant == 2) { p2.mode = MGPO_LORA_ADAPTER; p2.base_weight = NULL; }
        if (variant == 3) { p1.n_out = OUT + 1; p1.n_in = IN - 1; }
        ck_assert_int_eq(mgpo_add_lora_pair(o.st, &p1, NULL, NULL), MGPO_OK);
        ck_assert_int_eq(mgpo_add_lora_pair(o.st, &p2, NULL, NULL), MGPO_OK);
        size_t n = 0;
        unsigned char *snap = fx_save(o.st, &n);
        ck_assert_int_eq(mgpo_load(o.st, ck, size), MGPO_ERR_CHECKPOINT_LAYOUT);
        ck_assert(fx_state_is(o.st, snap, n));
        free(snap);
        run_free(&o);
    }
    /* A W coefficient on the adapter pair (item 1) is refused. */
    const size_t item1 = MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE + 3 * MGPO_CKPT_UNIT_SIZE +
                         MGPO_CKPT_ITEM_SIZE + MGPO_CKPT_ITEM_OFF_BASE_APPLIED;
    unsigned char *bad = malloc(size);
    memcpy(bad, ck, size);
    float one = 1.0f;
    fx_store_le(bad + item1, &one, sizeof one);
    fx_reseal(bad, size);
    size_t n = 0;
    unsigned char *snap = fx_save(a.st, &n);
    ck_assert_int_eq(mgpo_load(a.st, bad, size), MGPO_ERR_CHECKPOINT_LAYOUT);
    ck_assert(fx_state_is(a.st, snap, n));
    free(snap);
    free(bad);
    free(ck);
    run_free(&a);
}
END_TEST

/* Random corruptions of a checkpoint holding pairs and a W backup: each is
 * refused without a trace or accepted as exactly its bytes; the caller's
 * buffers (A, B, W) are never touched. */
START_TEST(test_lora_corruption)
{
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_TENSOR, MGPO_RESTORE_EXACT);
    lora_run a;
    ck_assert_int_eq(run_init(&a, &cfg), MGPO_OK);
    for (uint64_t t = 0; t < 2; t++) iterate(&a, t);
    ck_assert_int_eq(mgpo_perturb(a.st), MGPO_OK);
    size_t size = 0;
    unsigned char *ck = fx_save(a.st, &size);
    float **before = copy_bufs(&a);
    unsigned seen[FX_CODES] = {0};
    int bad = fx_corrupt_rounds(a.st, ck, size, 3000, 0x10AA, seen, NULL, NULL);
    ck_assert_msg(bad < 0, "round %d failed", bad);
    ck_assert_uint_gt(seen[MGPO_OK], 0);
    ck_assert_uint_gt(seen[MGPO_ERR_CHECKPOINT_LAYOUT], 0);
    for (size_t k = 0; k < BUFS; k++)
        ck_assert_mem_eq(before[k], a.buf[k], a.count[k] * sizeof(float));
    free_bufs(before);
    free(ck);
    run_free(&a);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("checkpoint_lora");
    TCase *tc = tcase_create("lora");
    tcase_add_loop_test(tc, test_lora_resume, 0, 8);
    tcase_add_test(tc, test_lora_layout);
    tcase_add_test(tc, test_lora_corruption);
    suite_add_tcase(su, tc);
    return tu_run_suite(su);
}
