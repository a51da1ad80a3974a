// Independent oracles for the reference backend, written from the mathematics of design.md
// §1-§2 and never from the backend: the prior tensor A^y of a plan expanded in linear space,
// leaf densities, and eq. 1 summed by brute force. Only the plan's list of layers and the
// parameter layout are shared with the code under test.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <random>
#include <span>
#include <vector>

#include <tmm/tmm.hpp>

namespace oracle {

inline constexpr double infinity = std::numeric_limits<double>::infinity();
// NaN: a missing value without a mask.
inline const double missing_value = std::numeric_limits<double>::quiet_NaN();

// |a - b| <= tolerance * max(1, |a|, |b|): relative for large values, absolute near zero.
inline bool close(double a, double b, double tolerance) {
    return std::abs(a - b) <= tolerance * std::max({1.0, std::abs(a), std::abs(b)});
}

inline std::size_t power(std::size_t base, int exponent) {
    std::size_t result = 1;
    for (int i = 0; i < exponent; ++i) result *= base;
    return result;
}

// Assignments d = (d_0 .. d_{N-1}) in [M]^N of components to positions, numbered row-major:
// index = sum_i d_i M^(N-1-i), so position 0 is the most significant mode.
struct assignments {
    int positions = 0, components = 0;
    std::size_t count = 0;
    std::vector<std::size_t> stride;

    assignments(int n, int m) : positions(n), components(m), count(power(m, n)), stride(n) {
        for (int i = 0; i < n; ++i) stride[i] = power(m, n - 1 - i);
    }
    int component(std::size_t index, int position) const {
        return int(index / stride[position] % components);
    }
};

// Rows of linear weights on the simplex: W[r, a] = exp(theta[r, a]) / sum_b exp(theta[r, b]).
inline std::vector<double> simplex_rows(const std::vector<double>& theta, int row_length) {
    std::vector<double> w(theta.size());
    for (std::size_t r = 0; r * row_length < theta.size(); ++r) {
        double top = -infinity;
        for (int a = 0; a < row_length; ++a) top = std::max(top, theta[r * row_length + a]);
        double sum = 0;
        for (int a = 0; a < row_length; ++a) sum += std::exp(theta[r * row_length + a] - top);
        for (int a = 0; a < row_length; ++a)
            w[r * row_length + a] = std::exp(theta[r * row_length + a] - top) / sum;
    }
    return w;
}

// Linear weights of a conv layer, weight_sets x out x in.
inline std::vector<double> conv_weights(const tmm::layer& l, const std::vector<double>& theta) {
    if (!l.fixed) return simplex_rows(theta, l.in_channels);
    std::vector<double> w;
    for (int set = 0; set < l.weight_sets; ++set)
        w.insert(w.end(), l.fixed_weights.begin(), l.fixed_weights.end());
    return w;
}

// A^y for every class y (K vectors of M^N entries), by walking the layers in linear space.
// Every activation is kept as a function of the whole assignment d: channel c of the
// representation at position i is [d_i == c]; a conv forms sum_a W[g, a] act[a]; a product
// pooling multiplies the functions of its members, whose supports are disjoint sets of
// positions, which is exactly their outer product. A padded slot is the constant 1.
inline std::vector<std::vector<double>> prior_tensors(const tmm::plan& p,
                                                      const tmm::parameters<double>& theta) {
    const assignments d(p.positions(), p.components);
    using function = std::vector<double>;
    std::vector<std::vector<function>> act(p.positions(), std::vector<function>(p.components));
    for (int i = 0; i < p.positions(); ++i)
        for (int c = 0; c < p.components; ++c) {
            act[i][c].assign(d.count, 0.0);
            for (std::size_t index = 0; index < d.count; ++index)
                act[i][c][index] = d.component(index, i) == c ? 1.0 : 0.0;
        }

    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        const tmm::layer& ly = p.layers[l];
        std::vector<std::vector<function>> next(ly.out_positions(),
                                                std::vector<function>(ly.out_channels));
        if (ly.kind == tmm::layer_kind::conv) {
            const std::vector<double> w = conv_weights(ly, theta.theta[l]);
            for (int j = 0; j < ly.in_positions(); ++j) {
                const double* wj = w.data() + std::size_t(ly.set_of_position[j]) * ly.out_channels *
                                                  ly.in_channels;
                for (int g = 0; g < ly.out_channels; ++g) {
                    function& out = next[j][g];
                    out.assign(d.count, 0.0);
                    for (int a = 0; a < ly.in_channels; ++a)
                        for (std::size_t index = 0; index < d.count; ++index)
                            out[index] += wj[g * ly.in_channels + a] * act[j][a][index];
                }
            }
        } else {
            for (int w = 0; w < ly.out_positions(); ++w)
                for (int g = 0; g < ly.out_channels; ++g) {
                    function& out = next[w][g];
                    out.assign(d.count, 1.0);
                    for (int slot = 0; slot < ly.window_size; ++slot) {
                        const int j = ly.members[w * ly.window_size + slot];
                        if (j < 0) continue;
                        for (std::size_t index = 0; index < d.count; ++index)
                            out[index] *= act[j][g][index];
                    }
                }
        }
        act = std::move(next);
    }
    return act.at(0);
}

