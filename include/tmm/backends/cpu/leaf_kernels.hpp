#pragma once
// The representation layer of the CPU backend as a single-threaded float32 kernel: the leaves'
// log-densities at one position for a block of images, vectorised over the components.

#include "../../detail/xsimd_warnings_push.hpp"

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>

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

// out[b, d] = sum over the observed coordinates k of log p_d(x[i_b, pixels[k]]), for b < rows
// and d < M (out is rows x M, row-major), where image i_b = first + b, or first + images[b]
// when a list of images is given. A coordinate whose pixel is -1 (padding) or missing in x
// contributes log 1 = 0; with nothing observed the row is 0. x must have passed validate()
// (observed categorical values are symbols in [0, V)).
inline void leaf_log_densities(const leaf_tables& t, const observations<float>& x,
                               std::size_t first, std::size_t rows, const int* pixels,
                               std::size_t pixels_per_image, float* out,
                               const std::uint32_t* images = nullptr) {
    using batch = detail::mex_batch;
    constexpr std::size_t lanes = detail::mex_lanes;
    constexpr std::size_t max_coordinates = 64;  // patches larger than this take blocks of it
    constexpr std::size_t prefetch_distance = 4;
    const std::size_t m = t.components;
    std::size_t seen_k[max_coordinates];
    float seen_v[max_coordinates];
    const std::uint8_t* observed = x.observed.empty() ? nullptr : x.observed.data();
    for (std::size_t b = 0; b < rows; ++b) {
        float* r = out + b * m;
        std::fill_n(r, m, 0.0f);
        const auto image_of = [&](std::size_t row) {
            return (first + (images != nullptr ? std::size_t(images[row]) : row)) *
                   pixels_per_image;
        };
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
            for (std::size_t d0 = 0; d0 < m; d0 += lanes) {
                const std::size_t width = std::min(lanes, m - d0);
                const auto load = [&](const float* at) {
                    return width == lanes ? batch::load_unaligned(at)
                                          : detail::load_partial(at, width, 0.0f);
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
                        acc += load(t.log_probabilities_t +
                                    (k * t.values + std::size_t(seen_v[q])) * m + d0);
                    }
                }
                if (width == lanes)
                    acc.store_unaligned(r + d0);
                else
                    detail::store_partial(acc, r + d0, width);
            }
        }
    }
}

}  // namespace tmm::backends::cpu_kernels

#include "../../detail/xsimd_warnings_pop.hpp"
