#pragma once
// k-nearest-neighbour baseline for images with missing pixels: the distance runs over the
// test image's observed pixels only, d(x, t) = sum_j m_j (x_j - t_j)^2, computed for all
// pairs at once as a blocked matrix product so 1,000 x 60,000 MNIST-sized images take seconds.

#include <tmm/data/dataset.hpp>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

namespace tmm::tools {

// Pixel scaling shared with the model input (recipe.md): bytes to [-0.5, 0.5]. Distances are
// in these units; test pixels must be given in them too.
inline float knn_pixel(std::uint8_t v) {
    return (static_cast<float>(v) - 127.5f) / 255.0f;
}

struct knn_neighbour {
    float distance;
    std::uint32_t index;  // into the training set
};

namespace detail {

struct aligned_delete {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t{64}); }
};
using aligned_floats = std::unique_ptr<float[], aligned_delete>;

inline aligned_floats make_aligned_floats(std::size_t n) {
    auto* p = static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t{64}));
    std::fill(p, p + n, 0.0f);
    return aligned_floats(p);
}

// Floats per SIMD register of the target; a panel is two registers wide. Wider vector types
// than the target has are lowered element by element, a hundred times slower.
#if defined(__AVX512F__)
inline constexpr std::size_t knn_lanes = 16;
#elif defined(__AVX__)
inline constexpr std::size_t knn_lanes = 8;
#else
inline constexpr std::size_t knn_lanes = 4;
#endif
inline constexpr std::size_t knn_block = 2 * knn_lanes;  // training images per panel
inline constexpr std::size_t knn_tile = 6;               // test images sharing each panel load

// With a_p = -2 m_p x_p, the distance is sum m x^2 + sum_p (a_p t_p + m_p t_p^2): one product
// of the packed test rows [a | m] with the packed training columns [t | t^2]. For knn_tile test
// images against one panel of knn_block training images, over all pixels:
//   out[i][j] = sum_p a[p][i] t[p][j] + m[p][i] t[p][j]^2
inline void knn_kernel(const float* panel, const float* a, const float* m, std::size_t dim,
                       float* out) {
    constexpr std::size_t nb = knn_block;
    constexpr std::size_t mr = knn_tile;
#if defined(__GNUC__)
    // GCC keeps plain accumulator arrays in memory here (a load and store per update, half
    // the speed); these 12 vector-extension values stay in registers.
    using vec = float __attribute__((vector_size(knn_lanes * sizeof(float))));
    constexpr std::size_t lanes = sizeof(vec) / sizeof(float);
    constexpr std::size_t nv = nb / lanes;
    vec acc[mr][nv] = {};
    for (std::size_t p = 0; p < dim; ++p) {
        vec t[nv], tt[nv];
#pragma GCC unroll 4
        for (std::size_t v = 0; v < nv; ++v) {
            __builtin_memcpy(&t[v], panel + p * nb + v * lanes, sizeof(vec));
            tt[v] = t[v] * t[v];
        }
#pragma GCC unroll 8
        for (std::size_t i = 0; i < mr; ++i) {
            const float ai = a[p * mr + i];
            const float mi = m[p * mr + i];
#pragma GCC unroll 4
            for (std::size_t v = 0; v < nv; ++v) {
                acc[i][v] += ai * t[v];  // two separate updates so each can contract to an FMA
                acc[i][v] += mi * tt[v];
            }
        }
    }
    for (std::size_t i = 0; i < mr; ++i)
        for (std::size_t v = 0; v < nv; ++v)
            __builtin_memcpy(out + i * nb + v * lanes, &acc[i][v], sizeof(vec));
#else
    float acc[mr][nb] = {};
    for (std::size_t p = 0; p < dim; ++p) {
        const float* t = panel + p * nb;
        for (std::size_t i = 0; i < mr; ++i) {
            const float ai = a[p * mr + i];
            const float mi = m[p * mr + i];
            for (std::size_t j = 0; j < nb; ++j) acc[i][j] += ai * t[j] + mi * t[j] * t[j];
        }
    }
    for (std::size_t i = 0; i < mr; ++i)
        for (std::size_t j = 0; j < nb; ++j) out[i * nb + j] = acc[i][j];
#endif
}

// Keeps the k smallest (distance, index), ascending; a later index never displaces an equal
// distance, so with training images scanned in order the smaller index wins ties.
inline void knn_insert(knn_neighbour* best, std::size_t k, float d, std::uint32_t index) {
    if (!(d < best[k - 1].distance)) return;
    std::size_t pos = k - 1;
    while (pos > 0 && d < best[pos - 1].distance) {
        best[pos] = best[pos - 1];
        --pos;
    }
    best[pos] = {d, index};
}

}  // namespace detail

