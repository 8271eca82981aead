#!/usr/bin/env bash
# Runs the README's test command, as written, in a fresh CI build directory:
#   .ci/test.sh NAME [extra cmake configure arguments...]
# builds in $MGPO_CI_DIR/NAME instead of build/ and appends the extra
# arguments to the configure step (e.g. a build type or sanitizers).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"

[ "$#" -ge 1 ] || ci_fail "usage: .ci/test.sh NAME [cmake args...]"
name="$1"
shift

readme_cmd="$(ci_readme_test_command)"
dir="${MGPO_CI_DIR}/${name}"
dir_q="$(printf '%q' "$dir")"
extra=""
for arg in "$@"; do extra+=" $(printf '%q' "$arg")"; done

# Point every "build" of the command at our directory: `-B build`,
# `--build build`, `--test-dir build`.
cmd="${readme_cmd// build / ${dir_q} }"
case "$cmd" in *" build "*) ci_fail "could not retarget: $readme_cmd" ;; esac
cmd="${cmd/-B ${dir_q} /-B ${dir_q}${extra} }"

ci_note "README: ${readme_cmd}"
ci_note "run:    ${cmd}"
rm -rf "$dir"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
eval "$cmd"
