// The thrust backend: the network of the reference backend in float32 on thrust's device
// system. Compiled by nvcc it runs on an NVIDIA GPU; compiled by a host compiler with
// THRUST_DEVICE_SYSTEM set to TBB (or CPP, OMP) the same code runs on the CPU, which is how
// its tests run everywhere. One upload of the parameters and one of the observations per
// call; the plan and every buffer stay on the device between calls (per host thread).
//
// With nvcc, include this header from a translation unit that does not include the DSL
// (tmm/dsl, tmm/tmm.hpp): build the plan in host code and pass it in (see README).
#pragma once

#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "../../observations.hpp"
#include "../../parameters.hpp"
#include "../../plan.hpp"
#include "kernels.hpp"

namespace tmm::backends {

namespace thrust_detail {

using kernels_index = thrust_kernels::index;

template <class V>
using device_vector = ::thrust::device_vector<V>;

template <class V>
auto* raw(device_vector<V>& v) {
    return ::thrust::raw_pointer_cast(v.data());
}
template <class V>
const auto* raw(const device_vector<V>& v) {
    return ::thrust::raw_pointer_cast(v.data());
}

// Runs f(i) for i in [0, n) on the device system.
template <class F>
void for_n(std::size_t n, const F& f) {
    if (n == 0) return;
    ::thrust::for_each(::thrust::device, ::thrust::counting_iterator<kernels_index>(0),
                       ::thrust::counting_iterator<kernels_index>(n), f);
}

// Runs f(r, c) for every row r < rows and column c < columns: one task per output on a GPU,
// one per row on a CPU device system (TMM_THRUST_OUTPUT_TASKS forces the GPU's way, so that
// the tests cover it on a CPU).
template <class F>
void for_outputs(std::size_t rows, int columns, const F& f) {
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA || defined(TMM_THRUST_OUTPUT_TASKS)
    for_n(rows * std::size_t(columns), thrust_kernels::each_output<F>{f, columns});
#else
    for_n(rows, thrust_kernels::each_row<F>{f, columns});
#endif
}

// Grows v to at least n elements (keeping its storage between calls).
template <class V>
V* sized(device_vector<V>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
    return raw(v);
}

template <class V>
void upload(device_vector<V>& to, std::span<const V> from) {
    if (to.size() < from.size()) to.resize(from.size());
    if (!from.empty()) ::thrust::copy(from.begin(), from.end(), to.begin());
}

// Where each layer's integer tables lie in the plan's device array.
struct layer_tables {
    std::size_t set_of_position = 0, set_offsets = 0, set_positions = 0;  // conv
    std::size_t members = 0, window_of = 0;                               // pool
};

// Where each array lies in the packed parameters (and packed gradients).
struct parameter_layout {
    std::size_t mean = 0, log_precision = 0, logits = 0, total = 0;
    std::vector<std::size_t> theta;  // per layer; fixed layers hold their constant weights
    std::size_t gradient_total = 0;
    std::vector<std::size_t> gradient_theta;  // per layer, weight_count() entries each
};

// Everything kept on the device between calls on one host thread.
struct device_state {
    std::vector<int> plan_host;  // the packed plan now on the device
    device_vector<int> plan;
    std::vector<layer_tables> tables;
    std::size_t pixel_of = 0;  // positions x s: plan::pixel_of

    std::vector<float> parameters_host;  // the packed parameters now on the device
    std::vector<float> parameters_next;  // the packed parameters of this call
    device_vector<float> parameters;
    bool tables_ready = false;  // the tables below were derived from `parameters`
    device_vector<float> mean_t, half_log_t, half_precision_t, leaf_log, leaf_linear, leaf_log_t;
    std::vector<device_vector<float>> log_w, w, wt;

    std::vector<float> values_host;  // observations with the mask folded in as NaN
    device_vector<float> values;
    device_vector<std::uint8_t> kept;

