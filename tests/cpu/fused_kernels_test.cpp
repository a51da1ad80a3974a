// The CPU backend's fused kernels against oracles computed here in double: the conv fused with
// the product pooling that follows it (mex_forward_packed into a pooled sum), the
// representation layer (leaf_log_densities), and the backend's parameter checks folded into
// preparing the weights.
#define BOOST_TEST_MODULE cpu_fused_kernels
#include <boost/test/unit_test.hpp>

#include <tbb/global_control.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/backends/cpu/leaf_kernels.hpp>
#include <tmm/backends/cpu/mex_kernels.hpp>
#include <tmm/tmm.hpp>
#include <tuple>
#include <vector>

namespace {

namespace kernels = tmm::backends::cpu_kernels;

constexpr double minus_infinity = -std::numeric_limits<double>::infinity();
constexpr float minus_infinity_f = -std::numeric_limits<float>::infinity();

// A 64-byte aligned float buffer for packed weights.
struct aligned_buffer {
    kernels::detail::aligned_floats storage;
    float* get(std::size_t n) { return storage.get(std::max<std::size_t>(n, 1)); }
};

// One member of a pooling window: rows x I inputs and an O x I weight set.
struct member {
    std::vector<float> in, weights, log_weights;
};

member random_member(std::size_t rows, std::size_t I, std::size_t O, std::mt19937& rng) {
    std::normal_distribution<float> x(0.0f, 4.0f), logit(0.0f, 1.5f);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    member m;
    m.in.resize(rows * I);
    for (auto& v : m.in) v = u(rng) < 0.1f ? minus_infinity_f : x(rng);  // some log 0 inputs
    if (rows > 2) std::fill_n(m.in.begin() + I, I, minus_infinity_f);  // and one row entirely log 0
    m.weights.resize(O * I);
    m.log_weights.resize(O * I);
    for (std::size_t o = 0; o < O; ++o) {
        double sum = 0;
        std::vector<double> w(I);
        for (std::size_t i = 0; i < I; ++i)
            sum += w[i] = u(rng) < 0.2f ? 0.0 : std::exp(logit(rng));
        if (sum == 0) sum = w[0] = 1;
        for (std::size_t i = 0; i < I; ++i) {
            m.weights[o * I + i] = float(w[i] / sum);
            m.log_weights[o * I + i] = w[i] > 0 ? float(std::log(w[i] / sum)) : minus_infinity_f;
        }
    }
    return m;
}

// sum over the members of log sum_i W[o,i] exp(in[b,i]), in double: -inf if any member's sum
// is empty (zero).
std::vector<double> oracle_pooled(const std::vector<member>& members, std::size_t rows,
                                  std::size_t I, std::size_t O) {
    std::vector<double> out(rows * O, 0.0);
    for (const member& m : members)
        for (std::size_t b = 0; b < rows; ++b)
            for (std::size_t o = 0; o < O; ++o) {
                double sum = 0;
                for (std::size_t i = 0; i < I; ++i)
                    if (m.in[b * I + i] != minus_infinity_f && m.weights[o * I + i] > 0)
                        sum += std::exp(double(m.in[b * I + i]) + double(m.log_weights[o * I + i]));
                out[b * O + o] += sum > 0 ? std::log(sum) : minus_infinity;
            }
    return out;
}

std::string shape_name(std::size_t rows, std::size_t I, std::size_t O, std::size_t members) {
    std::ostringstream s;
    s << rows << "x" << I << "x" << O << " window " << members;
    return s.str();
}

// Checks got(e) against the double oracle want[e] for every entry: -inf exactly where the
// oracle is -inf, else finite and within 1e-5 relative (absolute below 1). Reports the first
// few misses, named by `what`, and fails once more with their count.
template <class Got>
void check_against_oracle(const std::vector<double>& want, Got&& got, const std::string& what) {
    std::size_t bad = 0;
    for (std::size_t e = 0; e < want.size(); ++e) {
        const double g = got(e), w = want[e];
        const bool ok =
            w == minus_infinity
                ? g == minus_infinity
                : std::isfinite(g) && std::abs(g - w) <= 1e-5 * std::max(1.0, std::abs(w));
        if (!ok && bad++ < 5)
            BOOST_ERROR(what << " entry " << e << ": got " << g << ", want " << w);
    }
    BOOST_TEST(bad == 0u, what << ": " << bad << " bad entries");
}

// Fused conv + pooling on random shapes: against the double oracle (-inf exactly where the
// oracle is -inf, else 1e-5 relative), and bit for bit against the unfused kernel's outputs
// added in member order, which is what the unfused pooling does.
BOOST_AUTO_TEST_CASE(fused_conv_pool_matches_the_oracle_and_the_unfused_kernels) {
    std::mt19937 rng(11);
    const std::size_t shapes[][4] = {{1, 1, 1, 1},    {3, 7, 5, 2},      {129, 33, 17, 4},
                                     {64, 32, 64, 4}, {130, 64, 128, 3}, {40, 17, 300, 5},
                                     {9, 200, 10, 4}, {200, 16, 16, 1}};
    for (const auto& shape : shapes) {
        const std::size_t rows = shape[0], I = shape[1], O = shape[2], count = shape[3];
        std::vector<member> members;
        for (std::size_t j = 0; j < count; ++j) members.push_back(random_member(rows, I, O, rng));
        const std::vector<double> want = oracle_pooled(members, rows, I, O);

        std::vector<float> pooled(rows * O, 12345.0f), unfused_sum(rows * O, 0.0f);
        aligned_buffer packed;
        for (std::size_t j = 0; j < count; ++j) {
            const member& m = members[j];
            float* w = packed.get(kernels::mex_forward_packed_size(I, O));
            kernels::mex_pack_forward_weights(I, O, m.weights.data(), w);
            kernels::mex_forward_packed(rows, I, O, m.in.data(), w, m.log_weights.data(), nullptr,
                                        pooled.data(), j > 0);
            // the unfused kernel, which packs W^T itself
            std::vector<float> weights_t(I * O), out(rows * O);
            for (std::size_t o = 0; o < O; ++o)
                for (std::size_t i = 0; i < I; ++i) weights_t[i * O + o] = m.weights[o * I + i];
            kernels::mex_forward(rows, I, O, m.in.data(), m.weights.data(), weights_t.data(),
                                 m.log_weights.data(), out.data());
            for (std::size_t e = 0; e < out.size(); ++e) unfused_sum[e] += out[e];
        }
        check_against_oracle(
            want, [&](std::size_t e) { return pooled[e]; }, shape_name(rows, I, O, count));
        BOOST_TEST(pooled == unfused_sum, shape_name(rows, I, O, count) << ": fused != unfused");
    }
}

// The window kernel (one log per output): against the double oracle on random shapes, with
// -inf inputs, rows entirely -inf, zero weights, and inputs spread wide enough that some
// products S underflow the product path (small S, and S below the exact-fallback threshold).
BOOST_AUTO_TEST_CASE(window_kernel_matches_the_oracle) {
    std::mt19937 rng(14);
    const std::size_t shapes[][4] = {{1, 1, 1, 1},    {3, 7, 5, 2},      {129, 33, 17, 4},
                                     {64, 32, 64, 4}, {130, 64, 128, 3}, {40, 17, 300, 9},
                                     {9, 200, 10, 4}, {200, 16, 16, 1},  {5, 8, 16, 64}};
    for (const bool wide : {false, true}) {
        for (const auto& shape : shapes) {
            const std::size_t rows = shape[0], I = shape[1], O = shape[2], count = shape[3];
            std::vector<member> members;
            for (std::size_t j = 0; j < count; ++j) {
                members.push_back(random_member(rows, I, O, rng));
                if (wide)  // entries far below their row's maximum: tiny S for some outputs
                    for (std::size_t e = 0; e < members[j].in.size(); ++e)
                        if (e % 3 != 0) members[j].in[e] = members[j].in[e] * 20.0f - 60.0f;
            }
            const std::vector<double> want = oracle_pooled(members, rows, I, O);
            std::vector<kernels::detail::aligned_floats> packed(count);
            std::vector<const float*> ins, weights, logs;
            for (std::size_t j = 0; j < count; ++j) {
                float* w = packed[j].get(kernels::mex_forward_packed_size(I, O));
                kernels::mex_pack_forward_weights(I, O, members[j].weights.data(), w);
                ins.push_back(members[j].in.data());
                weights.push_back(w);
                logs.push_back(members[j].log_weights.data());
            }
            std::vector<float> pooled(rows * O, 12345.0f);
            kernels::mex_forward_window(rows, I, O, count, ins.data(), weights.data(), logs.data(),
                                        pooled.data());
            check_against_oracle(
                want, [&](std::size_t e) { return pooled[e]; },
                shape_name(rows, I, O, count) + (wide ? " wide" : ""));
        }
    }
    // no member: log 1
    std::vector<float> empty(6, 7.0f);
    kernels::mex_forward_window(2, 4, 3, 0, nullptr, nullptr, nullptr, empty.data());
    BOOST_TEST(empty == std::vector<float>(6, 0.0f));
}

// Two windows chained as inference chains them (mex_forward_window_parts): the first keeps its
// values as the parts of its product (product, exponent, shift), the second reads them without
// an exp. Against the double oracle: the first window's values rebuilt from their parts, and the
// second window's given the first's oracle values as its members' inputs. The first layer's
// sharp weights spread its values widely, and the second's sharp weights then put some of its
// sums below the exact-fallback threshold, where the parts are read back as logs.
BOOST_AUTO_TEST_CASE(window_parts_chain_matches_the_oracle) {
    std::mt19937 rng(15);
    const std::size_t shapes[][5] = {// rows, I, middle width, O, members
                                     {1, 1, 1, 1, 1},
                                     {5, 8, 16, 16, 4},
                                     {70, 32, 64, 128, 4},
                                     {130, 17, 33, 5, 3},
                                     {9, 64, 48, 20, 2}};
    const auto sharpen = [](member& m, std::size_t I, float power) {
        for (std::size_t o = 0; o * I < m.weights.size(); ++o) {
            double sum = 0;
            for (std::size_t i = 0; i < I; ++i)
                if (m.weights[o * I + i] > 0) sum += std::pow(double(m.weights[o * I + i]), power);
            for (std::size_t i = 0; i < I; ++i) {
                const double w = m.weights[o * I + i] > 0
                                     ? std::pow(double(m.weights[o * I + i]), power) / sum
                                     : 0.0;
                m.weights[o * I + i] = float(w);
                m.log_weights[o * I + i] = w > 0 ? float(std::log(w)) : minus_infinity_f;
                if (w > 0 && m.weights[o * I + i] == 0) {  // keep W and log W consistent
                    m.weights[o * I + i] = 0;
                    m.log_weights[o * I + i] = minus_infinity_f;
                }
            }
        }
    };
    const auto pack = [](std::vector<member>& members, std::size_t I, std::size_t O,
                         std::vector<kernels::detail::aligned_floats>& packed,
                         std::vector<const float*>& weights, std::vector<const float*>& logs) {
        packed.resize(members.size());
        for (std::size_t j = 0; j < members.size(); ++j) {
            float* w = packed[j].get(kernels::mex_forward_packed_size(I, O));
            kernels::mex_pack_forward_weights(I, O, members[j].weights.data(), w);
            weights.push_back(w);
            logs.push_back(members[j].log_weights.data());
        }
    };
    std::size_t fallbacks = 0;  // second-layer sums below the threshold (from the oracle)
    for (const auto& shape : shapes) {
        const std::size_t rows = shape[0], I = shape[1], mid = shape[2], O = shape[3],
                          count = shape[4];
        std::vector<member> first, second;
        for (std::size_t j = 0; j < count; ++j) {
            first.push_back(random_member(rows, I, mid, rng));
            sharpen(first.back(), I, 6.0f);
            for (float& v : first.back().in) v = v * 20.0f - 60.0f;  // (-inf stays -inf)
        }
        std::vector<kernels::detail::aligned_floats> packed_first, packed_second;
        std::vector<const float*> ins, weights, logs, weights2, logs2;
        for (const member& m : first) ins.push_back(m.in.data());
        pack(first, I, mid, packed_first, weights, logs);
        std::vector<float> product(rows * mid, 7.0f), exponent(rows * mid, 7.0f), shift(rows, 7.0f);
        kernels::mex_forward_window_parts(rows, I, mid, count, ins.data(), nullptr, weights.data(),
                                          logs.data(),
                                          {nullptr, product.data(), exponent.data(), shift.data()});
        const std::vector<double> want_first = oracle_pooled(first, rows, I, mid);
        check_against_oracle(
            want_first,
            [&](std::size_t e) {
                return shift[e / mid] == minus_infinity_f || exponent[e] == minus_infinity_f
                           ? minus_infinity
                           : double(shift[e / mid]) + std::log(double(product[e])) +
                                 double(exponent[e]) * std::log(2.0);
            },
            shape_name(rows, I, mid, count) + " parts");

        // the second window: every member reads the first window's values
        std::vector<kernels::window_parts> parts;
        for (std::size_t j = 0; j < count; ++j) {
            second.push_back(random_member(rows, mid, O, rng));
            sharpen(second.back(), mid, 20.0f);
            for (std::size_t e = 0; e < want_first.size(); ++e)
                second.back().in[e] = float(want_first[e]);
            parts.push_back({product.data(), exponent.data(), shift.data()});
        }
        pack(second, mid, O, packed_second, weights2, logs2);
        std::vector<float> pooled(rows * O, 12345.0f);
        kernels::mex_forward_window_parts(rows, mid, O, count, nullptr, parts.data(),
                                          weights2.data(), logs2.data(), {pooled.data()});
        const std::vector<double> want = oracle_pooled(second, rows, mid, O);
        check_against_oracle(
            want, [&](std::size_t e) { return pooled[e]; },
            shape_name(rows, mid, O, count) + " second");
        // how many of the second layer's sums take the exact fallback (a member's S below
        // mex_forward_threshold relative to its row's largest input)
        for (const member& m : second)
            for (std::size_t b = 0; b < rows; ++b) {
                double top = minus_infinity;
                for (std::size_t i = 0; i < mid; ++i)
                    top = std::max(top, double(m.in[b * mid + i]));
                if (top == minus_infinity) continue;
                for (std::size_t o = 0; o < O; ++o) {
                    double sum = 0;
                    for (std::size_t i = 0; i < mid; ++i)
                        if (m.weights[o * mid + i] > 0)
                            sum +=
                                std::exp(double(m.in[b * mid + i]) - top) * m.weights[o * mid + i];
                    fallbacks += sum < kernels::detail::mex_forward_threshold(mid);
                }
            }
    }
    BOOST_TEST(fallbacks > 0u);  // the fallback's reading of the parts is exercised
}

// The fused kernel can keep the conv outputs too (training does): they equal the unfused ones.
BOOST_AUTO_TEST_CASE(fused_conv_pool_keeps_the_conv_outputs_when_asked) {
    std::mt19937 rng(12);
    const std::size_t rows = 70, I = 40, O = 33;
    const member m = random_member(rows, I, O, rng);
    aligned_buffer packed;
    float* w = packed.get(kernels::mex_forward_packed_size(I, O));
    kernels::mex_pack_forward_weights(I, O, m.weights.data(), w);
    std::vector<float> out(rows * O), pooled(rows * O, 1.0f), alone(rows * O);
    kernels::mex_forward_packed(rows, I, O, m.in.data(), w, m.log_weights.data(), out.data(),
                                pooled.data(), true);
    kernels::mex_forward_packed(rows, I, O, m.in.data(), w, m.log_weights.data(), alone.data());
    BOOST_TEST(out == alone);
    for (std::size_t e = 0; e < out.size(); ++e) BOOST_TEST(pooled[e] == 1.0f + out[e]);
}

// Gaussian and categorical log-densities with missing values (mask 0 or NaN) and padded
// coordinates, against the formulas in double; and the same read from the pixel-major layout
// for a list of images (training's first conv), against the first.
BOOST_AUTO_TEST_CASE(leaf_log_densities_match_the_formulas) {
    std::mt19937 rng(13);
    const std::size_t images = 7, pixels = 30, first = 2, rows = 5;
    for (const std::size_t m : {1, 5, 16, 33}) {
        for (const std::size_t s : {1, 4, 9, 70}) {
            for (const bool gaussian : {true, false}) {
                const std::size_t v_count = 3;
                std::uniform_real_distribution<float> u(-1.0f, 1.0f);
                std::uniform_int_distribution<int> symbol(0, int(v_count) - 1),
                    pixel(-1, int(pixels) - 1);
                std::vector<float> values(images * pixels);
                std::vector<std::uint8_t> observed(images * pixels);
                for (std::size_t i = 0; i < values.size(); ++i) {
                    values[i] = gaussian ? u(rng) : float(symbol(rng));
                    observed[i] = u(rng) > -0.2f;
                    if (u(rng) > 0.9f) values[i] = std::nanf("");  // NaN is missing too
                }
                std::vector<int> coordinates(s);
                for (auto& c : coordinates) c = pixel(rng);
                std::vector<float> mean(s * m), half_log(s * m), half_precision(s * m),
                    log_p(s * v_count * m);
                for (auto& x : mean) x = u(rng);
                for (auto& x : half_log) x = u(rng);
                for (auto& x : half_precision) x = 1.5f + u(rng);
                for (auto& x : log_p) x = -2.0f + u(rng);
                kernels::leaf_tables t;
                t.components = m, t.coordinates = s, t.values = v_count, t.gaussian = gaussian;
                t.mean_t = mean.data(), t.half_log_precision_t = half_log.data();
                t.half_precision_t = half_precision.data(), t.log_probabilities_t = log_p.data();
                const tmm::observations<float> x(images, values, observed);
                std::vector<float> out(rows * m, 999.0f);
                kernels::leaf_log_densities(t, x, first, rows, coordinates.data(), pixels,
                                            out.data());
                // The same rows from the block laid out pixel-major, listed backwards and each
                // twice: the same floats, row for row.
                std::vector<float> by_pixel;
                const std::size_t stride = kernels::pixel_major(x, first, rows, pixels, by_pixel);
                std::vector<std::uint32_t> list;
                for (std::size_t b = rows; b-- > 0;)
                    list.push_back(std::uint32_t(b)), list.push_back(std::uint32_t(b));
                std::vector<float> listed(list.size() * m, 999.0f);
                kernels::leaf_log_densities(t, by_pixel.data(), stride, list.size(),
                                            coordinates.data(), listed.data(), list.data());
                for (std::size_t i = 0; i < list.size(); ++i)
                    for (std::size_t d = 0; d < m; ++d)
                        BOOST_TEST(listed[i * m + d] == out[list[i] * m + d],
                                   "pixel-major row " << i << " (image " << list[i] << "), " << d);
                for (std::size_t b = 0; b < rows; ++b)
                    for (std::size_t d = 0; d < m; ++d) {
                        double want = 0, scale = 0;
                        for (std::size_t k = 0; k < s; ++k) {
                            if (coordinates[k] < 0) continue;
                            const std::size_t index = (first + b) * pixels + coordinates[k];
                            const double v = values[index];
                            if (!observed[index] || std::isnan(v)) continue;
                            const double term =
                                gaussian ? half_log[k * m + d] - half_precision[k * m + d] *
                                                                     (v - mean[k * m + d]) *
                                                                     (v - mean[k * m + d])
                                         : log_p[(k * v_count + std::size_t(v)) * m + d];
                            want += term, scale += std::abs(term);
                        }
                        BOOST_TEST(std::abs(out[b * m + d] - want) <= 1e-6 * scale + 1e-7,
                                   "M " << m << " s " << s
                                        << (gaussian ? " gaussian" : " categorical") << " (" << b
                                        << "," << d << "): got " << out[b * m + d] << ", want "
                                        << want);
                    }
            }
        }
    }
}

// pixel_major: pixel q of image first + b at [q * stride + b], NaN where the pixel is flagged
// missing and in the rows past the block; with and without a mask, with pixel counts that are
// and are not whole vectors.
BOOST_AUTO_TEST_CASE(pixel_major_turns_the_block_around) {
    std::mt19937 rng(16);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (const std::size_t pixels : {1, 7, 16, 40, 784}) {
        for (const bool masked : {true, false}) {
            for (const std::size_t rows : {1, 16, 21, 64}) {
                const std::size_t first = 2, images = first + rows + 1;
                std::vector<float> values(images * pixels);
                std::vector<std::uint8_t> observed(masked ? images * pixels : 0);
                for (auto& v : values) v = u(rng);
                for (auto& o : observed) o = u(rng) > 0.0f ? std::uint8_t(1 + (rng() % 200)) : 0;
                const tmm::observations<float> x(images, values, observed);
                std::vector<float> out;
                const std::size_t stride = kernels::pixel_major(x, first, rows, pixels, out);
                BOOST_TEST(stride % kernels::detail::mex_lanes == 0u);
                BOOST_TEST(stride >= rows);
                BOOST_TEST(out.size() == pixels * stride);
                std::size_t bad = 0;
                for (std::size_t q = 0; q < pixels; ++q)
                    for (std::size_t b = 0; b < stride; ++b) {
                        const std::size_t at = (first + b) * pixels + q;
                        const bool seen = b < rows && (!masked || observed[at] != 0);
                        const float got = out[q * stride + b];
                        bad += seen ? got != values[at] : !std::isnan(got);
                    }
                BOOST_TEST(bad == 0u,
                           pixels << " pixels, rows " << rows << (masked ? ", masked" : ""));
            }
        }
    }
}

// Inference's first conv over Gaussian leaves (mex_forward_window_from_leaves): the members'
// inputs are the leaves' log-densities, computed from the pixels as they are packed. Against
// the window's formula in double: L[b,d] summed over the observed coordinates of the member's
// patch, then sum over members of log sum_d W[o,d] exp(L[b,d]). Rows past a vector and past a
// chunk of 128, padded and missing coordinates (mask 0 or NaN), and sharp leaves whose
// log-densities are hundreds apart, so that the GEMM underflows and the exact path answers.
BOOST_AUTO_TEST_CASE(window_from_leaves_matches_the_oracle) {
    std::mt19937 rng(15);
    // rows, M, O, members, coordinates per patch
    const std::size_t shapes[][5] = {{1, 1, 1, 1, 1},     {13, 5, 3, 2, 4},   {64, 32, 64, 4, 4},
                                     {130, 32, 17, 3, 4}, {40, 13, 40, 4, 9}, {17, 8, 16, 1, 16},
                                     {33, 20, 10, 2, 3}};
    const std::size_t pixels = 40, first = 3;
    for (const bool sharp : {false, true}) {
        for (const auto& shape : shapes) {
            const std::size_t rows = shape[0], M = shape[1], O = shape[2], count = shape[3],
                              s = shape[4];
            std::uniform_real_distribution<float> u(-1.0f, 1.0f);
            std::uniform_int_distribution<int> pixel(-1, int(pixels) - 1);
            const std::size_t images = first + rows + 2;
            std::vector<float> values(images * pixels);
            std::vector<std::uint8_t> observed(images * pixels);
            for (std::size_t i = 0; i < values.size(); ++i) {
                values[i] = 0.5f * u(rng);
                observed[i] = u(rng) > -0.2f;
                if (u(rng) > 0.9f) values[i] = std::nanf("");
            }
            std::vector<float> mean(s * M), half_log(s * M), half_precision(s * M);
            for (auto& x : mean) x = 0.5f * u(rng);
            for (auto& x : half_log) x = u(rng);
            for (auto& x : half_precision) x = sharp ? 2000.0f * (1.2f + u(rng)) : 1.5f + u(rng);
            kernels::leaf_tables t;
            t.components = M, t.coordinates = s, t.gaussian = true;
            t.mean_t = mean.data(), t.half_log_precision_t = half_log.data();
            t.half_precision_t = half_precision.data();
            std::vector<std::vector<int>> patches(count, std::vector<int>(s));
            std::vector<member> members;
            for (std::size_t j = 0; j < count; ++j) {
                for (auto& c : patches[j]) c = pixel(rng);
                members.push_back(random_member(1, M, O, rng));  // its weights only
            }
            // the oracle
            std::vector<double> want(rows * O, 0.0);
            for (std::size_t j = 0; j < count; ++j)
                for (std::size_t b = 0; b < rows; ++b) {
                    std::vector<double> L(M, 0.0);
                    for (std::size_t k = 0; k < s; ++k) {
                        const int q = patches[j][k];
                        if (q < 0) continue;
                        const std::size_t index = (first + b) * pixels + std::size_t(q);
                        const double v = values[index];
                        if (!observed[index] || std::isnan(v)) continue;
                        for (std::size_t d = 0; d < M; ++d)
                            L[d] += half_log[k * M + d] - half_precision[k * M + d] *
                                                              (v - mean[k * M + d]) *
                                                              (v - mean[k * M + d]);
                    }
                    for (std::size_t o = 0; o < O; ++o) {
                        double top = minus_infinity;
                        for (std::size_t d = 0; d < M; ++d)
                            if (members[j].weights[o * M + d] > 0) top = std::max(top, L[d]);
                        double sum = 0;
                        for (std::size_t d = 0; d < M; ++d)
                            if (members[j].weights[o * M + d] > 0)
                                sum += std::exp(L[d] - top +
                                                double(members[j].log_weights[o * M + d]));
                        want[b * O + o] += top + std::log(sum);
                    }
                }
            std::vector<kernels::detail::aligned_floats> packed(count);
            std::vector<const float*> weights, logs;
            std::vector<const int*> patch_pixels;
            for (std::size_t j = 0; j < count; ++j) {
                float* w = packed[j].get(kernels::mex_forward_packed_size(M, O));
                kernels::mex_pack_forward_weights(M, O, members[j].weights.data(), w);
                weights.push_back(w);
                logs.push_back(members[j].log_weights.data());
                patch_pixels.push_back(patches[j].data());
            }
            const tmm::observations<float> x(images, values, observed);
            std::vector<float> by_pixel;
            const std::size_t stride = kernels::pixel_major(x, first, rows, pixels, by_pixel);
            std::vector<float> pooled(rows * O, 12345.0f);
            kernels::mex_forward_window_from_leaves(rows, O, count, t, by_pixel.data(), stride,
                                                    patch_pixels.data(), weights.data(),
                                                    logs.data(), {pooled.data()});
            check_against_oracle(
                want, [&](std::size_t e) { return pooled[e]; },
                shape_name(rows, M, O, count) + (sharp ? " sharp" : ""));
        }
    }
}

constexpr auto small_ht =
    tmm::input<6, 6> | tmm::representation<tmm::gaussians<5>, 2> | tmm::conv<4, tmm::tiled<2, 2>> |
    tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> | tmm::conv<6> |
    tmm::product_pool<tmm::window<2, 2>> | tmm::conv<3, tmm::shared> | tmm::classes<3>;

tmm::parameters<float> random_parameters(const tmm::plan& p, std::mt19937_64& rng) {
    std::normal_distribution<double> n(0.0, 1.0);
    auto theta = tmm::zero_parameters<float>(p);
    for (auto& v : theta.mean) v = float(0.3 * n(rng));
    for (auto& v : theta.log_precision) v = float(1.0 + n(rng));
    for (auto& t : theta.theta)
        for (auto& v : t) v = float(n(rng));
    return theta;
}

// Values that validate() refuses are refused by the backend's one-pass check, with validate()'s
// words, for inference and for gradients.
BOOST_AUTO_TEST_CASE(refused_parameters_name_the_value) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(3);
    const auto theta = random_parameters(p, rng);
    std::vector<float> values(2 * p.pixels(), 0.1f);
    const tmm::observations<float> x(2, values);
    const auto refused = [&](const tmm::parameters<float>& bad, const std::string& words) {
        const auto names = [&](const tmm::input_error& e) {
            return std::string(e.what()).find(words) != std::string::npos;
        };
        BOOST_CHECK_EXCEPTION(tmm::backends::cpu::log_likelihoods(p, bad, x), tmm::input_error,
                              names);
        tmm::parameters<float> g;
        BOOST_CHECK_EXCEPTION(tmm::backends::cpu::gradients(
                                  p, bad, x, [](std::span<const float>, std::span<float>) {}, g),
                              tmm::input_error, names);
    };
    const float inf = std::numeric_limits<float>::infinity();
    auto plus_inf = theta;
    plus_inf.theta[0][7] = inf;
    refused(plus_inf, "parameter theta[0][7] is +inf");
    auto nan_theta = theta;
    nan_theta.theta[4][10] = std::nanf("");
    refused(nan_theta, "parameter theta[4][10] is NaN");
    auto all_dead = theta;  // conv<6> reads 4 channels: theta[2][4..7] is its second row
    std::fill_n(all_dead.theta[2].begin() + 4, 4, -inf);
    refused(all_dead, "parameter theta[2][4..7] is all -inf");
    auto nan_prior = theta;
    nan_prior.log_prior[1] = std::nanf("");
    refused(nan_prior, "parameter log_prior[1] is NaN");
    auto heavy_prior = theta;  // P(y) must sum to 1: e^1e38 does not
    heavy_prior.log_prior[2] = 1e38f;
    refused(heavy_prior, "parameter log_prior is not a distribution over the 3 classes");
    auto minus_inf_mean = theta;
    minus_inf_mean.mean[3] = -inf;
    refused(minus_inf_mean, "parameter mean[3] is -inf");
    auto short_theta = theta;
    short_theta.theta[2].pop_back();
    refused(short_theta, "parameter array theta[2] holds");

