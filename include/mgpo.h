/*
 * libmgpo: Momentum-Guided Perturbation Optimization (LoRA-MGPO, Chang et al.,
 * arXiv 2502.14538) for C and C++ training loops.
 *
 * One iteration of a training loop:
 *
 *     mgpo_perturb(st);          // theta += c * m    (before the forward pass)
 *     forward(); backward();     // caller fills the gradient buffers
 *     mgpo_restore(st);          // theta = theta0    (optional: step restores)
 *     mgpo_step(st);             // AdamW / SGD update of the clean theta
 *
 * The numbers computed are specified in docs/algorithm.md (and the project's
 * numerical contract).  This header is the whole public API.
 *
 * Ownership in one paragraph: the caller owns every float buffer it registers
 * (parameters, gradients, LoRA base weights) and must keep them alive and at
 * the same address until the state is destroyed or the pointer is replaced
 * with mgpo_set_grad().  The library never frees, reallocates or writes past
 * `count` elements of them, never writes into a gradient buffer, and keeps no
 * pointer to them after mgpo_destroy().  Everything else (moments, restore
 * data, statistics) is owned by the state.
 *
 * Threads: the library has no global state.  Separate states are fully
 * independent and may be used from different threads at once.  One state must
 * not be used by two threads at the same time (the caller serialises); the
 * read-only calls (mgpo_get_*, mgpo_checkpoint_size, mgpo_save,
 * mgpo_save_file) may run
 * concurrently with each other but not with a call that changes the state.
 * With OpenMP enabled a state may use worker threads inside a call
 * (mgpo_config.num_threads); results are bitwise identical for any count.
 */
#ifndef MGPO_H
#define MGPO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ------------------------------------------------------------ */

#define MGPO_VERSION_MAJOR 0
#define MGPO_VERSION_MINOR 1
#define MGPO_VERSION_PATCH 0
#define MGPO_VERSION_NUMBER \
    (MGPO_VERSION_MAJOR * 10000 + MGPO_VERSION_MINOR * 100 + MGPO_VERSION_PATCH)
#define MGPO_VERSION_STRING "0.1.0"

/* ---- Symbol visibility -------------------------------------------------- */

#if defined(MGPO_STATIC_DEFINE)
#  define MGPO_API
#elif defined(_WIN32)
#  ifdef MGPO_BUILDING_LIBRARY
#    define MGPO_API __declspec(dllexport)
#  else
#    define MGPO_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define MGPO_API __attribute__((visibility("default")))
#else
#  define MGPO_API
#endif

/** Runtime version as MGPO_VERSION_NUMBER (major*10000 + minor*100 + patch).
 *  Thread-safe, never fails.  Compare with the macro to detect a header and
 *  library mismatch. */
MGPO_API unsigned mgpo_version_number(void);

/** Runtime version as a static "MAJOR.MINOR.PATCH" string; never NULL, never
 *  to be freed.  Thread-safe. */
MGPO_API const char *mgpo_version_string(void);

/* ---- Error codes -------------------------------------------------------- */

/** Every fallible call returns one of these.  Values are pinned (part of the
 *  ABI) and never reused.  On any error other than MGPO_ERR_NONFINITE_GRADIENT
 *  the call has changed nothing: not the state, not the caller's buffers.
 *  MGPO_ERR_NONFINITE_GRADIENT restores a perturbed state (so the caller's
 *  parameters are clean) and counts a skipped step, and changes nothing else. */
