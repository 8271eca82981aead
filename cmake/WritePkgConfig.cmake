# Writes mgpo.pc.  Used by the install step (cmake/MgpoInstall.cmake) and
# runnable on its own, which is how the tests check the absolute-LIBDIR case:
#
#   cmake -DMGPO_PC_OUTPUT=out/mgpo.pc -DMGPO_PC_PREFIX=/usr \
#         -DMGPO_PC_LIBDIR=lib -DMGPO_PC_INCLUDEDIR=include \
#         -DMGPO_PC_VERSION=0.1.0 [-DMGPO_PC_LIBS_PRIVATE="-lm -fopenmp"] \
#         -P cmake/WritePkgConfig.cmake
#
# MGPO_PC_LIBDIR and MGPO_PC_INCLUDEDIR are GNUInstallDirs values: relative to
# the prefix (written as ${prefix}/dir, so the file moves with the prefix) or
# absolute (written as they are).
foreach(_mgpo_var MGPO_PC_OUTPUT MGPO_PC_PREFIX MGPO_PC_LIBDIR
                  MGPO_PC_INCLUDEDIR MGPO_PC_VERSION)
  if("${${_mgpo_var}}" STREQUAL "")
    message(FATAL_ERROR "WritePkgConfig.cmake: ${_mgpo_var} is not set")
  endif()
endforeach()
if(NOT IS_ABSOLUTE "${MGPO_PC_PREFIX}")
  message(FATAL_ERROR "WritePkgConfig.cmake: prefix '${MGPO_PC_PREFIX}' is not absolute")
endif()
if(NOT DEFINED MGPO_PC_DESCRIPTION OR MGPO_PC_DESCRIPTION STREQUAL "")
  set(MGPO_PC_DESCRIPTION "Momentum-guided perturbation optimizer (LoRA-MGPO)")
endif()

# A relative dir hangs off ${prefix}; an absolute one is kept as is.
function(_mgpo_pc_dir out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  elseif(_mgpo_prefix STREQUAL "/")
    set(${out} "/${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

string(REGEX REPLACE "/+$" "" _mgpo_prefix "${MGPO_PC_PREFIX}")
if(_mgpo_prefix STREQUAL "")
  set(_mgpo_prefix "/")
endif()
_mgpo_pc_dir(_mgpo_libdir "${MGPO_PC_LIBDIR}")
_mgpo_pc_dir(_mgpo_includedir "${MGPO_PC_INCLUDEDIR}")

file(WRITE "${MGPO_PC_OUTPUT}" "prefix=${_mgpo_prefix}
libdir=${_mgpo_libdir}
includedir=${_mgpo_includedir}

Name: mgpo
Description: ${MGPO_PC_DESCRIPTION}
Version: ${MGPO_PC_VERSION}
Libs: -L\${libdir} -lmgpo
Libs.private: ${MGPO_PC_LIBS_PRIVATE}
Cflags: -I\${includedir}
")
