// Must not compile: a padding policy that tmm does not know (zero-padding has no meaning in
// a product of densities; a padded position must be missing).
#include <tmm/tmm.hpp>

struct pad_zero {};

#ifdef TMM_EXPECT_VALID
using padding = tmm::pad_missing;
#else
using padding = pad_zero;
#endif

constexpr auto model = tmm::input<6, 6> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::window<2, 2>, padding> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
