#pragma once
// The representation layer of the CPU backend as a single-threaded float32 kernel: the leaves'
// log-densities at one position for a block of images, vectorised over the components.

#include "../../detail/xsimd_warnings_push.hpp"

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../../detail/exp.hpp"
#include "../../observations.hpp"
#include "mex_kernels.hpp"

namespace tmm::backends::cpu_kernels {

// The leaves' parameters, coordinate-major so that a loop over the M components is contiguous.
// Gaussian: mean_t, half_log_precision_t = (rho - log 2 pi) / 2 and half_precision_t =
// exp(rho) / 2, each s x M. Categorical: log_probabilities_t, s x V x M.
struct leaf_tables {
    std::size_t components = 0, coordinates = 0, values = 0;
    bool gaussian = true;
    const float* mean_t = nullptr;
    const float* half_log_precision_t = nullptr;
    const float* half_precision_t = nullptr;
    const float* log_probabilities_t = nullptr;
};

namespace detail {
// Row r (M floats) += the log-densities of the `seen` observed coordinates seen_k[q] with values
// seen_v[q].
inline void add_leaf_logs(const leaf_tables& t, float* r, const std::size_t* seen_k,
                          const float* seen_v, std::size_t seen) {
    using batch = mex_batch;
    constexpr std::size_t lanes = mex_lanes;
    const std::size_t m = t.components;
    for (std::size_t d0 = 0; d0 < m; d0 += lanes) {
        const std::size_t width = std::min(lanes, m - d0);
        const auto load = [&](const float* at) {
            return width == lanes ? batch::load_unaligned(at) : load_partial(at, width, 0.0f);
        };
        batch acc = load(r + d0);
        for (std::size_t q = 0; q < seen; ++q) {
            const std::size_t k = seen_k[q];
            if (t.gaussian) {
                // log N(v; mu, 1/lambda) = (rho - log 2 pi) / 2 - lambda (v - mu)^2 / 2
                const batch diff = batch(seen_v[q]) - load(t.mean_t + k * m + d0);
                acc += load(t.half_log_precision_t + k * m + d0) -
                       load(t.half_precision_t + k * m + d0) * diff * diff;
            } else {
                acc +=
                    load(t.log_probabilities_t + (k * t.values + std::size_t(seen_v[q])) * m + d0);
            }
        }
        if (width == lanes)
            acc.store_unaligned(r + d0);
        else
            store_partial(acc, r + d0, width);
    }
}
inline constexpr std::size_t leaf_block = 64;  // patches larger than this take blocks of it
}  // namespace detail

// out[b, d] = sum over the observed coordinates k of log p_d(x[i_b, pixels[k]]), for b < rows
// and d < M (out is rows x M, row-major), where image i_b = first + b. A coordinate whose pixel
// is -1 (padding) or missing in x contributes log 1 = 0; with nothing observed the row is 0.
// x must have passed validate() (observed categorical values are symbols in [0, V)).
inline void leaf_log_densities(const leaf_tables& t, const observations<float>& x,
                               std::size_t first, std::size_t rows, const int* pixels,
                               std::size_t pixels_per_image, float* out) {
    constexpr std::size_t max_coordinates = detail::leaf_block;
    constexpr std::size_t prefetch_distance = 4;
    const std::size_t m = t.components;
    std::size_t seen_k[max_coordinates];
    float seen_v[max_coordinates];
    const std::uint8_t* observed = x.observed.empty() ? nullptr : x.observed.data();
    for (std::size_t b = 0; b < rows; ++b) {
        float* r = out + b * m;
        std::fill_n(r, m, 0.0f);
        const auto image_of = [&](std::size_t row) { return (first + row) * pixels_per_image; };
        const std::size_t image = image_of(b);
        // The images of a block are far apart and visited a few pixels at a time: fetch the
        // patch of the image a few rows ahead (its first and last coordinates' lines).
        if (b + prefetch_distance < rows && t.coordinates > 0) {
            const std::size_t ahead = image_of(b + prefetch_distance);
            for (const int k : {pixels[0], pixels[t.coordinates - 1]}) {
                if (k < 0) continue;
                __builtin_prefetch(x.values.data() + ahead + std::size_t(k));
                if (observed != nullptr) __builtin_prefetch(observed + ahead + std::size_t(k));
            }
        }
        for (std::size_t k0 = 0; k0 < t.coordinates; k0 += max_coordinates) {
            // the observed coordinates of this block of the patch, listed without branching on
            // the mask (missing pixels are often random: the branch would mispredict)
            std::size_t seen = 0;
            for (std::size_t k = k0; k < std::min(t.coordinates, k0 + max_coordinates); ++k) {
                if (pixels[k] < 0) continue;  // the same for every image
                const std::size_t index = image + std::size_t(pixels[k]);
                const float v = x.values[index];
                const bool flagged = observed == nullptr || observed[index] != 0;
                seen_k[seen] = k, seen_v[seen] = v;
                seen += std::size_t(flagged & (v == v));  // NaN is missing
            }
            detail::add_leaf_logs(t, r, seen_k, seen_v, seen);
        }
    }
}

// The same from the batch's pixels laid out by pixel_major() (NaN where missing), for rows
// images[b] (indices into its columns): a patch's pixels for the whole batch lie in a few
// short rows there, where they are far apart in x.
inline void leaf_log_densities(const leaf_tables& t, const float* pixels_by_image,
                               std::size_t stride, std::size_t rows, const int* pixels, float* out,
                               const std::uint32_t* images) {
    constexpr std::size_t max_coordinates = detail::leaf_block;
    const std::size_t m = t.components;
    std::size_t seen_k[max_coordinates];
    float seen_v[max_coordinates];
    for (std::size_t b = 0; b < rows; ++b) {
        float* r = out + b * m;
        std::fill_n(r, m, 0.0f);
        const float* column = pixels_by_image + images[b];
        for (std::size_t k0 = 0; k0 < t.coordinates; k0 += max_coordinates) {
            std::size_t seen = 0;  // (without branching on the data, as above)
            for (std::size_t k = k0; k < std::min(t.coordinates, k0 + max_coordinates); ++k) {
                if (pixels[k] < 0) continue;
                const float v = column[std::size_t(pixels[k]) * stride];
                seen_k[seen] = k, seen_v[seen] = v;
                seen += std::size_t(v == v);
            }
            detail::add_leaf_logs(t, r, seen_k, seen_v, seen);
        }
    }
}

// The pixels of images [first, first + rows) pixel by pixel: pixel q of image first + b at
// out[q * stride + b], stride = rows rounded up to whole vectors; NaN where the pixel is
// missing (flagged missing, or NaN in x) and in the padding rows. The leaves' kernels below
// read a patch's coordinates for a vector of images from it with plain loads.
inline std::size_t pixel_major(const observations<float>& x, std::size_t first, std::size_t rows,
                               std::size_t pixels_per_image, std::vector<float>& out) {
    constexpr std::size_t lanes = detail::mex_lanes;
    const float missing = std::numeric_limits<float>::quiet_NaN();
    const std::size_t stride = detail::round_up(rows, lanes);
    out.resize(pixels_per_image * stride);
    const std::uint8_t* observed = x.observed.empty() ? nullptr : x.observed.data();
    const float* values = x.values.data();
    // lanes x lanes tiles: each image's pixels read in order (the prefetchers follow a few
    // images' lines) and masked without branches (missing pixels are often random), then
    // turned around through a small tile
    using batch = detail::mex_batch;
    alignas(64) float seen[lanes];
    batch rows_of_tile[lanes];
    for (std::size_t b0 = 0; b0 < stride; b0 += lanes) {
        const std::size_t height = std::min(lanes, rows > b0 ? rows - b0 : 0);
        for (std::size_t q0 = 0; q0 < pixels_per_image; q0 += lanes) {
            const std::size_t width = std::min(lanes, pixels_per_image - q0);
            for (std::size_t b = 0; b < lanes; ++b) {
                if (b >= height) {
                    rows_of_tile[b] = batch(missing);
                    continue;
                }
                const std::size_t image = (first + b0 + b) * pixels_per_image + q0;
                const batch v = width == lanes ? batch::load_unaligned(values + image)
                                               : detail::load_partial(values + image, width, 0.0f);
#if defined(__AVX512F__)
                if constexpr (lanes == 16) {
                    if (observed != nullptr && width == lanes) {  // the 16 flags widened at once
                        const __m512i flags = _mm512_cvtepu8_epi32(
                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(observed + image)));
                        rows_of_tile[b] = _mm512_mask_blend_ps(_mm512_test_epi32_mask(flags, flags),
                                                               _mm512_set1_ps(missing), v);
                        continue;
                    }
                }
#endif
                for (std::size_t q = 0; q < lanes; ++q)
                    seen[q] = observed == nullptr || (q < width && observed[image + q] != 0);
                rows_of_tile[b] =
                    xsimd::select(batch::load_aligned(seen) != batch(0.0f), v, batch(missing));
            }
            float* column = out.data() + q0 * stride + b0;
            if constexpr (detail::mex_register_transpose && lanes == 2 * detail::mex_mr) {
                // two 8 x 16 register transposes (see detail::transpose_tile), half a column each
                alignas(64) float half[2][lanes * detail::mex_mr];
                for (std::size_t h = 0; h < 2; ++h) {
                    batch part[detail::mex_mr];
                    for (std::size_t r = 0; r < detail::mex_mr; ++r)
                        part[r] = rows_of_tile[h * detail::mex_mr + r];
                    detail::transpose_tile(part, half[h]);
                }
                for (std::size_t q = 0; q < width; ++q)
                    for (std::size_t h = 0; h < 2; ++h)
                        std::copy_n(half[h] + q * detail::mex_mr, detail::mex_mr,
                                    column + q * stride + h * detail::mex_mr);
            } else {
                alignas(64) float tile[lanes][lanes];
                for (std::size_t b = 0; b < lanes; ++b) rows_of_tile[b].store_aligned(tile[b]);
                for (std::size_t q = 0; q < width; ++q)
                    for (std::size_t b = 0; b < lanes; ++b) column[q * stride + b] = tile[b][q];
            }
        }
    }
    return stride;
}