    // -inf where it means probability zero (not a whole row) is allowed
    auto some_zero = theta;
    some_zero.theta[2][5] = -inf;
    BOOST_CHECK_NO_THROW(tmm::backends::cpu::log_likelihoods(p, some_zero, x));
}

// Inference and every gradient (leaves included) are the same with one thread or two.
BOOST_AUTO_TEST_CASE(inference_and_leaf_gradients_do_not_depend_on_threads) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(5);
    const auto theta = random_parameters(p, rng);
    const std::size_t count = 200;  // several inference tiles
    std::normal_distribution<double> n(0.0, 0.3);
    std::bernoulli_distribution keep(0.6);
    std::vector<float> values(count * p.pixels());
    std::vector<std::uint8_t> observed(values.size());
    for (auto& v : values) v = float(n(rng));
    for (auto& o : observed) o = keep(rng);
    const tmm::observations<float> x(count, values, observed);
    const auto run = [&](int threads) {
        tbb::global_control limit(tbb::global_control::max_allowed_parallelism, threads);
        tmm::parameters<float> g;
        const auto out = tmm::backends::cpu::log_likelihoods(p, theta, x);
        tmm::backends::cpu::gradients(
            p, theta, x,
            [](std::span<const float>, std::span<float> d) {
                for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::cos(float(i));
            },
            g);
        return std::make_pair(out, g);
    };
    const auto one = run(1), two = run(2);
    BOOST_TEST(one.first == two.first);
    BOOST_TEST(one.second.mean == two.second.mean);
    BOOST_TEST(one.second.log_precision == two.second.log_precision);
    for (std::size_t l = 0; l < one.second.theta.size(); ++l)
        BOOST_TEST(one.second.theta[l] == two.second.theta[l]);
}

}  // namespace

