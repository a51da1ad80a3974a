// The thrust backend against the reference oracle: float32 class log-likelihoods within 1e-4
// relative of the float64 reference, and the same gradients (the CPU backend's tolerances).
// Built twice: with the TBB device system (runs everywhere), and with TMM_TEST_CUDA against
// the CUDA build of the backend, which skips (exit code 77) on a machine without a GPU.
#define BOOST_TEST_MODULE thrust_backend
#if defined(TMM_TEST_CUDA)
#define BOOST_TEST_NO_MAIN
#endif
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <tmm/tmm.hpp>

#include <vector>
#include "../common/backend_networks.hpp"

#if defined(TMM_TEST_CUDA)
#include "thrust_cuda_entry.hpp"
using under_test = tmm::cuda_entry::backend;
#else
#include <tmm/backends/thrust/thrust.hpp>
using under_test = tmm::backends::thrust;
#endif

static_assert(tmm::backend<under_test, float>);

namespace {

using namespace tmm_test;

inline constexpr tmm::weights<2, 5> mixing{{0.2, 0.3, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.6}};
constexpr auto fixed_ht = tmm::input<4, 4> | tmm::representation<tmm::gaussians<5>, 2> |
                          tmm::fixed_conv<mixing> | tmm::product_pool<tmm::window<2, 2>> |
                          tmm::conv<3> | tmm::classes<3>;

// 1e-4 relative; near 0 (little observed) 1e-4 absolute; -inf (probability zero) exactly.
void compare_outputs(const std::vector<float>& fast, const std::vector<double>& exact) {
    BOOST_REQUIRE_EQUAL(fast.size(), exact.size());
    for (std::size_t i = 0; i < fast.size(); ++i) {
        if (std::isinf(exact[i])) {
            BOOST_TEST(fast[i] == -std::numeric_limits<float>::infinity(), "output " << i);
            continue;
        }
        BOOST_TEST(std::abs(fast[i] - exact[i]) <= 1e-4 * std::max(1.0, std::abs(exact[i])),
                   "output " << i << ": " << fast[i] << " vs " << exact[i]);
    }
}

// Each gradient array relative to its largest entry (float32 accumulation over a batch).
void compare_gradients(const tmm::parameters<float>& g, const tmm::parameters<double>& e,
                       std::size_t count) {
    auto compare = [&](const std::vector<float>& a, const std::vector<double>& r) {
        BOOST_REQUIRE_EQUAL(a.size(), r.size());
        double scale = 0, worst = 0;
        for (double v : r) scale = std::max(scale, std::abs(v));
        for (std::size_t i = 0; i < a.size(); ++i) {
            BOOST_REQUIRE(std::isfinite(a[i]));
            worst = std::max(worst, std::abs(a[i] - r[i]));
        }
        BOOST_TEST(worst <= 1e-3 * scale + 1e-6 * double(count),
                   "array of " << a.size() << ": largest " << scale << ", worst error " << worst);
    };
    compare(g.mean, e.mean);
    compare(g.log_precision, e.log_precision);
    compare(g.logits, e.logits);
    BOOST_REQUIRE_EQUAL(g.theta.size(), e.theta.size());
    for (std::size_t l = 0; l < g.theta.size(); ++l) compare(g.theta[l], e.theta[l]);
    BOOST_TEST(g.log_prior == std::vector<float>(e.log_prior.size(), 0.0f),
               boost::test_tools::per_element());
}

// Outputs and the gradients of a random linear loss sum c[b,y] out[b,y], both backends.
void check_against_reference(const tmm::plan& p, const tmm::parameters<float>& theta,
                             const batch& b, std::size_t count, std::mt19937_64& rng,
                             const std::vector<std::uint8_t>& kept = {}, std::size_t layer = 0,
                             bool leaf_gradients = true) {
    const auto theta64 = tmm::convert_parameters<double>(theta);
    const std::vector<double> values64(b.values.begin(), b.values.end());
    tmm::observations<float> x{count, b.values, b.observed};
    tmm::observations<double> x64{count, values64, b.observed};
    x.kept_positions = x64.kept_positions = kept;
    x.marginalized_layer = x64.marginalized_layer = layer;

    const auto fast = under_test::log_likelihoods(p, theta, x);
    const auto exact = tmm::backends::reference::log_likelihoods(p, theta64, x64);
    compare_outputs(fast, exact);

    std::vector<double> c(fast.size());
    std::normal_distribution<double> n;
    for (auto& v : c) v = n(rng);
    tmm::parameters<float> g;
    tmm::parameters<double> g64;
    const auto out = under_test::gradients(
        p, theta, x,
        [&](std::span<const float>, std::span<float> d) {
            for (std::size_t i = 0; i < d.size(); ++i) d[i] = float(c[i]);
        },
        g, leaf_gradients);
    compare_outputs(out, exact);
    tmm::backends::reference::gradients(
        p, theta64, x64,
        [&](std::span<const double>, std::span<double> d) {
            std::copy(c.begin(), c.end(), d.begin());
        },
        g64, leaf_gradients);
    compare_gradients(g, g64, count);
}

template <class Net>
void check_agreement(Net net, std::size_t count, double missing, std::uint64_t seed) {
    const tmm::plan p = tmm::make_plan(net);
    std::mt19937_64 rng(seed);
    auto theta = randomized_parameters(p, rng);
    const batch b = make_batch(p, count, missing, rng);
    check_against_reference(p, theta, b, count, rng);
}

}  // namespace

