// Must not compile: a geometry pairing mirror-image columns declares an output grid as wide
// as its input, so half of its windows are never filled.
#include <tmm/tmm.hpp>

struct mirror_columns {
    template <int Rows, int Cols>
    static constexpr auto windows() {
#ifdef TMM_EXPECT_VALID
        tmm::window_list<Rows, Cols / 2, 2> list;
#else
        tmm::window_list<Rows, Cols, 2> list;
#endif
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols / 2; ++c)
                list.at(r, c) = {r * Cols + c, r * Cols + Cols - 1 - c};
        return list;
    }
};

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