// The training set packed for the distance kernel; build it once and query it many times.
class knn_index {
  public:
    explicit knn_index(const data::dataset& train) {
        train.validate("knn_index: training set");
        count_ = train.count;
        dim_ = train.image_size();
        classes_ = train.classes;
        labels_ = train.labels;
        if (count_ > std::numeric_limits<std::uint32_t>::max())
            throw data::error("knn_index: more than 2^32 training images");
        blocks_ = (count_ + detail::knn_block - 1) / detail::knn_block;

        // Panel b holds images b*knn_block .. (b+1)*knn_block-1 pixel-major ([p][j]), so the
        // kernel reads the panel's values of one pixel as two contiguous vectors. Padding images
        // are zero and never reported.
        panels_ = detail::make_aligned_floats(blocks_ * dim_ * detail::knn_block);
        oneapi::tbb::parallel_for(std::size_t{0}, blocks_, [&](std::size_t b) {
            float* panel = panels_.get() + b * dim_ * detail::knn_block;
            for (std::size_t j = 0; j < detail::knn_block; ++j) {
                const std::size_t n = b * detail::knn_block + j;
                if (n >= count_) break;
                const std::uint8_t* image = train.pixels.data() + n * dim_;
                for (std::size_t p = 0; p < dim_; ++p)
                    panel[p * detail::knn_block + j] = knn_pixel(image[p]);
            }
        });
    }

    std::size_t size() const { return count_; }
    std::size_t image_size() const { return dim_; }
    int classes() const { return classes_; }
    const std::vector<int>& labels() const { return labels_; }

