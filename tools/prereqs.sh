#!/usr/bin/env bash
# Installs what building and testing libmgpo needs, with apt-get, only when
# something is missing; when everything is present it installs nothing and
# needs neither root nor the network.  Used by the README's test command and
# by .ci/prereqs.sh.
#
#   bash tools/prereqs.sh        the test suite: cmake (>= 3.16), a C compiler
#                                and libc headers, make, pkg-config, Check, g++
#                                (for the C++ example)
#   bash tools/prereqs.sh --ci   also the tools of the CI sections: Open MPI,
#                                valgrind, clang with libFuzzer, clang-14
#                                with LLVM's OpenMP runtime (libomp)
#
# Debian/Ubuntu only.  As root it runs apt-get directly, otherwise through
# password-less sudo; without either it fails, naming the packages.
set -euo pipefail

ci=0
case "${1:-}" in
    "") ;;
    --ci) ci=1 ;;
    *) echo "usage: bash tools/prereqs.sh [--ci]" >&2; exit 2 ;;
esac

note() { printf -- '-- prereqs: %s\n' "$*"; }
fail() { printf 'prereqs: %s\n' "$*" >&2; exit 1; }

# libc6-dev is only a Recommends of gcc, and this installs without
# recommends.  pkg-config is how CMake finds Check.
packages=(cmake gcc g++ make libc6-dev pkg-config check)
if [ "$ci" -eq 1 ]; then
    packages+=(libopenmpi-dev openmpi-bin valgrind clang libclang-rt-dev clang-14 libomp-dev)
fi

have() { command -v "$1" >/dev/null 2>&1; }

# Fills missing[] with what this machine lacks.
find_missing() {
    missing=()
    have cmake || missing+=(cmake)
    have make || missing+=(make)
    have pkg-config || missing+=(pkg-config)
    have g++ || have c++ || missing+=(g++)
    # A compiler and the C library headers: compile something that needs both.
    if ! printf '#include <stdio.h>\nint main(void) { return 0; }\n' |
            "${CC:-cc}" -x c - -o /dev/null >/dev/null 2>&1; then
        missing+=(compiler)
    fi
    if have pkg-config && ! pkg-config --exists check; then missing+=(check); fi
    if [ "$ci" -eq 1 ]; then
        have mpicc || missing+=(mpicc)
        have mpiexec || missing+=(mpiexec)
        have valgrind || missing+=(valgrind)
        have clang || missing+=(clang)
        have clang-14 || missing+=(clang-14)
        # libomp-dev: the omp.h and libomp.so that clang-14 -fopenmp=libomp uses.
        if have clang-14 &&
                ! printf '#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n' |
                clang-14 -fopenmp=libomp -x c - -o /dev/null >/dev/null 2>&1; then
            missing+=(libomp)
        fi
    fi
}

find_missing
if [ "${#missing[@]}" -eq 0 ]; then
    note "all present"
else
    note "missing: ${missing[*]}; installing: ${packages[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif have sudo && sudo -n true 2>/dev/null; then
        sudo=(sudo)
    else
        fail "not root and no password-less sudo: install ${packages[*]} first (apt-get install ${packages[*]})"
    fi
    have apt-get || fail "no apt-get: install the equivalents of ${packages[*]} first"
    export DEBIAN_FRONTEND=noninteractive
    # Another apt-get may hold the lock for a while; wait instead of failing.
    apt=(apt-get -o DPkg::Lock::Timeout=600)
    "${sudo[@]}" "${apt[@]}" update
    "${sudo[@]}" "${apt[@]}" install -y --no-install-recommends "${packages[@]}"
    find_missing
    [ "${#missing[@]}" -eq 0 ] || fail "still missing after apt-get: ${missing[*]}"
fi

cmake_version="$(cmake --version | sed -n '1s/^cmake version //p')"
if ! printf '%s\n%s\n' 3.16 "$cmake_version" | sort -V -C; then
    fail "cmake ${cmake_version} is older than 3.16"
fi
note "cmake ${cmake_version}, $("${CC:-cc}" --version | head -n1), pkg-config $(pkg-config --version), check $(pkg-config --modversion check)"
