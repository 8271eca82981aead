/* Every public function of include/mgpo.h, walked with NULL and out-of-range
 * arguments from one table.  Each row must return the error code its doc
 * comment names and change nothing: not the states (compared through their
 * checkpoints, statistics and configuration), not the caller's buffers, not
 * the output arguments (kept filled with a sentinel byte).  A last test reads
 * the header and fails if a public function has no row. */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_fixture.h"
#include "test_util.h"

/* ---- The states every row runs against ------------------------------------- */

typedef struct api_ctx {
    fx f;               /* stepped twice and perturbed */
    mgpo_state *fresh;  /* tensors registered, never stepped */
    mgpo_state *empty;  /* no tensors */
    mgpo_state *nograd; /* a tensor without a gradient buffer */
    float fresh_p[64], fresh_g[64], nograd_p[16];
    float lora_a[8], lora_b[8], lora_w[16];
    unsigned char *ck;  /* a valid checkpoint of f */
    size_t ck_size;
    union {             /* where rows write outputs; must stay untouched */
        unsigned char bytes[512];
        max_align_t align;
    } out;
} api_ctx;


static void *out_area(api_ctx *c) { return c->out.bytes; }

/* ---- Rows needing more than one expression ------------------------------------ */

static mgpo_config edited_config(int which)
{
    mgpo_config k = mgpo_config_default();
    switch (which) {
    case 0: k.lr = -1.0; break;
    case 1: k.lr = NAN; break;
    case 2: k.beta1 = 1.0; break;
    case 3: k.beta2 = -0.1; break;
    case 4: k.momentum = 1.0; break;
    case 5: k.dampening = NAN; break;
    case 6: k.norm_ema = 1.0; break;
    case 7: k.nesterov = 1; k.momentum = 0.0; break;
    case 8: k.eps = 0.0; break;
    case 9: k.norm_eps = -1.0; break;
    case 10: k.weight_decay = -1.0; break;
    case 11: k.rho = INFINITY; break;
    case 12: k.scale_max = 0.0; break;
    case 13: k.optimizer = (mgpo_optimizer)5; break;
    case 14: k.sign = (mgpo_sign)0; break;
    case 15: k.scope = (mgpo_scope)2; break;
    case 16: k.restore_mode = (mgpo_restore_mode)2; break;
    case 17: k.nesterov = 2; break;
    case 18: k.max_grad_norm = -1.0; break;
    case 19: k.num_threads = -1; break;
    case 20: k.rho = -0.5; break;
    case 21: k.optimizer_mode = (mgpo_optimizer_mode)2; break;
    case 22: k.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL; k.max_grad_norm = 1.0; break;
    case 23: k.normalize = 2; break;
    case 24: k.direction = (mgpo_direction)2; break;
    case 25: k.rounding = (mgpo_rounding)2; break;
    case 26: k.reserved[7] = 1; break;
    case 27: k.reserved[0] = 1; k.lr = -1.0; break; /* reserved words are checked first */
    default: break;
    }
    return k;
}

#define BAD_CONFIGS 28
static const mgpo_status config_codes[BAD_CONFIGS] = {
    MGPO_ERR_BAD_LR,      MGPO_ERR_BAD_LR,           MGPO_ERR_BAD_BETA,    MGPO_ERR_BAD_BETA,
    MGPO_ERR_BAD_BETA,    MGPO_ERR_BAD_BETA,         MGPO_ERR_BAD_BETA,    MGPO_ERR_BAD_BETA,
    MGPO_ERR_BAD_EPSILON, MGPO_ERR_BAD_EPSILON,      MGPO_ERR_BAD_WEIGHT_DECAY, MGPO_ERR_BAD_RHO,
    MGPO_ERR_BAD_SCALE_MAX, MGPO_ERR_BAD_ENUM,       MGPO_ERR_BAD_ENUM,    MGPO_ERR_BAD_ENUM,
    MGPO_ERR_BAD_ENUM,    MGPO_ERR_BAD_ENUM,         MGPO_ERR_BAD_CLIP,    MGPO_ERR_BAD_THREADS,
    MGPO_ERR_BAD_RHO,     MGPO_ERR_BAD_ENUM,         MGPO_ERR_BAD_CLIP,    MGPO_ERR_BAD_ENUM,
    MGPO_ERR_BAD_ENUM,    MGPO_ERR_BAD_ENUM,         MGPO_ERR_RESERVED_FIELD, MGPO_ERR_RESERVED_FIELD};

/* Every bad field gives its own code from validation and from create; create
 * also leaves *out NULL.  Returns MGPO_OK when all of that holds. */
static mgpo_status every_bad_config(void)
{
    for (int i = 0; i < BAD_CONFIGS; i++) {
        mgpo_config k = edited_config(i);
        if (mgpo_config_validate(&k) != config_codes[i]) return (mgpo_status)-1;
        mgpo_state *st = (mgpo_state *)&k;
        if (mgpo_create(&st, &k, NULL) != config_codes[i] || st != NULL) return (mgpo_status)-2;
    }
    return MGPO_OK;
}

static mgpo_status create_bad_allocator(void)
{
    mgpo_allocator a = {NULL, NULL, NULL};
    mgpo_state *st = (mgpo_state *)&a;
    mgpo_status s = mgpo_create(&st, NULL, &a);
    return st == NULL ? s : (mgpo_status)-1;
}

static mgpo_status add_tensor_opts(mgpo_state *st, float *p, double lr_scale, double wd_scale)
{
    mgpo_tensor_options o = mgpo_tensor_options_default();
    o.lr_scale = lr_scale;
    o.weight_decay_scale = wd_scale;
    return mgpo_add_tensor(st, p, NULL, 4, &o, NULL);
}

/* A bf16 tensor of 4 elements over the context's lora_w bytes, with one
 * argument broken. */
static mgpo_status add_typed(api_ctx *c, mgpo_state *st, int broken)
{
    void *p = c->lora_w;
    const void *g = NULL;
    mgpo_dtype pt = MGPO_DTYPE_BFLOAT16, gt = MGPO_DTYPE_FLOAT16;
    size_t n = 4;
    mgpo_tensor_options o = mgpo_tensor_options_default();
    switch (broken) {
    case 1: pt = (mgpo_dtype)3; break;
    case 2: gt = (mgpo_dtype)-1; break;
    case 3: n = 0; break;
    case 4: o.reserved[2] = 1; break;
    /* 8 bytes of bf16 params, fp32 grads from byte 4 (aligned as floats
     * must be): overlap by bytes. */
    case 5: g = (const unsigned char *)c->lora_w + 4; gt = MGPO_DTYPE_FLOAT32; break;
    case 6: p = (unsigned char *)c->fresh_p + 254; break; /* last 2 bytes of fresh_p */
    case 7: p = NULL; break;
    case 8: p = (unsigned char *)c->lora_w + 1; break; /* odd address */
    case 9: g = (const unsigned char *)c->fresh_g + 1; break;
    default: break;
    }
    return mgpo_add_tensor_typed(st, p, pt, g, gt, n, &o, (size_t *)out_area(c));
}

/* Element sizes, including an unknown type. */
static mgpo_status dtype_sizes(void)
{
    return mgpo_dtype_size(MGPO_DTYPE_FLOAT32) == 4 && mgpo_dtype_size(MGPO_DTYPE_BFLOAT16) == 2 &&
                   mgpo_dtype_size(MGPO_DTYPE_FLOAT16) == 2 && mgpo_dtype_size((mgpo_dtype)3) == 0
               ? MGPO_OK
               : (mgpo_status)-1;
}

