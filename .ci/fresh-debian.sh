#!/usr/bin/env bash
# The README's Quick start on a fresh machine: builds a minimal Debian 12
# (bookworm) root with debootstrap, with only a C compiler, CMake and make
# (gcc, libc6-dev, cmake, make: no Check, no pkg-config, no g++), copies a
# clean clone of this repository into it (the committed HEAD, nothing from
# the work tree) and runs, as root in a chroot, the README's two commands
# exactly as README.md writes them: the demo command, then the test command
# (which installs what it needs with apt-get from the same Debian mirror).
# Fails if either fails.
#
#   .ci/fresh-debian.sh
#
# The mirror is the Debian one this machine's apt uses (read from
# /etc/apt/sources.list*, or MGPO_DEBIAN_MIRROR); the root is built under
# $MGPO_CI_DIR/fresh-debian and removed afterwards (MGPO_KEEP_ROOT=1 keeps
# it).  Needs root (debootstrap, mount, chroot); installs debootstrap if it
# is missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(ci_root)"

[ "$(id -u)" -eq 0 ] || ci_fail "fresh-debian.sh needs root (debootstrap, mount, chroot)"
if ! command -v debootstrap >/dev/null 2>&1; then
    ci_note "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y debootstrap
fi

mirror="${MGPO_DEBIAN_MIRROR:-$(ci_debian_mirror bookworm)}"
[ -n "$mirror" ] || ci_fail "no Debian bookworm mirror in /etc/apt/sources.list*; set MGPO_DEBIAN_MIRROR"

demo_cmd="$(ci_readme_demo_command)"
test_cmd="$(ci_readme_test_command)"
root="$PWD/${MGPO_CI_DIR}/fresh-debian"

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -R -l "${mounted[i]}" || true; done
    mounted=()
    if [ "${MGPO_KEEP_ROOT:-0}" != 1 ]; then rm -rf "$root"; fi
}
trap cleanup EXIT

cleanup
mkdir -p "$root"
start=$SECONDS
ci_note "debootstrap bookworm from ${mirror} into ${root}"
debootstrap --variant=minbase --include=gcc,libc6-dev,cmake,make bookworm "$root" "$mirror" \
    >"$root.debootstrap.log" 2>&1 || { tail -n 30 "$root.debootstrap.log"; ci_fail "debootstrap failed"; }
rm -f "$root.debootstrap.log"
ci_note "debootstrap: $((SECONDS - start)) s"

# A clean clone: what is committed, no build trees or stray files.
git clone --quiet --no-hardlinks "$PWD" "$root/root/libmgpo"
ci_note "cloned $(git -C "$root/root/libmgpo" rev-parse --short HEAD) into /root/libmgpo"

cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount --rbind /dev "$root/dev" && mounted+=("$root/dev")

# A login-like environment: nothing of this machine's except the network.
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash -ec "cd /root/libmgpo && $1"
}
for step in demo test; do
    if [ "$step" = demo ]; then cmd="$demo_cmd"; else cmd="$test_cmd"; fi
    ci_note "README ${step} command, in the fresh root: ${cmd}"
    t=$SECONDS
    in_root "$cmd" || ci_fail "the README's ${step} command failed on a fresh Debian 12"
    ci_note "README ${step} command: $((SECONDS - t)) s"
done
ci_note "fresh Debian 12: both README commands passed in $((SECONDS - start)) s"
