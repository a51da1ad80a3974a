// Pooling geometries: rectangular windows with and without padding, the global pool, and a
// geometry written by the user (mirror-image column pairs), as windows and as lowered plans.
#define BOOST_TEST_MODULE dsl_pooling
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <tmm/dsl/network.hpp>
#include <tmm/dsl/pooling.hpp>
#include <vector>

namespace {

// Each column c is pooled with its mirror image Cols - 1 - c in the same row; on an odd grid
// the middle column is its own mirror and pools alone (its second slot padded with -1).
struct mirror_columns {
    template <int Rows, int Cols>
    static constexpr auto windows() {
        tmm::window_list<Rows, (Cols + 1) / 2, 2> list;
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < (Cols + 1) / 2; ++c) {
                const int mirror = Cols - 1 - c;
                list.at(r, c) = {r * Cols + c, mirror == c ? -1 : r * Cols + mirror};
            }
        return list;
    }
};

// A grid of Rows x Cols positions with C channels, ready to pool.
template <int Rows, int Cols, int C = 2>
constexpr auto grid = tmm::input<Rows, Cols> | tmm::representation<tmm::gaussians<C>, 1>;

// The pooling layer of a plan that pools `grid` once with `pool`, then globally.
template <int Rows, int Cols, class Pool>
tmm::layer pool_layer(Pool pool) {
    return tmm::make_plan(grid<Rows, Cols> | pool | tmm::product_pool<tmm::global> |
                          tmm::classes<2>)
        .layers.at(0);
}

int padded_slots(const tmm::layer& l) {
    return int(std::count(l.members.begin(), l.members.end(), -1));
}

// Every position of the input grid appears exactly once among the members.
bool is_partition(const tmm::layer& l) {
    std::vector<int> seen(l.in_positions(), 0);
    for (int j : l.members) {
        if (j == -1) continue;
        if (j < 0 || j >= l.in_positions()) return false;
        ++seen[j];
    }
    return std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; });
}

// ---- windows and coverage, computed by the compiler ----

constexpr auto two_by_three = tmm::window<2, 3>::windows<5, 7>();
static_assert(two_by_three.out_rows == 3 && two_by_three.out_cols == 3 && two_by_three.size == 6);
// the bottom-right window holds one real position, (4, 6) = 34, and five padded slots
static_assert(two_by_three.at(2, 2)[0] == 34 && two_by_three.at(2, 2)[1] == -1);
static_assert(two_by_three.at(2, 2)[3] == -1 && two_by_three.at(2, 2)[5] == -1);

constexpr auto mirrored = mirror_columns::windows<2, 5>();
static_assert(mirrored.out_rows == 2 && mirrored.out_cols == 3);
static_assert(mirrored.at(1, 0)[0] == 5 && mirrored.at(1, 0)[1] == 9);
static_assert(mirrored.at(1, 2)[0] == 7 && mirrored.at(1, 2)[1] == -1);

constexpr tmm::coverage mirror_cover = tmm::cover<2, 5>(mirrored);
static_assert(!mirror_cover.outside && !mirror_cover.twice && !mirror_cover.none &&
              !mirror_cover.empty_window);

// What cover() reports for lists that are not partitions of a 1x3 grid.
constexpr tmm::window_list<1, 2, 2> make_list(int a, int b, int c, int d) {
    tmm::window_list<1, 2, 2> list;
    list.at(0, 0) = {a, b};
    list.at(0, 1) = {c, d};
    return list;
}
static_assert(tmm::cover<1, 3>(make_list(0, 1, 2, -1)).twice == false);
static_assert(tmm::cover<1, 3>(make_list(0, 1, 1, 2)).twice);
static_assert(tmm::cover<1, 3>(make_list(2, 2, 0, 1)).twice);  // twice in one window
static_assert(tmm::cover<1, 3>(make_list(0, 1, -1, -1)).none);
static_assert(tmm::cover<1, 3>(make_list(0, 1, -1, -1)).empty_window);
static_assert(tmm::cover<1, 3>(make_list(0, 1, 2, 3)).outside);
static_assert(tmm::cover<1, 3>(make_list(0, 1, 2, -2)).outside);

}  // namespace

BOOST_AUTO_TEST_CASE(windows_that_tile_have_no_padded_slot) {
    const auto l = pool_layer<4, 6>(tmm::product_pool<tmm::window<2, 3>>);
    BOOST_TEST((l.kind == tmm::layer_kind::pool));
    BOOST_TEST(l.out_rows == 2);
    BOOST_TEST(l.out_cols == 2);
    BOOST_TEST(l.window_size == 6);
    BOOST_TEST(l.in_channels == 2);
    BOOST_TEST(l.out_channels == 2);
    BOOST_TEST(l.weight_count() == 0u);
    // Window (1, 0): rows 2..3, columns 0..2 of the 6-wide grid.
    const std::vector<int> window_1_0(l.members.begin() + 2 * 6, l.members.begin() + 3 * 6);
    const std::vector<int> expected = {12, 13, 14, 18, 19, 20};
    BOOST_TEST(window_1_0 == expected, boost::test_tools::per_element());
    BOOST_TEST(padded_slots(l) == 0);
    BOOST_TEST(is_partition(l));
}

