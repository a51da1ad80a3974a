// Marginalising a coordinate equals integrating it out: log P(x with x_k missing | y) from the
// backend against log of the integral over t of P(x with x_k = t | y), computed by composite
// Simpson quadrature over the backend's values at observed points (relative 1e-7). For
// categorical leaves the integral is the sum over the symbols.
#define BOOST_TEST_MODULE reference_quadrature
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <iomanip>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;
using tmm::backends::reference;

}  // namespace

// A small HT model with Gaussian leaves (2x2 image, 2 channels: 8 coordinates). For each
// coordinate k, with one other coordinate also missing, the marginal equals the integral.
BOOST_AUTO_TEST_CASE(gaussian_marginal_is_the_integral) {
    constexpr auto net = tmm::input<2, 2, 2> | tmm::representation<tmm::gaussians<3>, 1> |
                         tmm::conv<2> | tmm::product_pool<tmm::window<1, 2>> | tmm::conv<2> |
                         tmm::product_pool<tmm::window<2, 1>> | tmm::classes<2>;
    const tmm::plan p = tmm::make_plan(net);
    engine rng(201);
    const auto theta = random_parameters(p, rng);
    const auto image = random_images(p, 1, rng);
    const int pixels = p.pixels(), classes = p.classes;

    // Every density is a Gaussian of deviation at most exp(0.35) < 1.5 around a mean in
    // (-1, 1): [-30, 30] holds all but a negligible tail; 6000 Simpson intervals of 0.01.
    const double lo = -30, hi = 30;
    const int intervals = 6000;
    const double h = (hi - lo) / intervals;

    for (int k = 0; k < pixels; ++k) {
        const int other = (k + 3) % pixels;
        std::vector<std::uint8_t> mask(pixels, 1);
        mask[other] = 0;

        // The backend with x_k missing.
        std::vector<std::uint8_t> missing = mask;
        missing[k] = 0;
        const auto marginal = reference::log_likelihoods(p, theta, batch(image, missing, 1));

        // The backend at each quadrature node t, with x_k = t observed.
        std::vector<double> values;
        std::vector<std::uint8_t> masks;
        for (int node = 0; node <= intervals; ++node) {
            values.insert(values.end(), image.begin(), image.end());
            values[node * pixels + k] = lo + node * h;
            masks.insert(masks.end(), mask.begin(), mask.end());
        }
        const auto at_nodes =
            reference::log_likelihoods(p, theta, batch(values, masks, intervals + 1));

        for (int y = 0; y < classes; ++y) {
            double integral = 0;
            for (int node = 0; node <= intervals; ++node) {
                const double weight = node == 0 || node == intervals ? 1 : node % 2 ? 4 : 2;
                integral += weight * std::exp(at_nodes[node * classes + y]);
            }
            integral *= h / 3;
            BOOST_TEST(close(marginal[y], std::log(integral), 1e-7),
                       "coordinate " << k << ", class " << y << std::setprecision(15)
                                     << ": marginal " << marginal[y] << ", log integral "
                                     << std::log(integral));
        }
    }
}

// Categorical leaves: marginalising two coordinates equals summing over their V^2 values.
BOOST_AUTO_TEST_CASE(categorical_marginal_is_the_sum) {
    constexpr auto net = tmm::cp<tmm::input<2, 3>, tmm::categorical<3, 4>, 1, 3, 3>;
    const tmm::plan p = tmm::make_plan(net);
    engine rng(202);
    const auto theta = random_parameters(p, rng);
    const auto image = random_images(p, 1, rng);
    const int pixels = p.pixels(), classes = p.classes, symbols = p.values;

    for (int k = 0; k < pixels; ++k) {
        const int other = (k + 2) % pixels;
        std::vector<std::uint8_t> missing(pixels, 1);
        missing[k] = missing[other] = 0;
        const auto marginal = reference::log_likelihoods(p, theta, batch(image, missing, 1));

        std::vector<double> values;
        for (int u = 0; u < symbols; ++u)
            for (int v = 0; v < symbols; ++v) {
                values.insert(values.end(), image.begin(), image.end());
                values[values.size() - pixels + k] = u;
                values[values.size() - pixels + other] = v;
            }
        const std::size_t count = std::size_t(symbols) * symbols;
        const auto all = reference::log_likelihoods(p, theta, batch(values, {}, count));
        for (int y = 0; y < classes; ++y) {
            double sum = 0;
            for (std::size_t b = 0; b < count; ++b) sum += std::exp(all[b * classes + y]);
            BOOST_TEST(close(marginal[y], std::log(sum), 1e-12),
                       "coordinates " << k << ", " << other << ", class " << y);
        }
    }
}
