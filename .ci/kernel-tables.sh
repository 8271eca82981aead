#!/usr/bin/env bash
# Runs the golden and training tests once per kernel table this CPU can run,
# forced with MGPO_KERNELS (docs/performance.md), on an already built tree:
# every state the tests create then uses that table, so library paths the
# table-by-table comparisons of test_kernels / test_convert / test_digest do
# not reach (checkpoints, LoRA, mixed precision, external mode) run on each
# table too.  A table the CPU lacks is reported and skipped (mgpo_create
# would refuse it).
#
#   .ci/kernel-tables.sh BUILD_DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"

[ "$#" -ge 1 ] || ci_fail "usage: .ci/kernel-tables.sh BUILD_DIR"
build="$1"
[ -x "$build/tests/test_kernels" ] || ci_fail "$build/tests/test_kernels not built"

# The tables this CPU runs, as test_kernels lists them.
tables="$(CK_FORK=no "$build/tests/test_kernels" | sed -n "s/^kernels: this CPU runs the '\([a-z0-9]*\)' table.*/\1/p")"
[ -n "$tables" ] || ci_fail "test_kernels listed no kernel table"
for t in portable avx2 avx512; do
    if ! grep -qx "$t" <<<"$tables"; then ci_note "table $t: not runnable here, skipped"; continue; fi
    ci_note "table $t"
    MGPO_KERNELS="$t" ctest --test-dir "$build" --output-on-failure \
        -R '^test_(golden|mixed_golden|mixed|lora|checkpoint|checkpoint_mixed|checkpoint_lora|external|exceptions|restore|perturbation|accumulation|threads)$'
done
