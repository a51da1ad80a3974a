// Must not compile: constant mixing weights with a negative entry (each row still sums to one).
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr tmm::weights<2, 2> mixing{{0.25, 0.75, 0.5, 0.5}};
#else
constexpr tmm::weights<2, 2> mixing{{0.25, 0.75, -0.5, 1.5}};
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<2>, 2> |
                       tmm::fixed_conv<mixing> | tmm::product_pool<tmm::global> | tmm::classes<2>;
