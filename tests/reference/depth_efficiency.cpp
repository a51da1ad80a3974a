// Depth efficiency (design.md §6): the matricization of an HT prior tensor, odd modes x even
// modes, has rank r^(N/2) with r = min(r_0, M) for random simplex weights; a CP prior tensor
// with Z terms has rank min(Z, M^(N/2)).
//
// The tensor is read from the backend itself: with one-hot categorical leaves
// (f_d(x) = [x == d], V = M, patch 1) eq. 1 gives P(X = x | y) = A^y[x], so evaluating every
// image x in [M]^N gives A^y entry by entry; it is checked against oracle::prior_tensors.
//
// Modes are the positions in row-major order, numbered 1..N; odd modes (1, 3, ..) index rows,
// even modes (2, 4, ..) columns. The first pooling is tmm::window<1, 2> on a grid with an even
// number of columns, whose windows are exactly the mode pairs (1, 2), (3, 4), ..: the leaves
// of the paper's binary tree pair an odd mode with the next even mode, as the theorem needs.
#define BOOST_TEST_MODULE reference_depth_efficiency
#include <boost/test/unit_test.hpp>

#include <Eigen/QR>
#include <cstdint>
#include <vector>

#include "oracle.hpp"

namespace {

using namespace oracle;
using tmm::backends::reference;

// Random simplex weights; leaves one-hot: logit 0 for the component's own symbol, -inf else.
// With `peaked`, row g of the first conv layer is drawn near vertex g mod M of the simplex
// (theta = 3 [a == g mod M] + normal(0, 0.5)): still a random choice, for which the theorem
// holds almost surely, but one whose matricization is well enough conditioned for its
// numerical rank to show (rows all near the centre of the simplex make every pair matrix
// nearly rank one, and their Kronecker products fall into rounding noise).
tmm::parameters<double> one_hot_model(const tmm::plan& p, std::uint64_t seed, bool peaked) {
    engine rng(seed);
    auto theta = random_parameters(p, rng);
    const int m = p.components;
    for (int d = 0; d < m; ++d)
        for (int v = 0; v < m; ++v) theta.logits[d * m + v] = v == d ? 0.0 : -infinity;
    if (peaked) {
        const int in = p.layers[0].in_channels, out = p.layers[0].out_channels;
        auto& first = theta.theta[0];
        for (std::size_t row = 0; row * in < first.size(); ++row)
            for (int a = 0; a < in; ++a)
                first[row * in + a] = normal(rng, 0.5) + (a == int(row % out) % m ? 3.0 : 0.0);
    }
    return theta;
}

// A^y for every class, evaluated by the backend on all M^N images.
std::vector<std::vector<double>> backend_prior_tensors(const tmm::plan& p,
                                                       const tmm::parameters<double>& theta) {
    const assignments d(p.positions(), p.components);
    std::vector<double> images(d.count * p.positions());
    for (std::size_t index = 0; index < d.count; ++index)
        for (int i = 0; i < p.positions(); ++i)
            images[index * p.positions() + i] = d.component(index, i);
    const auto out = reference::log_likelihoods(p, theta, batch(images, {}, d.count));
    std::vector<std::vector<double>> a(p.classes, std::vector<double>(d.count));
    for (std::size_t index = 0; index < d.count; ++index)
        for (int y = 0; y < p.classes; ++y) a[y][index] = std::exp(out[index * p.classes + y]);
    return a;
}

// Rows: the odd modes (positions 0, 2, ..); columns: the even modes (positions 1, 3, ..).
Eigen::MatrixXd matricize(const std::vector<double>& a, int n, int m) {
    const assignments d(n, m);
    const int side = int(power(m, n / 2));
    Eigen::MatrixXd matrix(side, side);
    for (std::size_t index = 0; index < d.count; ++index) {
        int row = 0, col = 0;
        for (int t = 0; t < n / 2; ++t) {
            row = row * m + d.component(index, 2 * t);
            col = col * m + d.component(index, 2 * t + 1);
        }
        matrix(row, col) = a[index];
    }
    return matrix;
}

// Numerical rank with a checked gap, from a column-pivoted QR (rank revealing: |R_ii| falls
// with i and tracks the singular values; an SVD would do the same at ten times the compile
// time): count the |R_ii| above 1e-10 of the largest; the last one counted must be above
// 1e-8 of it and the next one below 1e-13 (the rounding noise of entries read as
// exp(log A) is about 2e-15).
int rank(const Eigen::MatrixXd& matrix) {
    const Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(matrix);
    const Eigen::VectorXd s = qr.matrixQR().diagonal().cwiseAbs();
    int r = 0;
    while (r < s.size() && s(r) > 1e-10 * s(0)) ++r;
    BOOST_TEST(s(r - 1) > 1e-8 * s(0),
               "|R_ii| " << r - 1 << " is " << s(r - 1) / s(0) << " of the largest: no clear rank");
    if (r < s.size())
        BOOST_TEST(s(r) < 1e-13 * s(0),
                   "|R_ii| " << r << " is " << s(r) / s(0) << " of the largest: no clear rank");
    return r;
}

// The backend's prior tensors match the expansion, then every class has the expected rank.
void check_rank(const tmm::plan& p, std::uint64_t seed, int expected, bool peaked) {
    BOOST_TEST_REQUIRE(p.patch == 1);
    BOOST_TEST_REQUIRE(p.grid_cols % 2 == 0);
    const auto theta = one_hot_model(p, seed, peaked);
    const auto a = backend_prior_tensors(p, theta);
    const auto expanded = prior_tensors(p, theta);
    for (int y = 0; y < p.classes; ++y) {
        double worst = 0;
        for (std::size_t i = 0; i < a[y].size(); ++i)
            worst = std::max(worst, std::abs(a[y][i] - expanded[y][i]) / expanded[y][i]);
        BOOST_TEST(worst < 1e-12, "class " << y << ": backend and expansion differ by " << worst);
        BOOST_TEST(rank(matricize(a[y], p.positions(), p.components)) == expected, "class " << y);
    }
}

// HT on a 2x4 grid (N = 8), M = 3 components, r_0 first-layer channels; the pairs (1, 2),
// (3, 4), (5, 6), (7, 8) pooled first, then pairs of pairs, then the two rows.
template <int R0>
constexpr auto ht_8 =
    tmm::input<2, 4> | tmm::representation<tmm::categorical<3, 3>, 1> | tmm::conv<R0> |
    tmm::product_pool<tmm::window<1, 2>> | tmm::conv<2> | tmm::product_pool<tmm::window<1, 2>> |
    tmm::conv<2> | tmm::product_pool<tmm::window<2, 1>> | tmm::classes<2>;

// HT on a 4x4 grid (N = 16), M = 2.
template <int R0>
constexpr auto ht_16 =
    tmm::input<4, 4> | tmm::representation<tmm::categorical<2, 2>, 1> | tmm::conv<R0> |
    tmm::product_pool<tmm::window<1, 2>> | tmm::conv<2> | tmm::product_pool<tmm::window<2, 2>> |
    tmm::conv<2> | tmm::product_pool<tmm::window<2, 1>> | tmm::classes<2>;

template <int Z>
constexpr auto cp_8 = tmm::cp<tmm::input<2, 4>, tmm::categorical<3, 3>, 1, Z, 2>;
template <int Z>
constexpr auto cp_16 = tmm::cp<tmm::input<4, 4>, tmm::categorical<2, 2>, 1, Z, 2>;

}  // namespace

