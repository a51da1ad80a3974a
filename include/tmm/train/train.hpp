// Learning as published (../recipe.md): Gaussians initialised by a diagonal GMM fitted to
// image patches, conv weights from a flat Dirichlet, then Nadam on cross-entropy plus a
// generative term, with weight decay on exp(theta)^2 and random marginalisation of pixels.
#pragma once

#include "../detail/xsimd_warnings_push.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <tbb/parallel_for.h>
#include <tbb/task_group.h>

#include <xsimd/xsimd.hpp>

#include "../detail/exp.hpp"
#include "../parameters.hpp"
#include "../plan.hpp"
#include "images.hpp"

namespace tmm {

struct training_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct training_progress {
    std::size_t iteration = 0, iterations = 0;
    double loss = 0;  // mean over the last reported iterations
    double images_per_second = 0, elapsed_seconds = 0, remaining_seconds = 0;
};

struct training_options {
    std::size_t iterations = 25000;
    std::size_t batch = 128;
    std::uint64_t seed = 0;

    // Nadam
    double learning_rate = 0.03, beta1 = 0.975, beta2 = 0.999, epsilon = 1e-8;
    double decay_start = 0.8;  // constant rate for this fraction of the run, then linear to 0

    double generative_weight = 0.01;  // beta: loss = cross-entropy + beta * mean(-log P(X))
    double weight_decay = 1e-5;       // lambda: penalty lambda * exp(theta)^2 per conv logit
    double pixel_keep = 0.5;          // random marginalisation: P(a pixel stays observed)
    // ...and of whole positions of an inner level: P(a position of the output of layer
    // `marginalized_layer` stays). By default the level is the output of the first pooling
    // layer that leaves more than one position (the 8x8 level of the published model; a CP
    // model has none, so nothing is marginalised there). 1 turns it off.
    double position_keep = 0.5;
    std::size_t marginalized_layer = std::size_t(-1);

    // Gaussians: frozen after the GMM fit (as published for digits) unless trained here at
    // a fraction of the rate; their variance never drops below the floor.
    bool train_leaves = false;
    double leaf_rate_scale = 0.1;
    double variance_floor = 1e-4;

    // GMM initialisation
    std::size_t gmm_patches = 100000, gmm_kmeans_iterations = 100, gmm_em_epochs = 3;

    std::function<void(const training_progress&)> on_progress;
    std::size_t progress_every = 50;
};

namespace detail {

// One patch of `p` at grid position (row, col) offset by (dr, dc) pixels, into `out`
// (s values); false if a coordinate falls outside the image or is not observed.
inline bool read_patch(const plan& p, const labelled_images& data, std::size_t image, int top,
                       int left, std::span<float> out) {
    int k = 0;
    for (int r = 0; r < p.patch; ++r)
        for (int c = 0; c < p.patch; ++c)
            for (int ch = 0; ch < p.image_channels; ++ch, ++k) {
                const int row = top + r, col = left + c;
                if (row < 0 || row >= p.height || col < 0 || col >= p.width) return false;
                const std::size_t at =
                    image * p.pixels() + (std::size_t(row) * p.width + col) * p.image_channels + ch;
                const float v = data.values[at];
                if (std::isnan(v) || (!data.observed.empty() && !data.observed[at])) return false;
                out[k] = v;
            }
    return true;
}

inline float squared_distance(std::span<const float> a, std::span<const float> b) {
    float d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]);
    return d;
}

}  // namespace detail

