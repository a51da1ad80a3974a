// Every backend against the reference oracle: the float32 CPU backend must give the float64
// reference's class log-likelihoods within 1e-4 relative, and the same gradients.
#define BOOST_TEST_MODULE backends
#include <boost/test/unit_test.hpp>

#include <tbb/global_control.h>

#include <cmath>
#include <memory>
#include <random>
#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/tmm.hpp>

#include <vector>
#include "../common/backend_networks.hpp"

namespace {

using namespace tmm_test;

// Float32 log-likelihoods against float64 ones: 1e-4 relative; a log-likelihood near 0 (little
// observed) is compared to 1e-4 absolute.
void check_close(const std::vector<float>& fast, const std::vector<double>& exact) {
    BOOST_REQUIRE_EQUAL(fast.size(), exact.size());
    for (std::size_t i = 0; i < fast.size(); ++i)
        BOOST_TEST(std::abs(fast[i] - exact[i]) <= 1e-4 * std::max(1.0, std::abs(exact[i])));
}

// A predicate for BOOST_CHECK_EXCEPTION: the error's message contains `words`.
auto says(std::string words) {
    return [words = std::move(words)](const tmm::input_error& e) {
        return std::string(e.what()).find(words) != std::string::npos;
    };
}

// With `marginalised` a layer index, each position of that layer's output is also
// marginalised with probability 1 - keep, image by image (training's random marginalisation).
constexpr std::size_t no_layer = std::size_t(-1);

template <class Net>
void check_agreement(Net net, std::size_t count, double missing, std::uint64_t seed,
                     std::size_t marginalised = no_layer, double keep = 0.5) {
    const tmm::plan p = tmm::make_plan(net);
    std::mt19937_64 rng(seed);
    auto theta = randomized_parameters(p, rng);
    const auto theta64 = tmm::convert_parameters<double>(theta);
    const batch b = make_batch(p, count, missing, rng);
    const std::vector<double> values64(b.values.begin(), b.values.end());

    tmm::observations<float> x{count, b.values, b.observed};
    tmm::observations<double> x64{count, values64, b.observed};
    std::vector<std::uint8_t> kept;
    if (marginalised != no_layer) {
        std::bernoulli_distribution kept_here(keep);
        kept.resize(count * std::size_t(p.layers[marginalised].out_positions()));
        for (auto& k : kept) k = kept_here(rng);
        x.kept_positions = x64.kept_positions = kept;
        x.marginalized_layer = x64.marginalized_layer = marginalised;
    }
    const auto fast = tmm::backends::cpu::log_likelihoods(p, theta, x);
    const auto exact = tmm::backends::reference::log_likelihoods(p, theta64, x64);
    check_close(fast, exact);
    // the same with the parameters prepared once (prepare_inference)
    const auto prepared_net = tmm::backends::cpu::prepare_inference(p, theta);
    const auto prepared = tmm::backends::cpu::log_likelihoods(prepared_net, x);
    check_close(prepared, exact);

    // gradients of a random linear loss sum_{b,y} c[b,y] out[b,y]
    std::vector<double> c(fast.size());
    std::normal_distribution<double> n;
    for (auto& v : c) v = n(rng);
    tmm::parameters<float> g;
    tmm::parameters<double> g64;
    tmm::backends::cpu::gradients(
        p, theta, x,
        [&](std::span<const float>, std::span<float> d) {
            for (std::size_t i = 0; i < d.size(); ++i) d[i] = float(c[i]);
        },
        g);
    tmm::backends::reference::gradients(
        p, theta64, x64,
        [&](std::span<const double>, std::span<double> d) {
            std::copy(c.begin(), c.end(), d.begin());
        },
        g64);
    // compare each array relative to its largest entry: float32 accumulation over a batch
    auto compare = [&](const std::vector<float>& a, const std::vector<double>& e) {
        BOOST_REQUIRE_EQUAL(a.size(), e.size());
        double scale = 0, worst = 0;
        for (double v : e) scale = std::max(scale, std::abs(v));
        for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - e[i]));
        BOOST_TEST_MESSAGE("array of " << a.size() << ": largest " << scale << ", worst error "
                                       << worst);
        BOOST_TEST(worst <= 1e-3 * scale + 1e-6 * double(count));
    };
    compare(g.mean, g64.mean);
    compare(g.log_precision, g64.log_precision);
    compare(g.logits, g64.logits);
    for (std::size_t l = 0; l < g.theta.size(); ++l) compare(g.theta[l], g64.theta[l]);
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

