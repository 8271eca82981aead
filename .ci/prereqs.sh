#!/usr/bin/env bash
# Installs the build prerequisites and the tools of the later CI sections
# (Open MPI, valgrind, clang with libFuzzer) with apt-get, only when something
# is missing: tools/prereqs.sh --ci, the script the README's test command runs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"
bash tools/prereqs.sh --ci
