# Run by the compile-fail tests that tests/CMakeLists.txt registers (tmm_add_compile_fail):
#
#   cmake -DTMM_BUILD_DIR=<build tree> -DTMM_TARGET=<object library> -DTMM_REGEX_FILE=<file>
#         [-DTMM_CONFIG=<config>] -P tmm_expect_compile_fail.cmake
#
# Builds TMM_TARGET and succeeds only if that build fails AND its output matches the CMake
# regular expression stored in TMM_REGEX_FILE: a failure for another reason is a failure.
foreach(var TMM_BUILD_DIR TMM_TARGET TMM_REGEX_FILE)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "tmm_expect_compile_fail.cmake: -D${var}=... is required")
    endif()
endforeach()

file(READ "${TMM_REGEX_FILE}" regex)
if(regex STREQUAL "")
    message(FATAL_ERROR "tmm_expect_compile_fail.cmake: ${TMM_REGEX_FILE} holds no regex")
endif()

set(config_args "")
if(DEFINED TMM_CONFIG AND NOT TMM_CONFIG STREQUAL "")
    set(config_args --config "${TMM_CONFIG}")
endif()

# Plain ASCII quotes in the compiler's messages, whatever the caller's locale.
set(ENV{LC_ALL} C)
execute_process(
    COMMAND "${CMAKE_COMMAND}" --build "${TMM_BUILD_DIR}" --target "${TMM_TARGET}" ${config_args}
    RESULT_VARIABLE result
    OUTPUT_VARIABLE output
    ERROR_VARIABLE output)

if(result STREQUAL "0")
    message(FATAL_ERROR
        "${TMM_TARGET} compiled, but it must fail to compile with a message matching\n"
        "  ${regex}\n"
        "Build output:\n${output}")
endif()

string(REGEX MATCH "${regex}" matched "${output}")
if(matched STREQUAL "")
    message(FATAL_ERROR
        "${TMM_TARGET} failed to compile (${result}), but not with a message matching\n"
        "  ${regex}\n"
        "Build output:\n${output}")
endif()

message(STATUS "${TMM_TARGET} failed to compile as expected, with: ${matched}")
