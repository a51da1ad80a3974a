// The CUDA build of the thrust backend behind plain functions, so that code compiled by the
// host compiler (the tests, the benchmark, anything that uses the DSL) can call it. Defined
// in thrust_cuda_entry.cu, the one translation unit nvcc compiles.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include <tmm/observations.hpp>
#include <tmm/parameters.hpp>
#include <tmm/plan.hpp>

namespace tmm::cuda_entry {

using seed_function = std::function<void(std::span<const float>, std::span<float>)>;

// True when a CUDA device can run the backend; `description` then names it (name, compute
// capability), else it says why not (the CUDA runtime's own words).
bool device_available(std::string& description);

std::vector<float> log_likelihoods(const plan& p, const parameters<float>& theta,
                                   const observations<float>& x);
std::vector<float> gradients(const plan& p, const parameters<float>& theta,
                             const observations<float>& x, const seed_function& seed,
                             parameters<float>& grad, bool leaf_gradients);

// A backend policy with the static interface of tmm::backends::thrust.
struct backend {
    static std::vector<float> log_likelihoods(const plan& p, const parameters<float>& theta,
                                              const observations<float>& x) {
        return cuda_entry::log_likelihoods(p, theta, x);
    }
    template <class Seed>
    static std::vector<float> gradients(const plan& p, const parameters<float>& theta,
                                        const observations<float>& x, Seed&& seed,
                                        parameters<float>& grad, bool leaf_gradients = true) {
        return cuda_entry::gradients(
            p, theta, x,
            [&seed](std::span<const float> out, std::span<float> dout) { seed(out, dout); }, grad,
            leaf_gradients);
    }
};

}  // namespace tmm::cuda_entry