// Training's random marginalisation of inner positions, where the CPU backend skips the images
// whose values are not needed or exactly 0 (cpu::active_rows): below the marginalised layer,
// on top of it, and at patches with every pixel missing; outputs and every gradient (leaves
// included) against the reference, for a marginalised pooling output (fused conv below it),
// a marginalised conv output (not fused), and the published model's 8x8 level.
BOOST_AUTO_TEST_CASE(marginalised_positions_pooling_output) {
    check_agreement(small_ht, 70, 0.3, 13, 1, 0.5);
    check_agreement(small_ht, 40, 0.6, 14, 1, 0.1);
    check_agreement(small_ht, 40, 0.3, 15, 1, 0.95);
    check_agreement(mirror_ht, 33, 0.5, 16, 1, 0.5);
}
BOOST_AUTO_TEST_CASE(marginalised_positions_conv_output) {
    check_agreement(small_ht, 70, 0.3, 17, 0, 0.5);
    check_agreement(small_ht, 50, 0.3, 18, 2, 0.5);
    check_agreement(small_cp, 40, 0.5, 19, 0, 0.5);
    check_agreement(categorical_ht, 65, 0.4, 20, 0, 0.5);
}
BOOST_AUTO_TEST_CASE(marginalised_positions_published_model) {
    check_agreement(tmm::published_ht, 9, 0.5, 21, 1, 0.5);
    check_agreement(tmm::published_ht, 7, 0.9, 22, 1, 0.3);
}

// Results must not depend on the number of threads: the tiles and the order of every
// reduction are fixed.
BOOST_AUTO_TEST_CASE(thread_count_does_not_change_results) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(7);
    auto theta = randomized_parameters(p, rng);
    const batch b = make_batch(p, 150, 0.3, rng);
    tmm::observations<float> x{150, b.values, b.observed};
    // with training's marginalisation of the first pooling's output (images skipped per task)
    std::vector<std::uint8_t> kept(150 * std::size_t(p.layers[1].out_positions()));
    for (std::size_t i = 0; i < kept.size(); ++i) kept[i] = (i * 7919 % 13) < 7;
    x.marginalized_layer = 1;
    x.kept_positions = kept;
    auto run = [&](int threads) {
        tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
        tmm::parameters<float> g;
        auto out = tmm::backends::cpu::gradients(
            p, theta, x,
            [](std::span<const float> o, std::span<float> d) {
                for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::sin(float(i)) + 0 * o[i];
            },
            g);
        return std::make_pair(out, g.theta);
    };
    const auto one = run(1), two = run(2);
    BOOST_TEST(one.first == two.first);
    BOOST_TEST(one.second == two.second);
}

