/* Stateful libFuzzer target over the whole public API (issue 15, section
 * 5; built with -DMGPO_BUILD_FUZZ=ON and clang, run by .ci/fuzz.sh; also
 * compiled without libFuzzer into fuzz_api_replay, which runs the committed
 * corpus tests/fuzz/corpus-api in every build).
 *
 * The input is a program: one opcode byte, then that call's arguments taken
 * from the following bytes (zeros once the input ends).  Configurations get
 * extreme doubles, registrations take offsets into one parameter pool (so
 * buffers may overlap or be odd), tensors and LoRA pairs may have bf16/fp16
 * parameters (master weights), gradients and W, gradients are filled with NaN, Inf,
 * subnormals or huge values, and perturb, restore, step, set_lr/set_rho/
 * set_grad_scale, save and load, the getters and destroy come in any
 * order.  The allocator can be told to refuse its next requests.
 *
 * After every call the target aborts unless what mgpo.h promises holds:
 *   - an error (other than NONFINITE_GRADIENT) changed nothing: the caller's
 *     parameters and the saved state bytes are as before;
 *   - NONFINITE_GRADIENT leaves the state clean and, in exact mode, the
 *     parameters bit for bit as before the perturbation;
 *   - an exact restore (mgpo_restore, or the step's own) gives back the
 *     parameters bit for bit;
 *   - a save into a buffer too small writes nothing; save -> load into a
 *     fresh state registered the same way -> save gives the same bytes
 *     (FUZZ_CHECK_RELOAD 2; the default 1 lets the load refuse with
 *     CHECKPOINT_LAYOUT, leaving the fresh state unchanged, because main
 *     reaches states whose values its loader refuses: docs/fuzzing.md);
 *   - an OK step from finite gradients and finite parameters leaves finite
 *     parameters (FUZZ_CHECK_FINITE, off by default: main fails it, see
 *     docs/fuzzing.md);
 *   - every status is one the call documents (no unknown code).
 * Crashes, leaks and sanitizer reports fail it too.
 *
 * Differential (issue 20): every program drives two states, side A and side
 * B, with the same calls on separate copies of the caller's buffers.  B runs
 * on another thread count and, at random, the portable kernel table (forced
 * through the internal `kernels` pointer, as tests/test_digest.c does), and
 * the `migrate` opcode rebuilds B from A's checkpoint mid-run (a fresh state,
 * the same registrations, A's buffers copied, the load must succeed).  After
 * every call both sides must agree byte for byte: status, parameter,
 * gradient and momentum pools, checkpoint bytes.  Also checked per side:
 *   - after every OK step each bf16/fp16 tensor buffer equals the
 *     round-to-nearest of its master weights (integrated mode, rounding to
 *     nearest), by an independent converter below (elements whose rounding
 *     would overflow the type are not compared: issue 20, finding 6);
 *   - after an OK perturb each unit made only of float32 tensors moved by
 *     the documented |c_U|.||m_U|| = rho.s_U.n_U/(n_U + norm_eps) (finding
 *     5: external mode, random direction, a momentum not yet attached);
 *   - each library call runs in a fuzzed floating-point environment (a
 *     rounding mode, traps on, flags raised), set only around the call so
 *     that the harness and libFuzzer never trap; the call must leave that
 *     environment exactly as it found it.
 * FUZZ_0_3_COMPAT (default 0) = 1 switches off the inputs and checks of
 * issue 20's findings 2, 5, 7 and 8 (a momentum inside the gradient pool,
 * the perturbation-norm check, the portable table in external mode, and
 * the fuzzed environment around mgpo_create, mgpo_set_lr, mgpo_set_rho and
 * mgpo_set_grad_scale), so that the target can run against 0.3.0 and be
 * stopped by one finding at a time; docs/fuzzing.md. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* feenableexcept */
#endif
#include <fenv.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h" /* mgpo_kernels_portable and the state's kernel table */
#include "mgpo.h"

#ifndef FUZZ_0_3_COMPAT
#define FUZZ_0_3_COMPAT 0
#endif
#ifndef FUZZ_CHECK_RELOAD
#define FUZZ_CHECK_RELOAD 2
#endif
#ifndef FUZZ_CHECK_FINITE
#define FUZZ_CHECK_FINITE 0
#endif

#define POOL 512   /* parameter floats shared by every registration */
#define GPOOL 512  /* gradient floats */
#define MAX_REGS 8
#define MPOOL 512  /* the caller's momentum floats (external mode) */

/* ---- Input ---------------------------------------------------------------- */

typedef struct input {
    const uint8_t *p;
    size_t left;
} input;

static uint8_t byte(input *in)
{
    if (!in->left) return 0;
    in->left--;
    return *in->p++;
}

static size_t below(input *in, size_t n) { return n ? byte(in) % n : 0; }

/* A double from a table of extremes, or 8 raw bytes. */
static double dbl(input *in)
{
    static const double table[] = {0.0,     -0.0,   1.0,     0.5,     0.9,    0.999,
                                   1e-8,    1e-12,  1e-35,   1e-300,  4.9e-324, 1e10,
                                   1e160,   1e300,  1.7976931348623157e308, -1.0,
                                   0.05,    0.01,   1e-3,    2.0,     10.0,   100.0,
                                   0.999999999, 1e-45, 3.4e38, 1e39};
    uint8_t k = byte(in);
    if (k < 2 * (sizeof table / sizeof table[0])) return table[k % (sizeof table / sizeof table[0])];
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | byte(in);
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static float value(input *in)
{
    static const float table[] = {0.0f,  -0.0f, 1.0f,   -1.0f, 0.5f, 1e-3f, 1e-20f,
                                  1e-40f /* subnormal */,  1e-45f, 1e20f, 3e38f, -3e38f,
                                  NAN,   INFINITY, -INFINITY, 0.25f};
    uint8_t k = byte(in);
    if (k < 128) return table[k % (sizeof table / sizeof table[0])];
    return (float)((int)k - 192) / 16.0f;
}

/* ---- The allocator (can be told to refuse) ----------------------------------- */

typedef struct budget {
    int refuse; /* refuse this many next requests */
} budget;

static void *budget_alloc(void *ctx, size_t size)
{
    budget *b = ctx;
    if (b->refuse > 0) {
        b->refuse--;
        return NULL;
    }
    return malloc(size);
}

static void budget_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    (void)size;
    free(ptr);
}

