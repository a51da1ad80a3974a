// Gradients of every parameter kind (Gaussian means and log-precisions, categorical logits,
// conv theta unshared, shared and tiled, class-layer theta) against central finite
// differences of the loss evaluated with log_likelihoods alone, with missing values present.
// float64, step h = 1e-5, accepted when |fd - g| <= 1e-6 * max(1, |fd|, |g|): the truncation
// error is O(h^2) ~ 1e-10 and the rounding error ~ 1e-16 |loss| / h ~ 1e-10.
#define BOOST_TEST_MODULE reference_gradients
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <iomanip>
#include <span>
#include <string>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;
using tmm::backends::reference;

// A loss of the outputs (count x K) with its gradient, both written here.
struct loss {
    virtual ~loss() = default;
    virtual double value(std::span<const double> out) const = 0;
    virtual void gradient(std::span<const double> out, std::span<double> dout) const = 0;
};

// sum_b sum_y c[b, y] out[b, y] with fixed random c.
struct linear_loss : loss {
    std::vector<double> c;
    double value(std::span<const double> out) const override {
        double sum = 0;
        for (std::size_t i = 0; i < out.size(); ++i) sum += c[i] * out[i];
        return sum;
    }
    void gradient(std::span<const double>, std::span<double> dout) const override {
        for (std::size_t i = 0; i < dout.size(); ++i) dout[i] = c[i];
    }
};

// design.md §3: mean_b [lse_y out_b - out_b[y_b]] + beta * mean_b [-lse_y out_b].
struct training_loss : loss {
    std::vector<int> labels;
    int classes = 0;
    double beta = 0.25;

    static double lse(std::span<const double> v) {
        double top = -infinity;
        for (double x : v) top = std::max(top, x);
        double sum = 0;
        for (double x : v) sum += std::exp(x - top);
        return top + std::log(sum);
    }
    double value(std::span<const double> out) const override {
        const std::size_t count = labels.size();
        double sum = 0;
        for (std::size_t b = 0; b < count; ++b) {
            const double z = lse(out.subspan(b * classes, classes));
            sum += (z - out[b * classes + labels[b]]) - beta * z;
        }
        return sum / double(count);
    }
    // d/d out[b, y] = (softmax_b[y] - [y == y_b] - beta softmax_b[y]) / count
    void gradient(std::span<const double> out, std::span<double> dout) const override {
        const std::size_t count = labels.size();
        for (std::size_t b = 0; b < count; ++b) {
            const double z = lse(out.subspan(b * classes, classes));
            for (int y = 0; y < classes; ++y) {
                const double soft = std::exp(out[b * classes + y] - z);
                dout[b * classes + y] =
                    ((1.0 - beta) * soft - (y == labels[b] ? 1.0 : 0.0)) / double(count);
            }
        }
    }
};

double evaluate(const tmm::plan& p, const tmm::parameters<double>& theta,
                const tmm::observations<double>& x, const loss& f) {
    const auto out = reference::log_likelihoods(p, theta, x);
    return f.value(out);
}

// Compares every entry of every learned array with a central difference; returns how many
// entries were checked.
std::size_t check_gradients(const tmm::plan& p, const tmm::parameters<double>& theta,
                            const tmm::observations<double>& x, const loss& f) {
    tmm::parameters<double> grad;
    const auto out = reference::gradients(
        p, theta, x,
        [&](std::span<const double> o, std::span<double> dout) { f.gradient(o, dout); }, grad);
    BOOST_TEST(out == reference::log_likelihoods(p, theta, x));

    const double h = 1e-5;
    std::size_t checked = 0;
    auto check_array = [&](const std::string& name, auto member) {
        const std::vector<double>& g = member(grad);
        BOOST_TEST_REQUIRE(g.size() == member(theta).size(), name);
        for (std::size_t i = 0; i < g.size(); ++i) {
            tmm::parameters<double> shifted = theta;
            member(shifted)[i] = member(theta)[i] + h;
            const double up = evaluate(p, shifted, x, f);
            member(shifted)[i] = member(theta)[i] - h;
            const double down = evaluate(p, shifted, x, f);
            const double fd = (up - down) / (2 * h);
            BOOST_TEST(close(fd, g[i], 1e-6), name << "[" << i << "]" << std::setprecision(12)
                                                   << ": backend " << g[i] << ", finite difference "
                                                   << fd);
            ++checked;
        }
    };
    check_array(
        "mean", [](auto& t) -> auto& { return t.mean; });
    check_array(
        "log_precision", [](auto& t) -> auto& { return t.log_precision; });
    check_array(
        "logits", [](auto& t) -> auto& { return t.logits; });
    for (std::size_t l = 0; l < p.layers.size(); ++l)
        check_array(
            "theta[" + std::to_string(l) + "]", [l](auto& t) -> auto& { return t.theta[l]; });
    return checked;
}