// Marginalising a position of an inner level is the same as leaving every pixel under it
// unobserved: a subtree with nothing observed has log-activation 0 in every channel. Checked
// on both backends, forward and backward, for the published model's 8x8 level (layer 1).
BOOST_AUTO_TEST_CASE(marginalised_inner_positions_equal_missing_pixels) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    std::mt19937_64 rng(9);
    auto theta = randomized_parameters(p, rng);
    const std::size_t count = 5, positions = 64;
    batch b = make_batch(p, count, 0.2, rng);
    std::vector<std::uint8_t> kept(count * positions), blanked = b.observed;
    std::bernoulli_distribution keep(0.5);
    for (std::size_t i = 0; i < count; ++i)
        for (std::size_t j = 0; j < positions; ++j) {
            kept[i * positions + j] = keep(rng);
            if (kept[i * positions + j]) continue;
            // position (r, c) of the 8x8 level covers pixels [4r - 2, 4r + 2) x [4c - 2, 4c + 2)
            const int r = int(j / 8), c = int(j % 8);
            for (int y = 4 * r - 2; y < 4 * r + 2; ++y)
                for (int x = 4 * c - 2; x < 4 * c + 2; ++x)
                    if (y >= 0 && y < 28 && x >= 0 && x < 28) blanked[i * 784 + y * 28 + x] = 0;
        }
    tmm::observations<float> dropped{count, b.values, b.observed};
    dropped.marginalized_layer = 1;
    dropped.kept_positions = kept;
    const tmm::observations<float> missing{count, b.values, blanked};
    const auto seed = [](std::span<const float>, std::span<float> d) {
        for (std::size_t i = 0; i < d.size(); ++i) d[i] = float(i % 3) - 1.0f;
    };
    tmm::parameters<float> g1, g2;
    const auto a = tmm::backends::cpu::gradients(p, theta, dropped, seed, g1);
    const auto e = tmm::backends::cpu::gradients(p, theta, missing, seed, g2);
    for (std::size_t i = 0; i < a.size(); ++i)
        BOOST_TEST(std::abs(a[i] - e[i]) <= 1e-5 * std::abs(e[i]));
    for (std::size_t l = 0; l < g1.theta.size(); ++l)
        for (std::size_t i = 0; i < g1.theta[l].size(); ++i)
            BOOST_TEST(std::abs(g1.theta[l][i] - g2.theta[l][i]) <= 1e-5);

    const auto theta64 = tmm::convert_parameters<double>(theta);
    const std::vector<double> values64(b.values.begin(), b.values.end());
    tmm::observations<double> dropped64{count, values64, b.observed};
    dropped64.marginalized_layer = 1;
    dropped64.kept_positions = kept;
    const auto r1 = tmm::backends::reference::log_likelihoods(p, theta64, dropped64);
    const auto r2 = tmm::backends::reference::log_likelihoods(
        p, theta64, tmm::observations<double>{count, values64, blanked});
    for (std::size_t i = 0; i < r1.size(); ++i)
        BOOST_TEST(std::abs(r1[i] - r2[i]) <= 1e-9 * std::abs(r2[i]));
}

