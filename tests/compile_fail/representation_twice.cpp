// Must not compile: two representation layers in one network.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
#else
constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
#endif
