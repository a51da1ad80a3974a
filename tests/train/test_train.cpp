// The learning pieces against facts derived by hand: the loss gradient by finite
// differences, one Nadam step in closed form, the GMM fit on data drawn from known
// Gaussians, determinism (batches drawn ahead included), and learning a separable task with
// missing pixels.
#define BOOST_TEST_MODULE training
#include <boost/test/unit_test.hpp>

#include <tbb/global_control.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/tmm.hpp>
#include <tmm/train/train.hpp>
#include <vector>

namespace {

constexpr auto tiny_ht = tmm::input<8, 8> | tmm::representation<tmm::gaussians<6>, 2> |
                         tmm::conv<8> | tmm::product_pool<tmm::window<2, 2>> | tmm::conv<8> |
                         tmm::product_pool<tmm::window<2, 2>> | tmm::classes<2>;

// Two classes of 8x8 images: class 0 bright on the left half, class 1 on the right half.
struct synthetic {
    std::vector<float> values;
    std::vector<std::uint8_t> observed;
    std::vector<int> labels;
    tmm::labelled_images view(std::size_t count) const { return {count, values, observed, labels}; }
};

synthetic halves(std::size_t count, double missing, std::uint64_t seed) {
    synthetic s;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> noise(0.0f, 0.1f);
    std::bernoulli_distribution drop(missing);
    for (std::size_t i = 0; i < count; ++i) {
        const int label = int(i % 2);
        s.labels.push_back(label);
        for (int r = 0; r < 8; ++r)
            for (int c = 0; c < 8; ++c) {
                const bool bright = (c < 4) == (label == 0);
                s.values.push_back((bright ? 0.4f : -0.4f) + noise(rng));
                s.observed.push_back(!drop(rng));
            }
    }
    return s;
}

}  // namespace

// d loss / d out by central differences of the loss itself (float64).
BOOST_AUTO_TEST_CASE(loss_gradient_matches_finite_differences) {
    std::mt19937_64 rng(1);
    std::normal_distribution<double> n(0.0, 3.0);
    const std::size_t count = 4, k = 3;
    std::vector<double> out(count * k), dout(count * k), scratch(count * k);
    for (auto& v : out) v = n(rng);
    const std::vector<int> labels{0, 2, 1, 2};
    const std::vector<double> prior{std::log(0.2), std::log(0.5), std::log(0.3)};
    const double beta = 0.37;
    tmm::classification_loss<double>(out, labels, prior, beta, dout);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const double h = 1e-6;
        auto shifted = out;
        shifted[i] += h;
        const double up = tmm::classification_loss<double>(shifted, labels, prior, beta, scratch);
        shifted[i] -= 2 * h;
        const double down = tmm::classification_loss<double>(shifted, labels, prior, beta, scratch);
        BOOST_TEST(dout[i] == (up - down) / (2 * h), boost::test_tools::tolerance(1e-6));
    }
}

// First Nadam step from zero state: m = (1-b1) g, v = (1-b2) g^2, so the step is
// lr * (b1 (1-b1) / (1-b1^2) + 1) * g / (|g| + eps) = lr * (b1 / (1+b1) + 1) * sign(g).
BOOST_AUTO_TEST_CASE(first_nadam_step_in_closed_form) {
    tmm::training_options o;
    o.epsilon = 0;
    tmm::nadam optimiser(o);
    // 37 entries: whole vectors and a tail, both paths of the update
    std::vector<float> value(37), grad(37);
    for (std::size_t i = 0; i < value.size(); ++i) {
        value[i] = i % 2 == 0 ? 1.0f : -2.0f;
        grad[i] = i % 2 == 0 ? 0.5f + 0.1f * float(i) : -3.0f;
    }
    const std::vector<float> before = value;
    optimiser.step(value, grad, 0, 0.01, 1);
    const double step = 0.01 * (o.beta1 / (1 + o.beta1) + 1);
    for (std::size_t i = 0; i < value.size(); ++i)
        BOOST_TEST(value[i] == before[i] - (grad[i] > 0 ? step : -step),
                   boost::test_tools::tolerance(1e-6));
}

