// Generation against values derived independently of tmm/generation.hpp, on tiny models:
// - the prior tensor A^y and the patch densities of tests/reference/oracle.hpp (eq. 1 in
//   linear space) give the exact probability of every (class, components) cell, prior or
//   posterior; sample frequencies are compared with a chi-square test;
// - a brute-force walk over every value of every hidden variable (design.md §5: a conv picks
//   a child channel with probability W[g, a], a pooling hands its channel to its members)
//   gives the most probable explanation and the most likely subtree of a neuron;
// - closed forms (a two-component 2-D Gaussian mixture) and quadrature of the likelihood
//   give conditional means.
// Every random stream has a fixed seed, so each test is deterministic.
#define BOOST_TEST_MODULE generate_oracle
#include <boost/test/unit_test.hpp>

#include <tmm/generation.hpp>
#include <tmm/io/model_file.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <optional>
#include <vector>

#include "../reference/oracle.hpp"

namespace {

using namespace oracle;

// 4 positions, 2 components; hidden variables: 4 + 2 conv choices and the class.
constexpr auto tiny_ht = tmm::input<2, 2> | tmm::representation<tmm::gaussians<2>, 1> |
                         tmm::conv<3> | tmm::product_pool<tmm::window<1, 2>> | tmm::conv<2> |
                         tmm::product_pool<tmm::window<2, 1>> | tmm::classes<2>;
constexpr auto tiny_cp = tmm::cp<tmm::input<2, 2>, tmm::gaussians<2>, 1, 3, 2>;
constexpr auto tiny_categorical =
    tmm::input<2, 2> | tmm::representation<tmm::categorical<2, 3>, 1> | tmm::conv<2, tmm::shared> |
    tmm::product_pool<tmm::global> | tmm::classes<3>;

using tree = tmm::latent_tree<double>;

// Random parameters with a non-uniform class prior, so that the class choice is tested too.
tmm::parameters<double> model_parameters(const tmm::plan& p, engine& rng, double spread = 1.0) {
    auto theta = random_parameters(p, rng, spread);
    double norm = 0;
    for (double& v : theta.log_prior) norm += (v = std::exp(normal(rng)));
    for (double& v : theta.log_prior) v = std::log(v / norm);
    return theta;
}

// Cell of (class y, assignment index) in a table of K x M^N cells.
std::size_t cell(const tmm::plan& p, int y, const std::vector<int>& components) {
    std::size_t index = 0;
    for (int d : components) index = index * p.components + d;
    return std::size_t(y) * power(p.components, p.positions()) + index;
}

// Exact P(y, d | observed) over every cell: P(y) A^y[d] prod_i phi_i(d_i), normalised; with
// a class given, P(d | y, observed) in that class's cells only.
std::vector<double> exact_cells(const tmm::plan& p, const tmm::parameters<double>& theta,
                                const std::vector<double>& values,
                                const std::vector<std::uint8_t>& mask, std::optional<int> label) {
    const auto a = prior_tensors(p, theta);
    const auto phi = patch_densities(p, theta, values, mask, 0);
    const assignments d(p.positions(), p.components);
    std::vector<double> cells(p.classes * d.count, 0.0);
    double total = 0;
    for (int y = 0; y < p.classes; ++y) {
        if (label && y != *label) continue;
        for (std::size_t index = 0; index < d.count; ++index) {
            double w = (label ? 1.0 : std::exp(theta.log_prior[y])) * a[y][index];
            for (int i = 0; i < p.positions(); ++i) w *= phi[i][d.component(index, i)];
            cells[y * d.count + index] = w;
            total += w;
        }
    }
    for (double& c : cells) c /= total;
    return cells;
}

// Pearson's chi-square of `counts` against `probabilities`, cells with an expected count
// below 5 pooled into one; `dof` gets the bins minus one.
double chi_square(const std::vector<std::size_t>& counts, const std::vector<double>& probabilities,
                  std::size_t n, int& dof) {
    double statistic = 0, small_expected = 0, small_observed = 0;
    int bins = 0;
    for (std::size_t c = 0; c < counts.size(); ++c) {
        const double expected = probabilities[c] * double(n);
        if (expected < 5) {
            small_expected += expected;
            small_observed += double(counts[c]);
            continue;
        }
        statistic += (counts[c] - expected) * (counts[c] - expected) / expected;
        ++bins;
    }
    if (small_expected > 0) {
        statistic += (small_observed - small_expected) * (small_observed - small_expected) /
                     std::max(small_expected, 1e-300);
        ++bins;
    }
    dof = bins - 1;
    return statistic;
}

// The upper 0.1% point of chi-square with k degrees of freedom (Wilson-Hilferty, z = 3.090):
// a correct sampler fails a given fixed-seed test with probability 0.001.
double chi_square_limit(int k) {
    const double h = 2.0 / (9.0 * k);
    return k * std::pow(1.0 - h + 3.090 * std::sqrt(h), 3);
}

// Draws n latent assignments for image 0 of (values, mask) and checks their (class,
// components) frequencies against exact_cells.
void check_frequencies(const tmm::plan& p, const tmm::parameters<double>& theta,
                       const std::vector<double>& values, const std::vector<std::uint8_t>& mask,
                       std::optional<int> label, std::uint64_t seed, const char* what) {
    const tree t(p, theta);
    tree::values v;
    t.upward(batch(values, mask, 1), 0, tmm::semiring::sum_product, v);
    const auto probabilities = exact_cells(p, theta, values, mask, label);
    std::vector<std::size_t> counts(probabilities.size(), 0);
    const std::size_t n = 20000;
    tmm::random_source rng(seed);
    for (std::size_t s = 0; s < n; ++s) {
        const auto z = t.draw(v, label, rng);
        ++counts[cell(p, z.label, z.channels[0])];
    }
    int dof = 0;
    const double statistic = chi_square(counts, probabilities, n, dof);
    BOOST_TEST_REQUIRE(dof >= 1);
    BOOST_TEST(statistic < chi_square_limit(dof), what << ": chi-square " << statistic << " with "
                                                       << dof << " degrees of freedom, limit "
                                                       << chi_square_limit(dof));
}

std::vector<double> nothing_observed_values(const tmm::plan& p) {
    return std::vector<double>(p.pixels(), 0.0);
}
std::vector<std::uint8_t> nothing_observed(const tmm::plan& p) {
    return std::vector<std::uint8_t>(p.pixels(), 0);
}

// ---- brute force over every hidden variable ----

// Linear weights W[l] (weight_sets x out x in) of every conv layer.
std::vector<std::vector<double>> linear_weights(const tmm::plan& p,
                                                const tmm::parameters<double>& theta) {
    std::vector<std::vector<double>> w(p.layers.size());
    for (std::size_t l = 0; l < p.layers.size(); ++l)
        if (p.layers[l].kind == tmm::layer_kind::conv)
            w[l] = conv_weights(p.layers[l], theta.theta[l]);
    return w;
}

struct best_tree {
    double probability = -1;
    std::vector<std::vector<int>> channels;
};

// Every value of every conv choice below layer `top` (the channels of top's output given in
// `start`, -1 outside the subtree): the product of the chosen weights times
// prod_i phi[i][d_i] over the positions in the subtree. Returns the maximum.
best_tree brute_force_best(const tmm::plan& p, const std::vector<std::vector<double>>& w,
                           const std::vector<std::vector<double>>& phi, int top,
                           const std::vector<int>& start, double factor) {
    struct node {
        int layer, position, choices;
    };
    std::vector<node> nodes;
    for (int l = top; l >= 0; --l)
        if (p.layers[l].kind == tmm::layer_kind::conv)
            for (int j = 0; j < p.layers[l].in_positions(); ++j)
                nodes.push_back({l, j, p.layers[l].in_channels});
    std::vector<int> choice(nodes.size(), 0);
    best_tree best;
    while (true) {
        std::vector<std::vector<int>> ch(p.layers.size() + 1);
        ch[top + 1] = start;
        double prob = factor;
        std::size_t next = 0;
        for (int l = top; l >= 0; --l) {
            const tmm::layer& ly = p.layers[l];
            ch[l].assign(ly.in_positions(), -1);
            if (ly.kind == tmm::layer_kind::pool) {
                for (int win = 0; win < ly.out_positions(); ++win)
                    for (int slot = 0; slot < ly.window_size; ++slot)
                        if (const int j = ly.members[win * ly.window_size + slot]; j >= 0)
                            ch[l][j] = ch[l + 1][win];
                continue;
            }
            for (int j = 0; j < ly.in_positions(); ++j, ++next) {
                const int g = ch[l + 1][j];
                if (g < 0) continue;
                const int a = choice[next];
                ch[l][j] = a;
                prob *= w[l][(std::size_t(ly.set_of_position[j]) * ly.out_channels + g) *
                                 ly.in_channels +
                             a];
            }
        }
        for (int i = 0; i < p.positions(); ++i)
            if (ch[0][i] >= 0) prob *= phi[i][ch[0][i]];
        if (prob > best.probability) best = {prob, ch};
        // odometer
        std::size_t k = 0;
        while (k < nodes.size() && ++choice[k] == nodes[k].choices) choice[k++] = 0;
        if (k == nodes.size()) break;
    }
    return best;
}

// The most probable explanation of (values, mask) by brute force, over the class too.
best_tree brute_force_explanation(const tmm::plan& p, const tmm::parameters<double>& theta,
                                  const std::vector<double>& values,
                                  const std::vector<std::uint8_t>& mask, std::optional<int> label) {
    const auto w = linear_weights(p, theta);
    const auto phi = patch_densities(p, theta, values, mask, 0);
    best_tree best;
    for (int y = 0; y < p.classes; ++y) {
        if (label && y != *label) continue;
        const double prior = label ? 1.0 : std::exp(theta.log_prior[y]);
        best_tree b = brute_force_best(p, w, phi, int(p.layers.size()) - 1, {y}, prior);
        if (b.probability > best.probability) best = b;
    }
    return best;
}

// ---- tests ----

BOOST_AUTO_TEST_CASE(brute_force_walk_sums_to_the_prior_tensor) {
    // The walk over hidden variables (used by the MPE oracles below) and eq. 1's prior tensor
    // describe the same distribution: summing the walk over inner choices gives P(y) A^y[d].
    const tmm::plan p = tmm::make_plan(tiny_ht);
    engine rng(1);
    const auto theta = model_parameters(p, rng);
    const auto a = prior_tensors(p, theta);
    const auto w = linear_weights(p, theta);
    const assignments d(p.positions(), p.components);
    for (int y = 0; y < p.classes; ++y)
        for (std::size_t index = 0; index < d.count; ++index) {
            // inner choices: the class conv's child (2), layer 2's children at its 2
            // positions (3 each); the 4 leaf choices are the cell's components d_i
            double sum = 0;
            for (int top = 0; top < 2; ++top)
                for (int c0 = 0; c0 < 3; ++c0)
                    for (int c1 = 0; c1 < 3; ++c1) {
                        const int inner[2] = {c0, c1};
                        double prob = w[4][y * 2 + top];
                        for (int j = 0; j < 2; ++j) {
                            prob *= w[2][(j * 2 + top) * 3 + inner[j]];
                            for (int col = 0; col < 2; ++col) {
                                const int i = j * 2 + col;
                                prob *= w[0][(i * 3 + inner[j]) * 2 + d.component(index, i)];
                            }
                        }
                        sum += prob;
                    }
            BOOST_TEST(close(sum, a[y][index], 1e-12), "class " << y << " cell " << index);
        }
}

BOOST_AUTO_TEST_CASE(prior_samples_match_the_prior_tensor) {
    for (const auto& [p, seed] :
         {std::pair{tmm::make_plan(tiny_ht), 11u}, std::pair{tmm::make_plan(tiny_cp), 12u}}) {
        engine rng(seed);
        const auto theta = model_parameters(p, rng);
        check_frequencies(p, theta, nothing_observed_values(p), nothing_observed(p), std::nullopt,
                          seed, "unconditional");
        check_frequencies(p, theta, nothing_observed_values(p), nothing_observed(p), 1, seed + 1,
                          "class 1");
    }
}

// A class of prior probability zero is never drawn, yet P(X | that class) can still be drawn
// from when the class is given (its prior plays no part there).
BOOST_AUTO_TEST_CASE(a_class_of_prior_zero_is_never_drawn_but_can_be_given) {
    const tmm::plan p = tmm::make_plan(tiny_ht);
    engine rng(13);
    auto theta = model_parameters(p, rng);
    const double impossible = -std::numeric_limits<double>::infinity();
    const double rest = std::log1p(-std::exp(theta.log_prior[0]));
    theta.log_prior[0] = impossible;
    for (std::size_t y = 1; y < theta.log_prior.size(); ++y) theta.log_prior[y] -= rest;
    check_frequencies(p, theta, nothing_observed_values(p), nothing_observed(p), std::nullopt, 13,
                      "prior 0 for class 0");
    check_frequencies(p, theta, nothing_observed_values(p), nothing_observed(p), 0, 14,
                      "class 0 given, its prior 0");
    const tree t(p, theta);
    tree::values v;
    t.upward(batch(nothing_observed_values(p), nothing_observed(p), 1), 0,
             tmm::semiring::max_product, v);
    BOOST_TEST(t.most_probable(v, 0).label == 0);
}

BOOST_AUTO_TEST_CASE(conditional_samples_match_the_exact_posterior) {
    for (const auto& [p, seed] :
         {std::pair{tmm::make_plan(tiny_ht), 21u}, std::pair{tmm::make_plan(tiny_cp), 22u},
          std::pair{tmm::make_plan(tiny_categorical), 23u}}) {
        engine rng(seed);
        const auto theta = model_parameters(p, rng, 0.7);
        const auto values = random_images(p, 1, rng);
        const std::vector<std::uint8_t> mask = {1, 0, 0, 1};  // two pixels observed
        check_frequencies(p, theta, values, mask, std::nullopt, seed, "given two pixels");
        check_frequencies(p, theta, values, mask, 0, seed + 1, "given two pixels and class 0");
    }
}

BOOST_AUTO_TEST_CASE(completions_never_change_observed_values) {
    const tmm::plan p = tmm::make_plan(tiny_ht);
    engine rng(31);
    const auto theta = model_parameters(p, rng);
    const std::size_t count = 50;
    auto values = random_images(p, count, rng);
    auto mask = random_mask(values.size(), 0.5, rng);
    for (std::size_t i = 0; i < values.size(); i += 7)
        if (!mask[i]) values[i] = missing_value;  // some missing as NaN as well
    const auto x = batch(values, mask, count);
    for (auto how :
         {tmm::completion::sample, tmm::completion::most_probable, tmm::completion::mean}) {
        const auto out = tmm::complete(p, theta, x, how, 5);
        BOOST_TEST_REQUIRE(out.size() == values.size());
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (observed(values, mask, i))
                BOOST_TEST(out[i] == values[i], "value " << i << " was observed");
            else
                BOOST_TEST(std::isfinite(out[i]), "value " << i << " was not filled");
        }
    }
}