    std::vector<device_vector<float>> acts, shifted, tops;
    device_vector<float> d_a, d_b, scale, partial, gradient;
    device_vector<std::uint8_t> exact;
    device_vector<int> exact_count;
};

inline device_state& state() {
    thread_local device_state s;
    return s;
}

}  // namespace thrust_detail

struct thrust {
    // Images evaluated together by log_likelihoods: bounds the activations' memory.
    static constexpr std::size_t inference_slice = 4096;
    // Images whose weight gradients one task sums before the fixed-order sum over chunks.
    // (Longer on a CPU, where a task's overhead is larger than a GPU thread's.)
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    static constexpr std::size_t gradient_chunk = 16;
#else
    static constexpr std::size_t gradient_chunk = 64;
#endif

    static std::vector<float> log_likelihoods(const plan& p, const parameters<float>& theta,
                                              const observations<float>& x) {
        validate(p, x);
        validate(p, theta);
        auto& s = thrust_detail::state();
        prepare(p, theta, x, s);
        std::vector<float> out(x.count * p.classes);
        for (std::size_t first = 0; first < x.count; first += inference_slice) {
            const std::size_t rows = std::min(inference_slice, x.count - first);
            forward(p, x, first, rows, /*training=*/false, s);
            const auto& last = s.acts.back();
            ::thrust::copy(last.begin(), last.begin() + std::ptrdiff_t(rows * p.classes),
                           out.begin() + std::ptrdiff_t(first * p.classes));
        }
        return out;
    }

    // As reference::gradients: outputs, the caller's seed on them, then every parameter's
    // gradient into `grad` (the leaves' left at zero without `leaf_gradients`).
    template <class Seed>
    static std::vector<float> gradients(const plan& p, const parameters<float>& theta,
                                        const observations<float>& x, Seed&& seed,
                                        parameters<float>& grad, bool leaf_gradients = true) {
        validate(p, x);
        validate(p, theta);
        auto& s = thrust_detail::state();
        const thrust_detail::parameter_layout layout = prepare(p, theta, x, s);
        forward(p, x, 0, x.count, /*training=*/true, s);
        std::vector<float> out(x.count * p.classes);
        const auto& last = s.acts.back();
        if (!out.empty())  // (an empty batch has nothing to copy, not even a first element)
            ::thrust::copy(last.begin(), last.begin() + std::ptrdiff_t(out.size()), out.begin());

        std::vector<float> dout(out.size(), 0.0f);
        seed(std::span<const float>(out), std::span<float>(dout));
        thrust_detail::upload(s.d_a, std::span<const float>(dout));

        backward(p, x, layout, leaf_gradients, s);
        download_gradients(p, layout, s, grad);
        return out;
    }

  private:
    using index = thrust_kernels::index;

    static thrust_kernels::image_geometry geometry(const plan& p) {
        return {p.height, p.width, p.image_channels, p.pad, p.patch, p.grid_cols};
    }

    // The plan's integer tables, packed; uploaded only when they differ from the last call's.
    static void upload_plan(const plan& p, thrust_detail::device_state& s) {
        // the shapes first: the key of everything cached on the device
        std::vector<int> packed = {p.height,    p.width,       p.image_channels,
                                   p.pad,       p.patch,       p.grid_rows,
                                   p.grid_cols, int(p.leaves), p.components,
                                   p.values,    p.classes,     int(p.layers.size())};
        for (const layer& ly : p.layers)
            packed.insert(packed.end(), {int(ly.kind), ly.in_rows, ly.in_cols, ly.out_rows,
                                         ly.out_cols, ly.in_channels, ly.out_channels,
                                         ly.weight_sets, int(ly.fixed), ly.window_size});
        s.pixel_of = packed.size();
        for (int i = 0; i < p.positions(); ++i)
            for (int k = 0; k < p.patch_size(); ++k) packed.push_back(p.pixel_of(i, k));
        std::vector<thrust_detail::layer_tables> tables(p.layers.size());
        for (std::size_t l = 0; l < p.layers.size(); ++l) {
            const layer& ly = p.layers[l];
            auto& t = tables[l];
            if (ly.kind == layer_kind::conv) {
                t.set_of_position = packed.size();
                packed.insert(packed.end(), ly.set_of_position.begin(), ly.set_of_position.end());
                // the positions of each weight set, grouped by set (CSR)
                std::vector<int> count(ly.weight_sets + 1, 0);
                for (int set : ly.set_of_position) ++count[set + 1];
                for (int set = 0; set < ly.weight_sets; ++set) count[set + 1] += count[set];
                t.set_offsets = packed.size();
                packed.insert(packed.end(), count.begin(), count.end());
                std::vector<int> grouped(ly.set_of_position.size()), cursor = count;
                for (int j = 0; j < ly.in_positions(); ++j)
                    grouped[cursor[ly.set_of_position[j]]++] = j;
                t.set_positions = packed.size();
                packed.insert(packed.end(), grouped.begin(), grouped.end());
            } else {
                t.members = packed.size();
                packed.insert(packed.end(), ly.members.begin(), ly.members.end());
                std::vector<int> window_of(ly.in_positions(), -1);
                ly.for_each_member([&](int w, int j) { window_of[j] = w; });
                t.window_of = packed.size();
                packed.insert(packed.end(), window_of.begin(), window_of.end());
            }
        }
        s.tables = std::move(tables);
        if (packed == s.plan_host && s.plan.size() >= packed.size()) return;
        s.tables_ready = false;  // derived for another plan
        s.plan_host.clear();
        thrust_detail::upload(s.plan, std::span<const int>(packed));
        s.plan_host = std::move(packed);
    }