typedef enum mgpo_status {
    MGPO_OK = 0,
    MGPO_ERR_NULL_ARGUMENT = 1,       /* a required pointer is NULL */
    MGPO_ERR_INVALID_ARGUMENT = 2,    /* zero count, bad index, bad size ... */
    MGPO_ERR_OUT_OF_MEMORY = 3,       /* the allocator returned NULL */
    MGPO_ERR_BAD_LR = 4,              /* lr or lr scale negative or not finite */
    MGPO_ERR_BAD_BETA = 5,            /* a beta/momentum/dampening/EMA outside [0, 1) */
    MGPO_ERR_BAD_EPSILON = 6,         /* eps or norm_eps <= 0 or not finite */
    MGPO_ERR_BAD_WEIGHT_DECAY = 7,    /* weight decay negative or not finite */
    MGPO_ERR_BAD_RHO = 8,             /* rho negative or not finite */
    MGPO_ERR_BAD_SCALE_MAX = 9,       /* scale_max <= 0 or not finite */
    MGPO_ERR_BAD_ENUM = 10,           /* unknown optimizer, sign, scope, mode */
    MGPO_ERR_BAD_CLIP = 11,           /* max_grad_norm negative or not finite */
    MGPO_ERR_BAD_THREADS = 12,        /* num_threads negative */
    MGPO_ERR_OVERLAP = 13,            /* a registered buffer overlaps another */
    MGPO_ERR_NO_TENSORS = 14,         /* perturb/step with nothing registered */
    MGPO_ERR_NO_GRADIENT = 15,        /* step while a gradient pointer is NULL */
    MGPO_ERR_NONFINITE_GRADIENT = 16, /* a gradient holds NaN or Inf: skipped */
    MGPO_ERR_WRONG_PHASE = 17,        /* call not allowed now (e.g. add after step) */
    MGPO_ERR_SHAPE = 18,              /* LoRA pair dimensions inconsistent */
    MGPO_ERR_BUFFER_TOO_SMALL = 19,   /* checkpoint buffer smaller than needed */
    MGPO_ERR_IO = 20,                 /* file open/write/flush/rename failed */
    MGPO_ERR_CHECKPOINT_MAGIC = 21,   /* not a libmgpo checkpoint */
    MGPO_ERR_CHECKPOINT_VERSION = 22, /* unsupported format version */
    MGPO_ERR_CHECKPOINT_ENDIAN = 23,  /* written on a machine of other byte order */
    MGPO_ERR_CHECKPOINT_LAYOUT = 24,  /* tensors/config do not match this state, or invalid values */
    MGPO_ERR_CHECKPOINT_CHECKSUM = 25,/* payload corrupted */
    MGPO_ERR_CHECKPOINT_TRUNCATED = 26,/* data ends early (or trailing bytes) */
    MGPO_ERR_ALLREDUCE = 27,          /* the caller's all-reduce hook failed */
    MGPO_ERR_UNSUPPORTED = 28         /* feature not compiled in / not available */
} mgpo_status;

/** A static, human-readable name for a status ("MGPO_ERR_OVERLAP: ...").
 *  Unknown values give a generic string; never NULL.  Thread-safe. */
MGPO_API const char *mgpo_strerror(mgpo_status status);

/* ---- Configuration ------------------------------------------------------ */

typedef enum mgpo_optimizer {
    MGPO_OPTIMIZER_ADAMW = 0, /* torch.optim.AdamW, amsgrad=False */
    MGPO_OPTIMIZER_SGD = 1    /* torch.optim.SGD with momentum */
} mgpo_optimizer;

/** Which way the parameters are nudged along the momentum m. */
typedef enum mgpo_sign {
    MGPO_SIGN_LOOKAHEAD = -1, /* theta - c*m: the authors' code, Momentum-SAM (default) */
    MGPO_SIGN_ASCENT = 1      /* theta + c*m: literal reading of the paper's Eq. 3 */
} mgpo_sign;

/** Which tensors share one momentum norm and one gradient-norm EMA. */
typedef enum mgpo_scope {
    MGPO_SCOPE_GLOBAL = 0, /* all perturbed tensors and pairs form one unit (paper) */
    MGPO_SCOPE_TENSOR = 1  /* each tensor / LoRA pair is its own unit (authors' code) */
} mgpo_scope;

/** How a perturbation is undone. */
typedef enum mgpo_restore_mode {
    MGPO_RESTORE_EXACT = 0,     /* bit-exact restore; reserves 4 B/param (a list
                                   of the values theta - c*m would miss, or a
                                   copy) */
    MGPO_RESTORE_LOW_MEMORY = 1 /* nothing kept: theta -= c*m; NOT bit-exact */
} mgpo_restore_mode;

/** Which direction the perturbation follows (docs/algorithm.md). */
typedef enum mgpo_direction {
    MGPO_DIRECTION_MOMENTUM = 0, /* along the optimizer's momentum m (MGPO) */
    MGPO_DIRECTION_RANDOM = 1    /* an isotropic Gaussian direction z with the norm
                                    the momentum perturbation would have: the
                                    paper's Table 4 baseline; plain tensors only */
} mgpo_direction;

/** Optimizer configuration.  Obtain one from mgpo_config_default() or
 *  mgpo_config_nlg() and change fields; every field is validated by
 *  mgpo_create().  Hyper-parameters are doubles, as Python floats in torch. */
