// Must not compile: a conv layer whose weight sharing is not one of tmm's policies.
#include <tmm/tmm.hpp>

struct per_row {};

#ifdef TMM_EXPECT_VALID
using sharing = tmm::tiled<2, 1>;
#else
using sharing = per_row;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::conv<8, sharing> | tmm::product_pool<tmm::global> | tmm::classes<2>;
