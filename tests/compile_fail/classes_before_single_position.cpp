// Must not compile: three HT levels take the 14x14 grid of a 28x28 image only down to 2x2,
// and the class layer needs a single position.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr auto model = tmm::ht<tmm::input<28, 28>, tmm::gaussians<8>, 2, 10, 16, 16, 16, 16>;
#else
constexpr auto model = tmm::ht<tmm::input<28, 28>, tmm::gaussians<8>, 2, 10, 16, 16, 16>;
#endif
