# Writes OUTPUT, a header defining TMM_BENCH_COMMIT as `git describe --always --dirty` of
# SOURCE_DIR (or "unknown" outside a git checkout), so that benchmark results name the code
# they measured. Run at every build; the file is rewritten only when the commit changed, so
# nothing recompiles otherwise.
set(commit "unknown")
find_package(Git QUIET)
if(GIT_FOUND)
    execute_process(
        COMMAND "${GIT_EXECUTABLE}" describe --always --dirty --abbrev=12
        WORKING_DIRECTORY "${SOURCE_DIR}"
        OUTPUT_VARIABLE described
        OUTPUT_STRIP_TRAILING_WHITESPACE
        RESULT_VARIABLE failed
        ERROR_QUIET)
    if(NOT failed AND described)
        set(commit "${described}")
    endif()
endif()
set(text "#pragma once\n#define TMM_BENCH_COMMIT \"${commit}\"\n")
if(EXISTS "${OUTPUT}")
    file(READ "${OUTPUT}" previous)
endif()
if(NOT previous STREQUAL text)
    file(WRITE "${OUTPUT}" "${text}")
endif()