/* ---- The world: one state, its registrations, the caller's buffers ------------ */

typedef struct reg {
    int lora;
    size_t p, count, g; /* tensor: params at pool+p, grads at gpool+g (count
                           elements of ptype / gtype; offsets in floats) */
    mgpo_dtype ptype, gtype; /* a pair: of A and B, of their gradients */
    mgpo_dtype wtype;        /* a pair's W */
    int has_grad;
    mgpo_tensor_options o;
    mgpo_lora_pair pair; /* offsets in a/b/base_weight, as pool indices */
    size_t a, b, w, ga, gb;
    int mom;        /* external mode: momentum attached (tensors only) */
    int mom_grads;  /* ... in the gradient pool (else the momentum pool) */
    size_t mom_at;  /* its offset in floats (a pair: m_A's) */
    size_t mom_b;   /* a pair: m_B's offset */
    mgpo_dtype mom_type; /* a tensor's momentum: float32, bf16 or fp16 */
} reg;

/* Attaches reg i's recorded momentum on st, whose pools are gpool/mpool. */
static mgpo_status attach_momentum(mgpo_state *st, size_t i, const reg *r, float *gpool,
                                   float *mpool)
{
    float *base = r->mom_grads ? gpool : mpool;
    if (!r->lora && r->mom && r->mom_type != MGPO_DTYPE_FLOAT32)
        return mgpo_set_momentum_typed(st, i, base + r->mom_at, r->mom_type);
    if (!r->lora) return mgpo_set_momentum(st, i, r->mom ? base + r->mom_at : NULL);
    return mgpo_set_lora_momentum(st, i, r->mom ? base + r->mom_at : NULL,
                                  r->mom ? base + r->mom_b : NULL);
}

typedef struct world {
    mgpo_state *st;
    mgpo_config cfg;
    budget alloc;
    float pool[POOL], gpool[GPOOL];
    reg regs[MAX_REGS];
    size_t nregs;
    float clean[POOL]; /* the pool before the perturbation now applied */
    float mpool[MPOOL];
    int side;           /* 0: A, 1: B */
    int threads;        /* num_threads of this side's states */
    int portable;       /* B: the portable kernel table */
    int env;            /* the fuzzed environment around library calls */
    mgpo_status last;   /* status of the side's last library call */
} world;

/* ---- The caller's floating-point environment ----------------------------------
 * Set only around a library call: the harness (and libFuzzer) never run
 * with traps.  env bits 0-1 a rounding mode, bit 2 traps on (invalid,
 * division by zero, overflow), bit 3 all flags raised before the call. */
static const int rounding_modes[4] = {FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO};
#define TRAPS (FE_INVALID | FE_DIVBYZERO | FE_OVERFLOW)

static void fail(const char *what, int status);

/* The flags raised before a call: with traps on only those not trapped (a
 * pending flag of an enabled trap would fire at the next instruction). */
static int raised_flags(int env)
{
    if (!(env & 8)) return 0;
    return (env & 4) ? (FE_ALL_EXCEPT & ~TRAPS) : FE_ALL_EXCEPT;
}

static void env_enter(int env)
{
    fesetenv(FE_DFL_ENV);
    fesetround(rounding_modes[env & 3]);
    feraiseexcept(raised_flags(env));
#if defined(__GLIBC__) && !defined(FUZZ_NO_TRAPS)
    if (env & 4) feenableexcept(TRAPS);
#endif
}

/* Back to the default environment, after checking that the call left the
 * caller's as it was (mode, flags, traps). */
static void env_leave(int env)
{
    int round = fegetround(), flags = fetestexcept(FE_ALL_EXCEPT);
#if defined(__GLIBC__) && !defined(FUZZ_NO_TRAPS)
    int traps = fegetexcept();
    fedisableexcept(FE_ALL_EXCEPT);
#else
    int traps = 0;
    env &= ~4;
#endif
    fesetenv(FE_DFL_ENV);
    if (round != rounding_modes[env & 3]) fail("a call changed the caller's rounding mode", -1);
    if (flags != raised_flags(env)) fail("a call changed the caller's flags", flags);
    if (traps != ((env & 4) ? TRAPS : 0)) fail("a call changed the caller's traps", traps);
}

/* LIB(w, call): the call in w's fuzzed environment; CALL(w, call): in the
 * default one (the calls of issue 20's finding 2 too, unless FUZZ_0_3_COMPAT). */
#define LIB(w, call) (env_enter((w)->env), (w)->last = (call), env_leave((w)->env), (w)->last)
#if !FUZZ_0_3_COMPAT
#define CALL_DFL(w, call) LIB(w, call)
#else
#define CALL_DFL(w, call) ((w)->last = (call))
#endif

/* FUZZ_ONLY=<text> in the environment (for measuring how fast each
 * finding is found) makes every failure whose message lacks <text> a no-op. */
static void fail(const char *what, int status)
{
    const char *only = getenv("FUZZ_ONLY");
    if (only && *only && !strstr(what, only)) return;
    fprintf(stderr, "fuzz_api: %s (status %d)\n", what, status);
    abort();
}

static void check_known(mgpo_status s)
{
    if ((int)s < 0 || (int)s > MGPO_ERR_RESERVED_FIELD) fail("unknown status", (int)s);
}

/* Floats of the pools that `count` elements of `type` take. */
static size_t floats_of(size_t count, mgpo_dtype type)
{
    return (count * mgpo_dtype_size(type) + sizeof(float) - 1) / sizeof(float);
}

static unsigned char *save(const mgpo_state *st, size_t *n)
{
    if (mgpo_checkpoint_size(st, n) != MGPO_OK) fail("checkpoint_size", -1);
    unsigned char *b = malloc(*n);
    size_t written = 0;
    if (!b) abort();
    mgpo_status s = mgpo_save(st, b, *n, &written);
    if (s != MGPO_OK || written != *n) fail("save of a live state", (int)s);
    return b;
}

typedef struct snapshot {
    float pool[POOL];
    unsigned char *state;
    size_t size;
} snapshot;