namespace detail {

// The first conv's inputs, the Gaussian leaves' log-densities, computed image-vectorised from
// pixel_major() as the forward GEMM packs them (a source for mex_forward_window_panels): no
// rows x M representation is written, read back and transposed. Member j's patch has the
// coordinates coordinates[j][0 .. counts[j]) (padding left out) at pixels pixels[j][..].
struct gaussian_window_leaves {
    const leaf_tables* tables;
    const float* pixels_by_image;  // pixel_major()'s out, for the rows of the call
    std::size_t stride;            // and its stride
    const std::uint32_t* const* coordinates;
    const std::uint32_t* const* pixels;
    const std::size_t* counts;
    float* log_columns;  // count x M x log_stride: member j's log-densities L[b, d] in the chunk
    std::size_t log_stride;
    float* row;  // M floats: log_row's gathered row

    // L[b, d] = sum over the observed coordinates k of (rho - log 2 pi) / 2 - lambda (v - mu)^2
    // / 2, m_b = max_d L[b, d], E[b, d] = exp(L[b, d] - m_b) in the packed A layout (pack_a:
    // blocks of mex_mr rows, k-major), rows [row0, row0 + chunk) of member j.
    void shift_and_pack(std::size_t j, std::size_t row0, std::size_t chunk, float* packed_e,
                        float* m) const {
        constexpr std::size_t lanes = mex_lanes, d_block = 8;
        const std::size_t M = tables->components, n = counts[j];
        const std::size_t packed_rows = round_up(chunk, mex_mr);
        const float* mean = tables->mean_t;
        const float* half_log_precision = tables->half_log_precision_t;
        const float* half_precision = tables->half_precision_t;
        float* logs = log_columns + j * M * log_stride;
        const mex_batch lane_index = lane_indices();
        // per coordinate: v where observed, else 0, and o = 1 where observed, else 0
        thread_local std::vector<mex_batch> values, seen;
        values.resize(n), seen.resize(n);
        for (std::size_t b0 = 0; b0 < chunk; b0 += lanes) {
            for (std::size_t c = 0; c < n; ++c) {
                const mex_batch v =
                    mex_batch::load_unaligned(pixels_by_image + pixels[j][c] * stride + row0 + b0);
                const auto observed = v == v;
                values[c] = xsimd::select(observed, v, mex_batch(0.0f));
                seen[c] = xsimd::select(observed, mex_batch(1.0f), mex_batch(0.0f));
            }
            // d_block components at a time (then one at a time), their sums in registers:
            // dd = o (v - mu), L += o (rho - log 2 pi) / 2 - (lambda / 2) dd^2
            mex_batch top(mex_minus_infinity);
            const auto components = [&](std::size_t d0, auto block) {
                constexpr std::size_t width = decltype(block)::value;
                mex_batch acc[width];
#pragma GCC unroll 8
                for (std::size_t d = 0; d < width; ++d) acc[d] = mex_batch(0.0f);
                for (std::size_t c = 0; c < n; ++c) {
                    const std::size_t at = coordinates[j][c] * M + d0;
                    const mex_batch v = values[c], o = seen[c];
#pragma GCC unroll 8
                    for (std::size_t d = 0; d < width; ++d) {
                        const mex_batch dd = xsimd::fnma(o, mex_batch(mean[at + d]), v);
                        acc[d] = xsimd::fnma(
                            mex_batch(half_precision[at + d]) * dd, dd,
                            xsimd::fma(o, mex_batch(half_log_precision[at + d]), acc[d]));
                    }
                }
#pragma GCC unroll 8
                for (std::size_t d = 0; d < width; ++d) {
                    acc[d].store_aligned(logs + (d0 + d) * log_stride + b0);
                    top = xsimd::max(top, acc[d]);
                }
            };
            std::size_t d0 = 0;
            for (; d0 + d_block <= M; d0 += d_block)
                components(d0, std::integral_constant<std::size_t, d_block>{});
            for (; d0 < M; ++d0) components(d0, std::integral_constant<std::size_t, 1>{});
            alignas(64) float top_lanes[lanes];
            top.store_aligned(top_lanes);
            for (std::size_t q = 0; q < lanes && b0 + q < chunk; ++q) m[b0 + q] = top_lanes[q];
            // E, zero in the rows past the chunk (the packed layout's padding)
            const auto inside = lane_index < mex_batch(float(chunk - b0));
            for (std::size_t d = 0; d < M; ++d) {
                const mex_batch e = xsimd::select(
                    inside,
                    tmm::detail::exp(mex_batch::load_aligned(logs + d * log_stride + b0) - top),
                    mex_batch(0.0f));
                store_packed(e, packed_e, M, packed_rows, b0, d);
            }
        }
        // Rows past the last vector of images up to the end of the last block (AVX2: blocks of
        // 6 rows, vectors of 8 images) are padding too.
        for (std::size_t b = round_up(chunk, lanes); b < packed_rows; ++b)
            for (std::size_t d = 0; d < M; ++d)
                packed_e[(b / mex_mr) * mex_mr * M + d * mex_mr + b % mex_mr] = 0.0f;
    }