// Random parameters, a batch with about 30% of its values missing (mask), both losses.
void check_model(const tmm::plan& p, std::uint64_t seed, std::size_t count = 3) {
    engine rng(seed);
    const auto theta = random_parameters(p, rng);
    const auto values = random_images(p, count, rng);
    const auto mask = random_mask(values.size(), 0.3, rng);
    const auto x = batch(values, mask, count);

    linear_loss linear;
    for (std::size_t i = 0; i < count * p.classes; ++i) linear.c.push_back(normal(rng));
    training_loss training;
    training.classes = p.classes;
    for (std::size_t b = 0; b < count; ++b)
        training.labels.push_back(std::uniform_int_distribution<int>(0, p.classes - 1)(rng));

    BOOST_TEST(check_gradients(p, theta, x, linear) == theta.size());
    BOOST_TEST(check_gradients(p, theta, x, training) == theta.size());
}

// Gaussian leaves on 2 channels; conv tiled 1x2, then unshared, then shared, then classes.
constexpr auto gaussian_net = tmm::input<2, 4, 2> | tmm::representation<tmm::gaussians<2>, 1> |
                              tmm::conv<3, tmm::tiled<1, 2>> | tmm::conv<2> |
                              tmm::product_pool<tmm::window<1, 2>> | tmm::conv<2, tmm::shared> |
                              tmm::product_pool<tmm::window<2, 2>> | tmm::classes<3>;

}  // namespace

BOOST_AUTO_TEST_CASE(gaussian_leaves_and_every_sharing) {
    check_model(tmm::make_plan(gaussian_net), 101);
}

// Categorical leaves (3 symbols) in 2x2 patches with a padded pooling and a constant layer.
constexpr tmm::weights<2, 2> mixing{{0.3, 0.7, 0.9, 0.1}};
BOOST_AUTO_TEST_CASE(categorical_leaves) {
    constexpr auto net = tmm::input<4, 6> | tmm::representation<tmm::categorical<2, 3>, 2> |
                         tmm::conv<2, tmm::shared> | tmm::fixed_conv<mixing> |
                         tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> | tmm::conv<3> |
                         tmm::product_pool<tmm::global> | tmm::classes<2>;
    check_model(tmm::make_plan(net), 102);
}

// A coordinate missing in every image takes no part in the likelihood, so its parameters
// have exactly zero gradient (and their finite differences are exactly zero too).
BOOST_AUTO_TEST_CASE(always_missing_coordinate_has_zero_gradient) {
    const tmm::plan p = tmm::make_plan(gaussian_net);
    engine rng(103);
    const auto theta = random_parameters(p, rng);
    const std::size_t count = 3;
    auto values = random_images(p, count, rng);
    std::vector<std::uint8_t> mask(values.size(), 1);
    for (std::size_t i = 1; i < values.size(); i += 2) mask[i] = 0;  // channel 1 = coordinate 1
    linear_loss linear;
    for (std::size_t i = 0; i < count * p.classes; ++i) linear.c.push_back(normal(rng));

    tmm::parameters<double> grad;
    reference::gradients(
        p, theta, batch(values, mask, count),
        [&](std::span<const double> o, std::span<double> dout) { linear.gradient(o, dout); }, grad);
    const int s = p.patch_size();
    for (int c = 0; c < p.components; ++c) {
        BOOST_TEST(grad.mean[c * s + 1] == 0.0);
        BOOST_TEST(grad.log_precision[c * s + 1] == 0.0);
        BOOST_TEST(grad.mean[c * s + 0] != 0.0);
    }
    BOOST_TEST(check_gradients(p, theta, batch(values, mask, count), linear) == theta.size());
}