// Whether value `index` of a batch is observed: mask flag 1 (or no mask) and not NaN.
inline bool observed(std::span<const double> values, std::span<const std::uint8_t> mask,
                     std::size_t index) {
    return (mask.empty() || mask[index] != 0) && !std::isnan(values[index]);
}

// Density of coordinate k of component c at value v, in linear space: a Gaussian with
// precision exp(log_precision), or the softmax of the logits.
inline double coordinate_density(const tmm::plan& p, const tmm::parameters<double>& theta, int c,
                                 int k, double v) {
    const std::size_t at = std::size_t(c) * p.patch_size() + k;
    if (p.leaves == tmm::leaf_kind::gaussian) {
        const double precision = std::exp(theta.log_precision[at]);
        const double diff = v - theta.mean[at];
        return std::sqrt(precision / (2 * std::numbers::pi)) *
               std::exp(-0.5 * precision * diff * diff);
    }
    double sum = 0;
    for (int s = 0; s < p.values; ++s) sum += std::exp(theta.logits[at * p.values + s]);
    return std::exp(theta.logits[at * p.values + std::size_t(v)]) / sum;
}

// Pixel index of coordinate k = (row in patch, column in patch, channel) of the patch at
// `position` of the grid, or -1 when it falls in the padding.
inline int pixel(const tmm::plan& p, int position, int k) {
    const int cols = (p.width + 2 * p.pad) / p.patch;
    const int channel = k % p.image_channels;
    const int patch_row = k / p.image_channels / p.patch,
              patch_col = k / p.image_channels % p.patch;
    const int row = position / cols * p.patch + patch_row - p.pad;
    const int col = position % cols * p.patch + patch_col - p.pad;
    if (row < 0 || col < 0 || row >= p.height || col >= p.width) return -1;
    return (row * p.width + col) * p.image_channels + channel;
}

// phi[i][c] = prod over the observed coordinates k of patch i of f_{c,k}(x_ik), for image b.
inline std::vector<std::vector<double>> patch_densities(const tmm::plan& p,
                                                        const tmm::parameters<double>& theta,
                                                        std::span<const double> values,
                                                        std::span<const std::uint8_t> mask,
                                                        std::size_t b) {
    std::vector<std::vector<double>> phi(p.positions(), std::vector<double>(p.components, 1.0));
    for (int i = 0; i < p.positions(); ++i)
        for (int k = 0; k < p.patch_size(); ++k) {
            const int px = pixel(p, i, k);
            if (px < 0) continue;
            const std::size_t index = b * p.pixels() + px;
            if (!observed(values, mask, index)) continue;
            for (int c = 0; c < p.components; ++c)
                phi[i][c] *= coordinate_density(p, theta, c, k, values[index]);
        }
    return phi;
}