namespace {

// A seed that calls the backend again (other parameters, another plan) in the middle of a
// gradients call gets the same gradients: storage reused between calls is never shared by two
// calls in flight on one thread.
BOOST_AUTO_TEST_CASE(reentrant_calls_do_not_share_storage) {
    const tmm::plan p = tmm::make_plan(small_ht);
    const tmm::plan other =
        tmm::make_plan(tmm::input<4, 4> | tmm::representation<tmm::gaussians<3>, 2> | tmm::conv<2> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>);
    std::mt19937_64 rng(9);
    const auto theta = random_parameters(p, rng);
    const auto other_theta = random_parameters(other, rng);
    std::vector<float> values(3 * p.pixels(), 0.2f), other_values(2 * other.pixels(), -0.1f);
    const tmm::observations<float> x(3, values), other_x(2, other_values);
    const auto run = [&](bool nested) {
        tmm::parameters<float> g;
        tmm::backends::cpu::gradients(
            p, theta, x,
            [&](std::span<const float>, std::span<float> d) {
                if (nested) {
                    tmm::parameters<float> other_g;
                    tmm::backends::cpu::log_likelihoods(other, other_theta, other_x);
                    tmm::backends::cpu::gradients(
                        other, other_theta, other_x,
                        [](std::span<const float>, std::span<float> e) {
                            for (float& v : e) v = 1.0f;
                        },
                        other_g);
                }
                for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::sin(float(i) + 1.0f);
            },
            g);
        return g;
    };
    const auto plain = run(false), nested = run(true);
    for (std::size_t l = 0; l < plain.theta.size(); ++l)
        BOOST_TEST(plain.theta[l] == nested.theta[l]);
    BOOST_TEST(plain.mean == nested.mean);
}

}  // namespace

