// Tests of the CPU backend's MEX kernels (tmm/backends/cpu/mex_kernels.hpp) against a plain
// double-precision oracle written here, plus finite differences of that oracle for the
// gradient formulas themselves.
#define BOOST_TEST_MODULE cpu_mex_kernels
#include <boost/test/unit_test.hpp>

#include <tmm/backends/cpu/mex_kernels.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace {

namespace cpu = tmm::backends::cpu_kernels;

constexpr double minus_infinity = -std::numeric_limits<double>::infinity();
constexpr float minus_infinity_f = -std::numeric_limits<float>::infinity();

// One layer's data in the layouts the kernels take, plus theta in double for finite
// differences (W = softmax(theta) row by row).
struct mex_problem {
    std::size_t rows = 0, inputs = 0, outputs = 0;
    std::vector<float> in;           // rows x I
    std::vector<double> theta;       // O x I
    std::vector<float> weights;      // O x I
    std::vector<float> weights_t;    // I x O
    std::vector<float> log_weights;  // O x I
};

// Sets W from double weights (each row on the simplex, zeros allowed).
void set_weights(mex_problem& p, const std::vector<double>& w) {
    const std::size_t I = p.inputs, O = p.outputs;
    p.weights.assign(O * I, 0.0f);
    p.weights_t.assign(I * O, 0.0f);
    p.log_weights.assign(O * I, minus_infinity_f);
    p.theta.assign(O * I, minus_infinity);
    for (std::size_t o = 0; o < O; ++o)
        for (std::size_t i = 0; i < I; ++i) {
            const double v = w[o * I + i];
            p.weights[o * I + i] = static_cast<float>(v);
            p.weights_t[i * O + o] = static_cast<float>(v);
            if (v > 0) {
                p.log_weights[o * I + i] = static_cast<float>(std::log(v));
                p.theta[o * I + i] = std::log(v);
            }
        }
}

// Random simplex rows: softmax of N(0, spread) logits; a fraction of entries set to exactly
// zero and a fraction to `tiny`, the rest renormalised so each row still sums to one.
std::vector<double> random_weights(std::size_t O, std::size_t I, std::mt19937& rng,
                                   double zero_fraction = 0.0, double tiny_fraction = 0.0,
                                   double tiny = 1e-30, double spread = 1.5) {
    std::normal_distribution<double> logit(0.0, spread);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<double> w(O * I);
    for (std::size_t o = 0; o < O; ++o) {
        double* row = w.data() + o * I;
        std::vector<int> kind(I, 0);  // 0 normal, 1 zero, 2 tiny
        for (std::size_t i = 0; i < I; ++i) {
            const double x = u(rng);
            kind[i] = x < zero_fraction ? 1 : x < zero_fraction + tiny_fraction ? 2 : 0;
        }
        if (std::find(kind.begin(), kind.end(), 0) == kind.end()) kind[0] = 0;
        double normal_sum = 0, tiny_sum = 0;
        for (std::size_t i = 0; i < I; ++i) {
            row[i] = kind[i] == 0 ? std::exp(logit(rng)) : kind[i] == 2 ? tiny : 0.0;
            (kind[i] == 0 ? normal_sum : tiny_sum) += row[i];
        }
        for (std::size_t i = 0; i < I; ++i)
            if (kind[i] == 0) row[i] *= (1.0 - tiny_sum) / normal_sum;
    }
    return w;
}

mex_problem make_problem(std::size_t rows, std::size_t I, std::size_t O, std::mt19937& rng,
                         double input_spread = 3.0) {
    mex_problem p;
    p.rows = rows;
    p.inputs = I;
    p.outputs = O;
    std::normal_distribution<float> x(0.0f, static_cast<float>(input_spread));
    p.in.resize(rows * I);
    for (auto& v : p.in) v = x(rng);
    set_weights(p, random_weights(O, I, rng));
    return p;
}

// ----- the oracle, in double --------------------------------------------------------------

