# Install rules: header, shared and static library, CMake package, mgpo.pc.
#
#   find_package(mgpo 0.4 CONFIG)  ->  mgpo::mgpo (shared), mgpo::mgpo_static
#   pkg-config --cflags --libs mgpo
#
# Components: "Runtime" (the versioned shared object) and "Development"
# (everything else), so packagers can split lib and -dev packages.
include(CMakePackageConfigHelpers)

set(MGPO_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/mgpo" CACHE STRING
    "Where mgpoConfig.cmake is installed (relative to the prefix, or absolute)")

install(FILES "${PROJECT_SOURCE_DIR}/include/mgpo.h"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT Development)

install(TARGETS mgpo_shared EXPORT mgpoTargets
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT Runtime
                NAMELINK_COMPONENT Development
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT Runtime
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT Development)
install(TARGETS mgpo_static EXPORT mgpoTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT Development)

install(EXPORT mgpoTargets NAMESPACE mgpo:: FILE mgpoTargets.cmake
        DESTINATION "${MGPO_INSTALL_CMAKEDIR}" COMPONENT Development)

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/mgpoConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/mgpoConfig.cmake"
  INSTALL_DESTINATION "${MGPO_INSTALL_CMAKEDIR}")
# 0.x: a minor release may change the API and ABI (the SONAME carries
# MAJOR.MINOR too), so a request for 0.1 must not accept 0.2.  SameMajorVersion
# would let find_package(mgpo 0.1) pick an incompatible 0.2; from 1.0 on the
# policy becomes SameMajorVersion.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/mgpoConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}" COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/mgpoConfig.cmake"
              "${PROJECT_BINARY_DIR}/mgpoConfigVersion.cmake"
        DESTINATION "${MGPO_INSTALL_CMAKEDIR}" COMPONENT Development)

# mgpo.pc is written at install time, not configure time, because only then
# is the prefix known for sure: `cmake --install build --prefix /elsewhere`
# overrides CMAKE_INSTALL_PREFIX after configuration.  The same script runs
# standalone in script mode (see cmake/WritePkgConfig.cmake).
set(MGPO_PC_LIBS_PRIVATE "")
if(MGPO_LIBM)
  string(APPEND MGPO_PC_LIBS_PRIVATE " -lm")
endif()
if(MGPO_USE_OPENMP)
  # The OpenMP runtime is only a private dependency: static links need it.
  string(APPEND MGPO_PC_LIBS_PRIVATE " ${OpenMP_C_FLAGS}")
endif()
string(STRIP "${MGPO_PC_LIBS_PRIVATE}" MGPO_PC_LIBS_PRIVATE)
configure_file("${CMAKE_CURRENT_LIST_DIR}/WritePkgConfig.cmake"
               "${PROJECT_BINARY_DIR}/WritePkgConfig.cmake" COPYONLY)
install(CODE "
  set(MGPO_PC_OUTPUT \"${PROJECT_BINARY_DIR}/pkgconfig-install/mgpo.pc\")
  set(MGPO_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(MGPO_PC_LIBDIR \"${CMAKE_INSTALL_LIBDIR}\")
  set(MGPO_PC_INCLUDEDIR \"${CMAKE_INSTALL_INCLUDEDIR}\")
  set(MGPO_PC_VERSION \"${PROJECT_VERSION}\")
  set(MGPO_PC_DESCRIPTION \"${PROJECT_DESCRIPTION}\")
  set(MGPO_PC_LIBS_PRIVATE \"${MGPO_PC_LIBS_PRIVATE}\")
  include(\"${PROJECT_BINARY_DIR}/WritePkgConfig.cmake\")
  if(IS_ABSOLUTE \"\${MGPO_PC_LIBDIR}\")
    set(_mgpo_pc_dir \"\${MGPO_PC_LIBDIR}/pkgconfig\")
  else()
    set(_mgpo_pc_dir \"\${CMAKE_INSTALL_PREFIX}/\${MGPO_PC_LIBDIR}/pkgconfig\")
  endif()
  # file(INSTALL) adds \$DESTDIR and records the file in install_manifest.txt.
  file(INSTALL DESTINATION \"\${_mgpo_pc_dir}\" TYPE FILE FILES \"\${MGPO_PC_OUTPUT}\")
" COMPONENT Development)