typedef struct mgpo_config {
    mgpo_optimizer optimizer;  /* AdamW (default) or SGD */
    double lr;                 /* base learning rate, >= 0; see mgpo_set_lr */
    double beta1;              /* AdamW beta1 in [0,1) */
    double beta2;              /* AdamW beta2 in [0,1) */
    double eps;                /* AdamW epsilon, > 0 */
    double weight_decay;       /* AdamW decoupled / SGD coupled L2, >= 0 */
    double momentum;           /* SGD mu in [0,1) */
    double dampening;          /* SGD dampening in [0,1) */
    int nesterov;              /* SGD Nesterov (0/1, else BAD_ENUM); needs momentum > 0
                                  and dampening 0 (else BAD_BETA), as torch */
    double rho;                /* perturbation radius rho >= 0; 0 = plain optimizer */
    double norm_ema;           /* beta of the gradient-norm EMA in [0,1) */
    double scale_max;          /* s_max, clamp of 1/(gbar+norm_eps), > 0 (10) */
    double norm_eps;           /* epsilon_n in the norms, > 0 (1e-12) */
    mgpo_sign sign;            /* lookahead (default) or ascent */
    mgpo_scope scope;          /* global (default) or per tensor */
    mgpo_restore_mode restore_mode; /* exact (default) or low memory */
    double max_grad_norm;      /* > 0 enables global-norm clipping; 0 = off */
    int num_threads;           /* worker threads per call; 0 = OpenMP default (as at
                                  creation, at most), 1 = none; capped at 1024 */
    /* Research switches (docs/algorithm.md, "Ablations"). */
    int normalize;             /* 1 (default): s = min(1/(gbar+norm_eps), scale_max),
                                  the adaptive perturbation normalisation (APN);
                                  0: s = 1 (the authors' mgpo_normalize=False,
                                  the paper's Fig. 4 ablation); else BAD_ENUM */
    mgpo_direction direction;  /* momentum (default) or random (Table 4 baseline) */
    uint64_t seed;             /* key of the random direction's generator (any value) */
} mgpo_config;

/** The paper's `nlu` profile (T5-base on GLUE), the library default:
 *  AdamW, lr 1e-4, beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0,
 *  rho 0.05, norm_ema 0.9, scale_max 10, norm_eps 1e-12, lookahead, global
 *  scope, exact restore, no clipping, num_threads 1, normalize 1, momentum
 *  direction, seed 0; SGD fields: momentum 0.9, dampening 0, nesterov 0.
 *  Pure function, thread-safe. */
MGPO_API mgpo_config mgpo_config_default(void);

/** The paper's `nlg` profile (LLaMA-2-7B): as the default but lr 2e-5,
 *  beta1 = momentum = 0.8, norm_ema 0.8, rho 0.01.  Pure, thread-safe. */
MGPO_API mgpo_config mgpo_config_nlg(void);

/** The `nlu` profile as the authors ran it: mgpo_config_default() with
 *  max_grad_norm 1.0, the default of the Hugging Face Trainer their
 *  experiments used (docs/algorithm.md, "Defaults and profiles").  Pure,
 *  thread-safe. */
MGPO_API mgpo_config mgpo_config_nlu_paper(void);

/** The `nlg` profile as the authors ran it: mgpo_config_nlg() with
 *  max_grad_norm 1.0.  Pure, thread-safe. */
MGPO_API mgpo_config mgpo_config_nlg_paper(void);

/** Validates a configuration without creating a state.  Returns MGPO_OK or
 *  the specific MGPO_ERR_BAD_* code of the first failing check, in this
 *  order: enums (optimizer, sign, scope, restore_mode, nesterov, normalize,
 *  direction), lr, betas
 *  (beta1, beta2, momentum, dampening, norm_ema, then the nesterov rule),
 *  eps and norm_eps, weight_decay, rho, scale_max, max_grad_norm,
 *  num_threads.  Fields of the optimizer not selected are checked too.
 *  NULL gives MGPO_ERR_NULL_ARGUMENT.  Thread-safe. */
MGPO_API mgpo_status mgpo_config_validate(const mgpo_config *config);

/* ---- Allocator ---------------------------------------------------------- */

/** Optional caller-supplied allocator.  `alloc` must return memory aligned to
 *  at least 16 bytes (the library aligns its large buffers to 64 itself) or
 *  NULL; `free` receives pointers from `alloc` with the same size, and never
 *  NULL.  Both get `ctx` as the first argument.  They are called only inside
 *  mgpo_create, mgpo_add_*, mgpo_destroy, and for temporary buffers inside
 *  mgpo_save_file and mgpo_load_file (never in perturb/restore/step). */
