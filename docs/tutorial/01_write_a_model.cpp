// Tutorial 1: write a model. A network is a pipeline of stages whose shapes are checked by
// the compiler; tmm::make_plan lowers it to the list of layers every backend runs.
#include <cstdio>
#include <tmm/tmm.hpp>
#include <type_traits>

// The published deep (HT) model for 28x28 digits, written out stage by stage.
constexpr auto digits =
    tmm::input<28, 28> | tmm::pad<2> |            // 32x32, the border missing
    tmm::representation<tmm::gaussians<32>, 2> |  // 32 Gaussians on 2x2 patches: 16x16
    tmm::conv<64, tmm::tiled<2, 2>> |             // 4 weight sets, by row and column parity
    tmm::product_pool<tmm::window<2, 2>> |        // 8x8
    tmm::conv<128> | tmm::product_pool<tmm::window<2, 2>> |  // 4x4
    tmm::conv<256> | tmm::product_pool<tmm::window<2, 2>> |  // 2x2
    tmm::conv<512> | tmm::product_pool<tmm::window<2, 2>> |  // 1x1
    tmm::classes<10>;

// It is the model the library ships under that name.
static_assert(std::is_same_v<decltype(digits), decltype(tmm::published_ht)>);

// A small model of our own: 3 classes of 12x12 images, 4x4 patches (a 3x3 grid), two levels
// of 2x2 pooling; the odd 3x3 grid is padded with missing positions.
constexpr auto small = tmm::ht<tmm::input<12, 12>, tmm::gaussians<6>, 4, 3, 8, 8>;

// The shallow (CP) model on the same images: 10 rank-one terms and one global pooling.
constexpr auto shallow = tmm::cp<tmm::input<12, 12>, tmm::gaussians<6>, 4, 10, 3>;

// Shapes are compile-time values.
static_assert(small.out.rows == 1 && small.out.cols == 1 && small.out.channels == 3);

void describe(const char* name, const tmm::plan& p) {
    std::printf("%s: %dx%d image, %d Gaussians on %dx%d patches, %dx%d positions\n", name, p.height,
                p.width, p.components, p.patch, p.patch, p.grid_rows, p.grid_cols);
    std::size_t weights = 0;
    for (const tmm::layer& l : p.layers) {
        const bool conv = l.kind == tmm::layer_kind::conv;
        std::printf("  %-4s %2dx%-2d x %3d -> %2dx%-2d x %3d", conv ? "conv" : "pool", l.in_rows,
                    l.in_cols, l.in_channels, l.out_rows, l.out_cols, l.out_channels);
        if (conv) std::printf("  weight sets %2d, weights %zu", l.weight_sets, l.weight_count());
        std::printf("\n");
        weights += l.weight_count();
    }
    std::printf("  %zu conv weights in all\n\n", weights);
}

int main() {
    describe("published HT", tmm::make_plan(digits));
    describe("small HT", tmm::make_plan(small));
    describe("small CP", tmm::make_plan(shallow));
}
