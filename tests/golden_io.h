/* Shared by the golden tests (test_golden, test_mixed_golden): reading the
 * files of tests/golden/, the deterministic noise of tests/golden/generate.py
 * that the C side reproduces bit for bit, FNV-1a hashes of little-endian
 * bytes, and the error statistics every golden test prints. */
#ifndef MGPO_GOLDEN_IO_H
#define MGPO_GOLDEN_IO_H

#include <stddef.h>
#include <stdint.h>

#include "mgpo.h"

/* A bounds-checked little-endian reader over a whole file: a read past the
 * end returns 0 / NULL and clears ok, so a parser checks ok once at the end. */
typedef struct golden_reader {
    const unsigned char *p, *end;
    int ok;
} golden_reader;

/* The whole file (malloc'd, *size bytes), or NULL. */
unsigned char *golden_read_file(const char *path, size_t *size);
const unsigned char *golden_take(golden_reader *r, size_t n);
uint16_t golden_u16(golden_reader *r);
uint32_t golden_u32(golden_reader *r);
uint64_t golden_u64(golden_reader *r);
double golden_f64(golden_reader *r);
/* n floats into a new array (NULL, and ok cleared, on failure). */
float *golden_f32_array(golden_reader *r, size_t n);
/* n uint16 values into a new array (NULL, and ok cleared, on failure). */
uint16_t *golden_u16_array(golden_reader *r, size_t n);

/* Sizes are bounded so that a corrupt header cannot ask for absurd memory. */
#define GOLDEN_MAX_TENSORS 64u
#define GOLDEN_MAX_STEPS 100000u
#define GOLDEN_MAX_COUNT (1u << 24)

/* The header that generate.py's and generate_mixed.py's formats share
 * (tests/golden/README.md): the magic, the version, the case name and the
 * configuration, up to and including max_grad_norm. */
typedef struct golden_header {
    char name[64];
    mgpo_config config;          /* exact restore, one thread */
    uint32_t flags, seed, noise_halving;
    size_t tensor_count, step_count, unit_count;
} golden_header;

/* Reads it into *h; NULL, or a static error message (bad magic, version,
 * enum or size). */
const char *golden_read_header(golden_reader *r, const char magic[8], uint32_t version,
                               golden_header *h);

/* Per step and unit: the perturb before step t, then step t itself. */
typedef struct golden_unit_step {
    double momentum_norm, scale, coefficient; /* all 0 when the perturb was skipped */
    double grad_norm, grad_norm_ema;
    int clamped;                              /* s_U was cut to scale_max */
} golden_unit_step;

/* One unit's record: f64 x 5, u32 clamped, u32 reserved. */
golden_unit_step golden_read_unit_step(golden_reader *r);

/* lowbias32 (C. Wellons), a bijective 32-bit hash (generate.py: mix32). */
uint32_t golden_mix32(uint32_t x);
/* generate.py's noise(seed, t, k, i) with amplitude 2^-shift: a 24-bit
 * integer times powers of two, exact in float32. */
float golden_noise(uint32_t seed, size_t t, size_t k, unsigned shift, size_t i);

/* FNV-1a (64 bit): the offset basis, and h extended by the `bytes` low
 * bytes of `value` in little-endian order (generate.py's fnv1a64 over
 * '<f4' or '<u2' arrays). */
#define GOLDEN_FNV_BASIS UINT64_C(0xcbf29ce484222325)
uint64_t golden_fnv1a(uint64_t h, uint64_t value, int bytes);

/* The largest errors of one kind of quantity, and how much of its
 * tolerance (|err| / allowed, <= 1 passes) was used. */
typedef struct golden_errors {
    const char *what;
    double max_abs, max_rel, max_used;
    size_t checked, failed;
} golden_errors;

/* Checks |got - want| <= rtol * |want| + floor (NaN fails), records it in
 * es and prints the first 20 failures since golden_reset_failures. */
void golden_check(golden_errors *es, const char *name, double got, double want, double rtol,
                  double floor, const char *where, size_t a, size_t b);
void golden_reset_failures(void);
/* One line per kind of quantity on stderr (nothing when none was checked). */
void golden_print(const char *name, const golden_errors *es);

#endif
