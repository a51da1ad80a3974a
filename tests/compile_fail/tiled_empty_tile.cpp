// Must not compile: weights tiled over a tile with no columns.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
using sharing = tmm::tiled<2, 1>;
#else
using sharing = tmm::tiled<2, 0>;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::conv<8, sharing> | tmm::product_pool<tmm::global> | tmm::classes<2>;