    // member j's log-values at row row0 + b (after shift_and_pack(j, row0, ...), until the
    // next chunk)
    const float* log_row(std::size_t j, std::size_t, std::size_t b) const {
        const std::size_t M = tables->components;
        for (std::size_t d = 0; d < M; ++d) row[d] = log_columns[(j * M + d) * log_stride + b];
        return row;
    }

  private:
    // Lanes q of e (rows b0 + q) into column d of the packed A layout, rows < packed_rows.
    static void store_packed(const mex_batch& e, float* packed_e, std::size_t M,
                             std::size_t packed_rows, std::size_t b0, std::size_t d) {
#if defined(__AVX512F__)
        if constexpr (mex_lanes == 16 && mex_mr == 8) {
            // b0 is a multiple of 16: lanes 0-7 are block b0 / 8, lanes 8-15 the next
            const __m512d both = _mm512_castps_pd(e);
            _mm256_storeu_ps(packed_e + b0 * M + d * 8,
                             _mm256_castpd_ps(_mm512_castpd512_pd256(both)));
            if (b0 + 8 < packed_rows)
                _mm256_storeu_ps(packed_e + (b0 + 8) * M + d * 8,
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(both, 1)));
            return;
        }
#endif
        alignas(64) float lanes[mex_lanes];
        e.store_aligned(lanes);
        for (std::size_t q = 0; q < mex_lanes && b0 + q < packed_rows; ++q) {
            const std::size_t b = b0 + q;
            packed_e[(b / mex_mr) * mex_mr * M + d * mex_mr + b % mex_mr] = lanes[q];
        }
    }
};

}  // namespace detail

