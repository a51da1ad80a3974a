// A model: the plan of a typed network and its parameters, with the queries users make of
// it (class log-likelihoods, predictions, the marginal log P(X)) on any backend.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <span>
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
    std::vector<T> result(log_likelihoods.size() / k);
    std::vector<T> terms(k);
    for (std::size_t b = 0; b < result.size(); ++b) {
        for (std::size_t y = 0; y < k; ++y) terms[y] = log_likelihoods[b * k + y] + log_prior[y];
        result[b] = log_sum_exp(std::span<const T>(terms));
    }
    return result;
}

}  // namespace tmm