BOOST_AUTO_TEST_CASE(most_probable_explanation_equals_brute_force) {
    for (const auto& [p, seed] :
         {std::pair{tmm::make_plan(tiny_ht), 41u}, std::pair{tmm::make_plan(tiny_cp), 42u},
          std::pair{tmm::make_plan(tiny_categorical), 43u}}) {
        engine rng(seed);
        const auto theta = model_parameters(p, rng, 1.5);
        const tree t(p, theta);
        for (int image = 0; image < 6; ++image) {
            const auto values = random_images(p, 1, rng);
            const auto mask = random_mask(values.size(), 0.5, rng);
            for (std::optional<int> label : {std::optional<int>{}, std::optional<int>{1}}) {
                tree::values v;
                t.upward(batch(values, mask, 1), 0, tmm::semiring::max_product, v);
                const auto z = t.most_probable(v, label);
                const auto want = brute_force_explanation(p, theta, values, mask, label);
                // the top value of the max-product pass is the best joint probability
                const double top = v.back()[z.label] + (label ? 0.0 : theta.log_prior[z.label]);
                BOOST_TEST(close(top, std::log(want.probability), 1e-9));
                BOOST_TEST((z.channels == want.channels), "image " << image);

                // the completion: observed kept, missing = mode of the chosen component
                const auto out = tmm::complete(p, theta, batch(values, mask, 1),
                                               tmm::completion::most_probable, 0, label);
                for (int i = 0; i < p.pixels(); ++i) {
                    if (mask[i]) {
                        BOOST_TEST(out[i] == values[i]);
                        continue;
                    }
                    const std::size_t at = std::size_t(want.channels[0][i]) * p.patch_size();
                    if (p.leaves == tmm::leaf_kind::gaussian) {
                        BOOST_TEST(out[i] == theta.mean[at]);
                    } else {
                        int mode = 0;
                        for (int s = 1; s < p.values; ++s)
                            if (theta.logits[at * p.values + s] >
                                theta.logits[at * p.values + mode])
                                mode = s;
                        BOOST_TEST(out[i] == double(mode));
                    }
                }
            }
        }
    }
}

