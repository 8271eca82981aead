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
 * Ownership in one paragraph: the caller owns every buffer it registers
 * (parameters, gradients, LoRA base weights, momenta in external mode; of
 * float32, bfloat16 or float16 elements) and must keep them alive and at
 * the same address until the state is destroyed or the pointer is replaced
 * with mgpo_set_grad() or its siblings.  The library never frees,
 * reallocates or writes past `count` elements of them, never writes into a
 * gradient or momentum buffer, and keeps no pointer to them after
 * mgpo_destroy().  Everything else (moments, float32 master weights of
 * bf16/fp16 parameters, restore data, statistics) is owned by the state.
 *
 * Threads: the library has no global state.  Separate states are fully
 * independent and may be used from different threads at once.  One state must
 * not be used by two threads at the same time (the caller serialises); the
 * read-only calls (mgpo_get_*, mgpo_checkpoint_size, mgpo_save,
 * mgpo_save_file) may run
 * concurrently with each other but not with a call that changes the state
 * (none of them calls the allocator, so the allocator is never entered from
 * two threads by one state).
 * With OpenMP enabled a state may use worker threads inside a call
 * (mgpo_config.num_threads); results are bitwise identical for any count.
 *
 * Floating-point environment: every call that computes does its arithmetic
 * in the C default environment (FE_DFL_ENV: round to nearest, no
 * flush-to-zero or denormals-are-zero), which it sets on the calling thread
 * and on each worker and takes away on return, restoring the thread's own
 * environment exactly (its status flags included: the library's own are not
 * reported).  Results do not depend on the caller's environment or a
 * worker's, and the caller may change its own at any time: no call raises
 * a trap the caller enabled.  This covers the validation
 * (mgpo_config_validate, mgpo_create, mgpo_set_lr, mgpo_set_rho,
 * mgpo_set_grad_scale) and the conversions (mgpo_convert_*) too.  The
 * stateless mgpo_schedule_lr computes in the caller's environment.
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
#define MGPO_VERSION_MINOR 4
#define MGPO_VERSION_PATCH 1
#define MGPO_VERSION_NUMBER \
    (MGPO_VERSION_MAJOR * 10000 + MGPO_VERSION_MINOR * 100 + MGPO_VERSION_PATCH)
#define MGPO_VERSION_STRING "0.4.1"

/* ---- How this API grows (the ABI rule) ------------------------------------
 *
 * Within one SONAME (libmgpo.so.MAJOR.MINOR) a program built against an
 * older header keeps working with a newer library:
 *
 * 1. No public struct changes size or layout, no function changes its
 *    signature, no enum value or error code changes its number.
 * 2. A new capability is a new function.  A property of one tensor or pair
 *    is a setter taking the item's index (like mgpo_set_grad and
 *    mgpo_set_master_weights), allowed until the first step if it changes
 *    what the state allocates; a per-state scalar is a setter like
 *    mgpo_set_lr or mgpo_set_grad_scale.  New element types are new
 *    mgpo_dtype values (0 is float32, as every float registration).
 * 3. New error codes take the next free number; callers must treat an
 *    unknown code as a failure.
 * 4. New fields of the structs a caller fills in (mgpo_config,
 *    mgpo_tensor_options, mgpo_lora_pair_typed) take over words of the
 *    `reserved` array at their end, so the struct keeps its size and layout
 *    and no SONAME change is needed.  A reserved word must be 0 (the
 *    defaults and zero-initialisation give 0): 0 in a new field means "as
 *    before", and a library older than the field refuses a nonzero word
 *    with MGPO_ERR_RESERVED_FIELD instead of ignoring a setting it does
 *    not know.  The structs the library fills in (mgpo_stats,
 *    mgpo_unit_stats) end in reserved words that it sets to 0 and may
 *    later fill.  Always start from mgpo_config_default() (or another
 *    profile) and mgpo_tensor_options_default(), whose defaults are not 0
 *    (a zero-filled mgpo_config is refused: sign 0 is BAD_ENUM; a
 *    zero-filled mgpo_tensor_options too: INVALID_ARGUMENT, see
 *    mgpo_add_tensor), and from a zero-filled mgpo_lora_pair_typed (all
 *    float32, reserved words 0).
 * 5. Only when that room runs out, or a field must change, does the SONAME
 *    change, and the header lists what changed (below).
 *
 * 0.4.1 (same SONAME, same API and results): a tensor whose state arrays
 * are 4 MiB or larger gets 4160 bytes between them (the step at 64 Mi
 * parameters was about 40 % slower with them packed; docs/api.md).
 *
 * Changes from 0.3 to 0.4 (libmgpo.so.0.3 -> libmgpo.so.0.4; no struct
 * changed, but calls that 0.3 accepted are refused now, so the SONAME
 * changes and a program relinks knowingly): new functions
 * mgpo_convert_to_float32, mgpo_convert_from_float32, mgpo_get_grad_scale,
 * and mgpo_save_with_user, mgpo_load_with_user, mgpo_save_file_with_user,
 * mgpo_load_file_with_user (the caller's record inside a checkpoint:
 * header flag 1 of format 3, which 0.3 refuses).  Refused now with
 * MGPO_ERR_INVALID_ARGUMENT: a float32 buffer at an address that is not a
 * multiple of 4; tensor options with lr_scale 0 and perturb 0 (a
 * zero-filled struct); a bf16/fp16 gradient or momentum type changed by
 * the untyped mgpo_set_grad, mgpo_set_lora_grads or mgpo_set_momentum.
 * Refused with MGPO_ERR_OVERLAP: an external momentum overlapping a
 * gradient buffer (and the reverse).  A finite value beyond a bf16/fp16
 * type's largest finite value saturates to it in every buffer the library
 * writes (0.3 wrote Inf).  mgpo_set_grad_scale and mgpo_config_validate
 * (so mgpo_create, mgpo_set_rho, mgpo_set_lr) compute in the library's
 * floating-point environment.  mgpo_create reads the environment
 * variable MGPO_KERNELS (a kernel table forced for tests and benchmarks)
 * and refuses an unknown or unrunnable name with MGPO_ERR_UNSUPPORTED; an
 * AVX-512 table is chosen from CPUID.  Checkpoints: format version 3;
 * a file with the caller's record sets header flag 1.
 *
 * Changes from 0.2 to 0.3 (libmgpo.so.0.2 -> libmgpo.so.0.3): mixed
 * precision.  mgpo_config gained `rounding` (0 = round to nearest even) and
 * `reserved[8]`; mgpo_tensor_options, mgpo_stats and mgpo_unit_stats gained
 * `reserved[4]`; new enums mgpo_dtype and mgpo_rounding; new struct
 * mgpo_lora_pair_typed; new functions mgpo_add_tensor_typed,
 * mgpo_set_grad_typed, mgpo_add_lora_pair_typed, mgpo_set_lora_grads_typed,
 * mgpo_set_master_weights, mgpo_get_master_weights, mgpo_set_grad_scale,
 * mgpo_set_momentum_typed, mgpo_dtype_size; new error codes MGPO_ERR_BAD_GRAD_SCALE and
 * MGPO_ERR_RESERVED_FIELD; new bounds MGPO_GRAD_SCALE_MIN/MAX.
 * Checkpoints: format version 3 (master weights, the loss scale, the
 * element types); versions 1 and 2 still load.
 *
 * Changes from 0.1 to 0.2 (libmgpo.so.0.1 -> libmgpo.so.0.2): mgpo_config
 * gained, at its end, optimizer_mode (0 = the integrated optimizer, as in
 * 0.1), normalize (1 from the defaults = as in 0.1), direction (0 =
 * momentum, as in 0.1) and seed; new functions mgpo_set_momentum,
 * mgpo_set_lora_momentum, mgpo_get_moments, mgpo_config_nlu_paper,
 * mgpo_config_nlg_paper; new enums mgpo_optimizer_mode, mgpo_moment,
 * mgpo_direction; new macros for the numeric bounds (MGPO_GRAD_NORM_MAX and
 * the rest).  Checkpoints: format version 2 (little-endian); version-1
 * files still load. */

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
    MGPO_ERR_INVALID_ARGUMENT = 2,    /* zero count, bad index, bad size, a buffer
                                         misaligned for its element type ... */
    MGPO_ERR_OUT_OF_MEMORY = 3,       /* the allocator returned NULL */
    MGPO_ERR_BAD_LR = 4,              /* lr or lr scale negative, not finite, or beyond a numeric bound */
    MGPO_ERR_BAD_BETA = 5,            /* a beta/momentum/dampening/EMA outside [0, 1) */
    MGPO_ERR_BAD_EPSILON = 6,         /* eps or norm_eps <= 0 or not finite; eps not a normal float */
    MGPO_ERR_BAD_WEIGHT_DECAY = 7,    /* weight decay negative, not finite, or beyond a numeric bound */
    MGPO_ERR_BAD_RHO = 8,             /* rho negative or not finite, or rho*scale_max > 2^100 */
    MGPO_ERR_BAD_SCALE_MAX = 9,       /* scale_max <= 0 or not finite */
    MGPO_ERR_BAD_ENUM = 10,           /* unknown optimizer, sign, scope, mode */
    MGPO_ERR_BAD_CLIP = 11,           /* max_grad_norm negative, not finite, or > 0 in external mode */
    MGPO_ERR_BAD_THREADS = 12,        /* num_threads negative */
    MGPO_ERR_OVERLAP = 13,            /* a registered buffer overlaps another it may
                                         not (one the library writes; a gradient
                                         and an external momentum) */
    MGPO_ERR_NO_TENSORS = 14,         /* perturb/step with nothing registered */
    MGPO_ERR_NO_GRADIENT = 15,        /* step while a gradient pointer is NULL */
    MGPO_ERR_NONFINITE_GRADIENT = 16, /* NaN/Inf gradient or norm, or norm >= 2^50: skipped */
    MGPO_ERR_WRONG_PHASE = 17,        /* call not allowed now (e.g. add after step) */
    MGPO_ERR_SHAPE = 18,              /* LoRA pair dimensions inconsistent */
    MGPO_ERR_BUFFER_TOO_SMALL = 19,   /* checkpoint buffer smaller than needed */
    MGPO_ERR_IO = 20,                 /* file open/write/flush/rename failed */
    MGPO_ERR_CHECKPOINT_MAGIC = 21,   /* not a libmgpo checkpoint */
    MGPO_ERR_CHECKPOINT_VERSION = 22, /* unsupported format version */
    MGPO_ERR_CHECKPOINT_ENDIAN = 23,  /* version 1 from the other byte order */
    MGPO_ERR_CHECKPOINT_LAYOUT = 24,  /* tensors/config do not match this state, or values no run produces */
    MGPO_ERR_CHECKPOINT_CHECKSUM = 25,/* payload corrupted */
    MGPO_ERR_CHECKPOINT_TRUNCATED = 26,/* data ends early (or trailing bytes) */
    MGPO_ERR_ALLREDUCE = 27,          /* the caller's all-reduce hook failed */
    MGPO_ERR_UNSUPPORTED = 28,        /* feature not compiled in / not available */
    MGPO_ERR_BAD_GRAD_SCALE = 29,     /* loss scale not finite or outside
                                         [MGPO_GRAD_SCALE_MIN, MGPO_GRAD_SCALE_MAX] */
    MGPO_ERR_RESERVED_FIELD = 30      /* a reserved word is nonzero (a field this
                                         library does not know) */
} mgpo_status;

