// The CPU backend: the same network as the reference backend, evaluated in float32 with
// vectorised log-space GEMM kernels (mex_kernels.hpp) and oneTBB. Inference works through
// fixed tiles of the batch; training through the whole batch layer by layer, one task per
// position or weight set. Either way every sum happens in an order fixed by the shapes alone,
// so results do not depend on the number of threads.
#pragma once

#include "../../detail/xsimd_warnings_push.hpp"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../detail/exp.hpp"
#include "../../observations.hpp"
#include "../../parameters.hpp"
#include "../../plan.hpp"
#include "../../semiring.hpp"
#include "leaf_kernels.hpp"
#include "mex_kernels.hpp"

namespace tmm::backends {

namespace cpu_detail {
// std::allocator whose value-less construct leaves the element default-initialised (a float is
// left as it is): a vector of floats grows without writing zeros that are overwritten anyway.
template <class T>
struct uninitialised_allocator : std::allocator<T> {
    using value_type = T;
    template <class U>
    struct rebind {
        using other = uninitialised_allocator<U>;
    };
    uninitialised_allocator() = default;
    template <class U>
    uninitialised_allocator(const uninitialised_allocator<U>&) noexcept {}
    template <class U>
    void construct(U* at) noexcept(std::is_nothrow_default_constructible_v<U>) {
        ::new (static_cast<void*>(at)) U;
    }
    template <class U, class... Args>
    void construct(U* at, Args&&... args) {
        ::new (static_cast<void*>(at)) U(std::forward<Args>(args)...);
    }
};
}  // namespace cpu_detail

struct cpu {
    // Images per inference task. Fixed (not derived from the thread count) so that every
    // reduction happens in the same order whatever the machine.
    static constexpr std::size_t inference_tile = 64;

    // log P(X | y), count x K, every missing value marginalised. The weights are normalised,
    // checked and packed on each call; prepare_inference() does that once for many calls.
    static std::vector<float> log_likelihoods(const plan& p, const parameters<float>& theta,
                                              const observations<float>& x) {
        validate(p, x);
        thread_local reusable<prepared> storage;
        const claim<prepared> mine(storage);
        return infer(p, prepare(p, theta, false, mine.get()), x);
    }

    // A network's parameters prepared for inference (normalised, checked, packed), with a copy
    // of its plan: for many inference calls with the same parameters (an evaluation over many
    // batches, the shifted copies of shift-averaged prediction), which then skip that work.
    // It holds no reference to the parameters: changing them afterwards changes nothing here.
    class prepared_network;
    static prepared_network prepare_inference(const plan& p, const parameters<float>& theta);
    // The same as log_likelihoods(net.structure(), theta, x) for the theta net was made from.
    static std::vector<float> log_likelihoods(const prepared_network& net,
                                              const observations<float>& x);

    // Training evaluates the whole batch layer by layer: a task computes one position (forward)
    // or one weight set (backward) for every image, so each gradient is accumulated by one
    // task in a fixed order whatever the number of threads, without per-tile partial copies
    // of the parameters.
    template <class Seed>
    static std::vector<float> gradients(const plan& p, const parameters<float>& theta,
                                        const observations<float>& x, Seed&& seed,
                                        parameters<float>& grad, bool leaf_gradients = true) {
        validate(p, x);
        thread_local reusable<prepared> storage;
        const claim<prepared> mine(storage);
        const prepared& prep = prepare(p, theta, true, mine.get());
        // Activations are reused from call to call on this thread: training calls this once
        // per step with the same shapes. (A reference, not the thread_local itself, goes into
        // the tasks: a thread_local named inside a task would be the worker thread's own.)
        thread_local reusable<workspace> cached_workspace;
        const claim<workspace> my_workspace(cached_workspace);
        workspace& ws = my_workspace.get();
        const std::size_t n = x.count;
        forward(p, prep, x, 0, n, ws, true, true);
        std::vector<float> out(n * p.classes);
        copy_outputs(p, ws, 0, n, out);

        std::vector<float> dout(out.size(), 0.0f);
        seed(std::span<const float>(out), std::span<float>(dout));

        reset(p, grad);
        backward(p, theta, prep, x, n, dout, ws, grad, leaf_gradients);
        return out;
    }

    // Generation's upward pass (generation.hpp's upward_pass; defined in upward.hpp): every
    // layer's log-values of image b, in the sum-product or max-product semiring.
    template <class T>
    requires std::same_as<T, float>
    struct upward_prepared;
    static upward_prepared<float> prepare(const plan& p, const parameters<float>& theta);
    static void layer_values(const plan& p, const parameters<float>& theta,
                             const upward_prepared<float>& prep, const observations<float>& x,
                             std::size_t b, std::vector<std::vector<float>>& values,
                             semiring combine = semiring::sum_product);

  private:
    // Storage a thread reuses from call to call, and a claim on it for one call. A call that
    // finds it claimed (the same thread re-entered the backend: a seed that calls it, or a
    // oneTBB worker that picked up another call while waiting inside this one) gets fresh
    // storage of its own instead.
    template <class T>
    struct reusable {
        T value;
        bool busy = false;
    };
    template <class T>
    class claim {
      public:
        explicit claim(reusable<T>& r) : shared_(r), mine_(!r.busy) { r.busy = true; }
        ~claim() {
            if (mine_) shared_.busy = false;
        }
        claim(const claim&) = delete;
        claim& operator=(const claim&) = delete;
        T& get() const { return mine_ ? shared_.value : fresh_; }

      private:
        reusable<T>& shared_;
        bool mine_;
        mutable T fresh_;
    };

    // Zero gradients shaped for p, keeping the storage of an earlier call when it fits.
    // (The conv layers' arrays are left as they are: backward() writes them whole.)
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
        for (std::vector<float>* a : {&g.mean, &g.log_precision, &g.logits})
            std::fill(a->begin(), a->end(), 0.0f);
    }

    static constexpr float log_two_pi = 1.8378770664093454836f;

    static void exp_in_place(float* v, std::size_t n) {
        using batch = xsimd::batch<float>;
        std::size_t i = 0;
        for (; i + batch::size <= n; i += batch::size)
            tmm::detail::exp(batch::load_unaligned(v + i)).store_unaligned(v + i);
        for (; i < n; ++i) v[i] = std::exp(v[i]);
    }

