# Shared part of the cross toolchain files cmake/toolchain-<triplet>.cmake:
# Debian's cross compilers (crossbuild-essential-<arch>), libraries of the
# target architecture from dpkg multiarch (e.g. check:arm64 in
# /usr/lib/<triplet>), and qemu-user to run the programs, so that ctest runs
# the test suite under emulation.  The including file sets MGPO_CROSS_TRIPLET,
# MGPO_CROSS_PROCESSOR and MGPO_CROSS_QEMU.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${MGPO_CROSS_PROCESSOR})
set(CMAKE_C_COMPILER ${MGPO_CROSS_TRIPLET}-gcc)
find_program(MGPO_CROSS_CXX ${MGPO_CROSS_TRIPLET}-g++)
if(MGPO_CROSS_CXX)
  set(CMAKE_CXX_COMPILER ${MGPO_CROSS_CXX})
endif()
# Libraries: the cross tree /usr/<triplet> (libc, libm) first, then, as
# multiarch, /usr/lib/<triplet> (Check); programs are the host's.
set(CMAKE_FIND_ROOT_PATH /usr/${MGPO_CROSS_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_LIBRARY_ARCHITECTURE ${MGPO_CROSS_TRIPLET})
# pkg-config reads the target's .pc files only (Check, libsubunit).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${MGPO_CROSS_TRIPLET}/pkgconfig:/usr/share/pkgconfig)
# ctest (and add_test with a target as COMMAND) runs programs through qemu,
# on the target's multiarch glibc (/lib/<triplet>, which check:<arch> pulls
# in) with its own dynamic loader.  No -L /usr/<triplet>: that would load the
# cross tree's loader (libc6-<arch>-cross) with the multiarch libc, two glibc
# builds, and then a plain pthread_create crashes (armhf) or hangs (arm64)
# and programs abort with "stack smashing detected" (s390x) under qemu 7.2.
set(CMAKE_CROSSCOMPILING_EMULATOR ${MGPO_CROSS_QEMU})