typedef struct mgpo_allocator {
    void *(*alloc)(void *ctx, size_t size);
    void (*free)(void *ctx, void *ptr, size_t size);
    void *ctx;
} mgpo_allocator;

/* ---- State -------------------------------------------------------------- */

/** The opaque optimizer state. */
typedef struct mgpo_state mgpo_state;

/** Creates a state.  `config` is copied (NULL means mgpo_config_default()).
 *  `allocator` is copied (NULL means malloc/free); its ctx must stay valid
 *  until mgpo_destroy.  On success *out holds a new state owned by the
 *  caller, to be released with mgpo_destroy().
 *  Errors: MGPO_ERR_NULL_ARGUMENT (out NULL, or an allocator whose alloc or
 *  free is NULL), any MGPO_ERR_BAD_* from validation,
 *  MGPO_ERR_OUT_OF_MEMORY; *out is set to NULL on error (when out is not).
 *  Thread-safe (touches nothing shared). */
MGPO_API mgpo_status mgpo_create(mgpo_state **out, const mgpo_config *config,
                                 const mgpo_allocator *allocator);

/** Frees everything the state owns.  Accepts NULL.  Does not touch the
 *  caller's buffers: if the state is perturbed, the parameters keep their
 *  perturbed values (call mgpo_restore first to get clean ones). */
MGPO_API void mgpo_destroy(mgpo_state *state);

/** Copies the configuration in force into *out.  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_get_config(const mgpo_state *state, mgpo_config *out);

/** Sets the learning rate used by the next mgpo_step (call before every step
 *  to follow a schedule); mgpo_get_config reports it as config.lr.  Errors:
 *  NULL_ARGUMENT, BAD_LR (negative or not finite); nothing changes on
 *  error. */
MGPO_API mgpo_status mgpo_set_lr(mgpo_state *state, double lr);

/** Sets rho (config.rho) for the next perturb (e.g. a rho schedule).  A
 *  perturbation already applied keeps its remembered coefficient.  Errors:
 *  NULL_ARGUMENT, BAD_RHO; nothing changes on error. */
MGPO_API mgpo_status mgpo_set_rho(mgpo_state *state, double rho);

/* ---- Tensors ------------------------------------------------------------ */

/** Per-tensor options, like a torch parameter group. */
typedef struct mgpo_tensor_options {
    double lr_scale;           /* multiplies the state's lr (LoRA+: larger on B); >= 0 */
    double weight_decay_scale; /* multiplies config.weight_decay (0: no decay); >= 0 */
    int perturb;               /* nonzero: perturbed and counted in norms; 0: only stepped */
} mgpo_tensor_options;

/** {lr_scale 1, weight_decay_scale 1, perturb 1}.  Pure, thread-safe. */
MGPO_API mgpo_tensor_options mgpo_tensor_options_default(void);

/** Registers a parameter tensor of `count` floats.
 *  `params` (required) is read and written by perturb/restore/step; `grads`
 *  (may be NULL now, set later with mgpo_set_grad) is only read, by step.
 *  Both stay owned by the caller and must remain valid until mgpo_destroy or
 *  until replaced.  Neither needs any alignment.  `options` NULL means
 *  defaults.  The new tensor's index (0, 1, ... over tensors and pairs in
 *  registration order) is written to *index when index is not NULL.
 *  Allowed only until the first successful mgpo_step (a perturb before it is
 *  a no-op).  Allocates the moments (and 4 bytes per element for the exact
 *  restore, for a perturbed tensor in exact restore mode).
 *  Errors: NULL_ARGUMENT (state or params), INVALID_ARGUMENT (count 0, or
 *  count above SIZE_MAX / 16),
 *  OVERLAP (params overlaps grads, or any buffer of an earlier registration
 *  that is written), BAD_LR / BAD_WEIGHT_DECAY (negative or non-finite
 *  scales), WRONG_PHASE, OUT_OF_MEMORY. */
MGPO_API mgpo_status mgpo_add_tensor(mgpo_state *state, float *params,
                                     const float *grads, size_t count,
                                     const mgpo_tensor_options *options,
                                     size_t *index);

