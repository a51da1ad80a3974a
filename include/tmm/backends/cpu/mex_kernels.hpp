#pragma once
// Single-threaded float32 kernels of the CPU backend's MEX layer (a 1x1 conv in log space):
// out[b,o] = log sum_i W[o,i] exp(in[b,i]) as a max-shifted GEMM with an exact logsumexp
// fallback where the GEMM underflows, and its backward pass (design.md sections 1, 3, 4).

#include "../../detail/xsimd_warnings_push.hpp"

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#include "../../detail/exp.hpp"

namespace tmm::backends::cpu_kernels {

// A window's values kept as the parts of its product, rows x I as read by the next window:
// value[b,i] = shift[b] + log product[b,i] + exponent[b,i] log 2 (see detail::window_values).
struct window_parts {
    const float* product;
    const float* exponent;
    const float* shift;
};

namespace detail {

using mex_batch = xsimd::batch<float>;
inline constexpr std::size_t mex_lanes = mex_batch::size;

// Register tile of the GEMM micro-kernel: mex_mr rows times mex_nv vectors of columns.
// 8 x 2 zmm accumulators (16 of 32 registers) cover the 4-cycle FMA latency of a core with two
// 512-bit FMA units, with room for the B loads; with 8-lane vectors (AVX2, 16 registers) 6 x 2.
inline constexpr std::size_t mex_mr = mex_lanes >= 16 ? 8 : 6;
inline constexpr std::size_t mex_nv = 2;

// Depth of one K block: a B micro-panel (mex_kc x 32 floats, 16 KiB) stays in L1 while
// every row block of A streams past it.
inline constexpr std::size_t mex_kc = 128;

// Rows per chunk: bounds the scratch (a chunk's E, S and G) to a few hundred KiB per thread.
inline constexpr std::size_t mex_rows_per_chunk = 128;

inline constexpr float mex_minus_infinity = -std::numeric_limits<float>::infinity();

// Forward fast-path threshold. Flushing to zero (exp below about -87.5, products under FTZ)
// moves each of the I terms of S = sum_i E[i] W[o,i] by at most 2^-126, so
// S carries an absolute error of at most I * 2^-126. Requiring S >= I * 2^-102 keeps that
// below 2^-24 relative, i.e. below float rounding; smaller S is recomputed exactly.
inline float mex_forward_threshold(std::size_t inputs) {
    return static_cast<float>(inputs) * 0x1p-102f;
}

// Backward fast-path threshold, as log S = out - m. The fast path scales by 1/S, so the flush
// error of each term of din and dtheta is at most |dout| * 2^-126 / S <= |dout| * 2^-86 here,
// and 1/S <= 2^40 cannot overflow for any sensible dout. Smaller S takes the exact path.
inline constexpr float mex_backward_log_threshold = -40.0f * 0.693147180559945309f;

inline constexpr std::size_t round_up(std::size_t n, std::size_t m) {
    return (n + m - 1) / m * m;
}

// A growable 64-byte aligned float buffer; contents are not kept when it grows.
class aligned_floats {
  public:
    float* get(std::size_t n) {
        if (n > capacity_) {
            data_.reset(static_cast<float*>(
                ::operator new[](n * sizeof(float), std::align_val_t{alignment})));
            capacity_ = n;
        }
        return data_.get();
    }
    float* data() { return data_.get(); }
    const float* data() const { return data_.get(); }

  private:
    static constexpr std::size_t alignment = 64;
    struct release {
        void operator()(float* p) const noexcept {
            ::operator delete[](p, std::align_val_t{alignment});
        }
    };
    std::unique_ptr<float[], release> data_;
    std::size_t capacity_ = 0;
};

// Per-thread scratch, reused across calls so the hot path never allocates once warm. Each
// thread has its own, which is what makes concurrent calls on different data safe.
struct mex_scratch {
    aligned_floats packed_weights;    // B operand of a GEMM: W^T (forward) or W (din)
    aligned_floats packed_rows;       // A operand: E (forward) or G (din)
    aligned_floats packed_g_t;        // A operand of the dtheta GEMM: G^T
    aligned_floats packed_e;          // B operand of the dtheta GEMM: E
    aligned_floats product;           // GEMM result of a chunk: S (forward) or G W (din)
    aligned_floats g;                 // G, row-major with padded columns
    aligned_floats theta_product;     // G^T E accumulated over chunks
    aligned_floats theta_exact;       // the exact path's share of dtheta
    aligned_floats dout_sum;          // sum over fast-path rows of dout, per output
    aligned_floats row_max;           // m_b of a chunk
    aligned_floats window_shift_sum;  // a pooling window's sum of its members' row maxima, M
    aligned_floats weight_rows;       // rows of W on their way to being packed
    std::vector<std::pair<std::size_t, std::size_t>> exact_entries;  // (row, output) pairs
    std::vector<unsigned char> exact_rows;  // outputs with a share in theta_exact
};

inline mex_scratch& thread_scratch() {
    thread_local mex_scratch scratch;
    return scratch;
}

// Sets flush-to-zero (FTZ) and denormals-are-zero (DAZ) for the life of the guard and
// restores MXCSR after: subnormal operands and results (tiny E and W as weights sharpen) are
// slow on many x86 cores. The thresholds above account for them being zero: a subnormal W or E
// read as 0 moves a term of S, G W or G^T E by less than 2^-126 of its other factor, the same
// bound as a flushed result. The exact paths work on logs, which are never subnormal.
// Elsewhere than x86 it does nothing.
class flush_to_zero_guard {
  public:
#if defined(__SSE__)
    flush_to_zero_guard() : saved_(_mm_getcsr()) {
        _mm_setcsr(saved_ | _MM_FLUSH_ZERO_ON | denormals_are_zero);
    }
    ~flush_to_zero_guard() {
        _mm_setcsr(saved_);
    }
#else
    flush_to_zero_guard() = default;
#endif
    flush_to_zero_guard(const flush_to_zero_guard&) = delete;
    flush_to_zero_guard& operator=(const flush_to_zero_guard&) = delete;