/* A typed pair (bf16 A and B) over the context's buffers, one field broken. */
static mgpo_status add_typed_pair(api_ctx *c, mgpo_state *st, int broken)
{
    mgpo_lora_pair_typed p;
    memset(&p, 0, sizeof p);
    p.a = c->lora_a;
    p.b = c->lora_b;
    p.adapter_type = MGPO_DTYPE_BFLOAT16;
    p.grad_type = MGPO_DTYPE_FLOAT16;
    p.rank = 2;
    p.n_in = 4;
    p.n_out = 4;
    p.scaling = 0.5;
    p.mode = MGPO_LORA_ADAPTER;
    switch (broken) {
    case 1: p.adapter_type = (mgpo_dtype)3; break;
    case 2: p.reserved[3] = 9; break;
    case 3: p.base_type = (mgpo_dtype)7; break;
    default: break;
    }
    return mgpo_add_lora_pair_typed(st, &p, NULL, (size_t *)out_area(c));
}

/* A valid pair over the context's own buffers, then one field broken. */
static mgpo_status add_pair(api_ctx *c, mgpo_state *st, int broken)
{
    mgpo_lora_pair p;
    memset(&p, 0, sizeof p);
    p.a = c->lora_a;
    p.b = c->lora_b;
    p.rank = 2;
    p.n_in = 4;
    p.n_out = 4;
    p.scaling = 0.5;
    p.mode = MGPO_LORA_ADAPTER;
    mgpo_tensor_options o = mgpo_tensor_options_default();
    switch (broken) {
    case 1: p.a = NULL; break;
    case 2: p.b = NULL; break;
    case 3: p.rank = 0; break;
    case 4: p.n_in = 0; break;
    case 5: p.n_out = 0; break;
    case 6: p.scaling = NAN; break;
    case 7: p.base_weight = c->lora_w; break; /* W given in adapter mode */
    case 8: p.mode = (mgpo_lora_mode)7; break;
    case 9: o.lr_scale = -1.0; break;
    case 10: p.b = c->lora_a; break;          /* B overlaps A */
    case 11: p.a = c->fresh_p; break;         /* A overlaps a registered tensor */
    default: break;
    }
    return mgpo_add_lora_pair(st, &p, &o, (size_t *)out_area(c));
}

static mgpo_status schedule_case(api_ctx *c, int which)
{
    mgpo_schedule s = mgpo_schedule_paper(1e-3, 100);
    switch (which) {
    case 0: s.peak_lr = -1.0; s.min_lr = -2.0; break;
    case 1: s.peak_lr = NAN; break;
    case 2: s.min_lr = 2e-3; break;
    case 3: s.min_lr = -1e-9; break;
    case 4: s.kind = (mgpo_schedule_kind)9; break;
    case 5: s.warmup_steps = 101; break;
    case 6: s.peak_lr = INFINITY; break;
    default: break;
    }
    return mgpo_schedule_lr(&s, 5, (double *)out_area(c));
}

/* Pure functions: MGPO_OK when their contract holds. */
static mgpo_status pure_version(void)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", MGPO_VERSION_MAJOR, MGPO_VERSION_MINOR,
             MGPO_VERSION_PATCH);
    return mgpo_version_number() == MGPO_VERSION_NUMBER &&
                   strcmp(mgpo_version_string(), want) == 0
               ? MGPO_OK
               : (mgpo_status)-1;
}

static mgpo_status strerror_everything(void)
{
    /* Out-of-range values give the generic text; every code its own name. */
    const int unknown[] = {-1, 31, 1000, -2147483647 - 1};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = mgpo_strerror((mgpo_status)unknown[i]);
        if (!s || strncmp(s, "MGPO_ERR_UNKNOWN", 16) != 0) return (mgpo_status)-1;
    }
    for (int code = 0; code <= MGPO_ERR_RESERVED_FIELD; code++) {
        const char *s = mgpo_strerror((mgpo_status)code);
        if (!s || strncmp(s, code ? "MGPO_ERR_" : "MGPO_OK", code ? 9 : 7) != 0 ||
            strstr(s, "UNKNOWN"))
            return (mgpo_status)-2;
    }
    return MGPO_OK;
}

static mgpo_status pure_defaults(void)
{
    mgpo_config a = mgpo_config_default(), b = mgpo_config_nlg();
    mgpo_config pa = mgpo_config_nlu_paper(), pb = mgpo_config_nlg_paper();
    /* The paper profiles are the profiles with the Trainer's clipping. */
    if (pa.max_grad_norm != 1.0 || pb.max_grad_norm != 1.0 || a.max_grad_norm != 0.0 ||
        pa.lr != a.lr || pa.rho != a.rho || pa.beta1 != a.beta1 || pa.norm_ema != a.norm_ema ||
        pb.lr != b.lr || pb.rho != b.rho || pb.beta1 != b.beta1 || pb.norm_ema != b.norm_ema ||
        a.normalize != 1 || pa.normalize != 1 || a.direction != MGPO_DIRECTION_MOMENTUM)
        return (mgpo_status)-3;
    mgpo_tensor_options o = mgpo_tensor_options_default();
    mgpo_schedule s = mgpo_schedule_paper(1e-3, 0); /* no steps: still valid */
    double lr = -1.0;
    bool ok = mgpo_config_validate(&a) == MGPO_OK && mgpo_config_validate(&b) == MGPO_OK &&
              a.rho == 0.05 && b.rho == 0.01 && o.lr_scale == 1.0 && o.perturb == 1 &&
              mgpo_schedule_lr(&s, 3, &lr) == MGPO_OK && lr == 0.0;
    return ok ? MGPO_OK : (mgpo_status)-1;
}

/* The random direction takes plain tensors only, and no all-reduce hook
 * (its norm would be local): `which` 0 adds a pair, 1 perturbs with a hook. */
static int summing_allreduce(double *v, size_t n, void *ctx)
{
    (void)v, (void)n, (void)ctx;
    return 0;
}

static mgpo_status random_direction_refuses(int which)
{
    float a[4] = {0}, b[4] = {0}, p[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1};
    mgpo_config k = mgpo_config_default();
    k.direction = MGPO_DIRECTION_RANDOM;
    mgpo_state *st = NULL;
    mgpo_status s = mgpo_create(&st, &k, NULL);
    if (s != MGPO_OK) return (mgpo_status)-1;
    if (which == 0) {
        mgpo_lora_pair pair = {a, a, b, b, NULL, 1, 4, 4, 1.0, MGPO_LORA_ADAPTER};
        s = mgpo_add_lora_pair(st, &pair, NULL, NULL);
    } else if ((s = mgpo_add_tensor(st, p, g, 4, NULL, NULL)) == MGPO_OK) {
        mgpo_set_allreduce(st, summing_allreduce, NULL);
        s = mgpo_perturb(st);
    }
    mgpo_destroy(st);
    return s;
}

static mgpo_status destroy_null(void)
{
    mgpo_destroy(NULL);
    return MGPO_OK;
}

static int failing_allreduce(double *v, size_t n, void *ctx)
{
    (void)v;
    (void)n;
    (void)ctx;
    return 1;
}

/* ---- The table ------------------------------------------------------------------ */

