// Must not compile: constant mixing weights whose second row sums to 0.6, not one.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr tmm::weights<2, 2> mixing{{0.25, 0.75, 0.5, 0.5}};
#else
constexpr tmm::weights<2, 2> mixing{{0.25, 0.75, 0.3, 0.3}};
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<2>, 2> |
                       tmm::fixed_conv<mixing> | tmm::product_pool<tmm::global> | tmm::classes<2>;
