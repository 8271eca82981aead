# Decides whether the Check test suite is built, and finds Check.
#
# MGPO_BUILD_TESTS (cache) is AUTO, ON or OFF.  This file shadows it with a
# normal variable that is ON or OFF, which every directory then reads:
#   AUTO  ON when Check is found through pkg-config, else OFF with one line
#         saying why, so that the library, examples and benchmarks build with
#         only a C compiler, CMake and make.  Re-decided at every configure,
#         so installing Check later and re-running cmake turns the tests on.
#   ON    Check is required: configuring fails, naming the Debian packages.
#   OFF   no tests.
# On success the imported target PkgConfig::CHECK exists.
set(_mgpo_tests_request "${MGPO_BUILD_TESTS}")
string(TOUPPER "${_mgpo_tests_request}" _mgpo_tests_upper)
if(_mgpo_tests_upper STREQUAL "AUTO")
  set(_mgpo_tests_auto ON)
elseif(_mgpo_tests_request)
  set(_mgpo_tests_auto OFF)
elseif(_mgpo_tests_upper MATCHES "^(OFF|0|FALSE|NO|N)$")
  message(STATUS "libmgpo: tests off (MGPO_BUILD_TESTS=${_mgpo_tests_request})")
  set(MGPO_BUILD_TESTS OFF)
  return()
else()
  message(FATAL_ERROR "MGPO_BUILD_TESTS must be AUTO, ON or OFF, not '${_mgpo_tests_request}'")
endif()

# Check comes with a pkg-config file.  pkg_check_modules re-checks at every
# configure while the module is not found, so nothing stale is cached.
set(_mgpo_check_missing "")
find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  set(_mgpo_check_missing "pkg-config not found")
else()
  pkg_check_modules(CHECK QUIET IMPORTED_TARGET check)
  if(NOT CHECK_FOUND)
    set(_mgpo_check_missing "Check not found by pkg-config")
  endif()
endif()

if(_mgpo_check_missing STREQUAL "")
  set(MGPO_BUILD_TESTS ON)
elseif(_mgpo_tests_auto)
  message(STATUS "libmgpo: tests off: ${_mgpo_check_missing} (Debian: apt-get install check pkg-config)")
  set(MGPO_BUILD_TESTS OFF)
else()
  message(FATAL_ERROR "MGPO_BUILD_TESTS=ON, but ${_mgpo_check_missing}.  "
                      "Install the Debian packages: apt-get install check pkg-config")
endif()
