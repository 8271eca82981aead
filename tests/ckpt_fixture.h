/* A small training setup shared by the checkpoint tests, the fuzz-style
 * test, the libFuzzer target and its corpus generator: a state with four
 * tensors (one spanning two reduction blocks, one not perturbed, with its own
 * lr and decay scales), deterministic parameters and parameter-dependent
 * gradients, so a perturbation changes the gradient and resumes are tested
 * on the real data flow. */
#ifndef MGPO_CKPT_FIXTURE_H
#define MGPO_CKPT_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "mgpo.h"

#define FX_TENSORS 4

typedef struct fx {
    mgpo_state *st;
    float *params[FX_TENSORS]; /* count floats; a bf16/fp16 tensor's count
                                  elements (uint16_t) fill the first half,
                                  the rest is 0 */
    float *grads[FX_TENSORS];  /* float32, times loss_scale */
    size_t count[FX_TENSORS];
    mgpo_dtype type[FX_TENSORS]; /* of params */
    float loss_scale;          /* the caller's: fx_grads multiplies by it */
} fx;

/* A test configuration: lr large enough that parameters move visibly. */
mgpo_config fx_config(mgpo_optimizer opt, mgpo_scope scope, mgpo_restore_mode mode);
/* Creates the state and registers the tensors; `big` floats in tensor 0
 * (0 means 5000, two blocks).  Returns MGPO_OK or the first error. */
mgpo_status fx_init(fx *f, const mgpo_config *cfg, size_t big);
/* fx_init with tensor k's parameters of element type types[k] (gradients
 * float32); the values are the same, rounded to the type. */
mgpo_status fx_init_typed(fx *f, const mgpo_config *cfg, size_t big,
                          const mgpo_dtype types[FX_TENSORS]);
/* The options tensor k is registered with (tensor 3: not perturbed, lr
 * scale 0.5, no decay). */
mgpo_tensor_options fx_options(size_t k);
/* Parameter i of tensor k as a float (converted from bf16/fp16). */
float fx_param(const fx *f, size_t k, size_t i);
void fx_free(fx *f);
/* The learning rate of step t (a short warm-up and decay). */
double fx_lr(uint64_t t);
/* Fills the gradients for iteration t from the current parameters. */
void fx_grads(fx *f, uint64_t t);
/* Four small states used by the fuzzers, each after three steps, with 64
 * elements in tensor 0: 0 AdamW, global scope, exact restore, perturbed;
 * 1 SGD Nesterov, per-tensor scope, low-memory restore, perturbed;
 * 2 AdamW, per-tensor scope, exact restore, clean;
 * 3 mixed precision: as 0 with tensor 0 bf16 and tensor 1 fp16
 * (master weights), stochastic rounding, a loss scale of 1024, perturbed. */
#define FX_LAYOUTS 4
mgpo_config fx_layout_config(int layout);
/* The layout's registrations (and the caller's loss scale), no step yet:
 * a state that can load the layout's checkpoints. */
mgpo_status fx_init_layout(fx *f, int layout);
mgpo_status fx_prepare(fx *f, int layout);
/* One iteration: set lr, perturb, gradients at the perturbed point, step. */
mgpo_status fx_iterate(fx *f, uint64_t t);
/* A malloc'd checkpoint of the state (NULL on failure); *size gets its size. */
unsigned char *fx_save(const mgpo_state *st, size_t *size);
/* Stores a native uint32_t/float (n 4) or uint64_t/double (n 8) at `at` in
 * the checkpoint byte order (little-endian); other n copies bytes as they
 * are.  Edits of checkpoint fields go through it, so tests run on any host. */
void fx_store_le(unsigned char *at, const void *value, size_t n);
/* Recomputes both checksums of a checkpoint of `size` bytes (>= 48) so that
 * a deliberately edited one passes the checksum tests. */
void fx_reseal(unsigned char *buf, size_t size);
/* The version-2 form of a version-3 checkpoint (malloc'd, *v2_size its
 * size): the state record cut after the seed (248 bytes: no rounding, no
 * loss scale), each item record cut to 64 bytes (no W type), version 2,
 * resealed; slot records and arrays as they are.  For a float32 state with
 * round-to-nearest and a loss scale of 1 it is what the version-2 writer
 * wrote.  NULL on a short input or allocation failure. */
unsigned char *fx_downgrade_v2(const unsigned char *v3, size_t size, size_t *v2_size);
/* 1 when the state saves to exactly `bytes` (size and content). */
int fx_state_is(const mgpo_state *st, const unsigned char *bytes, size_t size);

/* One random corruption of a checkpoint of `size` bytes, in place: bytes
 * flipped, a truncation, or a field set to a value that breaks parsers; half
 * of the kinds recompute the checksums so that the parser is reached.
 * Returns the new size (<= size).  *rng is the generator's state. */
size_t fx_mutate(unsigned char *buf, size_t size, uint64_t *rng);

/* Loads `rounds` corruptions of `valid` (a checkpoint of st as it is now)
 * into st.  Each must be accepted and save back to exactly its bytes, or be
 * refused with a checkpoint error code and leave st as `valid`; `check`
 * (may be NULL) must also return 1 after every round.  seen[status] counts
 * the outcomes.  Returns -1 when all held, else the failing round. */
#define FX_CODES 32
int fx_corrupt_rounds(mgpo_state *st, const unsigned char *valid, size_t size, int rounds,
                      uint64_t seed, unsigned seen[FX_CODES], int (*check)(void *), void *ctx);
/* A `check` for fx_corrupt_rounds: the fixture's parameters equal a copy. */
typedef struct fx_params_check {
    const fx *f;
    float *const *copy;
} fx_params_check;
int fx_params_same(void *ctx);

#endif
