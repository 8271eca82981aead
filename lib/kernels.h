/* The kernel table: one implementation of every elementwise pass over a
 * block, per instruction set, and how a state picks one.
 *
 * kernels.c defines the portable table (always built, runs anywhere); each
 * SIMD table is one file (kernels_avx2.c, kernels_avx512.c) exporting one
 * probe that returns its table when it was compiled in and the CPU this runs
 * on can execute it, NULL otherwise.  kernels_select.c lists the probes,
 * fastest first: a new table is a new file and one line there.
 *
 * Private to the library; included by internal.h after the types it names. */
#ifndef MGPO_KERNELS_H
#define MGPO_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mgpo.h"

typedef struct mgpo_slot mgpo_slot;
typedef struct mgpo_step_constants mgpo_step_constants;
typedef struct mgpo_exception_reader mgpo_exception_reader;

/* How the fused step rounds the master into the caller's buffer: nearest,
 * or stochastic with the generator's key and the block's first element. */
typedef struct mgpo_typed_rounding {
    bool stochastic;
    uint64_t key, first_index;
} mgpo_typed_rounding;

/* One implementation of every elementwise kernel for one instruction set.
 * All tables give bitwise identical results (tests/test_kernels.c); a state
 * picks one at creation (mgpo_kernels_choose, kernels_select.c) and keeps
 * it, so there is no global dispatch pointer. */
typedef struct mgpo_kernels {
    const char *name;
    double (*sum_squares)(const float *x, size_t n);
    void (*perturb)(float *params, float *backup, const float *m, float coefficient,
                    size_t n, bool stream);
    void (*unperturb)(float *params, const float *m, float coefficient, size_t n);
    /* The exact restore: dst = src (`stream` as for perturb's backup). */
    void (*copy)(float *dst, const float *src, size_t n, bool stream);
    /* mgpo_kernel_perturb_exact / mgpo_kernel_restore_exact (in place). */
    uint32_t (*perturb_exact)(float *params, float *backup, const float *m,
                              float coefficient, size_t n);
    void (*restore_exact)(float *params, const float *backup, const float *m,
                          float coefficient, size_t n);
    double (*adamw)(float *params, const float *src, const float *grads, float *m,
                    float *v, const mgpo_slot *slot, const mgpo_step_constants *k,
                    size_t n, float undo, mgpo_exception_reader *exact);
    double (*sgd)(float *params, const float *src, const float *grads, float *m,
                  const mgpo_slot *slot, const mgpo_step_constants *k, size_t n,
                  float undo, mgpo_exception_reader *exact);
    /* Mixed precision (convert.c): mgpo_kernel_load, _store, _perturb_store. */
    void (*load)(float *dst, const void *src, mgpo_dtype type, size_t n, float scale);
    void (*store)(void *dst, mgpo_dtype type, const float *src, size_t n);
    void (*perturb_store)(void *dst, mgpo_dtype type, const float *p, const float *m,
                          float coefficient, size_t n);
    /* mgpo_store_stochastic. */
    void (*store_stochastic)(void *dst, mgpo_dtype type, const float *src, size_t n,
                             uint64_t key, uint64_t first_index);
    /* Fused forms of the mixed-precision step, with the bits of the
     * composed ones (mgpo_kernel_sum_squares_typed, mgpo_kernel_adamw_typed). */
    double (*sum_squares_typed)(const void *x, mgpo_dtype type, size_t n, float scale);
    double (*adamw_typed)(float *master, const void *grads, mgpo_dtype grad_type, float scale,
                          float *m, float *v, void *out, mgpo_dtype out_type,
                          const mgpo_typed_rounding *rounding, const mgpo_slot *slot,
                          const mgpo_step_constants *k, size_t n);
} mgpo_kernels;

/* kernels.c: the portable C table, always built. */
const mgpo_kernels *mgpo_kernels_portable(void);
/* kernels_avx2.c: AVX2 + FMA + F16C, or NULL when not built (not x86-64
 * GCC/clang, or MGPO_PORTABLE_ONLY) or not supported by this CPU. */
const mgpo_kernels *mgpo_kernels_avx2(void);
/* kernels_avx512.c: AVX-512 F/BW/VL/DQ + FMA + F16C with the OS saving the
 * ZMM state (XGETBV), or NULL as for mgpo_kernels_avx2. */
const mgpo_kernels *mgpo_kernels_avx512(void);

/* kernels_select.c.  Every probe reads CPUID (and XGETBV) when called, so a
 * state that calls these once, at mgpo_create, reads them once. */

/* The fastest table this CPU supports (never NULL). */
const mgpo_kernels *mgpo_kernels_best(void);
/* The tables this CPU can run, fastest first, the portable one last; stores
 * at most `capacity` of them and returns how many there are. */
size_t mgpo_kernels_runnable(const mgpo_kernels **tables, size_t capacity);
/* The table named `name` ("portable", "avx2", "avx512") when this CPU can
 * run it; NULL for an unknown name or a table the build or CPU lacks. */
const mgpo_kernels *mgpo_kernels_named(const char *name);
/* The table of a new state: the one the environment variable MGPO_KERNELS
 * names when it is set and not empty (for tests and benchmarks), else
 * mgpo_kernels_best().  MGPO_ERR_UNSUPPORTED, with *out untouched, when it
 * names an unknown table or one this build or CPU cannot run: a forced
 * table is never silently replaced.  Reads the environment: call it where
 * no other thread changes it (mgpo_create). */
mgpo_status mgpo_kernels_choose(const mgpo_kernels **out);

#endif
