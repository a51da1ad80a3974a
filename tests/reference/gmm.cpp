// A TMM whose prior tensor is zero off the diagonal (every position takes the same component)
// is a mixture of M diagonal Gaussians over the whole image: component z puts the patch mean
// mu_z on every patch, and its weight is the class weight a^y_z. The mixture is written here
// pixel by pixel, and compared with the backend (relative 1e-12), some pixels missing.
#define BOOST_TEST_MODULE reference_gmm
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <iomanip>
#include <numbers>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;
using tmm::backends::reference;

// log P(X | y) of the whole-image diagonal GMM: logsumexp_z (log a^y_z + sum over observed
// pixels of log N(x; mu_z at that pixel, 1 / lambda_z at that pixel)). Image H x W, one
// channel, patch p: the pixel (row, col) is coordinate (row % p) * p + col % p of its patch.
std::vector<double> gmm_log_likelihoods(const tmm::parameters<double>& theta,
                                        const std::vector<double>& class_weights, int components,
                                        int classes, int height, int width, int patch,
                                        const std::vector<double>& values,
                                        const std::vector<std::uint8_t>& mask, std::size_t count) {
    const int s = patch * patch;
    std::vector<double> result(count * classes);
    for (std::size_t b = 0; b < count; ++b) {
        std::vector<double> log_component(components, 0.0);
        for (int z = 0; z < components; ++z)
            for (int row = 0; row < height; ++row)
                for (int col = 0; col < width; ++col) {
                    const std::size_t index = b * height * width + row * width + col;
                    if (!mask[index]) continue;
                    const int k = (row % patch) * patch + col % patch;
                    const double precision = std::exp(theta.log_precision[z * s + k]);
                    const double diff = values[index] - theta.mean[z * s + k];
                    log_component[z] += 0.5 * std::log(precision / (2 * std::numbers::pi)) -
                                        0.5 * precision * diff * diff;
                }
        for (int y = 0; y < classes; ++y) {
            double top = -infinity;
            for (int z = 0; z < components; ++z) top = std::max(top, log_component[z]);
            double sum = 0;
            for (int z = 0; z < components; ++z)
                sum += class_weights[y * components + z] * std::exp(log_component[z] - top);
            result[b * classes + y] = top + std::log(sum);
        }
    }
    return result;
}

void expect_gmm(const tmm::plan& p, const tmm::parameters<double>& theta,
                const std::vector<double>& class_weights, engine& rng) {
    const std::size_t count = 4;
    const auto values = random_images(p, count, rng);
    for (const double missing : {0.0, 0.3}) {
        const auto mask = random_mask(values.size(), missing, rng);
        const auto got = reference::log_likelihoods(p, theta, batch(values, mask, count));
        const auto want = gmm_log_likelihoods(theta, class_weights, p.components, p.classes,
                                              p.height, p.width, p.patch, values, mask, count);
        for (std::size_t i = 0; i < got.size(); ++i)
            BOOST_TEST(close(got[i], want[i], 1e-12),
                       "missing " << missing << ", image " << i / p.classes << ", class "
                                  << i % p.classes << std::setprecision(17) << ": backend "
                                  << got[i] << ", GMM " << want[i]);
    }
}

constexpr tmm::weights<3, 3> identity{{1, 0, 0, 0, 1, 0, 0, 0, 1}};

}  // namespace

// CP with Z = M = 3 and a_{z,i} = e_z at every position (theta = 0 on z, -inf elsewhere):
// A^y = sum_z a^y_z e_z (x) .. (x) e_z. A 4x4 image in 2x2 patches.
BOOST_AUTO_TEST_CASE(cp_with_one_hot_terms) {
    constexpr auto net = tmm::cp<tmm::input<4, 4>, tmm::gaussians<3>, 2, 3, 2>;
    const tmm::plan p = tmm::make_plan(net);
    engine rng(401);
    auto theta = random_parameters(p, rng);
    for (std::size_t row = 0; row * 3 < theta.theta[0].size(); ++row)
        for (int a = 0; a < 3; ++a) theta.theta[0][row * 3 + a] = a == int(row % 3) ? 0 : -infinity;
    expect_gmm(p, theta, simplex_rows(theta.theta[2], 3), rng);
}

// HT whose every conv is the constant identity (tmm::fixed_conv): channel z stays channel z
// up the tree, so again A^y = sum_z a^y_z e_z (x) .. (x) e_z. A 4x8 image in 2x2 patches.
BOOST_AUTO_TEST_CASE(ht_with_identity_convs) {
    constexpr auto net = tmm::input<4, 8> | tmm::representation<tmm::gaussians<3>, 2> |
                         tmm::fixed_conv<identity> | tmm::product_pool<tmm::window<1, 2>> |
                         tmm::fixed_conv<identity> | tmm::product_pool<tmm::window<2, 2>> |
                         tmm::classes<3>;
    const tmm::plan p = tmm::make_plan(net);
    engine rng(402);
    const auto theta = random_parameters(p, rng);
    expect_gmm(p, theta, simplex_rows(theta.theta[4], 3), rng);
}
