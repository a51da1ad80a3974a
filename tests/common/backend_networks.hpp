// Small networks and random inputs shared by the tests that hold a fast backend to the
// reference one (tests/model, tests/thrust, tests/generate): each network exercises a part of
// the plan a backend must get right (tiled and shared weights, padding, a user's pooling
// geometry, CP, categorical leaves).
#pragma once

#include <tmm/tmm.hpp>

#include "../reference/oracle.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace tmm_test {

// Mirror-image column pairs: a custom geometry written as a user would (oracle.hpp's).
using oracle::mirror_columns;

constexpr auto small_ht =
    tmm::input<6, 6> | tmm::representation<tmm::gaussians<5>, 2> | tmm::conv<4, tmm::tiled<2, 2>> |
    tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> | tmm::conv<6> |
    tmm::product_pool<tmm::window<2, 2>> | tmm::conv<3, tmm::shared> | tmm::classes<3>;
constexpr auto mirror_ht = tmm::input<4, 8, 2> | tmm::representation<tmm::gaussians<3>, 2> |
                           tmm::conv<5> | tmm::product_pool<mirror_columns> | tmm::conv<4> |
                           tmm::product_pool<tmm::global> | tmm::classes<4>;
constexpr auto small_cp = tmm::cp<tmm::input<8, 8> | tmm::pad<1>, tmm::gaussians<7>, 2, 9, 5>;
constexpr auto categorical_ht = tmm::input<4, 4> | tmm::representation<tmm::categorical<3, 4>, 1> |
                                tmm::conv<3> | tmm::product_pool<tmm::window<2, 2>> | tmm::conv<5> |
                                tmm::product_pool<tmm::window<2, 2>> | tmm::classes<2>;

template <class T>
void randomize(tmm::parameters<T>& theta, std::mt19937_64& rng) {
    std::normal_distribution<double> n(0.0, 1.0);
    for (auto& v : theta.mean) v = T(0.3 * n(rng));
    for (auto& v : theta.log_precision) v = T(1.0 + n(rng));
    for (auto& v : theta.logits) v = T(n(rng));
    for (auto& t : theta.theta)
        for (auto& v : t) v = T(n(rng));
}

// Float parameters shaped for p, randomised by randomize().
inline tmm::parameters<float> randomized_parameters(const tmm::plan& p, std::mt19937_64& rng) {
    auto theta = tmm::zero_parameters<float>(p);
    randomize(theta, rng);
    return theta;
}

struct batch {
    std::vector<float> values;
    std::vector<std::uint8_t> observed;
};

// `count` images: Gaussian values of standard deviation `spread` (symbols for categorical
// leaves), each missing with probability `missing`.
batch make_batch(const tmm::plan& p, std::size_t count, double missing, std::mt19937_64& rng,
                 double spread = 0.3) {
    batch b;
    std::normal_distribution<double> n(0.0, spread);
    std::uniform_int_distribution<int> symbol(0, std::max(p.values, 1) - 1);
    std::bernoulli_distribution drop(missing);
    for (std::size_t i = 0; i < count * p.pixels(); ++i) {
        b.values.push_back(p.leaves == tmm::leaf_kind::categorical ? float(symbol(rng))
                                                                   : float(n(rng)));
        b.observed.push_back(!drop(rng));
    }
    return b;
}

}  // namespace tmm_test