    // Uploads the parameters (once) and the observations (once), and derives the weight and
    // leaf tables on the device.
    static thrust_detail::parameter_layout prepare(const plan& p, const parameters<float>& theta,
                                                   const observations<float>& x,
                                                   thrust_detail::device_state& s) {
        upload_plan(p, s);

        thrust_detail::parameter_layout layout;
        std::vector<float>& packed = s.parameters_next;
        packed.clear();
        const auto append = [&](const std::vector<float>& a) {
            const std::size_t at = packed.size();
            packed.insert(packed.end(), a.begin(), a.end());
            return at;
        };
        layout.mean = append(theta.mean);
        layout.log_precision = append(theta.log_precision);
        layout.logits = append(theta.logits);
        for (std::size_t l = 0; l < p.layers.size(); ++l) {
            const layer& ly = p.layers[l];
            if (ly.fixed) {
                layout.theta.push_back(packed.size());
                for (double v : ly.fixed_weights) packed.push_back(float(v));
            } else {
                layout.theta.push_back(append(theta.theta[l]));
            }
            layout.gradient_theta.push_back(layout.gradient_total);
            layout.gradient_total += ly.weight_count();
        }
        layout.total = packed.size();
        // Parameters equal to the last call's (evaluation in batches) are already there, with
        // every table derived from them; NaN never compares equal, but validate refused it.
        const bool same = s.tables_ready && packed == s.parameters_host;
        if (!same) {
            s.tables_ready = false;  // until the tables below are rebuilt
            thrust_detail::upload(s.parameters, std::span<const float>(packed));
            derive_tables(p, layout, s);
            std::swap(s.parameters_host, s.parameters_next);
            s.tables_ready = true;
        }

        // the mask folded into the values: a missing value is NaN (never read into a result)
        s.values_host.resize(x.values.size());
        for (std::size_t i = 0; i < x.values.size(); ++i)
            s.values_host[i] =
                x.is_observed(i) ? x.values[i] : std::numeric_limits<float>::quiet_NaN();
        thrust_detail::upload(s.values, std::span<const float>(s.values_host));
        if (!x.kept_positions.empty()) thrust_detail::upload(s.kept, x.kept_positions);
        return layout;
    }

