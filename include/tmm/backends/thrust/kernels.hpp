// Element kernels of the thrust backend: plain functors over flat indices, run by
// thrust::for_each on whatever device system thrust was configured with (CUDA with nvcc; TBB,
// OpenMP or sequential C++ with a host compiler). They see only raw pointers and sizes.
//
// Layout: every activation is images x positions x channels, an image's block contiguous.
// A conv ("MEX") layer is out[b,j,g] = log sum_a W[g,a] exp(in[b,j,a]), computed as a
// max-shifted GEMM: with m = max_a in[b,j,a] and E[a] = exp(in[a] - m),
// out = m + log sum_a W[g,a] E[a]. Where that sum is too small to be exact in float (the
// terms that carry it were flushed to zero), the output is the exact max-shifted logsumexp
// of log W[g,a] + in[a] instead, so -inf and tiny probabilities come out right.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define TMM_THRUST_HD __host__ __device__
#else
#define TMM_THRUST_HD
// On a CPU device system the inner loops use xsimd: without it GCC at -O2 leaves the
// float reductions scalar (it may not reassociate them).
#include "../../detail/xsimd_warnings_push.hpp"  // GCC 12 and AVX-512, see there

#include <xsimd/xsimd.hpp>

#include "../../detail/xsimd_warnings_pop.hpp"
#endif

namespace tmm::backends::thrust_kernels {

using index = std::size_t;

inline constexpr float log_two_pi = 1.8378770664093454836f;

// The forward fast path needs sum_a W[g,a] E[a] >= I * 2^-102: each flushed term moves the
// sum by at most 2^-126, so the error stays below float rounding (the CPU backend's rule).
TMM_THRUST_HD inline float forward_threshold(int inputs) {
    return float(inputs) * 0x1p-102f;
}
// The backward fast path divides by S = exp(out - m); it needs log S >= -40 log 2.
inline constexpr float backward_log_threshold = -40.0f * 0.693147180559945309f;

TMM_THRUST_HD inline float minus_infinity() {
    return -INFINITY;
}
// max without fmaxf's NaN rules (no NaN reaches the kernels), so that it inlines everywhere
TMM_THRUST_HD inline float larger(float a, float b) {
    return a > b ? a : b;
}
TMM_THRUST_HD inline bool is_nan(float v) {
    return v != v;
}

// sum_i a[i] b[i]: on a GPU with four independent partial sums in registers, on a CPU with
// two vectors of them.
TMM_THRUST_HD inline float dot(const float* a, const float* b, int n) {
#if defined(__CUDACC__)
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; ++i) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
#else
    using batch = xsimd::batch<float>;
    constexpr int lanes = int(batch::size);
    batch s0(0.0f), s1(0.0f);
    int i = 0;
    for (; i + 2 * lanes <= n; i += 2 * lanes) {
        s0 = xsimd::fma(batch::load_unaligned(a + i), batch::load_unaligned(b + i), s0);
        s1 = xsimd::fma(batch::load_unaligned(a + i + lanes), batch::load_unaligned(b + i + lanes),
                        s1);
    }
    for (; i + lanes <= n; i += lanes)
        s0 = xsimd::fma(batch::load_unaligned(a + i), batch::load_unaligned(b + i), s0);
    float s = xsimd::hadd(s0 + s1);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
#endif
}

// y[i] += s x[i]
TMM_THRUST_HD inline void axpy(float s, const float* x, float* y, int n) {
    int i = 0;
#if !defined(__CUDACC__)
    using batch = xsimd::batch<float>;
    constexpr int lanes = int(batch::size);
    const batch scale(s);
    for (; i + lanes <= n; i += lanes)
        xsimd::fma(scale, batch::load_unaligned(x + i), batch::load_unaligned(y + i))
            .store_unaligned(y + i);
#endif
    for (; i < n; ++i) y[i] += s * x[i];
}

// log sum_a exp(log_w[a] + in[a]), max-shifted; -inf when every term is -inf.
TMM_THRUST_HD inline float exact_log_sum_exp(const float* log_w, const float* in, int n) {
    float top = minus_infinity();
    for (int a = 0; a < n; ++a) top = larger(top, log_w[a] + in[a]);
    if (top == minus_infinity()) return top;
    float s = 0;
    for (int a = 0; a < n; ++a) s += expf(log_w[a] + in[a] - top);
    return top + logf(s);
}

