# The thrust backend's targets, for tmm's own build and for the installed package.
#
#   tmm_thrust_target(<device system>)
#     Looks for Thrust 3 (the CUDA toolkit's CCCL headers; the CPU device systems need no GPU
#     and no nvcc) and, when found, defines the INTERFACE target tmm_thrust_<system> (lower
#     case): tmm::tmm plus thrust configured with HOST CPP and DEVICE <system> (TBB, CPP, OMP
#     or CUDA). Sets TMM_THRUST_FOUND. Thrust is searched where the toolkit installs it
#     (CUDAToolkit_ROOT, CUDA_PATH, /usr/local/cuda) besides CMAKE_PREFIX_PATH.
macro(tmm_thrust_target tmm_thrust_system)
    string(TOLOWER "${tmm_thrust_system}" tmm_thrust_lower)
    if(NOT Thrust_FOUND)
        set(tmm_thrust_hints /usr/local/cuda/lib64/cmake /usr/local/cuda/lib/cmake)
        foreach(tmm_thrust_root "$ENV{CUDAToolkit_ROOT}" "$ENV{CUDA_PATH}" "${CUDAToolkit_ROOT}")
            if(tmm_thrust_root)
                list(PREPEND tmm_thrust_hints
                    "${tmm_thrust_root}/lib64/cmake" "${tmm_thrust_root}/lib/cmake")
            endif()
        endforeach()
        find_package(Thrust 3 CONFIG QUIET HINTS ${tmm_thrust_hints})
    endif()
    set(TMM_THRUST_FOUND ${Thrust_FOUND})
    if(Thrust_FOUND AND NOT TARGET tmm_thrust_${tmm_thrust_lower})
        thrust_create_target(tmm_thrust_${tmm_thrust_lower}_system
            HOST CPP DEVICE ${tmm_thrust_system})
        add_library(tmm_thrust_${tmm_thrust_lower} INTERFACE)
        target_link_libraries(tmm_thrust_${tmm_thrust_lower}
            INTERFACE tmm::tmm tmm_thrust_${tmm_thrust_lower}_system)
    endif()
endmacro()