// r = min(r_0, 3), rank r^4 on an 81 x 81 matrix: 1, 16, 81, 81.
BOOST_AUTO_TEST_CASE(ht_rank_is_r_to_the_half_n) {
    check_rank(tmm::make_plan(ht_8<1>), 301, 1, true);
    check_rank(tmm::make_plan(ht_8<2>), 302, 16, true);
    check_rank(tmm::make_plan(ht_8<3>), 303, 81, true);
    check_rank(tmm::make_plan(ht_8<5>), 304, 81, true);
}

// N = 16, M = 2: rank 1 with r_0 = 1 and 2^8 = 256 (a full 256 x 256 matrix) with r_0 = 2.
BOOST_AUTO_TEST_CASE(ht_rank_sixteen_positions) {
    check_rank(tmm::make_plan(ht_16<1>), 305, 1, true);
    check_rank(tmm::make_plan(ht_16<2>), 306, 256, true);
}

// CP with Z terms: rank min(Z, M^(N/2)); a shallow model needs Z >= r^(N/2) terms to reach
// what the HT model above reaches with r_0 = 2.
BOOST_AUTO_TEST_CASE(cp_rank_is_min_z_full) {
    check_rank(tmm::make_plan(cp_8<1>), 311, 1, false);
    check_rank(tmm::make_plan(cp_8<5>), 312, 5, false);
    check_rank(tmm::make_plan(cp_8<16>), 313, 16, false);
    check_rank(tmm::make_plan(cp_8<100>), 314, 81, false);
    check_rank(tmm::make_plan(cp_16<20>), 315, 20, false);
}