    // The k nearest training images of each test image, ascending by distance (ties: smaller
    // training index first): test_count * k entries. test_pixels holds test_count images of
    // image_size() values scaled like knn_pixel; test_observed the same layout, 1 = observed,
    // or is empty when all are. Values at missing positions are never read, so NaN is fine.
    // A test image with nothing observed is at distance 0 from all: it gets the first k.
    // Distances come from the expanded form, so they carry an absolute error of about 1e-7
    // times sum x^2 + t^2 (they can even be slightly negative when the true value is 0).
    std::vector<knn_neighbour> neighbours(std::span<const float> test_pixels,
                                          std::span<const std::uint8_t> test_observed,
                                          std::size_t test_count, int k) const {
        check(test_pixels, test_observed, test_count, k);
        const std::size_t kk = static_cast<std::size_t>(k);
        std::vector<knn_neighbour> best(test_count * kk,
                                        knn_neighbour{std::numeric_limits<float>::infinity(),
                                                      std::numeric_limits<std::uint32_t>::max()});
        const std::size_t tiles = (test_count + detail::knn_tile - 1) / detail::knn_tile;
        // Tiles per task: each task streams all panels once, so a task should cover enough
        // tests to amortise that (here 48) while leaving tasks for every thread.
        constexpr std::size_t tiles_per_task = 8;

        oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::size_t>(0, tiles, tiles_per_task),
                                  [&](const oneapi::tbb::blocked_range<std::size_t>& range) {
                                      search(test_pixels, test_observed, test_count, kk,
                                             range.begin(), range.end(), best);
                                  });
        return best;
    }

    // Majority vote among the k nearest; a tie in votes goes to the class whose tied
    // neighbours have the smaller summed distance, then to the smaller label.
    std::vector<int> predict(std::span<const float> test_pixels,
                             std::span<const std::uint8_t> test_observed, std::size_t test_count,
                             int k) const {
        const std::vector<knn_neighbour> best =
            neighbours(test_pixels, test_observed, test_count, k);
        const std::size_t kk = static_cast<std::size_t>(k);
        std::vector<int> out(test_count);
        std::vector<int> votes(static_cast<std::size_t>(classes_));
        std::vector<double> summed(static_cast<std::size_t>(classes_));
        for (std::size_t t = 0; t < test_count; ++t) {
            std::fill(votes.begin(), votes.end(), 0);
            std::fill(summed.begin(), summed.end(), 0.0);
            for (std::size_t n = 0; n < kk; ++n) {
                const knn_neighbour& nb = best[t * kk + n];
                const auto c = static_cast<std::size_t>(labels_[nb.index]);
                ++votes[c];
                summed[c] += nb.distance;
            }
            std::size_t winner = 0;
            for (std::size_t c = 1; c < votes.size(); ++c)
                if (votes[c] > votes[winner] ||
                    (votes[c] == votes[winner] && summed[c] < summed[winner]))
                    winner = c;
            out[t] = static_cast<int>(winner);
        }
        return out;
    }

  private:
    void check(std::span<const float> test_pixels, std::span<const std::uint8_t> test_observed,
               std::size_t test_count, int k) const {
        if (k < 1 || static_cast<std::size_t>(k) > count_)
            throw data::error("knn: k = " + std::to_string(k) + " must be in 1.." +
                              std::to_string(count_) + " (the training set size)");
        if (test_pixels.size() != test_count * dim_)
            throw data::error("knn: " + std::to_string(test_pixels.size()) +
                              " test values, expected " + std::to_string(test_count * dim_) +
                              " for " + std::to_string(test_count) + " images of " +
                              std::to_string(dim_));
        if (!test_observed.empty() && test_observed.size() != test_pixels.size())
            throw data::error("knn: observed mask has " + std::to_string(test_observed.size()) +
                              " entries, expected " + std::to_string(test_pixels.size()) +
                              " (one per test value) or none");
        for (std::size_t v = 0; v < test_pixels.size(); ++v)
            if ((test_observed.empty() || test_observed[v] != 0) && !std::isfinite(test_pixels[v]))
                throw data::error("knn: test image " + std::to_string(v / dim_) + ", value " +
                                  std::to_string(v % dim_) + " is observed but not finite (" +
                                  std::to_string(test_pixels[v]) + ")");
    }

    // Test tiles [first, last): pack each tile's rows, then run it against every panel while
    // the panel sits in cache, keeping each test's k best as it goes.
    void search(std::span<const float> test_pixels, std::span<const std::uint8_t> test_observed,
                std::size_t test_count, std::size_t k, std::size_t first, std::size_t last,
                std::vector<knn_neighbour>& best) const {
        constexpr std::size_t mr = detail::knn_tile;
        constexpr std::size_t nb = detail::knn_block;
        const std::size_t tiles = last - first;
        auto a = detail::make_aligned_floats(tiles * dim_ * mr);
        auto m = detail::make_aligned_floats(tiles * dim_ * mr);
        std::vector<float> base(tiles * mr, 0.0f);  // sum over observed pixels of x^2

        // Tile rows past test_count stay all-missing (m = 0) and are dropped below.
        for (std::size_t tile = 0; tile < tiles; ++tile) {
            for (std::size_t i = 0; i < mr; ++i) {
                const std::size_t t = (first + tile) * mr + i;
                if (t >= test_count) break;
                const float* x = test_pixels.data() + t * dim_;
                const std::uint8_t* obs =
                    test_observed.empty() ? nullptr : test_observed.data() + t * dim_;
                double sum = 0.0;
                for (std::size_t p = 0; p < dim_; ++p) {
                    if (obs != nullptr && obs[p] == 0) continue;
                    a[(tile * dim_ + p) * mr + i] = -2.0f * x[p];
                    m[(tile * dim_ + p) * mr + i] = 1.0f;
                    sum += static_cast<double>(x[p]) * x[p];
                }
                base[tile * mr + i] = static_cast<float>(sum);
            }
        }

        alignas(64) float out[mr * nb];
        for (std::size_t b = 0; b < blocks_; ++b) {
            const float* panel = panels_.get() + b * dim_ * nb;
            const std::size_t valid = std::min(nb, count_ - b * nb);
            for (std::size_t tile = 0; tile < tiles; ++tile) {
                detail::knn_kernel(panel, a.get() + tile * dim_ * mr, m.get() + tile * dim_ * mr,
                                   dim_, out);
                for (std::size_t i = 0; i < mr; ++i) {
                    const std::size_t t = (first + tile) * mr + i;
                    if (t >= test_count) break;
                    knn_neighbour* mine = best.data() + t * k;
                    for (std::size_t j = 0; j < valid; ++j)
                        detail::knn_insert(mine, k, base[tile * mr + i] + out[i * nb + j],
                                           static_cast<std::uint32_t>(b * nb + j));
                }
            }
        }
    }

    std::size_t count_ = 0;
    std::size_t dim_ = 0;
    std::size_t blocks_ = 0;
    int classes_ = 0;
    std::vector<int> labels_;
    detail::aligned_floats panels_;
};

// One-shot form: packs train, then predicts. Reuse a knn_index for repeated queries.
inline std::vector<int> knn_predict(const data::dataset& train, std::span<const float> test_pixels,
                                    std::span<const std::uint8_t> test_observed,
                                    std::size_t test_count, int k) {
    return knn_index(train).predict(test_pixels, test_observed, test_count, k);
}

}  // namespace tmm::tools