BOOST_AUTO_TEST_CASE(small_ht_tiled_padded) {
    check_agreement(small_ht, 70, 0.3, 1);
}
BOOST_AUTO_TEST_CASE(custom_geometry_two_channels) {
    check_agreement(mirror_ht, 33, 0.5, 2);
}
BOOST_AUTO_TEST_CASE(cp_with_padding) {
    check_agreement(small_cp, 40, 0.2, 3);
}
BOOST_AUTO_TEST_CASE(categorical_leaves) {
    check_agreement(categorical_ht, 65, 0.4, 4);
}
BOOST_AUTO_TEST_CASE(published_ht_model) {
    check_agreement(tmm::published_ht, 9, 0.5, 5);
}
BOOST_AUTO_TEST_CASE(nothing_observed) {
    check_agreement(small_ht, 5, 1.0, 6);
}
BOOST_AUTO_TEST_CASE(constant_weights_with_zeros) {
    check_agreement(fixed_ht, 21, 0.3, 7);
}

// Training's random marginalisation of inner positions, for the published model's 8x8
// level (layer 1) and for the output of a conv layer (layer 2), forward and backward.
BOOST_AUTO_TEST_CASE(marginalised_inner_positions) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    for (std::size_t layer : {1, 2}) {
        std::mt19937_64 rng(8 + layer);
        auto theta = randomized_parameters(p, rng);
        const std::size_t count = 6, positions = p.layers[layer].out_positions();
        const batch b = make_batch(p, count, 0.2, rng);
        std::vector<std::uint8_t> kept(count * positions);
        std::bernoulli_distribution keep(0.5);
        for (auto& k : kept) k = keep(rng);
        check_against_reference(p, theta, b, count, rng, kept, layer);
    }
}

// Frozen leaves: no leaf gradient is computed, every leaf gradient stays exactly zero.
BOOST_AUTO_TEST_CASE(frozen_leaves) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(12);
    auto theta = randomized_parameters(p, rng);
    const batch b = make_batch(p, 17, 0.3, rng);
    check_against_reference(p, theta, b, 17, rng, {}, 0, /*leaf_gradients=*/false);
}

// Probability zero on purpose: a symbol no component can emit makes every image that shows
// it impossible (-inf for every class), and a -inf conv logit is a forbidden transition. The
// outputs are exactly -inf where the reference's are, and no gradient becomes NaN.
BOOST_AUTO_TEST_CASE(probability_zero_gives_minus_infinity) {
    const tmm::plan p = tmm::make_plan(categorical_ht);
    std::mt19937_64 rng(13);
    auto theta = randomized_parameters(p, rng);
    const float minus_inf = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < theta.logits.size(); i += p.values) theta.logits[i] = minus_inf;
    theta.theta[0][1] = minus_inf;
    batch b = make_batch(p, 12, 0.0, rng);
    // images 0..5 show no symbol 0 (possible); images 6..11 keep theirs
    for (std::size_t i = 0; i < 6 * std::size_t(p.pixels()); ++i)
        if (b.values[i] == 0.0f) b.values[i] = 1.0f;
    for (std::size_t i = 6 * p.pixels(); i < 12 * std::size_t(p.pixels()); i += p.pixels())
        b.values[i] = 0.0f;
    check_against_reference(p, theta, b, 12, rng);
    const auto out = under_test::log_likelihoods(p, theta, tmm::observations<float>{12, b.values});
    for (std::size_t i = 0; i < out.size(); ++i)
        BOOST_TEST(std::isinf(out[i]) == (i >= 6 * std::size_t(p.classes)), "output " << i);
}

