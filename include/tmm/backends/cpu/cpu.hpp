// The CPU backend: the same network as the reference backend, evaluated in float32 with
// vectorised log-space GEMM kernels (mex_kernels.hpp) and oneTBB over fixed tiles of the
// batch, so that results do not depend on the number of threads.
#pragma once

// GCC 12 warns about its own AVX-512 intrinsics once xsimd inlines them (bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

#include "../../observations.hpp"
#include "../../parameters.hpp"
#include "../../plan.hpp"
#include "mex_kernels.hpp"

namespace tmm::backends {

struct cpu {
    // Images per task. Fixed (not derived from the thread count) so that every reduction
    // happens in the same order whatever the machine.
    static constexpr std::size_t inference_tile = 64;
    static constexpr std::size_t training_tile = 32;

    static std::vector<float> log_likelihoods(const plan& p, const parameters<float>& theta,
                                              const observations<float>& x) {
        validate(p, x);
        validate(p, theta);
        const prepared prep(p, theta);
        std::vector<float> out(x.count * p.classes);
        const std::size_t tiles = (x.count + inference_tile - 1) / inference_tile;
        tbb::parallel_for(std::size_t(0), tiles, [&](std::size_t t) {
            const std::size_t first = t * inference_tile;
            const std::size_t rows = std::min(inference_tile, x.count - first);
            thread_local workspace ws;  // each worker keeps its buffers between tiles and calls
            forward(p, prep, x, first, rows, ws);
            copy_outputs(p, ws, first, rows, out);
        });
        return out;
    }

    template <class Seed>
    static std::vector<float> gradients(const plan& p, const parameters<float>& theta,
                                        const observations<float>& x, Seed&& seed,
                                        parameters<float>& grad, bool leaf_gradients = true) {
        validate(p, x);
        validate(p, theta);
        const prepared prep(p, theta);
        const std::size_t tiles = (x.count + training_tile - 1) / training_tile;
        // Activations and per-tile gradients are reused from call to call on this thread:
        // training calls this once per step with the same shapes.
        // (References, not the thread_locals themselves, go into the lambdas: a thread_local
        // named inside a task would be the worker thread's own.)
        thread_local std::vector<workspace> cached_workspaces;
        thread_local std::vector<parameters<float>> cached_partials;
        std::vector<workspace>& ws = cached_workspaces;
        std::vector<parameters<float>>& partial = cached_partials;
        if (ws.size() < tiles) ws.resize(tiles);
        if (partial.size() < tiles) partial.resize(tiles);
        std::vector<float> out(x.count * p.classes);

        tbb::parallel_for(std::size_t(0), tiles, [&](std::size_t t) {
            const std::size_t first = t * training_tile;
            const std::size_t rows = std::min(training_tile, x.count - first);
            forward(p, prep, x, first, rows, ws[t]);
            copy_outputs(p, ws[t], first, rows, out);
        });

        std::vector<float> dout(out.size(), 0.0f);
        seed(std::span<const float>(out), std::span<float>(dout));

        tbb::parallel_for(std::size_t(0), tiles, [&](std::size_t t) {
            const std::size_t first = t * training_tile;
            const std::size_t rows = std::min(training_tile, x.count - first);
            reset(p, partial[t]);
            backward(p, theta, prep, x, first, rows, dout, ws[t], partial[t], leaf_gradients);
        });

        // sum the tiles' gradients in tile order, in parallel over parameter ranges
        grad = partial[0];
        auto reduce = [&](std::vector<float>& into, auto member) {
            tbb::parallel_for(tbb::blocked_range<std::size_t>(0, into.size(), 4096),
                              [&](const tbb::blocked_range<std::size_t>& r) {
                                  for (std::size_t t = 1; t < tiles; ++t) {
                                      const std::vector<float>& from = member(partial[t]);
                                      for (std::size_t i = r.begin(); i < r.end(); ++i)
                                          into[i] += from[i];
                                  }
                              });
        };
        reduce(
            grad.mean, [](parameters<float> & q) -> auto& { return q.mean; });
        reduce(
            grad.log_precision, [](parameters<float> & q) -> auto& { return q.log_precision; });
        reduce(
            grad.logits, [](parameters<float> & q) -> auto& { return q.logits; });
        for (std::size_t l = 0; l < grad.theta.size(); ++l)
            reduce(
                grad.theta[l], [l](parameters<float> & q) -> auto& { return q.theta[l]; });
        return out;
    }

