// Generation's upward pass on the CPU backend (the `upward_pass` policy of generation.hpp):
// every layer's log-values of one image, in float32, with the backend's vectorised kernels.
// Sum-product convs are the log-space GEMMs of mex_kernels.hpp, run on each run of consecutive
// positions that share a weight set (one GEMM for a shared layer), with a vector-matrix
// product for a single position (an unshared layer); max-product convs are a vectorised max-plus
// product over log W^T. Included at the end of cpu.hpp, which declares the members defined here.
#pragma once

#include "../../detail/xsimd_warnings_push.hpp"

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "../../detail/exp.hpp"
#include "../../observations.hpp"
#include "../../parameters.hpp"
#include "../../plan.hpp"
#include "../../semiring.hpp"
#include "cpu.hpp"
#include "mex_kernels.hpp"

namespace tmm::backends {

namespace cpu_kernels {

// out[j, g] = max_a (log_w_t[a, g] + in[j, a]) for j < positions, g < O: the max-product
// semiring's conv at `positions` consecutive positions sharing one weight set. in: positions x
// I log-values (-inf allowed, never NaN or +inf); log_w_t: log W transposed, I x O (-inf where
// W is 0). Max and one addition per term are exact, so this equals the scalar definition bit
// for bit; a position with no possible child (every term -inf) gets -inf, and I = 0 gives -inf.
inline void max_plus_forward(std::size_t positions, std::size_t I, std::size_t O, const float* in,
                             const float* log_w_t, float* out) {
    using batch = detail::mex_batch;
    constexpr std::size_t lanes = detail::mex_lanes;
    constexpr std::size_t vectors = 4;  // output vectors per register block
    constexpr std::size_t block = vectors * lanes;
    constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < positions; ++j) {
        const float* x = in + j * I;
        float* y = out + j * O;
        for (std::size_t g0 = 0; g0 < O; g0 += block) {
            const std::size_t width = std::min(block, O - g0);
            batch acc[vectors];
            for (auto& a : acc) a = batch(minus_infinity);
            if (width == block) {
                for (std::size_t a = 0; a < I; ++a) {
                    const batch v(x[a]);
                    const float* w = log_w_t + a * O + g0;
                    for (std::size_t q = 0; q < vectors; ++q)
                        acc[q] = xsimd::max(acc[q], batch::load_unaligned(w + q * lanes) + v);
                }
                for (std::size_t q = 0; q < vectors; ++q)
                    acc[q].store_unaligned(y + g0 + q * lanes);
                continue;
            }
            const std::size_t used = (width + lanes - 1) / lanes;
            for (std::size_t a = 0; a < I; ++a) {
                const batch v(x[a]);
                const float* w = log_w_t + a * O + g0;
                for (std::size_t q = 0; q < used; ++q) {
                    const std::size_t n = std::min(lanes, width - q * lanes);
                    const batch lw = n == lanes
                                         ? batch::load_unaligned(w + q * lanes)
                                         : detail::load_partial(w + q * lanes, n, minus_infinity);
                    acc[q] = xsimd::max(acc[q], lw + v);
                }
            }
            for (std::size_t q = 0; q < used; ++q) {
                const std::size_t n = std::min(lanes, width - q * lanes);
                if (n == lanes)
                    acc[q].store_unaligned(y + g0 + q * lanes);
                else
                    detail::store_partial(acc[q], y + g0 + q * lanes, n);
            }
        }
    }
}

namespace detail {

// mex_forward_row with NV vectors per B panel.
template <std::size_t NV>
void mex_forward_row_panels(std::size_t I, std::size_t O, const float* in, const float* packed_w_t,
                            const float* log_weights, float* out) {
    using batch = mex_batch;
    constexpr std::size_t nr = NV * mex_lanes;
    constexpr std::size_t ways = 4;  // independent sums over k, to hide the FMA latency
    const float m = row_maximum(in, I);
    if (m == mex_minus_infinity) {
        std::fill_n(out, O, mex_minus_infinity);
        return;
    }
    const flush_to_zero_guard flush;
    thread_local std::vector<float> e;  // E = exp(in - m): at most 1, the largest exactly 1
    e.resize(I);
    std::size_t i = 0;
    for (; i + mex_lanes <= I; i += mex_lanes)
        tmm::detail::exp(batch::load_unaligned(in + i) - batch(m)).store_unaligned(e.data() + i);
    if (i < I)
        store_partial(tmm::detail::exp(load_partial(in + i, I - i, mex_minus_infinity) - batch(m)),
                      e.data() + i, I - i);
    const float threshold = mex_forward_threshold(I);
    alignas(64) float s[nr];
    for (std::size_t n0 = 0; n0 < O; n0 += nr) {
        // S[n0 .. n0 + nr) = sum_k E[k] W^T[k, .], from the panel of packed W^T (k-major)
        const float* panel = packed_w_t + n0 * I;
        batch acc[ways][NV];
        for (auto& way : acc)
            for (auto& a : way) a = batch(0.0f);
        std::size_t k = 0;
        for (; k + ways <= I; k += ways)
            for (std::size_t w = 0; w < ways; ++w) {
                const batch ek(e[k + w]);
                for (std::size_t v = 0; v < NV; ++v)
                    acc[w][v] = xsimd::fma(
                        ek, batch::load_unaligned(panel + (k + w) * nr + v * mex_lanes), acc[w][v]);
            }
        for (; k < I; ++k)
            for (std::size_t v = 0; v < NV; ++v)
                acc[0][v] = xsimd::fma(
                    batch(e[k]), batch::load_unaligned(panel + k * nr + v * mex_lanes), acc[0][v]);
        for (std::size_t v = 0; v < NV; ++v)
            ((acc[0][v] + acc[1][v]) + (acc[2][v] + acc[3][v])).store_aligned(s + v * mex_lanes);
        // out = m + log S where S is large enough to be exact, else the exact logsumexp
        const std::size_t width = std::min(nr, O - n0);
        for (std::size_t o = 0; o < width; ++o)
            out[n0 + o] = s[o] >= threshold ? m + std::log(s[o])
                                            : exact_log_sum_exp(in, log_weights + (n0 + o) * I, I);
    }
}

}  // namespace detail

// mex_forward_packed for a single row (one position of one image): the same method and
// guarantees (S = E W^T from the packed W^T, the exact logsumexp where S is below
// mex_forward_threshold), as a vector-matrix product instead of padding the row to a GEMM
// register tile of mex_mr rows.
inline void mex_forward_row(std::size_t I, std::size_t O, const float* in, const float* packed_w_t,
                            const float* log_weights, float* out) {
    if (O == 0) return;
    if (I == 0) {  // an empty sum
        std::fill_n(out, O, detail::mex_minus_infinity);
        return;
    }
    detail::with_panel_vectors(O, [&](auto nv) {
        detail::mex_forward_row_panels<decltype(nv)::value>(I, O, in, packed_w_t, log_weights, out);
    });
}

}  // namespace cpu_kernels

