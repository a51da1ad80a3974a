// Must not compile: a rectangular pooling window with no rows.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
using pairs = tmm::window<1, 2>;
#else
using pairs = tmm::window<0, 2>;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<pairs> | tmm::conv<8> | tmm::product_pool<tmm::global> |
                       tmm::classes<2>;