    // log W and W = exp(log W) of one row of conv logits t: log W = t - logsumexp(t).
    // False (and nothing written) when the row holds NaN or +inf or is entirely -inf, values
    // that validate() refuses.
    static bool normalize_row(const float* t, std::size_t in, float* lw, float* lin) {
        using batch = xsimd::batch<float>;
        using cpu_kernels::detail::load_partial;
        constexpr std::size_t lanes = batch::size;
        constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
        const batch plus_infinity(std::numeric_limits<float>::infinity());
        const auto load = [&](const float* at, std::size_t width, float fill) {
            return width == lanes ? batch::load_unaligned(at) : load_partial(at, width, fill);
        };
        const auto store = [&](const batch& v, float* at, std::size_t width) {
            if (width == lanes)
                v.store_unaligned(at);
            else
                cpu_kernels::detail::store_partial(v, at, width);
        };
        batch top(minus_infinity);
        for (std::size_t a = 0; a < in; a += lanes) {
            const batch v = load(t + a, std::min(lanes, in - a), minus_infinity);
            if (xsimd::any(xsimd::isnan(v) | (v == plus_infinity))) return false;
            top = xsimd::max(top, v);
        }
        const float m = cpu_kernels::detail::horizontal_max(top);
        if (m == minus_infinity) return false;
        // W = exp(t - m) / sum: the exps are kept in lin on the way (no second exp)
        batch sum(0.0f);
        for (std::size_t a = 0; a < in; a += lanes) {
            const std::size_t width = std::min(lanes, in - a);
            const batch e = tmm::detail::exp(load(t + a, width, minus_infinity) - batch(m));
            store(e, lin + a, width);
            sum += e;
        }
        const float total = xsimd::hadd(sum);
        const batch norm(m + std::log(total)), scale(1.0f / total);
        for (std::size_t a = 0; a < in; a += lanes) {
            const std::size_t width = std::min(lanes, in - a);
            store(load(t + a, width, minus_infinity) - norm, lw + a, width);
            store(load(lin + a, width, 0.0f) * scale, lin + a, width);
        }
        return true;
    }

    // Whether every array of theta has the size p needs, the leaves' values are allowed and the
    // class prior is a distribution (as validate() decides; the conv logits are checked while
    // they are normalised).
    static bool leaves_and_sizes_fit(const plan& p, const parameters<float>& theta) {
        const std::size_t leaf = std::size_t(p.components) * p.patch_size();
        const bool gaussian = p.leaves == leaf_kind::gaussian;
        if (theta.mean.size() != (gaussian ? leaf : 0) ||
            theta.log_precision.size() != (gaussian ? leaf : 0) ||
            theta.logits.size() != (gaussian ? 0 : leaf * p.values) ||
            theta.log_prior.size() != std::size_t(p.classes) ||
            theta.theta.size() != p.layers.size())
            return false;
        for (std::size_t l = 0; l < p.layers.size(); ++l)
            if (theta.theta[l].size() != p.layers[l].weight_count()) return false;
        const auto finite = [](const std::vector<float>& a) {
            return std::all_of(a.begin(), a.end(), [](float v) { return std::isfinite(v); });
        };
        // rows of log-probabilities: no NaN or +inf, and not all -inf
        const auto distributions = [](const std::vector<float>& a, std::size_t row) {
            for (std::size_t start = 0; start < a.size(); start += row) {
                bool some = false;
                for (std::size_t i = start; i < start + row; ++i) {
                    if (std::isnan(a[i]) || a[i] == std::numeric_limits<float>::infinity())
                        return false;
                    some = some || a[i] != -std::numeric_limits<float>::infinity();
                }
                if (!some) return false;
            }
            return true;
        };
        // and each precision exp(log_precision) a finite float
        const float largest_log = largest_log_precision<float>();
        const bool precisions_fit =
            std::all_of(theta.log_precision.begin(), theta.log_precision.end(),
                        [&](float v) { return v < largest_log; });
        return finite(theta.mean) && finite(theta.log_precision) && precisions_fit &&
               distributions(theta.logits, std::size_t(p.values)) &&
               distributions(theta.log_prior, std::size_t(p.classes)) &&
               std::abs(log_prior_total(std::span<const float>(theta.log_prior))) <=
                   prior_tolerance;
    }

    // Weights in the layouts the kernels read, computed and packed once per call and shared
    // read-only by every tile.
    struct prepared {
        struct conv_weights {
            std::vector<float> log;  // log W, sets x O x I
            // per set, the GEMMs' B operands: W^T for the forward pass, W for din and dtheta
            // (training); W itself is not kept otherwise
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
        bool valid = true;  // false: a conv logit that validate() refuses (nothing else is set)
        cpu_kernels::leaf_tables tables;  // pointing into the arrays above
        // Per position of the grid: 1 where the first layer is a learned conv and every pixel
        // of the patch is padding. The representation there is log 1 = 0 in every channel for
        // every image, so the conv's output is log sum_i W[o,i] = log 1 = 0 (rows of W on the
        // simplex): forward passes skip that work.
        std::vector<std::uint8_t> padded;
        bool is_padded(std::size_t position) const {
            return !padded.empty() && padded[position] != 0;
        }