static void take(const world *w, snapshot *s)
{
    memcpy(s->pool, w->pool, sizeof s->pool);
    s->state = w->st ? save(w->st, &s->size) : NULL;
}

static int same_as(const world *w, const snapshot *s)
{
    if (memcmp(s->pool, w->pool, sizeof s->pool) != 0) return 0;
    if (!w->st) return 1;
    size_t n = 0;
    unsigned char *now = save(w->st, &n);
    int same = n == s->size && memcmp(now, s->state, n) == 0;
    free(now);
    return same;
}

static void drop(snapshot *s) { free(s->state); }

static int perturbed(const world *w)
{
    int p = 0;
    if (mgpo_is_perturbed(w->st, &p) != MGPO_OK) fail("is_perturbed", -1);
    return p;
}

/* Registers reg r on st with the buffers of pool/gpool. */
static mgpo_status add_reg(mgpo_state *st, const reg *r, float *pool, float *gpool)
{
    if (!r->lora)
        return mgpo_add_tensor_typed(st, pool + r->p, r->ptype, r->has_grad ? gpool + r->g : NULL,
                                     r->gtype, r->count, &r->o, NULL);
    mgpo_lora_pair_typed pr;
    memset(&pr, 0, sizeof pr);
    pr.rank = r->pair.rank;
    pr.n_in = r->pair.n_in;
    pr.n_out = r->pair.n_out;
    pr.scaling = r->pair.scaling;
    pr.mode = r->pair.mode;
    pr.adapter_type = r->ptype;
    pr.grad_type = r->gtype;
    pr.base_type = r->wtype;
    pr.a = pool + r->a;
    pr.b = pool + r->b;
    pr.base_weight = pr.mode == MGPO_LORA_BASE ? pool + r->w : NULL;
    pr.grad_a = r->has_grad ? gpool + r->ga : NULL;
    pr.grad_b = r->has_grad ? gpool + r->gb : NULL;
    return mgpo_add_lora_pair_typed(st, &pr, &r->o, NULL);
}

/* save -> load into a fresh state registered the same way -> save. */
static void check_reload(const world *w)
{
    if (!FUZZ_CHECK_RELOAD || !w->st) return;
    mgpo_state *twin = NULL;
    mgpo_config cfg = w->cfg;
    if (mgpo_create(&twin, &cfg, NULL) != MGPO_OK) fail("twin create", -1);
    float *pool = calloc(POOL, sizeof(float)), *gpool = calloc(GPOOL, sizeof(float));
    float *mpool = calloc(MPOOL, sizeof(float));
    if (!pool || !gpool || !mpool) abort();
    memcpy(gpool, w->gpool, GPOOL * sizeof(float));
    memcpy(mpool, w->mpool, MPOOL * sizeof(float));
    for (size_t i = 0; i < w->nregs; i++) {
        const reg *r = &w->regs[i];
        if (add_reg(twin, r, pool, gpool) != MGPO_OK) fail("twin registration", -1);
        /* External mode: a perturbed checkpoint needs the momentum attached. */
        if (r->mom && attach_momentum(twin, i, r, gpool, mpool) != MGPO_OK)
            fail("twin set_momentum", -1);
    }
    size_t n = 0, m = 0;
    unsigned char *a = save(w->st, &n);
    size_t n0 = 0;
    unsigned char *fresh = save(twin, &n0);
    mgpo_status s = mgpo_load(twin, a, n);
    if (s != MGPO_OK && (FUZZ_CHECK_RELOAD > 1 || s != MGPO_ERR_CHECKPOINT_LAYOUT))
        fail("a saved state does not load", (int)s);
    unsigned char *b = save(twin, &m);
    if (s == MGPO_OK && (m != n || memcmp(a, b, n) != 0)) fail("save -> load -> save differs", -1);
    if (s != MGPO_OK && (m != n0 || memcmp(fresh, b, m) != 0)) fail("a refused load changed", s);
    free(fresh);
    free(a);
    free(b);
    free(pool);
    free(gpool);
    free(mpool);
    mgpo_destroy(twin);
}

static int all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int in_typed(const struct world *w, size_t i);

/* The float32 parameters in the pool are finite (typed buffers are not
 * floats; an fp16 one may hold the Inf of an overflow). */
static int pool_finite(const struct world *w);

/* The gradients of every registration that has them are finite. */
static int grads_finite(const world *w)
{
    for (size_t i = 0; i < w->nregs; i++) {
        const reg *r = &w->regs[i];
        if (!r->has_grad) return 0;
        if (r->gtype != MGPO_DTYPE_FLOAT32 || r->ptype != MGPO_DTYPE_FLOAT32)
            return 0; /* not checked */
        if (!r->lora && !all_finite(w->gpool + r->g, r->count)) return 0;
        if (r->lora && (!all_finite(w->gpool + r->ga, r->pair.rank * r->pair.n_in) ||
                        !all_finite(w->gpool + r->gb, r->pair.n_out * r->pair.rank)))
            return 0;
    }
    return 1;
}

/* ---- Operations -------------------------------------------------------------- */