// out[b,o] = log sum_i exp(in[b,i] + log W[o,i]), max-shifted; -inf for an empty sum.
std::vector<double> oracle_forward(const mex_problem& p) {
    const std::size_t I = p.inputs, O = p.outputs;
    std::vector<double> out(p.rows * O);
    for (std::size_t b = 0; b < p.rows; ++b)
        for (std::size_t o = 0; o < O; ++o) {
            double top = minus_infinity;
            for (std::size_t i = 0; i < I; ++i)
                top = std::max(top, double(p.in[b * I + i]) + double(p.log_weights[o * I + i]));
            double sum = 0;
            if (top != minus_infinity)
                for (std::size_t i = 0; i < I; ++i)
                    sum +=
                        std::exp(double(p.in[b * I + i]) + double(p.log_weights[o * I + i]) - top);
            out[b * O + o] = top == minus_infinity ? minus_infinity : top + std::log(sum);
        }
    return out;
}

// The kernels' accuracy contract, per gradient entry, is the sum of:
// - 1e-4 relative to the oracle;
// - 1e-6 of `scale`, the sum of the magnitudes of its terms: float rounding where terms of mixed
//   sign cancel;
// - 2^-22 of `log_scale`, the same sum with each term weighted by L = |in| + |log W| + |out| + 30:
//   float log-space values of magnitude L (out itself, rounded to float, included) carry an
//   absolute error of about L 2^-24, i.e. a relative error of L 2^-24 in each term p;
// - `floor`: terms below 2^-86 |dout| may be lost to exp underflow on the GEMM path (see
//   mex_backward_log_threshold), and results below the float normal range may flush to zero.
struct oracle_gradients {
    std::vector<double> din, din_scale, din_log_scale, din_floor;              // rows x I
    std::vector<double> dtheta, dtheta_scale, dtheta_log_scale, dtheta_floor;  // O x I
};

// p[b,o,i] = W[o,i] exp(in[b,i] - out[b,o]); din = sum_o dout p; dtheta = sum_b dout (p - W);
// entries with out = -inf contribute nothing.
oracle_gradients oracle_backward(const mex_problem& p, const std::vector<double>& out,
                                 const std::vector<float>& dout) {
    const std::size_t I = p.inputs, O = p.outputs;
    oracle_gradients g;
    g.din.assign(p.rows * I, 0.0);
    g.din_scale.assign(p.rows * I, 0.0);
    g.dtheta.assign(O * I, 0.0);
    g.dtheta_scale.assign(O * I, 0.0);
    g.din_log_scale.assign(p.rows * I, 0.0);
    g.dtheta_log_scale.assign(O * I, 0.0);
    std::vector<double> dout_row_sum(p.rows, 0.0), dout_column_sum(O, 0.0);
    for (std::size_t b = 0; b < p.rows; ++b)
        for (std::size_t o = 0; o < O; ++o) {
            if (out[b * O + o] == minus_infinity) continue;
            const double d = dout[b * O + o];
            dout_row_sum[b] += std::abs(d);
            dout_column_sum[o] += std::abs(d);
            for (std::size_t i = 0; i < I; ++i) {
                const double w = p.weights[o * I + i];
                const double pr = std::exp(double(p.log_weights[o * I + i]) +
                                           double(p.in[b * I + i]) - out[b * O + o]);
                g.din[b * I + i] += d * pr;
                g.din_scale[b * I + i] += std::abs(d) * pr;
                g.dtheta[o * I + i] += d * (pr - w);
                g.dtheta_scale[o * I + i] += std::abs(d) * (pr + w);
                if (pr > 0) {
                    const double magnitude = std::abs(double(p.in[b * I + i])) +
                                             std::abs(double(p.log_weights[o * I + i])) +
                                             std::abs(out[b * O + o]) + 30.0;
                    g.din_log_scale[b * I + i] += std::abs(d) * pr * magnitude;
                    g.dtheta_log_scale[o * I + i] += std::abs(d) * pr * magnitude;
                }
            }
        }
    const double lost_fraction = 1e-24, flushed = 1e-35;
    g.din_floor.resize(p.rows * I);
    g.dtheta_floor.resize(O * I);
    for (std::size_t b = 0; b < p.rows; ++b)
        for (std::size_t i = 0; i < I; ++i)
            g.din_floor[b * I + i] = lost_fraction * dout_row_sum[b] + flushed;
    for (std::size_t o = 0; o < O; ++o)
        for (std::size_t i = 0; i < I; ++i)
            g.dtheta_floor[o * I + i] = lost_fraction * dout_column_sum[o] + flushed;
    return g;
}

