/* External optimizer mode (issue 13).
 *
 * The equivalence: an external-mode state E perturbing along the moments of
 * "the caller's optimizer", played by libmgpo's own rho = 0 state I (its
 * moments copied out with mgpo_get_moments after every step and attached to
 * E), must give bit for bit the parameters, moments, gamma, gbar and
 * coefficients of one integrated MGPO state M, over 60 steps with a
 * non-finite gradient in the middle, for AdamW and SGD, both scopes, exact
 * and low-memory restore, both signs, a LoRA pair in adapter and in base
 * mode, and the momentum attached from the start or after the first step
 * (as torch creates exp_avg).  Then: checkpoints (no m/v, resume bitwise),
 * mgpo_get_moments against the state's own buffers, and the errors. */
#include <math.h>
#include <stdio.h>

#include "ckpt_fixture.h"
#include "perf_model.h"
#include "test_util.h"
#include "checkpoint_format.h"

#define NT 3
static const size_t tensor_sizes[NT] = {MGPO_BLOCK_FLOATS + 9, 7, 1000};
#define RANK 2
#define N_IN 7
#define N_OUT 5
#define RA (RANK * N_IN)
#define RB (N_OUT * RANK)
#define RW (N_OUT * N_IN)
#define PAIR NT /* the pair's item index */
static const double lora_scaling = 0.75;
#define STEPS 60
#define NAN_STEP 23

/* An adapter W + s*B*A fitted to a target: L = 0.5*||W_eff - T||^2. */
typedef struct lora_bufs {
    float a[RA], b[RB], w[RW], ga[RA], gb[RB];
} lora_bufs;

static void lora_init(lora_bufs *l)
{
    for (size_t i = 0; i < RA; i++) l->a[i] = 0.3f * pm_noise(10, 0, i);
    for (size_t i = 0; i < RB; i++) l->b[i] = 0.3f * pm_noise(10, 1, i);
    for (size_t i = 0; i < RW; i++) l->w[i] = pm_noise(10, 2, i);
}

/* G = W + s*B*A - T at the current (possibly perturbed) A, B and W;
 * g_A = s*B^T*G, g_B = s*G*A^T, in double, rounded once. */
static void lora_grads(lora_bufs *l, uint64_t step)
{
    double g[N_OUT][N_IN];
    for (size_t i = 0; i < N_OUT; i++)
        for (size_t j = 0; j < N_IN; j++) {
            double ba = 0.0;
            for (size_t k = 0; k < RANK; k++) ba += (double)l->b[i * RANK + k] * l->a[k * N_IN + j];
            g[i][j] = l->w[i * N_IN + j] + lora_scaling * ba - pm_noise(11, step % 3, i * N_IN + j);
        }
    for (size_t k = 0; k < RANK; k++)
        for (size_t j = 0; j < N_IN; j++) {
            double s = 0.0;
            for (size_t i = 0; i < N_OUT; i++) s += (double)l->b[i * RANK + k] * g[i][j];
            l->ga[k * N_IN + j] = (float)(lora_scaling * s);
        }
    for (size_t i = 0; i < N_OUT; i++)
        for (size_t k = 0; k < RANK; k++) {
            double s = 0.0;
            for (size_t j = 0; j < N_IN; j++) s += g[i][j] * (double)l->a[k * N_IN + j];
            l->gb[i * RANK + k] = (float)(lora_scaling * s);
        }
}

static void add_pair(mgpo_state *st, lora_bufs *l, mgpo_lora_mode mode)
{
    mgpo_lora_pair p = {l->a, l->ga, l->b, l->gb, mode == MGPO_LORA_BASE ? l->w : NULL,
                        RANK, N_IN, N_OUT, lora_scaling, mode};
    size_t index = 0;
    ck_assert_int_eq(mgpo_add_lora_pair(st, &p, NULL, &index), MGPO_OK);
    ck_assert_uint_eq(index, PAIR);
}