// A two-component mixture of 2-D Gaussians at (-3, -3) and (3, 3), unit variance, equal
// weights: a CP model with two positions (one pixel each), two components shared by the
// positions, and two terms that each keep one component everywhere.
tmm::parameters<double> two_gaussians(const tmm::plan& p) {
    auto theta = tmm::zero_parameters<double>(p);
    theta.mean = {-3.0, 3.0};
    theta.log_precision = {0.0, 0.0};
    const double impossible = -std::numeric_limits<double>::infinity();
    // conv 0 (unshared, 2 positions x 2 terms x 2 components): term z keeps component z
    theta.theta[0] = {0.0, impossible, impossible, 0.0, 0.0, impossible, impossible, 0.0};
    // class layer: both terms with weight 1/2
    theta.theta[2] = {0.0, 0.0};
    return theta;
}

BOOST_AUTO_TEST_CASE(two_gaussians_observed_at_three_draw_from_the_second) {
    const tmm::plan p = tmm::make_plan(tmm::cp<tmm::input<1, 2>, tmm::gaussians<2>, 1, 2, 1>);
    const auto theta = two_gaussians(p);
    const std::size_t n = 10000;
    std::vector<double> values(2 * n);
    std::vector<std::uint8_t> mask(2 * n);
    for (std::size_t b = 0; b < n; ++b) values[2 * b] = 3.0, mask[2 * b] = 1;
    const auto out = tmm::complete(p, theta, batch(values, mask, n), tmm::completion::sample, 99);

    // P(first component | x1 = 3) = 1 / (1 + e^18) ~ 1.5e-8: expect no draw from it. Its
    // draws land near -3; the second component's below -1 have probability 3e-5 each.
    std::size_t first = 0;
    double sum = 0, squares = 0;
    for (std::size_t b = 0; b < n; ++b) {
        BOOST_TEST(out[2 * b] == 3.0);
        const double x2 = out[2 * b + 1];
        first += x2 < -1.0;
        sum += x2;
        squares += (x2 - 3.0) * (x2 - 3.0);
    }
    BOOST_TEST(first <= 2u, first << " of " << n << " draws look like the first component");
    // mean 3 and variance 1 of the second component: 5 standard errors
    BOOST_TEST(std::abs(sum / n - 3.0) < 5.0 / std::sqrt(double(n)));
    BOOST_TEST(std::abs(squares / n - 1.0) < 5.0 * std::sqrt(2.0 / n));

    // conditional mean in closed form: 3 P(second | x1) - 3 P(first | x1)
    const std::vector<double> one(values.begin(), values.begin() + 2);
    const std::vector<std::uint8_t> one_mask(mask.begin(), mask.begin() + 2);
    const auto mean = tmm::complete(p, theta, batch(one, one_mask, 1), tmm::completion::mean);
    const double first_posterior = 1.0 / (1.0 + std::exp(18.0));
    BOOST_TEST(close(mean[1], 3.0 * (1 - first_posterior) - 3.0 * first_posterior, 1e-12));
    // and the most probable explanation picks the second component's mean
    const auto mpe =
        tmm::complete(p, theta, batch(one, one_mask, 1), tmm::completion::most_probable);
    BOOST_TEST(mpe[1] == 3.0);
}