// The geometry pixel_of needs, copied by value into the kernels.
struct image_geometry {
    int height, width, channels, pad, patch, grid_cols;

    TMM_THRUST_HD int pixel_of(int position, int k) const {
        const int channel = k % channels;
        const int within = k / channels;
        const int row = (position / grid_cols) * patch + within / patch - pad;
        const int col = (position % grid_cols) * patch + within % patch - pad;
        if (row < 0 || row >= height || col < 0 || col >= width) return -1;
        return (row * width + col) * channels + channel;
    }
};

// A kernel f(row, column) over rows x columns outputs, one task per output (a GPU thread
// each) or one task per row (on a CPU, where a task's index arithmetic would cost more
// than the output itself).
template <class F>
struct each_output {
    F f;
    int columns;
    TMM_THRUST_HD void operator()(index e) const { f(e / columns, int(e % columns)); }
};
template <class F>
struct each_row {
    F f;
    int columns;
    TMM_THRUST_HD void operator()(index r) const {
        for (int c = 0; c < columns; ++c) f(r, c);
    }
};

// ---------------------------------------------------------------------------------------------
// Parameters into the tables the kernels read

// One row of `in` values: log_w = theta - logsumexp(theta), w = exp(log_w). Fixed layers pass
// linear weights and `fixed`: log_w = log(w).
struct normalize_rows {
    const float* theta;
    float* log_w;
    float* w;
    int in;
    int fixed_rows;  // > 0: the weights are fixed and repeat every fixed_rows rows

    TMM_THRUST_HD void operator()(index r) const {
        const float* t = theta + (fixed_rows > 0 ? r % index(fixed_rows) : r) * in;
        float* lw = log_w + r * in;
        float* lin = w + r * in;
        if (fixed_rows > 0) {
            for (int a = 0; a < in; ++a) lin[a] = t[a], lw[a] = logf(t[a]);
            return;
        }
        float top = minus_infinity();
        for (int a = 0; a < in; ++a) top = larger(top, t[a]);
        float s = 0;
        for (int a = 0; a < in; ++a) s += expf(t[a] - top);
        const float norm = top + logf(s);
        for (int a = 0; a < in; ++a) lw[a] = t[a] - norm, lin[a] = expf(lw[a]);
    }
};

// wt[set][a][g] = w[set][g][a]; row = set * I + a, column g.
struct transpose_weights {
    const float* w;
    float* wt;
    int out, in;

    TMM_THRUST_HD void operator()(index row, int g) const {
        const index set = row / in, a = row % in;
        wt[row * out + g] = w[(set * out + g) * in + a];
    }
};

// Gaussian leaves, per (component d, coordinate k), stored coordinate-major (s x M) so that
// the representation's loop over components is contiguous: mu, (rho - log 2 pi) / 2 and
// lambda / 2.
struct gaussian_tables {
    const float* mean;           // M x s
    const float* log_precision;  // M x s
    int components, patch_size;
    float* mean_t;
    float* half_log_t;
    float* half_precision_t;

    TMM_THRUST_HD void operator()(index e) const {
        const index d = e / patch_size, k = e % patch_size;
        const index t = k * components + d;
        mean_t[t] = mean[e];
        half_log_t[t] = 0.5f * (log_precision[e] - log_two_pi);
        half_precision_t[t] = 0.5f * expf(log_precision[e]);
    }
};

// Categorical leaves: log P(x_k = v | d) from M x s x V into (s x V) x M.
struct categorical_table {
    const float* leaf_log;
    int components, patch_size, values;
    float* leaf_log_t;

    TMM_THRUST_HD void operator()(index e) const {
        const index v = e % values, dk = e / values;
        const index d = dk / patch_size, k = dk % patch_size;
        leaf_log_t[(k * values + v) * components + d] = leaf_log[e];
    }
};

// ---------------------------------------------------------------------------------------------
// Forward pass

// rep[b,i,d] = sum over observed coordinates k of patch i of log f_d(x_k), for one (image b,
// position i) per call. A missing value is NaN in `x` (the host folds the mask into the
// values before the upload); pixel_of[i * s + k] is the plan's pixel (-1: padding).
struct representation {
    const float* x;  // images x pixels
    const int* pixel_of;
    int pixels, positions, components, patch_size, values;
    const float* mean_t;            // Gaussian: s x M
    const float* half_log_t;        // Gaussian: s x M
    const float* half_precision_t;  // Gaussian: s x M
    const float* leaf_log_t;        // categorical: (s x V) x M (null for Gaussian leaves)
    float* rep;

