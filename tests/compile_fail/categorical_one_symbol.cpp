// Must not compile: categorical leaves over a single symbol (binary pixels need V = 2).
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr int symbols = 2;
#else
constexpr int symbols = 1;
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::categorical<4, symbols>, 2> |
                       tmm::conv<8> | tmm::product_pool<tmm::global> | tmm::classes<2>;