/** Sets or replaces the gradient buffer of tensor `index` (e.g. when the
 *  trainer allocates gradients lazily at its first backward pass).  NULL
 *  unsets it.  Allowed at any time.  Errors: NULL_ARGUMENT (state),
 *  INVALID_ARGUMENT (bad index or the index names a LoRA pair), OVERLAP. */
MGPO_API mgpo_status mgpo_set_grad(mgpo_state *state, size_t index,
                                   const float *grads);

/** Number of registered tensors and pairs.  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_get_tensor_count(const mgpo_state *state, size_t *count);

/* ---- LoRA adapter pairs ------------------------------------------------- */

/** How a LoRA pair's perturbation is applied (docs/lora.md). */
typedef enum mgpo_lora_mode {
    MGPO_LORA_ADAPTER = 0, /* A += c*m_A, B += c*m_B; W untouched (cheap) */
    MGPO_LORA_BASE = 1     /* W += c*D with D = s*(m_B A + B m_A) (authors' form) */
} mgpo_lora_mode;

/** An adapter W_eff = W + scaling * B * A.  All matrices are row-major:
 *  A is rank x n_in, B is n_out x rank, W is n_out x n_in. */
typedef struct mgpo_lora_pair {
    float *a;              /* A, trained: rank*n_in floats */
    const float *grad_a;   /* its gradient (may be NULL until set) */
    float *b;              /* B, trained: n_out*rank floats */
    const float *grad_b;   /* its gradient (may be NULL until set) */
    float *base_weight;    /* frozen W, n_out*n_in; required for MGPO_LORA_BASE, else NULL */
    size_t rank, n_in, n_out;
    double scaling;        /* s = alpha / rank, finite and > 0 */
    mgpo_lora_mode mode;
} mgpo_lora_pair;

/** Registers a LoRA pair as one item (and, under MGPO_SCOPE_TENSOR, one unit
 *  whose norms are measured in weight space).  A and B are stepped like
 *  tensors with `options`.  Same ownership and phase rules as
 *  mgpo_add_tensor; in base mode the state also owns a backup of W
 *  (n_out*n_in floats, kept in either restore mode).  Errors: NULL_ARGUMENT
 *  (state, pair, A or B; W in base mode), SHAPE (a zero dimension or an
 *  overflowing size), INVALID_ARGUMENT (scaling not finite and > 0, W given
 *  in adapter mode), BAD_ENUM, OVERLAP (A, B or W overlaps another buffer of
 *  the pair or anything registered), WRONG_PHASE, OUT_OF_MEMORY, BAD_LR,
 *  BAD_WEIGHT_DECAY, UNSUPPORTED (config.direction is MGPO_DIRECTION_RANDOM:
 *  register A and B as tensors instead).  See docs/lora.md. */
MGPO_API mgpo_status mgpo_add_lora_pair(mgpo_state *state,
                                        const mgpo_lora_pair *pair,
                                        const mgpo_tensor_options *options,
                                        size_t *index);

/** Sets or replaces the gradient buffers of LoRA pair `index` (NULL unsets).
 *  Errors: NULL_ARGUMENT (state), INVALID_ARGUMENT (not a pair), OVERLAP. */
MGPO_API mgpo_status mgpo_set_lora_grads(mgpo_state *state, size_t index,
                                         const float *grad_a,
                                         const float *grad_b);

/* ---- The iteration ------------------------------------------------------ */

/** Nudges the perturbed tensors along their momentum: theta += c_U * m for
 *  every unit U, c_U = sign*rho*min(1/(gbar_U+norm_eps), scale_max) /
 *  (||m_U|| + norm_eps).  Does nothing (returns MGPO_OK) before the first
 *  step, when rho is 0, for units whose momentum norm is <= norm_eps or not
 *  finite, and when already perturbed.  Remembers c_U for restore and stats.
 *  Until the restore (or the step), do not write the parameters or change
 *  the floating-point environment: the restore starts from the perturbed
 *  values.  With config.direction MGPO_DIRECTION_RANDOM the vector added
 *  is c'_U * z instead of c_U * m, z a seeded Gaussian (docs/algorithm.md),
 *  c'_U = c_U * ||m_U|| / ||z_U||: the same norm.  Errors: NULL_ARGUMENT,
 *  NO_TENSORS, ALLREDUCE (nothing changed), UNSUPPORTED (random direction
 *  with an all-reduce hook installed: its norm would be local). */
MGPO_API mgpo_status mgpo_perturb(mgpo_state *state);

