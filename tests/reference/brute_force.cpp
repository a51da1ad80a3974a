// Eq. 1 by brute force: tiny CP and HT models are expanded into their full prior tensors in
// linear space (oracle.hpp), P(X | y) = sum_d A^y[d] prod_i f_{d_i}(x_i) is summed directly,
// and its log is compared with the reference backend (float64, 1e-9 relative), with every
// value observed, with values missing by mask, and missing as NaN.
#define BOOST_TEST_MODULE reference_brute_force
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <iomanip>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;

void expect_matches(const tmm::plan& p, const tmm::parameters<double>& theta,
                    const std::vector<std::vector<double>>& a, const std::vector<double>& values,
                    const std::vector<std::uint8_t>& mask, std::size_t count, const char* what) {
    const auto got =
        tmm::backends::reference::log_likelihoods(p, theta, batch(values, mask, count));
    const auto want = brute_force_log_likelihoods(p, theta, a, values, mask, count);
    BOOST_TEST_REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        BOOST_TEST(close(got[i], want[i], 1e-9), what << ", image " << i / p.classes << ", class "
                                                      << i % p.classes << std::setprecision(17)
                                                      << ": backend " << got[i] << ", brute force "
                                                      << want[i]);
}

// Random parameters and images for `p`; the prior tensors sum to one (a theorem for simplex
// factors) and the backend equals eq. 1 with and without missing values.
void check_model(const tmm::plan& p, std::uint64_t seed, std::size_t count = 4) {
    engine rng(seed);
    const auto theta = random_parameters(p, rng);
    const auto a = prior_tensors(p, theta);
    BOOST_TEST_REQUIRE(a.size() == std::size_t(p.classes));
    for (int y = 0; y < p.classes; ++y) {
        double sum = 0;
        for (double v : a[y]) sum += v;
        BOOST_TEST(std::abs(sum - 1.0) < 1e-12, "A^" << y << " sums to " << sum);
    }

    const auto values = random_images(p, count, rng);
    expect_matches(p, theta, a, values, {}, count, "all observed");

    // About a third missing by mask; the last image entirely missing (log P = log 1 = 0).
    auto mask = random_mask(values.size(), 0.35, rng);
    std::fill(mask.end() - p.pixels(), mask.end(), std::uint8_t(0));
    expect_matches(p, theta, a, values, mask, count, "masked");

    // The same values missing as NaN, no mask.
    auto with_nan = values;
    for (std::size_t i = 0; i < mask.size(); ++i)
        if (!mask[i]) with_nan[i] = missing_value;
    expect_matches(p, theta, a, with_nan, {}, count, "NaN");
}

}  // namespace

// CP, Gaussian leaves, N = 8 positions (2x4, patch 1), M = 3, Z = 3, K = 2.
BOOST_AUTO_TEST_CASE(cp_gaussian) {
    constexpr auto net = tmm::cp<tmm::input<2, 4>, tmm::gaussians<3>, 1, 3, 2>;
    check_model(tmm::make_plan(net), 11);
}

// CP, categorical leaves (3 symbols), 4x4 image in 2x2 patches: N = 4, s = 4, Z = 4, K = 3.
BOOST_AUTO_TEST_CASE(cp_categorical) {
    constexpr auto net = tmm::cp<tmm::input<4, 4>, tmm::categorical<3, 3>, 2, 4, 3>;
    check_model(tmm::make_plan(net), 12);
}

// The expander itself against the CP formula A^y[d] = sum_z a^y_z prod_i a_{z,i}[d_i],
// written from design.md §1 with the weights read straight from theta.
BOOST_AUTO_TEST_CASE(cp_prior_tensor_formula) {
    constexpr auto net = tmm::cp<tmm::input<2, 4>, tmm::gaussians<3>, 1, 3, 2>;
    const tmm::plan p = tmm::make_plan(net);
    engine rng(13);
    const auto theta = random_parameters(p, rng);
    const auto a = prior_tensors(p, theta);

    const int n = 8, m = 3, z_count = 3, k_count = 2;
    const auto position_weights = simplex_rows(theta.theta[0], m);     // N x Z x M
    const auto class_weights = simplex_rows(theta.theta[2], z_count);  // K x Z
    const assignments d(n, m);
    for (int y = 0; y < k_count; ++y) {
        double worst = 0;
        for (std::size_t index = 0; index < d.count; ++index) {
            double want = 0;
            for (int z = 0; z < z_count; ++z) {
                double term = class_weights[y * z_count + z];
                for (int i = 0; i < n; ++i)
                    term *= position_weights[(i * z_count + z) * m + d.component(index, i)];
                want += term;
            }
            worst = std::max(worst, std::abs(a[y][index] - want) / want);
        }
        BOOST_TEST(worst < 1e-13, "class " << y << ": relative difference " << worst);
    }
}

