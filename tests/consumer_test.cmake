# Packaging tests, run by ctest in CMake script mode:
#   cmake -DMODE=<mode> -DWORK_DIR=... [...] -P consumer_test.cmake
#
# MODE install      installs the built tree into WORK_DIR/prefix (the fixture
#                   the consumer tests need) and once more with DESTDIR, and
#                   checks the files, mgpo.pc's prefix and the version file.
# MODE pkgconfig    builds and runs examples/consumer with its Makefile and
#                   `pkg-config --cflags --libs mgpo`.
# MODE find_package configures, builds and runs examples/consumer's
#                   CMakeLists.txt (find_package(mgpo)) against the prefix.
# MODE link_lines   builds consumer.c with the link lines the README shows
#                   (plain, rpath, LD_LIBRARY_PATH, static) through /bin/sh
#                   and checks which binaries start with no library path.
# MODE pc_absolute  runs cmake/WritePkgConfig.cmake standalone with absolute
#                   and relative LIBDIR/INCLUDEDIR and checks pkg-config's view.
#
# Inputs: SOURCE_DIR, BUILD_DIR, WORK_DIR, CONFIG, LIBDIR, INCLUDEDIR,
# CMAKEDIR (install dirs relative to the prefix), C_COMPILER, C_FLAGS,
# LINK_FLAGS, PKG_CONFIG, MAKE.
cmake_minimum_required(VERSION 3.16)

# Runs a command; stops the test with its output when it fails.  The output
# is left in RUN_OUTPUT.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "command failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  string(STRIP "${out}" out)
  set(RUN_OUTPUT "${out}" PARENT_SCOPE)
endfunction()

function(expect_equal what actual expected)
  if(NOT actual STREQUAL expected)
    message(FATAL_ERROR "${what}:\n  got      '${actual}'\n  expected '${expected}'")
  endif()
endfunction()

# Directory of the .pc file under a prefix.
function(pc_dir out prefix)
  set(${out} "${prefix}/${LIBDIR}/pkgconfig" PARENT_SCOPE)
endfunction()

# pkg-config run against exactly one directory of .pc files.
function(pkg_config_in dir)
  set(ENV{PKG_CONFIG_PATH} "${dir}")
  set(ENV{PKG_CONFIG_LIBDIR} "${dir}")
  run(${PKG_CONFIG} ${ARGN})
  set(RUN_OUTPUT "${RUN_OUTPUT}" PARENT_SCOPE)
endfunction()

set(PREFIX "${WORK_DIR}/prefix")

if(MODE STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}" "${WORK_DIR}/destdir")
  run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --config "${CONFIG}" --prefix "${PREFIX}")
  foreach(f "${INCLUDEDIR}/mgpo.h" "${LIBDIR}/libmgpo.a" "${LIBDIR}/libmgpo.so"
            "${LIBDIR}/libmgpo.so.0.4" "${CMAKEDIR}/mgpoConfig.cmake"
            "${CMAKEDIR}/mgpoConfigVersion.cmake" "${CMAKEDIR}/mgpoTargets.cmake"
            "${LIBDIR}/pkgconfig/mgpo.pc")
    if(NOT EXISTS "${PREFIX}/${f}")
      message(FATAL_ERROR "not installed: ${PREFIX}/${f}")
    endif()
  endforeach()
  # The prefix in mgpo.pc is the install-time one, not the configure-time one.
  pc_dir(dir "${PREFIX}")
  pkg_config_in("${dir}" --variable=prefix mgpo)
  expect_equal("prefix in mgpo.pc" "${RUN_OUTPUT}" "${PREFIX}")

  # DESTDIR: files land under it, mgpo.pc names the final prefix.
  set(ENV{DESTDIR} "${WORK_DIR}/destdir")
  run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --config "${CONFIG}"
      --prefix /opt/mgpo-destdir)
  unset(ENV{DESTDIR})
  pc_dir(dir "/opt/mgpo-destdir")
  pkg_config_in("${WORK_DIR}/destdir${dir}" --variable=prefix mgpo)
  expect_equal("prefix in the DESTDIR mgpo.pc" "${RUN_OUTPUT}" "/opt/mgpo-destdir")
  if(NOT EXISTS "${WORK_DIR}/destdir/opt/mgpo-destdir/${LIBDIR}/libmgpo.so")
    message(FATAL_ERROR "DESTDIR install did not place the library under DESTDIR")
  endif()

  # SameMinorVersion: a 0.x request accepts only the same minor version.
  foreach(request_and_expected "0.4;TRUE" "0.4.0;TRUE" "0.4.1;TRUE" "0.4.2;FALSE" "0.3;FALSE" "0.5;FALSE" "0.0.9;FALSE" "1.2;FALSE")
    list(GET request_and_expected 0 request)
    list(GET request_and_expected 1 expected)
    string(REPLACE "." ";" parts "${request}.0.0")
    list(GET parts 0 PACKAGE_FIND_VERSION_MAJOR)
    list(GET parts 1 PACKAGE_FIND_VERSION_MINOR)
    list(GET parts 2 PACKAGE_FIND_VERSION_PATCH)
    set(PACKAGE_FIND_VERSION "${request}")
    unset(PACKAGE_VERSION_COMPATIBLE)
    include("${PREFIX}/${CMAKEDIR}/mgpoConfigVersion.cmake")
    expect_equal("version file accepts ${request}" "${PACKAGE_VERSION_COMPATIBLE}" "${expected}")
  endforeach()