/** Returns the parameters to their clean values: bit for bit in exact mode,
 *  by subtracting c*m in low-memory mode.  A no-op returning MGPO_OK when not
 *  perturbed.  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_restore(mgpo_state *state);

/** One optimizer step with the current gradient buffers.  Restores first if
 *  perturbed (fused into the update).  Updates the gradient-norm EMA once,
 *  clips if configured (without writing the caller's gradients), and applies
 *  AdamW or SGD to the clean parameters.
 *  Errors: NULL_ARGUMENT, NO_TENSORS, NO_GRADIENT, ALLREDUCE (nothing
 *  changed), NONFINITE_GRADIENT (parameters restored, skipped-step count +1,
 *  nothing else changed). */
MGPO_API mgpo_status mgpo_step(mgpo_state *state);

/** Whether the parameters currently hold a perturbation (1) or not (0).
 *  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_is_perturbed(const mgpo_state *state, int *perturbed);

/* ---- Statistics --------------------------------------------------------- */

/** Aggregate statistics.  Norms over several units combine as the root of
 *  the sum of squares; for per-unit values see mgpo_get_unit_stats. */
typedef struct mgpo_stats {
    uint64_t step;              /* completed optimizer steps t */
    uint64_t skipped_steps;     /* steps refused for non-finite gradients */
    double lr;                  /* lr of the last step (config lr before the first) */
    double grad_norm;           /* ||g|| over all tensors at the last step, raw */
    double grad_norm_ema;       /* gbar of the unit(s)                                */
    /* The next three describe the last perturb that moved the parameters
     * (0 until one has): over the units it perturbed. */
    double momentum_norm;       /* ||m|| over perturbed units at the last perturb */
    double perturbation_norm;   /* ||epsilon|| applied at the last perturb */
    double perturbation_scale;  /* s = min(1/(gbar+eps_n), s_max); max over units */
    int perturbed;              /* 1 while the parameters hold a perturbation */
    int clipped;                /* 1 if the last step clipped the gradient */
} mgpo_stats;

/** Copies the statistics into *out.  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_get_stats(const mgpo_state *state, mgpo_stats *out);

/** Per-unit statistics. */
typedef struct mgpo_unit_stats {
    double grad_norm;      /* gamma_U at the last step */
    double grad_norm_ema;  /* gbar_U (0 until the first step) */
    double momentum_norm;  /* n_U at the last perturb */
    double scale;          /* s_U at the last perturb (0 if the unit was skipped) */
    double coefficient;    /* c_U applied at the last perturb (0 if skipped) */
} mgpo_unit_stats;

/** Number of scope units: 1 under MGPO_SCOPE_GLOBAL, the number of
 *  registered tensors and pairs under MGPO_SCOPE_TENSOR (unit i is item i; an
 *  item with perturb off has an all-zero unit).  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_get_unit_count(const mgpo_state *state, size_t *count);

/** Copies unit `unit`'s statistics.  Errors: NULL_ARGUMENT, INVALID_ARGUMENT
 *  (unit out of range). */
MGPO_API mgpo_status mgpo_get_unit_stats(const mgpo_state *state, size_t unit,
                                         mgpo_unit_stats *out);

/* ---- Learning-rate schedules -------------------------------------------- */

typedef enum mgpo_schedule_kind {
    MGPO_SCHEDULE_CONSTANT = 0,       /* peak_lr throughout (after warm-up) */
    MGPO_SCHEDULE_WARMUP_COSINE = 1,  /* linear warm-up, cosine to min_lr (paper) */
    MGPO_SCHEDULE_WARMUP_LINEAR = 2   /* linear warm-up, linear decay to min_lr */
} mgpo_schedule_kind;

typedef struct mgpo_schedule {
    mgpo_schedule_kind kind;
    double peak_lr;         /* lr reached at the end of warm-up, >= 0 */
    double min_lr;          /* final lr, 0 <= min_lr <= peak_lr */
    uint64_t warmup_steps;  /* lr rises linearly from 0 over these steps */
    uint64_t total_steps;   /* >= warmup_steps; lr is min_lr from here on */
} mgpo_schedule;

/** The paper's schedule: warm-up over the first 3 % of total_steps (rounded
 *  up), then cosine decay to 0.  Pure, thread-safe. */
MGPO_API mgpo_schedule mgpo_schedule_paper(double peak_lr, uint64_t total_steps);