  private:
    // Zero gradients shaped for p, keeping the storage of an earlier call when it fits.
    static void reset(const plan& p, parameters<float>& g) {
        const std::size_t leaf = std::size_t(p.components) * p.patch_size();
        const bool gaussian = p.leaves == leaf_kind::gaussian;
        bool fits = g.theta.size() == p.layers.size() && g.mean.size() == (gaussian ? leaf : 0) &&
                    g.logits.size() == (gaussian ? 0 : leaf * p.values);
        for (std::size_t l = 0; fits && l < p.layers.size(); ++l)
            fits = g.theta[l].size() == p.layers[l].weight_count();
        if (!fits) {
            g = zero_parameters<float>(p);
            return;
        }
        g.for_each_array([](std::vector<float>& a) { std::fill(a.begin(), a.end(), 0.0f); });
    }

    static constexpr float log_two_pi = 1.8378770664093454836f;

    static void exp_in_place(float* v, std::size_t n) {
        using batch = xsimd::batch<float>;
        std::size_t i = 0;
        for (; i + batch::size <= n; i += batch::size)
            xsimd::exp(batch::load_unaligned(v + i)).store_unaligned(v + i);
        for (; i < n; ++i) v[i] = std::exp(v[i]);
    }

    // Weights in the three layouts the kernels read, computed once per call.
    struct prepared {
        struct conv_weights {
            std::vector<float> linear, transposed, log;  // sets x O x I, sets x I x O, sets x O x I
        };
        std::vector<conv_weights> layers;
        std::vector<float> leaf_log_probabilities;  // categorical: M x s x V
        std::vector<float> mean_t, half_log_precision_t, half_precision_t;  // Gaussian: s x M
        std::vector<float> precision;                                       // Gaussian: M x s

        prepared(const plan& p, const parameters<float>& theta) : layers(p.layers.size()) {
            for (std::size_t l = 0; l < p.layers.size(); ++l) {
                const layer& ly = p.layers[l];
                if (ly.kind != layer_kind::conv) continue;
                auto& w = layers[l];
                const std::size_t o = ly.out_channels, in = ly.in_channels;
                const std::size_t rows = std::size_t(ly.weight_sets) * o;
                w.linear.resize(rows * in);
                w.transposed.resize(rows * in);
                if (ly.fixed) {
                    w.log = log_weights(ly, theta.theta[l]);
                    w.linear = w.log;
                    exp_in_place(w.linear.data(), w.linear.size());
                } else {
                    // log W = theta - logsumexp(theta) per row; W = exp(log W), vectorised
                    w.log.resize(rows * in);
                    tbb::parallel_for(std::size_t(0), rows, [&](std::size_t r) {
                        const float* t = theta.theta[l].data() + r * in;
                        float* lw = w.log.data() + r * in;
                        float* lin = w.linear.data() + r * in;
                        const float m = *std::max_element(t, t + in);
                        for (std::size_t a = 0; a < in; ++a) lin[a] = t[a] - m;
                        exp_in_place(lin, in);
                        double sum = 0;
                        for (std::size_t a = 0; a < in; ++a) sum += lin[a];
                        const float norm = m + float(std::log(sum));
                        for (std::size_t a = 0; a < in; ++a) lw[a] = t[a] - norm;
                        std::copy_n(lw, in, lin);
                        exp_in_place(lin, in);
                    });
                }
                for (std::size_t set = 0; set < std::size_t(ly.weight_sets); ++set)
                    for (std::size_t g = 0; g < o; ++g)
                        for (std::size_t a = 0; a < in; ++a)
                            w.transposed[(set * in + a) * o + g] = w.linear[(set * o + g) * in + a];
            }
            // Gaussian leaves, coordinate-major so that loops over components are contiguous
            if (p.leaves == leaf_kind::gaussian) {
                const std::size_t m = p.components, s = p.patch_size();
                mean_t.resize(m * s);
                half_log_precision_t.resize(m * s);
                half_precision_t.resize(m * s);
                precision.resize(m * s);
                for (std::size_t d = 0; d < m; ++d)
                    for (std::size_t k = 0; k < s; ++k) {
                        const float rho = theta.log_precision[d * s + k];
                        precision[d * s + k] = std::exp(rho);
                        mean_t[k * m + d] = theta.mean[d * s + k];
                        half_log_precision_t[k * m + d] = 0.5f * (rho - log_two_pi);
                        half_precision_t[k * m + d] = 0.5f * precision[d * s + k];
                    }
            }
            if (p.leaves == leaf_kind::categorical) {
                const std::size_t v = p.values;
                leaf_log_probabilities.resize(theta.logits.size());
                for (std::size_t r = 0; r * v < theta.logits.size(); ++r) {
                    const std::span<const float> row(theta.logits.data() + r * v, v);
                    const float norm = log_sum_exp(row);
                    for (std::size_t i = 0; i < v; ++i)
                        leaf_log_probabilities[r * v + i] = row[i] - norm;
                }
            }
        }
    };

