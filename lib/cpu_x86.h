/* What the x86-64 CPU this runs on can execute, from CPUID and XGETBV, for
 * the probes of the SIMD kernel tables.  Read on every call (there is no
 * cache: the library keeps no global state); a state calls the probes once,
 * at mgpo_create.  An instruction set counts only when the OS also saves
 * its registers (XCR0): a CPU with AVX-512 under an OS or a tool that does
 * not enable the ZMM state (valgrind hides AVX-512 from CPUID altogether)
 * takes a narrower table.  Private; x86-64 with GCC or clang only (the
 * includers check). */
#ifndef MGPO_CPU_X86_H
#define MGPO_CPU_X86_H

#include <cpuid.h>
#include <stdbool.h>
#include <stdint.h>

/* XCR0, the register states the OS saves; call only with OSXSAVE set. */
static inline uint64_t mgpo_cpu_xcr0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* XCR0 bits: SSE (1) and AVX (2) state; AVX-512 opmask (5), upper halves of
 * ZMM0-15 (6) and ZMM16-31 (7). */
#define MGPO_XCR0_YMM 0x06u
#define MGPO_XCR0_ZMM 0xe6u

/* AVX2, FMA and F16C (CPUID.1:ECX bit 29: every CPU with AVX2 and FMA has
 * it, but it is a separate bit), with the YMM state enabled. */
static inline bool mgpo_cpu_has_avx2(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned need1 = bit_OSXSAVE | bit_AVX | bit_FMA | bit_F16C;
    if ((c & need1) != need1) return false;
    if ((mgpo_cpu_xcr0() & MGPO_XCR0_YMM) != MGPO_XCR0_YMM) return false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (b & bit_AVX2) != 0;
}

/* The AVX2 set plus AVX-512 F, DQ (64-bit multiplies), BW and VL, with
 * the ZMM and opmask state enabled. */
static inline bool mgpo_cpu_has_avx512(void)
{
    if (!mgpo_cpu_has_avx2()) return false;
    if ((mgpo_cpu_xcr0() & MGPO_XCR0_ZMM) != MGPO_XCR0_ZMM) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const unsigned need7 = bit_AVX512F | bit_AVX512DQ | bit_AVX512BW | bit_AVX512VL;
    return (b & need7) == need7;
}

#endif
