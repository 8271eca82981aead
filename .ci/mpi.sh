#!/usr/bin/env bash
# Builds libmgpo with MPI and runs the MPI tests (ctest label "mpi").
# Works from a fresh clone anywhere; installs Open MPI with apt-get if it is
# missing.  Usage: .ci/mpi.sh [build-dir]   (default: a new temporary dir)
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$(mktemp -d "${TMPDIR:-/tmp}/mgpo-mpi.XXXXXX")}"

if ! command -v mpicc >/dev/null || ! command -v mpiexec >/dev/null; then
    echo "mpi.sh: installing Open MPI (libopenmpi-dev openmpi-bin)"
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq \
        libopenmpi-dev openmpi-bin >/dev/null
fi

# Open MPI refuses to run as root (CI containers) without these; the ctest
# tests set them too, this covers running the example by hand.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cmake -S "$src" -B "$build" -DMGPO_WERROR=ON -DMGPO_BUILD_BENCH=OFF >/dev/null
# The MPI tests must run, not be skipped for lack of MPI.
if ctest --test-dir "$build" -N -R '^mpi_data_parallel_skipped$' | grep -q 'Total Tests: 1'; then
    echo "mpi.sh: CMake did not find MPI (see $build/CMakeCache.txt)" >&2
    exit 1
fi
cmake --build "$build" -j2 --target mpi_data_parallel test_allreduce
ctest --test-dir "$build" --output-on-failure -R '^(mpi_|test_allreduce$)'
echo "mpi.sh: MPI tests passed (build dir $build)"
