// Must not compile: a class layer with no classes.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr int labels = 2;
#else
constexpr int labels = 0;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<labels>;
