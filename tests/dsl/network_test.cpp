// The typed network: the shape each stage computes at compile time (network::out) and the
// plan it lowers to, for every kind of stage and weight sharing.
#define BOOST_TEST_MODULE dsl_network
#include <boost/test/unit_test.hpp>

#include <limits>
#include <tmm/dsl/network.hpp>
#include <vector>

namespace {

// 12x10 pixels in 2x2 patches: a 6x5 grid of positions.
constexpr auto represented = tmm::input<12, 10> | tmm::representation<tmm::gaussians<3>, 2>;

// ---- shapes, checked by the compiler ----

static_assert(represented.out.height == 12 && represented.out.width == 10);
static_assert(represented.out.image_channels == 1 && represented.out.pad == 0);
static_assert(represented.out.patch == 2);
static_assert(represented.out.rows == 6 && represented.out.cols == 5);
static_assert(represented.out.channels == 3);
static_assert(represented.out.represented && !represented.out.classified);

// Padding adds to both sides; channels of the image multiply nothing until the patch.
constexpr auto padded =
    tmm::input<28, 28, 2> | tmm::pad<2> | tmm::pad<1> | tmm::representation<tmm::gaussians<5>, 2>;
static_assert(padded.out.pad == 3 && padded.out.image_channels == 2);
static_assert(padded.out.rows == 17 && padded.out.cols == 17);

// conv changes channels only; pooling changes positions only.
constexpr auto convolved = represented | tmm::conv<7, tmm::tiled<3, 2>>;
static_assert(convolved.out.rows == 6 && convolved.out.cols == 5 && convolved.out.channels == 7);
constexpr auto pooled = convolved | tmm::product_pool<tmm::window<3, 2>, tmm::pad_missing>;
static_assert(pooled.out.rows == 2 && pooled.out.cols == 3 && pooled.out.channels == 7);
constexpr auto complete = pooled | tmm::conv<4> | tmm::product_pool<tmm::global> | tmm::classes<6>;
static_assert(complete.out.rows == 1 && complete.out.cols == 1);
static_assert(complete.out.channels == 6 && complete.out.classified);
static_assert(tmm::complete_network<decltype(complete)>);
static_assert(!tmm::complete_network<decltype(pooled)>);
static_assert(tmm::network_expression<decltype(pooled)>);
static_assert(!tmm::network_expression<int>);

// ---- lowering ----

// Conv layer 0 of a plan built on the 6x5 grid with the given sharing.
template <class Sharing>
tmm::layer first_conv() {
    const auto p = tmm::make_plan(represented | tmm::conv<7, Sharing> |
                                  tmm::product_pool<tmm::global> | tmm::classes<2>);
    return p.layers.at(0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(plan_records_the_image_and_representation) {
    const auto p =
        tmm::make_plan(padded | tmm::conv<4> | tmm::product_pool<tmm::global> | tmm::classes<3>);
    BOOST_TEST(p.height == 28);
    BOOST_TEST(p.width == 28);
    BOOST_TEST(p.image_channels == 2);
    BOOST_TEST(p.pad == 3);
    BOOST_TEST(p.patch == 2);
    BOOST_TEST(p.grid_rows == 17);
    BOOST_TEST(p.grid_cols == 17);
    BOOST_TEST(p.positions() == 289);
    BOOST_TEST(p.patch_size() == 8);  // s = p * p * C
    BOOST_TEST(p.pixels() == 28 * 28 * 2);
    BOOST_TEST((p.leaves == tmm::leaf_kind::gaussian));
    BOOST_TEST(p.components == 5);
    BOOST_TEST(p.classes == 3);
    BOOST_TEST(p.layers.size() == 3u);
}

BOOST_AUTO_TEST_CASE(categorical_leaves_record_their_symbols) {
    const auto p =
        tmm::make_plan(tmm::input<4, 4> | tmm::representation<tmm::categorical<3, 5>, 2> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>);
    BOOST_TEST((p.leaves == tmm::leaf_kind::categorical));
    BOOST_TEST(p.components == 3);
    BOOST_TEST(p.values == 5);
    // No conv between the leaves and the pooling: the class layer reads the M components.
    BOOST_TEST(p.layers.back().in_channels == 3);
}

BOOST_AUTO_TEST_CASE(unshared_weights_have_one_set_per_position) {
    const auto l = first_conv<tmm::unshared>();
    BOOST_TEST((l.kind == tmm::layer_kind::conv));
    BOOST_TEST(l.weight_sets == 30);
    BOOST_TEST(l.weight_count() == 30u * 7 * 3);
    std::vector<int> expected(30);
    for (int j = 0; j < 30; ++j) expected[j] = j;
    BOOST_TEST(l.set_of_position == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(shared_weights_have_one_set) {
    const auto l = first_conv<tmm::shared>();
    BOOST_TEST(l.weight_sets == 1);
    BOOST_TEST(l.weight_count() == 7u * 3);
    BOOST_TEST(l.set_of_position == std::vector<int>(30, 0), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(tiled_weights_are_chosen_by_position_modulo_the_tile) {
    // A 3x2 tile on the 6x5 grid: set (row % 3) * 2 + col % 2, six sets. Written out by hand.
    const auto l = first_conv<tmm::tiled<3, 2>>();
    BOOST_TEST(l.weight_sets == 6);
    BOOST_TEST(l.weight_count() == 6u * 7 * 3);
    const std::vector<int> expected = {
        0, 1, 0, 1, 0,  // row 0
        2, 3, 2, 3, 2,  // row 1
        4, 5, 4, 5, 4,  // row 2
        0, 1, 0, 1, 0,  // row 3
        2, 3, 2, 3, 2,  // row 4
        4, 5, 4, 5, 4,  // row 5
    };
    BOOST_TEST(l.set_of_position == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(square_tiles_follow_row_and_column_parity) {
    const auto l = first_conv<tmm::tiled<2>>();
    BOOST_TEST(l.weight_sets == 4);
    for (int r = 0; r < 6; ++r)
        for (int c = 0; c < 5; ++c)
            BOOST_TEST(l.set_of_position[r * 5 + c] == (r % 2) * 2 + c % 2,
                       "position (" << r << ", " << c << ")");
}

BOOST_AUTO_TEST_CASE(constant_weights_lower_without_parameters) {
    static constexpr tmm::weights<2, 3> mixing{{0.2, 0.3, 0.5, 1.0, 0.0, 0.0}};
    static_assert(mixing.non_negative() && mixing.rows_sum_to_one());
    const auto p = tmm::make_plan(represented | tmm::fixed_conv<mixing> |
                                  tmm::product_pool<tmm::global> | tmm::classes<2>);
    const auto& l = p.layers.at(0);
    BOOST_TEST(l.fixed);
    BOOST_TEST(l.in_channels == 3);
    BOOST_TEST(l.out_channels == 2);
    BOOST_TEST(l.weight_count() == 0u);
    const std::vector<double> expected = {0.2, 0.3, 0.5, 1.0, 0.0, 0.0};
    BOOST_TEST(l.fixed_weights == expected, boost::test_tools::per_element());
    // The class layer after it is learned and shared.
    BOOST_TEST(!p.layers.back().fixed);
    BOOST_TEST(p.layers.back().weight_sets == 1);
}

BOOST_AUTO_TEST_CASE(simplex_checks_of_constant_weights) {
    static_assert(tmm::weights<1, 3>{{1.0 / 3, 1.0 / 3, 1.0 / 3}}.rows_sum_to_one());
    static_assert(!tmm::weights<1, 2>{{0.5, 0.4}}.rows_sum_to_one());
    static_assert(!tmm::weights<2, 2>{{0.5, 0.5, 0.5, 0.6}}.rows_sum_to_one());
    static_assert(!tmm::weights<1, 2>{{1.5, -0.5}}.non_negative());
    static_assert(tmm::weights<1, 2>{{0.0, 1.0}}.non_negative());
    constexpr double nan = std::numeric_limits<double>::quiet_NaN();
    static_assert(!tmm::weights<1, 2>{{nan, 1.0}}.non_negative());
    static_assert(!tmm::weights<1, 2>{{nan, 1.0}}.rows_sum_to_one());
    constexpr tmm::weights<2, 2> rows{{0.5, 0.5, 0.25, 0.75}};
    BOOST_TEST(rows.at(1, 0) == 0.25);
    BOOST_TEST(rows.at(1, 1) == 0.75);
}

BOOST_AUTO_TEST_CASE(the_class_layer_is_a_shared_conv_to_k_outputs) {
    const auto p = tmm::make_plan(complete);
    const auto& l = p.layers.back();
    BOOST_TEST((l.kind == tmm::layer_kind::conv));
    BOOST_TEST(l.in_rows * l.in_cols == 1);
    BOOST_TEST(l.in_channels == 4);
    BOOST_TEST(l.out_channels == 6);
    BOOST_TEST(l.weight_sets == 1);
    BOOST_TEST(p.classes == 6);
}

BOOST_AUTO_TEST_CASE(layers_chain_shapes) {
    // Each layer reads what the one before it wrote.
    const auto p = tmm::make_plan(complete);
    BOOST_TEST(p.layers.front().in_rows == p.grid_rows);
    BOOST_TEST(p.layers.front().in_cols == p.grid_cols);
    BOOST_TEST(p.layers.front().in_channels == p.components);
    for (std::size_t l = 1; l < p.layers.size(); ++l) {
        BOOST_TEST(p.layers[l].in_rows == p.layers[l - 1].out_rows, "layer " << l);
        BOOST_TEST(p.layers[l].in_cols == p.layers[l - 1].out_cols, "layer " << l);
        BOOST_TEST(p.layers[l].in_channels == p.layers[l - 1].out_channels, "layer " << l);
    }
}
