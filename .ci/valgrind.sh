#!/usr/bin/env bash
# Runs every test registered in ctest under valgrind memcheck and fails on
# any memory error or any definite/indirect leak.
#
#   .ci/valgrind.sh [BUILD_DIR]
#
# With BUILD_DIR: uses that (already built) build tree.  Without: configures
# and builds its own tree, VALGRIND_BUILD_DIR or <repo>/build-valgrind
# (RelWithDebInfo, so reports have line numbers).
#
# Tests are taken from ctest itself (ctest -T memcheck), so new test programs
# are covered without touching this script.  Check runs test cases in the
# same process (CK_FORK=no), so a leak inside a test case is seen.  A test
# that cannot run under valgrind (one that compiles or installs a consumer
# project, MPI launches, long benchmarks) opts out with the ctest label
# `no_valgrind`:  set_tests_properties(name PROPERTIES LABELS no_valgrind)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -ge 1 ]]; then
  build="$(cd "$1" && pwd)"
else
  build="${VALGRIND_BUILD_DIR:-$repo/build-valgrind}"
  cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j2 >/dev/null
fi
valgrind="$(command -v valgrind)" || { echo "valgrind.sh: valgrind not found" >&2; exit 1; }

export CK_FORK=no
# The API fuzzer's replay (fuzz_api_corpus) fuzzes the caller's
# floating-point environment, which valgrind does not model (SSE rounding
# modes, exception flags): keep it at the default there.
export FUZZ_NO_FENV=1
# Check's default per-test timeout (4 s) is too short under valgrind.
export CK_TIMEOUT_MULTIPLIER="${CK_TIMEOUT_MULTIPLIER:-20}"
rm -f "$build"/Testing/Temporary/MemoryChecker.*.log
status=0
(cd "$build" && ctest -T memcheck -LE no_valgrind --no-tests=error -j2 --output-on-failure \
  --overwrite "MemoryCheckCommand=$valgrind" \
  --overwrite "MemoryCheckCommandOptions=--error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --num-callers=30") \
  || status=$?

# One line per process valgrind watched (test programs and their children).
echo "valgrind.sh: summary over $(ls "$build"/Testing/Temporary/MemoryChecker.*.log | wc -l) tests:"
cat "$build"/Testing/Temporary/MemoryChecker.*.log | grep -E "ERROR SUMMARY|definitely lost:|indirectly lost:" |
  sed -E 's/^==[0-9]+== +//' | sort | uniq -c
if [[ $status -ne 0 ]]; then
  echo "valgrind.sh: FAILED; logs in $build/Testing/Temporary/MemoryChecker.*.log" >&2
  exit 1
fi
echo "valgrind.sh: clean"
