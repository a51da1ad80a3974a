// The reference backend: a scalar, one-image-at-a-time evaluation of the network, written to
// be obviously right rather than fast. Every other backend is tested against it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <vector>

#include "../../observations.hpp"
#include "../../parameters.hpp"
#include "../../plan.hpp"
#include "../../semiring.hpp"

namespace tmm::backends {

struct reference {
    // K class log-likelihoods log P(X | y) for each image, count x K, missing values
    // marginalised.
    template <class T>
    static std::vector<T> log_likelihoods(const plan& p, const parameters<T>& theta,
                                          const observations<T>& x) {
        validate(p, x);
        validate(p, theta);
        const auto weights = all_log_weights(p, theta);
        const auto leaf = leaf_log_probabilities(p, theta);
        std::vector<T> out(x.count * p.classes);
        std::vector<std::vector<T>> acts;
        for (std::size_t b = 0; b < x.count; ++b) {
            forward_one(p, theta, leaf, weights, x, b, acts);
            for (int k = 0; k < p.classes; ++k) out[b * p.classes + k] = acts.back()[k];
        }
        return out;
    }

    // Runs the forward pass, asks `seed(out, dout)` for the gradient of the loss with respect
    // to the outputs (both count x K), and writes the gradient of every parameter into
    // `grad` (reshaped and overwritten). Returns the outputs. With `leaf_gradients` false the
    // leaves' gradients are left at zero (frozen leaves need none).
    template <class T, class Seed>
    static std::vector<T> gradients(const plan& p, const parameters<T>& theta,
                                    const observations<T>& x, Seed&& seed, parameters<T>& grad,
                                    bool leaf_gradients = true) {
        validate(p, x);
        validate(p, theta);
        const auto weights = all_log_weights(p, theta);
        const auto leaf = leaf_log_probabilities(p, theta);
        std::vector<std::vector<std::vector<T>>> acts(x.count);
        std::vector<T> out(x.count * p.classes);
        for (std::size_t b = 0; b < x.count; ++b) {
            forward_one(p, theta, leaf, weights, x, b, acts[b]);
            for (int k = 0; k < p.classes; ++k) out[b * p.classes + k] = acts[b].back()[k];
        }
        std::vector<T> dout(out.size(), T(0));
        seed(std::span<const T>(out), std::span<T>(dout));

        grad = zero_parameters<T>(p);
        grad.log_prior.assign(p.classes, T(0));  // not learned: no gradient
        for (std::size_t b = 0; b < x.count; ++b)
            backward_one(p, theta, leaf, weights, x, b, acts[b],
                         std::span<const T>(dout.data() + b * p.classes, p.classes), grad,
                         leaf_gradients);
        return out;
    }

    // What every image's pass needs, computed once per call: log W of every conv layer and,
    // for categorical leaves, log P(x_k = v | d).
    template <class T>
    struct prepared {
        std::vector<std::vector<T>> log_weights;
        std::vector<T> leaf;
    };
    template <class T>
    using upward_prepared = prepared<T>;  // the name generation's upward_pass looks for

    // Checks the plan and parameters, then prepares them for layer_values.
    template <class T>
    static prepared<T> prepare(const plan& p, const parameters<T>& theta) {
        if (const std::string problem = plan_problem(p); !problem.empty())
            throw input_error("tmm: the plan is inconsistent: " + problem);
        validate(p, theta);
        return {all_log_weights(p, theta), leaf_log_probabilities(p, theta)};
    }

    // Every layer's log-values for image `b` of `x` (which the caller has validated):
    // values[0] is the representation (positions x M), values[l + 1] the output of layer l.
    // In the max-product semiring each conv keeps its most probable child instead of the sum.
    template <class T>
    static void layer_values(const plan& p, const parameters<T>& theta, const prepared<T>& prep,
                             const observations<T>& x, std::size_t b,
                             std::vector<std::vector<T>>& values,
                             semiring combine = semiring::sum_product) {
        forward_one(p, theta, prep.leaf, prep.log_weights, x, b, values, combine);
    }

  private:
    static constexpr double log_two_pi = 1.8378770664093454836;

    template <class T>
    static std::vector<std::vector<T>> all_log_weights(const plan& p, const parameters<T>& theta) {
        std::vector<std::vector<T>> w(p.layers.size());
        for (std::size_t l = 0; l < p.layers.size(); ++l)
            if (p.layers[l].kind == layer_kind::conv)
                w[l] = log_weights(p.layers[l], theta.theta[l]);
        return w;
    }

