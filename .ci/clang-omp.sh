#!/usr/bin/env bash
# The README test command built with clang-14 and LLVM's OpenMP runtime
# (libomp) under AddressSanitizer + UndefinedBehaviorSanitizer, warnings as
# errors.  The gcc builds use libgomp; the two runtimes treat a worker's
# floating-point environment differently (tests/test_fp_env.c), so both run.
# LeakSanitizer stays on; only libomp's own never-freed start-up allocations
# are suppressed (.ci/lsan-libomp.supp).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"

command -v clang-14 >/dev/null || ci_fail "clang-14 not found (apt-get install clang-14 libomp-dev)"
export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan-libomp.supp:print_suppressions=0"
bash .ci/test.sh clang-omp -DCMAKE_C_COMPILER=clang-14 -DMGPO_SANITIZE=address,undefined \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo

# The build must really have used libomp (FindOpenMP with clang-14), not
# fallen back to a serial build.
cache="${MGPO_CI_DIR}/clang-omp/CMakeCache.txt"
grep -q '^OpenMP_C_FLAGS:STRING=-fopenmp=libomp' "$cache" ||
    ci_fail "clang build did not find libomp: $(grep '^OpenMP_C_FLAGS' "$cache" || echo 'no OpenMP_C_FLAGS')"
ci_note "clang-14 + libomp: OpenMP flags $(grep '^OpenMP_C_FLAGS' "$cache")"