    // Weight and leaf tables from the packed parameters on the device.
    static void derive_tables(const plan& p, const thrust_detail::parameter_layout& layout,
                              thrust_detail::device_state& s) {
        using thrust_detail::for_n;
        using thrust_detail::for_outputs;
        using thrust_detail::raw;
        using thrust_detail::sized;
        const float* params = raw(s.parameters);

        const std::size_t leaf = std::size_t(p.components) * p.patch_size();
        if (p.leaves == leaf_kind::gaussian) {
            for_n(leaf, thrust_kernels::gaussian_tables{
                            params + layout.mean, params + layout.log_precision, p.components,
                            p.patch_size(), sized(s.mean_t, leaf), sized(s.half_log_t, leaf),
                            sized(s.half_precision_t, leaf)});
        } else {
            const std::size_t n = leaf * p.values;
            for_n(leaf, thrust_kernels::normalize_rows{params + layout.logits, sized(s.leaf_log, n),
                                                       sized(s.leaf_linear, n), p.values, 0});
            for_n(n,
                  thrust_kernels::categorical_table{raw(s.leaf_log), p.components, p.patch_size(),
                                                    p.values, sized(s.leaf_log_t, n)});
        }
        s.log_w.resize(p.layers.size());
        s.w.resize(p.layers.size());
        s.wt.resize(p.layers.size());
        for (std::size_t l = 0; l < p.layers.size(); ++l) {
            const layer& ly = p.layers[l];
            if (ly.kind != layer_kind::conv) continue;
            const std::size_t rows = std::size_t(ly.weight_sets) * ly.out_channels;
            const std::size_t n = rows * ly.in_channels;
            for_n(rows, thrust_kernels::normalize_rows{
                            params + layout.theta[l], sized(s.log_w[l], n), sized(s.w[l], n),
                            ly.in_channels, ly.fixed ? ly.out_channels : 0});
            thrust_detail::for_outputs(
                std::size_t(ly.weight_sets) * ly.in_channels, ly.out_channels,
                thrust_kernels::transpose_weights{raw(s.w[l]), sized(s.wt[l], n), ly.out_channels,
                                                  ly.in_channels});
        }
    }

    // Kept flags of images [first, ...) at the output of layer l, or null.
    static const std::uint8_t* kept_at(const plan& p, const observations<float>& x, std::size_t l,
                                       std::size_t first, thrust_detail::device_state& s) {
        if (x.kept_positions.empty() || l != x.marginalized_layer) return nullptr;
        return thrust_detail::raw(s.kept) + first * std::size_t(p.layers[l].out_positions());
    }

    static thrust_kernels::conv_value conv_of(const plan& p, std::size_t l,
                                              thrust_detail::device_state& s) {
        using thrust_detail::raw;
        const layer& ly = p.layers[l];
        return {raw(s.acts[l]),    raw(s.shifted[l]),
                raw(s.tops[l]),    raw(s.w[l]),
                raw(s.log_w[l]),   raw(s.plan) + s.tables[l].set_of_position,
                ly.in_positions(), ly.in_channels,
                ly.out_channels,   thrust_kernels::forward_threshold(ly.in_channels)};
    }

    // Activations of images [first, first + rows) into s.acts. Outside training a conv
    // followed by a pooling is fused and the conv's own outputs are not stored.
    static void forward(const plan& p, const observations<float>& x, std::size_t first,
                        std::size_t rows, bool training, thrust_detail::device_state& s) {
        using thrust_detail::for_n;
        using thrust_detail::for_outputs;
        using thrust_detail::raw;
        using thrust_detail::sized;
        const std::size_t layers = p.layers.size();
        s.acts.resize(layers + 1);
        s.shifted.resize(layers);
        s.tops.resize(layers);
        const std::size_t m = p.components;
        const std::size_t rep_size = rows * p.positions() * m;
        for_n(rows * p.positions(),
              thrust_kernels::representation{
                  raw(s.values) + first * std::size_t(p.pixels()), raw(s.plan) + s.pixel_of,
                  p.pixels(), p.positions(), p.components, p.patch_size(), p.values,
                  p.leaves == leaf_kind::gaussian ? raw(s.mean_t) : nullptr,
                  p.leaves == leaf_kind::gaussian ? raw(s.half_log_t) : nullptr,
                  p.leaves == leaf_kind::gaussian ? raw(s.half_precision_t) : nullptr,
                  p.leaves == leaf_kind::categorical ? raw(s.leaf_log_t) : nullptr,
                  sized(s.acts[0], rep_size)});
        const bool fuse = !training && x.kept_positions.empty();
        for (std::size_t l = 0; l < layers; ++l) {
            const layer& ly = p.layers[l];
            const std::size_t out_size = rows * ly.out_positions() * ly.out_channels;
            if (ly.kind == layer_kind::pool) {
                for_outputs(
                    rows * ly.out_positions(), ly.out_channels,
                    thrust_kernels::pool_forward{
                        raw(s.acts[l]), raw(s.plan) + s.tables[l].members, ly.in_positions(),
                        ly.out_positions(), ly.window_size, ly.out_channels,
                        kept_at(p, x, l, first, s), sized(s.acts[l + 1], out_size)});
                continue;
            }
            const std::size_t in_rows = rows * ly.in_positions();
            for_n(in_rows, thrust_kernels::shift_rows{raw(s.acts[l]),
                                                      sized(s.shifted[l], in_rows * ly.in_channels),
                                                      sized(s.tops[l], in_rows), ly.in_channels});
            if (fuse && l + 1 < layers && p.layers[l + 1].kind == layer_kind::pool) {
                const layer& pool = p.layers[l + 1];
                const std::size_t pooled = rows * pool.out_positions() * pool.out_channels;
                const thrust_kernels::conv_pool_forward fused{
                    conv_of(p, l, s), raw(s.plan) + s.tables[l + 1].members, pool.out_positions(),
                    pool.window_size, sized(s.acts[l + 2], pooled)};
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA || defined(TMM_THRUST_OUTPUT_TASKS)
                for_outputs(rows * pool.out_positions(), pool.out_channels, fused);
#else
                for_n(rows * pool.out_positions(), thrust_kernels::conv_pool_forward_rows{fused});
#endif
                ++l;
                continue;
            }
            const thrust_kernels::conv_forward conv{conv_of(p, l, s), kept_at(p, x, l, first, s),
                                                    sized(s.acts[l + 1], out_size)};
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA || defined(TMM_THRUST_OUTPUT_TASKS)
            for_outputs(in_rows, ly.out_channels, conv);
#else
            for_n(in_rows, thrust_kernels::conv_forward_rows{conv});
#endif
        }
    }