BOOST_AUTO_TEST_CASE(conditional_mean_equals_the_posterior_expectation) {
    for (const auto& [p, seed] : {std::pair{tmm::make_plan(tiny_ht), 51u},
                                  std::pair{tmm::make_plan(tiny_categorical), 52u}}) {
        engine rng(seed);
        const auto theta = model_parameters(p, rng);
        for (int image = 0; image < 4; ++image) {
            const auto values = random_images(p, 1, rng);
            const auto mask = random_mask(values.size(), 0.5, rng);
            for (std::optional<int> label : {std::optional<int>{}, std::optional<int>{0}}) {
                const auto cells = exact_cells(p, theta, values, mask, label);
                const auto out = tmm::complete(p, theta, batch(values, mask, 1),
                                               tmm::completion::mean, 0, label);
                const assignments d(p.positions(), p.components);
                for (int i = 0; i < p.pixels(); ++i) {
                    if (mask[i]) continue;
                    // E[x_i | observed] = sum over cells of P(cell) E[x_i | d_i]
                    double want = 0;
                    for (std::size_t c = 0; c < cells.size(); ++c) {
                        const std::size_t at =
                            std::size_t(d.component(c % d.count, i)) * p.patch_size();
                        double component_mean = 0;
                        if (p.leaves == tmm::leaf_kind::gaussian) {
                            component_mean = theta.mean[at];
                        } else {
                            for (int s = 0; s < p.values; ++s)
                                component_mean +=
                                    s *
                                    coordinate_density(p, theta, d.component(c % d.count, i), 0, s);
                        }
                        want += cells[c] * component_mean;
                    }
                    BOOST_TEST(close(out[i], want, 1e-9), "image " << image << " pixel " << i);
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(posteriors_survive_transitions_of_probability_e_minus_612) {
    // Position 0 observed at 0 where component 1 (mean 35) has density e^-612.5 against
    // component 0's e^-0.92, but every term of conv 0 there picks component 0 only with
    // weight e^-612: both explanations weigh about e^-613, so P(d_0 | x) is far from 0 and 1,
    // and the factored posterior pass must take its exact path (the factor exceeds e^600).
    const tmm::plan p = tmm::make_plan(tmm::cp<tmm::input<1, 2>, tmm::gaussians<2>, 1, 2, 1>);
    auto theta = tmm::zero_parameters<double>(p);
    theta.mean = {0.0, 35.0};
    theta.theta[0] = {-612.0, 0.0, -612.0, 0.0, 0.3, -0.2, 1.0, 0.0};
    theta.theta[2] = {0.2, -0.1};
    const std::vector<double> values = {0.0, 0.0};
    const std::vector<std::uint8_t> mask = {1, 0};
    const auto cells = exact_cells(p, theta, values, mask, std::nullopt);
    const assignments d(p.positions(), p.components);
    const tree t(p, theta);
    tree::values v;
    t.upward(batch(values, mask, 1), 0, tmm::semiring::sum_product, v);
    const auto q = t.component_posteriors(v, std::nullopt);
    for (int i = 0; i < 2; ++i)
        for (int c = 0; c < 2; ++c) {
            double want = 0;
            for (std::size_t index = 0; index < d.count; ++index)
                if (d.component(index, i) == c) want += cells[index];
            BOOST_TEST(close(q[i * 2 + c], want, 1e-9), "position " << i << " component " << c);
        }
    BOOST_TEST((cells[0] + cells[1] > 0.1 && cells[0] + cells[1] < 0.9));  // really balanced
}

BOOST_AUTO_TEST_CASE(conditional_mean_equals_quadrature) {
    // E[x2 | x1] = int x2 P(x1, x2) dx2 / int P(x1, x2) dx2, with P(x1, x2) from the
    // backend's class likelihoods and the prior: only the likelihood, no latent variable.
    const tmm::plan p = tmm::make_plan(tmm::cp<tmm::input<1, 2>, tmm::gaussians<3>, 1, 4, 2>);
    engine rng(61);
    const auto theta = model_parameters(p, rng);
    const double x1 = 0.4, step = 0.002;
    std::vector<double> grid;
    for (double x2 = -15; x2 <= 15; x2 += step) grid.insert(grid.end(), {x1, x2});
    const std::size_t n = grid.size() / 2;
    const auto ll = tmm::backends::reference::log_likelihoods(p, theta, batch(grid, {}, n));
    const auto joint = tmm::log_marginal<double>(ll, theta.log_prior);
    double mass = 0, moment = 0;
    for (std::size_t b = 0; b < n; ++b) {
        const double weight = (b == 0 || b + 1 == n ? 0.5 : 1.0) * std::exp(joint[b]);
        mass += weight;
        moment += weight * grid[2 * b + 1];
    }
    const std::vector<double> values = {x1, 0.0};
    const std::vector<std::uint8_t> mask = {1, 0};
    const auto out = tmm::complete(p, theta, batch(values, mask, 1), tmm::completion::mean);
    BOOST_TEST(close(out[1], moment / mass, 1e-7), out[1] << " vs " << moment / mass);
}

BOOST_AUTO_TEST_CASE(most_likely_patch_follows_the_best_subtree) {
    const tmm::plan p = tmm::make_plan(tiny_ht);
    engine rng(71);
    const auto theta = model_parameters(p, rng, 1.5);
    const auto w = linear_weights(p, theta);
    const std::vector<std::vector<double>> ones(p.positions(), std::vector<double>(2, 1.0));
    // layer 2 (the conv after the first pooling), position 1: rows 1 of the 2x2 image
    for (int channel = 0; channel < 2; ++channel) {
        const auto got = tmm::most_likely_patch(p, theta, 2, 1, channel);
        const auto best = brute_force_best(p, w, ones, 2, {-1, channel}, 1.0);
        const std::vector<std::uint8_t> covered = {0, 0, 1, 1};
        BOOST_TEST((got.covered == covered), "channel " << channel);
        for (int i = 2; i < 4; ++i)
            BOOST_TEST(got.values[i] == theta.mean[best.channels[0][i]],
                       "channel " << channel << " pixel " << i);
    }
    // every position of the layer at once: each position's own best subtree, side by side
    const tree t(p, theta);
    tree::values prior_max;
    t.upward_of_nothing(tmm::semiring::max_product, prior_max);
    for (int channel = 0; channel < 2; ++channel) {
        const auto got = tmm::most_likely_patches(t, prior_max, 2, channel);
        BOOST_TEST((got.covered == std::vector<std::uint8_t>(4, 1)));
        for (int position = 0; position < 2; ++position) {
            std::vector<int> start = {-1, -1};
            start[position] = channel;
            const auto best = brute_force_best(p, w, ones, 2, start, 1.0);
            for (int i = 2 * position; i < 2 * position + 2; ++i)
                BOOST_TEST(got.values[i] == theta.mean[best.channels[0][i]]);
        }
    }
    BOOST_CHECK_THROW(tmm::most_likely_patch(p, theta, 5, 0, 0), tmm::input_error);
    BOOST_CHECK_THROW(tmm::most_likely_patch(p, theta, 2, 2, 0), tmm::input_error);
    BOOST_CHECK_THROW(tmm::most_likely_patch(p, theta, 2, 0, 2), tmm::input_error);
}

BOOST_AUTO_TEST_CASE(a_saved_and_loaded_model_draws_the_same_samples) {
    const tmm::plan p = tmm::make_plan(tiny_ht);
    engine rng(81);
    const auto params = tmm::convert_parameters<float>(model_parameters(p, rng));
    const auto file = std::filesystem::temp_directory_path() /
                      ("tmm_generate_" + std::to_string(::getpid()) + ".tmm");
    tmm::save_model(file, p, params, "tiny_ht");
    const auto loaded = tmm::load_model(file, p);
    std::filesystem::remove(file);
    for (std::optional<int> label : {std::optional<int>{}, std::optional<int>{1}}) {
        const auto before = tmm::sample(p, params, 64, label, 2024);
        const auto after = tmm::sample(loaded.structure, loaded.params, 64, label, 2024);
        BOOST_TEST((before == after));
        BOOST_TEST((before != tmm::sample(p, params, 64, label, 2025)));  // the seed matters
    }
}

BOOST_AUTO_TEST_CASE(samples_shown_as_modes_are_component_means) {
    // The hidden variables are drawn as before (same stream), only the leaves' noise is left
    // out: each pixel is the mean of one component, and the component's frequency follows
    // the prior tensor's marginal at that position.
    const tmm::plan p = tmm::make_plan(tiny_ht);
    engine rng(91);
    const auto theta = model_parameters(p, rng);
    const std::size_t n = 20000;
    const auto modes = tmm::sample(p, theta, n, 0, 17, tmm::patch_values::modes);
    const auto a = prior_tensors(p, theta);
    const assignments d(p.positions(), p.components);
    for (int i = 0; i < p.pixels(); ++i) {
        std::size_t second = 0;
        for (std::size_t s = 0; s < n; ++s) {
            const double v = modes[s * p.pixels() + i];
            BOOST_TEST_REQUIRE((v == theta.mean[0] || v == theta.mean[1]));
            second += v == theta.mean[1];
        }
        double want = 0;  // P(d_i = 1 | y = 0)
        for (std::size_t index = 0; index < d.count; ++index)
            if (d.component(index, i) == 1) want += a[0][index];
        // a binomial proportion within 5 standard errors
        BOOST_TEST(std::abs(double(second) / n - want) < 5 * std::sqrt(want * (1 - want) / n),
                   "pixel " << i << ": " << double(second) / n << " vs " << want);
    }
}

BOOST_AUTO_TEST_CASE(bad_requests_are_refused) {
    const tmm::plan p = tmm::make_plan(tiny_ht);
    const auto theta = tmm::zero_parameters<double>(p);
    BOOST_CHECK_THROW(tmm::sample(p, theta, 1, 2, 0), tmm::input_error);
    BOOST_CHECK_THROW(tmm::sample(p, theta, 1, -1, 0), tmm::input_error);
    const std::vector<double> short_image(3, 0.0);
    BOOST_CHECK_THROW(tmm::complete(p, theta, batch(short_image, {}, 1), tmm::completion::mean),
                      tmm::input_error);
    // an observed symbol that no component can emit: nothing explains the image
    const tmm::plan c = tmm::make_plan(tiny_categorical);
    auto impossible = tmm::zero_parameters<double>(c);
    for (int d = 0; d < c.components; ++d)
        impossible.logits[std::size_t(d) * c.values + 2] = -std::numeric_limits<double>::infinity();
    const std::vector<double> symbols = {2.0, 0.0, 1.0, 0.0};
    const std::vector<std::uint8_t> first_missing = {1, 0, 1, 1};
    for (auto how :
         {tmm::completion::sample, tmm::completion::most_probable, tmm::completion::mean})
        for (std::optional<int> label : {std::optional<int>{}, std::optional<int>{1}})
            BOOST_CHECK_THROW(
                tmm::complete(c, impossible, batch(symbols, first_missing, 1), how, 0, label),
                tmm::input_error);

    // position marginalisation belongs to training, not to generation
    const std::vector<double> image(4, 0.0);
    const std::vector<std::uint8_t> kept = {1, 0};
    auto x = batch(image, {}, 1);
    x.marginalized_layer = 1;
    x.kept_positions = kept;
    BOOST_CHECK_THROW(tmm::complete(p, theta, x, tmm::completion::mean), tmm::input_error);
}

}  // namespace
