#!/usr/bin/env bash
# The libtorch example against its Python torch reference: installs
# libtorch-dev when CMake cannot find Torch, builds only that example in
# $MGPO_CI_DIR/libtorch and runs the ctest labelled `libtorch`, which must
# pass (not be skipped) here.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"

if ! dpkg -s libtorch-dev >/dev/null 2>&1; then
    ci_note "libtorch-dev missing: installing"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends libtorch-dev g++
fi

dir="${MGPO_CI_DIR}/libtorch"
rm -rf "$dir"
cmake -S . -B "$dir" -DMGPO_WERROR=ON -DCMAKE_BUILD_TYPE=Release
cmake --build "$dir" -j2 --target libtorch_mgpo
# A skipped test would be a failure here: Torch is installed.
out="$(ctest --test-dir "$dir" -L libtorch --output-on-failure 2>&1)" || { printf '%s\n' "$out"; exit 1; }
printf '%s\n' "$out"
if printf '%s\n' "$out" | grep -qi "skipped\|Not Run"; then ci_fail "libtorch test skipped"; fi