elseif(MODE STREQUAL "pkgconfig")
  pc_dir(dir "${PREFIX}")
  pkg_config_in("${dir}" --cflags --libs mgpo)
  expect_equal("pkg-config --cflags --libs mgpo" "${RUN_OUTPUT}"
               "-I${PREFIX}/${INCLUDEDIR} -L${PREFIX}/${LIBDIR} -lmgpo")
  pkg_config_in("${dir}" --static --libs mgpo)
  if(NOT RUN_OUTPUT MATCHES "-lmgpo .*-lm")
    message(FATAL_ERROR "static link line lacks -lm: ${RUN_OUTPUT}")
  endif()

  # Build in a scratch copy, so the source tree stays clean.
  set(work "${WORK_DIR}/make")
  file(REMOVE_RECURSE "${work}")
  file(COPY "${SOURCE_DIR}/examples/consumer/consumer.c"
            "${SOURCE_DIR}/examples/consumer/Makefile" DESTINATION "${work}")
  set(ENV{PKG_CONFIG_PATH} "${dir}")
  set(ENV{PKG_CONFIG_LIBDIR} "${dir}")
  run("${MAKE}" -C "${work}" "CC=${C_COMPILER}" "PKG_CONFIG=${PKG_CONFIG}"
      "CFLAGS=${C_FLAGS}" "LDFLAGS=${LINK_FLAGS}" run)
  message(STATUS "${RUN_OUTPUT}")
  if(NOT RUN_OUTPUT MATCHES "libmgpo 0\\.4\\.1: 60 steps")
    message(FATAL_ERROR "unexpected consumer output")
  endif()

elseif(MODE STREQUAL "find_package")
  set(work "${WORK_DIR}/cmake")
  file(REMOVE_RECURSE "${work}")
  run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}/examples/consumer" -B "${work}"
      "-DCMAKE_PREFIX_PATH=${PREFIX}" "-DCMAKE_C_COMPILER=${C_COMPILER}"
      "-DCMAKE_C_FLAGS=${C_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${LINK_FLAGS}"
      "-DCMAKE_BUILD_TYPE=${CONFIG}")
  run("${CMAKE_COMMAND}" --build "${work}" --config "${CONFIG}")
  file(STRINGS "${work}/CMakeCache.txt" mgpo_dir REGEX "^mgpo_DIR:")
  if(NOT mgpo_dir MATCHES "^mgpo_DIR:PATH=${PREFIX}/")
    message(FATAL_ERROR "find_package used another mgpo: ${mgpo_dir}")
  endif()
  foreach(exe consumer consumer_static)
    run("${work}/${exe}")
    message(STATUS "${exe}: ${RUN_OUTPUT}")
  endforeach()

elseif(MODE STREQUAL "link_lines")
  # The README's lines, word for word but for the file names; keep in sync.
  set(work "${WORK_DIR}/link")
  file(REMOVE_RECURSE "${work}")
  file(MAKE_DIRECTORY "${work}")
  file(COPY "${SOURCE_DIR}/examples/consumer/consumer.c" DESTINATION "${work}")
  pc_dir(dir "${PREFIX}")
  set(ENV{PKG_CONFIG_PATH} "${dir}")
  set(ENV{PKG_CONFIG_LIBDIR} "${dir}")
  unset(ENV{LD_LIBRARY_PATH})
  set(pc "${PKG_CONFIG}")
  set(cc "${C_COMPILER} ${C_FLAGS}")
  set(libdir "${PREFIX}/${LIBDIR}")
  set(plain "${cc} consumer.c $(${pc} --cflags --libs mgpo) ${LINK_FLAGS} -o plain")
  set(rpath "${cc} consumer.c $(${pc} --cflags --libs mgpo) -Wl,-rpath,${libdir} ${LINK_FLAGS} -o rpath")
  set(static "${cc} consumer.c $(${pc} --cflags mgpo) $(${pc} --variable=libdir mgpo)/libmgpo.a $(${pc} --static --libs-only-other mgpo) -lm ${LINK_FLAGS} -o static")
  foreach(line plain rpath static)
    run(/bin/sh -c "${${line}}" WORKING_DIRECTORY "${work}")
  endforeach()
  foreach(exe rpath static)
    run("${work}/${exe}")
    if(NOT RUN_OUTPUT MATCHES "libmgpo 0\\.4\\.1: 60 steps")
      message(FATAL_ERROR "${exe}: unexpected output ${RUN_OUTPUT}")
    endif()
  endforeach()
  run(/bin/sh -c "LD_LIBRARY_PATH=${libdir} ./plain" WORKING_DIRECTORY "${work}")
  # Without rpath or LD_LIBRARY_PATH the loader cannot find libmgpo.so.0.4:
  # the failure the README explains (unless the prefix is on its path).
  execute_process(COMMAND "${work}/plain" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "libmgpo\\.so\\.0\\.4")
    message(FATAL_ERROR "the plain pkg-config line gave a binary that starts (${rc}): ${err}")
  endif()
  run(/bin/sh -c "ldd ./static" WORKING_DIRECTORY "${work}")
  if(RUN_OUTPUT MATCHES "libmgpo")
    message(FATAL_ERROR "the static binary still needs libmgpo: ${RUN_OUTPUT}")
  endif()

