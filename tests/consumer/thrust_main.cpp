// Built by tests/consumer when the installed package offers tmm::thrust: the thrust backend
// (TBB device system) through the package, checked against the reference backend.
#include <cmath>
#include <cstdio>
#include <tmm/backends/thrust/thrust.hpp>
#include <tmm/tmm.hpp>
#include <vector>

int main() {
    constexpr auto net = tmm::ht<tmm::input<8, 8>, tmm::gaussians<4>, 2, 3, 6, 5>;
    tmm::model<decltype(net), float> model;
    std::vector<float> image(64, 0.25f);
    for (std::size_t i = 0; i < image.size(); i += 2) image[i] = std::nanf("");  // missing
    const tmm::observations<float> x{1, image, {}};
    const auto fast = model.log_likelihoods(x, tmm::backends::thrust{});
    const auto exact = model.log_likelihoods(x, tmm::backends::reference{});
    std::printf("thrust backend: log P(X | y = 0) = %.6f (reference %.6f)\n", fast[0], exact[0]);
    return std::abs(fast[0] - exact[0]) < 1e-4f * std::abs(exact[0]) ? 0 : 1;
}
