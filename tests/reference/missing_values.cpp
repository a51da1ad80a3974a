// What a missing value must never do, and what exact marginalisation implies:
// - the placeholder in a missing slot changes no output and no gradient, bit for bit;
// - log-densities add without clamping: 1,000 leaves of log-density exactly -1 give -1000;
// - an all-missing input has log P(X | y) = log 1 = 0 for every y, so log P(X) = 0 and the
//   prediction is the argmax of the prior;
// - malformed batches (an observed infinity, a mask or batch of the wrong size, a symbol
//   out of range) are refused with tmm::input_error.
#define BOOST_TEST_MODULE reference_missing_values
#include <boost/test/unit_test.hpp>

#include <bit>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;
using tmm::backends::reference;

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::bit_cast<std::uint64_t>(a[i]) != std::bit_cast<std::uint64_t>(b[i])) return false;
    return true;
}

struct result {
    std::vector<double> out;
    tmm::parameters<double> grad;
};

result run(const tmm::plan& p, const tmm::parameters<double>& theta,
           const std::vector<double>& values, const std::vector<std::uint8_t>& mask,
           std::size_t count, const std::vector<double>& c) {
    result r;
    r.out = reference::gradients(
        p, theta, batch(values, mask, count),
        [&](std::span<const double>, std::span<double> dout) {
            for (std::size_t i = 0; i < dout.size(); ++i) dout[i] = c[i];
        },
        r.grad);
    return r;
}

void expect_same(const result& got, const result& want, const std::string& what) {
    BOOST_TEST(same_bits(got.out, want.out), what << ": outputs differ");
    BOOST_TEST(same_bits(got.grad.mean, want.grad.mean), what << ": mean gradients differ");
    BOOST_TEST(same_bits(got.grad.log_precision, want.grad.log_precision),
               what << ": log-precision gradients differ");
    BOOST_TEST(same_bits(got.grad.logits, want.grad.logits), what << ": logit gradients differ");
    BOOST_TEST_REQUIRE(got.grad.theta.size() == want.grad.theta.size());
    for (std::size_t l = 0; l < got.grad.theta.size(); ++l)
        BOOST_TEST(same_bits(got.grad.theta[l], want.grad.theta[l]),
                   what << ": theta[" << l << "] gradients differ");
}

// Outputs and gradients with the missing slots holding each placeholder, by mask and by NaN,
// are bit for bit those with the original values there.
void check_placeholders(const tmm::plan& p, std::uint64_t seed,
                        const std::vector<double>& placeholders) {
    engine rng(seed);
    const auto theta = random_parameters(p, rng);
    const std::size_t count = 3;
    const auto values = random_images(p, count, rng);
    const auto mask = random_mask(values.size(), 0.4, rng);
    std::vector<double> c;
    for (std::size_t i = 0; i < count * p.classes; ++i) c.push_back(normal(rng));
    const result baseline = run(p, theta, values, mask, count, c);

    for (const double placeholder : placeholders) {
        auto filled = values;
        for (std::size_t i = 0; i < mask.size(); ++i)
            if (!mask[i]) filled[i] = placeholder;
        expect_same(run(p, theta, filled, mask, count, c), baseline,
                    "placeholder " + std::to_string(placeholder));
    }
    // NaN marks a value missing whatever the mask says, and without a mask.
    auto with_nan = values;
    for (std::size_t i = 0; i < mask.size(); ++i)
        if (!mask[i]) with_nan[i] = missing_value;
    expect_same(run(p, theta, with_nan, std::vector<std::uint8_t>(mask.size(), 1), count, c),
                baseline, "NaN under an observed flag");
    expect_same(run(p, theta, with_nan, {}, count, c), baseline, "NaN without a mask");
}

constexpr auto gaussian_net = tmm::input<4, 4, 2> | tmm::representation<tmm::gaussians<3>, 2> |
                              tmm::conv<3, tmm::tiled<1, 2>> |
                              tmm::product_pool<tmm::window<1, 2>> | tmm::conv<2> |
                              tmm::product_pool<tmm::window<2, 1>> | tmm::classes<3>;

constexpr auto categorical_net = tmm::input<3, 3> | tmm::representation<tmm::categorical<2, 3>, 1> |
                                 tmm::conv<2, tmm::shared> |
                                 tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> |
                                 tmm::conv<2> | tmm::product_pool<tmm::global> | tmm::classes<2>;

