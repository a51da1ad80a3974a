// The plans the DSL lowers to, against shapes and counts derived by hand: the published HT
// model of recipe.md (1,586,176 conv weights), the published CP model, pooling windows with
// padding and a custom geometry, tiled weight sets, and the pixels of padded patches. The
// brute-force oracles walk these plans, so their lowering is checked here on its own.
#define BOOST_TEST_MODULE reference_plans
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;

std::size_t conv_weight_total(const tmm::plan& p) {
    std::size_t total = 0;
    for (const tmm::layer& l : p.layers) total += l.weight_count();
    return total;
}

}  // namespace

// recipe.md: 28x28 padded by 2 (32x32), 32 Gaussians on 2x2 patches (16x16 grid), conv 64
// tiled 2x2, 128, 256, 512 unshared, each with 2x2 pooling, 10 classes. Conv weights:
//   4 sets x 64 x 32 = 8,192; 8x8 positions x 128 x 64 = 524,288;
//   4x4 x 256 x 128 = 524,288; 2x2 x 512 x 256 = 524,288; 10 x 512 = 5,120;
//   total 1,586,176.
BOOST_AUTO_TEST_CASE(published_ht) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    BOOST_TEST(p.height == 28);
    BOOST_TEST(p.width == 28);
    BOOST_TEST(p.image_channels == 1);
    BOOST_TEST(p.pad == 2);
    BOOST_TEST(p.patch == 2);
    BOOST_TEST(p.grid_rows == 16);
    BOOST_TEST(p.grid_cols == 16);
    BOOST_TEST((p.leaves == tmm::leaf_kind::gaussian));
    BOOST_TEST(p.components == 32);
    BOOST_TEST(p.classes == 10);
    BOOST_TEST_REQUIRE(p.layers.size() == 9u);

    const int grid[] = {16, 8, 4, 2, 1};
    const int channels[] = {32, 64, 128, 256, 512, 10};
    const int sets[] = {4, 64, 16, 4, 1};
    const std::size_t weights[] = {8192, 524288, 524288, 524288, 5120};
    for (int level = 0; level < 5; ++level) {
        const tmm::layer& conv = p.layers[2 * level];
        BOOST_TEST((conv.kind == tmm::layer_kind::conv), "level " << level);
        BOOST_TEST(conv.in_rows == grid[level]);
        BOOST_TEST(conv.out_cols == grid[level]);
        BOOST_TEST(conv.in_channels == channels[level]);
        BOOST_TEST(conv.out_channels == channels[level + 1]);
        BOOST_TEST(conv.weight_sets == sets[level]);
        BOOST_TEST(conv.weight_count() == weights[level]);
        if (level == 4) break;
        const tmm::layer& pool = p.layers[2 * level + 1];
        BOOST_TEST((pool.kind == tmm::layer_kind::pool), "level " << level);
        BOOST_TEST(pool.out_rows == grid[level + 1]);
        BOOST_TEST(pool.out_cols == grid[level + 1]);
        BOOST_TEST(pool.window_size == 4);
    }
    BOOST_TEST(conv_weight_total(p) == 1586176u);

    // The first layer's weight set is chosen by row and column parity.
    const tmm::layer& first = p.layers[0];
    for (int r = 0; r < 16; ++r)
        for (int c = 0; c < 16; ++c)
            BOOST_TEST(first.set_of_position[r * 16 + c] == (r % 2) * 2 + c % 2);

    // Parameters: 32 x 4 means and log-precisions, the conv weights, 10 log-priors.
    const auto theta = tmm::zero_parameters<double>(p);
    BOOST_TEST(theta.mean.size() == 128u);
    BOOST_TEST(theta.size() == 1586176u + 256u);
    BOOST_TEST(theta.log_prior.size() == 10u);
}

// recipe.md: 800 Gaussians on 4x4 patches of the padded 32x32 image (8x8 grid), one
// unshared conv to Z = 10, global pooling, 10 classes: 64 x 10 x 800 + 10 x 10 weights.
BOOST_AUTO_TEST_CASE(published_cp) {
    const tmm::plan p = tmm::make_plan(tmm::published_cp<10>);
    BOOST_TEST(p.pad == 2);
    BOOST_TEST(p.patch == 4);
    BOOST_TEST(p.grid_rows == 8);
    BOOST_TEST(p.grid_cols == 8);
    BOOST_TEST(p.components == 800);
    BOOST_TEST_REQUIRE(p.layers.size() == 3u);
    BOOST_TEST(p.layers[0].weight_count() == 512000u);
    BOOST_TEST(p.layers[1].window_size == 64);
    BOOST_TEST(p.layers[1].out_positions() == 1);
    BOOST_TEST(p.layers[2].weight_count() == 100u);
    BOOST_TEST(conv_weight_total(p) == 512100u);
}