    TMM_THRUST_HD void operator()(index bi) const {
        const index i = bi % positions, b = bi / positions;
        const float* image = x + b * pixels;
        const int* pixel = pixel_of + i * patch_size;
        float* out = rep + bi * components;
        for (int d = 0; d < components; ++d) out[d] = 0.0f;
        for (int k = 0; k < patch_size; ++k) {
            if (pixel[k] < 0) continue;
            const float v = image[pixel[k]];
            if (is_nan(v)) continue;
            if (leaf_log_t) {
                const float* row = leaf_log_t + (index(k) * values + index(v)) * components;
                for (int d = 0; d < components; ++d) out[d] += row[d];
            } else {
                const index at = index(k) * components;
                const float* mu = mean_t + at;
                const float* half = half_log_t + at;
                const float* lambda = half_precision_t + at;
                for (int d = 0; d < components; ++d) {
                    const float diff = v - mu[d];
                    out[d] += half[d] - lambda[d] * diff * diff;
                }
            }
        }
    }
};

// Per (image, position) row of a conv input: top[r] = max_a in[r,a], shifted[r,a] =
// exp(in[r,a] - top[r]) (all zero when the row is all -inf).
struct shift_rows {
    const float* in;
    float* shifted;
    float* top;
    int channels;

    TMM_THRUST_HD void operator()(index r) const {
        const float* row = in + r * channels;
        float m = minus_infinity();
        for (int a = 0; a < channels; ++a) m = larger(m, row[a]);
        top[r] = m;
        float* e = shifted + r * channels;
        for (int a = 0; a < channels; ++a) e[a] = m == minus_infinity() ? 0.0f : expf(row[a] - m);
    }
};

// The conv output of row r = (image, position j) in channel g.
struct conv_value {
    const float* in;       // rows x I
    const float* shifted;  // rows x I
    const float* top;      // rows
    const float* w;        // sets x O x I
    const float* log_w;    // sets x O x I
    const int* set_of_position;
    int positions, in_channels, out_channels;
    float threshold;

    TMM_THRUST_HD index weight_row(index r, int g) const {
        return (index(set_of_position[r % positions]) * out_channels + g) * in_channels;
    }
    // sum_a W[g,a] E[r,a]; out = top[r] + log of it when it is >= threshold
    TMM_THRUST_HD float sum(index r, int g) const {
        return dot(w + weight_row(r, g), shifted + r * in_channels, in_channels);
    }
    TMM_THRUST_HD float exact(index r, int g) const {
        return exact_log_sum_exp(log_w + weight_row(r, g), in + r * in_channels, in_channels);
    }
    TMM_THRUST_HD float operator()(index r, int g) const {
        const float s = sum(r, g);
        return s >= threshold ? top[r] + logf(s) : exact(r, g);
    }
};

// out[b,j,g] for every (image, position, output channel); a marginalised position is 0.
struct conv_forward {
    conv_value conv;
    const std::uint8_t* kept;  // images x positions, or null
    float* out;

    TMM_THRUST_HD void operator()(index r, int g) const {
        out[r * conv.out_channels + g] = kept && !kept[r] ? 0.0f : conv(r, g);
    }
};

// Product pooling: out[b,w,g] = sum over the members j of window w of in[b,j,g].
struct pool_forward {
    const float* in;
    const int* members;  // windows x window_size, -1 = padded slot
    int in_positions, windows, window_size, channels;
    const std::uint8_t* kept;  // images x windows, or null
    float* out;

    TMM_THRUST_HD void operator()(index bw, int g) const {
        const index w = bw % windows, b = bw / windows;
        const index e = bw * channels + g;
        if (kept && !kept[bw]) {
            out[e] = 0.0f;
            return;
        }
        float sum = 0;
        for (int slot = 0; slot < window_size; ++slot) {
            const int j = members[w * window_size + slot];
            if (j >= 0) sum += in[(b * in_positions + j) * channels + g];
        }
        out[e] = sum;
    }
};

// A conv followed by a pooling, fused (inference only): the conv outputs are summed over
// each window without being stored.
struct conv_pool_forward {
    conv_value conv;
    const int* members;
    int windows, window_size;
    float* out;