/** A static, human-readable name for a status ("MGPO_ERR_OVERLAP: ...").
 *  Unknown values give a generic string; never NULL.  Thread-safe. */
MGPO_API const char *mgpo_strerror(mgpo_status status);

/* ---- Numeric bounds (docs/api.md, "Numeric bounds") ---------------------- */

/* Every value the library accepts keeps every float it derives finite, so an
 * accepted configuration, registration or checkpoint cannot make a step
 * write NaN or Inf from finite gradients.  The bounds beyond "finite and in
 * range" (powers of two, so that the proofs in docs/api.md are exact): */

/** A step refuses (MGPO_ERR_NONFINITE_GRADIENT, as a NaN/Inf gradient) a
 *  gradient whose norm after clipping is >= this (2^50, about 1.1e15): beyond
 *  it AdamW's float second moment g*g could overflow. */
#define MGPO_GRAD_NORM_MAX 1125899906842624.0 /* 2^50 */
/** rho * scale_max must not exceed this (2^100, about 1.3e30; else
 *  MGPO_ERR_BAD_RHO): the perturbation of a tensor, |c*m| <= rho*scale_max,
 *  then moves no float to Inf.  A LoRA pair in adapter mode, whose A or B
 *  could move further, is left unperturbed at a perturb where
 *  |c| * ||m_A|| or |c| * ||m_B|| would exceed it. */
#define MGPO_PERTURBATION_MAX 1267650600228229401496703205376.0 /* 2^100 */
/** AdamW: lr * lr_scale must not exceed this times min((float)eps, 1)
 *  (2^50; else MGPO_ERR_BAD_LR), which keeps an update
 *  lr * m_hat / (sqrt(v_hat) + eps) of a run's moments below 2^100, so that
 *  it moves no finite parameter to Inf.  With eps 1e-8 the largest lr is
 *  about 1.1e7. */
#define MGPO_LR_EPS_RATIO 1125899906842624.0 /* 2^50 */
/** A LoRA pair's scaling must not exceed this (2^64; else
 *  MGPO_ERR_INVALID_ARGUMENT): the weight-space norms square it. */
#define MGPO_LORA_SCALING_MAX 18446744073709551616.0 /* 2^64 */

/** The smallest and largest loss scale mgpo_set_grad_scale accepts (2^-64
 *  and 2^64): its reciprocal, by which every gradient is multiplied, is then
 *  a normal float. */
#define MGPO_GRAD_SCALE_MIN 5.42101086242752217e-20 /* 2^-64 */
#define MGPO_GRAD_SCALE_MAX 18446744073709551616.0  /* 2^64 */

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

/** Who steps the parameters (docs/integration.md, "Your own optimizer").
 *  Chosen per state: every tensor and pair of a state follows it. */
typedef enum mgpo_optimizer_mode {
    MGPO_OPTIMIZER_INTEGRATED = 0, /* the library owns m, v and steps AdamW/SGD (default) */
    MGPO_OPTIMIZER_EXTERNAL = 1    /* the caller's optimizer owns the momentum and steps;
                                      the library perturbs along that momentum, restores,
                                      and keeps the gradient-norm EMA (mgpo_set_momentum) */
} mgpo_optimizer_mode;

/** Which direction the perturbation follows (docs/algorithm.md). */
typedef enum mgpo_direction {
    MGPO_DIRECTION_MOMENTUM = 0, /* along the optimizer's momentum m (MGPO) */
    MGPO_DIRECTION_RANDOM = 1    /* an isotropic Gaussian direction z with the norm
                                    the momentum perturbation would have: the
                                    paper's Table 4 baseline; plain tensors only */
} mgpo_direction;

/** How a float32 value is rounded into a bfloat16 or float16 parameter
 *  buffer after a step (docs/algorithm.md, "Mixed precision"). */