/* One training run: an integrated state, or an external state plus the
 * rho = 0 state that plays the caller's optimizer and the momentum buffers
 * that the "caller" exposes to the external state. */
typedef struct run {
    pm_model md;
    lora_bufs l;
    mgpo_state *st, *inner; /* inner: NULL for an integrated run */
    float *mom[NT];
    float mom_pair[RA + RB];
    bool attach_late;
    unsigned clipped; /* steps the integrated state clipped */
} run;

static mgpo_config external_config(const mgpo_config *cfg)
{
    mgpo_config e = *cfg;
    e.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL;
    e.max_grad_norm = 0.0; /* the caller's optimizer clips */
    return e;
}

static void attach(run *r)
{
    for (size_t t = 0; t < NT; t++) ck_assert_int_eq(mgpo_set_momentum(r->st, t, r->mom[t]), MGPO_OK);
    ck_assert_int_eq(mgpo_set_lora_momentum(r->st, PAIR, r->mom_pair, r->mom_pair + RA), MGPO_OK);
}

static void run_init(run *r, const mgpo_config *cfg, bool external, mgpo_lora_mode mode,
                     bool attach_late)
{
    memset(r, 0, sizeof *r);
    pm_init(&r->md, tensor_sizes, NT, 0);
    lora_init(&r->l);
    mgpo_config c = external ? external_config(cfg) : *cfg;
    ck_assert_int_eq(mgpo_create(&r->st, &c, NULL), MGPO_OK);
    pm_register(&r->md, r->st);
    add_pair(r->st, &r->l, mode);
    if (!external) return;
    mgpo_config inner = *cfg;
    inner.rho = 0.0;
    ck_assert_int_eq(mgpo_create(&r->inner, &inner, NULL), MGPO_OK);
    pm_register(&r->md, r->inner);
    add_pair(r->inner, &r->l, MGPO_LORA_ADAPTER); /* rho 0: never perturbs W */
    for (size_t t = 0; t < NT; t++) {
        r->mom[t] = calloc(tensor_sizes[t], sizeof(float));
        ck_assert_ptr_nonnull(r->mom[t]);
    }
    r->attach_late = attach_late;
    if (!attach_late) attach(r); /* zeros: a degenerate unit until the first step */
}

static void run_free(run *r)
{
    mgpo_destroy(r->st);
    mgpo_destroy(r->inner);
    for (size_t t = 0; t < NT; t++) free(r->mom[t]);
    pm_free(&r->md, 0);
}

/* The caller's optimizer state, as exposed to the external registration. */
static void copy_moments(run *r)
{
    for (size_t t = 0; t < NT; t++)
        ck_assert_int_eq(mgpo_get_moments(r->inner, t, MGPO_MOMENT_FIRST, r->mom[t], tensor_sizes[t]),
                         MGPO_OK);
    ck_assert_int_eq(mgpo_get_moments(r->inner, PAIR, MGPO_MOMENT_FIRST, r->mom_pair, RA + RB),
                     MGPO_OK);
}

static double lr_at(uint64_t k) { return 0.02 * (double)(1 + k % 5) / 5.0; }

/* Up to the backward pass: lr, perturb, gradients at the perturbed point. */
static void iterate_front(run *r, uint64_t k)
{
    ck_assert_int_eq(mgpo_set_lr(r->inner ? r->inner : r->st, lr_at(k)), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(r->st), MGPO_OK);
    pm_gradients(&r->md, k);
    lora_grads(&r->l, k);
    if (k == NAN_STEP) r->md.grads[2][5] = NAN;
}

/* mgpo_step, then (external) the caller's step unless it must skip. */
static void iterate_back(run *r, uint64_t k)
{
    mgpo_status want = k == NAN_STEP ? MGPO_ERR_NONFINITE_GRADIENT : MGPO_OK;
    ck_assert_int_eq(mgpo_step(r->st), want);
    if (!r->inner) {
        mgpo_stats stats;
        ck_assert_int_eq(mgpo_get_stats(r->st, &stats), MGPO_OK);
        r->clipped += want == MGPO_OK && stats.clipped;
        return;
    }
    if (want != MGPO_OK) return;
    ck_assert_int_eq(mgpo_step(r->inner), MGPO_OK);
    if (r->attach_late && k == 0) attach(r); /* torch: exp_avg exists after step 1 */
    copy_moments(r);
}