    TMM_THRUST_HD void operator()(index bw, int g) const {
        const index w = bw % windows, b = bw / windows;
        // sum_j (top_j + log s_j) = sum_j top_j + log prod_j s_j: one log per window while the
        // product stays well inside float's range (each fast-path s_j lies in (0, 1])
        float tops = 0, product = 1, logs = 0;
        for (int slot = 0; slot < window_size; ++slot) {
            const int j = members[w * window_size + slot];
            if (j < 0) continue;
            const index r = b * conv.positions + j;
            const float s = conv.sum(r, g);
            if (s >= conv.threshold) {
                tops += conv.top[r];
                product *= s;
                if (product < 0x1p-100f) logs += logf(product), product = 1;
            } else {
                logs += conv.exact(r, g);
            }
        }
        out[bw * conv.out_channels + g] = tops + (logs + logf(product));
    }
};

#if !defined(__CUDACC__)
// v[i] = log v[i] with xsimd: on a CPU the scalar logf would cost more than the GEMM.
inline void log_in_place(float* v, int n) {
    using batch = xsimd::batch<float>;
    constexpr int lanes = int(batch::size);
    int i = 0;
    for (; i + lanes <= n; i += lanes)
        xsimd::log(batch::load_unaligned(v + i)).store_unaligned(v + i);
    for (; i < n; ++i) v[i] = logf(v[i]);
}

// conv_forward for a whole row r at once (CPU device systems): the sums of the row's
// outputs, one vectorised log, then the exact path where a sum was below the threshold.
struct conv_forward_rows {
    conv_forward f;

    void operator()(index r) const {
        const conv_value& conv = f.conv;
        const int oc = conv.out_channels;
        float* o = f.out + r * oc;
        if (f.kept && !f.kept[r]) {
            for (int g = 0; g < oc; ++g) o[g] = 0.0f;
            return;
        }
        for (int g = 0; g < oc; ++g) o[g] = conv.sum(r, g);
        bool all_fast = true;
        for (int g = 0; g < oc; ++g) all_fast &= o[g] >= conv.threshold;
        if (all_fast) {
            log_in_place(o, oc);
            for (int g = 0; g < oc; ++g) o[g] += conv.top[r];
            return;
        }
        for (int g = 0; g < oc; ++g)
            o[g] = o[g] >= conv.threshold ? conv.top[r] + logf(o[g]) : conv.exact(r, g);
    }
};

// conv_pool_forward for a whole row (image, window) at once (CPU device systems): the
// products of each output's sums in the row, then one vectorised log.
struct conv_pool_forward_rows {
    conv_pool_forward f;

    void operator()(index bw) const {
        const conv_value& conv = f.conv;
        const int oc = conv.out_channels;
        const index w = bw % f.windows, b = bw / f.windows;
        float* o = f.out + bw * oc;
        constexpr int tile = 64;
        float rest[tile];  // sum of the tops and of the logs taken so far, per output
        for (int g0 = 0; g0 < oc; g0 += tile) {
            const int n = oc - g0 < tile ? oc - g0 : tile;
            for (int t = 0; t < n; ++t) o[g0 + t] = 1.0f, rest[t] = 0.0f;
            for (int slot = 0; slot < f.window_size; ++slot) {
                const int j = f.members[w * f.window_size + slot];
                if (j < 0) continue;
                const index r = b * conv.positions + j;
                for (int t = 0; t < n; ++t) {
                    const int g = g0 + t;
                    const float s = conv.sum(r, g);
                    if (s >= conv.threshold) {
                        rest[t] += conv.top[r];
                        o[g] *= s;
                        if (o[g] < 0x1p-100f) rest[t] += logf(o[g]), o[g] = 1.0f;
                    } else {
                        rest[t] += conv.exact(r, g);
                    }
                }
            }
            log_in_place(o + g0, n);
            for (int t = 0; t < n; ++t) o[g0 + t] = rest[t] + o[g0 + t];
        }
    }
};
#endif

// ---------------------------------------------------------------------------------------------
// Backward pass

// Zeroes the gradient of the outputs at marginalised positions: their value is a constant.
struct zero_unkept {
    const std::uint8_t* kept;  // images x positions
    int channels;
    float* d;

    TMM_THRUST_HD void operator()(index r, int c) const {
        if (!kept[r]) d[r * channels + c] = 0.0f;
    }
};

// Pooling passes gradients through: d_in[b,j,g] = d_out[b, window of j, g].
struct pool_backward {
    const float* d_out;
    const int* window_of;  // in_positions
    int in_positions, windows, channels;
    float* d_in;