    // Categorical leaves: log P(x_k = v | d), M x s x V. Empty for Gaussian leaves.
    template <class T>
    static std::vector<T> leaf_log_probabilities(const plan& p, const parameters<T>& theta) {
        if (p.leaves != leaf_kind::categorical) return {};
        std::vector<T> result(theta.logits.size());
        const std::size_t v = p.values;
        for (std::size_t r = 0; r * v < result.size(); ++r) {
            const std::span<const T> row(theta.logits.data() + r * v, v);
            const T norm = log_sum_exp(row);
            for (std::size_t i = 0; i < v; ++i) result[r * v + i] = row[i] - norm;
        }
        return result;
    }

    // log f_d(x_k) for one observed coordinate k of component d.
    template <class T>
    static T leaf_log_density(const plan& p, const parameters<T>& theta, const std::vector<T>& leaf,
                              int d, int k, T value) {
        const std::size_t s = p.patch_size();
        if (p.leaves == leaf_kind::categorical)
            return leaf[(d * s + k) * p.values + std::size_t(value)];
        const T mu = theta.mean[d * s + k], rho = theta.log_precision[d * s + k];
        const T diff = value - mu;
        return T(0.5) * (rho - T(log_two_pi)) - T(0.5) * std::exp(rho) * diff * diff;
    }

    template <class T>
    static void forward_one(const plan& p, const parameters<T>& theta, const std::vector<T>& leaf,
                            const std::vector<std::vector<T>>& weights, const observations<T>& x,
                            std::size_t b, std::vector<std::vector<T>>& acts,
                            semiring combine = semiring::sum_product) {
        const int m = p.components, s = p.patch_size();
        acts.assign(p.layers.size() + 1, {});

        // representation: rep[i, d] = sum over observed coordinates k of log f_d(x_ik)
        auto& rep = acts[0];
        rep.assign(std::size_t(p.positions()) * m, T(0));
        for (int i = 0; i < p.positions(); ++i)
            for (int k = 0; k < s; ++k) {
                const int pixel = p.pixel_of(i, k);
                if (pixel < 0) continue;  // padding: missing
                const std::size_t index = b * p.pixels() + pixel;
                if (!x.is_observed(index)) continue;
                for (int d = 0; d < m; ++d)
                    rep[i * m + d] += leaf_log_density(p, theta, leaf, d, k, x.values[index]);
            }

        for (std::size_t l = 0; l < p.layers.size(); ++l) {
            const layer& ly = p.layers[l];
            const auto& in = acts[l];
            auto& out = acts[l + 1];
            out.assign(std::size_t(ly.out_positions()) * ly.out_channels, T(0));
            if (ly.kind == layer_kind::pool) {
                // out[J, g] = sum of in[j, g] over the members j of window J
                ly.for_each_member([&](int w, int j) {
                    for (int g = 0; g < ly.out_channels; ++g)
                        out[w * ly.out_channels + g] += in[j * ly.in_channels + g];
                });
            } else {
                conv_one(ly, weights[l], in, out, combine);
            }
            if (l == x.marginalized_layer) marginalize_positions(p, x, b, acts);
        }
    }

    template <class T>
    static void conv_one(const layer& ly, const std::vector<T>& log_weights,
                         const std::vector<T>& in, std::vector<T>& out, semiring combine) {
        // out[j, g] = logsumexp_a (log W[j][g, a] + in[j, a]), or max_a in the max-product
        // semiring
        const int ic = ly.in_channels, oc = ly.out_channels;
        std::vector<T> terms(ic);
        for (int j = 0; j < ly.in_positions(); ++j) {
            const T* lw = log_weights.data() + std::size_t(ly.set_of_position[j]) * oc * ic;
            for (int g = 0; g < oc; ++g) {
                for (int a = 0; a < ic; ++a) terms[a] = lw[g * ic + a] + in[j * ic + a];
                out[j * oc + g] = combine == semiring::max_product
                                      ? *std::max_element(terms.begin(), terms.end())
                                      : log_sum_exp(std::span<const T>(terms));
            }
        }
    }

