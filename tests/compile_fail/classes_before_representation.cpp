// Must not compile: a class layer on the raw image.
#include <tmm/tmm.hpp>

#ifdef TMM_EXPECT_VALID
constexpr auto model =
    tmm::input<1, 1> | tmm::representation<tmm::gaussians<4>, 1> | tmm::classes<2>;
#else
constexpr auto model = tmm::input<1, 1> | tmm::classes<2>;
#endif
