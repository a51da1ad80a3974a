// Labelled images as the trainer and evaluators read them: float values with a mask, and
// the conversion from 8-bit pixels to the published input scale.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "../observations.hpp"

namespace tmm {

// The published input scale: v -> (v - 127.5) / 255, so pixels lie in [-0.5, 0.5].
inline float normalize_pixel(std::uint8_t v) {
    return (float(v) - 127.5f) / 255.0f;
}

inline std::vector<float> normalize_pixels(std::span<const std::uint8_t> bytes) {
    std::vector<float> out(bytes.size());
    for (std::size_t i = 0; i < bytes.size(); ++i) out[i] = normalize_pixel(bytes[i]);
    return out;
}

// `count` images with one label each; `observed` empty means nothing is missing.
struct labelled_images {
    std::size_t count = 0;
    std::span<const float> values;
    std::span<const std::uint8_t> observed;
    std::span<const int> labels;

    observations<float> as_observations() const {
        observations<float> x;
        x.count = count;
        x.values = values;
        x.observed = observed;
        return x;
    }
};

}  // namespace tmm
