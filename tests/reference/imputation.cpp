// design.md §6: classification by marginalisation beats classification by imputation. Two
// binary inputs and a binary label with joint weights (Y, X1, X2 -> weight) 0,0,0 -> 1-e;
// 0,0,1 -> 1; 0,1,0 -> 1-e; 0,1,1 -> 1; 1,0,0 -> 0; 1,0,1 -> 1+e; 1,1,0 -> 0; 1,1,1 -> 1+e,
// normalised by their sum 6, e = 1e-4, X2 always missing. The TMM below represents this
// distribution exactly; marginalising X2 must score (2-e)/3 and imputing X2 by its most
// likely value (conditioned on the class or not) must score (1+e)/3, both closed forms in e.
#define BOOST_TEST_MODULE reference_imputation
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <span>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;
using tmm::backends::reference;

constexpr double e = 1e-4;

// The joint weight of (y, x1, x2) before normalisation.
double weight(int y, int x1, int x2) {
    (void)x1;  // X1 is independent of the rest
    if (y == 0) return x2 == 0 ? 1 - e : 1;
    return x2 == 0 ? 0 : 1 + e;
}

// P(x1, x2 | y) = P(x1 | y) P(x2 | y) with P(x1 | y) = 1/2, so a CP model with Z = 2 terms,
// one per class, and one-hot leaves (component d emits symbol d) holds it exactly:
//   term 0: a_{0,1} = (1/2, 1/2), a_{0,2} = ((1-e)/(2-e), 1/(2-e)); class 0 takes term 0;
//   term 1: a_{1,1} = (1/2, 1/2), a_{1,2} = (0, 1);                  class 1 takes term 1.
constexpr auto net = tmm::cp<tmm::input<1, 2>, tmm::categorical<2, 2>, 1, 2, 2>;

tmm::parameters<double> exact_model(const tmm::plan& p) {
    auto theta = tmm::zero_parameters<double>(p);
    theta.logits = {0, -infinity, -infinity, 0};
    // conv: 2 positions x 2 terms x 2 components, theta = log of the weights
    theta.theta[0] = {std::log(0.5),
                      std::log(0.5),
                      std::log(0.5),
                      std::log(0.5),
                      std::log(1 - e) - std::log(2 - e),
                      -std::log(2 - e),
                      -infinity,
                      0};
    theta.theta[2] = {0, -infinity, -infinity, 0};  // class y takes term y
    theta.log_prior = {std::log((2 - e) / 3), std::log((1 + e) / 3)};
    return theta;
}

// One observation (x1, x2), x2 observed or missing.
std::vector<double> scores(const tmm::plan& p, const tmm::parameters<double>& theta, int x1, int x2,
                           bool x2_observed) {
    const std::vector<double> values = {double(x1), double(x2)};
    const std::vector<std::uint8_t> mask = {1, std::uint8_t(x2_observed ? 1 : 0)};
    return reference::log_likelihoods(p, theta, batch(values, mask, 1));
}

int predict(const std::vector<double>& log_likelihoods, const tmm::parameters<double>& theta) {
    return tmm::predict(std::span<const double>(log_likelihoods),
                        std::span<const double>(theta.log_prior))[0];
}

}  // namespace

// The model is the table: P(x1, x2 | y) P(y) = weight(y, x1, x2) / 6.
BOOST_AUTO_TEST_CASE(model_is_the_distribution) {
    const tmm::plan p = tmm::make_plan(net);
    const auto theta = exact_model(p);
    for (int x1 = 0; x1 < 2; ++x1)
        for (int x2 = 0; x2 < 2; ++x2) {
            const auto out = scores(p, theta, x1, x2, true);
            for (int y = 0; y < 2; ++y) {
                const double got = std::exp(out[y] + theta.log_prior[y]);
                BOOST_TEST(std::abs(got - weight(y, x1, x2) / 6) < 1e-15,
                           "y " << y << ", x1 " << x1 << ", x2 " << x2 << ": " << got);
            }
        }
}

// Accuracy over the four (x1, y) cases, each weighted by its true probability
// P(x1, y) = (weight(y, x1, 0) + weight(y, x1, 1)) / 6.
BOOST_AUTO_TEST_CASE(marginalisation_beats_imputation) {
    const tmm::plan p = tmm::make_plan(net);
    const auto theta = exact_model(p);

    double marginalised = 0, imputed = 0, imputed_per_class = 0;
    for (int x1 = 0; x1 < 2; ++x1) {
        // Marginalise X2.
        const int by_marginal = predict(scores(p, theta, x1, 0, false), theta);
        BOOST_TEST(by_marginal == 0);

        // Impute X2 by argmax_v P(x1, x2 = v), then classify the completed input.
        double joint[2];
        for (int v = 0; v < 2; ++v) {
            const auto out = scores(p, theta, x1, v, true);
            joint[v] = tmm::log_marginal(std::span<const double>(out),
                                         std::span<const double>(theta.log_prior))[0];
        }
        const int fill = joint[1] > joint[0] ? 1 : 0;
        BOOST_TEST(fill == 1);
        const int by_imputation = predict(scores(p, theta, x1, fill, true), theta);
        BOOST_TEST(by_imputation == 1);

        // Impute X2 by argmax_v P(x1, x2 = v | y) under each class hypothesis: both fill 1, so
        // the completed input, and the answer, are the same.
        int per_class = -1;
        for (int y = 0; y < 2; ++y) {
            const int fill_y =
                scores(p, theta, x1, 1, true)[y] > scores(p, theta, x1, 0, true)[y] ? 1 : 0;
            BOOST_TEST(fill_y == 1, "class " << y);
            const int answer = predict(scores(p, theta, x1, fill_y, true), theta);
            BOOST_TEST((per_class == -1 || per_class == answer));
            per_class = answer;
        }

        for (int y = 0; y < 2; ++y) {
            const double probability = (weight(y, x1, 0) + weight(y, x1, 1)) / 6;
            if (by_marginal == y) marginalised += probability;
            if (by_imputation == y) imputed += probability;
            if (per_class == y) imputed_per_class += probability;
        }
    }
    BOOST_TEST(std::abs(marginalised - (2 - e) / 3) < 1e-15);
    BOOST_TEST(std::abs(imputed - (1 + e) / 3) < 1e-15);
    BOOST_TEST(std::abs(imputed_per_class - (1 + e) / 3) < 1e-15);
}
