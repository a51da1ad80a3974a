// PNG output through libpng, written to memory and then to the file atomically.
#include "png.hpp"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "cli.hpp"

namespace tmm::cli {

image_grid::image_grid(int rows, int cols, int tile_height, int tile_width, int scale, int gap)
    : rows_(rows),
      cols_(cols),
      tile_height_(tile_height),
      tile_width_(tile_width),
      scale_(scale),
      gap_(gap),
      width_(cols * (tile_width * scale + gap) + gap),
      height_(rows * (tile_height * scale + gap) + gap),
      pixels_(std::size_t(width_) * height_ * 3, 255) {}

void image_grid::set(int row, int col, int y, int x, rgb colour) {
    const int top = gap_ + row * (tile_height_ * scale_ + gap_) + y * scale_;
    const int left = gap_ + col * (tile_width_ * scale_ + gap_) + x * scale_;
    for (int dy = 0; dy < scale_; ++dy)
        for (int dx = 0; dx < scale_; ++dx) {
            std::uint8_t* at = pixels_.data() + (std::size_t(top + dy) * width_ + left + dx) * 3;
            at[0] = colour.r, at[1] = colour.g, at[2] = colour.b;
        }
}

void image_grid::set_tile(int row, int col, std::span<const double> grey,
                          std::span<const std::uint8_t> shown, rgb hidden) {
    for (int y = 0; y < tile_height_; ++y)
        for (int x = 0; x < tile_width_; ++x) {
            const std::size_t i = std::size_t(y) * tile_width_ + x;
            if (!shown.empty() && shown[i] == 0) {
                set(row, col, y, x, hidden);
                continue;
            }
            const auto v = std::uint8_t(std::clamp(std::lround(grey[i]), 0L, 255L));
            set(row, col, y, x, {v, v, v});
        }
}

namespace {

void append(png_structp png, png_bytep data, png_size_t length) {
    auto* out = static_cast<std::string*>(png_get_io_ptr(png));
    out->append(reinterpret_cast<const char*>(data), length);
}

void flush(png_structp) {}

// Encodes `rows` into `out`; false when libpng reports an error. Only plain locals live in
// this frame, since libpng reports errors by longjmp.
bool encode_rows(png_bytep* rows, png_uint_32 width, png_uint_32 height, std::string* out) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    if (!png) return false;
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, info ? &info : nullptr);
        return false;
    }
    png_set_write_fn(png, out, append, flush);
    png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
    png_destroy_write_struct(&png, &info);
    return true;
}

}  // namespace

std::string image_grid::encode() const {
    std::vector<png_bytep> rows(height_);
    for (int y = 0; y < height_; ++y)
        rows[y] = const_cast<png_bytep>(pixels_.data() + std::size_t(y) * width_ * 3);
    std::string out;
    if (!encode_rows(rows.data(), png_uint_32(width_), png_uint_32(height_), &out))
        throw std::runtime_error("libpng failed to encode a " + std::to_string(width_) + "x" +
                                 std::to_string(height_) + " image");
    return out;
}

void write_png(const std::filesystem::path& path, const image_grid& grid) {
    write_text_atomically(path, grid.encode());
}

}  // namespace tmm::cli