/** The learning rate for 0-based step `step` (the value to pass to
 *  mgpo_set_lr before that step), as transformers' get_cosine/linear_
 *  schedule_with_warmup with a floor of min_lr.  Errors: NULL_ARGUMENT,
 *  BAD_LR (peak/min invalid), BAD_ENUM, INVALID_ARGUMENT (warmup > total).
 *  Thread-safe. */
MGPO_API mgpo_status mgpo_schedule_lr(const mgpo_schedule *schedule,
                                      uint64_t step, double *lr);

/* ---- Checkpoints (docs/checkpoint-format.md) ---------------------------- */

/* A checkpoint holds the whole optimizer state: configuration, per-tensor
 * moments (m, and v for AdamW), step counts, the gradient-norm EMAs, the
 * statistics, the perturbed flag and the coefficients applied, and, when
 * saved while perturbed in exact mode, the clean copy of every perturbed
 * parameter (and of W for a LoRA pair in base mode).  It does not hold the
 * caller's parameters: save those yourself, at the same moment.
 *
 * The resume rule: load into a state registered like the saved one, then
 * put back into every buffer the library writes (parameters, LoRA A and B,
 * and W in base mode) the values it held when mgpo_save ran.  If the state
 * was perturbed then, those are the perturbed values; the state comes back
 * perturbed and the next mgpo_restore or mgpo_step returns to the clean
 * values bit for bit (exact mode) or by subtracting c*m (low-memory mode,
 * the same arithmetic the uninterrupted run does).  Either way the resumed
 * run is bitwise identical to the uninterrupted one.  To store clean
 * parameters, call mgpo_restore before saving (the checkpoint is then also
 * smaller: no backup). */

/** Bytes that mgpo_save would write for the state as it is now: 48 bytes of
 *  header, 248 of configuration and counters, 48 per unit, 64 per tensor or
 *  pair, 56 per stepped buffer (a pair has two); then 4 bytes per parameter
 *  for m, 4 more for v (AdamW), and while perturbed in exact mode 4 more
 *  per perturbed parameter (and per element of W for a base-mode pair).
 *  Read-only.  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_checkpoint_size(const mgpo_state *state, size_t *size);

/** Serialises the state into `buffer` (capacity bytes, any alignment) in
 *  the versioned format of docs/checkpoint-format.md, and writes its size to
 *  *written.  Read-only on the state; while it is perturbed in exact mode it
 *  also reads your parameter buffers, from which it rebuilds the clean
 *  values the checkpoint holds (so do not write them concurrently: they must
 *  not be written while perturbed anyway).  Errors: NULL_ARGUMENT,
 *  BUFFER_TOO_SMALL (capacity < mgpo_checkpoint_size; nothing written, not
 *  even *written). */
MGPO_API mgpo_status mgpo_save(const mgpo_state *state, void *buffer,
                               size_t capacity, size_t *written);

/** Replaces the whole state with a checkpoint.  The state must have been
 *  registered like the saved one: the same tensors and pairs in the same
 *  order, with the same sizes, options, LoRA shapes, scalings and modes, and
 *  the same optimizer, scope and restore mode.  Every other hyper-parameter
 *  (lr, betas, rho, ...) is taken from the checkpoint; num_threads and the
 *  all-reduce hook stay the state's.  Allowed at any time, also before the
 *  first step.  Never touches the caller's buffers: restore them as the
 *  resume rule above says.  Validates everything before changing anything;
 *  on any error the state is exactly as before.  Errors (the order of the
 *  checks is in docs/checkpoint-format.md): NULL_ARGUMENT; CHECKPOINT_MAGIC (not a libmgpo checkpoint);
 *  CHECKPOINT_TRUNCATED (shorter than the header, or size differs from the
 *  recorded size, or records run past the end); CHECKPOINT_ENDIAN (other
 *  byte order); CHECKPOINT_VERSION (unsupported format version or flags);
 *  CHECKPOINT_CHECKSUM (header or payload CRC-32C mismatch);
 *  CHECKPOINT_LAYOUT (registrations or structural configuration differ from
 *  this state's, or a value no writer produces, e.g. an invalid
 *  configuration or a non-finite EMA). */
MGPO_API mgpo_status mgpo_load(mgpo_state *state, const void *buffer, size_t size);

