// Generation's upward pass on the CPU backend against the reference backend (itself checked
// against brute force in generation.cpp): every layer's log-values of the float32 CPU pass
// equal the float64 reference within 1e-4 relative, -inf exactly where the reference has
// -inf, in both semirings; and the queries built on it give the same most probable
// completions and neuron patches, and conditional means within float rounding.
#define BOOST_TEST_MODULE generate_cpu_upward
#include <boost/test/unit_test.hpp>

#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/generation.hpp>
#include <tmm/tmm.hpp>

#include "../common/backend_networks.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using namespace tmm_test;

constexpr double minus_infinity = -std::numeric_limits<double>::infinity();

// 37 output channels: a full 4-vector register block of the max-plus kernel plus a tail
constexpr auto wide_ht = tmm::input<4, 4> | tmm::representation<tmm::gaussians<21>, 1> |
                         tmm::conv<70, tmm::shared> | tmm::product_pool<tmm::window<2, 2>> |
                         tmm::conv<37> | tmm::product_pool<tmm::global> | tmm::classes<3>;

// Random parameters, conv logits with standard deviation `spread` (60, with precise leaves,
// makes sums of the GEMM underflow, where the kernels take the exact logsumexp); with
// `impossible`, about
// one conv weight in four is log 0 (never a whole row) and, for categorical leaves, symbol 0 has
// probability 0 in every component, so observing it makes every child of the conv above impossible.
tmm::parameters<float> random_parameters(const tmm::plan& p, std::mt19937_64& rng, bool impossible,
                                         double spread = 1.5) {
    auto theta = tmm::zero_parameters<float>(p);
    std::normal_distribution<double> n(0.0, 1.0);
    std::bernoulli_distribution drop(impossible ? 0.25 : 0.0);
    for (auto& v : theta.mean) v = float(0.3 * n(rng));
    // sharp weights come with sharp leaves: children hundreds of nats apart
    for (auto& v : theta.log_precision) v = float((spread > 10.0 ? 6.0 : 1.0) + n(rng));
    for (std::size_t i = 0; i < theta.logits.size(); ++i)
        theta.logits[i] = impossible && i % p.values == 0 ? -std::numeric_limits<float>::infinity()
                                                          : float(n(rng));
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        const std::size_t row = p.layers[l].in_channels;
        auto& t = theta.theta[l];
        for (std::size_t i = 0; i < t.size(); ++i)
            // the first entry of each row stays finite: rows are distributions
            t[i] = i % row != 0 && drop(rng) ? -std::numeric_limits<float>::infinity()
                                             : float(spread * n(rng));
    }
    return theta;
}

struct images {
    std::vector<float> values;
    std::vector<std::uint8_t> observed;
    std::vector<double> values64;
    tmm::observations<float> x() const { return {count, values, observed}; }
    tmm::observations<double> x64() const { return {count, values64, observed}; }
    std::size_t count = 1;
};

images random_images(const tmm::plan& p, std::size_t count, double missing, std::mt19937_64& rng) {
    batch made = make_batch(p, count, missing, rng, 0.5);
    images b;
    b.count = count;
    b.values = std::move(made.values);
    b.observed = std::move(made.observed);
    b.values64.assign(b.values.begin(), b.values.end());
    return b;
}

// Every layer of the CPU pass against the float64 reference, image by image.
void check_layer_values(const tmm::plan& p, const tmm::parameters<float>& theta, const images& b,
                        tmm::semiring combine, const std::string& what) {
    const auto theta64 = tmm::convert_parameters<double>(theta);
    const auto fast = tmm::backends::cpu::prepare(p, theta);
    const auto exact = tmm::backends::reference::prepare(p, theta64);
    std::vector<std::vector<float>> got;
    std::vector<std::vector<double>> want;
    std::size_t infinite = 0;
    for (std::size_t image = 0; image < b.count; ++image) {
        tmm::backends::cpu::layer_values(p, theta, fast, b.x(), image, got, combine);
        tmm::backends::reference::layer_values(p, theta64, exact, b.x64(), image, want, combine);
        BOOST_REQUIRE_EQUAL(got.size(), want.size());
        for (std::size_t l = 0; l < want.size(); ++l) {
            BOOST_REQUIRE_EQUAL(got[l].size(), want[l].size());
            for (std::size_t i = 0; i < want[l].size(); ++i) {
                const double g = got[l][i], w = want[l][i];
                if (w == minus_infinity) {
                    ++infinite;
                    BOOST_TEST(g == minus_infinity, what << " image " << image << " layer " << l
                                                         << " entry " << i << ": " << g);
                    continue;
                }
                // 1e-4 relative; values near 0 (little observed) to 1e-4 absolute
                BOOST_TEST(std::abs(g - w) <= 1e-4 * std::max(1.0, std::abs(w)),
                           what << " image " << image << " layer " << l << " entry " << i
                                << ": cpu " << g << ", reference " << w);
            }
        }
    }
    BOOST_TEST_MESSAGE(what << ": " << infinite << " entries of -inf");
}

