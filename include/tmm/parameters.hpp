// The learned quantities of a network, laid out flat so that every backend, the optimiser
// and the model file share one description. Gradients use the same type.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "plan.hpp"

namespace tmm {

template <class T>
struct parameters {
    // Gaussian leaves: M x s means and log-precisions (precision = exp(log_precision)).
    std::vector<T> mean, log_precision;
    // Categorical leaves: M x s x V logits; log P(x_k = v | d) = logit - logsumexp over v.
    std::vector<T> logits;
    // Conv layers: weight_sets x out x in logits theta; log W = theta - logsumexp over in.
    // Empty for pooling layers and for layers with constant weights.
    std::vector<std::vector<T>> theta;
    // log P(y); not learned (uniform unless the user sets it).
    std::vector<T> log_prior;

    // Every learned array in a fixed order, for optimisers and serialisation.
    template <class F>
    void for_each_array(F&& f) {
        f(mean);
        f(log_precision);
        f(logits);
        for (auto& t : theta) f(t);
    }
    template <class F>
    void for_each_array(F&& f) const {
        f(mean);
        f(log_precision);
        f(logits);
        for (const auto& t : theta) f(t);
    }
    std::size_t size() const {
        std::size_t n = 0;
        for_each_array([&](const std::vector<T>& a) { n += a.size(); });
        return n;
    }
};

// Parameters shaped for `p`, all zero (uniform weights, unit precision, zero means).
template <class T>
parameters<T> zero_parameters(const plan& p) {
    parameters<T> result;
    const std::size_t leaf = std::size_t(p.components) * p.patch_size();
    if (p.leaves == leaf_kind::gaussian) {
        result.mean.assign(leaf, T(0));
        result.log_precision.assign(leaf, T(0));
    } else {
        result.logits.assign(leaf * p.values, T(0));
    }
    for (const layer& l : p.layers) result.theta.emplace_back(l.weight_count(), T(0));
    result.log_prior.assign(p.classes, -std::log(T(p.classes)));
    return result;
}

// A log-precision must lie below this: the precision exp(log_precision) is then a finite T.
template <class T>
T largest_log_precision() {
    return std::log(std::numeric_limits<T>::max());
}

// How far from 1 the class prior's probabilities exp(log_prior) may sum: |log of the sum| at
// most this. Rounding log P(y) to a float moves it by at most 2^-24 |log P(y)|, so the sum
// moves by at most 2^-24 sum_y P(y) |log P(y)| = 2^-24 H(P) <= 2^-24 ln K: under 1.3e-6 for
// any int number of classes K. A prior computed in float (a division, a log) adds a few
// 2^-24 more. 1e-5 is several times that, and refuses what is not a distribution.
inline constexpr double prior_tolerance = 1e-5;

// log sum_y exp(log_prior[y]), max-shifted and in double whatever T is (a float sum of K
// terms would add K rounding errors of its own); -inf when every term is -inf.
template <class T>
double log_prior_total(std::span<const T> log_prior) {
    double top = -std::numeric_limits<double>::infinity();
    for (T v : log_prior) top = std::max(top, double(v));
    if (top == -std::numeric_limits<double>::infinity()) return top;
    double sum = 0;
    for (T v : log_prior) sum += std::exp(double(v) - top);
    return top + std::log(sum);
}

// Empty when exp(log_prior) sums to 1 within prior_tolerance; else what it sums to.
template <class T>
std::string prior_problem(std::span<const T> log_prior) {
    const double log_total = log_prior_total(log_prior);
    if (std::abs(log_total) <= prior_tolerance) return {};
    char text[160];
    std::snprintf(text, sizeof text,
                  "its probabilities exp(log_prior) sum to %.7g (log of the sum %.3g), not 1 "
                  "(|log of the sum| at most %g)",
                  std::exp(log_total), log_total, prior_tolerance);
    return text;
}

// Throws input_error unless `theta` has exactly the arrays `p` needs and every value is
// allowed: never NaN or +inf; -inf only where it means probability zero (a logit, a conv
// logit, log P(y)), and never for a whole row, which would leave nothing to normalise. The
// class prior must be a distribution (prior_problem).
template <class T>
void validate(const plan& p, const parameters<T>& theta) {
    const std::size_t leaf = std::size_t(p.components) * p.patch_size();
    const bool gaussian = p.leaves == leaf_kind::gaussian;
    // `row` is the length of the rows normalised together (0: every value must be finite)
    const auto check = [](const std::string& name, const std::vector<T>& a, std::size_t expected,
                          std::size_t row) {
        if (a.size() != expected)
            throw input_error("tmm: parameter array " + name + " holds " +
                              std::to_string(a.size()) + " values, the plan needs " +
                              std::to_string(expected));
        for (std::size_t i = 0; i < a.size(); ++i) {
            const bool zero_probability = row > 0 && a[i] == -std::numeric_limits<T>::infinity();
            if (!std::isfinite(a[i]) && !zero_probability)
                throw input_error("tmm: parameter " + name + "[" + std::to_string(i) + "] is " +
                                  (std::isnan(a[i])     ? "NaN"
                                   : std::signbit(a[i]) ? "-inf"
                                                        : "+inf"));
        }
        for (std::size_t start = 0; row > 0 && start < a.size(); start += row)
            if (std::all_of(a.begin() + start, a.begin() + start + row,
                            [](T v) { return v == -std::numeric_limits<T>::infinity(); }))
                throw input_error("tmm: parameter " + name + "[" + std::to_string(start) + ".." +
                                  std::to_string(start + row - 1) +
                                  "] is all -inf: a distribution needs some probability");
    };
    check("mean", theta.mean, gaussian ? leaf : 0, 0);
    check("log_precision", theta.log_precision, gaussian ? leaf : 0, 0);
    const T largest_log = largest_log_precision<T>();
    for (std::size_t i = 0; i < theta.log_precision.size(); ++i)
        if (theta.log_precision[i] >= largest_log)
            throw input_error("tmm: parameter log_precision[" + std::to_string(i) + "] is " +
                              std::to_string(theta.log_precision[i]) + ": its precision exp(" +
                              std::to_string(theta.log_precision[i]) +
                              ") overflows (the largest allowed log-precision is " +
                              std::to_string(largest_log) + ")");
    check("logits", theta.logits, gaussian ? 0 : leaf * p.values, std::size_t(p.values));
    if (theta.theta.size() != p.layers.size())
        throw input_error("tmm: the parameters have " + std::to_string(theta.theta.size()) +
                          " theta arrays, the plan has " + std::to_string(p.layers.size()) +
                          " layers");
    for (std::size_t l = 0; l < p.layers.size(); ++l)
        check("theta[" + std::to_string(l) + "]", theta.theta[l], p.layers[l].weight_count(),
              std::size_t(p.layers[l].in_channels));
    check("log_prior", theta.log_prior, std::size_t(p.classes), std::size_t(p.classes));
    if (const std::string problem = prior_problem(std::span<const T>(theta.log_prior));
        !problem.empty())
        throw input_error("tmm: parameter log_prior is not a distribution over the " +
                          std::to_string(p.classes) + " classes: " + problem);
}

// Converts between precisions (e.g. float parameters into the float64 reference backend).
template <class To, class From>
parameters<To> convert_parameters(const parameters<From>& from) {
    auto copy = [](const std::vector<From>& v) { return std::vector<To>(v.begin(), v.end()); };
    parameters<To> to;
    to.mean = copy(from.mean);
    to.log_precision = copy(from.log_precision);
    to.logits = copy(from.logits);
    for (const auto& t : from.theta) to.theta.push_back(copy(t));
    to.log_prior = copy(from.log_prior);
    return to;
}

// log sum_i exp(v_i), exact: max-shifted, -inf when every term is -inf, never clamped.
template <class T>
T log_sum_exp(std::span<const T> v) {
    T m = -std::numeric_limits<T>::infinity();
    for (T x : v) m = x > m ? x : m;
    if (m == -std::numeric_limits<T>::infinity()) return m;
    T s = 0;
    for (T x : v) s += std::exp(x - m);
    return m + std::log(s);
}

// log W for conv layer `l`: log-softmax of theta over the input channels, or the log of the
// constant weights (log 0 = -inf is kept: a zero weight is an impossible transition).
template <class T>
std::vector<T> log_weights(const layer& l, const std::vector<T>& theta) {
    const std::size_t rows = std::size_t(l.weight_sets) * l.out_channels;
    const std::size_t in = l.in_channels;
    std::vector<T> result(rows * in);
    if (l.fixed) {
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t a = 0; a < in; ++a)
                result[r * in + a] = T(std::log(l.fixed_weights[(r % l.out_channels) * in + a]));
        return result;
    }
    for (std::size_t r = 0; r < rows; ++r) {
        const std::span<const T> row(theta.data() + r * in, in);
        const T norm = log_sum_exp(row);
        for (std::size_t a = 0; a < in; ++a) result[r * in + a] = row[a] - norm;
    }
    return result;
}

}  // namespace tmm