/** mgpo_save to the file `path`, atomically: writes "<path>.tmp.XXXXXX" in
 *  the same directory, fsyncs it, renames it over `path` and fsyncs the
 *  directory, so `path` holds the old or the new checkpoint, never a torn
 *  one.  On failure the temporary is removed; a process killed mid-save may
 *  leave one behind, which is safe to delete.  A replaced file keeps its
 *  permission bits; a new one gets 0644.  Read-only on the state; allocates
 *  a small buffer through the state's allocator.  POSIX only (elsewhere
 *  MGPO_ERR_UNSUPPORTED).  Errors: NULL_ARGUMENT, INVALID_ARGUMENT (empty
 *  path), IO (create, write, fsync or rename failed; the old file is
 *  untouched), OUT_OF_MEMORY. */
MGPO_API mgpo_status mgpo_save_file(const mgpo_state *state, const char *path);

/** mgpo_load from a file, read whole into a temporary buffer from the
 *  state's allocator (validation needs all of it).  Errors: as mgpo_load,
 *  IO (cannot open or read, or not a regular file), OUT_OF_MEMORY; the
 *  state is unchanged on every error.  POSIX only (elsewhere
 *  MGPO_ERR_UNSUPPORTED). */
MGPO_API mgpo_status mgpo_load_file(mgpo_state *state, const char *path);

/* ---- Distributed training ----------------------------------------------- */

/** In-place sum of `count` doubles across all ranks (e.g. MPI_Allreduce with
 *  MPI_IN_PLACE, MPI_DOUBLE, MPI_SUM).  On return values[i] must hold the sum
 *  of values[i] over all ranks, identical on every rank.  `values` is owned
 *  by the library and valid only during the call; `count` >= 1.  Return 0 on
 *  success, nonzero on failure.  It must sum, not average or take a maximum.
 *  Collective: see mgpo_set_allreduce and docs/distributed.md. */
typedef int (*mgpo_allreduce_fn)(double *values, size_t count, void *ctx);

/** Installs (or with fn NULL removes) the all-reduce hook through which the
 *  norms become global across ranks, for sharded (ZeRO-1) training where
 *  each rank registers only its shard.  Without a hook (the default) every
 *  norm is local.  Replicated data parallelism, where every rank registers
 *  all parameters and the averaged gradient, must not install one (every
 *  norm would count P times, undetectably).  `ctx` is passed
 *  to fn unchanged and stays owned by the caller.  Allowed at any time.
 *  Errors: NULL_ARGUMENT (state).
 *
 *  When it is called, always on the calling thread, never from a worker,
 *  and never re-entered (fn must not call into this state):
 *  - mgpo_perturb: exactly once, with U = unit count (mgpo_get_unit_count)
 *    values, values[u] = this rank's squared momentum norm of unit u (in
 *    weight space for a LoRA pair; 0 for a unit with no perturbed tensors),
 *    only when a perturbation is computed:
 *    not before the first step, not with rho 0, not when already perturbed.
 *    Per-unit skip decisions (norm <= norm_eps or not finite) are made after
 *    the sum, so they agree on every rank.
 *  - mgpo_step: exactly once, with U + 1 values: values[u] = squared norm of
 *    the raw gradient of unit u, values[U] = squared raw gradient norm over
 *    all registered tensors (perturbed or not), used by clipping.  A NaN or
 *    Inf in any rank's gradient makes values[U] non-finite on every rank,
 *    so every rank returns MGPO_ERR_NONFINITE_GRADIENT for the same step.
 *  - never in mgpo_restore or any other call.
 *  The calls happen after argument checks that return NULL_ARGUMENT,
 *  NO_TENSORS (perturb, step) and NO_GRADIENT (step) without calling fn:
 *  such errors must not occur on one rank only, or the others wait forever.
 *  Every rank must call perturb, restore and step in the same sequence (a
 *  restore on one rank only makes its next perturb call fn alone), with the
 *  same rho (mgpo_set_rho), and unit u must mean the same tensors on every
 *  rank: under MGPO_SCOPE_GLOBAL (one unit) any sharding works; under
 *  MGPO_SCOPE_TENSOR every rank registers its part of the same tensors in
 *  the same order.  A LoRA pair is never split across ranks.
 *
 *  If fn returns nonzero, or returns a value below this rank's own (a sum
 *  of squares cannot be: fn averaged, took a minimum, or did not write) or
 *  a finite value where this rank's was NaN, the call returns
 *  MGPO_ERR_ALLREDUCE and changes nothing; other ranks may have completed
 *  the collective, so treat it as fatal for the job. */
MGPO_API mgpo_status mgpo_set_allreduce(mgpo_state *state, mgpo_allreduce_fn fn,
                                        void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* MGPO_H */