template <class Net>
void check_model(Net net, std::uint64_t seed, bool impossible, double spread = 1.5) {
    const tmm::plan p = tmm::make_plan(net);
    std::mt19937_64 rng(seed);
    const auto theta = random_parameters(p, rng, impossible, spread);
    for (const double missing : {0.0, 0.4, 1.0}) {  // all observed, some, nothing observed
        const images b = random_images(p, 3, missing, rng);
        for (const auto combine : {tmm::semiring::sum_product, tmm::semiring::max_product})
            check_layer_values(p, theta, b, combine,
                               "seed " + std::to_string(seed) + " missing " +
                                   std::to_string(missing) +
                                   (combine == tmm::semiring::max_product ? " max" : " sum"));
    }
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_cpu_backend_supplies_the_upward_pass_in_float_only) {
    static_assert(tmm::upward_pass<tmm::backends::cpu, float>);
    static_assert(!tmm::upward_pass<tmm::backends::cpu, double>);
    static_assert(tmm::upward_pass<tmm::backends::reference, double>);
}

BOOST_AUTO_TEST_CASE(layer_values_of_the_published_ht_model) {
    check_model(tmm::published_ht, 1, false);
}
BOOST_AUTO_TEST_CASE(layer_values_tiled_padded_ht) {
    check_model(small_ht, 2, false);
    check_model(small_ht, 3, true);
}
BOOST_AUTO_TEST_CASE(layer_values_custom_geometry) {
    check_model(mirror_ht, 4, false);
    check_model(mirror_ht, 5, true);
}
BOOST_AUTO_TEST_CASE(layer_values_cp) {
    check_model(small_cp, 6, false);
    check_model(small_cp, 7, true);
}
BOOST_AUTO_TEST_CASE(layer_values_wide_channels) {
    check_model(wide_ht, 8, false);
    check_model(wide_ht, 9, true);
}
BOOST_AUTO_TEST_CASE(layer_values_categorical_with_impossible_symbols) {
    check_model(categorical_ht, 10, false);
    check_model(categorical_ht, 11, true);
}

BOOST_AUTO_TEST_CASE(layer_values_with_weights_beyond_the_gemm_fast_path) {
    check_model(small_ht, 31, false, 60.0);
    check_model(mirror_ht, 32, true, 60.0);
    check_model(small_cp, 33, false, 60.0);
}

BOOST_AUTO_TEST_CASE(refused_parameters_name_the_problem) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(12);
    auto theta = random_parameters(p, rng, false);
    theta.theta[2][5] = std::numeric_limits<float>::quiet_NaN();
    BOOST_CHECK_EXCEPTION(tmm::backends::cpu::prepare(p, theta), tmm::input_error,
                          [](const tmm::input_error& e) {
                              return std::string(e.what()).find("NaN") != std::string::npos;
                          });
    tmm::plan broken = p;
    broken.layers[0].set_of_position[0] = 99;
    BOOST_CHECK_THROW(tmm::backends::cpu::prepare(broken, random_parameters(p, rng, false)),
                      tmm::input_error);
}

// The queries with Upward = cpu against Upward = reference (float64).
template <class Net>
void check_queries(Net net, std::uint64_t seed) {
    const tmm::plan p = tmm::make_plan(net);
    std::mt19937_64 rng(seed);
    const auto theta = random_parameters(p, rng, false);
    const auto theta64 = tmm::convert_parameters<double>(theta);
    const images b = random_images(p, 8, 0.5, rng);
    for (const std::optional<int> label : {std::optional<int>{}, std::optional<int>{1}}) {
        const auto mpe = tmm::complete<tmm::backends::cpu>(
            p, theta, b.x(), tmm::completion::most_probable, 0, label);
        const auto mpe64 =
            tmm::complete(p, theta64, b.x64(), tmm::completion::most_probable, 0, label);
        BOOST_REQUIRE_EQUAL(mpe.size(), mpe64.size());
        for (std::size_t i = 0; i < mpe.size(); ++i)
            BOOST_TEST(mpe[i] == float(mpe64[i]), "most probable, pixel " << i);

        const auto mean =
            tmm::complete<tmm::backends::cpu>(p, theta, b.x(), tmm::completion::mean, 0, label);
        const auto mean64 = tmm::complete(p, theta64, b.x64(), tmm::completion::mean, 0, label);
        for (std::size_t i = 0; i < mean.size(); ++i)
            BOOST_TEST(std::abs(mean[i] - mean64[i]) <= 1e-4 * std::max(1.0, std::abs(mean64[i])),
                       "mean, pixel " << i << ": cpu " << mean[i] << ", reference " << mean64[i]);
    }
    // the most likely patch of every neuron of every layer
    const tmm::latent_tree<float, tmm::backends::cpu> fast(p, theta);
    const tmm::latent_tree<double> exact(p, theta64);
    tmm::latent_tree<float, tmm::backends::cpu>::values prior_fast;
    tmm::latent_tree<double>::values prior_exact;
    fast.upward_of_nothing(tmm::semiring::max_product, prior_fast);
    exact.upward_of_nothing(tmm::semiring::max_product, prior_exact);
    for (int l = 0; l < int(p.layers.size()); ++l)
        for (int channel = 0; channel < p.layers[l].out_channels; ++channel) {
            const auto got = tmm::most_likely_patches(fast, prior_fast, l, channel);
            const auto want = tmm::most_likely_patches(exact, prior_exact, l, channel);
            BOOST_TEST((got.covered == want.covered), "layer " << l << " channel " << channel);
            for (std::size_t i = 0; i < want.values.size(); ++i)
                BOOST_TEST(got.values[i] == float(want.values[i]),
                           "layer " << l << " channel " << channel << " pixel " << i);
        }
}

BOOST_AUTO_TEST_CASE(queries_agree_with_the_reference) {
    check_queries(small_ht, 21);
    check_queries(mirror_ht, 22);
    check_queries(small_cp, 23);
    check_queries(categorical_ht, 24);
}
