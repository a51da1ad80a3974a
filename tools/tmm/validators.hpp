// Option validators shared by every subcommand of `tmm`, so that a count or a seed is read
// and refused the same way wherever it appears.
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <string>
#include <system_error>

namespace tmm::cli {

// Counts and sizes: a whole number >= 1, with a message that says so.
inline const CLI::Validator positive_integer(
    [](std::string& text) -> std::string {
        std::uint64_t value = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end != text.data() + text.size() || value == 0)
            return "must be a whole number >= 1, got \"" + text + "\"";
        return {};
    },
    "INTEGER>=1");

// Seeds: a whole number in [0, 2^64); CLI11 alone would wrap "-1" around to 2^64 - 1.
inline const CLI::Validator seed_value(
    [](std::string& text) -> std::string {
        std::uint64_t value = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end != text.data() + text.size())
            return "must be a whole number in [0, 2^64), got \"" + text + "\"";
        return {};
    },
    "UINT64");

// Shift radii: a whole number in [0, 4] (the (2R+1)^2 shifted copies cost that many passes).
inline const CLI::Validator shift_radius(
    [](std::string& text) -> std::string {
        unsigned value = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end != text.data() + text.size() || value > 4)
            return "must be a whole number from 0 to 4, got \"" + text + "\"";
        return {};
    },
    "0..4");

}  // namespace tmm::cli
