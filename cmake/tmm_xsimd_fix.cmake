# Debian 12's xsimd 8.1 package exports the target `xsimd` with INTERFACE_LINK_LIBRARIES "xtl".
# xtl is header-only and its package defines no such library, so without a target named `xtl`
# every link that uses xsimd fails with "cannot find -lxtl". xsimd itself links nothing.
# tmm_xsimd_fix() drops that entry; call it right after find_package(xsimd).
# Installed beside tmmConfig.cmake, which calls it too.
include_guard(GLOBAL)

function(tmm_xsimd_fix)
    if(NOT TARGET xsimd OR TARGET xtl)
        return()
    endif()
    get_target_property(libs xsimd INTERFACE_LINK_LIBRARIES)
    if(libs)
        list(REMOVE_ITEM libs xtl)
        set_property(TARGET xsimd PROPERTY INTERFACE_LINK_LIBRARIES "${libs}")
    endif()
endfunction()
