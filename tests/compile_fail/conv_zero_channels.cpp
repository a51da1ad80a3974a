// Must not compile: a conv layer with no output channels.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr int width = 8;
#else
constexpr int width = 0;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::conv<width> | tmm::product_pool<tmm::global> | tmm::classes<2>;
