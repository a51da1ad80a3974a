// Generation from a trained model, reading the network as the latent tree it is (design.md
// §5): every channel of every position is a value of a hidden variable, a conv layer's
// weights W[g, a] are the probabilities that parent channel g gives its child the value a,
// and a product pooling hands its channel to every member of its window. Going down the
// tree from the class draws an instance (ancestral sampling); weighting each choice by the
// child's upward value conditions on observed pixels; max instead of sum upward and argmax
// instead of drawing downward gives the most probable explanation; passing posterior
// probabilities down gives each position's posterior over the mixing components, hence the
// conditional mean of every missing pixel.
//
// One image is processed at a time (in parallel over images with oneTBB), so memory is the
// images plus the parameters plus one upward pass per worker thread. The upward pass comes
// from a backend policy (`upward_pass`): the reference backend supplies it for any T, the CPU
// backend for float.
#pragma once

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backends/reference/reference.hpp"
#include "observations.hpp"
#include "parameters.hpp"
#include "plan.hpp"
#include "semiring.hpp"

namespace tmm {

// ---- random numbers, identical on every standard library ----

// std::mt19937_64 is specified exactly by the standard; its distributions are not, so the
// uniform, normal and categorical draws are written here: a uniform double from the top 53
// bits, a normal by Box-Muller, a categorical by inverting the cumulative weights.
class random_source {
  public:
    explicit random_source(std::uint64_t seed) : engine_(seed) {}

    // Uniform in [0, 1).
    double uniform() { return double(engine_() >> 11) * 0x1.0p-53; }

    // Standard normal (Box-Muller; one draw per pair of uniforms, u1 in (0, 1]).
    double normal() {
        const double u1 = 1.0 - uniform(), u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
    }

    // An index drawn with probability proportional to exp(log_weights[i]); -1 when every
    // weight is zero (the caller says what that means).
    template <class T>
    int choose(std::span<const T> log_weights) {
        const T top = *std::max_element(log_weights.begin(), log_weights.end());
        if (top == -std::numeric_limits<T>::infinity()) return -1;
        double total = 0;
        for (T w : log_weights) total += std::exp(double(w - top));
        double u = uniform() * total;
        int last = -1;
        for (std::size_t i = 0; i < log_weights.size(); ++i) {
            const double w = std::exp(double(log_weights[i] - top));
            if (w == 0.0) continue;
            last = int(i);
            if (u < w) return last;
            u -= w;
        }
        return last;  // rounding ran past the end: the last index with weight
    }