static void op_create(world *w, input *in)
{
    mgpo_destroy(w->st);
    w->st = NULL;
    w->nregs = 0;
    uint8_t f = byte(in);
    mgpo_config c = f & 1 ? mgpo_config_nlg() : mgpo_config_default();
    c.optimizer = (f >> 1) & 1 ? MGPO_OPTIMIZER_SGD : MGPO_OPTIMIZER_ADAMW;
    c.scope = (f >> 2) & 1 ? MGPO_SCOPE_TENSOR : MGPO_SCOPE_GLOBAL;
    c.restore_mode = (f >> 3) & 1 ? MGPO_RESTORE_LOW_MEMORY : MGPO_RESTORE_EXACT;
    c.sign = (f >> 4) & 1 ? MGPO_SIGN_ASCENT : MGPO_SIGN_LOOKAHEAD;
    c.nesterov = (f >> 5) & 1;
    c.rounding = (f >> 6) & 1 ? MGPO_ROUNDING_STOCHASTIC : MGPO_ROUNDING_NEAREST;
    c.lr = 1e-2;
    /* Ablations and external mode; the side's thread count, kernel table
     * and floating-point environment. */
    uint8_t g = byte(in);
    c.normalize = (g & 1) ? 0 : 1;
    c.direction = (g >> 1) & 1 ? MGPO_DIRECTION_RANDOM : MGPO_DIRECTION_MOMENTUM;
    c.optimizer_mode = (g >> 2) & 1 ? MGPO_OPTIMIZER_EXTERNAL : MGPO_OPTIMIZER_INTEGRATED;
    c.seed = (uint64_t)(g >> 3);
    uint8_t e = byte(in);
    w->threads = w->side ? 1 + (e & 3) : 1;
    w->portable = w->side && (e & 4) &&
                  (!FUZZ_0_3_COMPAT || c.optimizer_mode != MGPO_OPTIMIZER_EXTERNAL);
    w->env = w->side ? (e >> 4) & 15 : (e >> 3) & 1 ? (e >> 4) & 15 : 0;
    /* valgrind models neither SSE rounding modes nor exception flags (its
     * fegetenv after a call shows flags cleared): .ci/valgrind.sh sets
     * FUZZ_NO_FENV, and the replay there keeps the default environment. */
    if (getenv("FUZZ_NO_FENV")) w->env = 0;
    /* Bit mask of fields replaced by extreme values. */
    uint16_t which = (uint16_t)(byte(in) | byte(in) << 8);
    double *fields[12] = {&c.lr,       &c.beta1,     &c.beta2,    &c.eps,
                          &c.weight_decay, &c.momentum, &c.dampening, &c.rho,
                          &c.norm_ema, &c.scale_max, &c.norm_eps, &c.max_grad_norm};
    for (int i = 0; i < 12; i++)
        if (which >> i & 1) *fields[i] = dbl(in);
    if (c.optimizer_mode == MGPO_OPTIMIZER_EXTERNAL && !(which >> 11 & 1)) c.max_grad_norm = 0.0;
    c.num_threads = w->threads;
    w->alloc.refuse = 0;
    mgpo_allocator a = {budget_alloc, budget_free, &w->alloc};
    mgpo_status s = CALL_DFL(w, mgpo_create(&w->st, &c, &a));
    check_known(s);
    if (s == MGPO_OK && w->portable) w->st->kernels = mgpo_kernels_portable();
    if (s != MGPO_OK && w->st) fail("create failed but *out not NULL", (int)s);
    if (s == MGPO_OK && mgpo_config_validate(&c) != MGPO_OK) fail("create accepted invalid", -1);
    w->cfg = c;
}

static mgpo_tensor_options options(input *in)
{
    mgpo_tensor_options o = mgpo_tensor_options_default();
    uint8_t f = byte(in);
    if (f & 1) o.lr_scale = dbl(in);
    if (f & 2) o.weight_decay_scale = dbl(in);
    o.perturb = (f & 4) ? 0 : 1;
    return o;
}

static int pool_finite(const world *w)
{
    for (size_t i = 0; i < POOL; i++)
        if (!in_typed(w, i) && !isfinite(w->pool[i])) return 0;
    return 1;
}

/* The pool buffers a registration writes: offset and length in floats,
 * element type (a tensor's parameters; a pair's A, B and, in base mode,
 * W).  Returns how many. */
static int regions(const reg *r, size_t at[3], size_t len[3], mgpo_dtype type[3])
{
    if (!r->lora) {
        at[0] = r->p;
        len[0] = floats_of(r->count, r->ptype);
        type[0] = r->ptype;
        return 1;
    }
    at[0] = r->a;
    len[0] = floats_of(r->pair.rank * r->pair.n_in, r->ptype);
    at[1] = r->b;
    len[1] = floats_of(r->pair.n_out * r->pair.rank, r->ptype);
    type[0] = type[1] = r->ptype;
    if (r->pair.mode != MGPO_LORA_BASE) return 2;
    at[2] = r->w;
    len[2] = floats_of(r->pair.n_out * r->pair.n_in, r->wtype);
    type[2] = r->wtype;
    return 3;
}

/* Whether pool float i lies in a bf16/fp16 buffer: the state writes A, B
 * and tensors of those types from their master weights, so the caller does
 * not; a typed W is left alone too. */
static int in_typed(const world *w, size_t i)
{
    for (size_t k = 0; k < w->nregs; k++) {
        size_t at[3], len[3];
        mgpo_dtype type[3];
        for (int j = regions(&w->regs[k], at, len, type) - 1; j >= 0; j--)
            if (type[j] != MGPO_DTYPE_FLOAT32 && i >= at[j] && i < at[j] + len[j]) return 1;
    }
    return 0;
}

/* Whether pool floats [p, p + n) meet a buffer the state writes. */
static int meets_registered(const world *w, size_t p, size_t n)
{
    for (size_t k = 0; k < w->nregs; k++) {
        size_t at[3], len[3];
        mgpo_dtype type[3];
        for (int j = regions(&w->regs[k], at, len, type) - 1; j >= 0; j--)
            if (p < at[j] + len[j] && at[j] < p + n) return 1;
    }
    return 0;
}

/* Parameters stay finite (as op_fill keeps them): a bf16/fp16 buffer about
 * to be registered gets 0.5 for every element that is NaN or Inf in its
 * type.  (Registration takes such values into the master weights, which a
 * checkpoint must not hold: the loader refuses them.)  A buffer that meets
 * a registered one is left alone: the registration is refused (OVERLAP),
 * and the caller may not write the other's values. */
static void make_finite(world *w, size_t p, size_t count, mgpo_dtype type)
{
    if (type == MGPO_DTYPE_FLOAT32 || meets_registered(w, p, floats_of(count, type))) return;
    uint16_t *h = (uint16_t *)(void *)(w->pool + p);
    const int bf16 = type == MGPO_DTYPE_BFLOAT16;
    for (size_t i = 0; i < count; i++) {
        /* NaN or Inf: the exponent field all ones (8 bits of bf16 from bit
         * 7, 5 bits of fp16 from bit 10). */
        int nonfinite = bf16 ? ((h[i] >> 7) & 0xFF) == 0xFF : ((h[i] >> 10) & 0x1F) == 0x1F;
        if (nonfinite) h[i] = bf16 ? 0x3F00 : 0x3800; /* 0.5 */
    }
}