namespace {

// dtheta_overwrite writes what accumulating onto zeros gives, whatever dtheta held before.
BOOST_AUTO_TEST_CASE(backward_overwrite_equals_accumulating_onto_zero) {
    std::mt19937 rng(15);
    for (const auto& [rows, I, O] : {std::tuple<std::size_t, std::size_t, std::size_t>{5, 7, 3},
                                     {130, 33, 20},
                                     {64, 64, 128}}) {
        const member m = random_member(rows, I, O, rng);
        aligned_buffer forward_packed, backward_packed;
        float* wf = forward_packed.get(kernels::mex_forward_packed_size(I, O));
        float* wb = backward_packed.get(kernels::mex_backward_packed_size(I, O));
        kernels::mex_pack_forward_weights(I, O, m.weights.data(), wf);
        kernels::mex_pack_backward_weights(I, O, m.weights.data(), wb);
        std::vector<float> out(rows * O), dout(rows * O);
        kernels::mex_forward_packed(rows, I, O, m.in.data(), wf, m.log_weights.data(), out.data());
        std::uniform_real_distribution<float> u(-1.0f, 1.0f);
        for (auto& v : dout) v = u(rng);
        std::vector<float> accumulated(O * I, 0.0f), written(O * I, 1e30f), din(rows * I);
        kernels::mex_backward_packed(rows, I, O, m.in.data(), out.data(), dout.data(), wb,
                                     m.log_weights.data(), din.data(), accumulated.data());
        kernels::mex_backward_packed(rows, I, O, m.in.data(), out.data(), dout.data(), wb,
                                     m.log_weights.data(), din.data(), written.data(), true);
        BOOST_TEST(written == accumulated);
    }
}

// The trainer passes the same gradient object every step: what it held before never leaks into
// the next step's gradients.
BOOST_AUTO_TEST_CASE(gradients_do_not_depend_on_what_grad_held) {
    const tmm::plan p = tmm::make_plan(small_ht);
    std::mt19937_64 rng(21);
    const auto theta = random_parameters(p, rng);
    std::vector<float> values(40 * p.pixels());
    std::normal_distribution<double> n(0.0, 0.3);
    for (auto& v : values) v = float(n(rng));
    const tmm::observations<float> x(40, values);
    const auto seed_with = [](float phase) {
        return [phase](std::span<const float>, std::span<float> d) {
            for (std::size_t i = 0; i < d.size(); ++i) d[i] = std::sin(float(i) + phase);
        };
    };
    tmm::parameters<float> reused, fresh;
    tmm::backends::cpu::gradients(p, theta, x, seed_with(0.5f), reused);
    for (auto& t : reused.theta) std::fill(t.begin(), t.end(), 1e20f);  // garbage
    tmm::backends::cpu::gradients(p, theta, x, seed_with(2.0f), reused);
    tmm::backends::cpu::gradients(p, theta, x, seed_with(2.0f), fresh);
    for (std::size_t l = 0; l < fresh.theta.size(); ++l)
        BOOST_TEST(reused.theta[l] == fresh.theta[l]);
    BOOST_TEST(reused.mean == fresh.mean);
}

}  // namespace