static void assert_floats_bits(const float *a, const float *b, size_t n, const char *what)
{
    ck_assert_msg(memcmp(a, b, n * sizeof *a) == 0, "%s differs", what);
}

static void assert_runs_equal(const run *m, const run *e)
{
    for (size_t t = 0; t < NT; t++) {
        assert_floats_bits(m->md.params[t], e->md.params[t], tensor_sizes[t], "params");
        size_t n = tensor_sizes[t];
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        ck_assert_int_eq(mgpo_get_moments(m->st, t, MGPO_MOMENT_FIRST, x, n), MGPO_OK);
        ck_assert_int_eq(mgpo_get_moments(e->inner, t, MGPO_MOMENT_FIRST, y, n), MGPO_OK);
        assert_floats_bits(x, y, n, "m");
        free(x);
        free(y);
    }
    assert_floats_bits(m->l.a, e->l.a, RA, "A");
    assert_floats_bits(m->l.b, e->l.b, RB, "B");
    assert_floats_bits(m->l.w, e->l.w, RW, "W");
    size_t units = 0, e_units = 0;
    ck_assert_int_eq(mgpo_get_unit_count(m->st, &units), MGPO_OK);
    ck_assert_int_eq(mgpo_get_unit_count(e->st, &e_units), MGPO_OK);
    ck_assert_uint_eq(units, e_units);
    for (size_t u = 0; u < units; u++) {
        mgpo_unit_stats a, b;
        ck_assert_int_eq(mgpo_get_unit_stats(m->st, u, &a), MGPO_OK);
        ck_assert_int_eq(mgpo_get_unit_stats(e->st, u, &b), MGPO_OK);
        ck_assert_msg(memcmp(&a, &b, sizeof a) == 0, "unit %zu: gamma/gbar/c differ", u);
    }
    mgpo_stats a, b;
    ck_assert_int_eq(mgpo_get_stats(m->st, &a), MGPO_OK);
    ck_assert_int_eq(mgpo_get_stats(e->st, &b), MGPO_OK);
    ck_assert_uint_eq(a.step, b.step);
    ck_assert_uint_eq(a.skipped_steps, 1);
    ck_assert_uint_eq(b.skipped_steps, 1);
    ck_assert(a.grad_norm == b.grad_norm && a.grad_norm_ema == b.grad_norm_ema);
    ck_assert(a.perturbation_norm == b.perturbation_norm && a.perturbation_norm > 0.0);
}

/* Bit i: 0 SGD, 1 tensor scope, 2 low-memory restore, 3 base-mode pair,
 * 4 ascent, 5 momentum attached after the first step; 4 and 5: two threads. */
static mgpo_config combo_config(int i)
{
    mgpo_config c = mgpo_config_default();
    c.optimizer = (i & 1) ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW;
    c.scope = (i & 2) ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
    c.restore_mode = (i & 4) ? MGPO_RESTORE_LOW_MEMORY : MGPO_RESTORE_EXACT;
    c.sign = (i & 16) ? MGPO_SIGN_ASCENT : MGPO_SIGN_LOOKAHEAD;
    c.weight_decay = 0.01;
    c.rho = 0.2;
    c.nesterov = (i & 1) && (i & 8);
    c.max_grad_norm = (i & 2) ? 40.0 : 0.0; /* clips now and then (the caller's clip) */
    c.num_threads = (i & 48) == 48 ? 2 : 1; /* worker threads, with OpenMP */
    return c;
}