static void op_add(world *w, input *in, int kind)
{
    if (w->nregs == MAX_REGS) return;
    reg r;
    memset(&r, 0, sizeof r);
    r.lora = kind == 1;
    r.has_grad = byte(in) & 1;
    if (!r.lora) {
        r.p = below(in, POOL);
        r.count = 1 + below(in, 64);
        if (kind == 2) {
            /* Typed: bf16 or fp16 parameters, gradients of any type. */
            uint8_t t = byte(in);
            r.ptype = t & 1 ? MGPO_DTYPE_FLOAT16 : MGPO_DTYPE_BFLOAT16;
            r.gtype = (mgpo_dtype)((t >> 1) % 3);
        }
        if (r.p + floats_of(r.count, r.ptype) > POOL)
            r.count = (POOL - r.p) * sizeof(float) / mgpo_dtype_size(r.ptype);
        r.g = below(in, GPOOL - floats_of(r.count, r.gtype) + 1);
        make_finite(w, r.p, r.count, r.ptype);
    } else {
        r.pair.rank = 1 + below(in, 3);
        r.pair.n_in = 1 + below(in, 6);
        r.pair.n_out = 1 + below(in, 6);
        r.pair.scaling = byte(in) & 1 ? dbl(in) : 2.0;
        r.pair.mode = byte(in) & 1 ? MGPO_LORA_BASE : MGPO_LORA_ADAPTER;
        /* Element types of A and B, their gradients, and W. */
        uint8_t t = byte(in);
        r.ptype = (mgpo_dtype)(t % 3);
        r.gtype = (mgpo_dtype)(t / 3 % 3);
        r.wtype = (mgpo_dtype)(t / 9 % 3);
        size_t na = r.pair.rank * r.pair.n_in, nb = r.pair.n_out * r.pair.rank,
               nw = r.pair.n_out * r.pair.n_in;
        r.a = below(in, POOL - na + 1);
        r.b = below(in, POOL - nb + 1);
        r.w = below(in, POOL - nw + 1);
        r.ga = below(in, GPOOL - na + 1);
        r.gb = below(in, GPOOL - nb + 1);
        /* Only A and B get master weights (W may hold anything). */
        make_finite(w, r.a, na, r.ptype);
        make_finite(w, r.b, nb, r.ptype);
    }
    r.o = options(in);
    snapshot before;
    take(w, &before);
    /* Registration validates its scales in the caller's environment (a
     * NaN lr_scale raises FE_INVALID): the class of finding 2. */
    mgpo_status s = CALL_DFL(w, add_reg(w->st, &r, w->pool, w->gpool));
    check_known(s);
    if (s == MGPO_OK) {
        w->regs[w->nregs++] = r;
    } else if (!same_as(w, &before)) {
        fail("a refused registration changed something", (int)s);
    }
    drop(&before);
}

static void op_set_grad(world *w, input *in)
{
    if (!w->nregs) return;
    size_t i = below(in, w->nregs);
    reg *r = &w->regs[i];
    int set = byte(in) & 1;
    snapshot before;
    take(w, &before);
    mgpo_status s;
    size_t g = 0, ga = 0, gb = 0;
    if (!r->lora) {
        g = below(in, GPOOL - floats_of(r->count, r->gtype) + 1);
        s = LIB(w, mgpo_set_grad_typed(w->st, i, set ? w->gpool + g : NULL, r->gtype));
    } else {
        ga = below(in, GPOOL - r->pair.rank * r->pair.n_in + 1);
        gb = below(in, GPOOL - r->pair.n_out * r->pair.rank + 1);
        s = LIB(w, mgpo_set_lora_grads_typed(w->st, i, set ? w->gpool + ga : NULL,
                                             set ? w->gpool + gb : NULL, r->gtype));
    }
    check_known(s);
    if (s == MGPO_OK) {
        r->has_grad = set;
        r->g = g;
        r->ga = ga;
        r->gb = gb;
    } else if (!same_as(w, &before)) {
        fail("a refused set_grad changed something", (int)s);
    }
    drop(&before);
}

/* ---- Independent round-to-nearest-even converters (not the library's) ------
 * Each returns 0 when the rounded value would not be finite in the type. */
static int to_bf16(float f, uint16_t *out)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u) return 0;
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    if ((r & 0x7f800000u) == 0x7f800000u) return 0;
    *out = (uint16_t)(r >> 16);
    return 1;
}

static int to_fp16(float f, uint16_t *out)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a >= 0x477ff000u) return 0; /* >= 65520 (or Inf, NaN): Inf */
    if (a < 0x38800000u) {          /* below 2^-14: a multiple of 2^-24 */
        double units = nearbyint((double)fabsf(f) * 16777216.0); /* exact product; to even */
        *out = (uint16_t)(sign | (uint32_t)units);
        return 1;
    }
    uint32_t h = ((a >> 23) - 112u) << 10 | ((a >> 13) & 0x3ffu), rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* a carry is right */
    *out = (uint16_t)(sign | h);
    return 1;
}

/* After an OK step (integrated mode, rounding to nearest): every bf16/fp16
 * tensor buffer holds the rounded master weights. */
static void check_typed_buffers(const world *w)
{
    if (w->cfg.optimizer_mode == MGPO_OPTIMIZER_EXTERNAL ||
        w->cfg.rounding != MGPO_ROUNDING_NEAREST)
        return;
    for (size_t i = 0; i < w->nregs; i++) {
        const reg *r = &w->regs[i];
        if (r->lora || r->ptype == MGPO_DTYPE_FLOAT32) continue;
        float master[64];
        if (mgpo_get_master_weights(w->st, i, master, r->count) != MGPO_OK)
            fail("get_master_weights of a typed tensor", -1);
        uint16_t h[64];
        memcpy(h, w->pool + r->p, r->count * sizeof *h);
        for (size_t k = 0; k < r->count; k++) {
            uint16_t want = 0;
            int finite = r->ptype == MGPO_DTYPE_BFLOAT16 ? to_bf16(master[k], &want)
                                                         : to_fp16(master[k], &want);
            if (finite && h[k] != want) fail("a bf16/fp16 buffer is not its rounded master", (int)k);
        }
    }
}

