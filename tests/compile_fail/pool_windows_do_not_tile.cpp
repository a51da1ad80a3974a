// Must not compile: 2x2 patches of a 28x28 image give a 14x14 grid, one 2x2 pooling leaves
// 7x7, and 2x2 windows do not tile 7x7 unless a padding policy says what fills the gap.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr auto model = tmm::input<28, 28> | tmm::representation<tmm::gaussians<8>, 2> |
                       tmm::conv<16> | tmm::product_pool<tmm::window<2, 2>> | tmm::conv<16> |
                       tmm::product_pool<tmm::window<2, 2>, tmm::pad_missing> | tmm::conv<16> |
                       tmm::product_pool<tmm::global> | tmm::classes<10>;
#else
constexpr auto model = tmm::input<28, 28> | tmm::representation<tmm::gaussians<8>, 2> |
                       tmm::conv<16> | tmm::product_pool<tmm::window<2, 2>> | tmm::conv<16> |
                       tmm::product_pool<tmm::window<2, 2>> | tmm::conv<16> |
                       tmm::product_pool<tmm::global> | tmm::classes<10>;
#endif