START_TEST(test_external_equals_integrated)
{
    mgpo_config cfg = combo_config(_i);
    mgpo_lora_mode mode = (_i & 8) ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER;
    run m, e;
    run_init(&m, &cfg, false, mode, false);
    run_init(&e, &cfg, true, mode, (_i & 32) != 0);
    for (uint64_t k = 0; k < STEPS; k++) {
        iterate_front(&m, k);
        iterate_front(&e, k);
        iterate_back(&m, k);
        iterate_back(&e, k);
    }
    assert_runs_equal(&m, &e);
    if (cfg.max_grad_norm > 0.0) ck_assert(m.clipped > 0 && m.clipped < STEPS - 1);
    /* The run moved: not a comparison of two untouched models. */
    ck_assert(m.md.params[0][0] != 0.5f * pm_noise(1, 0, 0));
    run_free(&m);
    run_free(&e);
}
END_TEST

/* Perturbed runs really differ from plain AdamW/SGD: the comparison above
 * would catch a perturbation that is skipped or computed wrongly. */
START_TEST(test_external_perturbation_matters)
{
    mgpo_config cfg = combo_config(0), plain = cfg;
    plain.rho = 0.0;
    run a, b;
    run_init(&a, &cfg, true, MGPO_LORA_ADAPTER, false);
    run_init(&b, &plain, false, MGPO_LORA_ADAPTER, false);
    for (uint64_t k = 0; k < 10; k++) {
        iterate_front(&a, k);
        iterate_front(&b, k);
        iterate_back(&a, k);
        iterate_back(&b, k);
    }
    ck_assert(memcmp(a.md.params[0], b.md.params[0], tensor_sizes[0] * sizeof(float)) != 0);
    ck_assert(memcmp(a.l.a, b.l.a, sizeof a.l.a) != 0);
    run_free(&a);
    run_free(&b);
}
END_TEST

/* The step writes neither parameters nor the attached momentum, and
 * without attached momentum nothing is perturbed, whatever t is. */
START_TEST(test_external_step_touches_nothing)
{
    mgpo_config base = mgpo_config_default();
    mgpo_config cfg = external_config(&base);
    run r;
    memset(&r, 0, sizeof r);
    pm_init(&r.md, tensor_sizes, NT, 0);
    ck_assert_int_eq(mgpo_create(&r.st, &cfg, NULL), MGPO_OK);
    pm_register(&r.md, r.st);
    float *before = malloc(tensor_sizes[0] * sizeof(float));
    memcpy(before, r.md.params[0], tensor_sizes[0] * sizeof(float));
    for (uint64_t k = 0; k < 3; k++) {
        ck_assert_int_eq(mgpo_perturb(r.st), MGPO_OK);
        int perturbed = 1;
        ck_assert_int_eq(mgpo_is_perturbed(r.st, &perturbed), MGPO_OK);
        ck_assert_int_eq(perturbed, 0);
        pm_gradients(&r.md, k);
        ck_assert_int_eq(mgpo_step(r.st), MGPO_OK);
    }
    assert_floats_bits(before, r.md.params[0], tensor_sizes[0], "params after steps");
    mgpo_stats s;
    ck_assert_int_eq(mgpo_get_stats(r.st, &s), MGPO_OK);
    ck_assert_uint_eq(s.step, 3);
    ck_assert(s.grad_norm > 0.0 && s.grad_norm_ema > 0.0 && s.clipped == 0);
    /* Attach a momentum; perturb moves params, step restores them bitwise. */
    float *m = malloc(tensor_sizes[0] * sizeof(float)), *m_copy = malloc(tensor_sizes[0] * sizeof(float));
    tu_fill(m, tensor_sizes[0], 7, -1.0f, 1.0f);
    memcpy(m_copy, m, tensor_sizes[0] * sizeof(float));
    ck_assert_int_eq(mgpo_set_momentum(r.st, 0, m), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(r.st), MGPO_OK);
    ck_assert(memcmp(before, r.md.params[0], tensor_sizes[0] * sizeof(float)) != 0);
    ck_assert_int_eq(mgpo_set_momentum(r.st, 0, NULL), MGPO_ERR_WRONG_PHASE);
    ck_assert_int_eq(mgpo_step(r.st), MGPO_OK);
    assert_floats_bits(before, r.md.params[0], tensor_sizes[0], "params after restore");
    assert_floats_bits(m_copy, m, tensor_sizes[0], "momentum");
    /* A non-finite gradient: restored, not counted, the caller must skip. */
    ck_assert_int_eq(mgpo_perturb(r.st), MGPO_OK);
    r.md.grads[0][1] = INFINITY;
    ck_assert_int_eq(mgpo_step(r.st), MGPO_ERR_NONFINITE_GRADIENT);
    assert_floats_bits(before, r.md.params[0], tensor_sizes[0], "params after skipped step");
    ck_assert_int_eq(mgpo_get_stats(r.st, &s), MGPO_OK);
    ck_assert_uint_eq(s.step, 4);
    ck_assert_uint_eq(s.skipped_steps, 1);
    free(before);
    free(m);
    free(m_copy);
    mgpo_destroy(r.st);
    pm_free(&r.md, 0);
}
END_TEST