/* After an OK perturb: each unit whose perturbed items are all float32
 * tensors moved by rho.s.n/(n + norm_eps) (= |c_U|.||m_U||), up to the
 * rounding of p + c.m.  Off with FUZZ_0_3_COMPAT (finding 5). */
static void check_perturbation_norms(const world *w)
{
    if (FUZZ_0_3_COMPAT) return;
    size_t units = 0;
    if (mgpo_get_unit_count(w->st, &units) != MGPO_OK) fail("get_unit_count", -1);
    for (size_t u = 0; u < units; u++) {
        mgpo_unit_stats us;
        if (mgpo_get_unit_stats(w->st, u, &us) != MGPO_OK) fail("get_unit_stats", -1);
        if (us.coefficient == 0.0) continue;
        double moved = 0.0, norm = 0.0;
        int plain = 1;
        for (size_t i = 0; i < w->nregs && plain; i++) {
            const reg *r = &w->regs[i];
            size_t unit = w->cfg.scope == MGPO_SCOPE_GLOBAL ? 0 : i;
            if (unit != u || !r->o.perturb) continue;
            if (r->lora || r->ptype != MGPO_DTYPE_FLOAT32) plain = 0;
            for (size_t k = r->p; plain && k < r->p + r->count; k++) {
                double d = (double)w->pool[k] - (double)w->clean[k];
                moved += d * d;
                norm += (double)w->clean[k] * (double)w->clean[k];
            }
        }
        if (!plain) continue;
        double n = us.momentum_norm, want = w->cfg.rho * us.scale * n / (n + w->cfg.norm_eps);
        moved = sqrt(moved);
        norm = sqrt(norm);
        if (!isfinite(want) || !isfinite(norm) || !isfinite(moved) || want < 1e-30 ||
            want < 1e-4 * norm)
            continue;
        if (fabs(moved - want) > 1e-3 * want + 1e-6 * norm)
            fail("a perturbation moved the parameters by other than |c|.||m||", (int)u);
    }
}

/* perturb, restore or step, with the restore and error promises. */
static void op_iterate(world *w, int which)
{
    int was = perturbed(w);
    int exact = w->cfg.restore_mode == MGPO_RESTORE_EXACT;
    int finite_in = grads_finite(w) && pool_finite(w);
    snapshot before;
    take(w, &before);
    mgpo_status s = which == 0   ? LIB(w, mgpo_perturb(w->st))
                    : which == 1 ? LIB(w, mgpo_restore(w->st))
                                 : LIB(w, mgpo_step(w->st));
    check_known(s);
    if (s == MGPO_OK && which == 0 && !was && perturbed(w)) {
        memcpy(w->clean, before.pool, sizeof w->clean);
        check_perturbation_norms(w);
    }
    if (s == MGPO_OK && which == 2) check_typed_buffers(w);
    if (s == MGPO_ERR_NONFINITE_GRADIENT) {
        if (which != 2 || perturbed(w)) fail("NONFINITE_GRADIENT left the state perturbed", s);
        if (exact && was && memcmp(w->pool, w->clean, sizeof w->clean) != 0)
            fail("NONFINITE_GRADIENT: parameters not restored bit for bit", s);
        if (!was && memcmp(w->pool, before.pool, sizeof w->pool) != 0)
            fail("NONFINITE_GRADIENT changed clean parameters", s);
    } else if (s != MGPO_OK) {
        if (!same_as(w, &before)) fail("an iteration error changed something", (int)s);
    } else if (which == 1 && was && exact && memcmp(w->pool, w->clean, sizeof w->clean) != 0) {
        fail("exact restore is not bit-exact", s);
    } else if (which == 2 && was && exact && w->cfg.optimizer_mode == MGPO_OPTIMIZER_EXTERNAL &&
               memcmp(w->pool, w->clean, sizeof w->clean) != 0) {
        /* External mode: the step only restores (the caller's optimizer
         * updates afterwards). */
        fail("external-mode step: exact restore is not bit-exact", s);
    }
    if (FUZZ_CHECK_FINITE && which == 2 && s == MGPO_OK && finite_in &&
        !pool_finite(w))
        fail("an OK step from finite gradients left a non-finite parameter", s);
    drop(&before);
}

/* which: 0 set_lr, 1 set_rho, 2 set_grad_scale (saved in checkpoints, so
 * a refused one shows in the state bytes too). */
static void op_set(world *w, input *in, int which)
{
    double x = dbl(in);
    snapshot before;
    take(w, &before);
    mgpo_status s = which == 1   ? CALL_DFL(w, mgpo_set_rho(w->st, x))
                    : which == 0 ? CALL_DFL(w, mgpo_set_lr(w->st, x))
                                 : CALL_DFL(w, mgpo_set_grad_scale(w->st, x));
    check_known(s);
    if (s != MGPO_OK && !same_as(w, &before)) fail("a refused set_lr/rho/scale changed something", s);
    if (which == 2 && (s == MGPO_OK) != (x >= MGPO_GRAD_SCALE_MIN && x <= MGPO_GRAD_SCALE_MAX))
        fail("set_grad_scale accepted or refused wrongly", s);
    if (s == MGPO_OK) {
        if (which == 1) w->cfg.rho = x;
        else if (which == 0) w->cfg.lr = x;
    }
    drop(&before);
}

/* params: 0 gradients, 1 parameters, 2 the momentum pool (the caller's
 * optimizer's, external mode). */
/* Element i of the gradient pool lies in an attached momentum and in no
 * registered gradient buffer: a write there is a write of the momentum,
 * not a gradient (a gradient write into a momentum is finding 7, which
 * 0.4's registration refuses). */