  private:
#if defined(__SSE__)
    static constexpr unsigned int denormals_are_zero = 0x0040;  // MXCSR bit 6 (SSE2 and later)
    unsigned int saved_;
#endif
};

// 0, 1, ..., mex_lanes - 1: compared with a width, it selects a vector's lanes past it.
inline mex_batch lane_indices() {
    alignas(64) float numbers[mex_lanes];
    for (std::size_t q = 0; q < mex_lanes; ++q) numbers[q] = float(q);
    return mex_batch::load_aligned(numbers);
}

// Loads the first n < mex_lanes floats at p and fills the other lanes; reads nothing past p + n.
inline mex_batch load_partial(const float* p, std::size_t n, float fill) {
    alignas(64) float buffer[mex_lanes];
    for (std::size_t j = 0; j < mex_lanes; ++j) buffer[j] = j < n ? p[j] : fill;
    return mex_batch::load_aligned(buffer);
}

// Stores the first n < mex_lanes lanes of v at p; writes nothing past p + n.
inline void store_partial(const mex_batch& v, float* p, std::size_t n) {
    alignas(64) float buffer[mex_lanes];
    v.store_aligned(buffer);
    for (std::size_t j = 0; j < n; ++j) p[j] = buffer[j];
}

// max over the lanes of v, without branches (it runs once per row).
inline float horizontal_max(const mex_batch& v) {
#if defined(__AVX512F__)
    if constexpr (mex_lanes == 16) return _mm512_reduce_max_ps(v);
#endif
    alignas(64) float buffer[mex_lanes];
    v.store_aligned(buffer);
    for (std::size_t width = mex_lanes / 2; width > 0; width /= 2)
        for (std::size_t j = 0; j < width; ++j) buffer[j] = std::max(buffer[j], buffer[j + width]);
    return buffer[0];
}

// m = max_i x[i] over n floats (-inf when n == 0 or every entry is -inf).
inline float row_maximum(const float* x, std::size_t n) {
    mex_batch acc(mex_minus_infinity);
    std::size_t i = 0;
    for (; i + mex_lanes <= n; i += mex_lanes)
        acc = xsimd::max(acc, mex_batch::load_unaligned(x + i));
    if (i < n) acc = xsimd::max(acc, load_partial(x + i, n - i, mex_minus_infinity));
    return horizontal_max(acc);
}

// log x for positive, normal, finite x, within 1 ulp (0.94 measured over all such floats);
// any other x gives an unspecified finite value. With x = 2^e m, m in [sqrt(1/2), sqrt(2)) and
// f = m - 1: log x = e log 2 + log1p(f), log1p(f) = f + f^2 P(f), P the degree-8 Chebyshev
// interpolant of (log1p(f) - f) / f^2 on that range (fitted for tmm; relative error 1.4e-8).
// The forward epilogue needs it only for S >= its threshold. Unlike xsimd::log it does not
// divide (1.8x faster here), and xsimd 8.1's float log does not compile at -O0 for AVX-512BW
// with GCC 12 (an int select in its subnormal branch).
inline mex_batch log_of_normal(const mex_batch& x) {
    using int_batch = xsimd::batch<std::int32_t, mex_batch::arch_type>;
    const int_batch bits = xsimd::bitwise_cast<int_batch>(x);
    // e = floor(log2(x / sqrt(1/2))), from the bits of x relative to those of sqrt(1/2).
    const int_batch e = (bits - int_batch(0x3f3504f3)) >> 23;
    const mex_batch f = xsimd::bitwise_cast<mex_batch>(bits - (e << 23)) - mex_batch(1.0f);
    mex_batch p(-7.673641294e-02f);
    p = xsimd::fma(p, f, mex_batch(1.272267252e-01f));
    p = xsimd::fma(p, f, mex_batch(-1.312755495e-01f));
    p = xsimd::fma(p, f, mex_batch(1.420485526e-01f));
    p = xsimd::fma(p, f, mex_batch(-1.662664562e-01f));
    p = xsimd::fma(p, f, mex_batch(2.000123411e-01f));
    p = xsimd::fma(p, f, mex_batch(-2.500078082e-01f));
    p = xsimd::fma(p, f, mex_batch(3.333333135e-01f));
    p = xsimd::fma(p, f, mex_batch(-4.999999702e-01f));
    const mex_batch log1p_f = xsimd::fma(f * f, p, f);
    // log 2 = 0.693359375 - 2.12194440e-4, the first part exact in float when scaled by e.
    const mex_batch e_float = xsimd::to_float(e);
    return xsimd::fma(e_float, mex_batch(0.693359375f),
                      xsimd::fma(e_float, mex_batch(-2.12194440e-4f), log1p_f));
}

// Exact, max-shifted log sum_i exp(x[i] + log_w[i]) over n entries; -inf when every term is
// -inf (the true sum is then exactly zero). The terms are never +inf or NaN.
inline float exact_log_sum_exp(const float* x, const float* log_w, std::size_t n) {
    mex_batch acc(mex_minus_infinity);
    std::size_t i = 0;
    for (; i + mex_lanes <= n; i += mex_lanes)
        acc = xsimd::max(acc,
                         mex_batch::load_unaligned(x + i) + mex_batch::load_unaligned(log_w + i));
    const std::size_t tail = n - i;
    mex_batch x_tail(mex_minus_infinity), w_tail(mex_minus_infinity);
    if (tail > 0) {
        x_tail = load_partial(x + i, tail, mex_minus_infinity);
        w_tail = load_partial(log_w + i, tail, mex_minus_infinity);
        acc = xsimd::max(acc, x_tail + w_tail);
    }
    const float top = horizontal_max(acc);
    if (top == mex_minus_infinity) return mex_minus_infinity;

    // sum_i exp(x + log_w - top) >= 1: the largest term is exactly exp(0).
    const mex_batch shift(top);
    mex_batch sum(0.0f);
    for (i = 0; i + mex_lanes <= n; i += mex_lanes)
        sum += tmm::detail::exp(mex_batch::load_unaligned(x + i) +
                                mex_batch::load_unaligned(log_w + i) - shift);
    if (tail > 0) sum += tmm::detail::exp(x_tail + w_tail - shift);
    return top + std::log(xsimd::hadd(sum));
}

// Packs the K x N row-major matrix src (leading dimension lds) as the B operand: panels of
// NV * mex_lanes columns, each stored k-major (dst[p][k][0..NV * mex_lanes)), zero-filled past
// column N.
template <std::size_t NV>
void pack_b(std::size_t k_size, std::size_t n_size, const float* src, std::size_t lds, float* dst) {
    constexpr std::size_t nr = NV * mex_lanes;
    for (std::size_t n0 = 0; n0 < n_size; n0 += nr) {
        const std::size_t width = std::min(nr, n_size - n0);
        float* panel = dst + n0 * k_size;
        for (std::size_t k = 0; k < k_size; ++k) {
            const float* s = src + k * lds + n0;
            float* d = panel + k * nr;
            if (width == nr) {
                for (std::size_t v = 0; v < nr; v += mex_lanes)
                    mex_batch::load_unaligned(s + v).store_aligned(d + v);
            } else {
                std::size_t j = 0;
                for (; j < width; ++j) d[j] = s[j];
                for (; j < nr; ++j) d[j] = 0.0f;
            }
        }
    }
}

#if defined(__AVX512F__)
inline constexpr bool mex_register_transpose = mex_lanes == 16 && mex_mr == 8;
#else
inline constexpr bool mex_register_transpose = false;
#endif

// dst[k * mex_mr + r] = rows[r][k] for k < mex_lanes, r < mex_mr: a tile of the packed A layout
// (dst need not be aligned: blocks of an odd K are not).
inline void transpose_tile(const mex_batch (&rows)[mex_mr], float* dst) {
#if defined(__AVX512F__)
    if constexpr (mex_register_transpose) {
        // 8 x 16 -> 16 x 8 in three shuffle steps. With [a b c d] the 128-bit lanes:
        // 1. pairs of rows interleaved per lane; 2. four rows per lane, one k each (u: rows 0-3,
        // v: rows 4-7, for k = 4l + j in lane l of the j-th vector); 3. lanes regrouped so that
        // output j holds k = 2j and 2j + 1 for all eight rows.
        __m512 t[8], u[4], v[4];
        for (int p = 0; p < 4; ++p) {
            t[2 * p] = _mm512_unpacklo_ps(rows[2 * p], rows[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(rows[2 * p], rows[2 * p + 1]);
        }
        u[0] = _mm512_shuffle_ps(t[0], t[2], 0x44);
        u[1] = _mm512_shuffle_ps(t[0], t[2], 0xEE);
        u[2] = _mm512_shuffle_ps(t[1], t[3], 0x44);
        u[3] = _mm512_shuffle_ps(t[1], t[3], 0xEE);
        v[0] = _mm512_shuffle_ps(t[4], t[6], 0x44);
        v[1] = _mm512_shuffle_ps(t[4], t[6], 0xEE);
        v[2] = _mm512_shuffle_ps(t[5], t[7], 0x44);
        v[3] = _mm512_shuffle_ps(t[5], t[7], 0xEE);
        // x_low = [u.a v.a u.b v.b], x_high = [u.c v.c u.d v.d].
        const __m512i low =
            _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        const __m512i high =
            _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
        for (int j = 0; j < 2; ++j) {
            // Vectors 2j (k = 4l + 2j) and 2j + 1 (k = 4l + 2j + 1) give outputs k0 = 4l + 2j.
            const __m512 x_low = _mm512_permutex2var_ps(u[2 * j], low, v[2 * j]);
            const __m512 x_high = _mm512_permutex2var_ps(u[2 * j], high, v[2 * j]);
            const __m512 y_low = _mm512_permutex2var_ps(u[2 * j + 1], low, v[2 * j + 1]);
            const __m512 y_high = _mm512_permutex2var_ps(u[2 * j + 1], high, v[2 * j + 1]);
            _mm512_storeu_ps(dst + (0 + 2 * j) * 8, _mm512_shuffle_f32x4(x_low, y_low, 0x44));
            _mm512_storeu_ps(dst + (4 + 2 * j) * 8, _mm512_shuffle_f32x4(x_low, y_low, 0xEE));
            _mm512_storeu_ps(dst + (8 + 2 * j) * 8, _mm512_shuffle_f32x4(x_high, y_high, 0x44));
            _mm512_storeu_ps(dst + (12 + 2 * j) * 8, _mm512_shuffle_f32x4(x_high, y_high, 0xEE));
        }
        return;
    }
#endif
    alignas(64) float tile[mex_mr][mex_lanes];
    for (std::size_t r = 0; r < mex_mr; ++r) rows[r].store_aligned(tile[r]);
    for (std::size_t k = 0; k < mex_lanes; ++k)
        for (std::size_t r = 0; r < mex_mr; ++r) dst[k * mex_mr + r] = tile[r][k];
}

// Packs an M x K matrix, given row by row, as the A operand: blocks of mex_mr rows, each stored
// k-major (dst[block][k][0..mex_mr)), zero past row M. row_vector(m, k0, width) returns
// entries k0 .. k0 + width - 1 of row m in its first lanes (width <= mex_lanes; it must fill
// the other lanes with zeros).
template <class RowVector>
void pack_a(std::size_t m_size, std::size_t k_size, float* dst, RowVector&& row_vector) {
    alignas(64) float tail_tile[mex_mr * mex_lanes];
    for (std::size_t m0 = 0; m0 < m_size; m0 += mex_mr) {
        const std::size_t height = std::min(mex_mr, m_size - m0);
        float* block = dst + m0 * k_size;
        for (std::size_t k0 = 0; k0 < k_size; k0 += mex_lanes) {
            const std::size_t width = std::min(mex_lanes, k_size - k0);
            mex_batch rows[mex_mr];
            for (std::size_t r = 0; r < mex_mr; ++r)
                rows[r] = r < height ? row_vector(m0 + r, k0, width) : mex_batch(0.0f);
            if (width == mex_lanes) {
                transpose_tile(rows, block + k0 * mex_mr);
            } else {
                transpose_tile(rows, tail_tile);
                std::copy_n(tail_tile, width * mex_mr, block + k0 * mex_mr);
            }
        }
    }
}

// Packs rows [0, m_size) of the row-major matrix src (leading dimension lds, k_size columns) as
// the A operand (see pack_a).
inline void pack_a_from_rows(std::size_t m_size, std::size_t k_size, const float* src,
                             std::size_t lds, float* dst) {
    pack_a(m_size, k_size, dst, [&](std::size_t m, std::size_t k0, std::size_t width) {
        return width == mex_lanes ? mex_batch::load_unaligned(src + m * lds + k0)
                                  : load_partial(src + m * lds + k0, width, 0.0f);
    });
}

// Packs the transpose of the K x M row-major matrix src (leading dimension lds >= round_up(M,
// mex_mr), zero-padded columns) as the A operand of an M x K product: A[m,k] = src[k,m].
inline void pack_a_from_columns(std::size_t m_size, std::size_t k_size, const float* src,
                                std::size_t lds, float* dst) {
    for (std::size_t m0 = 0; m0 < m_size; m0 += mex_mr) {
        float* block = dst + m0 * k_size;
        for (std::size_t k = 0; k < k_size; ++k)
            std::copy_n(src + k * lds + m0, mex_mr, block + k * mex_mr);
    }
}

// The register tile: C[0..mex_mr)[0..NV * mex_lanes) (=|+=) sum_k A[.,k] B[k,.] over one K
// block, with a (k-major, mex_mr per k) and b (k-major, NV * mex_lanes per k) pointing into
// packed operands. c is 64-byte aligned with leading dimension ldc (a multiple of mex_lanes).
template <std::size_t NV>
void micro_kernel(std::size_t kc, const float* a, const float* b, float* c, std::size_t ldc,
                  bool accumulate) {
    constexpr std::size_t nr = NV * mex_lanes;
    mex_batch acc[mex_mr][NV];
#pragma GCC unroll 16
    for (std::size_t r = 0; r < mex_mr; ++r)
#pragma GCC unroll 4
        for (std::size_t v = 0; v < NV; ++v)
            acc[r][v] =
                accumulate ? mex_batch::load_aligned(c + r * ldc + v * mex_lanes) : mex_batch(0.0f);

    // acc[r][v] += A[r,k] * B[k, v-th vector]: one broadcast per row, NV FMAs each.
    for (std::size_t k = 0; k < kc; ++k) {
        mex_batch bk[NV];
#pragma GCC unroll 4
        for (std::size_t v = 0; v < NV; ++v)
            bk[v] = mex_batch::load_aligned(b + k * nr + v * mex_lanes);
#pragma GCC unroll 16
        for (std::size_t r = 0; r < mex_mr; ++r) {
            const mex_batch ar(a[k * mex_mr + r]);
#pragma GCC unroll 4
            for (std::size_t v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(ar, bk[v], acc[r][v]);
        }
    }

#pragma GCC unroll 16
    for (std::size_t r = 0; r < mex_mr; ++r)
#pragma GCC unroll 4
        for (std::size_t v = 0; v < NV; ++v) acc[r][v].store_aligned(c + r * ldc + v * mex_lanes);
}

// C (round_up(M, mex_mr) x round_up(N, NV * mex_lanes), leading dimension ldc) = or += A B,
// with A packed by pack_a* (M x K) and B packed by pack_b<NV> (K x N). Padded rows and columns
// of C get what the zero padding of A and B gives: zeros.
template <std::size_t NV>
void gemm_packed(std::size_t m_size, std::size_t n_size, std::size_t k_size, const float* a,
                 const float* b, float* c, std::size_t ldc, bool accumulate) {
    constexpr std::size_t nr = NV * mex_lanes;
    for (std::size_t k0 = 0; k0 < k_size; k0 += mex_kc) {
        const std::size_t kc = std::min(mex_kc, k_size - k0);
        const bool add = accumulate || k0 > 0;
        for (std::size_t n0 = 0; n0 < n_size; n0 += nr) {
            const float* b_panel = b + n0 * k_size + k0 * nr;
            for (std::size_t m0 = 0; m0 < m_size; m0 += mex_mr)
                micro_kernel<NV>(kc, a + m0 * k_size + k0 * mex_mr, b_panel, c + m0 * ldc + n0, ldc,
                                 add);
        }
    }
    if (k_size == 0 && !accumulate)
        for (std::size_t m = 0; m < round_up(m_size, mex_mr); ++m)
            std::fill_n(c + m * ldc, round_up(n_size, nr), 0.0f);
}

// Calls f(std::integral_constant<std::size_t, NV>{}) with the number of vectors per B panel for
// N columns: one when N fits in a vector (less padding, e.g. O = 10), else mex_nv.
template <class F>
decltype(auto) with_panel_vectors(std::size_t n_size, F&& f) {
    if (n_size <= mex_lanes) return f(std::integral_constant<std::size_t, 1>{});
    return f(std::integral_constant<std::size_t, mex_nv>{});
}

// The forward GEMM's A operand for one chunk of rows: m[b] = max_i in[b,i] and E[b,i] =
// exp(in[b,i] - m_b), written straight into the packed A layout (packed_e); E's rows are at
// most 1 and sum to at least 1. A row of -inf gives m = -inf and a zero row of E.
// With kept_e, E is also stored there row-major (chunk x I), for the backward pass.
inline void shift_and_pack_rows(std::size_t chunk, std::size_t I, const float* in_chunk,
                                float* packed_e, float* m, float* kept_e = nullptr) {
    for (std::size_t b = 0; b < chunk; ++b) m[b] = row_maximum(in_chunk + b * I, I);
    pack_a(chunk, I, packed_e, [&](std::size_t b, std::size_t i0, std::size_t width) {
        const float* x = in_chunk + b * I + i0;
        // -inf in the padding lanes gives exp(-inf) = 0 there.
        const mex_batch e =
            m[b] == mex_minus_infinity
                ? mex_batch(0.0f)
                : tmm::detail::exp((width == mex_lanes
                                        ? mex_batch::load_unaligned(x)
                                        : load_partial(x, width, mex_minus_infinity)) -
                                   mex_batch(m[b]));
        if (kept_e != nullptr) {
            if (width == mex_lanes)
                e.store_unaligned(kept_e + b * I + i0);
            else
                store_partial(e, kept_e + b * I + i0, width);
        }
        return e;
    });
}

// The forward GEMM of one chunk of rows: m and E as shift_and_pack_rows, and S = E W^T
// (leading dimension o_padded).
template <std::size_t NV>
void shifted_products(std::size_t chunk, std::size_t I, std::size_t O, const float* in_chunk,
                      const float* packed_w_t, float* packed_e, float* m, float* s,
                      std::size_t o_padded, float* kept_e = nullptr) {
    shift_and_pack_rows(chunk, I, in_chunk, packed_e, m, kept_e);
    gemm_packed<NV>(chunk, O, I, packed_e, packed_w_t, s, o_padded, false);
}

// The members' inputs of a fused conv + pooling window held as rows of log-values in memory
// (ins[j]: rows x I, row-major). Another source (the leaves' log-densities computed as they
// are packed, leaf_kernels.hpp) provides the same two calls.
struct window_rows {
    const float* const* ins;
    std::size_t I;
    // m and packed E (shift_and_pack_rows) of rows [row0, row0 + chunk) of member j
    void shift_and_pack(std::size_t j, std::size_t row0, std::size_t chunk, float* packed_e,
                        float* m) const {
        shift_and_pack_rows(chunk, I, ins[j] + row0 * I, packed_e, m);
    }
    // member j's log-values at row row0 + b, for the exact fallback: valid after
    // shift_and_pack(j, row0, ...) until the next chunk
    const float* log_row(std::size_t j, std::size_t row0, std::size_t b) const {
        return ins[j] + (row0 + b) * I;
    }
};

// Where a fused window (mex_forward_window_panels) writes its values: as logs (rows x O), or
// kept as the parts of its product for a next window to read without an exp (scaled_rows):
// value[b,o] = shift[b] + log product[b,o] + exponent[b,o] log 2, with product normal and
// positive, exponent an integer (-inf where the value is -inf) and shift[b] = -inf for a row
// of -inf.
struct window_values {
    float* logs = nullptr;
    float* product = nullptr;
    float* exponent = nullptr;
    float* shift = nullptr;
};

// 2^k for integral k >= -125 (else 0), times x in [sqrt(1/2), 2): x 2^k, flushed to 0 below
// the normal range (AVX-512: scalef; elsewhere from the bits, for x's exponent field 126 or
// 127).
inline mex_batch scale_by_power_of_two(const mex_batch& x, const mex_batch& k) {
#if defined(__AVX512F__)
    if constexpr (mex_lanes == 16) return mex_batch(_mm512_scalef_ps(x, k));
#endif
    using int_batch = xsimd::batch<std::int32_t, mex_batch::arch_type>;
    const auto normal = k >= mex_batch(-125.0f);
    const int_batch shift = xsimd::to_int(xsimd::select(normal, k, mex_batch(0.0f))) << 23;
    return xsimd::select(normal,
                         xsimd::bitwise_cast<mex_batch>(xsimd::bitwise_cast<int_batch>(x) + shift),
                         mex_batch(0.0f));
}

// The members' inputs of a window held as an earlier window's values in window_values' parts
// (parts[j]: member j's, see window_parts). Their packed E is P 2^(E - max E) per
// row, shifted by m = shift + max E log 2: no exp.
struct scaled_rows {
    const window_parts* parts;  // member j's
    std::size_t I;
    float* row;  // I floats: log_row's values

    void shift_and_pack(std::size_t j, std::size_t row0, std::size_t chunk, float* packed_e,
                        float* m) const {
        thread_local std::vector<float> top;
        top.resize(chunk);
        for (std::size_t b = 0; b < chunk; ++b) {
            const float t = row_maximum(parts[j].exponent + (row0 + b) * I, I);
            const float s = parts[j].shift[row0 + b];
            top[b] = t;
            m[b] = t == mex_minus_infinity || s == mex_minus_infinity
                       ? mex_minus_infinity
                       : s + (t * 0.693359375f + t * -2.12194440e-4f);
        }
        pack_a(chunk, I, packed_e, [&](std::size_t b, std::size_t i0, std::size_t width) {
            if (m[b] == mex_minus_infinity) return mex_batch(0.0f);
            const float* p = parts[j].product + (row0 + b) * I + i0;
            const float* e = parts[j].exponent + (row0 + b) * I + i0;
            const bool full = width == mex_lanes;
            // padding lanes: exponent -inf gives 0
            return scale_by_power_of_two(
                full ? mex_batch::load_unaligned(p) : load_partial(p, width, 1.0f),
                (full ? mex_batch::load_unaligned(e) : load_partial(e, width, mex_minus_infinity)) -
                    mex_batch(top[b]));
        });
    }
    // member j's log-values at row row0 + b, for the exact fallback
    const float* log_row(std::size_t j, std::size_t row0, std::size_t b) const {
        const float* p = parts[j].product + (row0 + b) * I;
        const float* e = parts[j].exponent + (row0 + b) * I;
        const float s = parts[j].shift[row0 + b];
        for (std::size_t i = 0; i < I; ++i)
            row[i] = s == mex_minus_infinity || e[i] == mex_minus_infinity
                         ? mex_minus_infinity
                         : s + (std::log(p[i]) + e[i] * 0.693147180559945309f);
        return row;
    }
};

// Rows of the fused window kernel's register tile: its sums S (window_mr x NV accumulators, 16
// as in the micro-kernel) stay in registers; the tile's running P and E wait in L1 between
// members. 4 rows, with P and E in registers too, left a core with two FMA units half idle on
// the latency of 8 accumulators; with AVX2 (16 registers) 6 x 2 accumulators, as mex_mr.
inline constexpr std::size_t window_mr = mex_lanes >= 16 ? 8 : 6;
static_assert(mex_mr % window_mr == 0);

// For positive normal p: p = f 2^k with f in [1, 2) (AVX-512) or [sqrt(1/2), sqrt(2)); p becomes
// f and e gains k. Exact.
inline void split_exponent(mex_batch& p, mex_batch& e) {
#if defined(__AVX512F__)
    if constexpr (mex_lanes == 16) {
        e += mex_batch(_mm512_getexp_ps(p));
        p = mex_batch(_mm512_getmant_ps(p, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_zero));
        return;
    }
#endif
    using int_batch = xsimd::batch<std::int32_t, mex_batch::arch_type>;
    const int_batch bits = xsimd::bitwise_cast<int_batch>(p);
    const int_batch k = (bits - int_batch(0x3f3504f3)) >> 23;  // as log_of_normal
    e += xsimd::to_float(k);
    p = xsimd::bitwise_cast<mex_batch>(bits - (k << 23));
}

// Forward pass of a conv fused with a product pooling window (see mex_forward_window): the
// members' values m_j + log S_j are summed as sum_j m_j + log prod_j S_j, one log per window
// output instead of one per member. A register tile (window_mr rows x one B panel) computes
// each member's S in turn and multiplies it into the running product, whose exponent is moved
// out after every factor (split_exponent): P in [1, 2) and E, an integer, so that nothing
// underflows; the window's output is M + log P + E log 2, M = sum_j m_j (-inf once a member's
// row is all -inf). A factor S below the fallback threshold (mex_forward_threshold, as in
// mex_forward_panels) is replaced by the exact logsumexp, split the same way. S is never
// written to memory. The members' inputs come from `source` (window_rows, or
// leaf_kernels.hpp's leaves); every member of a chunk is packed before the tiles run.
template <std::size_t NV, class Source>
void mex_forward_window_panels(std::size_t rows, std::size_t I, std::size_t O, std::size_t count,
                               const Source& source, const float* const* packed_w_t,
                               const float* const* log_weights, const window_values& out) {
    constexpr std::size_t nr = NV * mex_lanes, tile_rows = window_mr;
    mex_scratch& scratch = thread_scratch();
    const flush_to_zero_guard flush;
    const std::size_t chunk_padded = round_up(std::min(rows, mex_rows_per_chunk), mex_mr);

    float* packed_e = scratch.packed_rows.get(count * chunk_padded * I);
    float* m = scratch.row_max.get(count * chunk_padded);
    float* shift_sum = scratch.window_shift_sum.get(chunk_padded);
    const float threshold = mex_forward_threshold(I);
    const mex_batch lane_index = lane_indices(), one(1.0f), log_two_high(0.693359375f),
                    log_two_low(-2.12194440e-4f);

    // The exact fallback for the lanes of s (row b of the chunk, outputs o0.. of member j) below
    // the threshold: exact - m_j = log(f 2^k), f into s and k into e; -inf gives e = -inf.
    // Rows past the chunk or whose M is -inf (their output is not computed) get s = 1.
    const auto exact = [&](std::size_t j, std::size_t row0, std::size_t chunk, std::size_t b,
                           std::size_t o0, mex_batch & s, mex_batch & e) __attribute__((noinline)) {
        alignas(64) float s_lanes[mex_lanes], e_lanes[mex_lanes];
        s.store_aligned(s_lanes);
        e.store_aligned(e_lanes);
        for (std::size_t q = 0; q < mex_lanes; ++q) {
            if (!(s_lanes[q] < threshold)) continue;
            if (b >= chunk || shift_sum[b] == mex_minus_infinity || o0 + q >= O) {
                s_lanes[q] = 1.0f;
                continue;
            }
            const float x =
                exact_log_sum_exp(source.log_row(j, row0, b), log_weights[j] + (o0 + q) * I, I) -
                m[j * chunk_padded + b];
            if (x == mex_minus_infinity) {
                s_lanes[q] = 1.0f;
                e_lanes[q] = mex_minus_infinity;
                continue;
            }
            const double k = std::floor(double(x) / 0.693147180559945309);
            s_lanes[q] = float(std::exp(double(x) - k * 0.693147180559945309));
            e_lanes[q] += float(k);
        }
        s = mex_batch::load_aligned(s_lanes);
        e = mex_batch::load_aligned(e_lanes);
    };

    for (std::size_t row0 = 0; row0 < rows; row0 += mex_rows_per_chunk) {
        const std::size_t chunk = std::min(mex_rows_per_chunk, rows - row0);
        for (std::size_t j = 0; j < count; ++j)
            source.shift_and_pack(j, row0, chunk, packed_e + j * chunk_padded * I,
                                  m + j * chunk_padded);
        for (std::size_t b = 0; b < chunk; ++b) {
            float sum = 0.0f;  // -inf stays -inf: the window's row is log 0
            for (std::size_t j = 0; j < count; ++j) sum += m[j * chunk_padded + b];
            shift_sum[b] = sum;
        }
        for (std::size_t n0 = 0; n0 < O; n0 += nr) {
            const bool padded = n0 + nr > O;  // lanes past O: factors of 1
            for (std::size_t r0 = 0; r0 < chunk; r0 += tile_rows) {
                // A's element (r, k) of member j: a + j * chunk_padded * I + k * mex_mr + r
                const float* a = packed_e + (r0 / mex_mr) * mex_mr * I + r0 % mex_mr;
                // rows whose output is computed (the others' S is 0: padding, or a row of -inf)
                bool live[tile_rows];
                for (std::size_t r = 0; r < tile_rows; ++r)
                    live[r] = r0 + r < chunk && shift_sum[r0 + r] != mex_minus_infinity;
                // P and E of the tile, in L1 (the registers hold the sums' accumulators)
                alignas(64) float p_mem[tile_rows][NV][mex_lanes], e_mem[tile_rows][NV][mex_lanes];
                // The tile's products; without the fallback (no call, so that the accumulators
                // stay in registers) false when a live S is below the threshold: then again
                // with it.
                const auto products = [&](auto with_fallback) {
                    mex_batch low(1.0f);  // the smallest live S
                    for (std::size_t j = 0; j < count; ++j) {
                        const float* a_j = a + j * chunk_padded * I;
                        const float* b_j = packed_w_t[j] + n0 * I;
                        mex_batch acc[tile_rows][NV];
#pragma GCC unroll 8
                        for (std::size_t r = 0; r < tile_rows; ++r)
#pragma GCC unroll 2
                            for (std::size_t v = 0; v < NV; ++v) acc[r][v] = mex_batch(0.0f);
#pragma GCC unroll 2
                        for (std::size_t k = 0; k < I; ++k) {
                            mex_batch bk[NV];
#pragma GCC unroll 2
                            for (std::size_t v = 0; v < NV; ++v)
                                bk[v] = mex_batch::load_aligned(b_j + k * nr + v * mex_lanes);
#pragma GCC unroll 8
                            for (std::size_t r = 0; r < tile_rows; ++r) {
                                const mex_batch ar(a_j[k * mex_mr + r]);
#pragma GCC unroll 2
                                for (std::size_t v = 0; v < NV; ++v)
                                    acc[r][v] = xsimd::fma(ar, bk[v], acc[r][v]);
                            }
                        }
#pragma GCC unroll 8
                        for (std::size_t r = 0; r < tile_rows; ++r)
#pragma GCC unroll 2
                            for (std::size_t v = 0; v < NV; ++v) {
                                mex_batch s = acc[r][v];
                                const std::size_t o0 = n0 + v * mex_lanes;
                                if (padded)
                                    s = xsimd::select(lane_index >= mex_batch(float(O) - float(o0)),
                                                      one, s);
                                mex_batch e =
                                    j == 0 ? mex_batch(0.0f) : mex_batch::load_aligned(e_mem[r][v]);
                                if constexpr (decltype(with_fallback)::value) {
                                    if (xsimd::any(s < mex_batch(threshold)))
                                        exact(j, row0, chunk, r0 + r, o0, s, e);
                                } else if (live[r]) {
                                    low = xsimd::min(low, s);
                                }
                                mex_batch p = j == 0 ? s : mex_batch::load_aligned(p_mem[r][v]) * s;
                                split_exponent(p, e);
                                p.store_aligned(p_mem[r][v]);
                                e.store_aligned(e_mem[r][v]);
                            }
                    }
                    return !xsimd::any(low < mex_batch(threshold));
                };
                if (!products(std::false_type{})) products(std::true_type{});
                    // the window's output: M + log P + E log 2 (log 2 in two parts, the first
                    // exact when multiplied by E), or its parts
#pragma GCC unroll 8
                for (std::size_t r = 0; r < tile_rows; ++r) {
                    if (r0 + r >= chunk) continue;
                    const std::size_t b = row0 + r0 + r;
                    const mex_batch shift(shift_sum[r0 + r]);
                    const bool empty_row = shift_sum[r0 + r] == mex_minus_infinity;
                    if (out.logs == nullptr && n0 == 0) out.shift[b] = shift_sum[r0 + r];
#pragma GCC unroll 2
                    for (std::size_t v = 0; v < NV; ++v) {
                        const std::size_t o0 = n0 + v * mex_lanes;
                        if (o0 >= O) continue;
                        const std::size_t width = std::min(mex_lanes, O - o0);
                        const auto store = [&](const mex_batch& value, float* row) {
                            if (width == mex_lanes)
                                value.store_unaligned(row + o0);
                            else
                                store_partial(value, row + o0, width);
                        };
                        const mex_batch p = mex_batch::load_aligned(p_mem[r][v]),
                                        e = mex_batch::load_aligned(e_mem[r][v]);
                        if (out.logs == nullptr) {
                            store(p, out.product + b * O);
                            store(e, out.exponent + b * O);
                            continue;
                        }
                        // (E = -inf: a factor whose exact value is 0)
                        const mex_batch log_product = xsimd::fma(
                            e, log_two_high, xsimd::fma(e, log_two_low, log_of_normal(p)));
                        store(empty_row ? mex_batch(mex_minus_infinity)
                                        : xsimd::select(e == mex_batch(mex_minus_infinity), e,
                                                        shift + log_product),
                              out.logs + b * O);
                    }
                }
            }
        }
    }
}

// Forward pass with NV vectors per B panel (see mex_forward_packed).
template <std::size_t NV>
void mex_forward_panels(std::size_t rows, std::size_t I, std::size_t O, const float* in,
                        const float* packed_w_t, const float* log_weights, float* out,
                        float* pooled, bool accumulate, float* kept_e, float* kept_m) {
    mex_scratch& scratch = thread_scratch();
    const flush_to_zero_guard flush;
    const std::size_t o_padded = round_up(O, NV * mex_lanes);
    const std::size_t chunk_padded = round_up(std::min(rows, mex_rows_per_chunk), mex_mr);

    float* packed_e = scratch.packed_rows.get(chunk_padded * I);
    float* s = scratch.product.get(chunk_padded * o_padded);
    float* m = scratch.row_max.get(chunk_padded);
    alignas(64) float lanes[mex_lanes];
    const float threshold = mex_forward_threshold(I);

    for (std::size_t row0 = 0; row0 < rows; row0 += mex_rows_per_chunk) {
        const std::size_t chunk = std::min(mex_rows_per_chunk, rows - row0);
        const float* in_chunk = in + row0 * I;
        float* out_chunk = out != nullptr ? out + row0 * O : nullptr;

        shifted_products<NV>(chunk, I, O, in_chunk, packed_w_t, packed_e, m, s, o_padded,
                             kept_e != nullptr ? kept_e + row0 * I : nullptr);
        if (kept_m != nullptr) std::copy_n(m, chunk, kept_m + row0);

        // out = m + log S where S is large enough to be exact, else the exact logsumexp; stored
        // into out and/or added to (or, without accumulate, stored into) pooled.
        for (std::size_t b = 0; b < chunk; ++b) {
            float* out_row = out != nullptr ? out_chunk + b * O : nullptr;
            float* pooled_row = pooled != nullptr ? pooled + (row0 + b) * O : nullptr;
            const float* s_row = s + b * o_padded;
            const float* in_row = in_chunk + b * I;
            const bool empty_row = m[b] == mex_minus_infinity;
            const mex_batch shift(m[b]);
            for (std::size_t o0 = 0; o0 < O; o0 += mex_lanes) {
                const std::size_t width = std::min(mex_lanes, O - o0);
                mex_batch value(mex_minus_infinity);
                if (!empty_row) {
                    const mex_batch s_vec = mex_batch::load_aligned(s_row + o0);
                    value = shift + log_of_normal(s_vec);
                    if (xsimd::any(s_vec < mex_batch(threshold))) {
                        value.store_aligned(lanes);
                        for (std::size_t j = 0; j < width; ++j)
                            if (s_row[o0 + j] < threshold)
                                lanes[j] = exact_log_sum_exp(in_row, log_weights + (o0 + j) * I, I);
                        value = mex_batch::load_aligned(lanes);
                    }
                }
                if (width == mex_lanes) {
                    if (out_row != nullptr) value.store_unaligned(out_row + o0);
                    if (pooled_row != nullptr)
                        (accumulate ? mex_batch::load_unaligned(pooled_row + o0) + value : value)
                            .store_unaligned(pooled_row + o0);
                } else {
                    if (out_row != nullptr) store_partial(value, out_row + o0, width);
                    if (pooled_row != nullptr)
                        store_partial(
                            accumulate ? load_partial(pooled_row + o0, width, 0.0f) + value : value,
                            pooled_row + o0, width);
                }
            }
        }
    }
}

// Backward pass with NV vectors per B panel (see mex_backward_packed).
template <std::size_t NV>
void mex_backward_panels(std::size_t rows, std::size_t I, std::size_t O, const float* in,
                         const float* out, const float* dout, const float* packed_w,
                         const float* log_weights, float* din, float* dtheta, bool dtheta_overwrite,
                         const float* kept_e, const float* kept_m) {
    constexpr std::size_t nr = NV * mex_lanes;
    // W[o, i0..i0 + mex_lanes) in the packed B operand of din's GEMM (zero past I)
    const auto w_at = [&](std::size_t o, std::size_t i0) {
        return packed_w + (i0 / nr) * O * nr + o * nr + i0 % nr;
    };
    mex_scratch& scratch = thread_scratch();
    const flush_to_zero_guard flush;
    const std::size_t i_padded = round_up(I, nr);
    // G's leading dimension: whole vectors per row, and whole mex_mr blocks for packing G^T.
    const std::size_t o_padded = round_up(O, std::lcm(mex_mr, mex_lanes));
    const std::size_t chunk_padded = round_up(std::min(rows, mex_rows_per_chunk), mex_mr);

    float* packed_e = scratch.packed_e.get(i_padded * chunk_padded);
    float* g = scratch.g.get(chunk_padded * o_padded);
    float* packed_g_t = scratch.packed_g_t.get(o_padded * chunk_padded);
    float* theta_product =
        dtheta != nullptr ? scratch.theta_product.get(o_padded * i_padded) : nullptr;
    float* dout_sum = scratch.dout_sum.get(o_padded);
    float* m = scratch.row_max.get(chunk_padded);
    float* packed_g = nullptr;
    float* product = nullptr;
    if (din != nullptr) {
        packed_g = scratch.packed_rows.get(chunk_padded * O);
        product = scratch.product.get(chunk_padded * i_padded);
    }
    std::fill_n(dout_sum, o_padded, 0.0f);
    auto& exact_entries = scratch.exact_entries;
    float* theta_exact = nullptr;           // allocated on the first exact entry
    auto& exact_rows = scratch.exact_rows;  // which rows of theta_exact are in use
    const mex_batch log_threshold(mex_backward_log_threshold);
    const mex_batch zero(0.0f);

    for (std::size_t row0 = 0; row0 < rows; row0 += mex_rows_per_chunk) {
        const std::size_t chunk = std::min(mex_rows_per_chunk, rows - row0);
        const std::size_t chunk_rows = round_up(chunk, mex_mr);
        const float* in_chunk = in + row0 * I;
        const float* out_chunk = out + row0 * O;
        const float* dout_chunk = dout + row0 * O;
        exact_entries.clear();

        // E[b,i] = exp(in[b,i] - m_b) as in the forward pass, written straight into the packed B
        // layout of the dtheta GEMM (K = the chunk's rows, N = I): E[b, i] is at
        // e_at(b, i) = packed_e[(i / nr) * chunk_rows * nr + b * nr + i % nr]. Zero rows pad the
        // chunk, zero columns the last panel.
        const auto e_at = [&](std::size_t b, std::size_t i) {
            return packed_e + (i / nr) * chunk_rows * nr + b * nr + i % nr;
        };
        // (Or copied from what the forward pass kept: the same values.)
        for (std::size_t b = 0; b < chunk_rows; ++b) {
            m[b] = b >= chunk          ? mex_minus_infinity
                   : kept_m != nullptr ? kept_m[row0 + b]
                                       : row_maximum(in_chunk + b * I, I);
            const float* x = in_chunk + b * I;
            const float* kept_row = kept_e != nullptr ? kept_e + (row0 + b) * I : nullptr;
            for (std::size_t i0 = 0; i0 < i_padded; i0 += mex_lanes) {
                mex_batch e_vec = zero;
                if (m[b] != mex_minus_infinity && i0 < I) {
                    const std::size_t width = std::min(mex_lanes, I - i0);
                    if (kept_row != nullptr)
                        e_vec = width == mex_lanes ? mex_batch::load_unaligned(kept_row + i0)
                                                   : load_partial(kept_row + i0, width, 0.0f);
                    else
                        e_vec = tmm::detail::exp(
                            (width == mex_lanes ? mex_batch::load_unaligned(x + i0)
                                                : load_partial(x + i0, width, mex_minus_infinity)) -
                            mex_batch(m[b]));
                }
                e_vec.store_aligned(e_at(b, i0));
            }
        }

        // G[b,o] = dout[b,o] exp(m_b - out[b,o]) = dout / S on the fast path (log S >= the
        // threshold), else 0; fast entries also add dout to D[o], the -W dout part of dtheta.
        // Finite entries off the fast path are listed for the exact path.
        for (std::size_t b = 0; b < chunk; ++b) {
            float* g_row = g + b * o_padded;
            if (m[b] == mex_minus_infinity) {
                std::fill_n(g_row, o_padded, 0.0f);
                continue;
            }
            // the vectors below cover round_up(O, mex_lanes) columns; zero the rest of the row
            std::fill(g_row + round_up(O, mex_lanes), g_row + o_padded, 0.0f);
            const float* out_row = out_chunk + b * O;
            const float* dout_row = dout_chunk + b * O;
            const mex_batch shift(m[b]);
            for (std::size_t o0 = 0; o0 < O; o0 += mex_lanes) {
                const std::size_t width = std::min(mex_lanes, O - o0);
                const bool full = width == mex_lanes;
                // Padding lanes: out = -inf is never fast, dout = 0 adds nothing.
                const mex_batch out_vec =
                    full ? mex_batch::load_unaligned(out_row + o0)
                         : load_partial(out_row + o0, width, mex_minus_infinity);
                const mex_batch dout_vec = full ? mex_batch::load_unaligned(dout_row + o0)
                                                : load_partial(dout_row + o0, width, 0.0f);
                const mex_batch log_s = out_vec - shift;
                const auto fast = log_s >= log_threshold;
                // exp(-log_s) <= 2^40 on fast lanes; the select drops the others (inf or NaN).
                xsimd::select(fast, dout_vec * tmm::detail::exp(-log_s), zero)
                    .store_aligned(g_row + o0);
                (mex_batch::load_aligned(dout_sum + o0) + xsimd::select(fast, dout_vec, zero))
                    .store_aligned(dout_sum + o0);
                if (!xsimd::all(fast)) {
                    for (std::size_t j = 0; j < width; ++j) {
                        const float value = out_row[o0 + j];
                        if (!(value - m[b] >= mex_backward_log_threshold) &&
                            value != mex_minus_infinity)
                            exact_entries.emplace_back(b, o0 + j);
                    }
                }
            }
        }
        std::fill(g + chunk * o_padded, g + chunk_rows * o_padded, 0.0f);

        // din = E .* (G W): a chunk x O times O x I GEMM, then the elementwise factor.
        if (din != nullptr) {
            pack_a_from_rows(chunk, O, g, o_padded, packed_g);
            gemm_packed<NV>(chunk, I, O, packed_g, packed_w, product, i_padded, false);
            for (std::size_t b = 0; b < chunk; ++b) {
                float* din_row = din + (row0 + b) * I;
                const float* p_row = product + b * i_padded;
                for (std::size_t i0 = 0; i0 < I; i0 += mex_lanes) {
                    const mex_batch value =
                        mex_batch::load_aligned(e_at(b, i0)) * mex_batch::load_aligned(p_row + i0);
                    const std::size_t width = std::min(mex_lanes, I - i0);
                    if (width == mex_lanes)
                        value.store_unaligned(din_row + i0);
                    else
                        store_partial(value, din_row + i0, width);
                }
            }
        }

        // T += G^T E: an O x chunk times chunk x I GEMM, accumulated over chunks.
        if (dtheta != nullptr) {
            pack_a_from_columns(O, chunk_rows, g, o_padded, packed_g_t);
            gemm_packed<NV>(O, I, chunk_rows, packed_g_t, packed_e, theta_product, i_padded,
                            row0 > 0);
        }

        // Exact path: p_i = exp((in[b,i] - out[b,o]) + log W[o,i]) <= 1 (up to the rounding of
        // out). Taking in - out first keeps it exact where the term matters (in near out).
        // dtheta's share goes to a zeroed scratch so that dtheta itself gets one add per entry.
        // (Only the rows of outputs that have exact entries are zeroed and read back.)
        if (!exact_entries.empty() && dtheta != nullptr && theta_exact == nullptr) {
            theta_exact = scratch.theta_exact.get(o_padded * i_padded);
            exact_rows.assign(O, 0);
        }
        for (const auto& [b, o] : exact_entries) {
            const float* in_row = in_chunk + b * I;
            const float* log_w_row = log_weights + o * I;
            float* theta_row = theta_exact != nullptr ? theta_exact + o * i_padded : nullptr;
            if (theta_row != nullptr && !exact_rows[o]) {
                std::fill_n(theta_row, i_padded, 0.0f);
                exact_rows[o] = 1;
            }
            float* din_row = din != nullptr ? din + (row0 + b) * I : nullptr;
            const mex_batch shift(out_chunk[b * O + o]);
            const mex_batch grad(dout_chunk[b * O + o]);
            for (std::size_t i0 = 0; i0 < I; i0 += mex_lanes) {
                const std::size_t width = std::min(mex_lanes, I - i0);
                const bool full = width == mex_lanes;
                // Padding lanes: in = log W = -inf gives p = 0, and W = 0 there.
                const mex_batch x = full ? mex_batch::load_unaligned(in_row + i0)
                                         : load_partial(in_row + i0, width, mex_minus_infinity);
                const mex_batch lw = full ? mex_batch::load_unaligned(log_w_row + i0)
                                          : load_partial(log_w_row + i0, width, mex_minus_infinity);
                const mex_batch w = mex_batch::load_aligned(w_at(o, i0));
                const mex_batch p = tmm::detail::exp((x - shift) + lw);
                if (theta_row != nullptr)
                    xsimd::fma(grad, p - w, mex_batch::load_aligned(theta_row + i0))
                        .store_aligned(theta_row + i0);
                if (din_row == nullptr) continue;
                if (full) {
                    xsimd::fma(grad, p, mex_batch::load_unaligned(din_row + i0))
                        .store_unaligned(din_row + i0);
                } else {
                    store_partial(xsimd::fma(grad, p, load_partial(din_row + i0, width, 0.0f)),
                                  din_row + i0, width);
                }
            }
        }
    }

    // dtheta[o,i] += W[o,i] (T[o,i] - D[o]) + (exact-path share): on the fast path
    // sum_b dout p = W sum_b G E.
    if (dtheta == nullptr) return;
    for (std::size_t o = 0; o < O; ++o) {
        const float* t_row = theta_product + o * i_padded;
        const float* exact_row =
            theta_exact != nullptr && exact_rows[o] ? theta_exact + o * i_padded : nullptr;
        float* dtheta_row = dtheta + o * I;
        const mex_batch d(dout_sum[o]);
        for (std::size_t i0 = 0; i0 < I; i0 += mex_lanes) {
            const std::size_t width = std::min(mex_lanes, I - i0);
            const bool full = width == mex_lanes;
            const mex_batch t = mex_batch::load_aligned(t_row + i0) - d;
            mex_batch change = mex_batch::load_aligned(w_at(o, i0)) * t;
            if (exact_row != nullptr) change += mex_batch::load_aligned(exact_row + i0);
            if (dtheta_overwrite) {
                if (full)
                    change.store_unaligned(dtheta_row + i0);
                else
                    store_partial(change, dtheta_row + i0, width);
            } else if (full) {
                (mex_batch::load_unaligned(dtheta_row + i0) + change)
                    .store_unaligned(dtheta_row + i0);
            } else {
                store_partial(load_partial(dtheta_row + i0, width, 0.0f) + change, dtheta_row + i0,
                              width);
            }
        }
    }
}

}  // namespace detail

// Packing of one weight set W (O x I, row-major) for the GEMMs, done once per set and shared
// read-only by every call (and thread) that uses it. Sizes are in floats; the destination must
// be 64-byte aligned.
// The forward B operand (K = I, N = O): W^T in panels.
inline std::size_t mex_forward_packed_size(std::size_t I, std::size_t O) {
    return detail::with_panel_vectors(O, [&](auto nv) {
        return detail::round_up(O, decltype(nv)::value * detail::mex_lanes) * I;
    });
}
// Outputs per panel of the forward B operand.
inline std::size_t mex_forward_panel_width(std::size_t O) {
    return detail::with_panel_vectors(
        O, [](auto nv) { return decltype(nv)::value * detail::mex_lanes; });
}
// One panel of it: outputs [n0, n0 + mex_forward_panel_width(O)), whose rows of W are read at
// rows + (o - n0) * ld (those at o >= O are not read: the panel is zero there).
inline void mex_pack_forward_panel(std::size_t I, std::size_t O, std::size_t n0, const float* rows,
                                   std::size_t ld, float* dst) {
    using detail::mex_batch;
    using detail::mex_lanes;
    using detail::mex_mr;
    const std::size_t nr = mex_forward_panel_width(O);
    // Groups of mex_mr outputs are transposed a tile (mex_mr x mex_lanes inputs) at a time, as
    // the A operand is packed, then spread into the panel's rows of nr.
    alignas(64) float tile[mex_lanes * mex_mr];
    float* panel = dst + n0 * I;
    for (std::size_t g = 0; g < nr; g += mex_mr) {
        for (std::size_t k0 = 0; k0 < I; k0 += mex_lanes) {
            const std::size_t width = std::min(mex_lanes, I - k0);
            mex_batch tile_rows[mex_mr];
            for (std::size_t r = 0; r < mex_mr; ++r) {
                const float* src = rows + (g + r) * ld + k0;
                tile_rows[r] = n0 + g + r >= O || g + r >= nr ? mex_batch(0.0f)
                               : width == mex_lanes           ? mex_batch::load_unaligned(src)
                                                    : detail::load_partial(src, width, 0.0f);
            }
            detail::transpose_tile(tile_rows, tile);
            const std::size_t height = std::min(mex_mr, nr - g);  // (AVX2: 16 % 6)
            if (height == mex_mr) {  // (a copy of known length: a move or two, not a call)
                for (std::size_t k = 0; k < width; ++k)
                    std::copy_n(tile + k * mex_mr, mex_mr, panel + (k0 + k) * nr + g);
            } else {
                for (std::size_t k = 0; k < width; ++k)
                    std::copy_n(tile + k * mex_mr, height, panel + (k0 + k) * nr + g);
            }
        }
    }
}
inline void mex_pack_forward_weights(std::size_t I, std::size_t O, const float* weights,
                                     float* dst) {
    const std::size_t nr = mex_forward_panel_width(O);
    for (std::size_t n0 = 0; n0 < O; n0 += nr)
        mex_pack_forward_panel(I, O, n0, weights + n0 * I, I, dst);
}
// The B operand of din's GEMM (K = O, N = I): W itself in panels.
inline std::size_t mex_backward_packed_size(std::size_t I, std::size_t O) {
    return detail::with_panel_vectors(I, [&](auto nv) {
        return detail::round_up(I, decltype(nv)::value * detail::mex_lanes) * O;
    });
}
// Its panels' width: row o's inputs [n0, n0 + width) are at dst + n0 * O + o * width.
inline std::size_t mex_backward_panel_width(std::size_t I) {
    return detail::with_panel_vectors(
        I, [](auto nv) { return decltype(nv)::value * detail::mex_lanes; });
}
// Row o of it (I floats at row; zero past I).
inline void mex_pack_backward_row(std::size_t I, std::size_t O, std::size_t o, const float* row,
                                  float* dst) {
    const std::size_t nr = mex_backward_panel_width(I);
    for (std::size_t n0 = 0; n0 < I; n0 += nr) {
        const std::size_t width = std::min(nr, I - n0);
        float* d = dst + n0 * O + o * nr;
        for (std::size_t v = 0; v < nr; v += detail::mex_lanes) {
            const detail::mex_batch x =
                v + detail::mex_lanes <= width ? detail::mex_batch::load_unaligned(row + n0 + v)
                : v < width                    ? detail::load_partial(row + n0 + v, width - v, 0.0f)
                                               : detail::mex_batch(0.0f);
            x.store_aligned(d + v);
        }
    }
}
inline void mex_pack_backward_weights(std::size_t I, std::size_t O, const float* weights,
                                      float* dst) {
    for (std::size_t o = 0; o < O; ++o) mex_pack_backward_row(I, O, o, weights + o * I, dst);
}

// Forward pass of one MEX layer at one weight set, single-threaded, float32, row-major:
//   out[b,o] = log sum_i W[o,i] exp(in[b,i])        for b < rows, o < O.
// in: rows x I log-activations (may hold -inf, never NaN or +inf); packed_w_t: W (O x I, each
// row on the simplex) packed by mex_pack_forward_weights; log_weights: log W (O x I, -inf where
// W is 0). A row of in that is entirely -inf gives an output row of -inf; an entry whose true
// sum is zero (no term with both in and W nonzero) is -inf.
// Results go to out (may be nullptr) and/or, fused with the product pooling that follows the
// conv, to pooled (rows x O, may be nullptr): pooled = value, or pooled += value with
// accumulate, so that a window's output sums its members' logs without writing them.
// Method (design.md section 4): with m_b = max_i in[b,i] and E = exp(in - m), S = E W^T is a
// GEMM and out = m + log S; entries with S < I 2^-102 (where flushed underflow could matter)
// are recomputed as an exact max-shifted logsumexp_i(in[b,i] + log W[o,i]).
// Scratch is thread_local and reused (a few hundred KiB to a few MiB per thread, by shape), so
// concurrent calls from different threads on different data are safe. MXCSR is restored.
// With kept_e and kept_m (both or neither), the shifted inputs are kept for
// mex_backward_packed: m_b (rows) and E (rows x I, row-major), so that the backward pass reads
// them instead of taking the row maxima and the exps again.
inline void mex_forward_packed(std::size_t rows, std::size_t I, std::size_t O, const float* in,
                               const float* packed_w_t, const float* log_weights, float* out,
                               float* pooled = nullptr, bool accumulate = false,
                               float* kept_e = nullptr, float* kept_m = nullptr) {
    if (rows == 0 || O == 0) return;  // (nor does the backward pass read kept_e, kept_m)
    if (I == 0) {                     // an empty sum (likewise)
        if (out != nullptr) std::fill_n(out, rows * O, detail::mex_minus_infinity);
        if (pooled != nullptr) std::fill_n(pooled, rows * O, detail::mex_minus_infinity);
        return;
    }
    detail::with_panel_vectors(O, [&](auto nv) {
        detail::mex_forward_panels<decltype(nv)::value>(rows, I, O, in, packed_w_t, log_weights,
                                                        out, pooled, accumulate, kept_e, kept_m);
    });
}

// mex_forward_window with its inputs, its values, or both, kept as the parts of a window's
// product (window_values; the members' parts scaled_ins[j], see window_parts): a window that
// feeds another takes no log per output, and the next takes no exp per input. Exactly the
// values of mex_forward_window, within float rounding.
inline void mex_forward_window_parts(std::size_t rows, std::size_t I, std::size_t O,
                                     std::size_t count, const float* const* ins,
                                     const window_parts* scaled_ins, const float* const* packed_w_t,
                                     const float* const* log_weights,
                                     const detail::window_values& out) {
    if (rows == 0 || O == 0) return;
    if (count == 0 || I == 0) {  // an empty product (log 1), or empty sums (log 0)
        const float value = count == 0 ? 0.0f : detail::mex_minus_infinity;
        if (out.logs != nullptr) {
            std::fill_n(out.logs, rows * O, value);
        } else {
            std::fill_n(out.product, rows * O, 1.0f);
            std::fill_n(out.exponent, rows * O, 0.0f);
            std::fill_n(out.shift, rows, value);
        }
        return;
    }
    detail::with_panel_vectors(O, [&](auto nv) {
        constexpr std::size_t NV = decltype(nv)::value;
        if (scaled_ins == nullptr) {
            detail::mex_forward_window_panels<NV>(rows, I, O, count, detail::window_rows{ins, I},
                                                  packed_w_t, log_weights, out);
            return;
        }
        thread_local detail::aligned_floats row;
        const detail::scaled_rows source{scaled_ins, I, row.get(I)};
        detail::mex_forward_window_panels<NV>(rows, I, O, count, source, packed_w_t, log_weights,
                                              out);
    });
}

// A conv fused with the product pooling window that follows it, for inference: pooled[b,o] =
// sum over the count members j of log sum_i W_j[o,i] exp(in_j[b,i]), the members' conv outputs
// never written. ins[j] (rows x I), packed_w_t[j] and log_weights[j] are member j's input and
// weight set as for mex_forward_packed; pooled is rows x O. Within float rounding of the sum of
// mex_forward_packed's values (it takes one log per output instead of one per member, with the
// product's exponent kept apart so that it cannot underflow, and the exact logsumexp where
// mex_forward_packed takes it). -inf wherever a member's value is -inf. count = 0 gives 0
// (log 1).
inline void mex_forward_window(std::size_t rows, std::size_t I, std::size_t O, std::size_t count,
                               const float* const* ins, const float* const* packed_w_t,
                               const float* const* log_weights, float* pooled) {
    mex_forward_window_parts(rows, I, O, count, ins, nullptr, packed_w_t, log_weights,
                             detail::window_values{pooled});
}

// mex_forward_packed with W (O x I) and its transpose weights_t (I x O) packed on each call.
inline void mex_forward(std::size_t rows, std::size_t I, std::size_t O, const float* in,
                        const float* weights, const float* weights_t, const float* log_weights,
                        float* out) {
    static_cast<void>(weights);  // the GEMM reads W^T, the fallback log W
    if (rows == 0 || O == 0 || I == 0) {
        mex_forward_packed(rows, I, O, in, nullptr, log_weights, out);
        return;
    }
    float* packed = detail::thread_scratch().packed_weights.get(mex_forward_packed_size(I, O));
    detail::with_panel_vectors(
        O, [&](auto nv) { detail::pack_b<decltype(nv)::value>(I, O, weights_t, O, packed); });
    mex_forward_packed(rows, I, O, in, packed, log_weights, out);
}

// Backward pass of mex_forward, single-threaded, float32, row-major. Given out (as computed by
// mex_forward) and dout (rows x O, the gradient of a scalar loss wrt out), with
// p[b,o,i] = W[o,i] exp(in[b,i] - out[b,o]):
//   din[b,i]     = sum_o dout[b,o] p[b,o,i]                 (written; din may be nullptr)
//   dtheta[o,i] += sum_b dout[b,o] (p[b,o,i] - W[o,i])     (accumulated), the gradient wrt the
//                  parameters theta of log W = theta - logsumexp_i theta; dtheta may be
//                  nullptr (fixed weights), which skips its GEMM.
// packed_w: W packed by mex_pack_backward_weights.
// With dtheta_overwrite, dtheta is written (=) instead of accumulated: the first contribution
// to a gradient needs no zeroed array.
// An entry with out[b,o] = -inf (the output is log 0, its gradient undefined) contributes
// nothing to either; a row of in that is entirely -inf gets din = 0.
// Method: with G = dout exp(m - out) = dout / S, din = E .* (G W) and
// dtheta += W .* (G^T E - 1 sum_b dout), two GEMMs. Entries with S < 2^-40 (log S from out - m)
// take an exact path, p = exp(in - out + log W), instead; on the GEMM path a term of din or
// dtheta below about 2^-86 |dout| may be lost to exp underflow. Scratch as for mex_forward.
// kept_e and kept_m: what mex_forward_packed kept of the same rows of in (both or neither).
inline void mex_backward_packed(std::size_t rows, std::size_t I, std::size_t O, const float* in,
                                const float* out, const float* dout, const float* packed_w,
                                const float* log_weights, float* din, float* dtheta,
                                bool dtheta_overwrite = false, const float* kept_e = nullptr,
                                const float* kept_m = nullptr) {
    if (dtheta_overwrite && dtheta != nullptr && (rows == 0 || I == 0 || O == 0))
        std::fill_n(dtheta, O * I, 0.0f);  // nothing to add: the gradient is zero
    if (rows == 0 || I == 0 || (din == nullptr && dtheta == nullptr)) return;
    if (O == 0) {
        if (din != nullptr) std::fill_n(din, rows * I, 0.0f);
        return;
    }
    detail::with_panel_vectors(I, [&](auto nv) {
        detail::mex_backward_panels<decltype(nv)::value>(rows, I, O, in, out, dout, packed_w,
                                                         log_weights, din, dtheta, dtheta_overwrite,
                                                         kept_e, kept_m);
    });
}

// mex_backward_packed with W packed on each call (weights_t is not read).
inline void mex_backward(std::size_t rows, std::size_t I, std::size_t O, const float* in,
                         const float* out, const float* dout, const float* weights,
                         const float* weights_t, const float* log_weights, float* din,
                         float* dtheta) {
    static_cast<void>(weights_t);  // both GEMMs read W itself, or G and E
    float* packed = nullptr;
    if ((din != nullptr || dtheta != nullptr) && rows > 0 && I > 0 && O > 0) {
        packed = detail::thread_scratch().packed_weights.get(mex_backward_packed_size(I, O));
        mex_pack_backward_weights(I, O, weights, packed);
    }
    mex_backward_packed(rows, I, O, in, out, dout, packed, log_weights, din, dtheta);
}

}  // namespace tmm::backends::cpu_kernels

#include "../../detail/xsimd_warnings_pop.hpp"