/* The authors' rule: a momentum that exists is followed, also at t = 0
 * (e.g. a torch optimizer resumed into a fresh state); gbar unset gives
 * s = 1, so c = sign * rho / (||m|| + eps_n). */
START_TEST(test_external_perturbs_at_step_zero)
{
    mgpo_config base = mgpo_config_default();
    mgpo_config cfg = external_config(&base);
    float p[5] = {1, 2, 3, 4, 5}, g[5] = {0}, m[5] = {3, 0, 0, 4, 0};
    mgpo_state *st = NULL;
    ck_assert_int_eq(mgpo_create(&st, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, 5, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, m), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(st), MGPO_OK);
    mgpo_unit_stats u;
    ck_assert_int_eq(mgpo_get_unit_stats(st, 0, &u), MGPO_OK);
    ck_assert(u.momentum_norm == 5.0 && u.scale == 1.0);
    ck_assert(u.coefficient == -0.05 / (5.0 + 1e-12));
    float c = (float)u.coefficient;
    ck_assert(p[0] == 1.0f + c * 3.0f && p[3] == 4.0f + c * 4.0f && p[1] == 2.0f);
    ck_assert_int_eq(mgpo_restore(st), MGPO_OK);
    ck_assert(p[0] == 1.0f && p[3] == 4.0f);
    mgpo_destroy(st);
}
END_TEST

/* ---- Checkpoints ------------------------------------------------------------ */

static size_t record_bytes(const mgpo_state *st)
{
    size_t units = 0, items = 0;
    ck_assert_int_eq(mgpo_get_unit_count(st, &units), MGPO_OK);
    ck_assert_int_eq(mgpo_get_tensor_count(st, &items), MGPO_OK);
    return MGPO_CKPT_HEADER_SIZE + MGPO_CKPT_STATE_SIZE + units * MGPO_CKPT_UNIT_SIZE +
           items * MGPO_CKPT_ITEM_SIZE + (items + 1) * MGPO_CKPT_SLOT_SIZE;
}

/* What the caller saves: both states and its parameter buffers (into
 * `saved`).  Returns the external state's checkpoint. */
static unsigned char *save_run(const run *a, run *saved, size_t *size, unsigned char **inner_ck,
                               size_t *inner_size)
{
    unsigned char *ck = fx_save(a->st, size);
    *inner_ck = fx_save(a->inner, inner_size);
    for (size_t t = 0; t < NT; t++)
        memcpy(saved->md.params[t], a->md.params[t], tensor_sizes[t] * sizeof(float));
    saved->l = a->l;
    return ck;
}

/* Saved at iteration 5, perturbed (_i & 1: clean, after the step), then
 * resumed into fresh states: the caller restores its parameters and its
 * optimizer (here the inner state's checkpoint, whose moments are then
 * exposed again), attaches the momentum, loads; the run continues bitwise. */