typedef enum mgpo_rounding {
    MGPO_ROUNDING_NEAREST = 0,   /* round to nearest, ties to even (torch's .to()) */
    MGPO_ROUNDING_STOCHASTIC = 1 /* up with probability equal to the dropped fraction,
                                    from a counter-based generator keyed by
                                    (seed, step, slot, element; docs/algorithm.md,
                                    "Stochastic rounding"): the same bits for
                                    any thread count, platform or resume */
} mgpo_rounding;

/** Optimizer configuration.  Obtain one from mgpo_config_default() or
 *  mgpo_config_nlg() and change fields; every field is validated by
 *  mgpo_create().  Hyper-parameters are doubles, as Python floats in torch. */
typedef struct mgpo_config {
    mgpo_optimizer optimizer;  /* AdamW (default) or SGD */
    double lr;                 /* base learning rate, >= 0 (bounds: docs/api.md); see mgpo_set_lr */
    double beta1;              /* AdamW beta1 in [0,1) */
    double beta2;              /* AdamW beta2 in [0,1) */
    double eps;                /* AdamW epsilon, a normal float: [FLT_MIN, FLT_MAX] */
    double weight_decay;       /* AdamW decoupled / SGD coupled L2 (<= 1), >= 0;
                                  lr * weight_decay <= 1 */
    double momentum;           /* SGD mu in [0,1) */
    double dampening;          /* SGD dampening in [0,1) */
    int nesterov;              /* SGD Nesterov (0/1, else BAD_ENUM); needs momentum > 0
                                  and dampening 0 (else BAD_BETA), as torch */
    double rho;                /* perturbation radius rho >= 0, rho * scale_max <= 2^100;
                                  0 = plain optimizer */
    double norm_ema;           /* beta of the gradient-norm EMA in [0,1) */
    double scale_max;          /* s_max, clamp of 1/(gbar+norm_eps), > 0 (10) */
    double norm_eps;           /* epsilon_n in the norms, > 0 (1e-12) */
    mgpo_sign sign;            /* lookahead (default) or ascent */
    mgpo_scope scope;          /* global (default) or per tensor */
    mgpo_restore_mode restore_mode; /* exact (default) or low memory */
    double max_grad_norm;      /* > 0 enables global-norm clipping; 0 = off */
    int num_threads;           /* worker threads per call; 0 = OpenMP default (as at
                                  creation, at most), 1 = none; capped at 1024 */
    mgpo_optimizer_mode optimizer_mode; /* integrated (default) or external; external
                                  needs max_grad_norm 0 (the caller clips) */
    /* Research switches (docs/algorithm.md, "Ablations"). */
    int normalize;             /* 1 (default): s = min(1/(gbar+norm_eps), scale_max),
                                  the adaptive perturbation normalisation (APN);
                                  0: s = 1 (the authors' mgpo_normalize=False,
                                  the paper's Fig. 4 ablation); else BAD_ENUM */
    mgpo_direction direction;  /* momentum (default) or random (Table 4 baseline) */
    uint64_t seed;             /* key of the random direction's and the stochastic
                                  rounding's generator (any value) */
    /* Mixed precision (0.3). */
    mgpo_rounding rounding;    /* of bf16/fp16 parameters after a step: nearest
                                  (default) or stochastic; else BAD_ENUM */
    uint64_t reserved[8];      /* 0 (the ABI rule, 4); else RESERVED_FIELD */
} mgpo_config;

/** The paper's `nlu` profile (T5-base on GLUE), the library default:
 *  AdamW, lr 1e-4, beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0,
 *  rho 0.05, norm_ema 0.9, scale_max 10, norm_eps 1e-12, lookahead, global
 *  scope, exact restore, no clipping, num_threads 1, integrated optimizer,
 *  normalize 1, momentum direction, seed 0; SGD fields: momentum 0.9,
 *  dampening 0, nesterov 0.  Pure function, thread-safe. */
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
 *  order: reserved words (RESERVED_FIELD), enums (optimizer, sign, scope,
 *  restore_mode, nesterov, optimizer_mode, normalize, direction,
 *  rounding), lr, betas (beta1, beta2,
 *  momentum, dampening, norm_ema, then the nesterov rule), eps and
 *  norm_eps, weight_decay, rho, scale_max, rho * scale_max (BAD_RHO),
 *  max_grad_norm (also BAD_CLIP: > 0 in external mode), num_threads, then
 *  the rate bounds for a tensor with the default options (MGPO_LR_EPS_RATIO
 *  and the rest of docs/api.md, "Numeric bounds": BAD_LR,
 *  BAD_WEIGHT_DECAY).  Fields of the optimizer not selected are checked
 *  too.  Computes (rho * scale_max, the rates) in the library's
 *  floating-point environment, so the answer does not depend on the
 *  caller's rounding mode and raises no trap or flag of the caller's.
 *  NULL gives MGPO_ERR_NULL_ARGUMENT.  Thread-safe. */
MGPO_API mgpo_status mgpo_config_validate(const mgpo_config *config);

/* ---- Allocator ---------------------------------------------------------- */

/** Optional caller-supplied allocator.  `alloc` must return memory aligned to
 *  at least 16 bytes (the library aligns its large buffers to 64 itself) or
 *  NULL; `free` receives pointers from `alloc` with the same size, and never
 *  NULL.  Both get `ctx` as the first argument.  They are called only from
 *  the calling thread (never from a worker), only inside mgpo_create,
 *  mgpo_add_*, mgpo_destroy, and mgpo_load_file (one buffer of the file's
 *  size, freed before it returns); never in perturb/restore/step, the
 *  getters, mgpo_save or mgpo_save_file. */
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
 *  MGPO_ERR_OUT_OF_MEMORY, MGPO_ERR_UNSUPPORTED (the environment variable
 *  MGPO_KERNELS names a kernel table this build or CPU cannot run); *out is
 *  set to NULL on error (when out is not).
 *  The state uses the fastest kernel table the CPU supports (all give the
 *  same bits), read from CPUID here; MGPO_KERNELS=portable|avx2|avx512, when
 *  set and not empty, forces one (docs/performance.md), for tests and
 *  benchmarks.
 *  Thread-safe (touches nothing shared; reads the environment, which no
 *  other thread may be changing). */
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
 *  NULL_ARGUMENT, BAD_LR (negative, not finite, or beyond a numeric bound
 *  of docs/api.md for the configuration or any registered buffer's
 *  scales); nothing changes on error. */
MGPO_API mgpo_status mgpo_set_lr(mgpo_state *state, double lr);

/** Sets rho (config.rho) for the next perturb (e.g. a rho schedule).  A
 *  perturbation already applied keeps its remembered coefficient.  Errors:
 *  NULL_ARGUMENT, BAD_RHO; nothing changes on error. */
MGPO_API mgpo_status mgpo_set_rho(mgpo_state *state, double rho);

/* ---- Tensors ------------------------------------------------------------ */

/** Per-tensor options, like a torch parameter group. */
typedef struct mgpo_tensor_options {
    double lr_scale;           /* multiplies the state's lr (LoRA+: larger on B); >= 0 */
    double weight_decay_scale; /* multiplies config.weight_decay (0: no decay); >= 0;
                                  the products obey the numeric bounds */
    int perturb;               /* nonzero: perturbed and counted in norms; 0: only stepped */
    uint64_t reserved[4];      /* 0 (the ABI rule, 4); else RESERVED_FIELD */
} mgpo_tensor_options;

/** {lr_scale 1, weight_decay_scale 1, perturb 1}: start from this, not from
 *  a zero-filled struct, which registration refuses (lr_scale 0 with
 *  perturb 0 would never change the tensor: INVALID_ARGUMENT).  Pure,
 *  thread-safe. */