// ----- running the kernels ----------------------------------------------------------------

std::vector<float> run_forward(const mex_problem& p) {
    std::vector<float> out(p.rows * p.outputs, 12345.0f);
    cpu::mex_forward(p.rows, p.inputs, p.outputs, p.in.data(), p.weights.data(), p.weights_t.data(),
                     p.log_weights.data(), out.data());
    return out;
}

struct kernel_gradients {
    std::vector<float> din, dtheta;
};

// dtheta starts at `dtheta_start` everywhere to check that the kernel accumulates.
kernel_gradients run_backward(const mex_problem& p, const std::vector<float>& out,
                              const std::vector<float>& dout, bool with_din = true,
                              float dtheta_start = 0.0f) {
    kernel_gradients g;
    g.din.assign(p.rows * p.inputs, 777.0f);
    g.dtheta.assign(p.outputs * p.inputs, dtheta_start);
    cpu::mex_backward(p.rows, p.inputs, p.outputs, p.in.data(), out.data(), dout.data(),
                      p.weights.data(), p.weights_t.data(), p.log_weights.data(),
                      with_din ? g.din.data() : nullptr, g.dtheta.data());
    for (auto& v : g.dtheta) v -= dtheta_start;
    return g;
}

std::vector<float> random_dout(std::size_t n, std::mt19937& rng) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> d(n);
    for (auto& v : d) v = u(rng);
    return d;
}

// ----- comparisons ------------------------------------------------------------------------

std::string shape_name(const mex_problem& p) {
    std::ostringstream s;
    s << p.rows << "x" << p.inputs << "x" << p.outputs;
    return s.str();
}

// Log-space outputs: -inf exactly where the oracle is -inf, else finite and within 1e-5
// relative (1e-5 absolute near zero, i.e. 1e-5 relative in the probability). Measured: under
// 1e-6 on every case here; float rounding of out alone is 6e-8 relative.
void check_forward(const mex_problem& p, const std::vector<float>& got,
                   const std::vector<double>& want) {
    std::size_t bad = 0;
    for (std::size_t k = 0; k < want.size(); ++k) {
        const double g = got[k], w = want[k];
        const bool ok =
            w == minus_infinity
                ? g == minus_infinity
                : std::isfinite(g) && std::abs(g - w) <= 1e-5 * std::max(1.0, std::abs(w));
        if (!ok && bad++ < 5)
            BOOST_ERROR("forward " << shape_name(p) << " entry (" << k / p.outputs << ","
                                   << k % p.outputs << "): got " << g << ", want " << w);
    }
    BOOST_TEST(bad == 0u, "forward " << shape_name(p) << ": " << bad << " bad entries");
}

// Gradients: finite, and within the contract described at oracle_gradients.
void check_gradient(const char* what, const mex_problem& p, const std::vector<float>& got,
                    const std::vector<double>& want, const std::vector<double>& scale,
                    const std::vector<double>& log_scale, const std::vector<double>& floor,
                    std::size_t columns) {
    std::size_t bad = 0;
    for (std::size_t k = 0; k < want.size(); ++k) {
        const double g = got[k], w = want[k];
        const bool ok =
            std::isfinite(g) && std::abs(g - w) <= 1e-4 * std::abs(w) + 1e-6 * scale[k] +
                                                       0x1p-22 * log_scale[k] + floor[k];
        if (!ok && bad++ < 5)
            BOOST_ERROR(what << " " << shape_name(p) << " entry (" << k / columns << ","
                             << k % columns << "): got " << g << ", want " << w << " (scale "
                             << scale[k] << ")");
    }
    BOOST_TEST(bad == 0u, what << " " << shape_name(p) << ": " << bad << " bad entries");
}