    // Positions marginalised by the caller become log 1 = 0 in every channel.
    template <class T>
    static void marginalize_positions(const plan& p, const observations<T>& x, std::size_t b,
                                      std::vector<std::vector<T>>& acts) {
        if (x.kept_positions.empty()) return;
        const std::size_t l = x.marginalized_layer;
        const layer& ly = p.layers[l];
        for (int j = 0; j < ly.out_positions(); ++j)
            if (!x.position_kept(l, b, ly.out_positions(), j))
                for (int g = 0; g < ly.out_channels; ++g)
                    acts[l + 1][j * ly.out_channels + g] = T(0);
    }

    template <class T>
    static void backward_one(const plan& p, const parameters<T>& theta, const std::vector<T>& leaf,
                             const std::vector<std::vector<T>>& weights, const observations<T>& x,
                             std::size_t b, const std::vector<std::vector<T>>& acts,
                             std::span<const T> dout, parameters<T>& grad, bool leaf_gradients) {
        std::vector<T> d_out(dout.begin(), dout.end());
        for (std::size_t l = p.layers.size(); l-- > 0;) {
            const layer& ly = p.layers[l];
            const auto& in = acts[l];
            const auto& out = acts[l + 1];
            std::vector<T> d_in(in.size(), T(0));
            // a marginalised position's output is the constant 0: no gradient flows through it
            for (int j = 0; j < ly.out_positions(); ++j)
                if (!x.position_kept(l, b, ly.out_positions(), j))
                    for (int g = 0; g < ly.out_channels; ++g) d_out[j * ly.out_channels + g] = T(0);
            if (ly.kind == layer_kind::pool) {
                // pooling passes gradients through unchanged
                ly.for_each_member([&](int w, int j) {
                    for (int g = 0; g < ly.out_channels; ++g)
                        d_in[j * ly.in_channels + g] += d_out[w * ly.out_channels + g];
                });
            } else {
                // p[g, a] = W[g, a] exp(in[a] - out[g]); d out[g]/d in[a] = p[g, a],
                // d out[g]/d theta[g, a] = p[g, a] - W[g, a]. An output of -inf has no
                // finite derivative and a zero gradient seed by construction: skip it.
                const int ic = ly.in_channels, oc = ly.out_channels;
                for (int j = 0; j < ly.in_positions(); ++j) {
                    const std::size_t set = ly.set_of_position[j];
                    const T* lw = weights[l].data() + set * oc * ic;
                    T* dtheta = ly.fixed ? nullptr : grad.theta[l].data() + set * oc * ic;
                    for (int g = 0; g < oc; ++g) {
                        const T o = out[j * oc + g], seed = d_out[j * oc + g];
                        if (seed == T(0) || o == -std::numeric_limits<T>::infinity()) continue;
                        for (int a = 0; a < ic; ++a) {
                            const T prob = std::exp(lw[g * ic + a] + in[j * ic + a] - o);
                            d_in[j * ic + a] += seed * prob;
                            if (dtheta)
                                dtheta[g * ic + a] += seed * (prob - std::exp(lw[g * ic + a]));
                        }
                    }
                }
            }
            d_out = std::move(d_in);
        }

        if (!leaf_gradients) return;
        // representation: d rep[i, d] / d parameter, for observed coordinates only
        const int m = p.components, s = p.patch_size();
        for (int i = 0; i < p.positions(); ++i)
            for (int k = 0; k < s; ++k) {
                const int pixel = p.pixel_of(i, k);
                if (pixel < 0) continue;
                const std::size_t index = b * p.pixels() + pixel;
                if (!x.is_observed(index)) continue;
                const T value = x.values[index];
                for (int d = 0; d < m; ++d) {
                    const T seed = d_out[i * m + d];
                    if (seed == T(0)) continue;
                    const std::size_t at = std::size_t(d) * s + k;
                    if (p.leaves == leaf_kind::gaussian) {
                        // d/d mu = lambda (x - mu); d/d rho = 1/2 - lambda (x - mu)^2 / 2
                        const T lambda = std::exp(theta.log_precision[at]);
                        const T diff = value - theta.mean[at];
                        grad.mean[at] += seed * lambda * diff;
                        grad.log_precision[at] += seed * (T(0.5) - T(0.5) * lambda * diff * diff);
                    } else {
                        // d/d logit[v] = [x == v] - P(v)
                        for (int v = 0; v < p.values; ++v) {
                            const T prob = std::exp(leaf[at * p.values + v]);
                            grad.logits[at * p.values + v] +=
                                seed *
                                ((std::size_t(value) == std::size_t(v) ? T(1) : T(0)) - prob);
                        }
                    }
                }
            }
    }
};

}  // namespace tmm::backends
