// Must not compile: categorical leaves with no mixing components.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr int components = 4;
#else
constexpr int components = 0;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::categorical<components, 2>, 2> |
                       tmm::conv<8> | tmm::product_pool<tmm::global> | tmm::classes<2>;
