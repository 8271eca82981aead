#!/usr/bin/env bash
# The ggml and llama.cpp examples against the engines Debian ships: builds a
# minimal Debian unstable (sid) root with debootstrap (Debian 12 has neither
# libggml-dev nor libllama-dev), installs there libggml-dev and libllama-dev
# (ggml-opt.h, the CMake packages ggml and llama), the build tools (gcc,
# g++, make, cmake, pkg-config, check) and fortunes-min (a 137 kB package of
# plain-text fortunes, the examples' training text; the other text,
# /usr/share/common-licenses/GPL-3, comes with base-files), copies a clean
# clone of this repository in (the committed HEAD, nothing from the work
# tree), builds and installs libmgpo, then builds examples/ggml_opt and
# examples/llama_finetune on their own against the installed libmgpo
# (find_package(mgpo)) and Debian's packages (find_package(ggml),
# find_package(llama)), with warnings as errors, and runs their tests, which
# must pass, not be skipped; then builds and runs the same two from the
# libmgpo tree (MGPO_WERROR=ON).  Prints the versions it tested.
#
#   .ci/sid-engines.sh
#
# The mirror is the Debian one this machine's apt uses for bookworm (read
# from /etc/apt/sources.list*, or MGPO_DEBIAN_MIRROR), used for sid.  The
# root is built under $MGPO_CI_DIR/sid-engines and removed afterwards, its
# mounts first (MGPO_KEEP_ROOT=1 keeps it).  Needs root (debootstrap, mount,
# chroot); installs debootstrap if it is missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"

[ "$(id -u)" -eq 0 ] || ci_fail "sid-engines.sh needs root (debootstrap, mount, chroot)"
if ! command -v debootstrap >/dev/null 2>&1; then
    ci_note "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap
fi
mirror="${MGPO_DEBIAN_MIRROR:-$(ci_debian_mirror bookworm)}"
[ -n "$mirror" ] || ci_fail "no Debian mirror in /etc/apt/sources.list*; set MGPO_DEBIAN_MIRROR"

root="$PWD/${MGPO_CI_DIR}/sid-engines"
mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R -l "${mounted[i]}" || true; done
    mounted=()
    if [ "${MGPO_KEEP_ROOT:-0}" != 1 ]; then rm -rf "$root"; fi
}
trap cleanup EXIT

cleanup
mkdir -p "$(dirname "$root")"
start=$SECONDS
ci_note "debootstrap sid from ${mirror} into ${root}"
debootstrap --variant=minbase sid "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    { tail -n 30 "$root.debootstrap.log"; rm -f "$root.debootstrap.log"; ci_fail "debootstrap failed"; }
rm -f "$root.debootstrap.log"
ci_note "debootstrap: $((SECONDS - start)) s"

cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --rbind /dev "$root/dev" && mounted+=("$root/dev")

# A login-like environment: nothing of this machine's except the network.
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive /bin/bash -ec "$1"
}

# Check-Valid-Until off: a mirror that serves a dated snapshot of sid has a
# Release file whose Valid-Until may lie before this machine's clock
# (debootstrap does not check it; apt does).
t=$SECONDS
apt_opts="-o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false -q"
packages="gcc g++ libc6-dev make cmake pkg-config check libggml-dev libllama-dev fortunes-min"
in_root "apt-get $apt_opts update >/dev/null && apt-get $apt_opts install -y $packages >/root/apt.log 2>&1" ||
    { tail -n 30 "$root/root/apt.log"; ci_fail "apt-get install in the sid root failed"; }
ci_note "apt-get install ${packages}: $((SECONDS - t)) s"
ci_note "versions tested:"
in_root "dpkg-query -W -f '     \${Package} \${Version}\n' libggml-dev libggml0 libllama-dev libllama0 fortunes-min base-files gcc cmake check"

# A clean clone: what is committed, no build trees or stray files.
git clone --quiet --no-hardlinks "$PWD" "$root/root/libmgpo"
ci_note "cloned $(git -C "$root/root/libmgpo" rev-parse --short HEAD) into /root/libmgpo"

t=$SECONDS
in_root "cd /root/libmgpo
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMGPO_WERROR=ON -DMGPO_BUILD_TESTS=OFF \
        -DMGPO_BUILD_EXAMPLES=OFF -DMGPO_BUILD_BENCH=OFF >/dev/null
    cmake --build build -j2 >/dev/null
    cmake --install build >/dev/null" || ci_fail "building and installing libmgpo in the sid root failed"
ci_note "libmgpo built and installed in /usr/local: $((SECONDS - t)) s"

for ex in ggml_opt llama_finetune; do
    t=$SECONDS
    out="$(in_root "cd /root/libmgpo
        cmake -S examples/$ex -B build-$ex -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS='-Wall -Wextra -Werror'
        cmake --build build-$ex -j2
        ctest --test-dir build-$ex --output-on-failure -V" 2>&1)" ||
        { printf '%s\n' "$out"; ci_fail "examples/$ex failed against Debian's packages"; }
    # Only the example's own report (ctest -V prints the program's output).
    printf '%s\n' "$out" | grep -E '^[0-9]+: ' | grep -vE '^[0-9]+: (Test command|Working Directory|Test timeout)' |
        sed 's/^[0-9]*: /     /'
    # ctest marks a skipped test "***Skipped" and lists it under "did not run".
    if printf '%s\n' "$out" | grep -qE '\*\*\*Skipped|did not run|Not Run'; then
        printf '%s\n' "$out"
        ci_fail "examples/$ex was skipped in the sid root"
    fi
    printf '%s\n' "$out" | grep -q "100% tests passed" || { printf '%s\n' "$out"; ci_fail "examples/$ex: no passing test"; }
    ci_note "examples/$ex: built and passed in $((SECONDS - t)) s"
done
# The same two tests from the libmgpo tree (examples/CMakeLists.txt adds
# both directories; the project's flags, warnings as errors).
t=$SECONDS
out="$(in_root "cd /root/libmgpo
    cmake -S . -B build-tree -DCMAKE_BUILD_TYPE=Release -DMGPO_WERROR=ON -DMGPO_BUILD_BENCH=OFF
    cmake --build build-tree -j2 --target ggml_mgpo llama_mgpo
    ctest --test-dir build-tree -L 'ggml|llama' --output-on-failure" 2>&1)" ||
    { printf '%s\n' "$out"; ci_fail "the examples failed in the libmgpo tree"; }
if printf '%s\n' "$out" | grep -qE '\*\*\*Skipped|did not run|Not Run' ||
    ! printf '%s\n' "$out" | grep -q "100% tests passed, 0 tests failed out of 2"; then
    printf '%s\n' "$out"
    ci_fail "the examples did not both pass in the libmgpo tree"
fi
ci_note "both examples built and passed in the libmgpo tree: $((SECONDS - t)) s"
ci_note "sid root with Debian's ggml and llama.cpp: both examples passed in $((SECONDS - start)) s"
