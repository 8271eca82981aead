#!/usr/bin/env bash
# Runs a libFuzzer target with ASan and UBSan for a bounded time and fails on
# any crash, sanitizer report or failed check.
#
#   .ci/fuzz.sh [SECONDS] [TARGET]   default 60 s of fuzz_load (the checkpoint
#                                    loader); TARGET fuzz_api fuzzes the whole
#                                    API.  Works from any directory.
#
# Environment: CC (default clang-14, else clang), FUZZ_BUILD_DIR (default
# <repo>/build-fuzz), FUZZ_JOBS (parallel fuzzing processes, default 1),
# FUZZ_CFLAGS (extra C flags, e.g. -DFUZZ_0_3_COMPAT=1 to switch off
# fuzz_api's checks of issue 20's findings 2, 5, 7 and 8: docs/fuzzing.md),
# FUZZ_OPENMP=ON (build with OpenMP, libomp with clang, so that fuzz_api's
# side B really runs on another thread count; libomp's never-freed start-up
# allocations are suppressed as in .ci/clang-omp.sh).
# The committed seed corpus (tests/fuzz/corpus for fuzz_load,
# tests/fuzz/corpus-api for fuzz_api) is copied, never modified; new
# inputs and any crash-* reproducer stay in the build directory.  See
# docs/fuzzing.md for longer runs.
set -euo pipefail

seconds="${1:-60}"
target="${2:-fuzz_load}"
case "$target" in
  fuzz_load) seeds=corpus ;;
  fuzz_api) seeds=corpus-api ;;
  *) echo "fuzz.sh: unknown target $target" >&2; exit 2 ;;
esac
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FUZZ_BUILD_DIR:-$repo/build-fuzz}"
jobs="${FUZZ_JOBS:-1}"
if [[ -z "${CC:-}" ]]; then
  if command -v clang-14 >/dev/null; then CC=clang-14; else CC=clang; fi
fi

cmake -S "$repo" -B "$build" -DCMAKE_C_COMPILER="$CC" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMGPO_BUILD_FUZZ=ON -DMGPO_SANITIZE=address,undefined -DMGPO_WITH_OPENMP="${FUZZ_OPENMP:-OFF}" \
  -DMGPO_BUILD_TESTS=OFF -DMGPO_BUILD_EXAMPLES=OFF -DMGPO_BUILD_BENCH=OFF \
  "-DCMAKE_C_FLAGS=${FUZZ_CFLAGS:-}" >/dev/null
cmake --build "$build" --target "$target" -j2 >/dev/null

work="$build/fuzz-run-$target"
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
cp "$repo/tests/fuzz/$seeds"/* "$work/corpus/"

export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1"
if [[ "${FUZZ_OPENMP:-OFF}" == ON ]]; then
  export LSAN_OPTIONS="suppressions=$repo/.ci/lsan-libomp.supp:print_suppressions=0"
fi
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
parallel=()
if [[ "$jobs" -gt 1 ]]; then parallel=(-jobs="$jobs" -workers="$jobs"); fi
status=0
# libFuzzer writes fuzz-N.log files of parallel jobs into the current directory.
(cd "$work" && "$build/tests/fuzz/$target" -max_total_time="$seconds" ${parallel[@]+"${parallel[@]}"} \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus") >"$work/fuzz.log" 2>&1 || status=$?
tail -n 12 "$work/fuzz.log"
if [[ $status -ne 0 ]] || compgen -G "$work/artifacts/*" >/dev/null; then
  echo "fuzz.sh: FAILED (status $status); log $work/fuzz.log, reproducers in $work/artifacts" >&2
  ls -l "$work/artifacts" >&2 || true
  exit 1
fi
runs=$(cat "$work"/fuzz*.log | grep -o 'stat::number_of_executed_units: *[0-9]*' |
  awk '{ n += $2 } END { print n + 0 }')
echo "fuzz.sh: $target: no crash in ${seconds}s, $runs inputs run ($((runs / seconds)) per second)," \
  "corpus $(ls "$work/corpus" | wc -l) files"