// log N(0; 0, 1 / exp(rho)) = (rho - log 2 pi) / 2 = -1 exactly when rho = log 2 pi - 2,
// with log 2 pi the double nearest to it (as any backend's constant should be): L - 2 is
// exact (Sterbenz: 1 <= L <= 4), so (L - 2) - L = -2 and half of it is -1, all exact.
constexpr double log_two_pi = 1.83787706640934548356065947281123527972279494727556682563;
constexpr double unit_log_precision = log_two_pi - 2.0;
static_assert(unit_log_precision - log_two_pi == -2.0);

// Every leaf at log-density -1: one Gaussian with mean 0 and log-precision rho above, and
// every observed value 0.
void expect_minus_one_per_leaf(const tmm::plan& p, const std::vector<std::uint8_t>& mask,
                               double expected) {
    auto theta = tmm::zero_parameters<double>(p);
    std::fill(theta.log_precision.begin(), theta.log_precision.end(), unit_log_precision);
    const std::vector<double> values(p.pixels(), 0.0);
    const auto out = reference::log_likelihoods(p, theta, batch(values, mask, 1));
    for (int y = 0; y < p.classes; ++y)
        BOOST_TEST(out[y] == expected, "class " << y << ": " << out[y]);
}

}  // namespace

BOOST_AUTO_TEST_CASE(placeholder_changes_nothing_gaussian) {
    check_placeholders(tmm::make_plan(gaussian_net), 501, {0.0, 1e9, -1e9, 1e300, infinity});
}

// Categorical leaves: a missing slot may hold anything, even a value that is not a symbol.
BOOST_AUTO_TEST_CASE(placeholder_changes_nothing_categorical) {
    check_placeholders(tmm::make_plan(categorical_net), 502, {0.0, 2.0, 7.0, -3.0, 0.5, 1e9});
}

// 1,000 positions of one coordinate each (a 25x40 image, patch 1), global pooling: -1000.
BOOST_AUTO_TEST_CASE(thousand_leaves_sum_exactly) {
    constexpr auto net = tmm::input<25, 40> | tmm::representation<tmm::gaussians<1>, 1> |
                         tmm::conv<1> | tmm::product_pool<tmm::global> | tmm::classes<2>;
    expect_minus_one_per_leaf(tmm::make_plan(net), {}, -1000.0);
}

// 1,000 coordinates in one patch (a 1x1 image of 1,000 channels) and 100 patches of 10
// coordinates: no clamp in the representation either.
BOOST_AUTO_TEST_CASE(thousand_leaves_in_patches) {
    constexpr auto one_patch =
        tmm::input<1, 1, 1000> | tmm::representation<tmm::gaussians<1>, 1> | tmm::classes<2>;
    expect_minus_one_per_leaf(tmm::make_plan(one_patch), {}, -1000.0);
    constexpr auto hundred_patches = tmm::input<10, 10, 10> |
                                     tmm::representation<tmm::gaussians<1>, 1> |
                                     tmm::product_pool<tmm::global> | tmm::classes<2>;
    expect_minus_one_per_leaf(tmm::make_plan(hundred_patches), {}, -1000.0);
}

// The same through five levels of 2x2 pooling: a 32x32 image with 24 pixels missing.
BOOST_AUTO_TEST_CASE(thousand_leaves_deep) {
    constexpr auto net = tmm::ht<tmm::input<32, 32>, tmm::gaussians<1>, 1, 3, 1, 1, 1, 1, 1>;
    const tmm::plan p = tmm::make_plan(net);
    std::vector<std::uint8_t> mask(p.pixels(), 1);
    for (int i = 0; i < 24; ++i) mask[i * 41 % p.pixels()] = 0;
    expect_minus_one_per_leaf(p, mask, -1000.0);
}

// Nothing observed: every class log-likelihood is log 1 = 0 (up to the rounding of the
// weights' sum to one), log P(X) = 0, and the prediction is the prior's argmax.
BOOST_AUTO_TEST_CASE(all_missing_gives_the_prior) {
    const tmm::plan p = tmm::make_plan(gaussian_net);
    engine rng(503);
    auto theta = random_parameters(p, rng);
    theta.log_prior = {std::log(0.2), std::log(0.5), std::log(0.3)};
    const std::size_t count = 2;
    const auto values = random_images(p, count, rng);
    const std::vector<std::uint8_t> none(values.size(), 0);
    const std::vector<double> all_nan(values.size(), missing_value);
    for (const auto& x : {batch(values, none, count), batch(all_nan, {}, count)}) {
        const auto out = reference::log_likelihoods(p, theta, x);
        for (double v : out) BOOST_TEST(std::abs(v) < 1e-13);
        const std::span<const double> prior(theta.log_prior);
        for (double v : tmm::log_marginal(std::span<const double>(out), prior))
            BOOST_TEST(std::abs(v) < 1e-13);
        for (int label : tmm::predict(std::span<const double>(out), prior)) BOOST_TEST(label == 1);
    }
}