START_TEST(test_external_resume_bitwise)
{
    const bool clean = _i & 1;
    mgpo_config cfg = combo_config((_i & 2) ? 2 : 0);
    mgpo_lora_mode mode = (_i & 4) ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER;
    const uint64_t save_at = 5, steps = 12;
    run a, b;
    run_init(&a, &cfg, true, mode, false);
    run_init(&b, &cfg, true, mode, false);
    unsigned char *ck = NULL, *inner_ck = NULL;
    size_t size = 0, inner_size = 0;
    run saved;
    memset(&saved, 0, sizeof saved);
    pm_init(&saved.md, tensor_sizes, NT, 0);
    for (uint64_t k = 0; k < steps; k++) {
        iterate_front(&a, k);
        if (k == save_at && !clean) {
            ck = save_run(&a, &saved, &size, &inner_ck, &inner_size);
            /* Perturbed in exact mode: the clean values of every perturbed
             * parameter travel in the checkpoint, and no m or v. */
            size_t perturbed_floats = tensor_sizes[0] + tensor_sizes[2] +
                                      (mode == MGPO_LORA_BASE ? RW : RA + RB);
            ck_assert_uint_eq(size, record_bytes(a.st) + 4 * perturbed_floats);
        }
        iterate_back(&a, k);
        if (k == save_at && clean) {
            ck = save_run(&a, &saved, &size, &inner_ck, &inner_size);
            ck_assert_uint_eq(size, record_bytes(a.st));
        }
    }
    ck_assert_ptr_nonnull(ck);
    /* b: a fresh pair of states that has itself trained a little. */
    for (uint64_t k = 0; k < 3; k++) {
        iterate_front(&b, k);
        iterate_back(&b, k);
    }
    for (size_t t = 0; t < NT; t++)
        memcpy(b.md.params[t], saved.md.params[t], tensor_sizes[t] * sizeof(float));
    memcpy(b.l.a, saved.l.a, sizeof b.l.a);
    memcpy(b.l.b, saved.l.b, sizeof b.l.b);
    memcpy(b.l.w, saved.l.w, sizeof b.l.w);
    ck_assert_int_eq(mgpo_load(b.inner, inner_ck, inner_size), MGPO_OK);
    copy_moments(&b);
    ck_assert_int_eq(mgpo_load(b.st, ck, size), MGPO_OK);
    ck_assert(fx_state_is(b.st, ck, size));
    uint64_t k = save_at;
    if (!clean) {
        pm_gradients(&b.md, k);
        lora_grads(&b.l, k);
        iterate_back(&b, k);
    }
    for (k = save_at + 1; k < steps; k++) {
        iterate_front(&b, k);
        iterate_back(&b, k);
    }
    for (size_t t = 0; t < NT; t++)
        assert_floats_bits(a.md.params[t], b.md.params[t], tensor_sizes[t], "resumed params");
    assert_floats_bits(a.l.a, b.l.a, RA, "resumed A");
    assert_floats_bits(a.l.b, b.l.b, RB, "resumed B");
    assert_floats_bits(a.l.w, b.l.w, RW, "resumed W");
    size_t end_size = 0;
    unsigned char *end = fx_save(a.st, &end_size);
    ck_assert(fx_state_is(b.st, end, end_size));
    free(end);
    free(ck);
    free(inner_ck);
    pm_free(&saved.md, 0);
    run_free(&a);
    run_free(&b);
}
END_TEST

/* External and integrated checkpoints do not load into each other (for
 * SGD, _i = 1, only the slot records' external bit tells them apart), and
 * a perturbed checkpoint needs the momentum attached before the load. */