    // Activations of one tile, layer by layer: positions x rows x channels.
    struct workspace {
        std::vector<std::vector<float>> acts;
        std::vector<float> d_out, d_in;  // gradients flowing down, one layer at a time
    };

    static void copy_outputs(const plan& p, const workspace& ws, std::size_t first,
                             std::size_t rows, std::vector<float>& out) {
        std::copy_n(ws.acts.back().begin(), rows * p.classes, out.begin() + first * p.classes);
    }

    static void representation(const plan& p, const prepared& prep, const observations<float>& x,
                               std::size_t first, std::size_t rows, std::vector<float>& rep) {
        const int m = p.components, s = p.patch_size();
        rep.assign(std::size_t(p.positions()) * rows * m, 0.0f);
        for (int i = 0; i < p.positions(); ++i)
            for (std::size_t b = 0; b < rows; ++b) {
                float* r = rep.data() + (std::size_t(i) * rows + b) * m;
                for (int k = 0; k < s; ++k) {
                    const int pixel = p.pixel_of(i, k);
                    if (pixel < 0) continue;
                    const std::size_t index = (first + b) * p.pixels() + pixel;
                    if (!x.is_observed(index)) continue;
                    const float v = x.values[index];
                    if (p.leaves == leaf_kind::gaussian) {
                        // log N(v; mu, 1/lambda) = (rho - log 2 pi) / 2 - lambda (v - mu)^2 / 2
                        const float* mu = prep.mean_t.data() + k * m;
                        const float* half = prep.half_log_precision_t.data() + k * m;
                        const float* lam = prep.half_precision_t.data() + k * m;
                        for (int d = 0; d < m; ++d) {
                            const float diff = v - mu[d];
                            r[d] += half[d] - lam[d] * diff * diff;
                        }
                    } else {
                        for (int d = 0; d < m; ++d)
                            r[d] +=
                                prep.leaf_log_probabilities[(std::size_t(d) * s + k) * p.values +
                                                            std::size_t(v)];
                    }
                }
            }
    }

    static void forward(const plan& p, const prepared& prep, const observations<float>& x,
                        std::size_t first, std::size_t rows, workspace& ws) {
        ws.acts.resize(p.layers.size() + 1);
        representation(p, prep, x, first, rows, ws.acts[0]);
        for (std::size_t l = 0; l < p.layers.size(); ++l) {
            const layer& ly = p.layers[l];
            const std::vector<float>& in = ws.acts[l];
            std::vector<float>& out = ws.acts[l + 1];
            const std::size_t ic = ly.in_channels, oc = ly.out_channels;
            if (ly.kind == layer_kind::pool) {
                // out[J] = sum of in[j] over the members of window J (rows x channels blocks)
                out.assign(std::size_t(ly.out_positions()) * rows * oc, 0.0f);
                ly.for_each_member([&](int w, int j) {
                    const float* src = in.data() + std::size_t(j) * rows * ic;
                    float* dst = out.data() + std::size_t(w) * rows * oc;
                    for (std::size_t e = 0; e < rows * oc; ++e) dst[e] += src[e];
                });
                marginalize_positions(p, x, l, first, rows, out);
                continue;
            }
            out.resize(std::size_t(ly.out_positions()) * rows * oc);
            const auto& w = prep.layers[l];
            for (int j = 0; j < ly.in_positions(); ++j) {
                const std::size_t set = ly.set_of_position[j];
                cpu_kernels::mex_forward(rows, ic, oc, in.data() + j * rows * ic,
                                         w.linear.data() + set * oc * ic,
                                         w.transposed.data() + set * oc * ic,
                                         w.log.data() + set * oc * ic, out.data() + j * rows * oc);
            }
            marginalize_positions(p, x, l, first, rows, out);
        }
    }