// Parameters that do not fit the plan, or hold NaN, are refused by every backend with the
// array named, before anything is read out of bounds.
BOOST_AUTO_TEST_CASE(parameters_that_do_not_fit_are_refused) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(10);
    auto theta = randomized_parameters(p, rng);
    const batch b = make_batch(p, 3, 0.2, rng);
    const tmm::observations<float> x{3, b.values, b.observed};
    const auto refused = [&](tmm::parameters<float> bad, const std::string& words) {
        const auto names = says(words);
        BOOST_CHECK_EXCEPTION(tmm::backends::cpu::log_likelihoods(p, bad, x), tmm::input_error,
                              names);
        const auto bad64 = tmm::convert_parameters<double>(bad);
        const std::vector<double> v64(b.values.begin(), b.values.end());
        BOOST_CHECK_EXCEPTION(tmm::backends::reference::log_likelihoods(
                                  p, bad64, tmm::observations<double>{3, v64, b.observed}),
                              tmm::input_error, names);
    };
    auto short_mean = theta;
    short_mean.mean.resize(3);
    refused(short_mean, "parameter array mean holds 3 values");
    auto fewer_layers = theta;
    fewer_layers.theta.pop_back();
    refused(fewer_layers, "theta arrays, the plan has");
    auto nan_theta = theta;
    nan_theta.theta[2][5] = std::nanf("");
    refused(nan_theta, "parameter theta[2][5] is NaN");
    auto nan_precision = theta;
    nan_precision.log_precision[0] = std::nanf("");
    refused(nan_precision, "parameter log_precision[0] is NaN");
    // log_prior is log P(y): probabilities that do not sum to 1 are refused, with the sum
    auto heavy_prior = theta;
    heavy_prior.log_prior[0] = 1e38f;
    refused(heavy_prior, "parameter log_prior is not a distribution");
    auto doubled_prior = theta;  // every P(y) twice 1/K: the sum is 2
    for (float& v : doubled_prior.log_prior) v += std::log(2.0f);
    refused(doubled_prior, "sum to 2 (");
    auto broken_plan = p;
    broken_plan.layers[1].members[0] = 1000;
    BOOST_CHECK_THROW(tmm::backends::cpu::log_likelihoods(broken_plan, theta, x), tmm::input_error);
    BOOST_CHECK_THROW(tmm::predict<float>(std::vector<float>(6), std::vector<float>{}),
                      tmm::input_error);

    // A precision exp(log_precision) must be finite in the backend's type: 89 overflows a
    // float (largest about 3.4e38 = e^88.7) but not a double, 710 overflows both.
    auto sharp = theta;
    sharp.log_precision[4] = 89.0f;
    BOOST_CHECK_EXCEPTION(tmm::backends::cpu::log_likelihoods(p, sharp, x), tmm::input_error,
                          says("log_precision[4] is 89"));
    tmm::parameters<float> g;
    BOOST_CHECK_THROW(tmm::backends::cpu::gradients(
                          p, sharp, x, [](std::span<const float>, std::span<float>) {}, g),
                      tmm::input_error);
    const std::vector<double> v64(b.values.begin(), b.values.end());
    const tmm::observations<double> x64{3, v64, b.observed};
    auto sharp64 = tmm::convert_parameters<double>(sharp);
    BOOST_CHECK_NO_THROW(tmm::backends::reference::log_likelihoods(p, sharp64, x64));
    sharp64.log_precision[4] = 710.0;
    BOOST_CHECK_THROW(tmm::backends::reference::log_likelihoods(p, sharp64, x64), tmm::input_error);
}

// A prepared network keeps the parameters it was made from: changing them afterwards (or
// destroying them) changes none of its results, which still match the reference's for the
// original parameters. Parameters or a plan that the plain call refuses are refused when
// preparing.
BOOST_AUTO_TEST_CASE(prepared_network_keeps_its_parameters) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(12);
    auto theta = randomized_parameters(p, rng);
    const auto theta64 = tmm::convert_parameters<double>(theta);
    const batch b = make_batch(p, 5, 0.3, rng);
    const std::vector<double> values64(b.values.begin(), b.values.end());
    const auto exact = tmm::backends::reference::log_likelihoods(
        p, theta64, tmm::observations<double>{5, values64, b.observed});
    auto kept = std::make_unique<tmm::parameters<float>>(theta);
    auto net = tmm::backends::cpu::prepare_inference(p, *kept);
    for (auto& layer : kept->theta) std::fill(layer.begin(), layer.end(), 0.0f);
    std::fill(kept->mean.begin(), kept->mean.end(), 3.0f);
    kept.reset();
    const auto moved = std::move(net);
    const auto out = tmm::backends::cpu::log_likelihoods(moved, {5, b.values, b.observed});
    // the moved-from network says so
    BOOST_CHECK_EXCEPTION(tmm::backends::cpu::log_likelihoods(net, {5, b.values, b.observed}),
                          tmm::input_error, says("moved from"));
    check_close(out, exact);

    auto nan_theta = theta;
    nan_theta.theta[2][5] = std::nanf("");
    BOOST_CHECK_EXCEPTION(tmm::backends::cpu::prepare_inference(p, nan_theta), tmm::input_error,
                          says("theta[2][5] is NaN"));
    auto broken_plan = p;
    broken_plan.layers[1].members[0] = 1000;
    BOOST_CHECK_THROW(tmm::backends::cpu::prepare_inference(broken_plan, theta), tmm::input_error);
    // a batch shaped for another plan is refused by the prepared call too
    const std::vector<float> too_few(3);
    BOOST_CHECK_THROW(tmm::backends::cpu::log_likelihoods(moved, {1, too_few}), tmm::input_error);
}