    TMM_THRUST_HD void operator()(index bj, int g) const {
        const index j = bj % in_positions, b = bj / in_positions;
        d_in[bj * channels + g] = d_out[(b * windows + index(window_of[j])) * channels + g];
    }
};

// Per conv output row r = (image, position): for each output g with a gradient seed and a
// finite output, either the fast-path factor scale[r,g] = seed exp(m - out) (then
// seed * p[g,a] = scale W[g,a] E[a]) or, when exp(out - m) is too small, a mark that the
// exact path handles (g, r). exact_count[r] counts the marks.
struct conv_backward_rows {
    const float* out;    // rows x O
    const float* d_out;  // rows x O
    const float* top;    // rows
    int out_channels;
    float* scale;         // rows x O
    std::uint8_t* exact;  // rows x O
    int* exact_count;     // rows

    TMM_THRUST_HD void operator()(index r) const {
        int count = 0;
        for (int g = 0; g < out_channels; ++g) {
            const index e = r * out_channels + g;
            const float o = out[e], seed = d_out[e];
            const bool live = seed != 0.0f && o != minus_infinity();
            const bool fast = live && o - top[r] >= backward_log_threshold;
            scale[e] = fast ? seed * expf(top[r] - o) : 0.0f;
            exact[e] = live && !fast;
            count += exact[e];
        }
        exact_count[r] = count;
    }
};

// d_in[r,a] = sum_g seed[r,g] p[r,g,a], p = W[g,a] exp(in[r,a] - out[r,g]).
struct conv_backward_input {
    const float* in;
    const float* shifted;
    const float* out;
    const float* d_out;
    const float* scale;
    const std::uint8_t* exact;
    const int* exact_count;
    const float* wt;     // sets x I x O
    const float* log_w;  // sets x O x I
    const int* set_of_position;
    int positions, in_channels, out_channels;
    float* d_in;

    TMM_THRUST_HD void operator()(index r, int a) const {
        const index e = r * in_channels + a;
        const index set = index(set_of_position[r % positions]);
        const index per_set = index(out_channels) * in_channels;
        float sum = shifted[e] * dot(wt + set * per_set + index(a) * out_channels,
                                     scale + r * out_channels, out_channels);
        if (exact_count[r] > 0)
            for (int g = 0; g < out_channels; ++g)
                if (exact[r * out_channels + g])
                    sum += d_out[r * out_channels + g] *
                           expf(log_w[set * per_set + index(g) * in_channels + a] + in[e] -
                                out[r * out_channels + g]);
        d_in[e] = sum;
    }
};

// Weight gradients of one chunk of images, for `block` consecutive inputs a of one (set, g):
// dtheta[g,a] = sum over rows r of the set of seed (p[r,g,a] - W[g,a]). Chunks are summed
// afterwards in a fixed order, so results do not depend on the device's scheduling.
struct conv_backward_weights {
#if defined(__CUDACC__) || defined(TMM_THRUST_OUTPUT_TASKS)
    static constexpr int outputs = 1, block = 16;  // accumulators in a GPU thread's registers
#else
    // 16 outputs share each row's loads; four AVX-512 vectors of inputs per row
    static constexpr int outputs = 16, block = 64;
#endif
    const float* in;
    const float* shifted;
    const float* out;
    const float* d_out;
    const float* scale;
    const std::uint8_t* exact;
    const float* w;
    const float* log_w;
    const int* set_offsets;    // sets + 1
    const int* set_positions;  // positions, grouped by set
    int positions, in_channels, out_channels, sets;
    index images, chunk;
    float* partial;  // chunks x sets x O x I

    static index tasks(index chunks, int sets, int out_channels, int in_channels) {
        return chunks * index(sets) * ((index(out_channels) + outputs - 1) / outputs) *
               ((index(in_channels) + block - 1) / block);
    }