  private:
    std::mt19937_64 engine_;
};

// The seed of item `item` (a sample, an image) of a run seeded with `seed`: a splitmix64
// mix, so that every item has its own stream and results do not depend on the threads.
inline std::uint64_t item_seed(std::uint64_t seed, std::uint64_t item) {
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (item + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// ---- the backend policy that supplies the upward pass ----

// A backend that can compute every layer's log-values for one image, in the sum-product or
// max-product semiring (backends::reference does for any T, backends::cpu for float). The
// prepared parameters are named upward_prepared: a backend may have its own `prepared`.
template <class B, class T>
concept upward_pass = requires(const plan& p, const parameters<T>& theta,
                               const typename B::template upward_prepared<T>& prep,
                               const observations<T>& x, std::vector<std::vector<T>>& values) {
    { B::prepare(p, theta) } -> std::same_as<typename B::template upward_prepared<T>>;
    B::layer_values(p, theta, prep, x, std::size_t{0}, values, semiring::sum_product);
};

// ---- latent assignments ----

// One value of every hidden variable: the class, and the channel at every position of every
// layer. channels[0][i] is the mixing component d_i of position i; channels[l + 1][j] the
// channel of layer l's output at position j (-1 outside a neuron's subtree).
struct latent_assignment {
    int label = -1;
    std::vector<std::vector<int>> channels;
};

// How missing pixels are filled: drawn from the posterior, the most probable explanation
// (the mode of each chosen component), or their expected value under the posterior.
enum class completion { sample, most_probable, mean };

// A plan and its parameters prepared for generation; every query works on one image.
template <class T, class Upward = backends::reference>
requires upward_pass<Upward, T>
class latent_tree {
  public:
    using values = std::vector<std::vector<T>>;  // every layer's log-values for one image

    latent_tree(const plan& p, const parameters<T>& theta)
        : plan_(p), theta_(theta), prepared_(Upward::prepare(p, theta)) {
        for (std::size_t l = 0; l < p.layers.size(); ++l)
            log_weights_.push_back(p.layers[l].kind == layer_kind::conv
                                       ? log_weights(p.layers[l], theta.theta[l])
                                       : std::vector<T>{});
        for (const auto& lw : log_weights_) {
            weights_.emplace_back(lw.size());
            for (std::size_t i = 0; i < lw.size(); ++i)
                weights_.back()[i] = std::exp(double(lw[i]));
        }
        if (p.leaves == leaf_kind::categorical) {
            const std::size_t v = p.values;
            leaf_.resize(theta.logits.size());
            for (std::size_t r = 0; r * v < leaf_.size(); ++r) {
                const std::span<const T> row(theta.logits.data() + r * v, v);
                const T norm = log_sum_exp(row);
                for (std::size_t i = 0; i < v; ++i) leaf_[r * v + i] = row[i] - norm;
            }
        }
    }

    const plan& structure() const { return plan_; }

    // Throws input_error unless `label` names a class of the model.
    void check_label(std::optional<int> label) const {
        if (label && (*label < 0 || *label >= plan_.classes))
            throw input_error("tmm: class " + std::to_string(*label) + " is out of range; the " +
                              "model has classes 0.." + std::to_string(plan_.classes - 1));
    }

    // The upward pass of image `b` of `x` (validated by the caller).
    void upward(const observations<T>& x, std::size_t b, semiring combine, values& v) const {
        Upward::layer_values(plan_, theta_, prepared_, x, b, v, combine);
    }

    // The upward pass of an image with every pixel missing: the prior alone.
    void upward_of_nothing(semiring combine, values& v) const {
        const std::vector<T> pixels(std::size_t(plan_.pixels()), T(0));
        const std::vector<std::uint8_t> none(pixels.size(), 0);
        upward(observations<T>(1, pixels, none), 0, combine, v);
    }

    // Ancestral sampling from the posterior given the upward values `v` (sum-product): the
    // class, then each conv choice a with probability W[g, a] exp(in[a]) / exp(out[g]).
    latent_assignment draw(const values& v, std::optional<int> label, random_source& rng) const {
        return descend(v, label, [&](std::span<const T> w) { return rng.choose(w); });
    }

    // The most probable explanation given max-product upward values `v`: every choice is an
    // argmax (the first one on ties).
    latent_assignment most_probable(const values& v, std::optional<int> label) const {
        return descend(v, label, [](std::span<const T> w) {
            const auto best = std::max_element(w.begin(), w.end());
            return *best == -std::numeric_limits<T>::infinity() ? -1 : int(best - w.begin());
        });
    }

    // P(d_i = d | observed), positions x M, from sum-product upward values `v`: posterior
    // probabilities passed down, q_in[j, a] = sum_g q_out[j, g] W[g, a] exp(in[j, a] - out[j, g]),
    // and unchanged through a pooling.
    std::vector<T> component_posteriors(const values& v, std::optional<int> label) const {
        check_label(label);
        const std::size_t top = plan_.layers.size();
        std::vector<T> q(plan_.classes, T(0));
        if (label) {
            if (v.back()[*label] == -std::numeric_limits<T>::infinity()) throw impossible();
            q[*label] = T(1);
        } else {
            const std::vector<T> w = class_weights(v);
            const T norm = log_sum_exp(std::span<const T>(w));
            if (norm == -std::numeric_limits<T>::infinity()) throw impossible();
            for (int y = 0; y < plan_.classes; ++y) q[y] = std::exp(w[y] - norm);
        }
        for (std::size_t l = top; l-- > 0;) {
            const layer& ly = plan_.layers[l];
            std::vector<T> below(v[l].size(), T(0));
            if (ly.kind == layer_kind::pool) {
                ly.for_each_member([&](int w, int j) {
                    for (int g = 0; g < ly.out_channels; ++g)
                        below[j * ly.in_channels + g] = q[w * ly.out_channels + g];
                });
            } else {
                pass_posteriors_down(l, v, q, below);
            }
            q = std::move(below);
        }
        return q;
    }

    // Writes image `b` of `x` into `out` (plan.pixels() values): observed values unchanged,
    // each missing one as fill(i, k) for coordinate k of the patch at position i.
    template <class Fill>
    void fill_missing(const observations<T>& x, std::size_t b, std::span<T> out,
                      const Fill& fill) const {
        const int s = plan_.patch_size();
        for (int i = 0; i < plan_.positions(); ++i)
            for (int k = 0; k < s; ++k) {
                const int pixel = plan_.pixel_of(i, k);
                if (pixel < 0) continue;
                const std::size_t index = b * plan_.pixels() + pixel;
                out[pixel] = x.is_observed(index) ? x.values[index] : fill(i, k);
            }
    }

    // Each missing value filled from the leaves: drawn from the component that `z` chose for
    // its patch, or that component's mode.
    void fill_from(const latent_assignment& z, const observations<T>& x, std::size_t b,
                   std::span<T> out, completion how, random_source* rng) const {
        const int s = plan_.patch_size();
        fill_missing(x, b, out, [&](int i, int k) {
            const std::size_t at = std::size_t(z.channels[0][i]) * s + k;
            return how == completion::sample ? draw_coordinate(at, *rng) : mode(at);
        });
    }

    // Each missing value replaced by its expected value E[x_k | observed] =
    // sum_d P(d_i = d | observed) E[x_k | d] (posteriors from component_posteriors); a patch's
    // coordinates are independent given its component.
    void fill_means(std::span<const T> posteriors, const observations<T>& x, std::size_t b,
                    std::span<T> out) const {
        const int s = plan_.patch_size(), m = plan_.components;
        fill_missing(x, b, out, [&](int i, int k) {
            T sum = 0;
            for (int d = 0; d < m; ++d)
                sum += posteriors[std::size_t(i) * m + d] * mean_of(std::size_t(d) * s + k);
            return sum;
        });
    }

    // The most likely subtrees below layer `layer_index` when nothing is observed, for the
    // neurons asked for: channel_of_position[j] is the channel of position j of that layer's
    // output, or -1 for none. Choices are argmaxes on `prior_max`, the max-product values of
    // the prior (upward_of_nothing); channels outside the subtrees are -1. Subtrees of
    // different positions are disjoint, so asking for several at once answers each exactly.
    latent_assignment most_likely_subtrees(const values& prior_max, int layer_index,
                                           std::vector<int> channel_of_position) const {
        check_neuron(layer_index, 0, 0);
        const layer& ly = plan_.layers[layer_index];
        if (channel_of_position.size() != std::size_t(ly.out_positions()))
            throw input_error("tmm: layer " + std::to_string(layer_index) + " has " +
                              std::to_string(ly.out_positions()) + " positions, got " +
                              std::to_string(channel_of_position.size()) + " channels");
        for (std::size_t j = 0; j < channel_of_position.size(); ++j)
            if (channel_of_position[j] >= 0)
                check_neuron(layer_index, int(j), channel_of_position[j]);
        latent_assignment z;
        z.channels.resize(plan_.layers.size() + 1);
        z.channels[layer_index + 1] = std::move(channel_of_position);
        descend_from(prior_max, layer_index, z, [](std::span<const T> w) {
            return int(std::max_element(w.begin(), w.end()) - w.begin());
        });
        return z;
    }

    // The most likely subtree of the single neuron (layer, position, channel).
    latent_assignment most_likely_subtree(int layer_index, int position, int channel) const {
        check_neuron(layer_index, position, channel);
        values v;
        upward_of_nothing(semiring::max_product, v);
        std::vector<int> asked(plan_.layers[layer_index].out_positions(), -1);
        asked[position] = channel;
        return most_likely_subtrees(v, layer_index, std::move(asked));
    }

    // Throws input_error unless (layer, position, channel) names a neuron of the network.
    void check_neuron(int layer_index, int position, int channel) const {
        const int layers = int(plan_.layers.size());
        if (layer_index < 0 || layer_index >= layers)
            throw input_error("tmm: layer " + std::to_string(layer_index) +
                              " is out of range; the network has layers 0.." +
                              std::to_string(layers - 1));
        const layer& ly = plan_.layers[layer_index];
        if (position < 0 || position >= ly.out_positions())
            throw input_error("tmm: position " + std::to_string(position) + " is out of range; " +
                              "layer " + std::to_string(layer_index) + " has positions 0.." +
                              std::to_string(ly.out_positions() - 1));
        if (channel < 0 || channel >= ly.out_channels)
            throw input_error("tmm: channel " + std::to_string(channel) + " is out of range; " +
                              "layer " + std::to_string(layer_index) + " has channels 0.." +
                              std::to_string(ly.out_channels - 1));
    }

    // The image a (partial) assignment draws from its chosen components' modes: pixels under
    // positions with a component are covered, the others stay 0 and uncovered.
    void fill_modes(const latent_assignment& z, std::span<T> values_out,
                    std::span<std::uint8_t> covered) const {
        const int s = plan_.patch_size();
        for (int i = 0; i < plan_.positions(); ++i) {
            const int d = z.channels[0][i];
            for (int k = 0; k < s; ++k)
                if (const int pixel = plan_.pixel_of(i, k); pixel >= 0) {
                    values_out[pixel] = d >= 0 ? mode(std::size_t(d) * s + k) : T(0);
                    covered[pixel] = d >= 0;
                }
        }
    }

  private:
    plan plan_;
    parameters<T> theta_;
    typename Upward::template upward_prepared<T> prepared_;
    std::vector<std::vector<T>> log_weights_;
    std::vector<std::vector<double>> weights_;  // W = exp(log W), for the posterior pass
    std::vector<T> leaf_;                       // categorical leaves: log P(x_k = v | d), M x s x V

    static input_error impossible() {
        return input_error(
            "tmm: the observed values have probability zero under the model (every "
            "explanation is impossible); nothing can be drawn or completed");
    }

    std::vector<T> class_weights(const values& v) const {
        std::vector<T> w(plan_.classes);
        for (int y = 0; y < plan_.classes; ++y) w[y] = theta_.log_prior[y] + v.back()[y];
        return w;
    }

    // q_in[j, a] = sum_g q_out[j, g] W[g, a] exp(in[j, a] - out[j, g]) for conv layer l,
    // factored with m = max_a in[j, a] as exp(in[j, a] - m) sum_g (q_out[j, g]
    // exp(m - out[j, g])) W[g, a]: one exp per channel instead of one per pair, in double.
    // out <= m always (the weights sum to one), so the factor only grows; beyond e^600 that
    // parent's terms are summed pair by pair instead.
    void pass_posteriors_down(std::size_t l, const values& v, const std::vector<T>& q,
                              std::vector<T>& below) const {
        const layer& ly = plan_.layers[l];
        const int ic = ly.in_channels, oc = ly.out_channels;
        std::vector<double> sum(ic);
        for (int j = 0; j < ly.in_positions(); ++j) {
            const std::size_t set = ly.set_of_position[j];
            const T* in = v[l].data() + std::size_t(j) * ic;
            const T* lw = log_weights_[l].data() + set * oc * ic;
            const double* w = weights_[l].data() + set * oc * ic;
            const T m = *std::max_element(in, in + ic);
            if (m == -std::numeric_limits<T>::infinity()) continue;  // no child possible
            std::fill(sum.begin(), sum.end(), 0.0);
            for (int g = 0; g < oc; ++g) {
                const T mass = q[j * oc + g], out = v[l + 1][j * oc + g];
                if (mass == T(0) || out == -std::numeric_limits<T>::infinity()) continue;
                const double shift = double(m) - double(out);
                if (shift > 600.0) {
                    for (int a = 0; a < ic; ++a)
                        below[j * ic + a] += mass * std::exp(lw[g * ic + a] + in[a] - out);
                    continue;
                }
                const double factor = double(mass) * std::exp(shift);
                for (int a = 0; a < ic; ++a) sum[a] += factor * w[g * ic + a];
            }
            for (int a = 0; a < ic; ++a)
                below[j * ic + a] += T(sum[a] * std::exp(double(in[a]) - double(m)));
        }
    }

    // The class (given, or chosen among log P(y) + out[y]), then every layer downwards.
    template <class Choose>
    latent_assignment descend(const values& v, std::optional<int> label, Choose&& choose) const {
        check_label(label);
        latent_assignment z;
        const std::vector<T> w = class_weights(v);
        z.label = label ? *label : choose(std::span<const T>(w));
        // given the class, its prior does not matter (P(X | y) of a class of prior 0 is fine)
        if (z.label < 0 ||
            (label ? v.back()[z.label] : w[z.label]) == -std::numeric_limits<T>::infinity())
            throw impossible();
        z.channels.resize(plan_.layers.size() + 1);
        z.channels.back() = {z.label};
        descend_from(v, int(plan_.layers.size()) - 1, z, choose);
        return z;
    }

    // Fills z.channels[0..top] from z.channels[top + 1]: a pooling hands its channel to its
    // members; a conv at position j with parent channel g chooses a among
    // log W[g, a] + in[j, a]. A parent of -1 (outside a subtree) leaves its children at -1.
    template <class Choose>
    void descend_from(const values& v, int top, latent_assignment& z, Choose&& choose) const {
        std::vector<T> terms;
        for (int l = top; l >= 0; --l) {
            const layer& ly = plan_.layers[l];
            const std::vector<int>& parent = z.channels[l + 1];
            std::vector<int>& child = z.channels[l];
            child.assign(ly.in_positions(), -1);
            if (ly.kind == layer_kind::pool) {
                ly.for_each_member([&](int w, int j) { child[j] = parent[w]; });
                continue;
            }
            const int ic = ly.in_channels, oc = ly.out_channels;
            terms.resize(ic);
            for (int j = 0; j < ly.in_positions(); ++j) {
                const int g = parent[j];
                if (g < 0) continue;
                const T* lw =
                    log_weights_[l].data() + (std::size_t(ly.set_of_position[j]) * oc + g) * ic;
                for (int a = 0; a < ic; ++a) terms[a] = lw[a] + v[l][j * ic + a];
                child[j] = choose(std::span<const T>(terms));
                if (child[j] < 0) throw impossible();
            }
        }
    }

    T mean_of(std::size_t at) const {
        if (plan_.leaves == leaf_kind::gaussian) return theta_.mean[at];
        T sum = 0;
        for (int s = 0; s < plan_.values; ++s) sum += T(s) * std::exp(leaf_[at * plan_.values + s]);
        return sum;
    }

    T mode(std::size_t at) const {
        if (plan_.leaves == leaf_kind::gaussian) return theta_.mean[at];
        const auto row = leaf_.begin() + std::ptrdiff_t(at * plan_.values);
        return T(std::max_element(row, row + plan_.values) - row);
    }

    T draw_coordinate(std::size_t at, random_source& rng) const {
        if (plan_.leaves == leaf_kind::gaussian)
            return T(theta_.mean[at] +
                     rng.normal() / std::sqrt(std::exp(double(theta_.log_precision[at]))));
        return T(rng.choose(std::span<const T>(leaf_.data() + at * plan_.values, plan_.values)));
    }
};

// ---- whole batches ----

namespace detail {

// Calls f(item, values&) for every item in [0, count), in parallel, one upward buffer per
// task.
template <class T, class F>
void for_each_item(std::size_t count, F&& f) {
    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, count, 1),
                      [&](const tbb::blocked_range<std::size_t>& range) {
                          std::vector<std::vector<T>> v;
                          for (std::size_t n = range.begin(); n != range.end(); ++n) f(n, v);
                      });
}

}  // namespace detail

// What a drawn instance shows in each patch: values drawn from the chosen component (a true
// sample), or that component's mode (the drawn hidden variables without the leaves' noise).
enum class patch_values { drawn, modes };

// `count` instances drawn from the model, count x plan.pixels() values: from P(X | y) when a
// class is given, from P(X) otherwise. Sample n uses the stream item_seed(seed, n).
template <class Upward = backends::reference, class T>
requires upward_pass<Upward, T> std::vector<T> sample(const plan& p, const parameters<T>& theta,
                                                      std::size_t count, std::optional<int> label,
                                                      std::uint64_t seed,
                                                      patch_values shown = patch_values::drawn) {
    const latent_tree<T, Upward> tree(p, theta);
    tree.check_label(label);
    std::vector<std::vector<T>> prior;
    tree.upward_of_nothing(semiring::sum_product, prior);
    const std::size_t pixels = p.pixels();
    std::vector<T> out(count * pixels);
    const std::vector<T> none_values(pixels, T(0));
    const std::vector<std::uint8_t> none(pixels, 0);
    const observations<T> nothing(1, none_values, none);
    detail::for_each_item<T>(count, [&](std::size_t n, std::vector<std::vector<T>>&) {
        random_source rng(item_seed(seed, n));
        const latent_assignment z = tree.draw(prior, label, rng);
        tree.fill_from(
            z, nothing, 0, std::span<T>(out).subspan(n * pixels, pixels),
            shown == patch_values::drawn ? completion::sample : completion::most_probable, &rng);
    });
    return out;
}

// Every image of `x` with its missing values filled in (observed values copied unchanged),
// count x plan.pixels(): drawn from P(missing | observed), the most probable explanation,
// or the conditional mean. With a class, everything is conditioned on it too. Image n of a
// draw uses the stream item_seed(seed, n).
template <class Upward = backends::reference, class T>
requires upward_pass<Upward, T> std::vector<T> complete(const plan& p, const parameters<T>& theta,
                                                        const observations<T>& x, completion how,
                                                        std::uint64_t seed = 0,
                                                        std::optional<int> label = {}) {
    const latent_tree<T, Upward> tree(p, theta);
    tree.check_label(label);
    validate(p, x);
    if (!x.kept_positions.empty())
        throw input_error(
            "tmm: the batch marginalises inner positions (kept_positions), which is for "
            "training; generation conditions on pixel masks only");
    const std::size_t pixels = p.pixels();
    std::vector<T> out(x.count * pixels);
    detail::for_each_item<T>(x.count, [&](std::size_t b, std::vector<std::vector<T>>& v) {
        const std::span<T> image = std::span<T>(out).subspan(b * pixels, pixels);
        switch (how) {
            case completion::sample: {
                random_source rng(item_seed(seed, b));
                tree.upward(x, b, semiring::sum_product, v);
                tree.fill_from(tree.draw(v, label, rng), x, b, image, how, &rng);
                break;
            }
            case completion::most_probable:
                tree.upward(x, b, semiring::max_product, v);
                tree.fill_from(tree.most_probable(v, label), x, b, image, how, nullptr);
                break;
            case completion::mean:
                tree.upward(x, b, semiring::sum_product, v);
                tree.fill_means(tree.component_posteriors(v, label), x, b, image);
                break;
        }
    });
    return out;
}

// What neuron (layer, position, channel) stands for: the patch its most likely subtree
// draws (each chosen component's mode), plan.pixels() values, and which pixels its receptive
// field covers (1) or not (0, value 0).
template <class T>
struct neuron_patch {
    std::vector<T> values;
    std::vector<std::uint8_t> covered;
};

template <class T, class Upward>
neuron_patch<T> most_likely_patch(const latent_tree<T, Upward>& tree, int layer_index, int position,
                                  int channel) {
    const plan& p = tree.structure();
    neuron_patch<T> result{std::vector<T>(p.pixels(), T(0)), std::vector<std::uint8_t>(p.pixels())};
    tree.fill_modes(tree.most_likely_subtree(layer_index, position, channel), result.values,
                    result.covered);
    return result;
}

template <class Upward = backends::reference, class T>
requires upward_pass<Upward, T> neuron_patch<T> most_likely_patch(const plan& p,
                                                                  const parameters<T>& theta,
                                                                  int layer_index, int position,
                                                                  int channel) {
    return most_likely_patch(latent_tree<T, Upward>(p, theta), layer_index, position, channel);
}

// The most likely patches of channel `channel` at every position of layer `layer_index`, laid
// out where their receptive fields lie: one image per channel of a layer.
template <class T, class Upward>
neuron_patch<T> most_likely_patches(const latent_tree<T, Upward>& tree,
                                    const typename latent_tree<T, Upward>::values& prior_max,
                                    int layer_index, int channel) {
    const plan& p = tree.structure();
    tree.check_neuron(layer_index, 0, channel);
    neuron_patch<T> result{std::vector<T>(p.pixels(), T(0)), std::vector<std::uint8_t>(p.pixels())};
    const std::vector<int> every(p.layers[layer_index].out_positions(), channel);
    tree.fill_modes(tree.most_likely_subtrees(prior_max, layer_index, every), result.values,
                    result.covered);
    return result;
}

}  // namespace tmm