// Forward and backward (with and without din) against the oracle.
void check_problem(const mex_problem& p, std::mt19937& rng) {
    const std::vector<double> want = oracle_forward(p);
    const std::vector<float> out = run_forward(p);
    check_forward(p, out, want);

    const std::vector<float> dout = random_dout(p.rows * p.outputs, rng);
    const oracle_gradients g = oracle_backward(p, want, dout);
    const kernel_gradients k = run_backward(p, out, dout);
    check_gradient("din", p, k.din, g.din, g.din_scale, g.din_log_scale, g.din_floor, p.inputs);
    check_gradient("dtheta", p, k.dtheta, g.dtheta, g.dtheta_scale, g.dtheta_log_scale,
                   g.dtheta_floor, p.inputs);

    // dtheta is accumulated: starting from 0.5 adds the same values, up to rounding at 0.5.
    const kernel_gradients k_accumulated = run_backward(p, out, dout, true, 0.5f);
    std::size_t not_added = 0;
    for (std::size_t j = 0; j < k.dtheta.size(); ++j)
        not_added += !(std::abs(k_accumulated.dtheta[j] - k.dtheta[j]) <= 1e-6f);
    BOOST_TEST(not_added == 0u, "dtheta " << shape_name(p) << " not accumulated");

    // Without dtheta (fixed weights) din is the same.
    std::vector<float> din_alone(p.rows * p.inputs, 777.0f);
    cpu::mex_backward(p.rows, p.inputs, p.outputs, p.in.data(), out.data(), dout.data(),
                      p.weights.data(), p.weights_t.data(), p.log_weights.data(), din_alone.data(),
                      nullptr);
    BOOST_TEST(din_alone == k.din, "din without dtheta " << shape_name(p));

    const kernel_gradients k_no_din = run_backward(p, out, dout, false);
    check_gradient("dtheta (no din)", p, k_no_din.dtheta, g.dtheta, g.dtheta_scale,
                   g.dtheta_log_scale, g.dtheta_floor, p.inputs);

    // Training's pair: the forward pass keeps its row maxima and shifted exps (kept_e, kept_m),
    // the backward pass reads them instead of computing them again. Against the same oracle.
    const std::size_t rows = p.rows, I = p.inputs, O = p.outputs;
    cpu::detail::aligned_floats forward_weights, backward_weights;
    float* packed_forward = forward_weights.get(cpu::mex_forward_packed_size(I, O));
    float* packed_backward = backward_weights.get(cpu::mex_backward_packed_size(I, O));
    cpu::mex_pack_forward_weights(I, O, p.weights.data(), packed_forward);
    cpu::mex_pack_backward_weights(I, O, p.weights.data(), packed_backward);
    std::vector<float> kept_out(rows * O, 12345.0f), kept_e(rows * I, 12345.0f),
        kept_m(rows, 12345.0f);
    cpu::mex_forward_packed(rows, I, O, p.in.data(), packed_forward, p.log_weights.data(),
                            kept_out.data(), nullptr, false, kept_e.data(), kept_m.data());
    check_forward(p, kept_out, want);
    kernel_gradients kept;
    kept.din.assign(rows * I, 777.0f);
    kept.dtheta.assign(O * I, 777.0f);  // overwritten
    cpu::mex_backward_packed(rows, I, O, p.in.data(), kept_out.data(), dout.data(), packed_backward,
                             p.log_weights.data(), kept.din.data(), kept.dtheta.data(), true,
                             kept_e.data(), kept_m.data());
    check_gradient("din (kept inputs)", p, kept.din, g.din, g.din_scale, g.din_log_scale,
                   g.din_floor, p.inputs);
    check_gradient("dtheta (kept inputs)", p, kept.dtheta, g.dtheta, g.dtheta_scale,
                   g.dtheta_log_scale, g.dtheta_floor, p.inputs);
}

