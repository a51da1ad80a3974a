// A batch of images with a missing-value mask, as every backend reads it, and the checks
// that turn a malformed batch into a clear error before any arithmetic runs.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>

#include "plan.hpp"

namespace tmm {

// `count` images of plan.pixels() values each (row-major, channel last). `observed` is
// either empty (every value observed) or holds one flag per value, 1 = observed. A NaN
// value is missing whatever its flag says. The value in a missing slot is never read into
// any result.
template <class T>
struct observations {
    observations() = default;
    observations(std::size_t n, std::span<const T> v, std::span<const std::uint8_t> o = {})
        : count(n), values(v), observed(o) {}

    std::size_t count = 0;
    std::span<const T> values;
    std::span<const std::uint8_t> observed;

    // Optional, for training's random marginalisation of inner positions: one flag per image
    // and position of the output of layer `marginalized_layer`, 0 = that position is
    // marginalised (its log-activations become 0 = log 1). Empty: nothing marginalised there.
    std::size_t marginalized_layer = 0;
    std::span<const std::uint8_t> kept_positions;

    bool position_kept(std::size_t layer, std::size_t image, std::size_t positions,
                       std::size_t position) const {
        return kept_positions.empty() || layer != marginalized_layer ||
               kept_positions[image * positions + position] != 0;
    }

    bool is_observed(std::size_t index) const {
        return (observed.empty() || observed[index] != 0) && !std::isnan(values[index]);
    }
};

namespace detail {

// True when no value is +-inf (a NaN is a missing value, not an error): one branch-free pass.
// The inner loop has a fixed trip count so that GCC vectorises it at -O2 too (its "very
// cheap" cost model leaves loops of unknown length scalar: 13x slower on a batch of 1024).
template <class T>
bool none_infinite(std::span<const T> values) {
    constexpr T inf = std::numeric_limits<T>::infinity();
    constexpr std::size_t chunk = 64;
    const std::size_t whole = values.size() / chunk * chunk;
    int infinite = 0;
    for (std::size_t i = 0; i < whole; i += chunk) {
        const T* v = values.data() + i;
        for (std::size_t j = 0; j < chunk; ++j) infinite |= int(v[j] == inf) | int(v[j] == -inf);
    }
    for (std::size_t i = whole; i < values.size(); ++i)
        infinite |= int(values[i] == inf) | int(values[i] == -inf);
    return infinite == 0;
}

}  // namespace detail

// Throws input_error naming the first problem: wrong sizes, an infinite observed value, or
// for categorical leaves an observed value that is not a symbol in [0, V).
template <class T>
void validate(const plan& p, const observations<T>& x) {
    if (const std::string problem = plan_problem(p); !problem.empty())
        throw input_error("tmm: the plan is inconsistent: " + problem);
    const std::size_t pixels = std::size_t(p.pixels());
    // count * n without overflow: a huge count must not wrap around to the size it is
    // compared with
    const auto holds = [&](std::size_t size, std::size_t n) {
        return size % n == 0 && size / n == x.count;
    };
    if (!holds(x.values.size(), pixels))
        throw input_error("tmm: the batch holds " + std::to_string(x.values.size()) +
                          " values, expected " + std::to_string(x.count) + " images x " +
                          std::to_string(pixels) + " values (" + std::to_string(p.height) + "x" +
                          std::to_string(p.width) + "x" + std::to_string(p.image_channels) + ")");
    if (!x.observed.empty() && x.observed.size() != x.values.size())
        throw input_error("tmm: the missing-value mask holds " + std::to_string(x.observed.size()) +
                          " flags, expected one per value (" + std::to_string(x.values.size()) +
                          ")");
    if (!x.kept_positions.empty()) {
        if (x.marginalized_layer >= p.layers.size())
            throw input_error("tmm: marginalised layer " + std::to_string(x.marginalized_layer) +
                              " does not exist (the network has " +
                              std::to_string(p.layers.size()) + " layers)");
        const std::size_t positions = p.layers[x.marginalized_layer].out_positions();
        if (!holds(x.kept_positions.size(), positions))
            throw input_error("tmm: the position mask holds " +
                              std::to_string(x.kept_positions.size()) + " flags, expected " +
                              std::to_string(x.count) + " images x " + std::to_string(positions) +
                              " positions");
    }
    // Gaussian leaves accept any finite value: a batch without an infinity is clean. Otherwise
    // the value-by-value walk below finds the first problem and names it.
    if (p.leaves != leaf_kind::categorical && detail::none_infinite(x.values)) return;
    for (std::size_t i = 0; i < x.values.size(); ++i) {
        if (!x.is_observed(i)) continue;
        const T v = x.values[i];
        const auto where = [&] {
            return "image " + std::to_string(i / pixels) + ", value " + std::to_string(i % pixels);
        };
        if (std::isinf(v))
            throw input_error("tmm: observed value is infinite at " + where() +
                              "; mark it missing (mask 0 or NaN) instead");
        if (p.leaves == leaf_kind::categorical && (v < 0 || v >= T(p.values) || v != std::floor(v)))
            throw input_error("tmm: observed value " + std::to_string(v) + " at " + where() +
                              " is not a symbol in [0, " + std::to_string(p.values) + ")");
    }
}

}  // namespace tmm