// Fits the Gaussian leaves to fully observed patches at random offsets: k-means++ seeding,
// mini-batch k-means, then hard EM (each patch to its most likely component) with the
// variance floor. Deterministic for a given seed.
inline void fit_gaussians(const plan& p, parameters<float>& theta, const labelled_images& data,
                          const training_options& options) {
    if (p.leaves != leaf_kind::gaussian) return;
    const int m = p.components, s = p.patch_size();
    std::mt19937_64 rng(options.seed ^ 0x6a09e667f3bcc908ULL);

    // sample patches
    std::vector<float> patches;
    patches.reserve(options.gmm_patches * s);
    std::uniform_int_distribution<std::size_t> pick_image(0, data.count - 1);
    std::uniform_int_distribution<int> pick_row(0, p.height - p.patch),
        pick_col(0, p.width - p.patch);
    std::vector<float> patch(s);
    for (std::size_t tries = 0;
         patches.size() < options.gmm_patches * s && tries < 20 * options.gmm_patches; ++tries)
        if (detail::read_patch(p, data, pick_image(rng), pick_row(rng), pick_col(rng), patch))
            patches.insert(patches.end(), patch.begin(), patch.end());
    const std::size_t n = patches.size() / s;
    if (n < std::size_t(m))
        throw training_error("tmm: GMM initialisation found only " + std::to_string(n) +
                             " fully observed patches for " + std::to_string(m) + " components");
    auto row = [&](std::size_t i) { return std::span<const float>(patches.data() + i * s, s); };

    // k-means++ seeding on a subsample
    const std::size_t seed_n = std::min<std::size_t>(n, 20000);
    std::vector<float> centres(std::size_t(m) * s);
    std::vector<float> best(seed_n, std::numeric_limits<float>::infinity());
    std::size_t first = std::uniform_int_distribution<std::size_t>(0, seed_n - 1)(rng);
    std::copy_n(row(first).begin(), s, centres.begin());
    for (int c = 1; c < m; ++c) {
        const std::span<const float> last(centres.data() + std::size_t(c - 1) * s, s);
        double total = 0;
        for (std::size_t i = 0; i < seed_n; ++i) {
            best[i] = std::min(best[i], detail::squared_distance(row(i), last));
            total += best[i];
        }
        std::size_t chosen = 0;
        if (total > 0) {
            double target = std::uniform_real_distribution<double>(0, total)(rng);
            for (chosen = 0; chosen + 1 < seed_n && (target -= best[chosen]) > 0; ++chosen) {
            }
        } else {
            chosen = std::uniform_int_distribution<std::size_t>(0, seed_n - 1)(rng);
        }
        std::copy_n(row(chosen).begin(), s, centres.begin() + std::size_t(c) * s);
    }
    auto nearest = [&](std::span<const float> x) {
        int arg = 0;
        float d = std::numeric_limits<float>::infinity();
        for (int c = 0; c < m; ++c) {
            const float e =
                detail::squared_distance(x, {centres.data() + std::size_t(c) * s, std::size_t(s)});
            if (e < d) d = e, arg = c;
        }
        return arg;
    };

    // mini-batch k-means: per-centre learning rate 1 / (points seen)
    std::vector<double> seen(m, 0.0);
    std::uniform_int_distribution<std::size_t> pick(0, n - 1);
    for (std::size_t it = 0; it < options.gmm_kmeans_iterations; ++it)
        for (int b = 0; b < 1024; ++b) {
            const auto x = row(pick(rng));
            const int c = nearest(x);
            const float rate = float(1.0 / ++seen[c]);
            for (int k = 0; k < s; ++k) centres[c * s + k] += rate * (x[k] - centres[c * s + k]);
        }

    // hard EM: start from unit-free variances around the k-means centres
    const float floor = float(options.variance_floor);
    std::vector<float> var(std::size_t(m) * s, 0.01f), logw(m, -std::log(float(m)));
    std::vector<int> assign(n);
    for (std::size_t epoch = 0; epoch < options.gmm_em_epochs; ++epoch) {
        for (std::size_t i = 0; i < n; ++i) {
            const auto x = row(i);
            float top = -std::numeric_limits<float>::infinity();
            for (int c = 0; c < m; ++c) {
                float l = logw[c];
                for (int k = 0; k < s; ++k) {
                    const float v = var[c * s + k], d = x[k] - centres[c * s + k];
                    l -= 0.5f * (std::log(v) + d * d / v);
                }
                if (l > top) top = l, assign[i] = c;
            }
        }
        std::vector<double> count(m, 0.0), sum(std::size_t(m) * s, 0.0),
            sq(std::size_t(m) * s, 0.0);
        for (std::size_t i = 0; i < n; ++i) {
            const int c = assign[i];
            count[c] += 1;
            for (int k = 0; k < s; ++k) {
                sum[c * s + k] += row(i)[k];
                sq[c * s + k] += double(row(i)[k]) * row(i)[k];
            }
        }
        for (int c = 0; c < m; ++c) {
            if (count[c] == 0) continue;  // an empty component keeps its previous fit
            logw[c] = float(std::log(count[c] / double(n)));
            for (int k = 0; k < s; ++k) {
                const double mean = sum[c * s + k] / count[c];
                centres[c * s + k] = float(mean);
                var[c * s + k] = std::max(floor, float(sq[c * s + k] / count[c] - mean * mean));
            }
        }
    }
    for (std::size_t i = 0; i < centres.size(); ++i) {
        theta.mean[i] = centres[i];
        theta.log_precision[i] = -std::log(var[i]);
    }
}