// The backend's packed weights (as for inference) plus log W^T of every conv weight set for
// the max-product semiring. Float only: the CPU backend computes in float32.
template <class T>
requires std::same_as<T, float>
struct cpu::upward_prepared {
    cpu::prepared weights;
    std::vector<std::vector<float>> log_weights_t;  // per conv layer: sets x I x O
};

inline cpu::upward_prepared<float> cpu::prepare(const plan& p, const parameters<float>& theta) {
    if (const std::string problem = plan_problem(p); !problem.empty())
        throw input_error("tmm: the plan is inconsistent: " + problem);
    upward_prepared<float> result;
    prepare(p, theta, false, result.weights);
    result.log_weights_t.resize(p.layers.size());
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        const layer& ly = p.layers[l];
        if (ly.kind != layer_kind::conv) continue;
        const std::size_t o = ly.out_channels, in = ly.in_channels;
        const std::vector<float>& lw = result.weights.layers[l].log;
        std::vector<float>& t = result.log_weights_t[l];
        t.resize(std::size_t(ly.weight_sets) * in * o);
        for (std::size_t set = 0; set < std::size_t(ly.weight_sets); ++set)
            for (std::size_t g = 0; g < o; ++g)
                for (std::size_t a = 0; a < in; ++a)
                    t[(set * in + a) * o + g] = lw[(set * o + g) * in + a];
    }
    return result;
}

inline void cpu::layer_values(const plan& p, const parameters<float>& theta,
                              const upward_prepared<float>& prep, const observations<float>& x,
                              std::size_t b, std::vector<std::vector<float>>& values,
                              semiring combine) {
    static_cast<void>(theta);  // everything the pass reads was prepared from it
    values.resize(p.layers.size() + 1);
    // one image is a tile of one row: positions x 1 x channels is the positions x channels
    // layout of the reference backend
    representation(p, prep.weights, x, b, 1, values[0], false);
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        const layer& ly = p.layers[l];
        const std::vector<float>& in = values[l];
        std::vector<float>& out = values[l + 1];
        const std::size_t ic = ly.in_channels, oc = ly.out_channels;
        out.resize(std::size_t(ly.out_positions()) * oc);
        if (ly.kind == layer_kind::pool) {
            // out[J] = sum of in[j] over the members of window J, in slot order
            for (int window = 0; window < ly.out_positions(); ++window) {
                float* dst = out.data() + std::size_t(window) * oc;
                std::fill_n(dst, oc, 0.0f);
                for (int slot = 0; slot < ly.window_size; ++slot) {
                    const int j = ly.members[std::size_t(window) * ly.window_size + slot];
                    if (j < 0) continue;
                    const float* src = in.data() + std::size_t(j) * ic;
                    for (std::size_t g = 0; g < oc; ++g) dst[g] += src[g];
                }
            }
        } else {
            const auto& w = prep.weights.layers[l];
            // runs of consecutive positions with one weight set: one kernel call each
            const int positions = ly.in_positions();
            for (int j = 0; j < positions;) {
                const int set = ly.set_of_position[j];
                int end = j + 1;
                while (end < positions && ly.set_of_position[end] == set) ++end;
                const std::size_t run = std::size_t(end - j);
                const float* source = in.data() + std::size_t(j) * ic;
                float* target = out.data() + std::size_t(j) * oc;
                if (combine == semiring::max_product)
                    cpu_kernels::max_plus_forward(
                        run, ic, oc, source,
                        prep.log_weights_t[l].data() + std::size_t(set) * ic * oc, target);
                else if (run == 1)
                    cpu_kernels::mex_forward_row(ic, oc, source, w.forward(set),
                                                 w.log.data() + std::size_t(set) * oc * ic, target);
                else
                    cpu_kernels::mex_forward_packed(run, ic, oc, source, w.forward(set),
                                                    w.log.data() + std::size_t(set) * oc * ic,
                                                    target);
                j = end;
            }
        }
        marginalize_positions(p, x, l, b, 1, out.data());
    }
}

}  // namespace tmm::backends

#include "../../detail/xsimd_warnings_pop.hpp"