    TMM_THRUST_HD void operator()(index e) const {
        const index blocks = (index(in_channels) + block - 1) / block;
        const index tiles = (index(out_channels) + outputs - 1) / outputs;
        const int a0 = int(e % blocks * block);
        const int g0 = int(e / blocks % tiles * outputs);
        const index set = e / blocks / tiles % index(sets);
        const index c = e / blocks / tiles / index(sets);
        const int width = in_channels - a0 < block ? in_channels - a0 : block;
        const int height = out_channels - g0 < outputs ? out_channels - g0 : outputs;
        float fast[outputs][block], slow[outputs][block], seeds[outputs];
        for (int t = 0; t < outputs; ++t) {
            seeds[t] = 0;
            for (int k = 0; k < block; ++k) fast[t][k] = 0, slow[t][k] = 0;
        }
        const index first = c * chunk, last = first + chunk < images ? first + chunk : images;
        for (index b = first; b < last; ++b)
            for (int q = set_offsets[set]; q < set_offsets[set + 1]; ++q) {
                const index r = b * positions + index(set_positions[q]);
                const float* ein = shifted + r * in_channels + a0;
                for (int t = 0; t < height; ++t) {
                    const index o = r * out_channels + g0 + t;
                    const float seed = d_out[o];
                    if (seed == 0.0f || out[o] == minus_infinity()) continue;
                    seeds[t] += seed;
                    if (exact[o]) {
                        const float* lw = log_w + (set * out_channels + g0 + t) * in_channels + a0;
                        const float* xin = in + r * in_channels + a0;
                        for (int k = 0; k < width; ++k)
                            slow[t][k] += seed * expf(lw[k] + xin[k] - out[o]);
                    } else {
                        axpy(scale[o], ein, fast[t], width);
                    }
                }
            }
        for (int t = 0; t < height; ++t) {
            const index row = (set * out_channels + g0 + t) * in_channels + a0;
            float* dst = partial + c * index(sets) * out_channels * in_channels + row;
            for (int k = 0; k < width; ++k)
                dst[k] = w[row + k] * (fast[t][k] - seeds[t]) + slow[t][k];
        }
    }
};

// into[i] = sum over chunks c (in order) of partial[c * stride + i].
struct sum_chunks {
    const float* partial;
    index chunks, stride;
    float* into;

    TMM_THRUST_HD void operator()(index i) const {
        float s = 0;
        for (index c = 0; c < chunks; ++c) s += partial[c * stride + i];
        into[i] = s;
    }
};

// Leaf gradients of one chunk of images for one (component d, coordinate k): Gaussian
// d/d mu = lambda (x - mu), d/d rho = 1/2 - lambda (x - mu)^2 / 2; categorical (per symbol u)
// d/d logit[u] = [x == u] - P(u). Observed coordinates only.
struct leaf_backward {
    const float* x;
    const float* d_rep;  // images x positions x M
    image_geometry geo;
    int positions, components, patch_size, values;
    const float* mean;
    const float* log_precision;
    const float* leaf_log;  // categorical: M x s x V, else null
    index images, chunk;
    float* partial;  // chunks x (Gaussian: 2 x M x s; categorical: M x s x V)

    TMM_THRUST_HD void operator()(index e) const {
        const index per_chunk_units = index(components) * patch_size * (leaf_log ? values : 1);
        const index c = e / per_chunk_units, unit = e % per_chunk_units;
        const int u = leaf_log ? int(unit % values) : 0;
        const index at = leaf_log ? unit / values : unit;  // d * s + k
        const int d = int(at / patch_size), k = int(at % patch_size);
        const index pixels = index(geo.height) * geo.width * geo.channels;
        const index first = c * chunk, last = first + chunk < images ? first + chunk : images;
        float lambda = 0, mu = 0, prob = 0;
        if (leaf_log)
            prob = expf(leaf_log[at * values + u]);
        else
            lambda = expf(log_precision[at]), mu = mean[at];
        float g1 = 0, g2 = 0;
        for (int i = 0; i < positions; ++i) {
            const int pixel = geo.pixel_of(i, k);
            if (pixel < 0) continue;
            for (index b = first; b < last; ++b) {
                const float v = x[b * pixels + pixel];
                if (is_nan(v)) continue;
                const float seed = d_rep[(b * positions + i) * components + d];
                if (leaf_log) {
                    g1 += seed * ((int(v) == u ? 1.0f : 0.0f) - prob);
                } else {
                    const float diff = v - mu;
                    g1 += seed * lambda * diff;
                    g2 += seed * (0.5f - 0.5f * lambda * diff * diff);
                }
            }
        }
        if (leaf_log) {
            partial[e] = g1;
        } else {
            const index leaf = index(components) * patch_size;
            partial[c * 2 * leaf + at] = g1;
            partial[c * 2 * leaf + leaf + at] = g2;
        }
    }
};

}  // namespace tmm::backends::thrust_kernels