// Conv weights from a flat Dirichlet: theta = log of Exp(1) draws (softmax normalises them).
inline void initialize_weights(const plan& p, parameters<float>& theta, std::uint64_t seed) {
    std::mt19937_64 rng(seed ^ 0xbb67ae8584caa73bULL);
    std::exponential_distribution<double> draw(1.0);
    for (std::size_t l = 0; l < p.layers.size(); ++l)
        for (float& t : theta.theta[l]) t = float(std::log(draw(rng)));
}

// Cross-entropy + beta * (-log P(X)) for a batch of class log-likelihoods: writes the
// gradient with respect to them into dout and returns the mean loss.
template <class T>
double classification_loss(std::span<const T> out, std::span<const int> labels,
                           std::span<const T> log_prior, double beta, std::span<T> dout) {
    const std::size_t k = log_prior.size(), count = labels.size();
    std::vector<T> joint(k);
    double loss = 0;
    for (std::size_t b = 0; b < count; ++b) {
        for (std::size_t y = 0; y < k; ++y) joint[y] = out[b * k + y] + log_prior[y];
        const T lse = log_sum_exp(std::span<const T>(joint));
        // cross-entropy: lse - joint[y_b]; generative: -lse
        loss += double(lse - joint[labels[b]]) - beta * double(lse);
        for (std::size_t y = 0; y < k; ++y) {
            const T posterior = std::exp(joint[y] - lse);
            dout[b * k + y] = T((posterior - (int(y) == labels[b] ? 1.0 : 0.0) - beta * posterior) /
                                double(count));
        }
    }
    return loss / double(count);
}

// Nadam with the bias corrections of Dozat (2016), one state per parameter array. The
// update is elementwise, vectorised and split over threads; the result does not depend on how.
class nadam {
  public:
    explicit nadam(const training_options& o) : options_(o) {}

    // One step on `value` with gradient `grad` plus that of decay * exp(value)^2.
    void step(std::vector<float>& value, const std::vector<float>& grad, std::size_t slot,
              double rate, std::size_t t, double decay = 0.0) {
        if (first_.size() <= slot) first_.resize(slot + 1), second_.resize(slot + 1);
        auto& m = first_[slot];
        auto& v = second_[slot];
        if (m.size() != value.size()) m.assign(value.size(), 0.0f), v.assign(value.size(), 0.0f);
        const double b1 = options_.beta1, b2 = options_.beta2;
        const double c1 = 1.0 - std::pow(b1, double(t)),
                     c1_next = 1.0 - std::pow(b1, double(t + 1));
        const double c2 = 1.0 - std::pow(b2, double(t));
        const float fb1 = float(b1), fb2 = float(b2), momentum = float(b1 / c1_next),
                    current = float((1 - b1) / c1), scale = float(1.0 / c2),
                    step_rate = float(rate), eps = float(options_.epsilon),
                    decay2 = float(2.0 * decay);
        // m_hat = b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t);  v_hat = v / (1 - b2^t)
        auto update = [](auto th, auto g, auto mi, auto vi, auto& th_out, auto& m_out, auto& v_out,
                         const auto& c) {
            using std::exp, std::sqrt, tmm::detail::exp, xsimd::sqrt;
            if (c.decay) g = g + c.decay2 * exp(th + th);  // d/dtheta decay exp(theta)^2
            m_out = c.b1 * mi + c.one_minus_b1 * g;
            v_out = c.b2 * vi + c.one_minus_b2 * g * g;
            const auto m_hat = c.momentum * m_out + c.current * g;
            th_out = th - c.step_rate * m_hat / (sqrt(v_out * c.scale) + c.eps);
        };
        // The constants, as floats and as vectors: the task copies them into registers, once
        // (read through the captures, they were loaded again for every vector: the stores to
        // the arrays might have changed them, as far as the compiler knew).
        using batch = xsimd::batch<float>;
        step_constants<float> scalars{fb1,   1.0f - fb1, fb2, 1.0f - fb2, momentum,      current,
                                      scale, step_rate,  eps, decay2,     decay2 != 0.0f};
        const std::size_t n = value.size(), chunk = 16384;
        tbb::parallel_for(std::size_t(0), (n + chunk - 1) / chunk, [&](std::size_t c) {
            const step_constants<batch> vectors = scalars.template as<batch>();
            float* const th = value.data();
            const float* const gr = grad.data();
            float* const mp = m.data();
            float* const vp = v.data();
            const std::size_t begin = c * chunk, end = std::min(n, begin + chunk);
            std::size_t i = begin;
            for (; i + batch::size <= end; i += batch::size) {
                batch th_out, m_out, v_out;
                update(batch::load_unaligned(th + i), batch::load_unaligned(gr + i),
                       batch::load_unaligned(mp + i), batch::load_unaligned(vp + i), th_out, m_out,
                       v_out, vectors);
                th_out.store_unaligned(th + i);
                m_out.store_unaligned(mp + i);
                v_out.store_unaligned(vp + i);
            }
            for (; i < end; ++i) update(th[i], gr[i], mp[i], vp[i], th[i], mp[i], vp[i], scalars);
        });
    }

