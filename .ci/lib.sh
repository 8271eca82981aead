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

# Prints the first URI of a Debian source for suite $1 in this machine's apt
# sources (/etc/apt/sources.list*, one-line or deb822 format) that is not
# the security archive; nothing if there is none.  .ci/fresh-debian.sh and
# .ci/sid-engines.sh debootstrap from it.
ci_debian_mirror() {
    local suite="$1" f
    {
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            awk -v suite="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++;
                                  if ($(i + 1) == suite) { print $i; exit } }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            # deb822: blank-line separated stanzas with URIs: and Suites: fields.
            awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
                 { uri = ""; ok = 0
                   for (i = 1; i <= NF; i++) {
                     if ($i ~ /^URIs:/) { split($i, w, /[ \t]+/); uri = w[2] }
                     if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/)
                       for (j = 2; j <= n; j++) if (w[j] == suite) ok = 1 } }
                   if (ok && uri != "") { print uri; exit } }' "$f"
        done
    } | head -n1
}