MGPO_API mgpo_tensor_options mgpo_tensor_options_default(void);

/** Registers a parameter tensor of `count` floats.
 *  `params` (required) is read and written by perturb/restore/step; `grads`
 *  (may be NULL now, set later with mgpo_set_grad) is only read, by step.
 *  Both stay owned by the caller and must remain valid until mgpo_destroy or
 *  until replaced.  Both must be aligned as floats are (an address that is
 *  a multiple of 4), else INVALID_ARGUMENT: the kernels access them as
 *  float.  `options` NULL means defaults.  The new tensor's index (0, 1, ... over tensors and pairs in
 *  registration order) is written to *index when index is not NULL.
 *  Allowed only until the first successful mgpo_step (a perturb before it is
 *  a no-op).  Allocates the moments (and 4 bytes per element for the exact
 *  restore, for a perturbed tensor in exact restore mode).
 *  Errors: NULL_ARGUMENT (state or params), INVALID_ARGUMENT (count 0, or
 *  count above SIZE_MAX / 16, a misaligned buffer, or options with
 *  lr_scale 0 and perturb 0, such as a zero-filled struct),
 *  OVERLAP (params overlaps grads, or any buffer of an earlier registration
 *  that is written; grads overlaps an attached external momentum), BAD_LR / BAD_WEIGHT_DECAY (negative or non-finite
 *  scales, or lr * lr_scale, weight_decay * weight_decay_scale beyond the
 *  numeric bounds of docs/api.md), RESERVED_FIELD (options), WRONG_PHASE,
 *  OUT_OF_MEMORY. */
MGPO_API mgpo_status mgpo_add_tensor(mgpo_state *state, float *params,
                                     const float *grads, size_t count,
                                     const mgpo_tensor_options *options,
                                     size_t *index);

/** Sets or replaces the gradient buffer of tensor `index` (e.g. when the
 *  trainer allocates gradients lazily at its first backward pass).  NULL
 *  unsets it.  Allowed at any time.  Never changes the gradient's element
 *  type: on a tensor whose gradients are bf16/fp16 a buffer is refused
 *  (INVALID_ARGUMENT; NULL unsets and keeps the type): use
 *  mgpo_set_grad_typed.  Errors: NULL_ARGUMENT (state), INVALID_ARGUMENT
 *  (bad index, the index names a LoRA pair, a bf16/fp16 gradient type, a
 *  misaligned buffer), OVERLAP (a buffer the library writes, or an
 *  attached external momentum). */
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
    double scaling;        /* s = alpha / rank, > 0 and <= MGPO_LORA_SCALING_MAX */
    mgpo_lora_mode mode;
} mgpo_lora_pair;

/** Registers a LoRA pair as one item (and, under MGPO_SCOPE_TENSOR, one unit
 *  whose norms are measured in weight space).  A and B are stepped like
 *  tensors with `options`.  Same ownership and phase rules as
 *  mgpo_add_tensor; in base mode a perturbed pair (options.perturb) also
 *  owns a backup of W (n_out*n_in floats, kept in either restore mode).  Errors: NULL_ARGUMENT
 *  (state, pair, A or B; W in base mode), SHAPE (a zero dimension or an
 *  overflowing size), INVALID_ARGUMENT (scaling not finite, <= 0 or above
 *  MGPO_LORA_SCALING_MAX, W given
 *  in adapter mode), BAD_ENUM, OVERLAP (A, B or W overlaps another buffer of
 *  the pair or anything registered), WRONG_PHASE, OUT_OF_MEMORY, BAD_LR,
 *  BAD_WEIGHT_DECAY, UNSUPPORTED (config.direction is MGPO_DIRECTION_RANDOM:
 *  register A and B as tensors instead).  See docs/lora.md. */
MGPO_API mgpo_status mgpo_add_lora_pair(mgpo_state *state,
                                        const mgpo_lora_pair *pair,
                                        const mgpo_tensor_options *options,
                                        size_t *index);

/** Sets or replaces the gradient buffers of LoRA pair `index` (NULL unsets).
 *  As mgpo_set_grad, never changes the element type (a pair with bf16/fp16
 *  gradients: INVALID_ARGUMENT unless both are NULL).  Errors:
 *  NULL_ARGUMENT (state), INVALID_ARGUMENT (not a pair, a bf16/fp16
 *  gradient type, a misaligned buffer), OVERLAP (as mgpo_set_grad). */
MGPO_API mgpo_status mgpo_set_lora_grads(mgpo_state *state, size_t index,
                                         const float *grad_a,
                                         const float *grad_b);

/* ---- Mixed precision (docs/algorithm.md, "Mixed precision") -------------
 *
 * Parameters and gradients may be float32, bfloat16 or float16, chosen per
 * tensor and independently.  For a bf16/fp16 parameter buffer the state
 * owns float32 master weights (4 bytes per element), initialised from the
 * caller's buffer at registration (exactly: every bf16/fp16 value is a
 * float32) or from a float32 copy given with mgpo_set_master_weights.  The
 * optimizer steps the master; after each step the caller's buffer receives
 * the master rounded to its type (config.rounding: nearest even, or
 * stochastic).  Every value the library writes into a bf16/fp16 buffer is
 * saturated: a finite float32 beyond the type's largest finite value
 * (65504 for float16, 0x7f7f, about 3.39e38, for bfloat16) is written as
 * that value with its sign, never as Inf (torch's .to() would give Inf),
 * so no finite master, perturbation or step puts an Inf into a caller's
 * buffer (the master keeps the true value).  An Inf or NaN stays one.  A perturbation writes round_nearest(master + c*m) into the
 * caller's buffer and leaves the master alone, and the restore writes the
 * rounded master back: bit-exact by construction, in either restore mode,
 * with no backup (the exact mode's 4 bytes per element are not allocated
 * for such a tensor).  Bytes per bf16/fp16 parameter held by the state:
 * AdamW 12 (master, m, v), SGD 8 (master, m).
 *
 * Loss scaling: mgpo_set_grad_scale(state, S) says that the gradients in the
 * caller's buffers are S times the true ones (torch's GradScaler).  Every
 * use of a gradient then sees g * (float)(1/S), as GradScaler.unscale_
 * computes it: the norms and their EMA, clipping, the NaN/Inf check and the
 * update.  The caller's gradient buffers are never written.  An Inf or NaN
 * (a loss-scale overflow) refuses the step as MGPO_ERR_NONFINITE_GRADIENT,
 * after one read of the gradients and, when perturbed, the restore; lower S
 * and go on (examples/loss_scaling.c).
 *
 * Buffers of type bf16 or fp16 hold uint16_t bit patterns (IEEE binary16, or
 * the upper half of a float32), in the machine's byte order, 2-byte
 * aligned.  External optimizer mode: the caller's optimizer keeps its own
 * master weights, so a bf16/fp16 tensor has none in the state; a perturb
 * writes round_nearest(p + c*m) into the buffer, after copying it (exact
 * mode: 2 bytes per element, in the buffer's type), and the restore copies
 * it back bit for bit (low-memory mode: round_nearest(p - c*m), not exact).
 * Its gradients may be of any type and the loss scale applies to its norms.
 * A LoRA pair with bf16/fp16 A and B is not supported there
 * (MGPO_ERR_UNSUPPORTED); a bf16/fp16 W in base mode is. */

/** Element type of a caller's buffer. */
typedef enum mgpo_dtype {
    MGPO_DTYPE_FLOAT32 = 0,  /* IEEE binary32 (float) */
    MGPO_DTYPE_BFLOAT16 = 1, /* bfloat16: the upper 16 bits of a float32 */
    MGPO_DTYPE_FLOAT16 = 2   /* IEEE binary16 (_Float16, torch.half) */
} mgpo_dtype;

