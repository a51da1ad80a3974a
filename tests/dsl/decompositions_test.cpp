// The paper's models built by tmm::cp, tmm::ht and tmm::published_ht, checked against
// shapes and weight counts worked out by hand from the recipe.
#define BOOST_TEST_MODULE dsl_decompositions
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstddef>
#include <tmm/dsl/decompositions.hpp>
#include <vector>

namespace {

static_assert(tmm::published_ht.out.rows == 1 && tmm::published_ht.out.cols == 1);
static_assert(tmm::published_ht.out.channels == 10 && tmm::published_ht.out.classified);
static_assert(tmm::published_ht.out.pad == 2 && tmm::published_ht.out.patch == 2);

int padded_slots(const tmm::layer& l) {
    return int(std::count(l.members.begin(), l.members.end(), -1));
}

struct expected_layer {
    tmm::layer_kind kind;
    int in_rows, in_cols, out_rows, out_cols, in_channels, out_channels;
    int weight_sets;  // conv only
};

void check_layers(const tmm::plan& p, const std::vector<expected_layer>& expected) {
    BOOST_TEST_REQUIRE(p.layers.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto& l = p.layers[i];
        const auto& e = expected[i];
        BOOST_TEST_CONTEXT("layer " << i) {
            BOOST_TEST((l.kind == e.kind));
            BOOST_TEST(l.in_rows == e.in_rows);
            BOOST_TEST(l.in_cols == e.in_cols);
            BOOST_TEST(l.out_rows == e.out_rows);
            BOOST_TEST(l.out_cols == e.out_cols);
            BOOST_TEST(l.in_channels == e.in_channels);
            BOOST_TEST(l.out_channels == e.out_channels);
            if (e.kind == tmm::layer_kind::conv) BOOST_TEST(l.weight_sets == e.weight_sets);
        }
    }
}

constexpr auto conv = tmm::layer_kind::conv;
constexpr auto pool = tmm::layer_kind::pool;

}  // namespace

BOOST_AUTO_TEST_CASE(published_ht_follows_the_recipe) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    // 28x28 digits, 2 missing pixels on every side (32x32), 32 Gaussians on 2x2 patches.
    BOOST_TEST(p.height == 28);
    BOOST_TEST(p.width == 28);
    BOOST_TEST(p.image_channels == 1);
    BOOST_TEST(p.pad == 2);
    BOOST_TEST(p.patch == 2);
    BOOST_TEST(p.grid_rows == 16);
    BOOST_TEST(p.grid_cols == 16);
    BOOST_TEST(p.components == 32);
    BOOST_TEST(p.classes == 10);

    check_layers(p, {
                        {conv, 16, 16, 16, 16, 32, 64, 4},
                        {pool, 16, 16, 8, 8, 64, 64, 0},
                        {conv, 8, 8, 8, 8, 64, 128, 64},
                        {pool, 8, 8, 4, 4, 128, 128, 0},
                        {conv, 4, 4, 4, 4, 128, 256, 16},
                        {pool, 4, 4, 2, 2, 256, 256, 0},
                        {conv, 2, 2, 2, 2, 256, 512, 4},
                        {pool, 2, 2, 1, 1, 512, 512, 0},
                        {conv, 1, 1, 1, 1, 512, 10, 1},
                    });
    for (const auto& l : p.layers)
        if (l.kind == pool) {
            BOOST_TEST(l.window_size == 4);
            BOOST_TEST(padded_slots(l) == 0);
        }
}

BOOST_AUTO_TEST_CASE(published_ht_has_1586176_conv_weights) {
    // 4 x 64 x 32 + 64 x 128 x 64 + 16 x 256 x 128 + 4 x 512 x 256 + 10 x 512
    //   = 8,192 + 524,288 + 524,288 + 524,288 + 5,120 = 1,586,176 ("about 1.59 million").
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    std::vector<std::size_t> counts;
    std::size_t total = 0;
    for (const auto& l : p.layers)
        if (l.kind == conv) {
            counts.push_back(l.weight_count());
            total += l.weight_count();
        }
    const std::vector<std::size_t> expected = {8192, 524288, 524288, 524288, 5120};
    BOOST_TEST(counts == expected, boost::test_tools::per_element());
    BOOST_TEST(total == 1586176u);
}

BOOST_AUTO_TEST_CASE(published_ht_first_layer_is_tiled_by_parity) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    const tmm::layer& first = p.layers.at(0);
    BOOST_TEST_REQUIRE(first.set_of_position.size() == 256u);
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c)
            BOOST_TEST(first.set_of_position[r * 16 + c] == (r % 2) * 2 + c % 2,
                       "position (" << r << ", " << c << ")");
}

BOOST_AUTO_TEST_CASE(published_ht_pools_2x2_squares) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    const tmm::layer& l = p.layers.at(1);
    // Window (R, C) of the 16x16 grid holds (2R, 2C), (2R, 2C+1), (2R+1, 2C), (2R+1, 2C+1).
    for (int w = 0; w < 64; ++w) {
        const int r = 2 * (w / 8), c = 2 * (w % 8);
        const std::vector<int> got(l.members.begin() + 4 * w, l.members.begin() + 4 * w + 4);
        const std::vector<int> want = {r * 16 + c, r * 16 + c + 1, (r + 1) * 16 + c,
                                       (r + 1) * 16 + c + 1};
        BOOST_TEST(got == want, boost::test_tools::per_element());
    }
}