struct shape {
    std::size_t rows, inputs, outputs;
};

const std::vector<shape> test_shapes = {
    {1, 1, 1},     {3, 7, 5},     {129, 33, 17},   {128, 512, 10}, {2, 16, 16}, {9, 17, 33},
    {300, 40, 70}, {128, 32, 64}, {128, 128, 256}, {257, 300, 31}, {1, 200, 1}, {40, 1, 9},
};

}  // namespace

BOOST_AUTO_TEST_CASE(random_shapes_match_the_oracle) {
    std::mt19937 rng(1);
    for (const shape& s : test_shapes) {
        const mex_problem p = make_problem(s.rows, s.inputs, s.outputs, rng);
        check_problem(p, rng);
    }
}

BOOST_AUTO_TEST_CASE(minus_infinity_entries_and_rows) {
    std::mt19937 rng(2);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (const shape& s : test_shapes) {
        mex_problem p = make_problem(s.rows, s.inputs, s.outputs, rng);
        for (auto& v : p.in)
            if (u(rng) < 0.3) v = minus_infinity_f;
        // Every third row entirely -inf: its outputs must be -inf exactly, its din zero.
        for (std::size_t b = 0; b < p.rows; b += 3)
            std::fill_n(p.in.begin() + b * p.inputs, p.inputs, minus_infinity_f);
        check_problem(p, rng);

        const std::vector<float> out = run_forward(p);
        const std::vector<float> dout = random_dout(p.rows * p.outputs, rng);
        const kernel_gradients k = run_backward(p, out, dout);
        for (std::size_t b = 0; b < p.rows; b += 3) {
            for (std::size_t o = 0; o < p.outputs; ++o)
                BOOST_TEST(out[b * p.outputs + o] == minus_infinity_f);
            for (std::size_t i = 0; i < p.inputs; ++i) BOOST_TEST(k.din[b * p.inputs + i] == 0.0f);
        }
    }
}

BOOST_AUTO_TEST_CASE(zero_and_tiny_weights) {
    std::mt19937 rng(3);
    for (const double tiny : {1e-30, 1e-38, 1e-44}) {
        for (const shape& s : test_shapes) {
            mex_problem p = make_problem(s.rows, s.inputs, s.outputs, rng);
            set_weights(p, random_weights(s.outputs, s.inputs, rng, 0.2, 0.2, tiny));
            BOOST_TEST_CONTEXT("tiny weight " << tiny) {
                check_problem(p, rng);
            }
        }
    }
}

// A weight row that is zero on every input with a finite value: log 0 = -inf exactly.
BOOST_AUTO_TEST_CASE(empty_support_gives_minus_infinity) {
    std::mt19937 rng(4);
    mex_problem p = make_problem(5, 6, 3, rng);
    std::vector<double> w = random_weights(3, 6, rng);
    for (std::size_t i = 0; i < 6; ++i) w[1 * 6 + i] = i == 5 ? 1.0 : 0.0;
    set_weights(p, w);
    for (std::size_t b = 0; b < 5; ++b) p.in[b * 6 + 5] = minus_infinity_f;
    const std::vector<float> out = run_forward(p);
    for (std::size_t b = 0; b < 5; ++b) BOOST_TEST(out[b * 3 + 1] == minus_infinity_f);
    check_problem(p, rng);
}

