// Must not compile: a negative amount of padding (cropping is not a TMM operation).
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr int border = 1;
#else
constexpr int border = -1;
#endif

constexpr auto model = tmm::input<6, 6> | tmm::pad<border> |
                       tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