/** Bytes per element of `type` (4 or 2), 0 for an unknown value.  Pure,
 *  thread-safe. */
MGPO_API size_t mgpo_dtype_size(mgpo_dtype type);

/** Widens `count` elements of `type` at src to float32 at dst, exactly
 *  (every bf16/fp16 value is a float32; a NaN is made quiet, keeping its
 *  sign and payload's top bits, as F16C's vcvtph2ps does; float32 is copied
 *  bit for bit): the conversion the library applies to every gradient,
 *  momentum and parameter buffer it reads.  src is the caller's, read only;
 *  dst receives `count` floats.  Computes in the library's floating-point
 *  environment (a caller's denormals-are-zero does not apply).  Errors:
 *  NULL_ARGUMENT (dst or src NULL with count > 0), BAD_ENUM (type),
 *  INVALID_ARGUMENT (a buffer misaligned for its element type, or dst and
 *  src overlapping); nothing is written on error.  Thread-safe (0.4). */
MGPO_API mgpo_status mgpo_convert_to_float32(float *dst, const void *src, mgpo_dtype type,
                                             size_t count);

/** Rounds `count` floats at src into elements of `type` at dst exactly as
 *  the library writes a bf16/fp16 parameter buffer: to nearest, ties to
 *  even, NaNs made quiet; a finite value beyond the type's largest finite
 *  value (65504 for float16, about 3.39e38 for bfloat16) saturates to it,
 *  keeping its sign, where torch's .to() gives Inf (docs/algorithm.md,
 *  "Mixed precision"); Inf stays Inf.  float32 is copied bit for bit.
 *  Errors, environment and thread safety as mgpo_convert_to_float32 (0.4). */
MGPO_API mgpo_status mgpo_convert_from_float32(void *dst, mgpo_dtype type, const float *src,
                                               size_t count);

/** mgpo_add_tensor for a buffer of any element type: `params` holds `count`
 *  elements of `param_type`, `grads` (may be NULL, set later with
 *  mgpo_set_grad_typed) `count` elements of `grad_type`.  With param_type
 *  float32 this is mgpo_add_tensor; otherwise the state allocates float32
 *  master weights, initialised from `params`, and from then on writes
 *  `params` at every perturb, restore and step (see above; in external
 *  mode no master: only perturb and restore write it).  Ownership,
 *  phase rules as mgpo_add_tensor; a bf16/fp16 buffer must be 2-byte
 *  aligned, a float32 one 4-byte aligned.  Errors: as
 *  mgpo_add_tensor (byte ranges for OVERLAP), and BAD_ENUM (an unknown
 *  type), INVALID_ARGUMENT (a buffer misaligned for its type, or, for
 *  master weights, a NaN or Inf in `params`), UNSUPPORTED (a bf16/fp16
 *  param_type with config.direction RANDOM). */
MGPO_API mgpo_status mgpo_add_tensor_typed(mgpo_state *state, void *params,
                                           mgpo_dtype param_type, const void *grads,
                                           mgpo_dtype grad_type, size_t count,
                                           const mgpo_tensor_options *options,
                                           size_t *index);

/** mgpo_set_grad for a gradient buffer of any element type (`count` of the
 *  tensor's elements of `grad_type`); the type may differ from the one
 *  given before (this is the call that changes it).  Errors: as
 *  mgpo_set_grad, BAD_ENUM, INVALID_ARGUMENT (a buffer misaligned for its
 *  type). */
MGPO_API mgpo_status mgpo_set_grad_typed(mgpo_state *state, size_t index, const void *grads,
                                         mgpo_dtype grad_type);

/** A LoRA pair (as mgpo_lora_pair) whose buffers may be bf16 or fp16: A and
 *  B of `adapter_type` (master weights in the state when not float32),
 *  their gradients of `grad_type`, W of `base_type` (base mode: perturbed
 *  as round_nearest(W + c*D) and restored from a backup in W's own type,
 *  2 or 4 bytes per element, bit-exactly).  Start from a zero-filled
 *  struct. */
typedef struct mgpo_lora_pair_typed {
    void *a;                 /* A: rank*n_in elements of adapter_type */
    const void *grad_a;      /* its gradient, grad_type (may be NULL until set) */
    void *b;                 /* B: n_out*rank elements of adapter_type */
    const void *grad_b;      /* its gradient, grad_type (may be NULL until set) */
    void *base_weight;       /* W: n_out*n_in elements of base_type; base mode only */
    mgpo_dtype adapter_type; /* A and B */
    mgpo_dtype grad_type;    /* grad_a and grad_b */
    mgpo_dtype base_type;    /* W */
    size_t rank, n_in, n_out;
    double scaling;          /* as mgpo_lora_pair */
    mgpo_lora_mode mode;
    uint64_t reserved[4];    /* 0 (the ABI rule, 4); else RESERVED_FIELD */
} mgpo_lora_pair_typed;

/** mgpo_add_lora_pair for typed buffers; with every type float32 it is
 *  mgpo_add_lora_pair.  Errors: as mgpo_add_lora_pair, BAD_ENUM (a type),
 *  RESERVED_FIELD, INVALID_ARGUMENT (a bf16/fp16 buffer at an odd
 *  address, or a NaN or Inf in bf16/fp16 A or B), UNSUPPORTED (bf16/fp16 A
 *  and B in external mode). */
MGPO_API mgpo_status mgpo_add_lora_pair_typed(mgpo_state *state,
                                              const mgpo_lora_pair_typed *pair,
                                              const mgpo_tensor_options *options,
                                              size_t *index);

/** mgpo_set_lora_grads for gradients of `grad_type`.  Errors: as
 *  mgpo_set_lora_grads, BAD_ENUM, INVALID_ARGUMENT (odd address). */
MGPO_API mgpo_status mgpo_set_lora_grads_typed(mgpo_state *state, size_t index,
                                               const void *grad_a, const void *grad_b,
                                               mgpo_dtype grad_type);

/** Replaces the master weights of item `index` (a bf16/fp16 tensor, or a
 *  pair with bf16/fp16 A and B: A's elements first, then B's) by the
 *  `count` floats at `values` (copied), and writes their rounding into the
 *  caller's buffer (saturated: a finite master of 70000 gives an fp16
 *  buffer 65504, the master stays 70000): for a trainer that keeps float32
 *  weights in its own checkpoint.  Allowed until the first step.  Errors: NULL_ARGUMENT,
 *  INVALID_ARGUMENT (bad index, an item without master weights, count not
 *  the item's, or a value that is not finite), WRONG_PHASE.  Nothing
 *  changes on error. */
MGPO_API mgpo_status mgpo_set_master_weights(mgpo_state *state, size_t index,
                                             const float *values, size_t count);

/** Copies the master weights of item `index` (layout as
 *  mgpo_set_master_weights) to dst (`count` floats): the float32 values the
 *  optimizer steps, never perturbed.  Read-only.  Errors: NULL_ARGUMENT,
 *  INVALID_ARGUMENT (as mgpo_set_master_weights); dst untouched on error. */
MGPO_API mgpo_status mgpo_get_master_weights(const mgpo_state *state, size_t index,
                                             float *dst, size_t count);

/** Sets the loss scale S of the gradients the next mgpo_step reads (1 by
 *  default; it stays until set again): every gradient is used as
 *  g * (float)(1/S).  Call it before every step with your scaler's value.
 *  A power of two gives results bitwise equal to unscaled gradients (unless
 *  a scaled gradient overflowed, which refuses the step).  Saved in
 *  checkpoints.  Errors: NULL_ARGUMENT, BAD_GRAD_SCALE (not finite, or
 *  outside [MGPO_GRAD_SCALE_MIN, MGPO_GRAD_SCALE_MAX]); nothing changes on
 *  error. */