        // Fills everything for p and theta, reusing the storage of an earlier call (a training
        // run prepares the same shapes every step: no allocation, no fresh pages to fault in).
        void assign(const plan& p, const parameters<float>& theta, bool for_training) {
            valid = true;
            layers.resize(p.layers.size());
            for (std::size_t l = 0; l < p.layers.size(); ++l) {
                const layer& ly = p.layers[l];
                if (ly.kind != layer_kind::conv) continue;
                auto& w = layers[l];
                const std::size_t o = ly.out_channels, in = ly.in_channels;
                const std::size_t sets = ly.weight_sets, rows = sets * o;
                w.log.resize(rows * in);
                if (ly.fixed) w.log = log_weights(ly, theta.theta[l]);
                w.forward_size = cpu_kernels::mex_forward_packed_size(in, o);
                w.packed_forward.get(sets * w.forward_size);
                if (for_training) {
                    w.backward_size = cpu_kernels::mex_backward_packed_size(in, o);
                    w.packed_backward.get(sets * w.backward_size);
                }
                // One task per forward panel of outputs: its rows of W are computed into a
                // thread's scratch (log W = theta - logsumexp(theta) per row, vectorised), then
                // packed from there while they are in cache. W itself is kept only packed.
                const std::size_t nr = cpu_kernels::mex_forward_panel_width(o);
                const std::size_t panels = (o + nr - 1) / nr;
                std::atomic<bool> rows_valid = true;
                tbb::parallel_for(std::size_t(0), sets * panels, [&](std::size_t task) {
                    const std::size_t set = task / panels, n0 = task % panels * nr;
                    const std::size_t count = std::min(nr, o - n0);
                    float* block = cpu_kernels::detail::thread_scratch().weight_rows.get(nr * in);
                    for (std::size_t r = 0; r < count; ++r) {
                        const std::size_t row = set * o + n0 + r;
                        float* lw = w.log.data() + row * in;
                        if (ly.fixed) {
                            copy_floats(block + r * in, lw, in);
                            exp_in_place(block + r * in, in);
                        } else if (!normalize_row(theta.theta[l].data() + row * in, in, lw,
                                                  block + r * in)) {
                            rows_valid = false;
                            return;
                        }
                        // (the row just written, still in L1)
                        if (for_training)
                            cpu_kernels::mex_pack_backward_row(
                                in, o, n0 + r, block + r * in,
                                w.packed_backward.data() + set * w.backward_size);
                    }
                    cpu_kernels::mex_pack_forward_panel(
                        in, o, n0, block, in, w.packed_forward.data() + set * w.forward_size);
                });
                if (!rows_valid) {
                    valid = false;
                    return;  // prepare() has validate() throw
                }
            }
            padded.clear();
            if (p.layers[0].kind == layer_kind::conv && !p.layers[0].fixed) {
                padded.assign(std::size_t(p.positions()), 1);
                for (int j = 0; j < p.positions(); ++j)
                    for (int k = 0; k < p.patch_size(); ++k)
                        if (p.pixel_of(j, k) >= 0) padded[std::size_t(j)] = 0;
            }
            tables.components = p.components;
            tables.coordinates = p.patch_size();
            tables.values = p.values;
            tables.gaussian = p.leaves == leaf_kind::gaussian;
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
            // (moving a prepared moves the vectors' storage with it: the pointers stay valid)
            tables.mean_t = mean_t.data();
            tables.half_log_precision_t = half_log_precision_t.data();
            tables.half_precision_t = half_precision_t.data();
            tables.log_probabilities_t = leaf_log_probabilities_t.data();
        }
    };

    // The parameters checked and prepared in one pass over them: anything validate() would
    // refuse sends them through validate(), which throws the precise error.
    // `into` is the caller's (thread_local) storage, reused from call to call.
    static const prepared& prepare(const plan& p, const parameters<float>& theta, bool for_training,
                                   prepared& into) {
        if (!leaves_and_sizes_fit(p, theta)) validate(p, theta);
        into.assign(p, theta, for_training);
        if (!into.valid) validate(p, theta);
        return into;
    }

    // Activations of one tile, layer by layer: positions x rows x channels.
    struct workspace {
        std::vector<std::vector<float>> acts;
        // gradients flowing down, one layer at a time (every entry written before it is read:
        // growing them fills nothing)
        std::vector<float, cpu_detail::uninitialised_allocator<float>> d_out, d_in;
        // Training: per conv layer, what its forward pass kept of its shifted inputs for the
        // backward pass (mex_forward_packed's kept_e and kept_m), in the blocks of its input.
        std::vector<std::vector<float, cpu_detail::uninitialised_allocator<float>>> kept_e, kept_m;
        // Training only (see active_rows): per layer, whether its conv skips images; per layer
        // and position, the images it computes; per layer up to the marginalised one, the
        // position of the marginalised layer above each of its positions.
        std::vector<std::uint8_t> compacted;
        std::vector<std::vector<std::vector<std::uint32_t>>> active;
        std::vector<std::vector<int>> ancestor;
        // Training, a first conv that skips unobserved patches: per position and image
        // (positions x rows), whether the patch has an observed pixel (observed_patches)
        std::vector<std::uint8_t> patch_seen;
        // Where a layer skips images, blocks hold only the active images' rows, in order: the
        // representation (acts[0]), a compact copy of a layer's input (compact_in[l], l > 0),
        // and the conv outputs (acts[l + 1]) when only the backward pass reads them.
        std::vector<std::uint8_t> compact_outputs;
        std::vector<std::vector<float>> compact_in;
        // Pixel-major (pixel_major()): the tile's pixels, for inference over Gaussian leaves;
        // the batch's, for training's first conv when it skips images (with their stride)
        std::vector<float> pixels;
        std::size_t pixel_stride = 0;
        // Inference: where a fused window feeds another, acts[l] holds its values' product and
        // these their exponents and row shifts (cpu_kernels::mex_forward_window_parts)
        std::vector<std::vector<float>> exponents, shifts;
    };

    // to[i] += from[i] and to[i] = from[i] for i < n, vectorised (n is not known at compile
    // time, which leaves a plain loop scalar at -O2).
    static void add_floats(float* to, const float* from, std::size_t n) {
        using batch = xsimd::batch<float>;
        std::size_t i = 0;
        for (; i + batch::size <= n; i += batch::size)
            (batch::load_unaligned(to + i) + batch::load_unaligned(from + i))
                .store_unaligned(to + i);
        for (; i < n; ++i) to[i] += from[i];
    }
    static void copy_floats(float* to, const float* from, std::size_t n) {
        using batch = xsimd::batch<float>;
        std::size_t i = 0;
        for (; i + batch::size <= n; i += batch::size)
            batch::load_unaligned(from + i).store_unaligned(to + i);
        for (; i < n; ++i) to[i] = from[i];
    }

    // The reasons for which training may skip images' values at conv layer l, because they
    // are exactly log 1 = 0 or never read (active_rows says which images). Learned weights
    // (rows on the simplex) are needed where the skipped value must be 0.
    struct row_skips {
        bool below_marginalised = false;  // l <= m: under a marginalised position
        bool on_marginalised = false;     // l = m + 1: on top of one
        bool unobserved_patch = false;    // l = 0: a patch with every pixel missing
        bool any() const { return below_marginalised || on_marginalised || unobserved_patch; }
    };
    static row_skips skips_rows(const plan& p, const observations<float>& x, std::size_t l) {
        const layer& ly = p.layers[l];
        if (ly.kind != layer_kind::conv) return {};
        const bool marginalised = !x.kept_positions.empty();
        const std::size_t m = x.marginalized_layer;
        return {marginalised && l <= m, marginalised && !ly.fixed && l == m + 1,
                l == 0 && !ly.fixed};
    }

