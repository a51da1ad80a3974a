// Must not compile: image padding placed after the representation layer.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr auto model = tmm::input<28, 28> | tmm::pad<2> |
                       tmm::representation<tmm::gaussians<8>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<10>;
#else
constexpr auto model = tmm::input<28, 28> | tmm::representation<tmm::gaussians<8>, 2> |
                       tmm::pad<2> | tmm::conv<8> | tmm::product_pool<tmm::global> |
                       tmm::classes<10>;
#endif