#define NOPATH "/nonexistent-mgpo-dir/x/ckpt.bin"
#define OUT(type) ((type *)out_area(c))
#define CK_PTR ((const void *)c->ck)
enum { PLAIN = 0, LORA = 1 };

/* X(id, function, expected code, flags, call) */
#define API_CASES(X)                                                                        \
    X(version, "mgpo_version_number", MGPO_OK, PLAIN, pure_version())                       \
    X(version_string, "mgpo_version_string", MGPO_OK, PLAIN, pure_version())                \
    X(strerror_all, "mgpo_strerror", MGPO_OK, PLAIN, strerror_everything())                 \
    X(defaults, "mgpo_config_default", MGPO_OK, PLAIN, pure_defaults())                     \
    X(nlg, "mgpo_config_nlg", MGPO_OK, PLAIN, pure_defaults())                              \
    X(nlu_paper, "mgpo_config_nlu_paper", MGPO_OK, PLAIN, pure_defaults())                  \
    X(nlg_paper, "mgpo_config_nlg_paper", MGPO_OK, PLAIN, pure_defaults())                  \
    X(validate_null, "mgpo_config_validate", MGPO_ERR_NULL_ARGUMENT, PLAIN,                 \
      mgpo_config_validate(NULL))                                                           \
    X(validate_fields, "mgpo_config_validate", MGPO_OK, PLAIN, every_bad_config())          \
    X(create_null, "mgpo_create", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_create(NULL, NULL, NULL)) \
    X(create_allocator, "mgpo_create", MGPO_ERR_NULL_ARGUMENT, PLAIN, create_bad_allocator()) \
    X(destroy_null, "mgpo_destroy", MGPO_OK, PLAIN, destroy_null())                         \
    X(get_config_st, "mgpo_get_config", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_get_config(NULL, OUT(mgpo_config)))                                              \
    X(get_config_out, "mgpo_get_config", MGPO_ERR_NULL_ARGUMENT, PLAIN,                     \
      mgpo_get_config(c->f.st, NULL))                                                       \
    X(set_lr_null, "mgpo_set_lr", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_set_lr(NULL, 1e-3))   \
    X(set_lr_neg, "mgpo_set_lr", MGPO_ERR_BAD_LR, PLAIN, mgpo_set_lr(c->f.st, -1e-3))       \
    X(set_lr_nan, "mgpo_set_lr", MGPO_ERR_BAD_LR, PLAIN, mgpo_set_lr(c->f.st, NAN))         \
    X(set_lr_inf, "mgpo_set_lr", MGPO_ERR_BAD_LR, PLAIN, mgpo_set_lr(c->f.st, INFINITY))    \
    X(set_rho_null, "mgpo_set_rho", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_set_rho(NULL, 0.1)) \
    X(set_rho_neg, "mgpo_set_rho", MGPO_ERR_BAD_RHO, PLAIN, mgpo_set_rho(c->f.st, -0.1))    \
    X(set_rho_nan, "mgpo_set_rho", MGPO_ERR_BAD_RHO, PLAIN, mgpo_set_rho(c->f.st, NAN))     \
    X(options_default, "mgpo_tensor_options_default", MGPO_OK, PLAIN, pure_defaults())      \
    X(add_null_st, "mgpo_add_tensor", MGPO_ERR_NULL_ARGUMENT, PLAIN,                        \
      mgpo_add_tensor(NULL, c->lora_w, NULL, 4, NULL, OUT(size_t)))                         \
    X(add_null_params, "mgpo_add_tensor", MGPO_ERR_NULL_ARGUMENT, PLAIN,                    \
      mgpo_add_tensor(c->fresh, NULL, NULL, 4, NULL, OUT(size_t)))                          \
    X(add_zero, "mgpo_add_tensor", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                        \
      mgpo_add_tensor(c->fresh, c->lora_w, NULL, 0, NULL, OUT(size_t)))                     \
    X(add_huge, "mgpo_add_tensor", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                        \
      mgpo_add_tensor(c->fresh, c->lora_w, NULL, SIZE_MAX, NULL, OUT(size_t)))              \
    X(add_bad_lr, "mgpo_add_tensor", MGPO_ERR_BAD_LR, PLAIN,                                \
      add_tensor_opts(c->fresh, c->lora_w, -1.0, 1.0))                                      \
    X(add_nan_lr, "mgpo_add_tensor", MGPO_ERR_BAD_LR, PLAIN,                                \
      add_tensor_opts(c->fresh, c->lora_w, NAN, 1.0))                                       \
    X(add_bad_wd, "mgpo_add_tensor", MGPO_ERR_BAD_WEIGHT_DECAY, PLAIN,                      \
      add_tensor_opts(c->fresh, c->lora_w, 1.0, -1.0))                                      \
    X(add_self_overlap, "mgpo_add_tensor", MGPO_ERR_OVERLAP, PLAIN,                         \
      mgpo_add_tensor(c->fresh, c->lora_w, c->lora_w + 2, 4, NULL, NULL))                   \
    X(add_overlap_params, "mgpo_add_tensor", MGPO_ERR_OVERLAP, PLAIN,                       \
      mgpo_add_tensor(c->fresh, c->fresh_p + 10, NULL, 4, NULL, NULL))                      \
    X(add_grads_on_params, "mgpo_add_tensor", MGPO_ERR_OVERLAP, PLAIN,                      \
      mgpo_add_tensor(c->fresh, c->lora_w, c->fresh_p + 60, 8, NULL, NULL))                 \
    X(add_after_step, "mgpo_add_tensor", MGPO_ERR_WRONG_PHASE, PLAIN,                       \
      mgpo_add_tensor(c->f.st, c->lora_w, NULL, 4, NULL, OUT(size_t)))                      \
    X(set_grad_null, "mgpo_set_grad", MGPO_ERR_NULL_ARGUMENT, PLAIN,                        \
      mgpo_set_grad(NULL, 0, c->lora_w))                                                    \
    X(set_grad_index, "mgpo_set_grad", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                    \
      mgpo_set_grad(c->f.st, FX_TENSORS, c->lora_w))                                        \
    X(set_grad_max, "mgpo_set_grad", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                      \
      mgpo_set_grad(c->f.st, SIZE_MAX, NULL))                                               \
    X(set_grad_overlap, "mgpo_set_grad", MGPO_ERR_OVERLAP, PLAIN,                           \
      mgpo_set_grad(c->f.st, 1, c->f.params[0]))                                            \
    X(count_null, "mgpo_get_tensor_count", MGPO_ERR_NULL_ARGUMENT, PLAIN,                   \
      mgpo_get_tensor_count(NULL, OUT(size_t)))                                             \
    X(count_out, "mgpo_get_tensor_count", MGPO_ERR_NULL_ARGUMENT, PLAIN,                    \
      mgpo_get_tensor_count(c->f.st, NULL))                                                 \
    X(pair_null_st, "mgpo_add_lora_pair", MGPO_ERR_NULL_ARGUMENT, PLAIN, add_pair(c, NULL, 0)) \
    X(pair_random, "mgpo_add_lora_pair", MGPO_ERR_UNSUPPORTED, PLAIN,                       \
      random_direction_refuses(0))                                                          \
    X(perturb_random_hook, "mgpo_perturb", MGPO_ERR_UNSUPPORTED, PLAIN,                     \
      random_direction_refuses(1))                                                          \
    X(pair_null_pair, "mgpo_add_lora_pair", MGPO_ERR_NULL_ARGUMENT, PLAIN,                  \
      mgpo_add_lora_pair(c->fresh, NULL, NULL, OUT(size_t)))                                \
    X(pair_null_a, "mgpo_add_lora_pair", MGPO_ERR_NULL_ARGUMENT, LORA, add_pair(c, c->fresh, 1)) \
    X(pair_null_b, "mgpo_add_lora_pair", MGPO_ERR_NULL_ARGUMENT, LORA, add_pair(c, c->fresh, 2)) \
    X(pair_rank0, "mgpo_add_lora_pair", MGPO_ERR_SHAPE, LORA, add_pair(c, c->fresh, 3))     \
    X(pair_in0, "mgpo_add_lora_pair", MGPO_ERR_SHAPE, LORA, add_pair(c, c->fresh, 4))       \
    X(pair_out0, "mgpo_add_lora_pair", MGPO_ERR_SHAPE, LORA, add_pair(c, c->fresh, 5))      \
    X(pair_scaling, "mgpo_add_lora_pair", MGPO_ERR_INVALID_ARGUMENT, LORA,                  \
      add_pair(c, c->fresh, 6))                                                             \
    X(pair_w_adapter, "mgpo_add_lora_pair", MGPO_ERR_INVALID_ARGUMENT, LORA,                \
      add_pair(c, c->fresh, 7))                                                             \
    X(pair_mode, "mgpo_add_lora_pair", MGPO_ERR_BAD_ENUM, LORA, add_pair(c, c->fresh, 8))   \
    X(pair_lr, "mgpo_add_lora_pair", MGPO_ERR_BAD_LR, LORA, add_pair(c, c->fresh, 9))       \
    X(pair_overlap, "mgpo_add_lora_pair", MGPO_ERR_OVERLAP, LORA, add_pair(c, c->fresh, 10)) \
    X(pair_overlap_tensor, "mgpo_add_lora_pair", MGPO_ERR_OVERLAP, LORA,                    \
      add_pair(c, c->fresh, 11))                                                            \
    X(pair_after_step, "mgpo_add_lora_pair", MGPO_ERR_WRONG_PHASE, LORA, add_pair(c, c->f.st, 0)) \
    X(lora_grads_null, "mgpo_set_lora_grads", MGPO_ERR_NULL_ARGUMENT, PLAIN,                \
      mgpo_set_lora_grads(NULL, 0, c->lora_a, c->lora_b))                                   \
    X(lora_grads_tensor, "mgpo_set_lora_grads", MGPO_ERR_INVALID_ARGUMENT, PLAIN,           \
      mgpo_set_lora_grads(c->f.st, 0, c->lora_a, c->lora_b))                                \
    X(lora_grads_index, "mgpo_set_lora_grads", MGPO_ERR_INVALID_ARGUMENT, PLAIN,            \
      mgpo_set_lora_grads(c->f.st, SIZE_MAX, NULL, NULL))                                   \
    X(dtype_size, "mgpo_dtype_size", MGPO_OK, PLAIN, dtype_sizes())                         \
    X(typed_null_st, "mgpo_add_tensor_typed", MGPO_ERR_NULL_ARGUMENT, PLAIN,                \
      mgpo_add_tensor_typed(NULL, c->lora_w, 1, NULL, 1, 4, NULL, NULL))                    \
    X(typed_null_params, "mgpo_add_tensor_typed", MGPO_ERR_NULL_ARGUMENT, PLAIN,            \
      add_typed(c, c->fresh, 7))                                                            \
    X(typed_param_enum, "mgpo_add_tensor_typed", MGPO_ERR_BAD_ENUM, PLAIN, add_typed(c, c->fresh, 1)) \
    X(typed_grad_enum, "mgpo_add_tensor_typed", MGPO_ERR_BAD_ENUM, PLAIN, add_typed(c, c->fresh, 2)) \
    X(typed_zero, "mgpo_add_tensor_typed", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                \
      add_typed(c, c->fresh, 3))                                                            \
    X(typed_reserved, "mgpo_add_tensor_typed", MGPO_ERR_RESERVED_FIELD, PLAIN,              \
      add_typed(c, c->fresh, 4))                                                            \
    X(typed_self_overlap, "mgpo_add_tensor_typed", MGPO_ERR_OVERLAP, PLAIN,                 \
      add_typed(c, c->fresh, 5))                                                            \
    X(typed_overlap, "mgpo_add_tensor_typed", MGPO_ERR_OVERLAP, PLAIN, add_typed(c, c->fresh, 6)) \
    X(typed_odd_params, "mgpo_add_tensor_typed", MGPO_ERR_INVALID_ARGUMENT, PLAIN,          \
      add_typed(c, c->fresh, 8))                                                            \
    X(typed_odd_grads, "mgpo_add_tensor_typed", MGPO_ERR_INVALID_ARGUMENT, PLAIN,           \
      add_typed(c, c->fresh, 9))                                                            \
    X(grad_typed_odd, "mgpo_set_grad_typed", MGPO_ERR_INVALID_ARGUMENT, PLAIN,              \
      mgpo_set_grad_typed(c->fresh, 0, (const unsigned char *)c->lora_w + 1, MGPO_DTYPE_FLOAT16)) \
    X(typed_after_step, "mgpo_add_tensor_typed", MGPO_ERR_WRONG_PHASE, PLAIN,               \
      add_typed(c, c->f.st, 0))                                                             \
    X(grad_typed_null, "mgpo_set_grad_typed", MGPO_ERR_NULL_ARGUMENT, PLAIN,                \
      mgpo_set_grad_typed(NULL, 0, c->lora_w, MGPO_DTYPE_BFLOAT16))                         \
    X(grad_typed_enum, "mgpo_set_grad_typed", MGPO_ERR_BAD_ENUM, PLAIN,                     \
      mgpo_set_grad_typed(c->fresh, 0, c->lora_w, (mgpo_dtype)3))                           \
    X(grad_typed_index, "mgpo_set_grad_typed", MGPO_ERR_INVALID_ARGUMENT, PLAIN,            \
      mgpo_set_grad_typed(c->fresh, 1, c->lora_w, MGPO_DTYPE_BFLOAT16))                     \
    X(grad_typed_overlap, "mgpo_set_grad_typed", MGPO_ERR_OVERLAP, PLAIN,                   \
      mgpo_set_grad_typed(c->fresh, 0, (const unsigned char *)c->fresh_p + 2,               \
                          MGPO_DTYPE_FLOAT16))                                              \
    X(typed_pair_null, "mgpo_add_lora_pair_typed", MGPO_ERR_NULL_ARGUMENT, PLAIN,           \
      mgpo_add_lora_pair_typed(c->fresh, NULL, NULL, OUT(size_t)))                          \
    X(typed_pair_enum, "mgpo_add_lora_pair_typed", MGPO_ERR_BAD_ENUM, LORA,                 \
      add_typed_pair(c, c->fresh, 1))                                                       \
    X(typed_pair_reserved, "mgpo_add_lora_pair_typed", MGPO_ERR_RESERVED_FIELD, LORA,       \
      add_typed_pair(c, c->fresh, 2))                                                       \
    X(typed_pair_base_enum, "mgpo_add_lora_pair_typed", MGPO_ERR_BAD_ENUM, LORA,            \
      add_typed_pair(c, c->fresh, 3))                                                       \
    X(typed_pair_after_step, "mgpo_add_lora_pair_typed", MGPO_ERR_WRONG_PHASE, LORA,        \
      add_typed_pair(c, c->f.st, 0))                                                        \
    X(lora_grads_typed_null, "mgpo_set_lora_grads_typed", MGPO_ERR_NULL_ARGUMENT, PLAIN,    \
      mgpo_set_lora_grads_typed(NULL, 0, c->lora_a, c->lora_b, MGPO_DTYPE_FLOAT16))         \
    X(lora_grads_typed_tensor, "mgpo_set_lora_grads_typed", MGPO_ERR_INVALID_ARGUMENT, PLAIN, \
      mgpo_set_lora_grads_typed(c->f.st, 0, c->lora_a, c->lora_b, MGPO_DTYPE_FLOAT16))      \
    X(master_set_null, "mgpo_set_master_weights", MGPO_ERR_NULL_ARGUMENT, PLAIN,            \
      mgpo_set_master_weights(NULL, 0, c->lora_w, 4))                                       \
    X(master_set_values, "mgpo_set_master_weights", MGPO_ERR_NULL_ARGUMENT, PLAIN,          \
      mgpo_set_master_weights(c->fresh, 0, NULL, 64))                                       \
    X(master_set_float, "mgpo_set_master_weights", MGPO_ERR_INVALID_ARGUMENT, PLAIN,        \
      mgpo_set_master_weights(c->fresh, 0, c->fresh_g, 64))                                 \
    X(master_set_index, "mgpo_set_master_weights", MGPO_ERR_INVALID_ARGUMENT, PLAIN,        \
      mgpo_set_master_weights(c->fresh, SIZE_MAX, c->fresh_g, 64))                          \
    X(master_get_null, "mgpo_get_master_weights", MGPO_ERR_NULL_ARGUMENT, PLAIN,            \
      mgpo_get_master_weights(NULL, 0, OUT(float), 4))                                      \
    X(master_get_dst, "mgpo_get_master_weights", MGPO_ERR_NULL_ARGUMENT, PLAIN,             \
      mgpo_get_master_weights(c->fresh, 0, NULL, 64))                                       \
    X(master_get_float, "mgpo_get_master_weights", MGPO_ERR_INVALID_ARGUMENT, PLAIN,        \
      mgpo_get_master_weights(c->fresh, 0, OUT(float), 64))                                 \
    X(grad_scale_null, "mgpo_set_grad_scale", MGPO_ERR_NULL_ARGUMENT, PLAIN,                \
      mgpo_set_grad_scale(NULL, 2.0))                                                       \
    X(get_grad_scale_null, "mgpo_get_grad_scale", MGPO_ERR_NULL_ARGUMENT, PLAIN,            \
      mgpo_get_grad_scale(NULL, OUT(double)))                                               \
    X(get_grad_scale_out, "mgpo_get_grad_scale", MGPO_ERR_NULL_ARGUMENT, PLAIN,             \
      mgpo_get_grad_scale(c->f.st, NULL))                                                   \
    X(to_float_null, "mgpo_convert_to_float32", MGPO_ERR_NULL_ARGUMENT, PLAIN,              \
      mgpo_convert_to_float32(NULL, c->lora_w, MGPO_DTYPE_BFLOAT16, 4))                     \
    X(to_float_enum, "mgpo_convert_to_float32", MGPO_ERR_BAD_ENUM, PLAIN,                   \
      mgpo_convert_to_float32(OUT(float), c->lora_w, (mgpo_dtype)3, 4))                     \
    X(to_float_odd, "mgpo_convert_to_float32", MGPO_ERR_INVALID_ARGUMENT, PLAIN,            \
      mgpo_convert_to_float32(OUT(float), (const unsigned char *)c->lora_w + 1,             \
                              MGPO_DTYPE_FLOAT16, 4))                                       \
    X(to_float_overlap, "mgpo_convert_to_float32", MGPO_ERR_INVALID_ARGUMENT, PLAIN,        \
      mgpo_convert_to_float32((float *)(void *)c->out.bytes,                               \
                              c->out.bytes + 4, MGPO_DTYPE_BFLOAT16, 4))                   \
    X(from_float_null, "mgpo_convert_from_float32", MGPO_ERR_NULL_ARGUMENT, PLAIN,          \
      mgpo_convert_from_float32(OUT(uint16_t), MGPO_DTYPE_FLOAT16, NULL, 4))                \
    X(from_float_enum, "mgpo_convert_from_float32", MGPO_ERR_BAD_ENUM, PLAIN,               \
      mgpo_convert_from_float32(OUT(uint16_t), (mgpo_dtype)-1, c->lora_w, 4))               \
    X(from_float_odd, "mgpo_convert_from_float32", MGPO_ERR_INVALID_ARGUMENT, PLAIN,        \
      mgpo_convert_from_float32(c->out.bytes + 1, MGPO_DTYPE_BFLOAT16, c->lora_w, 4))       \
    X(grad_scale_zero, "mgpo_set_grad_scale", MGPO_ERR_BAD_GRAD_SCALE, PLAIN,               \
      mgpo_set_grad_scale(c->f.st, 0.0))                                                    \
    X(grad_scale_neg, "mgpo_set_grad_scale", MGPO_ERR_BAD_GRAD_SCALE, PLAIN,                \
      mgpo_set_grad_scale(c->f.st, -1024.0))                                                \
    X(grad_scale_nan, "mgpo_set_grad_scale", MGPO_ERR_BAD_GRAD_SCALE, PLAIN,                \
      mgpo_set_grad_scale(c->f.st, NAN))                                                    \
    X(grad_scale_inf, "mgpo_set_grad_scale", MGPO_ERR_BAD_GRAD_SCALE, PLAIN,                \
      mgpo_set_grad_scale(c->f.st, INFINITY))                                               \
    X(grad_scale_small, "mgpo_set_grad_scale", MGPO_ERR_BAD_GRAD_SCALE, PLAIN,              \
      mgpo_set_grad_scale(c->f.st, MGPO_GRAD_SCALE_MIN / 2))                                \
    X(grad_scale_big, "mgpo_set_grad_scale", MGPO_ERR_BAD_GRAD_SCALE, PLAIN,                \
      mgpo_set_grad_scale(c->f.st, MGPO_GRAD_SCALE_MAX * 2))                                \
    X(momentum_null, "mgpo_set_momentum", MGPO_ERR_NULL_ARGUMENT, PLAIN,                    \
      mgpo_set_momentum(NULL, 0, c->lora_w))                                                \
    X(momentum_integrated, "mgpo_set_momentum", MGPO_ERR_INVALID_ARGUMENT, PLAIN,           \
      mgpo_set_momentum(c->f.st, 0, c->lora_w))                                             \
    X(momentum_typed_null, "mgpo_set_momentum_typed", MGPO_ERR_NULL_ARGUMENT, PLAIN,        \
      mgpo_set_momentum_typed(NULL, 0, c->lora_w, MGPO_DTYPE_BFLOAT16))                     \
    X(momentum_typed_integrated, "mgpo_set_momentum_typed", MGPO_ERR_INVALID_ARGUMENT, PLAIN, \
      mgpo_set_momentum_typed(c->f.st, 0, c->lora_w, MGPO_DTYPE_BFLOAT16))                  \
    X(lora_momentum_null, "mgpo_set_lora_momentum", MGPO_ERR_NULL_ARGUMENT, PLAIN,          \
      mgpo_set_lora_momentum(NULL, 0, c->lora_a, c->lora_b))                                \
    X(lora_momentum_tensor, "mgpo_set_lora_momentum", MGPO_ERR_INVALID_ARGUMENT, PLAIN,     \
      mgpo_set_lora_momentum(c->f.st, 0, c->lora_a, c->lora_b))                             \
    X(moments_null, "mgpo_get_moments", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_get_moments(NULL, 0, MGPO_MOMENT_FIRST, OUT(float), 64))                         \
    X(moments_dst, "mgpo_get_moments", MGPO_ERR_NULL_ARGUMENT, PLAIN,                       \
      mgpo_get_moments(c->fresh, 0, MGPO_MOMENT_FIRST, NULL, 64))                           \
    X(moments_which, "mgpo_get_moments", MGPO_ERR_BAD_ENUM, PLAIN,                          \
      mgpo_get_moments(c->fresh, 0, (mgpo_moment)2, OUT(float), 64))                        \
    X(moments_count, "mgpo_get_moments", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                  \
      mgpo_get_moments(c->fresh, 0, MGPO_MOMENT_SECOND, OUT(float), 63))                    \
    X(moments_index, "mgpo_get_moments", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                  \
      mgpo_get_moments(c->fresh, 1, MGPO_MOMENT_FIRST, OUT(float), 64))                     \
    X(perturb_null, "mgpo_perturb", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_perturb(NULL))      \
    X(perturb_empty, "mgpo_perturb", MGPO_ERR_NO_TENSORS, PLAIN, mgpo_perturb(c->empty))    \
    X(restore_null, "mgpo_restore", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_restore(NULL))      \
    X(step_null, "mgpo_step", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_step(NULL))               \
    X(step_empty, "mgpo_step", MGPO_ERR_NO_TENSORS, PLAIN, mgpo_step(c->empty))             \
    X(step_nograd, "mgpo_step", MGPO_ERR_NO_GRADIENT, PLAIN, mgpo_step(c->nograd))          \
    X(is_perturbed_null, "mgpo_is_perturbed", MGPO_ERR_NULL_ARGUMENT, PLAIN,                \
      mgpo_is_perturbed(NULL, OUT(int)))                                                    \
    X(is_perturbed_out, "mgpo_is_perturbed", MGPO_ERR_NULL_ARGUMENT, PLAIN,                 \
      mgpo_is_perturbed(c->f.st, NULL))                                                     \
    X(stats_null, "mgpo_get_stats", MGPO_ERR_NULL_ARGUMENT, PLAIN,                          \
      mgpo_get_stats(NULL, OUT(mgpo_stats)))                                                \
    X(stats_out, "mgpo_get_stats", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_get_stats(c->f.st, NULL)) \
    X(units_null, "mgpo_get_unit_count", MGPO_ERR_NULL_ARGUMENT, PLAIN,                     \
      mgpo_get_unit_count(NULL, OUT(size_t)))                                               \
    X(units_out, "mgpo_get_unit_count", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_get_unit_count(c->f.st, NULL))                                                   \
    X(unit_null, "mgpo_get_unit_stats", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_get_unit_stats(NULL, 0, OUT(mgpo_unit_stats)))                                   \
    X(unit_out, "mgpo_get_unit_stats", MGPO_ERR_NULL_ARGUMENT, PLAIN,                       \
      mgpo_get_unit_stats(c->f.st, 0, NULL))                                                \
    X(unit_range, "mgpo_get_unit_stats", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                  \
      mgpo_get_unit_stats(c->f.st, 1, OUT(mgpo_unit_stats)))                                \
    X(unit_max, "mgpo_get_unit_stats", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                    \
      mgpo_get_unit_stats(c->f.st, SIZE_MAX, OUT(mgpo_unit_stats)))                         \
    X(unit_empty, "mgpo_get_unit_stats", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                  \
      mgpo_get_unit_stats(c->fresh, 1, OUT(mgpo_unit_stats)))                               \
    X(paper, "mgpo_schedule_paper", MGPO_OK, PLAIN, pure_defaults())                        \
    X(schedule_null, "mgpo_schedule_lr", MGPO_ERR_NULL_ARGUMENT, PLAIN,                     \
      mgpo_schedule_lr(NULL, 0, OUT(double)))                                               \
    X(schedule_out, "mgpo_schedule_lr", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_schedule_lr(&(mgpo_schedule){MGPO_SCHEDULE_CONSTANT, 1, 0, 0, 1}, 0, NULL))      \
    X(schedule_neg, "mgpo_schedule_lr", MGPO_ERR_BAD_LR, PLAIN, schedule_case(c, 0))        \
    X(schedule_nan, "mgpo_schedule_lr", MGPO_ERR_BAD_LR, PLAIN, schedule_case(c, 1))        \
    X(schedule_min, "mgpo_schedule_lr", MGPO_ERR_BAD_LR, PLAIN, schedule_case(c, 2))        \
    X(schedule_min_neg, "mgpo_schedule_lr", MGPO_ERR_BAD_LR, PLAIN, schedule_case(c, 3))    \
    X(schedule_kind, "mgpo_schedule_lr", MGPO_ERR_BAD_ENUM, PLAIN, schedule_case(c, 4))     \
    X(schedule_warmup, "mgpo_schedule_lr", MGPO_ERR_INVALID_ARGUMENT, PLAIN, schedule_case(c, 5)) \
    X(schedule_inf, "mgpo_schedule_lr", MGPO_ERR_BAD_LR, PLAIN, schedule_case(c, 6))        \
    X(size_null, "mgpo_checkpoint_size", MGPO_ERR_NULL_ARGUMENT, PLAIN,                     \
      mgpo_checkpoint_size(NULL, OUT(size_t)))                                              \
    X(size_out, "mgpo_checkpoint_size", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_checkpoint_size(c->f.st, NULL))                                                  \
    X(save_null, "mgpo_save", MGPO_ERR_NULL_ARGUMENT, PLAIN,                                \
      mgpo_save(NULL, c->out.bytes + 64, 64, OUT(size_t)))                                  \
    X(save_buffer, "mgpo_save", MGPO_ERR_NULL_ARGUMENT, PLAIN,                              \
      mgpo_save(c->f.st, NULL, 1u << 20, OUT(size_t)))                                      \
    X(save_written, "mgpo_save", MGPO_ERR_NULL_ARGUMENT, PLAIN,                             \
      mgpo_save(c->f.st, c->out.bytes + 64, 64, NULL))                                      \
    X(save_small, "mgpo_save", MGPO_ERR_BUFFER_TOO_SMALL, PLAIN,                            \
      mgpo_save(c->f.st, c->out.bytes + 64, 400, OUT(size_t)))                              \
    X(save_zero, "mgpo_save", MGPO_ERR_BUFFER_TOO_SMALL, PLAIN,                             \
      mgpo_save(c->f.st, c->out.bytes + 64, 0, OUT(size_t)))                                \
    X(load_null, "mgpo_load", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_load(NULL, CK_PTR, c->ck_size)) \
    X(load_buffer, "mgpo_load", MGPO_ERR_NULL_ARGUMENT, PLAIN, mgpo_load(c->f.st, NULL, 16)) \
    X(load_empty, "mgpo_load", MGPO_ERR_CHECKPOINT_TRUNCATED, PLAIN,                        \
      mgpo_load(c->f.st, CK_PTR, 0))                                                        \
    X(load_short, "mgpo_load", MGPO_ERR_CHECKPOINT_TRUNCATED, PLAIN,                        \
      mgpo_load(c->f.st, CK_PTR, c->ck_size - 1))                                           \
    X(load_other, "mgpo_load", MGPO_ERR_CHECKPOINT_LAYOUT, PLAIN,                           \
      mgpo_load(c->fresh, CK_PTR, c->ck_size))                                              \
    X(load_into_empty, "mgpo_load", MGPO_ERR_CHECKPOINT_LAYOUT, PLAIN,                      \
      mgpo_load(c->empty, CK_PTR, c->ck_size))                                              \
    X(save_file_null, "mgpo_save_file", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_save_file(NULL, NOPATH))                                                         \
    X(save_file_path, "mgpo_save_file", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_save_file(c->f.st, NULL))                                                        \
    X(save_file_empty, "mgpo_save_file", MGPO_ERR_INVALID_ARGUMENT, PLAIN,                  \
      mgpo_save_file(c->f.st, ""))                                                          \
    X(save_file_io, "mgpo_save_file", MGPO_ERR_IO, PLAIN, mgpo_save_file(c->f.st, NOPATH))  \
    X(load_file_null, "mgpo_load_file", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_load_file(NULL, NOPATH))                                                         \
    X(load_file_path, "mgpo_load_file", MGPO_ERR_NULL_ARGUMENT, PLAIN,                      \
      mgpo_load_file(c->f.st, NULL))                                                        \
    X(load_file_io, "mgpo_load_file", MGPO_ERR_IO, PLAIN, mgpo_load_file(c->f.st, NOPATH))  \
    X(load_file_dir, "mgpo_load_file", MGPO_ERR_IO, PLAIN, mgpo_load_file(c->f.st, "/"))    \
    X(save_user_null, "mgpo_save_with_user", MGPO_ERR_NULL_ARGUMENT, PLAIN,                 \
      mgpo_save_with_user(NULL, "u", 1, c->out.bytes + 64, 64, OUT(size_t)))                \
    X(save_user_record, "mgpo_save_with_user", MGPO_ERR_NULL_ARGUMENT, PLAIN,               \
      mgpo_save_with_user(c->f.st, NULL, 1, c->out.bytes + 64, 64, OUT(size_t)))            \
    X(save_user_small, "mgpo_save_with_user", MGPO_ERR_BUFFER_TOO_SMALL, PLAIN,             \
      mgpo_save_with_user(c->f.st, "u", 1, c->out.bytes + 64, 400, OUT(size_t)))            \
    X(save_user_huge, "mgpo_save_with_user", MGPO_ERR_INVALID_ARGUMENT, PLAIN,              \
      mgpo_save_with_user(c->f.st, "u", SIZE_MAX - 8, c->out.bytes + 64, 400, OUT(size_t))) \
    X(load_user_null, "mgpo_load_with_user", MGPO_ERR_NULL_ARGUMENT, PLAIN,                 \
      mgpo_load_with_user(NULL, CK_PTR, c->ck_size, c->out.bytes + 64, 64, OUT(size_t)))    \
    X(load_user_size, "mgpo_load_with_user", MGPO_ERR_NULL_ARGUMENT, PLAIN,                 \
      mgpo_load_with_user(c->f.st, CK_PTR, c->ck_size, c->out.bytes + 64, 64, NULL))        \
    X(load_user_buffer, "mgpo_load_with_user", MGPO_ERR_NULL_ARGUMENT, PLAIN,               \
      mgpo_load_with_user(c->f.st, CK_PTR, c->ck_size, NULL, 64, OUT(size_t)))              \
    X(load_user_none, "mgpo_load_with_user", MGPO_ERR_CHECKPOINT_LAYOUT, PLAIN,             \
      mgpo_load_with_user(c->f.st, CK_PTR, c->ck_size, c->out.bytes + 64, 64, OUT(size_t))) \
    X(save_file_user_null, "mgpo_save_file_with_user", MGPO_ERR_NULL_ARGUMENT, PLAIN,       \
      mgpo_save_file_with_user(c->f.st, NOPATH, NULL, 1))                                   \
    X(save_file_user_io, "mgpo_save_file_with_user", MGPO_ERR_IO, PLAIN,                    \
      mgpo_save_file_with_user(c->f.st, NOPATH, "u", 1))                                    \
    X(load_file_user_null, "mgpo_load_file_with_user", MGPO_ERR_NULL_ARGUMENT, PLAIN,       \
      mgpo_load_file_with_user(c->f.st, NOPATH, c->out.bytes + 64, 64, NULL))               \
    X(load_file_user_io, "mgpo_load_file_with_user", MGPO_ERR_IO, PLAIN,                    \
      mgpo_load_file_with_user(c->f.st, NOPATH, c->out.bytes + 64, 64, OUT(size_t)))        \
    X(allreduce_null, "mgpo_set_allreduce", MGPO_ERR_NULL_ARGUMENT, PLAIN,                  \
      mgpo_set_allreduce(NULL, failing_allreduce, NULL))