// 2x2 windows on a 3x3 grid with padding: the windows (row-major) hold {0, 1, 3, 4},
// {2, pad, 5, pad}, {6, 7, pad, pad}, {8, pad, pad, pad}.
BOOST_AUTO_TEST_CASE(padded_windows) {
    constexpr auto net = tmm::input<3, 3> | tmm::representation<tmm::gaussians<2>, 1> |
                         tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> |
                         tmm::product_pool<tmm::window<2, 2>> | tmm::classes<2>;
    const tmm::plan p = tmm::make_plan(net);
    BOOST_TEST_REQUIRE(p.layers.size() == 3u);
    const std::vector<int> members = {0, 1, 3, 4, 2, -1, 5, -1, 6, 7, -1, -1, 8, -1, -1, -1};
    BOOST_TEST(p.layers[0].members == members, boost::test_tools::per_element());
    BOOST_TEST(p.layers[0].out_rows == 2);
    BOOST_TEST(p.layers[0].out_cols == 2);
    BOOST_TEST(p.layers[1].members == std::vector<int>({0, 1, 2, 3}),
               boost::test_tools::per_element());
}

// The mirror-image geometry on a 2x4 grid: windows {0, 3}, {1, 2}, {4, 7}, {5, 6}.
BOOST_AUTO_TEST_CASE(custom_geometry_windows) {
    constexpr auto net = tmm::input<2, 4> | tmm::representation<tmm::gaussians<2>, 1> |
                         tmm::product_pool<mirror_columns> | tmm::product_pool<tmm::global> |
                         tmm::classes<2>;
    const tmm::plan p = tmm::make_plan(net);
    BOOST_TEST_REQUIRE(p.layers.size() == 3u);
    BOOST_TEST(p.layers[0].members == std::vector<int>({0, 3, 1, 2, 4, 7, 5, 6}),
               boost::test_tools::per_element());
    BOOST_TEST(p.layers[0].out_rows == 2);
    BOOST_TEST(p.layers[0].out_cols == 2);
}

// Tiled 2x2 and 1x2 weight sets on a 2x4 grid, shared and unshared.
BOOST_AUTO_TEST_CASE(weight_sets) {
    constexpr auto net = tmm::input<2, 4> | tmm::representation<tmm::gaussians<2>, 1> |
                         tmm::conv<3, tmm::tiled<2, 2>> | tmm::conv<3, tmm::tiled<1, 2>> |
                         tmm::conv<2, tmm::shared> | tmm::conv<2> | tmm::product_pool<tmm::global> |
                         tmm::classes<2>;
    const tmm::plan p = tmm::make_plan(net);
    BOOST_TEST_REQUIRE(p.layers.size() == 6u);
    BOOST_TEST(p.layers[0].weight_sets == 4);
    BOOST_TEST(p.layers[0].set_of_position == std::vector<int>({0, 1, 0, 1, 2, 3, 2, 3}),
               boost::test_tools::per_element());
    BOOST_TEST(p.layers[1].weight_sets == 2);
    BOOST_TEST(p.layers[1].set_of_position == std::vector<int>({0, 1, 0, 1, 0, 1, 0, 1}),
               boost::test_tools::per_element());
    BOOST_TEST(p.layers[2].weight_sets == 1);
    BOOST_TEST(p.layers[2].set_of_position == std::vector<int>(8, 0),
               boost::test_tools::per_element());
    BOOST_TEST(p.layers[3].weight_sets == 8);
    BOOST_TEST(p.layers[3].set_of_position == std::vector<int>({0, 1, 2, 3, 4, 5, 6, 7}),
               boost::test_tools::per_element());
    BOOST_TEST(p.layers[0].weight_count() == 4u * 3 * 2);
    BOOST_TEST(p.layers[3].weight_count() == 8u * 2 * 2);
    BOOST_TEST(p.layers[5].weight_count() == 2u * 2);
}

