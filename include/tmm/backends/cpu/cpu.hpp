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
        const prepared prep(p, theta, false);
        std::vector<float> out(x.count * p.classes);
        const std::size_t tiles = (x.count + inference_tile - 1) / inference_tile;
        tbb::parallel_for(std::size_t(0), tiles, [&](std::size_t t) {
            const std::size_t first = t * inference_tile;
            const std::size_t rows = std::min(inference_tile, x.count - first);
            thread_local workspace ws;  // each worker keeps its buffers between tiles and calls
            forward(p, prep, x, first, rows, ws, false);
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
        const prepared prep(p, theta, true);
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
            forward(p, prep, x, first, rows, ws[t], true);
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

    // log W and W = exp(log W) of one row of conv logits: log W = t - logsumexp(t).
    static void normalize_row(const float* t, std::size_t in, float* lw, float* lin) {
        const float m = *std::max_element(t, t + in);
        for (std::size_t a = 0; a < in; ++a) lin[a] = t[a] - m;
        exp_in_place(lin, in);
        double sum = 0;
        for (std::size_t a = 0; a < in; ++a) sum += lin[a];
        const float norm = m + float(std::log(sum));
        for (std::size_t a = 0; a < in; ++a) lw[a] = t[a] - norm;
        std::copy_n(lw, in, lin);
        exp_in_place(lin, in);
    }

    // Weights in the layouts the kernels read, computed and packed once per call and shared
    // read-only by every tile.
    struct prepared {
        struct conv_weights {
            std::vector<float> linear, log;  // sets x O x I
            // per set, the GEMMs' B operands: W^T for the forward pass, W for din (training)
            cpu_kernels::detail::aligned_floats packed_forward, packed_backward;
            std::size_t forward_size = 0, backward_size = 0;  // floats per set
            const float* forward(std::size_t set) const {
                return packed_forward.data() + set * forward_size;
            }
            const float* backward(std::size_t set) const {
                return packed_backward.data() + set * backward_size;
            }
        };
        std::vector<conv_weights> layers;
        std::vector<float> leaf_log_probabilities;    // categorical: M x s x V
        std::vector<float> leaf_log_probabilities_t;  // categorical: s x V x M
        std::vector<float> mean_t, half_log_precision_t, half_precision_t;  // Gaussian: s x M
        std::vector<float> precision;                                       // Gaussian: M x s

        prepared(const plan& p, const parameters<float>& theta, bool for_training)
            : layers(p.layers.size()) {
            for (std::size_t l = 0; l < p.layers.size(); ++l) {
                const layer& ly = p.layers[l];
                if (ly.kind != layer_kind::conv) continue;
                auto& w = layers[l];
                const std::size_t o = ly.out_channels, in = ly.in_channels;
                const std::size_t sets = ly.weight_sets, rows = sets * o;
                w.linear.resize(rows * in);
                if (ly.fixed) {
                    w.log = log_weights(ly, theta.theta[l]);
                    w.linear = w.log;
                    exp_in_place(w.linear.data(), w.linear.size());
                } else {
                    // log W = theta - logsumexp(theta) per row; W = exp(log W), vectorised
                    w.log.resize(rows * in);
                    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, rows, 64),
                                      [&](const tbb::blocked_range<std::size_t>& range) {
                                          for (std::size_t r = range.begin(); r < range.end(); ++r)
                                              normalize_row(theta.theta[l].data() + r * in, in,
                                                            w.log.data() + r * in,
                                                            w.linear.data() + r * in);
                                      });
                }
                w.forward_size = cpu_kernels::mex_forward_packed_size(in, o);
                w.packed_forward.get(sets * w.forward_size);
                if (for_training) {
                    w.backward_size = cpu_kernels::mex_backward_packed_size(in, o);
                    w.packed_backward.get(sets * w.backward_size);
                }
                tbb::parallel_for(std::size_t(0), sets, [&](std::size_t set) {
                    const float* linear = w.linear.data() + set * o * in;
                    cpu_kernels::mex_pack_forward_weights(
                        in, o, linear, w.packed_forward.data() + set * w.forward_size);
                    if (for_training)
                        cpu_kernels::mex_pack_backward_weights(
                            in, o, linear, w.packed_backward.data() + set * w.backward_size);
                });
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
                const std::size_t v = p.values, m = p.components, s = p.patch_size();
                leaf_log_probabilities.resize(theta.logits.size());
                leaf_log_probabilities_t.resize(theta.logits.size());
                for (std::size_t r = 0; r * v < theta.logits.size(); ++r) {
                    const std::span<const float> row(theta.logits.data() + r * v, v);
                    const float norm = log_sum_exp(row);
                    for (std::size_t i = 0; i < v; ++i)
                        leaf_log_probabilities[r * v + i] = row[i] - norm;
                }
                for (std::size_t d = 0; d < m; ++d)
                    for (std::size_t k = 0; k < s; ++k)
                        for (std::size_t i = 0; i < v; ++i)
                            leaf_log_probabilities_t[(k * v + i) * m + d] =
                                leaf_log_probabilities[(d * s + k) * v + i];
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

    // Log-densities of the leaves at every position: rep = positions x rows x M. A missing
    // coordinate contributes log 1 = 0. Vectorised over the components.
    static void representation(const plan& p, const prepared& prep, const observations<float>& x,
                               std::size_t first, std::size_t rows, std::vector<float>& rep) {
        using batch = xsimd::batch<float>;
        constexpr std::size_t lanes = batch::size;
        const std::size_t m = p.components, s = p.patch_size();
        const bool gaussian = p.leaves == leaf_kind::gaussian;
        rep.resize(std::size_t(p.positions()) * rows * m);
        std::vector<int> pixels(s);
        std::vector<std::size_t> seen_k(s);
        std::vector<float> seen_v(s);
        for (int i = 0; i < p.positions(); ++i) {
            for (std::size_t k = 0; k < s; ++k) pixels[k] = p.pixel_of(i, int(k));
            for (std::size_t b = 0; b < rows; ++b) {
                // the observed coordinates of this patch
                std::size_t seen = 0;
                for (std::size_t k = 0; k < s; ++k) {
                    if (pixels[k] < 0) continue;
                    const std::size_t index = (first + b) * p.pixels() + pixels[k];
                    if (!x.is_observed(index)) continue;
                    seen_k[seen] = k, seen_v[seen] = x.values[index], ++seen;
                }
                float* r = rep.data() + (std::size_t(i) * rows + b) * m;
                for (std::size_t d0 = 0; d0 < m; d0 += lanes) {
                    const std::size_t width = std::min(lanes, m - d0);
                    const auto load = [&](const float* at) {
                        return width == lanes ? batch::load_unaligned(at)
                                              : cpu_kernels::detail::load_partial(at, width, 0.0f);
                    };
                    batch acc(0.0f);
                    for (std::size_t q = 0; q < seen; ++q) {
                        const std::size_t k = seen_k[q];
                        if (gaussian) {
                            // log N(v; mu, 1/lambda) = (rho - log 2 pi) / 2 - lambda (v - mu)^2 / 2
                            const batch diff = batch(seen_v[q]) - load(&prep.mean_t[k * m + d0]);
                            acc += load(&prep.half_log_precision_t[k * m + d0]) -
                                   load(&prep.half_precision_t[k * m + d0]) * diff * diff;
                        } else {
                            acc += load(&prep.leaf_log_probabilities_t
                                             [(k * p.values + std::size_t(seen_v[q])) * m + d0]);
                        }
                    }
                    if (width == lanes)
                        acc.store_unaligned(r + d0);
                    else
                        cpu_kernels::detail::store_partial(acc, r + d0, width);
                }
            }
        }
    }

    // Whether conv layer l can be fused with the product pooling l + 1 that follows it: not
    // when the conv's own output is marginalised by position.
    static bool fused_with_pool(const plan& p, const observations<float>& x, std::size_t l) {
        return l + 1 < p.layers.size() && p.layers[l].kind == layer_kind::conv &&
               p.layers[l + 1].kind == layer_kind::pool &&
               (x.kept_positions.empty() || x.marginalized_layer != l);
    }

    // acts[l + 1] = layer l of acts[l]. A conv followed by a pooling is fused with it: each
    // window's output accumulates its members' conv outputs, which are kept (in acts[l + 1])
    // only when `keep_conv_outputs` (training needs them for the backward pass).
    static void forward(const plan& p, const prepared& prep, const observations<float>& x,
                        std::size_t first, std::size_t rows, workspace& ws,
                        bool keep_conv_outputs) {
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
            const auto& w = prep.layers[l];
            const auto conv_at = [&](int j, float* conv_out, float* pooled, bool accumulate) {
                const std::size_t set = ly.set_of_position[j];
                cpu_kernels::mex_forward_packed(rows, ic, oc, in.data() + j * rows * ic,
                                                w.forward(set), w.log.data() + set * oc * ic,
                                                conv_out, pooled, accumulate);
            };
            if (!fused_with_pool(p, x, l)) {
                out.resize(std::size_t(ly.out_positions()) * rows * oc);
                for (int j = 0; j < ly.in_positions(); ++j)
                    conv_at(j, out.data() + j * rows * oc, nullptr, false);
                marginalize_positions(p, x, l, first, rows, out);
                continue;
            }
            // fused: window by window, members in order (the sum of the unfused pooling)
            const layer& pool = p.layers[l + 1];
            std::vector<float>& pooled = ws.acts[l + 2];
            pooled.resize(std::size_t(pool.out_positions()) * rows * oc);
            if (keep_conv_outputs) out.resize(std::size_t(ly.out_positions()) * rows * oc);
            for (int window = 0; window < pool.out_positions(); ++window) {
                float* dst = pooled.data() + std::size_t(window) * rows * oc;
                bool accumulate = false;
                for (int slot = 0; slot < pool.window_size; ++slot) {
                    const int j = pool.members[std::size_t(window) * pool.window_size + slot];
                    if (j < 0) continue;
                    conv_at(j, keep_conv_outputs ? out.data() + j * rows * oc : nullptr, dst,
                            accumulate);
                    accumulate = true;
                }
                if (!accumulate) std::fill_n(dst, rows * oc, 0.0f);  // only padded slots
            }
            marginalize_positions(p, x, l + 1, first, rows, pooled);
            ++l;
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
                    cpu_kernels::mex_backward_packed(
                        rows, ic, oc, ws.acts[l].data() + j * rows * ic,
                        ws.acts[l + 1].data() + j * rows * oc, d_out.data() + j * rows * oc,
                        w.linear.data() + set * oc * ic, w.backward(set),
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