MGPO_API mgpo_status mgpo_set_grad_scale(mgpo_state *state, double scale);

/** Copies the loss scale S in force (mgpo_set_grad_scale's, or a loaded
 *  checkpoint's; 1 by default) to *scale: a resumed trainer gives it back
 *  to its GradScaler.  Read-only.  Errors: NULL_ARGUMENT (0.4). */
MGPO_API mgpo_status mgpo_get_grad_scale(const mgpo_state *state, double *scale);

/* ---- External optimizer mode (docs/integration.md) ---------------------- */

/* With config.optimizer_mode = MGPO_OPTIMIZER_EXTERNAL the caller's own
 * optimizer (torch::optim::AdamW, ggml-opt's AdamW, also under llama.cpp's
 * llama_opt_epoch, a hand-written update) owns the
 * moments and steps the parameters; the library perturbs along the momentum
 * buffer that optimizer keeps (AdamW exp_avg, SGD momentum_buffer), restores,
 * and keeps the gradient-norm EMA.  One iteration:
 *
 *     mgpo_perturb(st);       // theta += c * m_caller  (before the forward pass)
 *     forward(); backward();  // caller fills the gradient buffers
 *     s = mgpo_step(st);      // restores theta, checks g, updates gbar; no update
 *     if (s == MGPO_OK) caller_optimizer_step();   // right after mgpo_step
 *     else if (s == MGPO_ERR_NONFINITE_GRADIENT) skip it (theta is clean)
 *
 * An engine that runs backward and its step in one graph (ggml-opt) calls
 * mgpo_step from its scheduler's eval callback, at the node before the
 * first AdamW node (docs/integration.md, "ggml and llama.cpp").
 *
 * The state owns only the per-unit scalars and the restore data (exact mode:
 * 4 bytes per perturbed parameter; low-memory mode: none): no m, no v.
 * Every perturbation rule holds as in the integrated mode (units, the EMA
 * scale and its clamp, sign, LoRA weight-space norms, degenerate units,
 * exact or low-memory restore), computed from the caller's momentum, whose
 * norm perturb measures itself (one read of it).  The rule for when to
 * perturb follows the authors' code, which perturbs whenever exp_avg
 * exists: an item is perturbed once its momentum is attached (both buffers
 * for a pair) and its unit's momentum norm exceeds norm_eps; the step count
 * plays no part.  Items without attached momentum count as zero momentum.
 * mgpo_step counts t (completed steps, mgpo_stats.step) as in the
 * integrated mode.  gamma, and so gbar, is the raw gradient norm: clip,
 * unscale or accumulate in your own step as you like, after mgpo_step; if
 * your gradients are loss-scaled, give the scale to mgpo_set_grad_scale
 * (or unscale them before mgpo_step; gamma would be scaled otherwise).  lr, lr_scale, weight decay, betas, eps,
 * momentum, dampening and nesterov are unused in this mode; clipping must be
 * off (max_grad_norm 0).  Checkpoints hold gbar and the restore data, not
 * the caller's moments (save those with your optimizer). */

/** Attaches (or with NULL detaches) the momentum buffer that the caller's
 *  optimizer keeps for tensor `index`: `count` floats, read-only for the
 *  library (perturb and restore read it, never write it; in exact mode
 *  mgpo_save reads it too while perturbed).  Attach late if the optimizer
 *  creates it late (torch creates exp_avg at its first step), and again
 *  whenever it moves.  The caller owns it; keep it valid and at its address
 *  until replaced or mgpo_destroy, and do not change its values between
 *  mgpo_perturb and the restore (the restore subtracts c*m with it).
 *  m must be 4-byte aligned.  It may not overlap a gradient buffer (the
 *  backward pass writes the gradients between perturb and the restore,
 *  which reads m again): OVERLAP.  Never changes the momentum's element
 *  type: after mgpo_set_momentum_typed with bf16/fp16 a buffer is refused
 *  (INVALID_ARGUMENT; NULL detaches and keeps the type).
 *  Errors: NULL_ARGUMENT (state), INVALID_ARGUMENT (bad index, the index
 *  names a LoRA pair, the state is not in external mode, a misaligned
 *  buffer, a bf16/fp16 momentum type), WRONG_PHASE (the state is
 *  perturbed), OVERLAP (m overlaps a buffer the library writes, or a
 *  gradient buffer).  Nothing changes on error. */
MGPO_API mgpo_status mgpo_set_momentum(mgpo_state *state, size_t index, const float *m);

/** mgpo_set_momentum for a momentum buffer of any element type: `count`
 *  elements of `type` (torch.optim over bf16 parameters keeps a bf16
 *  exp_avg).  perturb widens it to float32 (exactly) as it reads it, so the
 *  perturbation is the one of its float32 values.  Tensors only (a pair's
 *  momenta are float32).  Errors: as mgpo_set_momentum, BAD_ENUM (type),
 *  INVALID_ARGUMENT (a buffer misaligned for its type); `type` is kept
 *  for mgpo_set_momentum's rule. */
MGPO_API mgpo_status mgpo_set_momentum_typed(mgpo_state *state, size_t index, const void *m,
                                             mgpo_dtype type);

/** mgpo_set_momentum for LoRA pair `index`: m_a (rank*n_in floats) and m_b
 *  (n_out*rank floats), the momentum buffers of A and B.  The pair is
 *  perturbed only while both are attached.  Errors: as mgpo_set_momentum,
 *  INVALID_ARGUMENT also when `index` is not a pair; both are checked
 *  before either is set. */
MGPO_API mgpo_status mgpo_set_lora_momentum(mgpo_state *state, size_t index,
                                            const float *m_a, const float *m_b);

/* ---- Reading the library's own moments ---------------------------------- */

/** Which moment mgpo_get_moments copies. */
typedef enum mgpo_moment {
    MGPO_MOMENT_FIRST = 0, /* m: AdamW exp_avg, SGD momentum_buffer */
    MGPO_MOMENT_SECOND = 1 /* v: AdamW exp_avg_sq (SGD has none) */
} mgpo_moment;

/** Copies moment `which` of item `index` (integrated mode) into dst, which
 *  must hold exactly `count` floats: the tensor's element count, or for a
 *  LoRA pair rank*n_in + n_out*rank, A's moment first, then B's (each
 *  row-major like A and B).  The values are the optimizer's exactly (torch's
 *  state_dict layout: exp_avg, exp_avg_sq, momentum_buffer); a
 *  perturbation does not change them.  Before the first step they are zero.
 *  Read-only: may run concurrently with other read-only calls.  Errors:
 *  NULL_ARGUMENT (state or dst), INVALID_ARGUMENT (bad index, count not
 *  the item's, MGPO_MOMENT_SECOND with SGD, or an external-mode state,
 *  which holds no moments), BAD_ENUM (unknown which); dst is untouched on
 *  error. */
MGPO_API mgpo_status mgpo_get_moments(const mgpo_state *state, size_t index,
                                      mgpo_moment which, float *dst, size_t count);

/* ---- The iteration ------------------------------------------------------ */

