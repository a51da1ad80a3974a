// A model: the plan of a typed network and its parameters, with the queries users make of
// it (class log-likelihoods, predictions, the marginal log P(X)) on any backend.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "dsl/network.hpp"
#include "observations.hpp"
#include "parameters.hpp"
#include "plan.hpp"

namespace tmm {

// A backend evaluates a plan on a batch; `gradients` also differentiates a loss whose
// gradient with respect to the outputs the caller's seed supplies.
template <class B, class T>
concept backend = requires(const plan& p, const parameters<T>& theta, const observations<T>& x) {
    { B::log_likelihoods(p, theta, x) } -> std::same_as<std::vector<T>>;
};

// A backend that can also prepare the parameters once (normalise, check, pack) for many
// inference calls with them: cpu::prepare_inference.
template <class B, class T>
concept prepares_inference = backend<B, T> &&
    requires(const plan& p, const parameters<T>& theta, const observations<T>& x) {
    { B::log_likelihoods(B::prepare_inference(p, theta), x) } -> std::same_as<std::vector<T>>;
};

// f(score), where score(x) is Backend's log_likelihoods(p, theta, x); the parameters are
// prepared once for all of f's calls where the backend can (prepares_inference).
template <class Backend, class T, class F>
requires backend<Backend, T>
decltype(auto) with_inference(const plan& p, const parameters<T>& theta, F&& f) {
    if constexpr (prepares_inference<Backend, T>) {
        const auto net = Backend::prepare_inference(p, theta);
        return f([&](const observations<T>& x) { return Backend::log_likelihoods(net, x); });
    } else {
        return f([&](const observations<T>& x) { return Backend::log_likelihoods(p, theta, x); });
    }
}

template <class Net, class T = float>
requires complete_network<Net>
class model {
  public:
    using network_type = Net;
    using value_type = T;

    explicit model(Net = {})
        : structure_(make_plan(Net{})), parameters_(zero_parameters<T>(structure_)) {}

    const plan& structure() const { return structure_; }
    parameters<T>& params() { return parameters_; }
    const parameters<T>& params() const { return parameters_; }

    // log P(X | y), count x K, with every missing value marginalised.
    template <class Backend>
    requires backend<Backend, T> std::vector<T> log_likelihoods(const observations<T>& x,
                                                                Backend = {})
    const { return Backend::log_likelihoods(structure_, parameters_, x); }

  private:
    plan structure_;
    parameters<T> parameters_;
};

// argmax_y log P(X | y) + log P(y) for each image of a count x K array.
template <class T>
std::vector<int> predict(std::span<const T> log_likelihoods, std::span<const T> log_prior) {
    const std::size_t k = log_prior.size();
    if (k == 0 || log_likelihoods.size() % k != 0)
        throw input_error("tmm::predict: " + std::to_string(log_likelihoods.size()) +
                          " log-likelihoods do not split into rows of " + std::to_string(k) +
                          " classes");
    std::vector<int> labels(log_likelihoods.size() / k);
    for (std::size_t b = 0; b < labels.size(); ++b) {
        int best = 0;
        for (std::size_t y = 1; y < k; ++y)
            if (log_likelihoods[b * k + y] + log_prior[y] >
                log_likelihoods[b * k + best] + log_prior[best])
                best = int(y);
        labels[b] = best;
    }
    return labels;
}

// log P(X) = logsumexp_y (log P(X | y) + log P(y)) for each image.
template <class T>
std::vector<T> log_marginal(std::span<const T> log_likelihoods, std::span<const T> log_prior) {
    const std::size_t k = log_prior.size();
    if (k == 0 || log_likelihoods.size() % k != 0)
        throw input_error("tmm::log_marginal: " + std::to_string(log_likelihoods.size()) +
                          " log-likelihoods do not split into rows of " + std::to_string(k) +
                          " classes");
    std::vector<T> result(log_likelihoods.size() / k);
    std::vector<T> terms(k);
    for (std::size_t b = 0; b < result.size(); ++b) {
        for (std::size_t y = 0; y < k; ++y) terms[y] = log_likelihoods[b * k + y] + log_prior[y];
        result[b] = log_sum_exp(std::span<const T>(terms));
    }
    return result;
}

// Class log-likelihoods summed over the (2r+1)^2 shifts of at most r pixels in each
// direction, pixels shifted in from outside missing: the published shift-averaged prediction.
// score(batch) gives the class log-likelihoods of a batch (a backend's log_likelihoods, with
// parameters prepared once by the caller for as many batches as it likes).
template <class T, class Score>
std::vector<T> shift_averaged(const plan& p, const observations<T>& x, int radius,
                              const Score& score) {
    validate(p, x);
    if (radius < 0)
        throw input_error("tmm::shift_averaged_log_likelihoods: the shift radius is " +
                          std::to_string(radius) + "; it must be >= 0");
    const std::size_t pixels = p.pixels();
    std::vector<T> values(x.values.size()), total(x.count * p.classes, T(0));
    std::vector<std::uint8_t> observed(x.values.size());
    for (int dy = -radius; dy <= radius; ++dy)
        for (int dx = -radius; dx <= radius; ++dx) {
            for (std::size_t b = 0; b < x.count; ++b)
                for (int r = 0; r < p.height; ++r)
                    for (int c = 0; c < p.width; ++c)
                        for (int ch = 0; ch < p.image_channels; ++ch) {
                            const std::size_t to =
                                b * pixels + (std::size_t(r) * p.width + c) * p.image_channels + ch;
                            const int sr = r - dy, sc = c - dx;
                            const bool inside = sr >= 0 && sr < p.height && sc >= 0 && sc < p.width;
                            const std::size_t from =
                                b * pixels + (std::size_t(sr) * p.width + sc) * p.image_channels +
                                ch;
                            values[to] = inside ? x.values[from] : T(0);
                            observed[to] = inside && x.is_observed(from);
                        }
            const auto out = score(observations<T>{x.count, values, observed});
            for (std::size_t i = 0; i < total.size(); ++i) total[i] += out[i];
        }
    return total;
}

template <class Backend, class T>
requires backend<Backend, T> std::vector<T> shift_averaged_log_likelihoods(
    const plan& p, const parameters<T>& theta, const observations<T>& x, int radius = 1) {
    return with_inference<Backend>(
        p, theta, [&](const auto& score) { return shift_averaged(p, x, radius, score); });
}

}  // namespace tmm
