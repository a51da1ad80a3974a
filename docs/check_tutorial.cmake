# Checks that tutorial.md quotes every program of the tutorial verbatim, as a ```cpp block:
#   cmake -DTMM_TUTORIAL=<tutorial.md> -DTMM_TUTORIAL_DIR=<dir of .cpp files> -P check_tutorial.cmake
foreach(var TMM_TUTORIAL TMM_TUTORIAL_DIR)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
        message(FATAL_ERROR "check_tutorial.cmake: -D${var}=... is required")
    endif()
endforeach()

file(READ "${TMM_TUTORIAL}" markdown)
file(GLOB programs "${TMM_TUTORIAL_DIR}/*.cpp")
if(NOT programs)
    message(FATAL_ERROR "no tutorial programs in ${TMM_TUTORIAL_DIR}")
endif()

set(stale "")
foreach(program IN LISTS programs)
    file(READ "${program}" code)
    string(FIND "${markdown}" "```cpp\n${code}```" at)
    if(at EQUAL -1)
        get_filename_component(name "${program}" NAME)
        list(APPEND stale "${name}")
    endif()
endforeach()
if(stale)
    message(FATAL_ERROR
        "${TMM_TUTORIAL} does not show these files exactly as they are: ${stale}\n"
        "Copy each one, whole, into its ```cpp block.")
endif()