// Shift averaging over radius 1 sums the class log-likelihoods of the 9 shifted copies, pixels
// shifted in from outside missing: recomputed by shifting by hand, on the float64 reference,
// and compared with both backends' shift_averaged_log_likelihoods.
BOOST_AUTO_TEST_CASE(shift_average_of_radius_one_sums_nine_shifts) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(23);
    auto theta = randomized_parameters(p, rng);
    const auto theta64 = tmm::convert_parameters<double>(theta);
    const std::size_t count = 4, rows = std::size_t(p.height), cols = std::size_t(p.width);
    const batch b = make_batch(p, count, 0.3, rng);
    std::vector<double> expected(count * std::size_t(p.classes), 0.0);
    for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
            std::vector<double> values(b.values.size(), 0.0);
            std::vector<std::uint8_t> observed(b.values.size(), 0);
            for (std::size_t i = 0; i < count; ++i)
                for (std::size_t y = 0; y < rows; ++y)
                    for (std::size_t x = 0; x < cols; ++x) {
                        const long sy = long(y) - dy, sx = long(x) - dx;
                        if (sy < 0 || sy >= long(rows) || sx < 0 || sx >= long(cols)) continue;
                        const std::size_t from =
                            (i * rows + std::size_t(sy)) * cols + std::size_t(sx);
                        const std::size_t to = (i * rows + y) * cols + x;
                        values[to] = b.values[from];
                        observed[to] = b.observed.empty() ? 1 : b.observed[from];
                    }
            const auto ll = tmm::backends::reference::log_likelihoods(
                p, theta64, tmm::observations<double>{count, values, observed});
            for (std::size_t k = 0; k < ll.size(); ++k) expected[k] += ll[k];
        }
    const tmm::observations<float> x{count, b.values, b.observed};
    const auto fast = tmm::shift_averaged_log_likelihoods<tmm::backends::cpu>(p, theta, x, 1);
    const auto exact = tmm::shift_averaged_log_likelihoods<tmm::backends::reference>(
        p, theta64,
        tmm::observations<double>{count, std::vector<double>(b.values.begin(), b.values.end()),
                                  b.observed},
        1);
    BOOST_REQUIRE_EQUAL(fast.size(), expected.size());
    BOOST_REQUIRE_EQUAL(exact.size(), expected.size());
    for (std::size_t k = 0; k < expected.size(); ++k) {
        BOOST_TEST(std::abs(exact[k] - expected[k]) <= 1e-9 * std::max(1.0, std::abs(expected[k])));
        BOOST_TEST(std::abs(fast[k] - expected[k]) <= 1e-4 * std::max(1.0, std::abs(expected[k])));
    }
}

// Shift averaging over radius 0 is the plain evaluation; a negative radius is refused.
BOOST_AUTO_TEST_CASE(shift_average_of_radius_zero_is_plain_evaluation) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(11);
    auto theta = randomized_parameters(p, rng);
    const batch b = make_batch(p, 4, 0.2, rng);
    const tmm::observations<float> x{4, b.values, b.observed};
    const auto plain = tmm::backends::cpu::log_likelihoods(p, theta, x);
    const auto shifted = tmm::shift_averaged_log_likelihoods<tmm::backends::cpu>(p, theta, x, 0);
    BOOST_TEST(plain == shifted);
    BOOST_CHECK_THROW(tmm::shift_averaged_log_likelihoods<tmm::backends::cpu>(p, theta, x, -1),
                      tmm::input_error);
}
