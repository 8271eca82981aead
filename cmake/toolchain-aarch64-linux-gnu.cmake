# Cross build for aarch64 (arm64) with Debian's aarch64-linux-gnu-gcc, run under qemu-aarch64:
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64-linux-gnu.cmake
# Needs crossbuild-essential-arm64, check:arm64 and qemu-user (.ci/cross.sh arm64
# installs them).
set(MGPO_CROSS_TRIPLET aarch64-linux-gnu)
set(MGPO_CROSS_PROCESSOR aarch64)
set(MGPO_CROSS_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/CrossDebian.cmake)