// Eq. 1 by brute force: log of sum_d A^y[d] prod_i phi[i][d_i], count x K.
inline std::vector<double> brute_force_log_likelihoods(const tmm::plan& p,
                                                       const tmm::parameters<double>& theta,
                                                       const std::vector<std::vector<double>>& a,
                                                       std::span<const double> values,
                                                       std::span<const std::uint8_t> mask,
                                                       std::size_t count) {
    const assignments d(p.positions(), p.components);
    std::vector<double> result(count * p.classes);
    std::vector<double> product(d.count);
    for (std::size_t b = 0; b < count; ++b) {
        const auto phi = patch_densities(p, theta, values, mask, b);
        for (std::size_t index = 0; index < d.count; ++index) {
            product[index] = 1.0;
            for (int i = 0; i < p.positions(); ++i) product[index] *= phi[i][d.component(index, i)];
        }
        for (int y = 0; y < p.classes; ++y) {
            double sum = 0;
            for (std::size_t index = 0; index < d.count; ++index)
                sum += a[y][index] * product[index];
            result[b * p.classes + y] = std::log(sum);
        }
    }
    return result;
}

// A user-written pooling geometry: each column c is paired with its mirror image
// Cols - 1 - c in the same row, so a grid of R x C positions becomes R x C/2.
struct mirror_columns {
    template <int Rows, int Cols>
    static constexpr auto windows() {
        tmm::window_list<Rows, Cols / 2, 2> list;
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols / 2; ++c)
                list.at(r, c) = {r * Cols + c, r * Cols + (Cols - 1 - c)};
        return list;
    }
};

// ---- random models and inputs (fixed seeds in every test) ----

using engine = std::mt19937_64;

inline double uniform(engine& rng, double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
}
inline double normal(engine& rng, double sigma = 1.0) {
    return std::normal_distribution<double>(0.0, sigma)(rng);
}

// Random parameters for every array of the plan: means in (-1, 1), log-precisions in
// (-0.7, 0.7), logits and conv theta normal with deviation `spread`.
inline tmm::parameters<double> random_parameters(const tmm::plan& p, engine& rng,
                                                 double spread = 1.0) {
    tmm::parameters<double> theta = tmm::zero_parameters<double>(p);
    for (double& v : theta.mean) v = uniform(rng, -1.0, 1.0);
    for (double& v : theta.log_precision) v = uniform(rng, -0.7, 0.7);
    for (double& v : theta.logits) v = normal(rng, spread);
    for (auto& t : theta.theta)
        for (double& v : t) v = normal(rng, spread);
    return theta;
}

// `count` images: real values in (-1.5, 1.5) for Gaussian leaves, symbols in [0, V) otherwise.
inline std::vector<double> random_images(const tmm::plan& p, std::size_t count, engine& rng) {
    std::vector<double> values(count * p.pixels());
    for (double& v : values)
        v = p.leaves == tmm::leaf_kind::gaussian
                ? uniform(rng, -1.5, 1.5)
                : double(std::uniform_int_distribution<int>(0, p.values - 1)(rng));
    return values;
}

// A mask with each value missing (0) with probability `missing`.
inline std::vector<std::uint8_t> random_mask(std::size_t size, double missing, engine& rng) {
    std::vector<std::uint8_t> mask(size);
    for (auto& m : mask) m = uniform(rng, 0.0, 1.0) < missing ? 0 : 1;
    return mask;
}

inline tmm::observations<double> batch(const std::vector<double>& values,
                                       const std::vector<std::uint8_t>& mask, std::size_t count) {
    return {count, std::span<const double>(values), std::span<const std::uint8_t>(mask)};
}

}  // namespace oracle