    // ancestor[l][j]: the position of the marginalised layer m's output that position j of
    // layer l's output lies under (-1: none), for l <= m.
    static void ancestors(const plan& p, std::size_t m, std::vector<std::vector<int>>& ancestor) {
        ancestor.resize(m + 1);
        ancestor[m].resize(std::size_t(p.layers[m].out_positions()));
        for (std::size_t j = 0; j < ancestor[m].size(); ++j) ancestor[m][j] = int(j);
        for (std::size_t k = m; k > 0; --k) {
            const layer& ly = p.layers[k];
            std::vector<int>& below = ancestor[k - 1];
            below.assign(std::size_t(ly.in_positions()), -1);
            if (ly.kind == layer_kind::conv)
                below = ancestor[k];
            else
                ly.for_each_member([&](int window, int j) { below[j] = ancestor[k][window]; });
        }
    }

    // The images (of the whole batch, in order) whose value at position j of conv layer l
    // training must compute. The others are skipped, exactly:
    // - below a marginalised position (l <= m): the value is replaced by log 1 = 0 at layer m
    //   and gets no gradient, so it is never read;
    // - on top of one (l = m + 1, the input there is 0 in every channel), and in the first
    //   conv where every pixel of the patch is missing (the representation is 0 in every
    //   channel): the value is log sum_i W[o,i] = log 1 = 0, and its share of the weight
    //   gradient, dout (W exp(0 - 0) - W), is 0. (The gradient it would pass down is zeroed at
    //   layer m, or reaches leaves whose pixels are all missing, which take none.)
    static void active_rows(const plan& p, const observations<float>& x, const workspace& ws,
                            std::size_t l, int j, std::size_t rows,
                            std::vector<std::uint32_t>& list) {
        const row_skips skips = skips_rows(p, x, l);
        const std::size_t m = x.marginalized_layer;
        const std::size_t positions = x.kept_positions.empty() ? 0 : p.layers[m].out_positions();
        const int above = skips.below_marginalised ? ws.ancestor[l][std::size_t(j)] : -1;
        const bool on_marginalised = skips.on_marginalised;
        const std::uint8_t* seen =
            skips.unobserved_patch ? ws.patch_seen.data() + std::size_t(j) * rows : nullptr;
        const std::uint8_t* kept = x.kept_positions.empty() ? nullptr : x.kept_positions.data();
        // Without a branch on the data (half the positions and pixels are kept at random):
        // every row is written, the count advances past the kept ones.
        list.resize(rows);
        std::size_t count = 0;
        for (std::size_t b = 0; b < rows; ++b) {
            bool keep = true;
            if (above >= 0) keep &= kept[b * positions + std::size_t(above)] != 0;
            if (on_marginalised) keep &= kept[b * positions + std::size_t(j)] != 0;
            if (seen != nullptr) keep &= seen[b] != 0;
            list[count] = std::uint32_t(b);
            count += keep;
        }
        list.resize(count);
    }

    // ws.patch_seen for the batch: whether each patch of each image has an observed pixel,
    // from the pixels laid out by pixel_major (ws.pixels; NaN where missing), 16 images at a
    // time: active_rows reads it where it would visit every image per position.
    static void observed_patches(const plan& p, std::size_t rows, workspace& ws) {
        using batch = xsimd::batch<float>;
        const std::size_t positions = std::size_t(p.positions()), stride = ws.pixel_stride;
        ws.patch_seen.resize(positions * rows);
        tbb::parallel_for(std::size_t(0), positions, [&](std::size_t j) {
            const std::vector<int>& pixels = patch_pixels(p, int(j));
            std::uint8_t* seen = ws.patch_seen.data() + j * rows;
            alignas(64) float any[batch::size];
            for (std::size_t b0 = 0; b0 < rows; b0 += batch::size) {
                auto observed = batch(0.0f) != batch(0.0f);  // none
                for (const int pixel : pixels) {
                    if (pixel < 0) continue;  // padding
                    const batch v =
                        batch::load_unaligned(ws.pixels.data() + std::size_t(pixel) * stride + b0);
                    observed = observed | (v == v);
                }
                xsimd::select(observed, batch(1.0f), batch(0.0f)).store_aligned(any);
                for (std::size_t b = b0; b < std::min(rows, b0 + batch::size); ++b)
                    seen[b] = any[b - b0] != 0.0f;
            }
        });
    }

    // Copies rows list[i] of the blocks src (rows of `width` floats) to dst, one after another.
    static void gather_rows(const float* src, std::span<const std::uint32_t> list,
                            std::size_t width, float* dst) {
        for (std::size_t i = 0; i < list.size(); ++i)
            copy_floats(dst + i * width, src + std::size_t(list[i]) * width, width);
    }

    // Inference of a validated batch, tile by tile, with prepared weights.
    static std::vector<float> infer(const plan& p, const prepared& prep,
                                    const observations<float>& x) {
        std::vector<float> out(x.count * p.classes);
        const std::size_t tiles = (x.count + inference_tile - 1) / inference_tile;
        tbb::parallel_for(std::size_t(0), tiles, [&](std::size_t t) {
            const std::size_t first = t * inference_tile;
            const std::size_t rows = std::min(inference_tile, x.count - first);
            thread_local workspace ws;  // each worker keeps its buffers between tiles and calls
            forward(p, prep, x, first, rows, ws, false, false);
            copy_outputs(p, ws, first, rows, out);
        });
        return out;
    }

    static void copy_outputs(const plan& p, const workspace& ws, std::size_t first,
                             std::size_t rows, std::vector<float>& out) {
        std::copy_n(ws.acts.back().begin(), rows * p.classes, out.begin() + first * p.classes);
    }

    // Log-densities of the leaves at every position: rep = positions x rows x M. A missing
    // coordinate contributes log 1 = 0.
    static void representation(const plan& p, const prepared& prep, const observations<float>& x,
                               std::size_t first, std::size_t rows, std::vector<float>& rep,
                               bool parallel) {
        const std::size_t m = p.components;
        rep.resize(std::size_t(p.positions()) * rows * m);
        for_each_index(parallel, p.positions(), [&](std::size_t i) {
            if (prep.is_padded(i))  // every coordinate missing: log 1 = 0
                std::fill_n(rep.data() + i * rows * m, rows * m, 0.0f);
            else
                representation_at(p, prep, x, first, rows, i, rep.data() + i * rows * m);
        });
    }