#define DEFINE_CASE(id, fn, code, flags, call) \
    static mgpo_status case_##id(api_ctx *c)   \
    {                                          \
        (void)c;                               \
        return (call);                         \
    }
API_CASES(DEFINE_CASE)

typedef struct api_case {
    const char *id, *function;
    mgpo_status code;
    int flags;
    mgpo_status (*call)(api_ctx *c);
} api_case;

#define CASE_ENTRY(id, fn, code, flags, call) {#id, fn, code, flags, case_##id},
static const api_case cases[] = {API_CASES(CASE_ENTRY)};
enum { CASE_COUNT = sizeof cases / sizeof cases[0] };

/* ---- Snapshots: "changes nothing" ------------------------------------------ */

typedef struct snapshot {
    unsigned char *ck[4];
    size_t size[4];
    mgpo_stats stats[4];
    mgpo_config config[4];
    size_t tensors[4];
    float *params[FX_TENSORS], *grads[FX_TENSORS];
    float fresh_p[64], fresh_g[64], nograd_p[16], lora[32];
} snapshot;

static void states(api_ctx *c, mgpo_state *st[4])
{
    st[0] = c->f.st;
    st[1] = c->fresh;
    st[2] = c->empty;
    st[3] = c->nograd;
}

static void take(api_ctx *c, snapshot *s)
{
    mgpo_state *st[4];
    states(c, st);
    for (int i = 0; i < 4; i++) {
        s->ck[i] = fx_save(st[i], &s->size[i]);
        ck_assert_ptr_nonnull(s->ck[i]);
        ck_assert_int_eq(mgpo_get_stats(st[i], &s->stats[i]), MGPO_OK);
        ck_assert_int_eq(mgpo_get_config(st[i], &s->config[i]), MGPO_OK);
        ck_assert_int_eq(mgpo_get_tensor_count(st[i], &s->tensors[i]), MGPO_OK);
    }
    for (size_t k = 0; k < FX_TENSORS; k++) {
        s->params[k] = malloc(c->f.count[k] * sizeof(float));
        s->grads[k] = malloc(c->f.count[k] * sizeof(float));
        memcpy(s->params[k], c->f.params[k], c->f.count[k] * sizeof(float));
        memcpy(s->grads[k], c->f.grads[k], c->f.count[k] * sizeof(float));
    }
    memcpy(s->fresh_p, c->fresh_p, sizeof s->fresh_p);
    memcpy(s->fresh_g, c->fresh_g, sizeof s->fresh_g);
    memcpy(s->nograd_p, c->nograd_p, sizeof s->nograd_p);
    memcpy(s->lora, c->lora_a, sizeof c->lora_a);
    memcpy(s->lora + 8, c->lora_b, sizeof c->lora_b);
    memcpy(s->lora + 16, c->lora_w, sizeof c->lora_w);
}