static int in_grad_momentum(const world *w, size_t i)
{
    for (size_t k = 0; k < w->nregs; k++) {
        const reg *r = &w->regs[k];
        if (!r->has_grad) continue;
        size_t ng = r->lora ? r->pair.rank * r->pair.n_in : floats_of(r->count, r->gtype);
        size_t nbg = r->lora ? r->pair.n_out * r->pair.rank : 0;
        if (r->lora ? (i >= r->ga && i < r->ga + floats_of(ng, r->gtype)) ||
                          (i >= r->gb && i < r->gb + floats_of(nbg, r->gtype))
                    : (i >= r->g && i < r->g + ng))
            return 0;
    }
    for (size_t k = 0; k < w->nregs; k++) {
        const reg *r = &w->regs[k];
        if (!r->mom || !r->mom_grads) continue;
        size_t na = r->lora ? r->pair.rank * r->pair.n_in : floats_of(r->count, r->mom_type);
        size_t nb = r->lora ? r->pair.n_out * r->pair.rank : 0;
        if ((i >= r->mom_at && i < r->mom_at + na) || (i >= r->mom_b && i < r->mom_b + nb))
            return 1;
    }
    return 0;
}

static void op_fill(world *w, input *in, int params)
{
    /* The caller may write its parameters and momentum only while clean. */
    if (params && w->st && perturbed(w)) return;
    float *dst = params == 2 ? w->mpool : params ? w->pool : w->gpool;
    size_t at = below(in, POOL), n = 1 + below(in, 128);
    float x = value(in);
    int ramp = byte(in) & 1;
    /* A momentum, wherever it lies, is the caller's to write only while
     * clean too (docs/api.md, external mode): gradients written while
     * perturbed skip the momenta inside the gradient pool.  (Writing it
     * there breaks the exact restore: finding 7, which registration now
     * refuses where it can see it, over a registered gradient buffer.) */
    int skip_momenta = params == 0 && w->st && perturbed(w);
    for (size_t i = at; i < at + n && i < POOL; i++)
        if ((params != 1 || !in_typed(w, i)) && !(skip_momenta && in_grad_momentum(w, i)))
            dst[i] = ramp ? x * (float)(i - at + 1) : x;
    if (params == 1)
        for (size_t i = 0; i < POOL; i++)
            if (!in_typed(w, i) && !isfinite(dst[i])) dst[i] = 0.5f; /* parameters stay finite */
}

static void op_save(world *w, input *in)
{
    size_t need = 0;
    if (mgpo_checkpoint_size(w->st, &need) != MGPO_OK) fail("checkpoint_size", -1);
    size_t delta = below(in, 64), cap = byte(in) & 1 ? need + delta : (need > delta ? need - delta : 0);
    unsigned char *buf = malloc(cap + 1);
    if (!buf) abort();
    memset(buf, 0xA5, cap + 1);
    size_t written = 12345;
    mgpo_status s = LIB(w, mgpo_save(w->st, buf, cap, &written));
    check_known(s);
    if (cap < need) {
        if (s != MGPO_ERR_BUFFER_TOO_SMALL || written != 12345) fail("small buffer", s);
        for (size_t i = 0; i <= cap; i++)
            if (buf[i] != 0xA5) fail("a refused save wrote into the buffer", s);
    } else {
        if (s != MGPO_OK || written != need) fail("save", s);
        if (buf[need] != 0xA5) fail("save wrote past its size", s);
    }
    free(buf);
}

/* Loads the state's own checkpoint edited at one byte (resealed or not): an
 * accepted load must give exactly those bytes back, a refused one change
 * nothing. */
static void op_load(world *w, input *in)
{
    size_t n = 0;
    unsigned char *ck = save(w->st, &n);
    size_t at = (size_t)(byte(in) | byte(in) << 8) % n, cut = below(in, 4) == 0 ? below(in, n) : n;
    ck[at] ^= byte(in);
    snapshot before;
    take(w, &before);
    mgpo_status s = LIB(w, mgpo_load(w->st, ck, cut));
    check_known(s);
    if (s == MGPO_OK) {
        size_t m = 0;
        unsigned char *now = save(w->st, &m);
        if (m != cut || memcmp(now, ck, m) != 0) fail("an accepted load does not save back", s);
        free(now);
        /* The caller's part of the resume rule is not known here: go back. */
        if (mgpo_load(w->st, before.state, before.size) != MGPO_OK) fail("reload", -1);
    } else if (s < MGPO_ERR_CHECKPOINT_MAGIC || s > MGPO_ERR_CHECKPOINT_TRUNCATED ||
               !same_as(w, &before)) {
        fail("a refused load changed something or used a wrong code", s);
    }
    drop(&before);
    free(ck);
}

static void op_getters(const world *w, input *in)
{
    mgpo_stats s;
    mgpo_config c;
    mgpo_unit_stats u;
    size_t units = 0, count = 0;
    int p = 0;
    if (mgpo_get_stats(w->st, &s) != MGPO_OK || mgpo_get_config(w->st, &c) != MGPO_OK ||
        mgpo_get_unit_count(w->st, &units) != MGPO_OK ||
        mgpo_get_tensor_count(w->st, &count) != MGPO_OK || mgpo_is_perturbed(w->st, &p) != MGPO_OK)
        fail("a getter failed", -1);
    if (count != w->nregs || s.perturbed != p) fail("getters disagree", -1);
    size_t unit = below(in, units + 2);
    mgpo_status st = mgpo_get_unit_stats(w->st, unit, &u);
    if ((unit < units) != (st == MGPO_OK)) fail("get_unit_stats index", st);
}

/* External mode: attaches (or detaches) a tensor's momentum, in the
 * momentum pool or, unless FUZZ_0_3_COMPAT, anywhere in the gradient pool
 * (finding 7: a momentum that aliases a gradient buffer). */
static void op_set_momentum(world *w, input *in)
{
    if (!w->nregs) return;
    size_t i = below(in, w->nregs);
    reg *r = &w->regs[i];
    uint8_t f = byte(in);
    int detach = (f & 3) == 3, grads = !FUZZ_0_3_COMPAT && (f & 4);
    /* A tensor's count, or a pair's A and B (m_A and m_B). */
    /* bit 3: a bf16 (bit 4: fp16) momentum for a tensor. */
    mgpo_dtype type = r->lora || !(f & 8) ? MGPO_DTYPE_FLOAT32
                      : (f & 16)          ? MGPO_DTYPE_FLOAT16
                                          : MGPO_DTYPE_BFLOAT16;
    size_t na = r->lora ? r->pair.rank * r->pair.n_in : floats_of(r->count, type);
    size_t nb = r->lora ? r->pair.n_out * r->pair.rank : 0;
    size_t room = grads ? GPOOL : MPOOL;
    reg next = *r;
    next.mom = !detach;
    next.mom_grads = grads;
    next.mom_at = below(in, room - na + 1);
    next.mom_b = r->lora ? below(in, room - nb + 1) : 0;
    next.mom_type = type;
    snapshot before;
    take(w, &before);
    mgpo_status s = LIB(w, attach_momentum(w->st, i, &next, w->gpool, w->mpool));
    check_known(s);
    if (s == MGPO_OK) {
        *r = next;
    } else if (!same_as(w, &before)) {
        fail("a refused set_momentum changed something", (int)s);
    }
    drop(&before);
}

