# ctest registration of the packaging tests (tests/consumer_test.cmake):
# install into a prefix under the build dir, then build two consumers of it.
# Included from tests/CMakeLists.txt.

# Consumers are built with the library's compiler, warnings and sanitizers;
# an ASan library cannot be loaded by an uninstrumented program.
set(_mgpo_consumer_cflags "-O2 -std=c11 -Wall -Wextra")
set(_mgpo_consumer_ldflags "")
if(MGPO_WERROR)
  string(APPEND _mgpo_consumer_cflags " -Werror")
endif()
if(MGPO_SANITIZE)
  string(APPEND _mgpo_consumer_cflags
         " -fsanitize=${MGPO_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all")
  set(_mgpo_consumer_ldflags "-fsanitize=${MGPO_SANITIZE}")
endif()

set(_mgpo_consumer_args
  -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
  -DBUILD_DIR=${PROJECT_BINARY_DIR}
  -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/consumer
  -DCONFIG=$<CONFIG>
  -DLIBDIR=${CMAKE_INSTALL_LIBDIR}
  -DINCLUDEDIR=${CMAKE_INSTALL_INCLUDEDIR}
  -DCMAKEDIR=${MGPO_INSTALL_CMAKEDIR}
  -DC_COMPILER=${CMAKE_C_COMPILER}
  "-DC_FLAGS=${_mgpo_consumer_cflags}"
  "-DLINK_FLAGS=${_mgpo_consumer_ldflags}"
  -DPKG_CONFIG=${PKG_CONFIG_EXECUTABLE})
set(_mgpo_consumer_script ${CMAKE_CURRENT_SOURCE_DIR}/consumer_test.cmake)

add_test(NAME packaging_pc_absolute
         COMMAND ${CMAKE_COMMAND} -DMODE=pc_absolute ${_mgpo_consumer_args}
                 -P ${_mgpo_consumer_script})
# Configuring a consumer project takes seconds; a hang should not take 25 min.
set(_mgpo_consumer_timeout 300)
# They run cmake and the compiler, not our code: valgrind would only slow them.
set_tests_properties(packaging_pc_absolute PROPERTIES TIMEOUT ${_mgpo_consumer_timeout}
                     LABELS no_valgrind)

# Installing into a scratch prefix needs every install dir under the prefix;
# with an absolute LIBDIR/INCLUDEDIR the install would write outside the build
# tree, so those tests are left out (pc_absolute covers the .pc file).
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}"
   OR IS_ABSOLUTE "${MGPO_INSTALL_CMAKEDIR}")
  message(STATUS "libmgpo: absolute install dirs, consumer tests not registered")
  return()
endif()

add_test(NAME packaging_install
         COMMAND ${CMAKE_COMMAND} -DMODE=install ${_mgpo_consumer_args}
                 -P ${_mgpo_consumer_script})
set_tests_properties(packaging_install PROPERTIES FIXTURES_SETUP mgpo_installed LABELS no_valgrind
                     TIMEOUT ${_mgpo_consumer_timeout})

add_test(NAME consumer_find_package
         COMMAND ${CMAKE_COMMAND} -DMODE=find_package ${_mgpo_consumer_args}
                 -P ${_mgpo_consumer_script})
set_tests_properties(consumer_find_package PROPERTIES FIXTURES_REQUIRED mgpo_installed LABELS no_valgrind
                     TIMEOUT ${_mgpo_consumer_timeout})

find_program(MGPO_MAKE NAMES make gmake)
if(MGPO_MAKE)
  add_test(NAME consumer_pkgconfig
           COMMAND ${CMAKE_COMMAND} -DMODE=pkgconfig -DMAKE=${MGPO_MAKE} ${_mgpo_consumer_args}
                   -P ${_mgpo_consumer_script})
  set_tests_properties(consumer_pkgconfig PROPERTIES FIXTURES_REQUIRED mgpo_installed LABELS no_valgrind
                       TIMEOUT ${_mgpo_consumer_timeout})
else()
  message(STATUS "libmgpo: make not found, consumer_pkgconfig not registered")
endif()

# The README's link lines (rpath, LD_LIBRARY_PATH, static) give binaries that
# start; the plain line alone gives one that does not.
add_test(NAME consumer_link_lines
         COMMAND ${CMAKE_COMMAND} -DMODE=link_lines ${_mgpo_consumer_args}
                 -P ${_mgpo_consumer_script})
set_tests_properties(consumer_link_lines PROPERTIES FIXTURES_REQUIRED mgpo_installed
                     LABELS no_valgrind TIMEOUT ${_mgpo_consumer_timeout})