BOOST_AUTO_TEST_CASE(rectangular_windows_pad_odd_grids_with_missing_positions) {
    // 2x3 windows on a 5x7 grid: 3x3 windows of 6 slots = 54 slots for 35 positions, so 19
    // padded: the bottom window row has 3 windows x 3 empty slots (row 5), the right window
    // column 3 windows x 2 empty slots (columns 7, 8), counting the corner's 2 slots twice.
    const auto l = pool_layer<5, 7>(tmm::product_pool<tmm::window<2, 3>, tmm::pad_missing>);
    BOOST_TEST(l.out_rows == 3);
    BOOST_TEST(l.out_cols == 3);
    BOOST_TEST(l.window_size == 6);
    BOOST_TEST(l.members.size() == 54u);
    BOOST_TEST(padded_slots(l) == 3 * 3 + 3 * 2 * 2 - 2);
    BOOST_TEST(is_partition(l));

    const std::vector<int> expected = {
        0,  1,  2,  7,  8,  9,   // window (0, 0)
        3,  4,  5,  10, 11, 12,  // window (0, 1)
        6,  -1, -1, 13, -1, -1,  // window (0, 2)
        14, 15, 16, 21, 22, 23,  // window (1, 0)
        17, 18, 19, 24, 25, 26,  // window (1, 1)
        20, -1, -1, 27, -1, -1,  // window (1, 2)
        28, 29, 30, -1, -1, -1,  // window (2, 0)
        31, 32, 33, -1, -1, -1,  // window (2, 1)
        34, -1, -1, -1, -1, -1,  // window (2, 2)
    };
    BOOST_TEST(l.members == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(padding_a_grid_that_tiles_changes_nothing) {
    const auto plain = pool_layer<4, 6>(tmm::product_pool<tmm::window<2, 3>>);
    const auto padded = pool_layer<4, 6>(tmm::product_pool<tmm::window<2, 3>, tmm::pad_missing>);
    BOOST_TEST(plain.members == padded.members, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(the_global_pool_holds_every_position) {
    const auto l = pool_layer<3, 4>(tmm::product_pool<tmm::global>);
    BOOST_TEST(l.out_rows == 1);
    BOOST_TEST(l.out_cols == 1);
    BOOST_TEST(l.window_size == 12);
    std::vector<int> expected(12);
    for (int j = 0; j < 12; ++j) expected[j] = j;
    BOOST_TEST(l.members == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(mirror_image_columns_pair_up) {
    const auto l = pool_layer<2, 4>(tmm::product_pool<mirror_columns>);
    BOOST_TEST(l.out_rows == 2);
    BOOST_TEST(l.out_cols == 2);
    BOOST_TEST(l.window_size == 2);
    const std::vector<int> expected = {0, 3, 1, 2, 4, 7, 5, 6};
    BOOST_TEST(l.members == expected, boost::test_tools::per_element());
    BOOST_TEST(is_partition(l));
}

BOOST_AUTO_TEST_CASE(mirror_image_columns_on_an_odd_grid_pad_the_middle) {
    const auto l = pool_layer<1, 5>(tmm::product_pool<mirror_columns>);
    BOOST_TEST(l.out_cols == 3);
    const std::vector<int> expected = {0, 4, 1, 3, 2, -1};
    BOOST_TEST(l.members == expected, boost::test_tools::per_element());
    BOOST_TEST(is_partition(l));
}

BOOST_AUTO_TEST_CASE(a_deep_network_over_a_custom_geometry) {
    // 4x6 -> mirror -> 4x3 -> mirror -> 4x2 -> mirror -> 4x1 -> 4x1 windows -> 1x1.
    constexpr auto net = grid<4, 6, 3> | tmm::conv<4> | tmm::product_pool<mirror_columns> |
                         tmm::conv<4> | tmm::product_pool<mirror_columns> | tmm::conv<4> |
                         tmm::product_pool<mirror_columns> | tmm::conv<4> |
                         tmm::product_pool<tmm::window<4, 1>> | tmm::classes<2>;
    static_assert(net.out.rows == 1 && net.out.cols == 1 && net.out.classified);

    const auto p = tmm::make_plan(net);
    std::vector<int> pooled_cols;
    for (const auto& l : p.layers)
        if (l.kind == tmm::layer_kind::pool) {
            pooled_cols.push_back(l.out_cols);
            BOOST_TEST(is_partition(l));
        }
    const std::vector<int> expected = {3, 2, 1, 1};
    BOOST_TEST(pooled_cols == expected, boost::test_tools::per_element());
    // Only the second mirror step (3 columns) pads: one middle slot per row.
    BOOST_TEST(padded_slots(p.layers[3]) == 4);
}
