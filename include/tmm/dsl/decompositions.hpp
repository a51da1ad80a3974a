// The paper's two decompositions as ready-made networks: CP (shallow, one global product
// pooling) and HT (deep, 2x2 pooling per level), plus the exact published HT model.
#pragma once

#include "network.hpp"

namespace tmm {

namespace detail {
template <class Net>
constexpr auto ht_levels(Net net) {
    return net;
}
template <int Width, int... Rest, class Net>
constexpr auto ht_levels(Net net) {
    return ht_levels<Rest...>(net | conv<Width> | product_pool<window<2, 2>, pad_missing>);
}
}  // namespace detail

// CP: A^y = sum_z a^y_z (a_{z,1} (x) ... (x) a_{z,N}). `Image` is the input expression
// (e.g. tmm::input<28, 28> | tmm::pad<2>), Z the number of terms, K the classes.
template <auto Image, class Leaves, int Patch, int Z, int K>
inline constexpr auto cp =
    Image | representation<Leaves, Patch> | conv<Z> | product_pool<global> | classes<K>;

// HT: one unshared conv of each width followed by 2x2 product pooling (padding odd grids
// with missing positions), then the class layer. The widths must bring the grid to 1x1.
template <auto Image, class Leaves, int Patch, int K, int... Widths>
inline constexpr auto ht =
    detail::ht_levels<Widths...>(Image | representation<Leaves, Patch>) | classes<K>;

// The published HT model for 28x28 digits (../recipe.md): 2 missing pixels of padding,
// 32 Gaussians on 2x2 patches (16x16 grid), conv 64 tiled 2x2, then 128, 256, 512
// unshared, each followed by 2x2 product pooling, and 10 classes.
inline constexpr auto published_ht =
    input<28, 28> | pad<2> | representation<gaussians<32>, 2> | conv<64, tiled<2, 2>> |
    product_pool<window<2, 2>> | conv<128> | product_pool<window<2, 2>> | conv<256> |
    product_pool<window<2, 2>> | conv<512> | product_pool<window<2, 2>> | classes<10>;

// The published shallow model: 800 Gaussians on 4x4 patches of the padded 32x32 image
// (8x8 grid), one unshared conv to Z terms, global product pooling, then the K = 10 classes.
template <int Z = 10>
inline constexpr auto published_cp = cp<input<28, 28> | pad<2>, gaussians<800>, 4, Z, 10>;

}  // namespace tmm