  private:
    template <class T>
    struct step_constants {
        T b1, one_minus_b1, b2, one_minus_b2, momentum, current, scale, step_rate, eps, decay2;
        bool decay;
        template <class U>
        step_constants<U> as() const {
            return {U(b1),    U(one_minus_b1), U(b2),  U(one_minus_b2), U(momentum), U(current),
                    U(scale), U(step_rate),    U(eps), U(decay2),       decay};
        }
    };
    training_options options_;
    std::vector<std::vector<float>> first_, second_;
};

// The layer whose output positions training marginalises at random: options.marginalized_layer
// when set, otherwise the output of the first pooling layer that leaves more than one
// position. p.layers.size() when there is none (a CP model).
inline std::size_t marginalized_level(const plan& p, const training_options& options = {}) {
    if (options.marginalized_layer != std::size_t(-1)) return options.marginalized_layer;
    std::size_t inner = 0;
    while (inner < p.layers.size() &&
           (p.layers[inner].kind != layer_kind::pool || p.layers[inner].out_positions() == 1))
        ++inner;
    return inner;
}

// The optimiser's rate at 0-based `iteration`: constant for the first decay_start of the run,
// then linear down to 0.
inline double learning_rate_at(const training_options& options, std::size_t iteration) {
    const double progress =
        double(iteration) / double(std::max<std::size_t>(1, options.iterations));
    return progress < options.decay_start
               ? options.learning_rate
               : options.learning_rate * (1.0 - progress) / (1.0 - options.decay_start);
}

// One step of the recipe on a prepared batch (its random marginalisation already in `x`):
// gradients of the loss, then Nadam on every conv layer (and on the leaves when they are
// trained, under the variance floor). `iteration` is 0-based. Returns the batch's loss.
template <class Backend>
double training_step(const plan& p, parameters<float>& theta, const observations<float>& x,
                     std::span<const int> labels, const training_options& options, nadam& optimiser,
                     parameters<float>& grad, std::size_t iteration) {
    double loss = 0;
    Backend::gradients(
        p, theta, x,
        [&](std::span<const float> out, std::span<float> dout) {
            loss = classification_loss<float>(out, labels, theta.log_prior,
                                              options.generative_weight, dout);
        },
        grad, options.train_leaves);
    if (!std::isfinite(loss))
        throw training_error("tmm: the loss became non-finite (" + std::to_string(loss) +
                             ") at iteration " + std::to_string(iteration));
    const double rate = learning_rate_at(options, iteration);
    for (std::size_t l = 0; l < theta.theta.size(); ++l)
        optimiser.step(theta.theta[l], grad.theta[l], 3 + l, rate, iteration + 1,
                       options.weight_decay);
    if (options.train_leaves) {
        const double leaf_rate = rate * options.leaf_rate_scale;
        optimiser.step(theta.mean, grad.mean, 0, leaf_rate, iteration + 1);
        optimiser.step(theta.log_precision, grad.log_precision, 1, leaf_rate, iteration + 1);
        optimiser.step(theta.logits, grad.logits, 2, leaf_rate, iteration + 1);
        // the variance floor: precision = exp(log_precision) <= 1 / floor
        const float log_precision_cap = float(-std::log(options.variance_floor));
        for (float& r : theta.log_precision) r = std::min(r, log_precision_cap);
    }
    return loss;
}

