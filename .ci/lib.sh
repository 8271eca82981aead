# Helpers shared by the .ci scripts; sourced, not run.  Every .ci script runs
# from the repository root (it cds there itself) and exits non-zero on failure.

# Where CI builds go, relative to the repository root (never the user's build/).
MGPO_CI_DIR="${MGPO_CI_DIR:-build-ci}"

ci_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# A clearly visible header line.
ci_header() {
    printf '\n==============================================================\n'
    printf '== %s\n' "$*"
    printf '==============================================================\n'
}

ci_note() { printf -- '-- %s\n' "$*"; }

ci_fail() {
    printf 'CI FAILED: %s\n' "$*" >&2
    exit 1
}

# Prints the README's test command, the single line that installs what is
# missing (tools/prereqs.sh), configures, builds and runs ctest.  CI runs
# exactly this line, so the README cannot drift.
ci_readme_test_command() {
    local line
    line="$(grep -m1 -E '^(bash tools/prereqs\.sh && )?cmake -S \. -B build .*&& ctest --test-dir build --output-on-failure$' README.md)" ||
        ci_fail "README.md has no test command line ('[bash tools/prereqs.sh && ]cmake -S . -B build ... && ctest --test-dir build --output-on-failure')"
    printf '%s\n' "$line"
}

# Prints the README's demo command, the line that builds and runs
# examples/lora_finetune --demo (.ci/fresh-debian.sh runs it as written).
ci_readme_demo_command() {
    local line
    line="$(grep -m1 -E '^cmake -S \. -B build .*&& \./build/examples/lora_finetune --demo$' README.md)" ||
        ci_fail "README.md has no demo command line ('cmake -S . -B build ... && ./build/examples/lora_finetune --demo')"
    printf '%s\n' "$line"
}