    // Positions marginalised by the caller become log 1 = 0 in every channel (in a forward
    // pass), or pass no gradient (in a backward pass): both zero the same entries.
    static void marginalize_positions(const plan& p, const observations<float>& x, std::size_t l,
                                      std::size_t first, std::size_t rows,
                                      std::vector<float>& act) {
        if (x.kept_positions.empty() || l != x.marginalized_layer) return;
        const layer& ly = p.layers[l];
        const std::size_t positions = ly.out_positions(), channels = ly.out_channels;
        for (std::size_t j = 0; j < positions; ++j)
            for (std::size_t b = 0; b < rows; ++b)
                if (!x.position_kept(l, first + b, positions, j))
                    std::fill_n(act.data() + (j * rows + b) * channels, channels, 0.0f);
    }

    static void backward(const plan& p, const parameters<float>& theta, const prepared& prep,
                         const observations<float>& x, std::size_t first, std::size_t rows,
                         const std::vector<float>& dout_all, workspace& ws, parameters<float>& grad,
                         bool with_leaves) {
        // gradient with respect to the last activations: rows x K, from the caller's seed
        std::vector<float>& d_out = ws.d_out;
        std::vector<float>& d_in = ws.d_in;
        d_out.assign(dout_all.begin() + first * p.classes,
                     dout_all.begin() + (first + rows) * p.classes);
        for (std::size_t l = p.layers.size(); l-- > 0;) {
            const layer& ly = p.layers[l];
            const std::size_t ic = ly.in_channels, oc = ly.out_channels;
            d_in.assign(std::size_t(ly.in_positions()) * rows * ic, 0.0f);
            marginalize_positions(p, x, l, first, rows, d_out);
            if (ly.kind == layer_kind::pool) {
                ly.for_each_member([&](int w, int j) {
                    std::copy_n(d_out.data() + std::size_t(w) * rows * oc, rows * oc,
                                d_in.data() + std::size_t(j) * rows * ic);
                });
            } else {
                const auto& w = prep.layers[l];
                const bool need_input = l > 0 || with_leaves;  // d rep feeds the leaves only
                for (int j = 0; j < ly.in_positions(); ++j) {
                    const std::size_t set = ly.set_of_position[j];
                    float* dtheta = ly.fixed ? nullptr : grad.theta[l].data() + set * oc * ic;
                    cpu_kernels::mex_backward(
                        rows, ic, oc, ws.acts[l].data() + j * rows * ic,
                        ws.acts[l + 1].data() + j * rows * oc, d_out.data() + j * rows * oc,
                        w.linear.data() + set * oc * ic, w.transposed.data() + set * oc * ic,
                        w.log.data() + set * oc * ic,
                        need_input ? d_in.data() + j * rows * ic : nullptr, dtheta);
                }
            }
            std::swap(d_out, d_in);
        }
        if (with_leaves) leaf_gradients(p, theta, prep, x, first, rows, d_out, grad);
    }

    static void leaf_gradients(const plan& p, const parameters<float>& theta, const prepared& prep,
                               const observations<float>& x, std::size_t first, std::size_t rows,
                               const std::vector<float>& d_rep, parameters<float>& grad) {
        const int m = p.components, s = p.patch_size();
        const std::vector<float>& precision = prep.precision;
        for (int i = 0; i < p.positions(); ++i)
            for (std::size_t b = 0; b < rows; ++b) {
                const float* seed = d_rep.data() + (std::size_t(i) * rows + b) * m;
                for (int k = 0; k < s; ++k) {
                    const int pixel = p.pixel_of(i, k);
                    if (pixel < 0) continue;
                    const std::size_t index = (first + b) * p.pixels() + pixel;
                    if (!x.is_observed(index)) continue;
                    const float v = x.values[index];
                    for (int d = 0; d < m; ++d) {
                        const std::size_t at = std::size_t(d) * s + k;
                        if (p.leaves == leaf_kind::gaussian) {
                            // d/d mu = lambda (x - mu); d/d rho = 1/2 - lambda (x - mu)^2 / 2
                            const float diff = v - theta.mean[at];
                            grad.mean[at] += seed[d] * precision[at] * diff;
                            grad.log_precision[at] +=
                                seed[d] * (0.5f - 0.5f * precision[at] * diff * diff);
                        } else {
                            // d/d logit[u] = [x == u] - P(u)
                            for (int u = 0; u < p.values; ++u) {
                                const float prob =
                                    std::exp(prep.leaf_log_probabilities[at * p.values + u]);
                                grad.logits[at * p.values + u] +=
                                    seed[d] * ((int(v) == u ? 1.0f : 0.0f) - prob);
                            }
                        }
                    }
                }
            }
    }
};

}  // namespace tmm::backends

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