// Trains `theta` in place from its current values. Same seed and backend give the same model.
template <class Backend>
void train(const plan& p, parameters<float>& theta, const labelled_images& data,
           const training_options& options) {
    if (data.count == 0) throw training_error("tmm: the training set is empty");
    if (options.batch == 0) throw training_error("tmm: the batch size must be at least 1");
    for (std::size_t i = 0; i < data.count; ++i)
        if (data.labels[i] < 0 || data.labels[i] >= p.classes)
            throw training_error("tmm: label " + std::to_string(data.labels[i]) + " of image " +
                                 std::to_string(i) + " is outside [0, " +
                                 std::to_string(p.classes) + ")");

    std::mt19937_64 rng(options.seed);
    std::vector<std::size_t> order(data.count);
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::shuffle(order.begin(), order.end(), rng);
    std::size_t cursor = 0;

    const std::size_t pixels = p.pixels(), batch = std::min(options.batch, data.count);
    std::bernoulli_distribution keep(options.pixel_keep), keep_position(options.position_keep);
    const std::size_t inner = marginalized_level(p, options);
    const bool drop_positions = options.position_keep < 1.0 && inner < p.layers.size();
    const std::size_t inner_positions = drop_positions ? p.layers[inner].out_positions() : 0;
    // A step's batch: its images, labels, random mask of pixels and of positions. Each is drawn
    // while the step before it trains (a task in the same thread pool, taken up where the
    // step's tasks leave a thread idle), from the one random stream in the same order.
    struct drawn_batch {
        std::vector<float> values;
        std::vector<std::uint8_t> observed, kept_positions;
        std::vector<int> labels;
    };
    drawn_batch batches[2];
    for (drawn_batch& d : batches) {
        d.values.resize(batch * pixels);
        d.observed.resize(batch * pixels);
        d.kept_positions.resize(batch * inner_positions);
        d.labels.resize(batch);
    }
    const auto draw = [&](drawn_batch& d) {
        for (std::size_t b = 0; b < batch; ++b) {
            if (cursor == data.count) std::shuffle(order.begin(), order.end(), rng), cursor = 0;
            const std::size_t image = order[cursor++];
            d.labels[b] = data.labels[image];
            std::copy_n(data.values.begin() + image * pixels, pixels,
                        d.values.begin() + b * pixels);
            for (std::size_t j = 0; j < pixels; ++j) {
                const bool seen = data.observed.empty() || data.observed[image * pixels + j];
                d.observed[b * pixels + j] = seen && (options.pixel_keep >= 1.0 || keep(rng));
            }
        }
        for (auto& k : d.kept_positions) k = keep_position(rng);
    };
    parameters<float> grad;
    nadam optimiser(options);

    const auto start = std::chrono::steady_clock::now();
    double loss_sum = 0;
    std::size_t loss_count = 0;

    if (options.iterations > 0) draw(batches[0]);
    tbb::task_group drawing;
    struct waits_for_draw {  // (also when a step throws)
        tbb::task_group& task;
        ~waits_for_draw() { task.wait(); }
    } pending{drawing};
    for (std::size_t it = 0; it < options.iterations; ++it) {
        const drawn_batch& current = batches[it % 2];
        if (it + 1 < options.iterations)
            drawing.run([&draw, &next = batches[(it + 1) % 2]] { draw(next); });
        observations<float> x;
        x.count = batch;
        x.values = current.values;
        x.observed = current.observed;
        if (drop_positions) x.marginalized_layer = inner, x.kept_positions = current.kept_positions;
        const double loss =
            training_step<Backend>(p, theta, x, current.labels, options, optimiser, grad, it);
        drawing.wait();

        loss_sum += loss;
        ++loss_count;
        if (options.on_progress &&
            ((it + 1) % std::max<std::size_t>(1, options.progress_every) == 0 ||
             it + 1 == options.iterations)) {
            const double elapsed =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            training_progress report;
            report.iteration = it + 1;
            report.iterations = options.iterations;
            report.loss = loss_sum / double(loss_count);
            report.elapsed_seconds = elapsed;
            report.images_per_second = double((it + 1) * batch) / std::max(elapsed, 1e-9);
            report.remaining_seconds =
                elapsed / double(it + 1) * double(options.iterations - it - 1);
            options.on_progress(report);
            loss_sum = 0;
            loss_count = 0;
        }
    }
}

// The whole recipe: GMM fit of the Gaussians, Dirichlet conv weights, then training.
template <class Backend>
void fit(const plan& p, parameters<float>& theta, const labelled_images& data,
         const training_options& options) {
    fit_gaussians(p, theta, data, options);
    initialize_weights(p, theta, options.seed);
    train<Backend>(p, theta, data, options);
}

}  // namespace tmm

#include "../detail/xsimd_warnings_pop.hpp"