    // The pixel of each coordinate of the patch at `position` (-1: padding), in a per-thread
    // buffer that the thread's next call overwrites.
    static const std::vector<int>& patch_pixels(const plan& p, int position) {
        thread_local std::vector<int> pixels;
        pixels.resize(std::size_t(p.patch_size()));
        for (int k = 0; k < p.patch_size(); ++k) pixels[k] = p.pixel_of(position, k);
        return pixels;
    }

    // The representation at one position: rows x M, of images first + b.
    static void representation_at(const plan& p, const prepared& prep, const observations<float>& x,
                                  std::size_t first, std::size_t rows, std::size_t position,
                                  float* out) {
        cpu_kernels::leaf_log_densities(prep.tables, x, first, rows,
                                        patch_pixels(p, int(position)).data(),
                                        std::size_t(p.pixels()), out);
    }

    // f(i) for i < n, in parallel (oneTBB) or in order.
    template <class F>
    static void for_each_index(bool parallel, std::size_t n, F&& f) {
        if (parallel)
            tbb::parallel_for(std::size_t(0), n, [&](std::size_t i) { f(i); });
        else
            for (std::size_t i = 0; i < n; ++i) f(i);
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
    // Without keep_conv_outputs the representation is not kept either: the first conv computes
    // it position by position into a small buffer (rows x M) as it goes.
    static void forward(const plan& p, const prepared& prep, const observations<float>& x,
                        std::size_t first, std::size_t rows, workspace& ws, bool keep_conv_outputs,
                        bool parallel) {
        ws.acts.resize(p.layers.size() + 1);
        const bool fused_representation =
            !keep_conv_outputs && p.layers[0].kind == layer_kind::conv;
        // training skips the images whose conv values are not needed (active_rows)
        ws.compacted.assign(p.layers.size(), 0);
        ws.compact_outputs.assign(p.layers.size(), 0);
        ws.active.resize(p.layers.size());
        ws.compact_in.resize(p.layers.size());
        if (keep_conv_outputs) {
            for (std::size_t l = 0; l < p.layers.size(); ++l)
                if (skips_rows(p, x, l).any()) {
                    const layer& ly = p.layers[l];
                    ws.compacted[l] = 1;
                    ws.active[l].resize(std::size_t(ly.in_positions()));
                    if (l > 0)
                        ws.compact_in[l].resize(std::size_t(ly.in_positions()) * rows *
                                                std::size_t(ly.in_channels));
                }
            if (!x.kept_positions.empty()) ancestors(p, x.marginalized_layer, ws.ancestor);
            if (ws.compacted[0]) {  // the first conv's leaves read the pixels pixel-major
                ws.pixel_stride =
                    cpu_kernels::pixel_major(x, first, rows, std::size_t(p.pixels()), ws.pixels);
                if (skips_rows(p, x, 0).unobserved_patch) observed_patches(p, rows, ws);
            }
        }
        // a first conv that skips images computes the representation of the active ones itself
        const bool compact_representation = keep_conv_outputs && ws.compacted[0];
        if (compact_representation)
            ws.acts[0].resize(std::size_t(p.positions()) * rows * std::size_t(p.components));
        if (!fused_representation && !compact_representation)
            representation(p, prep, x, first, rows, ws.acts[0], parallel);
        ws.exponents.resize(p.layers.size() + 1);
        ws.shifts.resize(p.layers.size() + 1);
        bool parts_in = false;  // acts[l] holds a window's parts (inference)
        const bool zeros_unread = keep_conv_outputs && forward_zeros_unread(p, x, ws);
        const auto marginalize = [&](std::size_t k, float* act) {
            if (!zeros_unread) marginalize_positions(p, x, k, first, rows, act);
        };
        for (std::size_t l = 0; l < p.layers.size(); ++l) {
            const layer& ly = p.layers[l];
            const std::vector<float>& in = ws.acts[l];
            std::vector<float>& out = ws.acts[l + 1];
            const std::size_t ic = ly.in_channels, oc = ly.out_channels;
            if (ly.kind == layer_kind::pool) {
                // out[J] = sum of in[j] over the members of window J (rows x channels blocks)
                out.resize(std::size_t(ly.out_positions()) * rows * oc);
                for_each_index(parallel, ly.out_positions(), [&](std::size_t window) {
                    float* dst = out.data() + window * rows * oc;
                    std::fill_n(dst, rows * oc, 0.0f);
                    for (int slot = 0; slot < ly.window_size; ++slot) {
                        const int j = ly.members[window * ly.window_size + slot];
                        if (j < 0) continue;
                        add_floats(dst, in.data() + std::size_t(j) * rows * ic, rows * oc);
                    }
                });
                marginalize(l, out.data());
                continue;
            }
            const auto& w = prep.layers[l];
            if (keep_conv_outputs) {
                ws.kept_e.resize(p.layers.size());
                ws.kept_m.resize(p.layers.size());
                ws.kept_e[l].resize(std::size_t(ly.in_positions()) * rows * ic);
                ws.kept_m[l].resize(std::size_t(ly.in_positions()) * rows);
            }
            // where position j keeps its shifted inputs (training), or nullptr
            const auto kept_e_at = [&](int j) {
                return keep_conv_outputs ? ws.kept_e[l].data() + j * rows * ic : nullptr;
            };
            const auto kept_m_at = [&](int j) {
                return keep_conv_outputs ? ws.kept_m[l].data() + j * rows : nullptr;
            };
            const auto conv_at = [&](int j, float* conv_out, float* pooled, bool accumulate) {
                const std::size_t set = ly.set_of_position[j];
                const float* source = in.data() + j * rows * ic;
                if (l == 0 && fused_representation) {
                    thread_local std::vector<float> rep;
                    rep.resize(rows * ic);
                    representation_at(p, prep, x, first, rows, j, rep.data());
                    source = rep.data();
                }
                cpu_kernels::mex_forward_packed(rows, ic, oc, source, w.forward(set),
                                                w.log.data() + set * oc * ic, conv_out, pooled,
                                                accumulate, kept_e_at(j), kept_m_at(j));
            };
            // Training, a layer that skips images (active_rows): the active images' values go
            // to conv_out, compact (only their rows, in order) when compact_out, else at their
            // rows with 0 at the others; pooled (if given) += them at their rows. The input the
            // backward pass needs is kept compact (acts[0] for the representation, else
            // compact_in[l]) unless every image is active.
            const auto conv_rows_at = [&](int j, float* conv_out, float* pooled, bool compact_out) {
                std::vector<std::uint32_t>& list = ws.active[l][std::size_t(j)];
                active_rows(p, x, ws, l, j, rows, list);
                const std::size_t r = list.size();
                const float* source = in.data() + j * rows * ic;
                if (l == 0) {
                    cpu_kernels::leaf_log_densities(prep.tables, ws.pixels.data(), ws.pixel_stride,
                                                    r, patch_pixels(p, j).data(),
                                                    ws.acts[0].data() + j * rows * ic, list.data());
                } else if (r < rows) {
                    float* compact = ws.compact_in[l].data() + j * rows * ic;
                    gather_rows(in.data() + j * rows * ic, list, ic, compact);
                    source = compact;
                }
                if (r == rows) return conv_at(j, conv_out, pooled, true);
                if (!compact_out) std::fill_n(conv_out, rows * oc, 0.0f);
                if (r == 0) return;
                thread_local std::vector<float> values;
                if (!compact_out) values.resize(r * oc);
                float* value = compact_out ? conv_out : values.data();
                const std::size_t set = ly.set_of_position[j];
                cpu_kernels::mex_forward_packed(r, ic, oc, source, w.forward(set),
                                                w.log.data() + set * oc * ic, value, nullptr, false,
                                                kept_e_at(j), kept_m_at(j));
                for (std::size_t i = 0; i < r; ++i) {
                    float* row = value + i * oc;
                    if (!compact_out) copy_floats(conv_out + std::size_t(list[i]) * oc, row, oc);
                    if (pooled != nullptr) add_floats(pooled + std::size_t(list[i]) * oc, row, oc);
                }
            };
            // In parallel, fusing would leave one task per window: with few windows (the top of
            // an HT model has one) the positions are spread over the threads instead, and the
            // pooling runs as a layer of its own.
            constexpr int fewest_parallel_windows = 16;
            const auto fused_at = [&](std::size_t k) {
                return k < p.layers.size() && p.layers[k].kind == layer_kind::conv &&
                       fused_with_pool(p, x, k) &&
                       (!parallel || p.layers[k + 1].out_positions() >= fewest_parallel_windows);
            };
            const bool fuse = fused_at(l);
            if (!fuse) {
                out.resize(std::size_t(ly.out_positions()) * rows * oc);
                for_each_index(parallel, ly.in_positions(), [&](std::size_t j) {
                    if (ws.compacted[l])
                        conv_rows_at(int(j), out.data() + j * rows * oc, nullptr, false);
                    else
                        conv_at(int(j), out.data() + j * rows * oc, nullptr, false);
                });
                marginalize(l, out.data());
                continue;
            }
            // fused: window by window, members in order (the sum of the unfused pooling)
            const layer& pool = p.layers[l + 1];
            std::vector<float>& pooled = ws.acts[l + 2];
            pooled.resize(std::size_t(pool.out_positions()) * rows * oc);
            if (keep_conv_outputs) out.resize(std::size_t(ly.out_positions()) * rows * oc);
            ws.compact_outputs[l] = keep_conv_outputs && ws.compacted[l];
            if (!keep_conv_outputs) {
                // inference: one call per window, one log per output, or none where the next
                // layer is another window (it reads the parts of this one's product, and takes
                // no exp). Over Gaussian leaves the first conv computes its inputs from the
                // tile's pixels as it packs them.
                const bool from_leaves = l == 0 && fused_representation && prep.tables.gaussian;
                const bool parts_out =
                    fused_at(l + 2) && (x.kept_positions.empty() || x.marginalized_layer != l + 1);
                if (parts_out) {
                    ws.exponents[l + 2].resize(pooled.size());
                    ws.shifts[l + 2].resize(std::size_t(pool.out_positions()) * rows);
                }
                const std::size_t stride =
                    from_leaves ? cpu_kernels::pixel_major(x, first, rows, std::size_t(p.pixels()),
                                                           ws.pixels)
                                : 0;
                for_each_index(parallel, pool.out_positions(), [&](std::size_t window) {
                    thread_local std::vector<const float*> ins, packed, logs;
                    thread_local std::vector<cpu_kernels::window_parts> parts;
                    thread_local std::vector<float> reps;
                    thread_local std::vector<int> member_pixels;
                    thread_local std::vector<const int*> patches;
                    ins.clear(), packed.clear(), logs.clear(), member_pixels.clear();
                    parts.clear();
                    if (l == 0 && fused_representation && !from_leaves)
                        reps.resize(std::size_t(pool.window_size) * rows * ic);
                    for (int slot = 0; slot < pool.window_size; ++slot) {
                        const int j = pool.members[window * pool.window_size + slot];
                        if (j < 0) continue;
                        // a patch of padding only adds log 1 = 0 (see prepared::padded)
                        if (l == 0 && prep.is_padded(std::size_t(j))) continue;
                        const std::size_t set = ly.set_of_position[j];
                        if (from_leaves) {  // the member's input is its patch's pixels
                            const std::vector<int>& pixels = patch_pixels(p, j);
                            member_pixels.insert(member_pixels.end(), pixels.begin(), pixels.end());
                        } else if (l == 0 && fused_representation) {
                            float* rep = reps.data() + ins.size() * rows * ic;
                            representation_at(p, prep, x, first, rows, j, rep);
                            ins.push_back(rep);
                        } else if (parts_in) {
                            parts.push_back({in.data() + j * rows * ic,
                                             ws.exponents[l].data() + j * rows * ic,
                                             ws.shifts[l].data() + j * rows});
                        } else {
                            ins.push_back(in.data() + j * rows * ic);
                        }
                        packed.push_back(w.forward(set));
                        logs.push_back(w.log.data() + set * oc * ic);
                    }
                    float* dst = pooled.data() + window * rows * oc;
                    cpu_kernels::detail::window_values out{dst};
                    if (parts_out)
                        out = {nullptr, dst, ws.exponents[l + 2].data() + window * rows * oc,
                               ws.shifts[l + 2].data() + window * rows};
                    if (from_leaves) {
                        patches.clear();
                        for (std::size_t i = 0; i < packed.size(); ++i)
                            patches.push_back(member_pixels.data() + i * p.patch_size());
                        cpu_kernels::mex_forward_window_from_leaves(
                            rows, oc, packed.size(), prep.tables, ws.pixels.data(), stride,
                            patches.data(), packed.data(), logs.data(), out);
                    } else {
                        cpu_kernels::mex_forward_window_parts(
                            rows, ic, oc, packed.size(), ins.data(),
                            parts_in ? parts.data() : nullptr, packed.data(), logs.data(), out);
                    }
                });
                marginalize_positions(p, x, l + 1, first, rows, pooled.data());
                parts_in = parts_out;
                ++l;
                continue;
            }
            for_each_index(parallel, pool.out_positions(), [&](std::size_t window) {
                float* dst = pooled.data() + window * rows * oc;
                if (ws.compacted[l]) {  // training: the members' active rows add into dst
                    std::fill_n(dst, rows * oc, 0.0f);
                    for (int slot = 0; slot < pool.window_size; ++slot)
                        if (const int j = pool.members[window * pool.window_size + slot]; j >= 0)
                            conv_rows_at(j, out.data() + j * rows * oc, dst, true);
                    return;
                }
                bool accumulate = false;
                for (int slot = 0; slot < pool.window_size; ++slot) {
                    const int j = pool.members[window * pool.window_size + slot];
                    if (j < 0) continue;
                    conv_at(j, keep_conv_outputs ? out.data() + j * rows * oc : nullptr, dst,
                            accumulate);
                    accumulate = true;
                }
                if (!accumulate) std::fill_n(dst, rows * oc, 0.0f);  // only padded slots
            });
            marginalize(l + 1, pooled.data());
            ++l;
        }
    }

    // Positions marginalised by the caller become log 1 = 0 in every channel (in a forward
    // pass), or pass no gradient (in a backward pass): both zero the same entries.
    static void marginalize_positions(const plan& p, const observations<float>& x, std::size_t l,
                                      std::size_t first, std::size_t rows, float* act) {
        if (x.kept_positions.empty() || l != x.marginalized_layer) return;
        const layer& ly = p.layers[l];
        const std::size_t positions = ly.out_positions(), channels = ly.out_channels;
        for (std::size_t j = 0; j < positions; ++j)
            for (std::size_t b = 0; b < rows; ++b)
                if (!x.position_kept(l, first + b, positions, j))
                    std::fill_n(act + (j * rows + b) * channels, channels, 0.0f);
    }

    // Training skips work on the rows that marginalize_positions zeroes at the marginalised
    // layer m when nothing reads them:
    // - forward: the conv above m computes only the images whose position there is kept
    //   (active_rows, on_marginalised), and its backward pass reads its input only there;
    // - backward: the gradient at m's output goes down through poolings only to a conv that
    //   takes it only for the images whose position at m is kept (active_rows,
    //   below_marginalised), and passes 0 to the others.
    static bool forward_zeros_unread(const plan& p, const observations<float>& x,
                                     const workspace& ws) {
        if (x.kept_positions.empty()) return false;
        const std::size_t above = x.marginalized_layer + 1;
        return above < p.layers.size() && ws.compacted[above] &&
               skips_rows(p, x, above).on_marginalised;
    }
    static bool backward_zeros_unread(const plan& p, const observations<float>& x,
                                      const workspace& ws) {
        if (x.kept_positions.empty()) return false;
        for (std::size_t k = x.marginalized_layer + 1; k-- > 0;)
            if (p.layers[k].kind == layer_kind::conv)
                return ws.compacted[k] && skips_rows(p, x, k).below_marginalised;
        return false;  // the leaves read it
    }

    // Gradients of the whole batch (rows images from the first), layer by layer from the top;
    // grad's leaf arrays must be zero on entry (reset), its conv arrays are written whole.
    static void backward(const plan& p, const parameters<float>& theta, const prepared& prep,
                         const observations<float>& x, std::size_t rows,
                         const std::vector<float>& dout_all, workspace& ws, parameters<float>& grad,
                         bool with_leaves) {
        // gradient with respect to the last activations: rows x K, from the caller's seed
        auto& d_out = ws.d_out;
        auto& d_in = ws.d_in;
        d_out.assign(dout_all.begin(), dout_all.begin() + rows * p.classes);
        // A pooling passes each window's gradient unchanged to its members: the conv below
        // reads it there (d_out block window_of[j] for position j) instead of a copy per member.
        std::vector<int> window_of;
        const bool zeros_unread = backward_zeros_unread(p, x, ws);
        for (std::size_t l = p.layers.size(); l-- > 0;) {
            const layer& ly = p.layers[l];
            const std::size_t ic = ly.in_channels, oc = ly.out_channels;
            if (!zeros_unread) marginalize_positions(p, x, l, 0, rows, d_out.data());
            if (ly.kind == layer_kind::pool && l > 0 && p.layers[l - 1].kind == layer_kind::conv &&
                (x.kept_positions.empty() || x.marginalized_layer != l - 1)) {
                window_of.assign(ly.in_positions(), -1);
                ly.for_each_member([&](int w, int j) { window_of[j] = w; });
                continue;  // d_out stays the pooling's output gradient
            }
            d_in.resize(std::size_t(ly.in_positions()) * rows * ic);  // every block is written
            if (ly.kind == layer_kind::pool) {
                for_each_index(true, ly.out_positions(), [&](std::size_t window) {
                    for (int slot = 0; slot < ly.window_size; ++slot)
                        if (const int j = ly.members[window * ly.window_size + slot]; j >= 0)
                            std::copy_n(d_out.data() + window * rows * oc, rows * oc,
                                        d_in.data() + std::size_t(j) * rows * ic);
                });
            } else {
                const auto& w = prep.layers[l];
                const bool need_input = l > 0 || with_leaves;  // d rep feeds the leaves only
                // one task per weight set: its positions in order accumulate its gradient
                for_each_index(true, ly.weight_sets, [&](std::size_t set) {
                    float* dtheta = ly.fixed ? nullptr : grad.theta[l].data() + set * oc * ic;
                    bool first = true;  // the set's first position writes its gradient
                    for (int j = 0; j < ly.in_positions(); ++j) {
                        if (std::size_t(ly.set_of_position[j]) != set) continue;
                        const std::size_t block =
                            window_of.empty() ? std::size_t(j) : std::size_t(window_of[j]);
                        if (ws.compacted[l] && ws.active[l][std::size_t(j)].size() < rows) {
                            // only the images forward computed (active_rows): the others pass
                            // no gradient down and add none to the weights'
                            const std::vector<std::uint32_t>& list = ws.active[l][std::size_t(j)];
                            float* din = need_input ? d_in.data() + j * rows * ic : nullptr;
                            if (din != nullptr) {  // 0 for the skipped images
                                std::size_t next = 0;
                                for (const std::uint32_t b : list) {
                                    std::fill(din + next * ic, din + b * ic, 0.0f);
                                    next = b + 1;
                                }
                                std::fill(din + next * ic, din + rows * ic, 0.0f);
                            }
                            if (list.empty()) continue;
                            thread_local std::vector<float> c_out, c_dout, c_din;
                            const std::size_t r = list.size();
                            const float* c_in = l == 0 ? ws.acts[0].data() + j * rows * ic
                                                       : ws.compact_in[l].data() + j * rows * ic;
                            const float* out = ws.acts[l + 1].data() + j * rows * oc;
                            if (!ws.compact_outputs[l]) {
                                c_out.resize(r * oc);
                                gather_rows(out, list, oc, c_out.data());
                                out = c_out.data();
                            }
                            c_dout.resize(r * oc);
                            c_din.resize(din != nullptr ? r * ic : 0);
                            gather_rows(d_out.data() + block * rows * oc, list, oc, c_dout.data());
                            cpu_kernels::mex_backward_packed(
                                r, ic, oc, c_in, out, c_dout.data(), w.backward(set),
                                w.log.data() + set * oc * ic,
                                din != nullptr ? c_din.data() : nullptr, dtheta, first,
                                ws.kept_e[l].data() + j * rows * ic,
                                ws.kept_m[l].data() + j * rows);
                            if (din != nullptr)
                                for (std::size_t i = 0; i < r; ++i)
                                    copy_floats(din + std::size_t(list[i]) * ic,
                                                c_din.data() + i * ic, ic);
                            first = false;
                            continue;
                        }
                        cpu_kernels::mex_backward_packed(
                            rows, ic, oc, ws.acts[l].data() + j * rows * ic,
                            ws.acts[l + 1].data() + j * rows * oc, d_out.data() + block * rows * oc,
                            w.backward(set), w.log.data() + set * oc * ic,
                            need_input ? d_in.data() + j * rows * ic : nullptr, dtheta, first,
                            ws.kept_e[l].data() + j * rows * ic, ws.kept_m[l].data() + j * rows);
                        first = false;
                    }
                    if (first && dtheta != nullptr)  // a set no position uses
                        std::fill_n(dtheta, oc * ic, 0.0f);
                });
                if (!need_input) d_in.clear();
                window_of.clear();
            }
            std::swap(d_out, d_in);
        }
        if (with_leaves) leaf_gradients_by_blocks(p, theta, prep, x, rows, d_out.data(), grad);
    }

    // The leaves' gradients, in parallel over fixed blocks of positions, each into its own
    // partial sums, added in block order (the same result whatever the threads).
    static void leaf_gradients_by_blocks(const plan& p, const parameters<float>& theta,
                                         const prepared& prep, const observations<float>& x,
                                         std::size_t rows, const float* d_rep,
                                         parameters<float>& grad) {
        constexpr std::size_t positions_per_block = 16;
        const std::size_t blocks =
            (std::size_t(p.positions()) + positions_per_block - 1) / positions_per_block;
        std::vector<parameters<float>> partial(blocks);
        tbb::parallel_for(std::size_t(0), blocks, [&](std::size_t block) {
            parameters<float>& g = partial[block];
            g.mean.assign(grad.mean.size(), 0.0f);
            g.log_precision.assign(grad.log_precision.size(), 0.0f);
            g.logits.assign(grad.logits.size(), 0.0f);
            const std::size_t begin = block * positions_per_block;
            const std::size_t end =
                std::min(begin + positions_per_block, std::size_t(p.positions()));
            leaf_gradients(p, theta, prep, x, begin, end, rows, d_rep, g);
        });
        for (const parameters<float>& g : partial) {
            for (std::size_t i = 0; i < g.mean.size(); ++i) grad.mean[i] += g.mean[i];
            for (std::size_t i = 0; i < g.log_precision.size(); ++i)
                grad.log_precision[i] += g.log_precision[i];
            for (std::size_t i = 0; i < g.logits.size(); ++i) grad.logits[i] += g.logits[i];
        }
    }

    static void leaf_gradients(const plan& p, const parameters<float>& theta, const prepared& prep,
                               const observations<float>& x, std::size_t first_position,
                               std::size_t end_position, std::size_t rows, const float* d_rep,
                               parameters<float>& grad) {
        const int m = p.components, s = p.patch_size();
        const std::vector<float>& precision = prep.precision;
        const std::size_t first = 0;  // the whole batch
        for (int i = int(first_position); i < int(end_position); ++i)
            for (std::size_t b = 0; b < rows; ++b) {
                const float* seed = d_rep + (std::size_t(i) * rows + b) * m;
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

class cpu::prepared_network {
  public:
    prepared_network(prepared_network&&) = default;
    prepared_network& operator=(prepared_network&&) = default;
    // Not copyable: the prepared leaf tables point into the object's own arrays.
    prepared_network(const prepared_network&) = delete;
    prepared_network& operator=(const prepared_network&) = delete;

    const plan& structure() const { return plan_; }

  private:
    friend struct cpu;
    prepared_network() = default;
    plan plan_;
    prepared weights_;
};

inline cpu::prepared_network cpu::prepare_inference(const plan& p, const parameters<float>& theta) {
    validate(p, observations<float>{});  // the plan itself (an empty batch has nothing else)
    prepared_network net;
    net.plan_ = p;
    prepare(p, theta, false, net.weights_);
    return net;
}

inline std::vector<float> cpu::log_likelihoods(const prepared_network& net,
                                               const observations<float>& x) {
    if (net.plan_.layers.empty())
        throw input_error(
            "tmm: this prepared network holds nothing (it was moved from); "
            "make one with prepare_inference");
    validate(net.plan_, x);
    return infer(net.plan_, net.weights_, x);
}

}  // namespace tmm::backends

#include "../../detail/xsimd_warnings_pop.hpp"

#include "upward.hpp"