/* Field by field: the struct has padding, which memcmp would read. */
static int same_config(const mgpo_config *a, const mgpo_config *b)
{
    return a->optimizer == b->optimizer && a->lr == b->lr && a->beta1 == b->beta1 &&
           a->beta2 == b->beta2 && a->eps == b->eps && a->weight_decay == b->weight_decay &&
           a->momentum == b->momentum && a->dampening == b->dampening &&
           a->nesterov == b->nesterov && a->rho == b->rho && a->norm_ema == b->norm_ema &&
           a->scale_max == b->scale_max && a->norm_eps == b->norm_eps && a->sign == b->sign &&
           a->scope == b->scope && a->restore_mode == b->restore_mode &&
           a->max_grad_norm == b->max_grad_norm && a->num_threads == b->num_threads &&
           a->optimizer_mode == b->optimizer_mode;
}

static void assert_unchanged(api_ctx *c, snapshot *s, const char *id)
{
    mgpo_state *st[4];
    states(c, st);
    for (int i = 0; i < 4; i++) {
        mgpo_stats stats;
        mgpo_config config;
        size_t tensors = 0;
        ck_assert_msg(fx_state_is(st[i], s->ck[i], s->size[i]), "%s changed state %d", id, i);
        ck_assert_int_eq(mgpo_get_stats(st[i], &stats), MGPO_OK);
        ck_assert_int_eq(mgpo_get_config(st[i], &config), MGPO_OK);
        ck_assert_int_eq(mgpo_get_tensor_count(st[i], &tensors), MGPO_OK);
        ck_assert_msg(memcmp(&stats, &s->stats[i], sizeof stats) == 0, "%s: stats", id);
        ck_assert_msg(same_config(&config, &s->config[i]), "%s: config", id);
        ck_assert_msg(tensors == s->tensors[i], "%s: tensor count", id);
        free(s->ck[i]);
    }
    for (size_t k = 0; k < FX_TENSORS; k++) {
        ck_assert_msg(!memcmp(s->params[k], c->f.params[k], c->f.count[k] * sizeof(float)) &&
                          !memcmp(s->grads[k], c->f.grads[k], c->f.count[k] * sizeof(float)),
                      "%s changed caller buffers", id);
        free(s->params[k]);
        free(s->grads[k]);
    }
    ck_assert_msg(!memcmp(s->fresh_p, c->fresh_p, sizeof s->fresh_p) &&
                      !memcmp(s->fresh_g, c->fresh_g, sizeof s->fresh_g) &&
                      !memcmp(s->nograd_p, c->nograd_p, sizeof s->nograd_p) &&
                      !memcmp(s->lora, c->lora_a, sizeof c->lora_a) &&
                      !memcmp(s->lora + 8, c->lora_b, sizeof c->lora_b) &&
                      !memcmp(s->lora + 16, c->lora_w, sizeof c->lora_w),
                  "%s changed caller buffers", id);
    for (size_t i = 0; i < sizeof c->out.bytes; i++)
        ck_assert_msg(c->out.bytes[i] == 0x5A, "%s wrote an output on error", id);
}

