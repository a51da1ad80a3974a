// Compiled against the installed tmm package by scripts/test: a small deep model written as
// a user would, evaluated on one image with half of its pixels missing.
#include <cmath>
#include <cstdio>
#include <tmm/tmm.hpp>
#include <vector>

int main() {
    constexpr auto net = tmm::ht<tmm::input<8, 8>, tmm::gaussians<4>, 2, 3, 6, 5>;
    tmm::model<decltype(net), double> model;
    std::vector<double> image(64, 0.25);
    for (std::size_t i = 0; i < image.size(); i += 2) image[i] = std::nan("");  // missing
    const auto out =
        model.log_likelihoods(tmm::observations<double>{1, image, {}}, tmm::backends::reference{});
    // 32 observed coordinates, each N(0.25; 0, 1): the uniform weights make every class equal.
    const double expected = 32 * (-0.5 * std::log(2 * M_PI) - 0.5 * 0.25 * 0.25);
    std::printf("log P(X | y = 0) = %.6f (expected %.6f)\n", out[0], expected);
    return std::abs(out[0] - expected) < 1e-9 ? 0 : 1;
}
