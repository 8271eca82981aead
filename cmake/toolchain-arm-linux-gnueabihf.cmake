# Cross build for arm (armhf) with Debian's arm-linux-gnueabihf-gcc, run under qemu-arm:
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-arm-linux-gnueabihf.cmake
# Needs crossbuild-essential-armhf, check:armhf and qemu-user (.ci/cross.sh armhf
# installs them).
set(MGPO_CROSS_TRIPLET arm-linux-gnueabihf)
set(MGPO_CROSS_PROCESSOR arm)
set(MGPO_CROSS_QEMU qemu-arm)
include(${CMAKE_CURRENT_LIST_DIR}/CrossDebian.cmake)