static void ctx_init(api_ctx *c)
{
    memset(c, 0, sizeof *c);
    memset(c->out.bytes, 0x5A, sizeof c->out.bytes);
    mgpo_config cfg = fx_config(MGPO_OPTIMIZER_ADAMW, MGPO_SCOPE_GLOBAL, MGPO_RESTORE_EXACT);
    ck_assert_int_eq(fx_init(&c->f, &cfg, 64), MGPO_OK);
    for (uint64_t t = 0; t < 2; t++) ck_assert_int_eq(fx_iterate(&c->f, t), MGPO_OK);
    ck_assert_int_eq(mgpo_perturb(c->f.st), MGPO_OK);
    c->ck = fx_save(c->f.st, &c->ck_size);
    for (int i = 0; i < 64; i++) c->fresh_p[i] = c->fresh_g[i] = (float)i;
    for (int i = 0; i < 16; i++) c->nograd_p[i] = c->lora_w[i] = 0.5f * (float)i;
    for (int i = 0; i < 8; i++) c->lora_a[i] = c->lora_b[i] = -(float)i;
    ck_assert_int_eq(mgpo_create(&c->fresh, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(c->fresh, c->fresh_p, c->fresh_g, 64, NULL, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_create(&c->empty, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_create(&c->nograd, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(mgpo_add_tensor(c->nograd, c->nograd_p, NULL, 16, NULL, NULL), MGPO_OK);

    /* Probe: a valid pair registers, so the LoRA rows test real checks. */
    mgpo_state *probe = NULL;
    ck_assert_int_eq(mgpo_create(&probe, &cfg, NULL), MGPO_OK);
    ck_assert_int_eq(add_pair(c, probe, 0), MGPO_OK);
    mgpo_destroy(probe);
    memset(c->out.bytes, 0x5A, sizeof c->out.bytes);
}

static void ctx_free(api_ctx *c)
{
    free(c->ck);
    fx_free(&c->f);
    mgpo_destroy(c->fresh);
    mgpo_destroy(c->empty);
    mgpo_destroy(c->nograd);
}

START_TEST(test_row)
{
    api_ctx c;
    ctx_init(&c);
    const api_case *row = &cases[_i];
    mgpo_status want = row->code;
    snapshot s;
    take(&c, &s);
    mgpo_status got = row->call(&c);
    ck_assert_msg(got == want, "%s (%s): got %d (%s), want %d", row->id, row->function, (int)got,
                  mgpo_strerror(got), (int)want);
    assert_unchanged(&c, &s, row->id);
    ctx_free(&c);
}
END_TEST

/* Every function the header declares has at least one row. */
START_TEST(test_table_covers_header)
{
    api_ctx c;
    ctx_init(&c); /* probes the LoRA feature */
    ctx_free(&c);
    FILE *h = fopen(MGPO_PUBLIC_HEADER, "r");
    ck_assert_ptr_nonnull(h);
    char line[1024];
    int functions = 0;
    while (fgets(line, sizeof line, h)) {
        const char *api = strstr(line, "MGPO_API ");
        if (!api || line[0] == '#' || strstr(line, "define")) continue;
        const char *paren = strchr(api, '(');
        ck_assert_ptr_nonnull(paren);
        const char *name = paren;
        while (name > api && (name[-1] == '_' || (name[-1] >= 'a' && name[-1] <= 'z') ||
                              (name[-1] >= '0' && name[-1] <= '9')))
            name--;
        size_t len = (size_t)(paren - name);
        int covered = 0;
        for (int i = 0; i < CASE_COUNT; i++)
            if (strlen(cases[i].function) == len && !strncmp(cases[i].function, name, len))
                covered = 1;
        ck_assert_msg(covered, "no row for %.*s", (int)len, name);
        functions++;
    }
    fclose(h);
    ck_assert_int_ge(functions, 32);
    printf("api table: %d rows over %d public functions\n", CASE_COUNT, functions);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api_table");
    TCase *tc = tcase_create("rows");
    tcase_add_loop_test(tc, test_row, 0, CASE_COUNT);
    tcase_add_test(tc, test_table_covers_header);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
