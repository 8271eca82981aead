/* The bandwidth references of the benchmarks (bench/bandwidth_ref.c): what
 * the machine moves at best, so that a kernel's GB/s can be given as a
 * fraction of a limit rather than of another slow loop.
 *
 * Each reference is vectorised for the CPU it runs on (AVX-512, AVX2 or
 * plain C, picked at run time), splits the arrays evenly over `threads`
 * OpenMP threads and counts bytes by the STREAM convention (each array read
 * or written once; a store's write-allocate read is not counted):
 *   triad     a = b + s*c                       12 B/element
 *   triad_nt  the same with streaming stores     12 B/element
 *   update    p += s*g, m += g, v += g*g        28 B/element (r p g m v,
 *             w p m v: the traffic of an AdamW step, without its arithmetic)
 *   memcpy    glibc's memcpy, each thread its slice  8 B/element */
#ifndef MGPO_BENCH_BANDWIDTH_REF_H
#define MGPO_BENCH_BANDWIDTH_REF_H

#include <stddef.h>

enum { BW_TRIAD, BW_TRIAD_NT, BW_UPDATE, BW_MEMCPY, BW_KINDS };

/* The name of reference `kind` and its bytes per element. */
const char *bw_name(int kind);
double bw_bytes(int kind);
/* The instruction set the references use on this CPU ("avx512", "avx2",
 * "scalar"). */
const char *bw_isa(void);

/* Best GB/s of reference `kind` over n floats on `threads` threads: `reps`
 * timed runs after two warm-up runs.  Allocates and frees its own arrays
 * (64-byte aligned, first touched by the threads that use them). */
double bw_measure(int kind, size_t n, int threads, int reps);

#endif