BOOST_AUTO_TEST_CASE(published_ht_reads_padding_as_missing_pixels) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    // Position (0, 0) covers padded rows and columns -2, -1; position (1, 1) starts at pixel
    // (0, 0); position (15, 15) covers padded rows and columns 28, 29.
    for (int k = 0; k < 4; ++k) BOOST_TEST(p.pixel_of(0, k) == -1);
    BOOST_TEST(p.pixel_of(1 * 16 + 1, 0) == 0);
    BOOST_TEST(p.pixel_of(1 * 16 + 1, 1) == 1);
    BOOST_TEST(p.pixel_of(1 * 16 + 1, 2) == 28);
    BOOST_TEST(p.pixel_of(1 * 16 + 1, 3) == 29);
    for (int k = 0; k < 4; ++k) BOOST_TEST(p.pixel_of(15 * 16 + 15, k) == -1);
}

BOOST_AUTO_TEST_CASE(ht_on_28x28_pads_the_7x7_level) {
    // 2x2 patches of 28x28: 14x14 -> 7x7 -> 4x4 (padded) -> 2x2 -> 1x1.
    constexpr auto net = tmm::ht<tmm::input<28, 28>, tmm::gaussians<8>, 2, 10, 16, 24, 32, 40>;
    static_assert(net.out.rows == 1 && net.out.cols == 1 && net.out.channels == 10);
    const tmm::plan p = tmm::make_plan(net);
    BOOST_TEST(p.pad == 0);
    BOOST_TEST(p.grid_rows == 14);
    BOOST_TEST(p.grid_cols == 14);
    check_layers(p, {
                        {conv, 14, 14, 14, 14, 8, 16, 196},
                        {pool, 14, 14, 7, 7, 16, 16, 0},
                        {conv, 7, 7, 7, 7, 16, 24, 49},
                        {pool, 7, 7, 4, 4, 24, 24, 0},
                        {conv, 4, 4, 4, 4, 24, 32, 16},
                        {pool, 4, 4, 2, 2, 32, 32, 0},
                        {conv, 2, 2, 2, 2, 32, 40, 4},
                        {pool, 2, 2, 1, 1, 40, 40, 0},
                        {conv, 1, 1, 1, 1, 40, 10, 1},
                    });
    // 7x7 in 2x2 windows: 16 windows x 4 slots = 64 slots for 49 positions, so 15 padded: row 7
    // in the 4 bottom windows (8 slots), column 7 in the 4 right windows (8), the corner once.
    BOOST_TEST(padded_slots(p.layers[1]) == 0);
    BOOST_TEST(padded_slots(p.layers[3]) == 15);
    BOOST_TEST(padded_slots(p.layers[5]) == 0);
    BOOST_TEST(padded_slots(p.layers[7]) == 0);
    const std::vector<int> corner(p.layers[3].members.end() - 4, p.layers[3].members.end());
    const std::vector<int> expected = {48, -1, -1, -1};
    BOOST_TEST(corner == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(cp_is_one_conv_a_global_pool_and_the_classes) {
    // 16x16 image, pad 2 -> 20x20, 4x4 patches -> 5x5 grid; Z = 9 terms; K = 3.
    constexpr auto net = tmm::cp<tmm::input<16, 16> | tmm::pad<2>, tmm::gaussians<6>, 4, 9, 3>;
    static_assert(net.out.classified && net.out.channels == 3);
    const tmm::plan p = tmm::make_plan(net);
    BOOST_TEST(p.grid_rows == 5);
    BOOST_TEST(p.grid_cols == 5);
    BOOST_TEST(p.components == 6);
    check_layers(p, {
                        {conv, 5, 5, 5, 5, 6, 9, 25},
                        {pool, 5, 5, 1, 1, 9, 9, 0},
                        {conv, 1, 1, 1, 1, 9, 3, 1},
                    });
    BOOST_TEST(p.layers[1].window_size == 25);
    BOOST_TEST(padded_slots(p.layers[1]) == 0);
    BOOST_TEST(p.layers[0].weight_count() + p.layers[2].weight_count() == 25u * 9 * 6 + 3 * 9);
}

BOOST_AUTO_TEST_CASE(published_cp_follows_the_recipe) {
    // 800 Gaussians on 4x4 patches of the padded 32x32 image: an 8x8 grid.
    const tmm::plan p = tmm::make_plan(tmm::published_cp<>);
    BOOST_TEST(p.pad == 2);
    BOOST_TEST(p.patch == 4);
    BOOST_TEST(p.grid_rows == 8);
    BOOST_TEST(p.grid_cols == 8);
    BOOST_TEST(p.components == 800);
    check_layers(p, {
                        {conv, 8, 8, 8, 8, 800, 10, 64},
                        {pool, 8, 8, 1, 1, 10, 10, 0},
                        {conv, 1, 1, 1, 1, 10, 10, 1},
                    });
}