/** Nudges the perturbed tensors along their momentum: theta += c_U * m for
 *  every unit U, c_U = sign*rho*min(1/(gbar_U+norm_eps), scale_max) /
 *  (||m_U|| + norm_eps).  Does nothing (returns MGPO_OK) before the first
 *  step (integrated mode; in external mode: for items whose momentum is not
 *  attached), when rho is 0, for units whose momentum norm is <= norm_eps
 *  or not finite or whose c_U is Inf or 0 as a float, and when already
 *  perturbed; a LoRA pair in adapter mode is left alone when |c_U| *
 *  ||m_A|| or ||m_B|| would exceed MGPO_PERTURBATION_MAX.  Remembers c_U
 *  for restore and stats.  Until the restore (or the step), do not write
 *  the parameters: the restore starts from the perturbed values (changing
 *  the floating-point environment is fine).  With config.direction
 *  MGPO_DIRECTION_RANDOM the vector added is c'_U * z instead of c_U * m,
 *  z a seeded Gaussian (docs/algorithm.md), c'_U = c_U * ||m_U|| / ||z_U||,
 *  ||z_U|| over the items that move (in external mode those with their
 *  momentum attached): the same norm.  Errors: NULL_ARGUMENT, NO_TENSORS, ALLREDUCE (nothing
 *  changed), UNSUPPORTED (random direction with an all-reduce hook
 *  installed: its norm would be local). */
MGPO_API mgpo_status mgpo_perturb(mgpo_state *state);

/** Returns the parameters to their clean values: bit for bit in exact mode,
 *  by subtracting c*m in low-memory mode.  A no-op returning MGPO_OK when not
 *  perturbed.  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_restore(mgpo_state *state);

/** One optimizer step with the current gradient buffers.  Restores first if
 *  perturbed (fused into the update).  Updates the gradient-norm EMA once,
 *  clips if configured (without writing the caller's gradients), and applies
 *  AdamW or SGD to the clean parameters.
 *  In external mode it restores, checks the gradients for NaN/Inf, measures
 *  gamma (the raw gradient norm) and updates gbar once, and counts the step;
 *  it writes neither parameters nor moments: call your optimizer's step right
 *  after it returns MGPO_OK, and skip it on NONFINITE_GRADIENT.
 *  Errors: NULL_ARGUMENT, NO_TENSORS, NO_GRADIENT, ALLREDUCE (nothing
 *  changed), NONFINITE_GRADIENT (parameters restored, skipped-step count +1,
 *  nothing else changed: gbar and t stay; in external mode the caller must
 *  not step) when a gradient holds NaN or Inf, a unit's norm (a LoRA
 *  pair's, in weight space) or new EMA is not finite, the gradient norm
 *  after clipping is >= MGPO_GRAD_NORM_MAX, or, for SGD in integrated
 *  mode, a decayed parameter is NaN or Inf or the bound on the new
 *  momentum buffer or on the update reaches 2^100 (docs/api.md, "Numeric
 *  bounds": parameters near the end of the float range). */
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
    uint64_t reserved[4];       /* set to 0 (the ABI rule, 4) */
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
    uint64_t reserved[4];  /* set to 0 (the ABI rule, 4) */
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
 *  up, exact for every uint64_t count), then cosine decay to 0.  Pure,
 *  thread-safe. */
MGPO_API mgpo_schedule mgpo_schedule_paper(double peak_lr, uint64_t total_steps);

/** The learning rate for 0-based step `step` (the value to pass to
 *  mgpo_set_lr before that step), as transformers' get_cosine/linear_
 *  schedule_with_warmup with a floor of min_lr.  Errors: NULL_ARGUMENT,
 *  BAD_LR (peak/min invalid), BAD_ENUM, INVALID_ARGUMENT (warmup > total).
 *  Thread-safe. */
MGPO_API mgpo_status mgpo_schedule_lr(const mgpo_schedule *schedule,
                                      uint64_t step, double *lr);

/* ---- Checkpoints (docs/checkpoint-format.md) ---------------------------- */

/* A checkpoint holds the whole optimizer state: configuration (rounding
 * included), the loss scale (mgpo_set_grad_scale), per-tensor moments (m,
 * and v for AdamW; none in external mode, where the caller's optimizer
 * saves its own, to be attached again before mgpo_load), the float32
 * master weights of every bf16/fp16 parameter buffer, step counts, the
 * gradient-norm EMAs, the statistics, the perturbed flag and the
 * coefficients applied, and, when saved while perturbed, the clean copy of
 * every perturbed float32 parameter (exact mode) and of W for a LoRA pair
 * in base mode (either mode, in W's own type).  The stochastic rounding's
 * generator needs nothing more: its position is (config.seed, step).  It
 * does not hold the caller's buffers: save those yourself, at the same
 * moment (a bf16/fp16 buffer in its own type).
 *
 * The resume rule: load into a state registered like the saved one (the
 * same element types too), then put back into every buffer the library
 * writes (parameters of any type, LoRA A and B, and W in base mode) the
 * values it held when mgpo_save ran; for a bf16/fp16 buffer those are the
 * rounded values the state wrote into it.  Load itself never writes a
 * caller's buffer.  If the state was perturbed then, those are the
 * perturbed values; the state comes back perturbed and the next
 * mgpo_restore or mgpo_step returns to the clean values bit for bit (exact
 * mode, and always for a bf16/fp16 buffer, rewritten from its master, and
 * for W) or by subtracting c*m (a float32 buffer in low-memory mode, the
 * same arithmetic the uninterrupted run does).  Either way the resumed run
 * is bitwise identical to the uninterrupted one.  To store clean
 * parameters, call mgpo_restore before saving (the checkpoint is then also
 * smaller: no backup). */

/** Bytes that mgpo_save would write for the state as it is now: 48 bytes of
 *  header, 264 of configuration and counters, 48 per unit, 72 per tensor or
 *  pair, 56 per stepped buffer (a pair has two); then 4 bytes per parameter
 *  for m, 4 more for v (AdamW) (neither in external mode), 4 more per
 *  element of a bf16/fp16 parameter buffer (its master weights); while
 *  perturbed in exact mode 4 more per perturbed float32 parameter, and in
 *  external mode 2 more per perturbed bf16/fp16 parameter (its clean copy
 *  in the buffer's type: external mode keeps no master); and
 *  while perturbed, for a base-mode pair, n_out*n_in elements of W's type
 *  (4 or 2 bytes each, either restore mode).
 *  Read-only.  Errors: NULL_ARGUMENT. */
MGPO_API mgpo_status mgpo_checkpoint_size(const mgpo_state *state, size_t *size);

/** Serialises the state into `buffer` (capacity bytes, any alignment) in
 *  the versioned format of docs/checkpoint-format.md (version 3: every
 *  field little-endian, so a checkpoint moves between machines of either
 *  byte order; mgpo_load still reads version 2 and version 1, the writer's
 *  byte order, on a machine of that order), and writes its size to
 *  *written.  Read-only on the state; while it is perturbed in exact mode it
 *  also reads your float32 parameter buffers, from which it rebuilds the
 *  clean values the checkpoint holds (so do not write them concurrently:
 *  they must not be written while perturbed anyway).  Errors: NULL_ARGUMENT,
 *  BUFFER_TOO_SMALL (capacity < mgpo_checkpoint_size; nothing written, not
 *  even *written). */
MGPO_API mgpo_status mgpo_save(const mgpo_state *state, void *buffer,
                               size_t capacity, size_t *written);