START_TEST(test_external_checkpoint_layout)
{
    mgpo_config cfg = combo_config(_i);
    run e, m, fresh;
    run_init(&e, &cfg, true, MGPO_LORA_ADAPTER, false);
    run_init(&m, &cfg, false, MGPO_LORA_ADAPTER, false);
    run_init(&fresh, &cfg, true, MGPO_LORA_ADAPTER, true); /* nothing attached */
    for (uint64_t k = 0; k < 3; k++) {
        iterate_front(&e, k);
        iterate_front(&m, k);
        iterate_back(&e, k);
        iterate_back(&m, k);
    }
    ck_assert_int_eq(mgpo_perturb(e.st), MGPO_OK);
    size_t es = 0, ms = 0;
    unsigned char *eck = fx_save(e.st, &es), *mck = fx_save(m.st, &ms);
    ck_assert_int_eq(mgpo_load(m.st, eck, es), MGPO_ERR_CHECKPOINT_LAYOUT);
    ck_assert_int_eq(mgpo_load(fresh.st, mck, ms), MGPO_ERR_CHECKPOINT_LAYOUT);
    ck_assert_int_eq(mgpo_load(fresh.st, eck, es), MGPO_ERR_CHECKPOINT_LAYOUT);
    attach(&fresh);
    ck_assert_int_eq(mgpo_load(fresh.st, eck, es), MGPO_OK);
    ck_assert(fx_state_is(fresh.st, eck, es));
    free(eck);
    free(mck);
    run_free(&e);
    run_free(&m);
    run_free(&fresh);
}
END_TEST

/* ---- Reading the integrated mode's moments ---------------------------------- */

START_TEST(test_get_moments)
{
    mgpo_config cfg = combo_config(_i ? 1 : 0);
    run r;
    run_init(&r, &cfg, false, MGPO_LORA_ADAPTER, false);
    for (uint64_t k = 0; k < 4; k++) {
        iterate_front(&r, k);
        iterate_back(&r, k);
    }
    ck_assert_int_eq(mgpo_perturb(r.st), MGPO_OK); /* moments readable while perturbed */
    size_t n = tensor_sizes[0];
    float *x = malloc((n + 1) * sizeof *x);
    for (int which = 0; which < 2; which++) {
        const float *own = mgpo_internal_moment(r.st, 0, which);
        if (_i && which == 1) {
            ck_assert_ptr_null(own);
            memset(x, 0x5A, n * sizeof *x);
            ck_assert_int_eq(mgpo_get_moments(r.st, 0, MGPO_MOMENT_SECOND, x, n),
                             MGPO_ERR_INVALID_ARGUMENT);
            ck_assert_uint_eq(*(const unsigned char *)x, 0x5A);
            continue;
        }
        ck_assert_int_eq(mgpo_get_moments(r.st, 0, (mgpo_moment)which, x, n), MGPO_OK);
        assert_floats_bits(own, x, n, "copied moment");
        ck_assert(tu_sum_sq(x, n) > 0.0);
    }
    /* A pair: A's moment, then B's. */
    float pair[RA + RB];
    ck_assert_int_eq(mgpo_get_moments(r.st, PAIR, MGPO_MOMENT_FIRST, pair, RA + RB), MGPO_OK);
    const mgpo_slot *sa = &r.st->slots[r.st->items[PAIR].first_slot];
    assert_floats_bits(sa->m, pair, RA, "pair m_A");
    assert_floats_bits(sa[1].m, pair + RA, RB, "pair m_B");
    /* Errors, each leaving dst untouched. */
    memset(x, 0x5A, (n + 1) * sizeof *x);
    ck_assert_int_eq(mgpo_get_moments(r.st, 0, MGPO_MOMENT_FIRST, x, n + 1), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_get_moments(r.st, 0, MGPO_MOMENT_FIRST, x, n - 1), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_get_moments(r.st, PAIR, MGPO_MOMENT_FIRST, x, RA), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_get_moments(r.st, PAIR + 1, MGPO_MOMENT_FIRST, x, n), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_get_moments(r.st, 0, (mgpo_moment)2, x, n), MGPO_ERR_BAD_ENUM);
    ck_assert_int_eq(mgpo_get_moments(r.st, 0, (mgpo_moment)-1, x, n), MGPO_ERR_BAD_ENUM);
    ck_assert_int_eq(mgpo_get_moments(NULL, 0, MGPO_MOMENT_FIRST, x, n), MGPO_ERR_NULL_ARGUMENT);
    ck_assert_int_eq(mgpo_get_moments(r.st, 0, MGPO_MOMENT_FIRST, NULL, n), MGPO_ERR_NULL_ARGUMENT);
    for (size_t i = 0; i < (n + 1) * sizeof *x; i++)
        ck_assert_uint_eq(((const unsigned char *)x)[i], 0x5A);
    free(x);
    run_free(&r);
}
END_TEST

