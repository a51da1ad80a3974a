#pragma once
// Seeded missingness generators for the blind-test protocols: i.i.d. pixels, W x W squares,
// and deletion of non-zero pixels; with their text spelling (`none`, `iid:P`, `rects:N:W`,
// `delete:N`) as the command line and result files use it.

#include <tmm/data/dataset.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace tmm::data {

enum class missing_kind { none, iid, rects, deletion };

struct missing_spec {
    missing_kind kind = missing_kind::none;
    double probability = 0.0;  // iid: chance that each pixel is missing
    int count = 0;             // rects: number of squares; deletion: pixels to delete
    int width = 0;             // rects: side of each square

    friend bool operator==(const missing_spec&, const missing_spec&) = default;
};

namespace detail {

[[noreturn]] inline void bad_missing(std::string_view text, const std::string& why) {
    throw error("bad missingness \"" + std::string(text) + "\": " + why);
}

inline int parse_missing_int(std::string_view text, std::string_view field, const char* name,
                             int min) {
    int value = 0;
    auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
    if (ec == std::errc::result_out_of_range)
        bad_missing(text, std::string(name) + " \"" + std::string(field) + "\" is too large");
    if (field.empty() || ec != std::errc() || end != field.data() + field.size() || value < min)
        bad_missing(text, std::string(name) + " must be an integer >= " + std::to_string(min) +
                              ", got \"" + std::string(field) + "\"");
    return value;
}

// splitmix64: turns (seed, index) into well-spread, independent generator seeds.
inline std::uint64_t mix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// The standard distributions are implementation-defined; these two are written out so a
// seed gives the same masks with any standard library.
inline double uniform01(std::mt19937_64& rng) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;  // [0, 1)
}

inline std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t n) {
    // Rejection keeps it exactly uniform: drop the top partial copy of [0, n).
    const std::uint64_t limit =
        std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % n;
    for (;;) {
        std::uint64_t r = rng();
        if (r < limit) return r % n;
    }
}

}  // namespace detail

// Parses the exact spellings `none`, `iid:P` (0 <= P <= 1), `rects:N:W` (N >= 0, W >= 1) and
// `delete:N` (N >= 0). N is at most 2^31 - 1; a P too small or large for a double (1e-400)
// is refused as out of range.
inline missing_spec parse_missing(std::string_view text) {
    using detail::bad_missing;
    const std::string usage = "expected none, iid:P, rects:N:W or delete:N";
    std::vector<std::string_view> parts;
    for (std::size_t start = 0;;) {
        std::size_t colon = text.find(':', start);
        parts.push_back(text.substr(start, colon - start));
        if (colon == std::string_view::npos) break;
        start = colon + 1;
    }

    missing_spec spec;
    const std::string_view head = parts[0];
    if (head == "none") {
        if (parts.size() != 1) bad_missing(text, "\"none\" takes no parameters");
    } else if (head == "iid") {
        if (parts.size() != 2) bad_missing(text, "expected iid:P with P a probability");
        const std::string_view field = parts[1];
        double p = std::numeric_limits<double>::quiet_NaN();
        auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), p);
        // A number too large or too small (say 1e-400) for a double: refused as out of range
        // rather than silently rounded to 0 or infinity.
        if (!field.empty() && ec == std::errc::result_out_of_range &&
            end == field.data() + field.size())
            bad_missing(text, "probability \"" + std::string(field) +
                                  "\" is out of the range of a double; it must be in [0, 1] "
                                  "(write 0 for no missing pixels)");
        if (field.empty() || ec != std::errc() || end != field.data() + field.size())
            bad_missing(text, "probability \"" + std::string(field) + "\" is not a number");
        if (!(p >= 0.0 && p <= 1.0)) bad_missing(text, "probability must be in [0, 1]");
        spec.kind = missing_kind::iid;
        spec.probability = p + 0.0;  // turns -0 into 0, so it prints as "0"
    } else if (head == "rects") {
        if (parts.size() != 3) bad_missing(text, "expected rects:N:W (N squares of side W)");
        spec.kind = missing_kind::rects;
        spec.count = detail::parse_missing_int(text, parts[1], "square count N", 0);
        spec.width = detail::parse_missing_int(text, parts[2], "side W", 1);
    } else if (head == "delete") {
        if (parts.size() != 2) bad_missing(text, "expected delete:N (N non-zero pixels)");
        spec.kind = missing_kind::deletion;
        spec.count = detail::parse_missing_int(text, parts[1], "pixel count N", 0);
    } else {
        bad_missing(text, usage);
    }
    return spec;
}

// The canonical spelling; parse_missing(to_string(s)) == s. P is written in the shortest form
// that reads back to the same double (0.75 -> "iid:0.75", 0.9 -> "iid:0.9").
inline std::string to_string(const missing_spec& spec) {
    switch (spec.kind) {
        case missing_kind::none:
            return "none";
        case missing_kind::iid: {
            char buf[64];
            auto [end, ec] = std::to_chars(buf, buf + sizeof buf, spec.probability);
            (void)ec;  // 64 bytes always hold the shortest form of a double
            return "iid:" + std::string(buf, end);
        }
        case missing_kind::rects:
            return "rects:" + std::to_string(spec.count) + ":" + std::to_string(spec.width);
        case missing_kind::deletion:
            return "delete:" + std::to_string(spec.count);
    }
    return "none";
}