// Patches drawn from 3 well-separated Gaussians with known means and variances: the fit
// must find each of them.
BOOST_AUTO_TEST_CASE(gmm_fit_recovers_known_components) {
    constexpr auto net = tmm::input<2, 2> | tmm::representation<tmm::gaussians<3>, 2> |
                         tmm::conv<2> | tmm::product_pool<tmm::global> | tmm::classes<2>;
    const auto p = tmm::make_plan(net);
    const float means[3][4] = {
        {-0.4f, -0.4f, -0.4f, -0.4f}, {0.4f, 0.4f, -0.4f, -0.4f}, {0.0f, 0.4f, 0.0f, 0.4f}};
    const float sd = 0.05f;
    std::mt19937_64 rng(3);
    std::normal_distribution<float> noise(0.0f, sd);
    synthetic s;
    for (int i = 0; i < 30000; ++i) {
        for (int k = 0; k < 4; ++k) s.values.push_back(means[i % 3][k] + noise(rng));
        s.labels.push_back(0);
    }
    auto theta = tmm::zero_parameters<float>(p);
    tmm::training_options o;
    o.gmm_patches = 30000;
    o.gmm_kmeans_iterations = 20;
    tmm::fit_gaussians(p, theta, {30000, s.values, {}, s.labels}, o);
    for (const auto& mean : means) {
        double nearest = 1e9;
        int arg = 0;
        for (int d = 0; d < 3; ++d) {
            double e = 0;
            for (int k = 0; k < 4; ++k) e += std::pow(theta.mean[d * 4 + k] - mean[k], 2);
            if (e < nearest) nearest = e, arg = d;
        }
        BOOST_TEST(std::sqrt(nearest) < 0.01);
        for (int k = 0; k < 4; ++k)  // variance sd^2 within 10%: 10,000 samples per component give
                                     // a relative sd of 1.4%
            BOOST_TEST(std::abs(std::exp(-theta.log_precision[arg * 4 + k]) - sd * sd) <=
                       0.15 * sd * sd);
    }
}

template <class Backend>
tmm::parameters<float> train_tiny(std::uint64_t seed, const synthetic& data,
                                  std::size_t iterations) {
    const auto p = tmm::make_plan(tiny_ht);
    auto theta = tmm::zero_parameters<float>(p);
    tmm::training_options o;
    o.iterations = iterations;
    o.batch = 32;
    o.seed = seed;
    o.gmm_patches = 2000;
    o.gmm_kmeans_iterations = 10;
    tmm::fit<Backend>(p, theta, data.view(data.labels.size()), o);
    return theta;
}

BOOST_AUTO_TEST_CASE(same_seed_same_model) {
    const synthetic data = halves(200, 0.2, 5);
    const auto a = train_tiny<tmm::backends::cpu>(11, data, 20);
    const auto b = train_tiny<tmm::backends::cpu>(11, data, 20);
    BOOST_TEST(a.theta == b.theta);
    BOOST_TEST(a.mean == b.mean);
    const auto c = train_tiny<tmm::backends::cpu>(12, data, 20);
    BOOST_TEST(a.theta != c.theta);
}