/* ---- Errors of the external registration ------------------------------------ */

START_TEST(test_external_errors)
{
    mgpo_config cfg = combo_config(0);
    run e, m;
    run_init(&e, &cfg, true, MGPO_LORA_ADAPTER, true);
    run_init(&m, &cfg, false, MGPO_LORA_ADAPTER, false);
    float *mom = e.mom[0];
    /* Not an external state; wrong kind of item; no such item. */
    ck_assert_int_eq(mgpo_set_momentum(m.st, 0, mom), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_lora_momentum(m.st, PAIR, e.mom_pair, e.mom_pair + RA),
                     MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_momentum(e.st, PAIR, mom), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_lora_momentum(e.st, 0, e.mom_pair, e.mom_pair + RA),
                     MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_momentum(e.st, PAIR + 1, mom), MGPO_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(mgpo_set_momentum(NULL, 0, mom), MGPO_ERR_NULL_ARGUMENT);
    ck_assert_int_eq(mgpo_set_lora_momentum(NULL, PAIR, NULL, NULL), MGPO_ERR_NULL_ARGUMENT);
    /* Overlaps with anything the library writes, and with a gradient (the
     * backward pass rewrites it between perturb and the restore, issue 20). */
    ck_assert_int_eq(mgpo_set_momentum(e.st, 0, e.md.params[0] + 1), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_lora_momentum(e.st, PAIR, e.mom_pair, e.l.a), MGPO_ERR_OVERLAP);
    ck_assert_int_eq(mgpo_set_momentum(e.st, 1, e.md.grads[1]), MGPO_ERR_OVERLAP);
    /* Reading moments of an external state: it holds none. */
    ck_assert_int_eq(mgpo_get_moments(e.st, 0, MGPO_MOMENT_FIRST, mom, tensor_sizes[0]),
                     MGPO_ERR_INVALID_ARGUMENT);
    /* Configuration: the caller clips; unknown modes. */
    mgpo_config bad = external_config(&cfg);
    bad.max_grad_norm = 1.0;
    ck_assert_int_eq(mgpo_config_validate(&bad), MGPO_ERR_BAD_CLIP);
    bad.max_grad_norm = 0.0;
    bad.optimizer_mode = (mgpo_optimizer_mode)2;
    ck_assert_int_eq(mgpo_config_validate(&bad), MGPO_ERR_BAD_ENUM);
    /* A registration may not overlap an attached momentum either. */
    mgpo_state *st = NULL;
    mgpo_config ext = external_config(&cfg);
    float p[8] = {0}, g[8] = {0}, m8[8] = {0};
    ck_assert_int_eq(mgpo_create(&st, &ext, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, p, g, 4, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_set_momentum(st, 0, m8), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(st, m8 + 2, NULL, 4, NULL, NULL), MGPO_ERR_OVERLAP);
    mgpo_destroy(st);
    run_free(&e);
    run_free(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("external");
    TCase *tc = tcase_create("external");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_external_equals_integrated, 0, 64);
    tcase_add_test(tc, test_external_perturbation_matters);
    tcase_add_test(tc, test_external_step_touches_nothing);
    tcase_add_test(tc, test_external_perturbs_at_step_zero);
    tcase_add_loop_test(tc, test_external_resume_bitwise, 0, 8);
    tcase_add_loop_test(tc, test_external_checkpoint_layout, 0, 2);
    tcase_add_loop_test(tc, test_get_moments, 0, 2);
    tcase_add_test(tc, test_external_errors);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
