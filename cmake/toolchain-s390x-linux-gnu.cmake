# Cross build for s390x (s390x) with Debian's s390x-linux-gnu-gcc, run under qemu-s390x:
#   cmake -S . -B build-s390x -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-s390x-linux-gnu.cmake
# Needs crossbuild-essential-s390x, check:s390x and qemu-user (.ci/cross.sh s390x
# installs them).
set(MGPO_CROSS_TRIPLET s390x-linux-gnu)
set(MGPO_CROSS_PROCESSOR s390x)
set(MGPO_CROSS_QEMU qemu-s390x)
include(${CMAKE_CURRENT_LIST_DIR}/CrossDebian.cmake)
