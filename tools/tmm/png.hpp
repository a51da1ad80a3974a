// Grids of images written as PNG through libpng: the generation subcommands lay out samples,
// completions and neuron patches as tiles of an RGB picture.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace tmm::cli {

struct rgb {
    std::uint8_t r = 0, g = 0, b = 0;
};

// A grid of rows x cols tiles of tile_height x tile_width pixels, each pixel drawn as a
// scale x scale square, tiles separated by a gap of `gap` screen pixels.
class image_grid {
  public:
    image_grid(int rows, int cols, int tile_height, int tile_width, int scale, int gap = 2);

    void set(int row, int col, int y, int x, rgb colour);
    // Greyscale pixel values on the original 0..255 scale (rounded, limited to 0..255 for
    // display); `shown[i] == 0` draws pixel i in `hidden` instead.
    void set_tile(int row, int col, std::span<const double> grey,
                  std::span<const std::uint8_t> shown = {}, rgb hidden = {});

    // The PNG file's bytes (libpng); std::runtime_error if libpng fails.
    std::string encode() const;

  private:
    int rows_, cols_, tile_height_, tile_width_, scale_, gap_;
    int width_, height_;
    std::vector<std::uint8_t> pixels_;  // height_ x width_ x 3
};

// Writes the grid to `path` atomically (temporary file, then rename).
void write_png(const std::filesystem::path& path, const image_grid& grid);

}  // namespace tmm::cli
