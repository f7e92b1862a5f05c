# Writes version_info.h (BITSWEEP_VERSION, BITSWEEP_GIT_COMMIT) at build time, on every build,
# touching the file only when its text changes (so nothing recompiles otherwise).
# cmake -DSOURCE_DIR=... -DOUT=... -DVERSION=... -P version_info.cmake
execute_process(COMMAND git -C "${SOURCE_DIR}" describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE
                RESULT_VARIABLE git_result ERROR_QUIET)
if(NOT git_result EQUAL 0 OR commit STREQUAL "")
  set(commit "unknown")
endif()
set(text "#define BITSWEEP_VERSION \"${VERSION}\"\n#define BITSWEEP_GIT_COMMIT \"${commit}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT "${old}" STREQUAL "${text}")
  file(WRITE "${OUT}" "${text}")
endif()