    static void backward(const plan& p, const observations<float>& x,
                         const thrust_detail::parameter_layout& layout, bool with_leaves,
                         thrust_detail::device_state& s) {
        using thrust_detail::for_n;
        using thrust_detail::for_outputs;
        using thrust_detail::raw;
        using thrust_detail::sized;
        const std::size_t rows = x.count;
        const std::size_t chunks = (rows + gradient_chunk - 1) / gradient_chunk;
        // gradients: [conv weights of every layer | leaves], the leaves' part zero unless
        // computed (every conv weight gradient is written)
        const bool categorical = p.leaves == leaf_kind::categorical;
        const std::size_t leaf = std::size_t(p.components) * p.patch_size();
        const std::size_t leaf_count = categorical ? leaf * p.values : 2 * leaf;
        const std::size_t leaf_at = layout.gradient_total;
        float* gradient = sized(s.gradient, leaf_at + leaf_count);
        ::thrust::fill_n(::thrust::device, s.gradient.begin() + std::ptrdiff_t(leaf_at), leaf_count,
                         0.0f);

        // s.d_a holds the seed's gradient of the outputs (uploaded by gradients())
        device_vector_swap d_out(s.d_a, s.d_b);
        for (std::size_t l = p.layers.size(); l-- > 0;) {
            const layer& ly = p.layers[l];
            const std::size_t ic = ly.in_channels, oc = ly.out_channels;
            float* dout = raw(d_out.current());
            if (const std::uint8_t* kept = kept_at(p, x, l, 0, s))
                for_outputs(rows * ly.out_positions(), ly.out_channels,
                            thrust_kernels::zero_unkept{kept, ly.out_channels, dout});
            const std::size_t in_size = rows * ly.in_positions() * ic;
            float* din = sized(d_out.next(), in_size);
            if (ly.kind == layer_kind::pool) {
                for_outputs(rows * ly.in_positions(), ly.in_channels,
                            thrust_kernels::pool_backward{dout, raw(s.plan) + s.tables[l].window_of,
                                                          ly.in_positions(), ly.out_positions(),
                                                          ly.out_channels, din});
                d_out.swap();
                continue;
            }
            const std::size_t in_rows = rows * ly.in_positions();
            for_n(in_rows, thrust_kernels::conv_backward_rows{
                               raw(s.acts[l + 1]), dout, raw(s.tops[l]), ly.out_channels,
                               sized(s.scale, in_rows * oc), sized(s.exact, in_rows * oc),
                               sized(s.exact_count, in_rows)});
            if (l > 0 || with_leaves)  // the representation's gradient feeds the leaves only
                for_outputs(in_rows, ly.in_channels,
                            thrust_kernels::conv_backward_input{
                                raw(s.acts[l]), raw(s.shifted[l]), raw(s.acts[l + 1]), dout,
                                raw(s.scale), raw(s.exact), raw(s.exact_count), raw(s.wt[l]),
                                raw(s.log_w[l]), raw(s.plan) + s.tables[l].set_of_position,
                                ly.in_positions(), ly.in_channels, ly.out_channels, din});
            if (!ly.fixed) {
                const std::size_t count = ly.weight_count();
                const std::size_t tasks = thrust_kernels::conv_backward_weights::tasks(
                    chunks, ly.weight_sets, ly.out_channels, ly.in_channels);
                for_n(tasks, thrust_kernels::conv_backward_weights{
                                 raw(s.acts[l]), raw(s.shifted[l]), raw(s.acts[l + 1]), dout,
                                 raw(s.scale), raw(s.exact), raw(s.w[l]), raw(s.log_w[l]),
                                 raw(s.plan) + s.tables[l].set_offsets,
                                 raw(s.plan) + s.tables[l].set_positions, ly.in_positions(),
                                 ly.in_channels, ly.out_channels, ly.weight_sets, rows,
                                 gradient_chunk, sized(s.partial, chunks * count)});
                for_n(count, thrust_kernels::sum_chunks{raw(s.partial), chunks, count,
                                                        gradient + layout.gradient_theta[l]});
            }
            d_out.swap();
        }
        if (!with_leaves) return;
        const std::size_t per_chunk = leaf_count;
        const std::size_t tasks = chunks * (categorical ? leaf * p.values : leaf);
        for_n(tasks,
              thrust_kernels::leaf_backward{
                  raw(s.values), raw(d_out.current()), geometry(p), p.positions(), p.components,
                  p.patch_size(), p.values, raw(s.parameters) + layout.mean,
                  raw(s.parameters) + layout.log_precision, categorical ? raw(s.leaf_log) : nullptr,
                  rows, gradient_chunk, sized(s.partial, chunks * per_chunk)});
        // Gaussian: [mean | log_precision] per chunk; categorical: logits per chunk
        for_n(per_chunk,
              thrust_kernels::sum_chunks{raw(s.partial), chunks, per_chunk, gradient + leaf_at});
    }