// HT, Gaussian leaves: 2x4 grid, unshared conv, 2x2 pooling, shared conv, 1x2 pooling.
BOOST_AUTO_TEST_CASE(ht_gaussian) {
    constexpr auto net = tmm::input<2, 4> | tmm::representation<tmm::gaussians<3>, 1> |
                         tmm::conv<3> | tmm::product_pool<tmm::window<2, 2>> |
                         tmm::conv<2, tmm::shared> | tmm::product_pool<tmm::window<1, 2>> |
                         tmm::classes<3>;
    check_model(tmm::make_plan(net), 21);
}

// HT from the tmm::ht helper: 4x4 grid, M = 2 (N = 16, 65,536 assignments), widths 2, 2.
BOOST_AUTO_TEST_CASE(ht_helper) {
    constexpr auto net = tmm::ht<tmm::input<4, 4>, tmm::gaussians<2>, 1, 2, 2, 2>;
    check_model(tmm::make_plan(net), 22, 2);
}

// HT, categorical leaves, first conv tiled 2x2 (4 weight sets over 8 positions).
BOOST_AUTO_TEST_CASE(ht_categorical_tiled) {
    constexpr auto net = tmm::input<2, 4> | tmm::representation<tmm::categorical<2, 3>, 1> |
                         tmm::conv<2, tmm::tiled<2, 2>> | tmm::product_pool<tmm::window<2, 2>> |
                         tmm::conv<2, tmm::shared> | tmm::product_pool<tmm::global> |
                         tmm::classes<2>;
    check_model(tmm::make_plan(net), 23);
}

// Two image channels (s = 2 coordinates per 1x1 patch), shared first conv.
BOOST_AUTO_TEST_CASE(ht_two_channels_shared) {
    constexpr auto net = tmm::input<2, 2, 2> | tmm::representation<tmm::gaussians<3>, 1> |
                         tmm::conv<2, tmm::shared> | tmm::product_pool<tmm::window<1, 2>> |
                         tmm::conv<3> | tmm::product_pool<tmm::window<2, 1>> | tmm::classes<2>;
    check_model(tmm::make_plan(net), 24);
}

// A custom pooling geometry (mirror-image columns) as the first level of an HT tree.
BOOST_AUTO_TEST_CASE(ht_custom_geometry) {
    constexpr auto net = tmm::input<2, 4> | tmm::representation<tmm::gaussians<2>, 1> |
                         tmm::conv<2> | tmm::product_pool<mirror_columns> | tmm::conv<3> |
                         tmm::product_pool<tmm::window<2, 2>> | tmm::classes<2>;
    check_model(tmm::make_plan(net), 31);
}

// 2x2 windows padded with missing positions on an odd grid: 3x3 -> 2x2 -> 1x1 (N = 9).
BOOST_AUTO_TEST_CASE(ht_pad_missing_odd_grid) {
    constexpr auto net = tmm::input<3, 3> | tmm::representation<tmm::gaussians<2>, 1> |
                         tmm::conv<2> | tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> |
                         tmm::conv<2> | tmm::product_pool<tmm::window<2, 2>> | tmm::classes<2>;
    check_model(tmm::make_plan(net), 32);
}

// A padded image (tmm::pad<1>: missing pixels) of 2 channels in 2x2 patches: 6x4 -> 3x2
// grid, s = 8, then padded pooling 3x2 -> 2x1 -> 1x1.
BOOST_AUTO_TEST_CASE(ht_padded_image_patches) {
    constexpr auto net = tmm::input<4, 2, 2> | tmm::pad<1> |
                         tmm::representation<tmm::gaussians<2>, 2> | tmm::conv<2> |
                         tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> | tmm::conv<2> |
                         tmm::product_pool<tmm::window<2, 1>> | tmm::classes<2>;
    check_model(tmm::make_plan(net), 33);
}

// Constant user-written weights (tmm::fixed_conv) between the representation and a conv.
constexpr tmm::weights<2, 2> mixing{{0.25, 0.75, 0.6, 0.4}};
BOOST_AUTO_TEST_CASE(fixed_conv_layer) {
    constexpr auto net = tmm::input<2, 4> | tmm::representation<tmm::categorical<2, 2>, 1> |
                         tmm::fixed_conv<mixing> | tmm::conv<3> | tmm::product_pool<tmm::global> |
                         tmm::classes<2>;
    check_model(tmm::make_plan(net), 34);
}
