#!/usr/bin/env bash
# Installs the build prerequisites with apt-get, only when something is
# missing: cmake (>= 3.16), a C compiler, make, pkg-config and Check, plus the
# tools of the later sections: Open MPI, valgrind, clang with libFuzzer, and
# clang-14 with LLVM's OpenMP runtime (libomp) for .ci/clang-omp.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"

# Debian packages.  libc6-dev is only a Recommends of gcc, and CI installs
# without recommends.  g++ only builds the C++ example (skipped without it).
packages=(cmake check pkg-config gcc g++ make libc6-dev
          libopenmpi-dev openmpi-bin valgrind clang libclang-rt-dev clang-14 libomp-dev)

# Fills missing[] with what this machine lacks.
find_missing() {
    missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v make >/dev/null 2>&1 || missing+=(make)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v mpicc >/dev/null 2>&1 || missing+=(mpicc)
    command -v mpiexec >/dev/null 2>&1 || missing+=(mpiexec)
    command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
    command -v clang >/dev/null 2>&1 || missing+=(clang)
    command -v clang-14 >/dev/null 2>&1 || missing+=(clang-14)
    # libomp-dev: the omp.h and libomp.so that clang-14 -fopenmp=libomp uses.
    if command -v clang-14 >/dev/null 2>&1 &&
            ! printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n' |
            clang-14 -fopenmp=libomp -x c - -o /dev/null >/dev/null 2>&1; then
        missing+=(libomp)
    fi
    # A compiler and the C library headers: compile something that needs both.
    if ! printf '#include <stdio.h>\nint main(void) { return 0; }\n' |
            "${CC:-cc}" -x c - -o /dev/null >/dev/null 2>&1; then
        missing+=(compiler)
    fi
    if command -v pkg-config >/dev/null 2>&1 && ! pkg-config --exists check; then
        missing+=(check)
    fi
}

find_missing

if [ "${#missing[@]}" -eq 0 ]; then
    ci_note "all prerequisites present"
else
    ci_note "missing: ${missing[*]}; installing: ${packages[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo)
    else
        ci_fail "not root and no password-less sudo: install ${packages[*]} first"
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends "${packages[@]}"
    find_missing
    [ "${#missing[@]}" -eq 0 ] || ci_fail "still missing after apt-get: ${missing[*]}"
fi

cmake_version="$(cmake --version | sed -n '1s/^cmake version //p')"
ci_note "cmake ${cmake_version}, $("${CC:-cc}" --version | head -n1), pkg-config $(pkg-config --version), check $(pkg-config --modversion check)"
if ! printf '%s\n%s\n' 3.16 "$cmake_version" | sort -V -C; then
    ci_fail "cmake ${cmake_version} is older than 3.16"
fi
