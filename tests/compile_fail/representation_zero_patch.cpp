// Must not compile: a patch size of zero.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr int patch = 1;
#else
constexpr int patch = 0;
#endif

constexpr auto model = tmm::input<4, 4> | tmm::representation<tmm::gaussians<4>, patch> |
                       tmm::conv<8> | tmm::product_pool<tmm::global> | tmm::classes<2>;