elseif(MODE STREQUAL "pc_absolute")
  set(work "${WORK_DIR}/pc")
  file(REMOVE_RECURSE "${work}")
  # prefix;libdir;includedir;expected libdir;expected includedir
  foreach(case
      "/usr/local;/opt/mgpo/lib64;/opt/mgpo/include;/opt/mgpo/lib64;/opt/mgpo/include"
      "/usr/local;lib/x86_64-linux-gnu;include/mgpo-0.1;/usr/local/lib/x86_64-linux-gnu;/usr/local/include/mgpo-0.1"
      "/opt/m/;lib;/srv/inc;/opt/m/lib;/srv/inc"
      "/;lib;include;/lib;/include")
    list(GET case 0 prefix)
    list(GET case 1 libdir)
    list(GET case 2 includedir)
    list(GET case 3 expected_libdir)
    list(GET case 4 expected_includedir)
    file(REMOVE_RECURSE "${work}")
    run("${CMAKE_COMMAND}" "-DMGPO_PC_OUTPUT=${work}/mgpo.pc" "-DMGPO_PC_PREFIX=${prefix}"
        "-DMGPO_PC_LIBDIR=${libdir}" "-DMGPO_PC_INCLUDEDIR=${includedir}"
        -DMGPO_PC_VERSION=0.1.0 "-DMGPO_PC_LIBS_PRIVATE=-lm"
        -P "${SOURCE_DIR}/cmake/WritePkgConfig.cmake")
    set(what "prefix ${prefix}, libdir ${libdir}, includedir ${includedir}")
    pkg_config_in("${work}" --variable=libdir mgpo)
    expect_equal("libdir for ${what}" "${RUN_OUTPUT}" "${expected_libdir}")
    pkg_config_in("${work}" --variable=includedir mgpo)
    expect_equal("includedir for ${what}" "${RUN_OUTPUT}" "${expected_includedir}")
    pkg_config_in("${work}" --modversion mgpo)
    expect_equal("version for ${what}" "${RUN_OUTPUT}" "0.1.0")
    pkg_config_in("${work}" --static --libs mgpo)
    if(NOT RUN_OUTPUT MATCHES "-lmgpo -lm$")
      message(FATAL_ERROR "static libs for ${what}: ${RUN_OUTPUT}")
    endif()
    # pkg-config drops -I/-L of system dirs; elsewhere the flags are whole.
    if(expected_libdir MATCHES "^/opt/")
      pkg_config_in("${work}" --cflags --libs mgpo)
      expect_equal("flags for ${what}" "${RUN_OUTPUT}"
                   "-I${expected_includedir} -L${expected_libdir} -lmgpo")
    endif()
  endforeach()
  # A relative prefix is refused rather than written into a broken file.
  execute_process(COMMAND "${CMAKE_COMMAND}" "-DMGPO_PC_OUTPUT=${work}/bad.pc"
                  -DMGPO_PC_PREFIX=relative -DMGPO_PC_LIBDIR=lib -DMGPO_PC_INCLUDEDIR=include
                  -DMGPO_PC_VERSION=0.1.0 -P "${SOURCE_DIR}/cmake/WritePkgConfig.cmake"
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  if(rc EQUAL 0 OR EXISTS "${work}/bad.pc")
    message(FATAL_ERROR "WritePkgConfig.cmake accepted a relative prefix")
  endif()

else()
  message(FATAL_ERROR "consumer_test.cmake: unknown MODE '${MODE}'")
endif()