// A 4x2 image of 2 channels padded by 1 (6x4) in 2x2 patches: a 3x2 grid of 8 coordinates
// (row in patch, column in patch, channel). Patch 0 covers padded rows/cols -1..0, so only its
// last pixel, (0, 0), is real: coordinates 6, 7 are pixel values 0, 1. Patch 5 covers image
// rows 3..4 and cols 1..2: only (3, 1) is real, values (3 * 2 + 1) * 2 + {0, 1} = 14, 15.
BOOST_AUTO_TEST_CASE(pixels_of_padded_patches) {
    constexpr auto net = tmm::input<4, 2, 2> | tmm::pad<1> |
                         tmm::representation<tmm::gaussians<2>, 2> |
                         tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> |
                         tmm::product_pool<tmm::window<2, 1>> | tmm::classes<2>;
    const tmm::plan p = tmm::make_plan(net);
    BOOST_TEST(p.grid_rows == 3);
    BOOST_TEST(p.grid_cols == 2);
    BOOST_TEST(p.patch_size() == 8);
    BOOST_TEST(p.pixels() == 16);
    const std::vector<int> first = {-1, -1, -1, -1, -1, -1, 0, 1};
    const std::vector<int> last = {14, 15, -1, -1, -1, -1, -1, -1};
    for (int k = 0; k < 8; ++k) {
        BOOST_TEST(p.pixel_of(0, k) == first[k], "k " << k);
        BOOST_TEST(p.pixel_of(5, k) == last[k], "k " << k);
    }
    // Every real pixel belongs to exactly one coordinate of one patch.
    std::vector<int> seen(p.pixels(), 0);
    for (int i = 0; i < p.positions(); ++i)
        for (int k = 0; k < p.patch_size(); ++k) {
            BOOST_TEST(p.pixel_of(i, k) == oracle::pixel(p, i, k));
            if (p.pixel_of(i, k) >= 0) ++seen[p.pixel_of(i, k)];
        }
    BOOST_TEST(seen == std::vector<int>(p.pixels(), 1), boost::test_tools::per_element());
}

// tmm::model holds the plan and zero parameters and forwards to the backend it is given.
BOOST_AUTO_TEST_CASE(model_forwards_to_the_backend) {
    constexpr auto net = tmm::cp<tmm::input<2, 2>, tmm::gaussians<2>, 1, 2, 3>;
    tmm::model<std::remove_cvref_t<decltype(net)>, double> m;
    BOOST_TEST(m.structure().positions() == 4);
    BOOST_TEST(m.params().size() == tmm::zero_parameters<double>(m.structure()).size());
    engine rng(601);
    m.params() = random_parameters(m.structure(), rng);
    const auto values = random_images(m.structure(), 2, rng);
    const auto x = batch(values, {}, 2);
    const auto a = prior_tensors(m.structure(), m.params());
    const auto want = brute_force_log_likelihoods(m.structure(), m.params(), a, values, {}, 2);
    const auto got = m.log_likelihoods(x, tmm::backends::reference{});
    for (std::size_t i = 0; i < got.size(); ++i) BOOST_TEST(close(got[i], want[i], 1e-9));
}

// Constant weights edited by hand (a plan written by hand or read from a file never passes the
// DSL's compile-time checks) must still be probabilities with rows summing to 1: a negative,
// NaN or too large weight, or a row that sums to 5.2, is named by plan_problem and refused by
// the backends before any arithmetic.
BOOST_AUTO_TEST_CASE(hand_edited_constant_weights_are_refused) {
    static constexpr tmm::weights<2, 3> mixing{{0.2, 0.3, 0.5, 1.0, 0.0, 0.0}};
    const tmm::plan good =
        tmm::make_plan(tmm::input<4, 4> | tmm::representation<tmm::gaussians<3>, 2> |
                       tmm::fixed_conv<mixing> | tmm::product_pool<tmm::global> | tmm::classes<2>);
    BOOST_TEST(tmm::plan_problem(good).empty());
    const auto theta = tmm::zero_parameters<double>(good);
    const std::vector<double> values(good.pixels(), 0.1);
    struct edit {
        std::size_t at;
        double value;
        std::string says;
    };
    const edit edits[] = {
        {1, -0.3, "constant weight [0][1] is -0.3"},
        {1, std::numeric_limits<double>::quiet_NaN(), "constant weight [0][1] is nan"},
        {3, 1.5, "constant weight [1][0] is 1.5"},
        {4, 0.7, "the constant weights of output 1 sum to 1.7"},
    };
    for (const edit& e : edits) {
        tmm::plan bad = good;
        bad.layers[0].fixed_weights[e.at] = e.value;
        const std::string problem = tmm::plan_problem(bad);
        BOOST_TEST(problem.find(e.says) != std::string::npos, problem);
        BOOST_CHECK_THROW(tmm::backends::reference::log_likelihoods(
                              bad, theta, tmm::observations<double>(1, values)),
                          tmm::input_error);
    }
}