/* Rebuilds side b from a's checkpoint: a fresh state on b's thread count and
 * kernel table, a's registrations on copies of a's buffers, the load must
 * succeed.  Returns 0 when a registration of a's buffers as they are now is
 * refused (a typed buffer holding a non-finite value): the program ends. */
static int op_migrate(world *a, world *b)
{
    if (!a->st) return 1;
    size_t n = 0;
    unsigned char *ck = save(a->st, &n);
    mgpo_destroy(b->st);
    b->st = NULL;
    b->cfg = a->cfg;
    mgpo_config c = a->cfg;
    c.num_threads = b->threads;
    b->alloc.refuse = 0;
    mgpo_allocator al = {budget_alloc, budget_free, &b->alloc};
    if (mgpo_create(&b->st, &c, &al) != MGPO_OK) fail("migrate: create", -1);
    if (b->portable) b->st->kernels = mgpo_kernels_portable();
    memcpy(b->pool, a->pool, sizeof b->pool);
    memcpy(b->gpool, a->gpool, sizeof b->gpool);
    memcpy(b->mpool, a->mpool, sizeof b->mpool);
    memcpy(b->clean, a->clean, sizeof b->clean);
    memcpy(b->regs, a->regs, sizeof b->regs);
    b->nregs = a->nregs;
    int ok = 1;
    for (size_t i = 0; ok && i < b->nregs; i++) {
        const reg *r = &b->regs[i];
        if (add_reg(b->st, r, b->pool, b->gpool) != MGPO_OK) {
            ok = 0;
            break;
        }
        if (r->mom && attach_momentum(b->st, i, r, b->gpool, b->mpool) != MGPO_OK)
            fail("migrate: set_momentum", -1);
    }
    if (ok) {
        mgpo_status s = LIB(b, mgpo_load(b->st, ck, n));
        if (s != MGPO_OK) fail("migrate: a checkpoint of side A does not load into B", (int)s);
        a->last = b->last;
    }
    b->alloc.refuse = a->alloc.refuse;
    free(ck);
    return ok;
}

/* Both sides agree byte for byte. */
static void compare_sides(const world *a, const world *b)
{
    if (!a->st != !b->st || a->nregs != b->nregs) fail("sides differ: states", -1);
    if (a->last != b->last) fail("sides differ: status", (int)b->last);
    if (memcmp(a->pool, b->pool, sizeof a->pool) != 0) fail("sides differ: parameters", -1);
    if (memcmp(a->gpool, b->gpool, sizeof a->gpool) != 0 ||
        memcmp(a->mpool, b->mpool, sizeof a->mpool) != 0)
        fail("sides differ: gradients or momentum", -1);
    if (!a->st) return;
    size_t na = 0, nb = 0;
    unsigned char *ca = save(a->st, &na), *cb = save(b->st, &nb);
    if (na != nb || memcmp(ca, cb, na) != 0) fail("sides differ: checkpoint bytes", -1);
    free(ca);
    free(cb);
}

static void run_op(world *w, uint8_t op, input *in)
{
    if (op == 0) {
        op_create(w, in);
        return;
    }
    if (!w->st) return;
    switch (op) {
        case 1: op_add(w, in, 0); break;
        case 2: op_add(w, in, 2); break; /* bf16/fp16 */
        case 3: op_add(w, in, 1); break;
        case 4: op_set_grad(w, in); break;
        case 5: op_iterate(w, 0); break;
        case 6: op_iterate(w, 1); break;
        case 7: op_iterate(w, 2); break;
        case 8: op_set(w, in, (int)(byte(in) % 3)); break;
        case 9: op_fill(w, in, 0); break;
        case 10: op_fill(w, in, 1); break;
        case 11: op_save(w, in); break;
        case 12: op_load(w, in); break;
        case 13: op_getters(w, in); break;
        case 14: w->alloc.refuse = 1 + (int)below(in, 3); break;
        case 15: /* destroy (the parameters keep whatever they hold) */
            mgpo_destroy(w->st);
            w->st = NULL;
            w->nregs = 0;
            break;
        case 16: op_set_momentum(w, in); break;
        case 17: op_fill(w, in, 2); break;
        default: break; /* 18: migrate (both sides, below) */
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    world *w = calloc(2, sizeof *w);
    if (!w) abort();
    input in = {data, size};
    for (int k = 0; k < 2; k++) {
        w[k].side = k;
        w[k].threads = 1;
        for (size_t i = 0; i < POOL; i++) w[k].pool[i] = (float)((int)(i % 17) - 8) / 8.0f;
        for (size_t i = 0; i < GPOOL; i++) w[k].gpool[i] = (float)((int)(i % 13) - 6) / 16.0f;
        for (size_t i = 0; i < MPOOL; i++) w[k].mpool[i] = (float)((int)(i % 11) - 5) / 32.0f;
    }
    for (int ops = 0; in.left && ops < 256; ops++) {
        uint8_t op = byte(&in) % 19;
        /* The same call with the same arguments on both sides. */
        input on_b = in;
        run_op(&w[0], op, &in);
        run_op(&w[1], op, &on_b);
        if (on_b.left != in.left) fail("sides read different arguments", -1);
        if (op == 18 && !op_migrate(&w[0], &w[1])) break;
        check_reload(&w[0]);
        compare_sides(&w[0], &w[1]);
    }
    mgpo_destroy(w[0].st);
    mgpo_destroy(w[1].st);
    free(w);
    return 0;
}
