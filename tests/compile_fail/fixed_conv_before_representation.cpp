// Must not compile: constant mixing weights applied to the image itself.
#include <tmm/tmm.hpp>

constexpr tmm::weights<2, 2> mixing{{0.25, 0.75, 0.5, 0.5}};

#ifdef TMM_EXPECT_VALID
constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<2>, 2> |
                       tmm::fixed_conv<mixing> | tmm::product_pool<tmm::global> | tmm::classes<2>;
#else
constexpr auto model = tmm::input<8, 8> | tmm::fixed_conv<mixing> |
                       tmm::representation<tmm::gaussians<2>, 2> | tmm::product_pool<tmm::global> |
                       tmm::classes<2>;
#endif
