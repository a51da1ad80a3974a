// Must not compile: the representation layer is given a number instead of leaves.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
using leaves = tmm::gaussians<32>;
#else
using leaves = std::integral_constant<int, 32>;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<leaves, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
