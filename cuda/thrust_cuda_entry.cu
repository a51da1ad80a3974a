// nvcc compiles the thrust backend for the GPU here (see thrust_cuda_entry.hpp).
#include "thrust_cuda_entry.hpp"

#include <cuda_runtime_api.h>

#include <string>
#include <tmm/backends/thrust/thrust.hpp>

namespace tmm::cuda_entry {

bool device_available(std::string& description) {
    int count = 0;
    if (const cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess) {
        description =
            std::string("no CUDA device: cudaGetDeviceCount failed: ") + cudaGetErrorString(error);
        return false;
    }
    if (count == 0) {
        description = "no CUDA device: cudaGetDeviceCount found none";
        return false;
    }
    int device = 0;
    cudaDeviceProp prop{};
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        description = "no usable CUDA device: its properties cannot be read";
        return false;
    }
    description = std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
                  std::to_string(prop.minor) + ")";
    return true;
}

std::vector<float> log_likelihoods(const plan& p, const parameters<float>& theta,
                                   const observations<float>& x) {
    return backends::thrust::log_likelihoods(p, theta, x);
}

std::vector<float> gradients(const plan& p, const parameters<float>& theta,
                             const observations<float>& x, const seed_function& seed,
                             parameters<float>& grad, bool leaf_gradients) {
    return backends::thrust::gradients(p, theta, x, seed, grad, leaf_gradients);
}

}  // namespace tmm::cuda_entry