// An observed infinity is refused, naming the image and the value; in a missing slot it is
// only a placeholder (see above).
BOOST_AUTO_TEST_CASE(observed_infinity_is_refused) {
    const tmm::plan p = tmm::make_plan(gaussian_net);
    const auto theta = tmm::zero_parameters<double>(p);
    const std::size_t count = 2;
    for (const double bad : {infinity, -infinity}) {
        std::vector<double> values(count * p.pixels(), 0.0);
        values[p.pixels() + 5] = bad;  // image 1, value 5
        bool thrown = false;
        try {
            reference::log_likelihoods(p, theta, batch(values, {}, count));
        } catch (const tmm::input_error& error) {
            thrown = true;
            const std::string message = error.what();
            BOOST_TEST(message.find("image 1") != std::string::npos, message);
            BOOST_TEST(message.find("value 5") != std::string::npos, message);
        }
        BOOST_TEST(thrown);

        tmm::parameters<double> grad;
        BOOST_CHECK_THROW(reference::gradients(
                              p, theta, batch(values, {}, count),
                              [](std::span<const double>, std::span<double>) {}, grad),
                          tmm::input_error);
    }
}

// Wherever the infinity sits in a batch of many images (the check runs in chunks of values
// and a tail), validate() finds it and names the right image and value; the same batch with
// that slot marked missing passes.
BOOST_AUTO_TEST_CASE(observed_infinity_is_found_anywhere) {
    const tmm::plan p = tmm::make_plan(gaussian_net);
    const std::size_t count = 13, pixels = std::size_t(p.pixels());
    for (const float bad :
         {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()})
        for (std::size_t at = 0; at < count * pixels; ++at) {
            std::vector<float> values(count * pixels, 0.25f);
            std::vector<std::uint8_t> observed(values.size(), 1);
            values[at] = bad;
            const tmm::observations<float> x(count, values, observed);
            std::string message;
            try {
                tmm::validate(p, x);
            } catch (const tmm::input_error& error) {
                message = error.what();
            }
            const std::string expected = "image " + std::to_string(at / pixels) + ", value " +
                                         std::to_string(at % pixels) + ";";
            BOOST_TEST(message.find(expected) != std::string::npos, at << ": " << message);
            observed[at] = 0;
            BOOST_CHECK_NO_THROW(
                tmm::validate(p, tmm::observations<float>(count, values, observed)));
        }
}

// A mask of the wrong size, a batch of the wrong size, and categorical values that are not
// symbols are refused.
BOOST_AUTO_TEST_CASE(malformed_batches_are_refused) {
    const tmm::plan p = tmm::make_plan(gaussian_net);
    const auto theta = tmm::zero_parameters<double>(p);
    const std::vector<double> values(2 * p.pixels(), 0.0);
    const std::vector<std::uint8_t> short_mask(values.size() - 1, 1);
    const std::vector<std::uint8_t> long_mask(values.size() + 1, 1);
    BOOST_CHECK_THROW(reference::log_likelihoods(p, theta, batch(values, short_mask, 2)),
                      tmm::input_error);
    BOOST_CHECK_THROW(reference::log_likelihoods(p, theta, batch(values, long_mask, 2)),
                      tmm::input_error);
    BOOST_CHECK_THROW(reference::log_likelihoods(p, theta, batch(values, {}, 3)), tmm::input_error);
    // a count so large that count x values per image wraps around to the batch's size
    const std::size_t wraps = (std::size_t(1) << 63) / std::size_t(p.pixels()) * 2 + 2;
    BOOST_TEST_REQUIRE(wraps * std::size_t(p.pixels()) == values.size());
    BOOST_CHECK_THROW(reference::log_likelihoods(p, theta, batch(values, {}, wraps)),
                      tmm::input_error);
    std::vector<float> floats(values.begin(), values.end());
    BOOST_CHECK_THROW(tmm::validate(p, tmm::observations<float>(wraps, floats)), tmm::input_error);

    const tmm::plan q = tmm::make_plan(categorical_net);
    const auto logits = tmm::zero_parameters<double>(q);
    for (const double bad : {3.0, -1.0, 0.5}) {
        std::vector<double> symbols(q.pixels(), 1.0);
        symbols[4] = bad;
        BOOST_CHECK_THROW(reference::log_likelihoods(q, logits, batch(symbols, {}, 1)),
                          tmm::input_error);
        std::vector<std::uint8_t> mask(q.pixels(), 1);
        mask[4] = 0;  // the same value in a missing slot is accepted
        BOOST_CHECK_NO_THROW(reference::log_likelihoods(q, logits, batch(symbols, mask, 1)));
    }
}
