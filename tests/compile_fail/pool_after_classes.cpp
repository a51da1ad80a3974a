// Must not compile: product pooling after the class layer.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::product_pool<tmm::global> |
                       tmm::classes<2>;
#else
constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2> |
                       tmm::product_pool<tmm::global>;
#endif