// Inputs spread to -200 and -1000 below the row maximum, with the weight at the maximum zero or
// tiny: S underflows and the exact fallback must give the finite true value.
BOOST_AUTO_TEST_CASE(underflowing_products_take_the_exact_fallback) {
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (const shape& s : test_shapes) {
        if (s.inputs < 2) continue;
        mex_problem p = make_problem(s.rows, s.inputs, s.outputs, rng);
        std::vector<double> w = random_weights(s.outputs, s.inputs, rng);
        // Input 0 is each row's maximum; the other inputs sit 200..260 below it.
        for (std::size_t b = 0; b < p.rows; ++b) {
            const float top = 50.0f * (u(rng) - 0.5f);
            p.in[b * p.inputs] = top;
            for (std::size_t i = 1; i < p.inputs; ++i)
                p.in[b * p.inputs + i] = top - 200.0f - 60.0f * u(rng);
        }
        // Weight on input 0: zero, 1e-30, 1e-38 (subnormal) or normal, by output.
        const double first[] = {0.0, 1e-30, 1e-38, 0.3};
        for (std::size_t o = 0; o < s.outputs; ++o) {
            double rest = 0;
            for (std::size_t i = 1; i < s.inputs; ++i) rest += w[o * s.inputs + i];
            const double w0 = first[o % 4];
            w[o * s.inputs] = w0;
            for (std::size_t i = 1; i < s.inputs; ++i) w[o * s.inputs + i] *= (1.0 - w0) / rest;
        }
        set_weights(p, w);
        const std::vector<double> want = oracle_forward(p);
        for (const double v : want) BOOST_TEST(std::isfinite(v));
        check_problem(p, rng);
    }

    // Inputs uniformly spread over [-1000, 0], weights with zeros.
    for (const shape& s : test_shapes) {
        mex_problem p = make_problem(s.rows, s.inputs, s.outputs, rng);
        for (auto& v : p.in) v = -1000.0f * u(rng);
        set_weights(p, random_weights(s.outputs, s.inputs, rng, 0.5, 0.1));
        check_problem(p, rng);
    }
}

BOOST_AUTO_TEST_CASE(large_inputs) {
    std::mt19937 rng(6);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (const shape& s : test_shapes) {
        mex_problem p = make_problem(s.rows, s.inputs, s.outputs, rng);
        for (auto& v : p.in) v = 80.0f + 5.0f * u(rng);
        check_problem(p, rng);
        for (auto& v : p.in) v = u(rng) < 0.5f ? 80.0f * u(rng) : -80.0f * u(rng);
        check_problem(p, rng);
    }
}

// No NaN or +inf anywhere for finite (or -inf) inputs, whatever their range.
BOOST_AUTO_TEST_CASE(no_nan_for_extreme_inputs) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (const shape& s : test_shapes) {
        mex_problem p = make_problem(s.rows, s.inputs, s.outputs, rng);
        const float levels[] = {88.0f, -88.0f, -1000.0f, -1e30f, 0.0f, minus_infinity_f};
        for (auto& v : p.in) v = levels[static_cast<std::size_t>(u(rng) * 6) % 6] + u(rng);
        set_weights(p, random_weights(s.outputs, s.inputs, rng, 0.3, 0.3, 1e-40, 20.0));
        const std::vector<float> out = run_forward(p);
        for (const float v : out) BOOST_TEST((std::isfinite(v) || v == minus_infinity_f));
        const kernel_gradients k = run_backward(p, out, random_dout(out.size(), rng));
        for (const float v : k.din) BOOST_TEST(std::isfinite(v));
        for (const float v : k.dtheta) BOOST_TEST(std::isfinite(v));
        check_problem(p, rng);
    }
}