    // The packed gradients back to the host, in `grad`'s arrays.
    static void download_gradients(const plan& p, const thrust_detail::parameter_layout& layout,
                                   thrust_detail::device_state& s, parameters<float>& grad) {
        grad = zero_parameters<float>(p);
        grad.log_prior.assign(p.classes, 0.0f);  // not learned: no gradient
        const std::size_t leaf = std::size_t(p.components) * p.patch_size();
        const std::size_t leaf_count =
            p.leaves == leaf_kind::gaussian ? 2 * leaf : leaf * std::size_t(p.values);
        std::vector<float> host(layout.gradient_total + leaf_count);
        ::thrust::copy(s.gradient.begin(), s.gradient.begin() + std::ptrdiff_t(host.size()),
                       host.begin());
        for (std::size_t l = 0; l < p.layers.size(); ++l)
            std::copy_n(host.begin() + std::ptrdiff_t(layout.gradient_theta[l]),
                        grad.theta[l].size(), grad.theta[l].begin());
        const auto leaves = host.begin() + std::ptrdiff_t(layout.gradient_total);
        if (p.leaves == leaf_kind::gaussian) {
            std::copy_n(leaves, leaf, grad.mean.begin());
            std::copy_n(leaves + std::ptrdiff_t(leaf), leaf, grad.log_precision.begin());
        } else {
            std::copy_n(leaves, leaf_count, grad.logits.begin());
        }
    }

    // Two gradient buffers that trade places layer by layer.
    class device_vector_swap {
      public:
        device_vector_swap(thrust_detail::device_vector<float>& a,
                           thrust_detail::device_vector<float>& b)
            : current_(&a), next_(&b) {}
        thrust_detail::device_vector<float>& current() { return *current_; }
        thrust_detail::device_vector<float>& next() { return *next_; }
        void swap() { std::swap(current_, next_); }

      private:
        thrust_detail::device_vector<float>* current_;
        thrust_detail::device_vector<float>* next_;
    };
};

}  // namespace tmm::backends