// A fused conv + pooling window whose conv is the first layer over Gaussian leaves (see
// mex_forward_window): the members' inputs are the leaves' log-densities at their patches,
// computed from pixel_major()'s pixels (stride: its return value) as they are packed. Member
// j's patch: its coordinates' pixels patch_pixels[j][k], k < t.coordinates (-1: padding).
// The values go to `out` as logs or as parts (see mex_forward_window_parts).
inline void mex_forward_window_from_leaves(std::size_t rows, std::size_t O, std::size_t count,
                                           const leaf_tables& t, const float* pixels_by_image,
                                           std::size_t stride, const int* const* patch_pixels,
                                           const float* const* packed_w_t,
                                           const float* const* log_weights,
                                           const detail::window_values& out) {
    const std::size_t M = t.components;
    if (rows == 0 || O == 0) return;
    if (count == 0 || M == 0) {  // as mex_forward_window_parts
        mex_forward_window_parts(rows, M, O, count, nullptr, nullptr, nullptr, nullptr, out);
        return;
    }
    // the observable coordinates of each member's patch
    thread_local std::vector<std::uint32_t> coordinates, pixels;
    thread_local std::vector<const std::uint32_t*> coordinate_lists, pixel_lists;
    thread_local std::vector<std::size_t> counts;
    coordinates.clear(), pixels.clear(), counts.assign(count, 0);
    for (std::size_t j = 0; j < count; ++j)
        for (std::size_t k = 0; k < t.coordinates; ++k)
            if (patch_pixels[j][k] >= 0) {
                coordinates.push_back(std::uint32_t(k));
                pixels.push_back(std::uint32_t(patch_pixels[j][k]));
                ++counts[j];
            }
    coordinate_lists.resize(count), pixel_lists.resize(count);
    for (std::size_t j = 0, at = 0; j < count; at += counts[j], ++j)
        coordinate_lists[j] = coordinates.data() + at, pixel_lists[j] = pixels.data() + at;
    const std::size_t log_stride =
        detail::round_up(std::min(rows, detail::mex_rows_per_chunk), detail::mex_lanes);
    thread_local detail::aligned_floats log_columns, row;
    const detail::gaussian_window_leaves source{&t,
                                                pixels_by_image,
                                                stride,
                                                coordinate_lists.data(),
                                                pixel_lists.data(),
                                                counts.data(),
                                                log_columns.get(count * M * log_stride),
                                                log_stride,
                                                row.get(M)};
    detail::with_panel_vectors(O, [&](auto nv) {
        detail::mex_forward_window_panels<decltype(nv)::value>(rows, M, O, count, source,
                                                               packed_w_t, log_weights, out);
    });
}

}  // namespace tmm::backends::cpu_kernels

#include "../../detail/xsimd_warnings_pop.hpp"
