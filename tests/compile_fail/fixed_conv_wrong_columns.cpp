// Must not compile: a 2x3 constant weight matrix after a layer with 4 channels.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr tmm::weights<2, 4> mixing{{0.25, 0.25, 0.25, 0.25, 0.1, 0.2, 0.3, 0.4}};
#else
constexpr tmm::weights<2, 3> mixing{{0.25, 0.25, 0.5, 0.2, 0.3, 0.5}};
#endif

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::fixed_conv<mixing> | tmm::product_pool<tmm::global> | tmm::classes<2>;
