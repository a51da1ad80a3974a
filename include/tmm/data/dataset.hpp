#pragma once
// Labelled 8-bit image sets as they come off disk (IDX files and the like), a train/test
// split of them, and tmm::data::error, the one exception every data-input failure throws.

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace tmm::data {

// Thrown for every malformed or missing input; the message names the file (or spec), the
// byte offset or index where it went wrong, and what was expected there.
class error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct dataset {
    std::size_t count = 0;
    int rows = 0;
    int cols = 0;
    int channels = 1;
    int classes = 0;
    // count * rows * cols * channels bytes: image-major, then row-major, channel last.
    std::vector<std::uint8_t> pixels;
    std::vector<int> labels;  // count entries, each in [0, classes)

    std::size_t image_size() const {
        return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) *
               static_cast<std::size_t>(channels);
    }
    std::span<const std::uint8_t> image(std::size_t i) const {
        return std::span<const std::uint8_t>(pixels).subspan(i * image_size(), image_size());
    }
    std::span<std::uint8_t> image(std::size_t i) {
        return std::span<std::uint8_t>(pixels).subspan(i * image_size(), image_size());
    }

    // Throws tmm::data::error (prefixed by `what`) unless the sizes and labels agree.
    void validate(const std::string& what) const {
        if (rows <= 0 || cols <= 0 || channels <= 0)
            throw error(what + ": image shape " + std::to_string(rows) + "x" +
                        std::to_string(cols) + "x" + std::to_string(channels) +
                        " has a zero or negative side");
        if (pixels.size() != count * image_size())
            throw error(what + ": " + std::to_string(pixels.size()) + " pixel bytes, expected " +
                        std::to_string(count * image_size()) + " for " + std::to_string(count) +
                        " images");
        if (labels.size() != count)
            throw error(what + ": " + std::to_string(labels.size()) + " labels for " +
                        std::to_string(count) + " images");
        if (classes < 1 || classes > 256)
            throw error(what + ": " + std::to_string(classes) + " classes, expected 1..256");
        for (std::size_t i = 0; i < count; ++i)
            if (labels[i] < 0 || labels[i] >= classes)
                throw error(what + ": label " + std::to_string(labels[i]) + " at index " +
                            std::to_string(i) + " is outside [0, " + std::to_string(classes) + ")");
    }
};

struct split {
    dataset train;
    dataset test;
    std::string name;  // "fashion-mnist", "mnist", or the directory it was read from
};

}  // namespace tmm::data