// More images than one inference slice: the slices are stitched in order.
BOOST_AUTO_TEST_CASE(batches_larger_than_a_slice) {
    const tmm::plan p = tmm::make_plan(categorical_ht);
    std::mt19937_64 rng(14);
    auto theta = randomized_parameters(p, rng);
    const std::size_t count = 4096 + 37;
    const batch b = make_batch(p, count, 0.3, rng);
    const auto theta64 = tmm::convert_parameters<double>(theta);
    const std::vector<double> values64(b.values.begin(), b.values.end());
    compare_outputs(under_test::log_likelihoods(
                        p, theta, tmm::observations<float>{count, b.values, b.observed}),
                    tmm::backends::reference::log_likelihoods(
                        p, theta64, tmm::observations<double>{count, values64, b.observed}));
}

// The device keeps the last call's parameters and tables: a change in one weight, or the
// same parameters under another plan, must be seen. An empty batch gives empty outputs and
// zero gradients.
BOOST_AUTO_TEST_CASE(cached_parameters_follow_changes) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(16);
    auto theta = randomized_parameters(p, rng);
    const batch b = make_batch(p, 7, 0.3, rng);
    const tmm::observations<float> x{7, b.values, b.observed};
    const auto before = under_test::log_likelihoods(p, theta, x);
    BOOST_REQUIRE(theta.theta[4].size() > 3);  // the shared conv after two conv + pool levels
    theta.theta[4][3] += 2.0f;
    check_against_reference(p, theta, b, 7, rng);
    BOOST_TEST(under_test::log_likelihoods(p, theta, x) != before);

    tmm::parameters<float> g;
    const auto none = under_test::gradients(
        p, theta, tmm::observations<float>{0, std::span<const float>()},
        [](std::span<const float> out, std::span<float> d) {
            BOOST_TEST(out.empty());
            BOOST_TEST(d.empty());
        },
        g);
    BOOST_TEST(none.empty());
    g.for_each_array([](const std::vector<float>& a) {
        for (float v : a) BOOST_TEST(v == 0.0f);
    });
    BOOST_TEST(g.theta.size() == p.layers.size());
}

// Bad inputs are refused with the problem named, before anything reaches the device; a call
// after a refused one still works (the device state is not left half-updated).
BOOST_AUTO_TEST_CASE(bad_inputs_are_refused) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(15);
    auto theta = randomized_parameters(p, rng);
    batch b = make_batch(p, 3, 0.2, rng);
    const tmm::observations<float> x{3, b.values, b.observed};
    const auto names = [](const std::string& words) {
        return [words](const tmm::input_error& e) {
            return std::string(e.what()).find(words) != std::string::npos;
        };
    };
    auto nan_theta = theta;
    nan_theta.theta[2][5] = std::nanf("");
    BOOST_CHECK_EXCEPTION(under_test::log_likelihoods(p, nan_theta, x), tmm::input_error,
                          names("parameter theta[2][5] is NaN"));
    auto short_mean = theta;
    short_mean.mean.resize(3);
    tmm::parameters<float> g;
    BOOST_CHECK_EXCEPTION(under_test::gradients(
                              p, short_mean, x, [](std::span<const float>, std::span<float>) {}, g),
                          tmm::input_error, names("parameter array mean holds 3 values"));
    const tmm::observations<float> short_batch{3, std::span<const float>(b.values).first(10)};
    BOOST_CHECK_EXCEPTION(under_test::log_likelihoods(p, theta, short_batch), tmm::input_error,
                          names("the batch holds 10 values"));
    std::vector<float> infinite = b.values;
    infinite[7] = std::numeric_limits<float>::infinity();
    BOOST_CHECK_EXCEPTION(
        under_test::log_likelihoods(p, theta, tmm::observations<float>{3, infinite}),
        tmm::input_error, names("observed value is infinite at image 0, value 7"));
    auto broken_plan = p;
    broken_plan.layers[1].members[0] = 1000;
    BOOST_CHECK_THROW(under_test::log_likelihoods(broken_plan, theta, x), tmm::input_error);
    check_against_reference(p, theta, b, 3, rng);
}

#if defined(TMM_TEST_CUDA)
// No GPU: say why and exit with 77, which CTest reports as skipped (SKIP_RETURN_CODE).
int main(int argc, char* argv[]) {
    std::string reason;
    if (!tmm::cuda_entry::device_available(reason)) {
        std::printf("skipped: %s\n", reason.c_str());
        return 77;
    }
    std::printf("device: %s\n", reason.c_str());
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
#endif