// Applies spec to one rows x cols x channels image (channel last). observed_out gets one byte
// per value, 1 = observed, 0 = missing; a missing pixel marks all of its channels. Only
// `delete` changes the image: it zeroes the pixels it removes (all channels). A pixel counts
// as non-zero when any of its channels is.
inline void apply_missing(const missing_spec& spec, int rows, int cols, int channels,
                          std::span<std::uint8_t> image_inout, std::span<std::uint8_t> observed_out,
                          std::mt19937_64& rng) {
    if (rows <= 0 || cols <= 0 || channels <= 0)
        throw error("apply_missing: image shape " + std::to_string(rows) + "x" +
                    std::to_string(cols) + "x" + std::to_string(channels) +
                    " has a zero or negative side");
    const std::size_t pixels = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
    const std::size_t ch = static_cast<std::size_t>(channels);
    if (image_inout.size() != pixels * ch || observed_out.size() != pixels * ch)
        throw error("apply_missing: image has " + std::to_string(image_inout.size()) +
                    " values and mask " + std::to_string(observed_out.size()) + ", expected " +
                    std::to_string(pixels * ch) + " for " + std::to_string(rows) + "x" +
                    std::to_string(cols) + "x" + std::to_string(channels));

    std::fill(observed_out.begin(), observed_out.end(), std::uint8_t{1});
    auto drop = [&](std::size_t pixel) {
        for (std::size_t c = 0; c < ch; ++c) observed_out[pixel * ch + c] = 0;
    };

    switch (spec.kind) {
        case missing_kind::none:
            break;
        case missing_kind::iid:
            if (!(spec.probability >= 0.0 && spec.probability <= 1.0))
                detail::bad_missing(to_string(spec), "probability must be in [0, 1]");
            // u in [0, 1) < P: P = 0 drops nothing, P = 1 drops everything.
            for (std::size_t j = 0; j < pixels; ++j)
                if (detail::uniform01(rng) < spec.probability) drop(j);
            break;
        case missing_kind::rects: {
            const int w = spec.width;
            if (spec.count < 0 || w < 1)
                detail::bad_missing(to_string(spec), "needs N >= 0 and W >= 1");
            if (w > rows || w > cols)
                detail::bad_missing(to_string(spec),
                                    "a " + std::to_string(w) + "x" + std::to_string(w) +
                                        " square does not fit inside a " + std::to_string(rows) +
                                        "x" + std::to_string(cols) + " image");
            // Once every pixel is missing, more squares change nothing: stop drawing, so a
            // huge N (rects:2147483647:28) costs no more than covering the image does.
            std::size_t missing = 0;
            for (int n = 0; n < spec.count && missing < pixels; ++n) {
                // Top-left corner uniform over the positions that keep the square inside.
                const auto top = static_cast<int>(
                    detail::uniform_below(rng, static_cast<std::uint64_t>(rows - w + 1)));
                const auto left = static_cast<int>(
                    detail::uniform_below(rng, static_cast<std::uint64_t>(cols - w + 1)));
                for (int r = top; r < top + w; ++r)
                    for (int c = left; c < left + w; ++c) {
                        const std::size_t j =
                            static_cast<std::size_t>(r) * static_cast<std::size_t>(cols) +
                            static_cast<std::size_t>(c);
                        if (observed_out[j * ch] != 0) ++missing;
                        drop(j);
                    }
            }
            break;
        }
        case missing_kind::deletion: {
            if (spec.count < 0) detail::bad_missing(to_string(spec), "needs N >= 0");
            std::vector<std::size_t> nonzero;
            for (std::size_t j = 0; j < pixels; ++j)
                for (std::size_t c = 0; c < ch; ++c)
                    if (image_inout[j * ch + c] != 0) {
                        nonzero.push_back(j);
                        break;
                    }
            // Partial Fisher-Yates: the first `take` entries are a uniform sample.
            const std::size_t take = std::min(nonzero.size(), static_cast<std::size_t>(spec.count));
            for (std::size_t i = 0; i < take; ++i) {
                std::size_t k =
                    i + static_cast<std::size_t>(detail::uniform_below(rng, nonzero.size() - i));
                std::swap(nonzero[i], nonzero[k]);
                drop(nonzero[i]);
                for (std::size_t c = 0; c < ch; ++c) image_inout[nonzero[i] * ch + c] = 0;
            }
            break;
        }
    }
}

// The generator for image `index` under `seed`: every image has its own stream, so masks do
// not depend on the order or the threads that produce them.
inline std::mt19937_64 missing_rng(std::uint64_t seed, std::size_t index) {
    return std::mt19937_64(detail::mix64(detail::mix64(seed) ^ static_cast<std::uint64_t>(index)));
}

struct masked_images {
    std::vector<std::uint8_t> pixels;    // as data.pixels, with deleted pixels zeroed
    std::vector<std::uint8_t> observed;  // same layout; 1 = observed
};

// Masks and (for delete) modified pixels for every image of data.
inline masked_images make_missing(const missing_spec& spec, const dataset& data,
                                  std::uint64_t seed) {
    const std::size_t size = data.image_size();
    if (data.pixels.size() != data.count * size)
        throw error("make_missing: data set has " + std::to_string(data.pixels.size()) +
                    " pixel bytes, expected " + std::to_string(data.count * size));
    masked_images out{data.pixels, std::vector<std::uint8_t>(data.pixels.size())};
    for (std::size_t i = 0; i < data.count; ++i) {
        auto rng = missing_rng(seed, i);
        apply_missing(spec, data.rows, data.cols, data.channels,
                      std::span<std::uint8_t>(out.pixels).subspan(i * size, size),
                      std::span<std::uint8_t>(out.observed).subspan(i * size, size), rng);
    }
    return out;
}

// Only the masks (1 = observed), identical to make_missing(spec, data, seed).observed.
inline std::vector<std::uint8_t> make_masks(const missing_spec& spec, const dataset& data,
                                            std::uint64_t seed) {
    return make_missing(spec, data, seed).observed;
}

}  // namespace tmm::data
