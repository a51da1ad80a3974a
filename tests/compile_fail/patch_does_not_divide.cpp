// Must not compile: 3x3 patches do not divide a 28x28 image; one missing pixel of padding on
// every side makes it 30x30, which they do.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr auto model = tmm::input<28, 28> | tmm::pad<1> |
                       tmm::representation<tmm::gaussians<8>, 3> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<10>;
#else
constexpr auto model = tmm::input<28, 28> | tmm::representation<tmm::gaussians<8>, 3> |
                       tmm::conv<8> | tmm::product_pool<tmm::global> | tmm::classes<10>;
#endif