// Trained on images with 40% of pixels missing, tested with 60% missing: the two classes
// differ in every pixel, so a correct marginal likelihood classifies almost all of them.
BOOST_AUTO_TEST_CASE(learns_from_images_with_missing_pixels) {
    const synthetic train = halves(400, 0.4, 6);
    const synthetic test = halves(200, 0.6, 7);
    const auto theta = train_tiny<tmm::backends::cpu>(1, train, 150);
    const auto p = tmm::make_plan(tiny_ht);
    const auto out =
        tmm::backends::cpu::log_likelihoods(p, theta, {200, test.values, test.observed});
    const auto predicted = tmm::predict<float>(out, theta.log_prior);
    int correct = 0;
    for (std::size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == test.labels[i];
    BOOST_TEST(correct >= 195);
}

BOOST_AUTO_TEST_CASE(rejects_labels_outside_the_classes) {
    synthetic data = halves(10, 0.0, 8);
    data.labels[3] = 7;
    const auto p = tmm::make_plan(tiny_ht);
    auto theta = tmm::zero_parameters<float>(p);
    tmm::training_options o;
    o.iterations = 1;
    BOOST_CHECK_EXCEPTION(tmm::train<tmm::backends::cpu>(p, theta, data.view(10), o),
                          tmm::training_error, [](const tmm::training_error& e) {
                              return std::string(e.what()).find("label 7 of image 3") !=
                                     std::string::npos;
                          });
}

// The weight decay lambda * exp(theta)^2 enters as the gradient 2 lambda exp(2 theta): a step
// with decay and zero gradient equals a step without decay given that gradient by hand.
BOOST_AUTO_TEST_CASE(weight_decay_is_the_gradient_of_the_penalty) {
    tmm::training_options o;
    tmm::nadam with_decay(o), by_hand(o);
    // 35 entries: whole vectors and a tail, both paths of the update
    std::vector<float> a(35), zero(35, 0.0f), penalty(35);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = -1.0f + 0.09f * float(i);
    std::vector<float> b = a;
    const double lambda = 1e-3;
    for (std::size_t i = 0; i < a.size(); ++i)
        penalty[i] = float(2 * lambda * std::exp(2.0 * a[i]));
    with_decay.step(a, zero, 0, 0.01, 1, lambda);
    by_hand.step(b, penalty, 0, 0.01, 1);
    for (std::size_t i = 0; i < a.size(); ++i) {
        BOOST_TEST(std::abs(a[i] - b[i]) <= 1e-6f);
        BOOST_TEST(a[i] < -1.0f + 0.09f * float(i));  // the penalty pulls every logit down
    }
}

// train() draws each batch while the step before it trains. Drawn ahead or in turn, the batches
// must be the same: train() gives the model that a loop written out here gives (shuffle the
// images, walk through them, shuffle again at the end; a pixel kept with probability
// pixel_keep, if observed; each position of the marginalised level kept with probability
// position_keep), with one worker thread and with two.
BOOST_AUTO_TEST_CASE(batches_drawn_ahead_are_the_batches_drawn_in_turn) {
    const synthetic data = halves(90, 0.2, 8);  // 12 steps of 32 reshuffle the 90 images 4 times
    const auto p = tmm::make_plan(tiny_ht);
    tmm::training_options o;
    o.iterations = 12;
    o.batch = 32;
    o.seed = 5;
    o.gmm_patches = 1000;
    o.gmm_kmeans_iterations = 5;
    auto start = tmm::zero_parameters<float>(p);
    tmm::fit_gaussians(p, start, data.view(90), o);
    tmm::initialize_weights(p, start, o.seed);

    auto by_hand = start;
    {
        std::mt19937_64 rng(o.seed);
        std::vector<std::size_t> order(90);
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        std::size_t cursor = 0;
        std::bernoulli_distribution keep(o.pixel_keep), keep_position(o.position_keep);
        const std::size_t inner = tmm::marginalized_level(p, o);
        const std::size_t positions = p.layers[inner].out_positions();
        tmm::nadam optimiser(o);
        tmm::parameters<float> grad;
        for (std::size_t it = 0; it < o.iterations; ++it) {
            std::vector<float> values(32 * 64);
            std::vector<std::uint8_t> observed(32 * 64), kept(32 * positions);
            std::vector<int> labels(32);
            for (std::size_t b = 0; b < 32; ++b) {
                if (cursor == 90) std::shuffle(order.begin(), order.end(), rng), cursor = 0;
                const std::size_t image = order[cursor++];
                labels[b] = data.labels[image];
                for (std::size_t j = 0; j < 64; ++j) {
                    values[b * 64 + j] = data.values[image * 64 + j];
                    observed[b * 64 + j] = data.observed[image * 64 + j] && keep(rng);
                }
            }
            for (auto& k : kept) k = keep_position(rng);
            tmm::observations<float> x(32, values, observed);
            x.marginalized_layer = inner;
            x.kept_positions = kept;
            tmm::training_step<tmm::backends::cpu>(p, by_hand, x, labels, o, optimiser, grad, it);
        }
    }
    for (const int threads : {1, 2}) {
        tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
        auto trained = start;
        tmm::train<tmm::backends::cpu>(p, trained, data.view(90), o);
        BOOST_TEST(trained.theta == by_hand.theta, threads << " thread(s)");
    }
}