/** Replaces the whole state with a checkpoint.  The state must have been
 *  registered like the saved one: the same tensors and pairs in the same
 *  order, with the same sizes, parameter element types (and W's type in
 *  base mode; gradient types may differ), options, LoRA shapes, scalings
 *  and modes, and the same optimizer, scope and restore mode.  Every other
 *  hyper-parameter (lr, betas, rho, rounding, the loss scale, ...) is taken
 *  from the checkpoint; num_threads and the all-reduce hook stay the
 *  state's.  A version-1 or version-2 file (written before mixed precision)
 *  means round-to-nearest and a loss scale of 1, and loads only into a
 *  state whose parameter buffers and W are all float32.  Allowed at any
 *  time, also before the first step.  Never touches the caller's buffers
 *  (not even a bf16/fp16 one: its master comes back, the buffer is yours to
 *  put back): restore them as the resume rule above says.  Validates
 *  everything before changing anything;
 *  on any error the state is exactly as before.  Errors (the order of the
 *  checks is in docs/checkpoint-format.md): NULL_ARGUMENT; CHECKPOINT_MAGIC (not a libmgpo checkpoint);
 *  CHECKPOINT_TRUNCATED (shorter than the header, or size differs from the
 *  recorded size, or records run past the end); CHECKPOINT_ENDIAN (a
 *  version-1 file from a machine of the other byte order, or a mark of no
 *  byte order); CHECKPOINT_VERSION (unsupported format version or flags);
 *  CHECKPOINT_CHECKSUM (header or payload CRC-32C mismatch);
 *  CHECKPOINT_LAYOUT (registrations or structural configuration differ from
 *  this state's, or a value no run produces: an invalid configuration or
 *  rates beyond the bounds, a step count of UINT64_MAX, a non-finite or
 *  -0.0 norm or EMA, an unset EMA with a value, a coefficient that is not
 *  the float of its unit's, a non-finite m, a negative or non-finite v, a
 *  momentum_sq that is not the sum of squares of m, a non-finite master
 *  weight, an unknown rounding, a loss scale that mgpo_set_grad_scale would
 *  refuse; the full list is in docs/api.md, "What the loader accepts"). */
MGPO_API mgpo_status mgpo_load(mgpo_state *state, const void *buffer, size_t size);

/** mgpo_save to the file `path`, atomically: writes a temporary
 *  ".mgpo-XXXXXX" in the same directory (created with mode 0666, so the
 *  umask applies), fsyncs it, renames it over `path` and fsyncs the
 *  directory, so `path` holds the old or the new checkpoint, never a torn
 *  one.  Any file name the file system accepts works (the temporary's name
 *  is short).  On failure the temporary is removed; a process killed
 *  mid-save may leave one behind, which is safe to delete.  A replaced file
 *  keeps its permission bits (not its owner); a new one gets 0666 & ~umask.
 *  If `path` is a symbolic link, the link is followed to its final target
 *  and kept: the target is replaced, in the target's directory; a dangling
 *  link is an IO error.  An existing `path` that is not a regular file (a
 *  directory, FIFO, device) is not replaced: IO.  Read-only on the state;
 *  never calls the allocator (it uses a few kilobytes of stack: a PATH_MAX
 *  buffer and a 4 KiB write buffer).  POSIX only (elsewhere
 *  MGPO_ERR_UNSUPPORTED).  Errors: NULL_ARGUMENT, INVALID_ARGUMENT (empty
 *  path), IO: the directory cannot be opened, or the create, a write, the
 *  fsync, the close or the rename failed (the old file is untouched, no
 *  temporary is left), or the fsync of the directory after the rename
 *  failed (then `path` already holds the new checkpoint, but its survival
 *  of a crash is not confirmed). */
MGPO_API mgpo_status mgpo_save_file(const mgpo_state *state, const char *path);

/** mgpo_load from a file.  Never blocks on a FIFO, device or socket: the
 *  file is opened non-blocking and anything but a regular file is refused
 *  (IO).  The 48-byte header is read and checked first (as mgpo_load's
 *  steps 1-7), then its recorded size against the file's size (else
 *  CHECKPOINT_TRUNCATED) and against the largest checkpoint this state's
 *  registrations can produce (else CHECKPOINT_LAYOUT), so a huge or forged
 *  file is refused before anything is allocated; then the whole checkpoint
 *  is read into one buffer from the state's allocator (validation needs all
 *  of it) and handed to mgpo_load.  Errors: as mgpo_load, IO (cannot open
 *  or read, or not a regular file), OUT_OF_MEMORY; the state is unchanged
 *  on every error.  POSIX only (elsewhere MGPO_ERR_UNSUPPORTED). */
MGPO_API mgpo_status mgpo_load_file(mgpo_state *state, const char *path);

/* ---- Checkpoints with the caller's record (paired resume) ----------------
 * Your parameters, data position, loss-scaler state or anything else you
 * need to resume, saved as opaque bytes inside the same checkpoint (the same
 * checksum, the same atomic file), so a resume can never pair an optimizer
 * state with parameters of another step.  The library never interprets the
 * bytes; byte order and layout are yours.  Such a checkpoint sets header
 * flag 1 (docs/checkpoint-format.md); a library without these functions
 * (0.3.0) refuses it with MGPO_ERR_CHECKPOINT_VERSION. */

/** mgpo_save, followed in the same checkpoint by `user_size` bytes copied
 *  from `user` (NULL only with user_size 0).  The checkpoint's size is
 *  mgpo_checkpoint_size + user_size + 8.  The caller keeps ownership of
 *  both buffers; `user` is only read.  Read-only on the state (concurrent
 *  read-only calls are safe).  Errors: NULL_ARGUMENT (state, buffer,
 *  written, or user with a non-zero size), INVALID_ARGUMENT (the size
 *  overflows size_t), BUFFER_TOO_SMALL (nothing written). */
MGPO_API mgpo_status mgpo_save_with_user(const mgpo_state *state, const void *user,
                                         size_t user_size, void *buffer, size_t capacity,
                                         size_t *written);

/** mgpo_load of a checkpoint written by mgpo_save_with_user or
 *  mgpo_save_file_with_user, also copying its caller's record into `user`
 *  (`capacity` bytes; NULL only with capacity 0) and its size into
 *  *user_size.  Loads the state and copies the record only when everything
 *  is valid: on any error neither the state nor `user` changes.  Errors: as
 *  mgpo_load; NULL_ARGUMENT also for user_size (or user NULL with a
 *  non-zero capacity); CHECKPOINT_LAYOUT also for a checkpoint that has no
 *  caller's record (written by mgpo_save / mgpo_save_file);
 *  BUFFER_TOO_SMALL when the record is larger than capacity (then only
 *  *user_size is written: the size needed; call again with a buffer that
 *  large).  mgpo_load and mgpo_load_file accept such a checkpoint and
 *  ignore the record.  Not thread-safe with other calls on the state. */
MGPO_API mgpo_status mgpo_load_with_user(mgpo_state *state, const void *buffer, size_t size,
                                         void *user, size_t capacity, size_t *user_size);

/** mgpo_save_file with the caller's record (as mgpo_save_with_user): one
 *  atomic file holds both, so `path` holds the old pair or the new pair,
 *  never a state of one step and a record of another.  Allocates nothing;
 *  `user` is only read.  Errors: as mgpo_save_file; NULL_ARGUMENT also for
 *  user NULL with a non-zero size. */
MGPO_API mgpo_status mgpo_save_file_with_user(const mgpo_state *state, const char *path,
                                              const void *user, size_t user_size);

/** mgpo_load_file of a file written by mgpo_save_file_with_user, copying
 *  its caller's record as mgpo_load_with_user does (a record larger than
 *  capacity: BUFFER_TOO_SMALL with *user_size set, checked from the file's
 *  last 8 bytes before anything is allocated, so a query with capacity 0
 *  costs one small read).  The record's size is not bounded by the state's
 *  registrations (it is yours); the rest of the file is, as mgpo_load_file
 *  says.  Errors: as mgpo_load_file and mgpo_load_with_user.  Not
 *  thread-safe with other calls on the state. */
MGPO_API mgpo_status mgpo_load_file_with_user(mgpo_state *state, const char *path, void *user,
                                              size_t capacity, size_t *user_size);

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
 *    not before the first step (integrated mode; in external mode whatever
 *    the step count, so every rank must attach its momenta at the same
 *    iteration), not with rho 0, not when already perturbed.
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