// The oracle's gradient formulas against central differences of the double forward pass, with
// loss = sum_{b,o} c[b,o] out[b,o] (so dout = c) and W = softmax(theta); and the kernels
// against both.
BOOST_AUTO_TEST_CASE(finite_differences_of_din_and_dtheta) {
    std::mt19937 rng(8);
    const std::size_t rows = 3, I = 5, O = 4;
    mex_problem p = make_problem(rows, I, O, rng, 2.0);
    const std::vector<float> c = random_dout(rows * O, rng);

    // loss(theta, in) in double, from theta through the softmax.
    auto loss = [&](const std::vector<double>& theta, const std::vector<double>& in) {
        double total = 0;
        for (std::size_t o = 0; o < O; ++o) {
            double top = minus_infinity;
            for (std::size_t i = 0; i < I; ++i) top = std::max(top, theta[o * I + i]);
            double z = 0;
            for (std::size_t i = 0; i < I; ++i) z += std::exp(theta[o * I + i] - top);
            const double log_z = top + std::log(z);
            for (std::size_t b = 0; b < rows; ++b) {
                double s = 0;
                for (std::size_t i = 0; i < I; ++i)
                    s += std::exp(theta[o * I + i] - log_z + in[b * I + i]);
                total += c[b * O + o] * std::log(s);
            }
        }
        return total;
    };
    std::vector<double> in(p.in.begin(), p.in.end());
    const double h = 1e-5;

    const std::vector<float> out = run_forward(p);
    const kernel_gradients k = run_backward(p, out, c);
    const oracle_gradients g = oracle_backward(p, oracle_forward(p), c);

    for (std::size_t j = 0; j < O * I; ++j) {
        std::vector<double> plus = p.theta, minus = p.theta;
        plus[j] += h;
        minus[j] -= h;
        const double fd = (loss(plus, in) - loss(minus, in)) / (2 * h);
        BOOST_TEST(std::abs(g.dtheta[j] - fd) <= 1e-6 * (1 + std::abs(fd)), "oracle dtheta " << j);
        BOOST_TEST(std::abs(k.dtheta[j] - fd) <= 1e-5 * (1 + std::abs(fd)), "dtheta " << j);
    }
    for (std::size_t j = 0; j < rows * I; ++j) {
        std::vector<double> plus = in, minus = in;
        plus[j] += h;
        minus[j] -= h;
        const double fd = (loss(p.theta, plus) - loss(p.theta, minus)) / (2 * h);
        BOOST_TEST(std::abs(g.din[j] - fd) <= 1e-6 * (1 + std::abs(fd)), "oracle din " << j);
        BOOST_TEST(std::abs(k.din[j] - fd) <= 1e-5 * (1 + std::abs(fd)), "din " << j);
    }
}

// The kernels keep their scratch per thread: concurrent calls on different data agree with
// the same calls made one after another.
BOOST_AUTO_TEST_CASE(concurrent_calls_agree_with_serial_ones) {
    std::mt19937 rng(9);
    const std::vector<shape> shapes = {{128, 64, 128}, {33, 17, 9}, {200, 256, 10}, {7, 300, 40}};
    std::vector<mex_problem> problems;
    std::vector<std::vector<float>> douts, serial_out;
    std::vector<kernel_gradients> serial_grad;
    for (const shape& s : shapes) {
        problems.push_back(make_problem(s.rows, s.inputs, s.outputs, rng));
        douts.push_back(random_dout(s.rows * s.outputs, rng));
        serial_out.push_back(run_forward(problems.back()));
        serial_grad.push_back(run_backward(problems.back(), serial_out.back(), douts.back()));
    }
    std::vector<std::vector<float>> out(shapes.size());
    std::vector<kernel_gradients> grad(shapes.size());
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < shapes.size(); ++t)
        threads.emplace_back([&, t] {
            for (int repeat = 0; repeat < 20; ++repeat) {
                out[t] = run_forward(problems[t]);
                grad[t] = run_backward(problems[t], out[t], douts[t]);
            }
        });
    for (auto& th : threads) th.join();
    for (std::size_t t = 0; t < shapes.size(); ++t) {
        BOOST_TEST(out[t] == serial_out[t]);
        BOOST_TEST(grad[t].din == serial_grad[t].din);
        BOOST_TEST(grad[t].dtheta == serial_grad[t].dtheta);
    }
}

#if defined(__SSE__) || defined(__x86_64__)
// The kernels may flush denormals internally but must hand MXCSR back unchanged.
BOOST_AUTO_TEST_CASE(floating_point_state_is_restored) {
    std::mt19937 rng(10);
    const mex_problem p = make_problem(20, 30, 40, rng);
    const unsigned int before = _mm_getcsr();
    const std::vector<float> out = run_forward(p);
    run_backward(p, out, random_dout(out.size(), rng));
    BOOST_TEST(_mm_getcsr() == before);
}
#endif
