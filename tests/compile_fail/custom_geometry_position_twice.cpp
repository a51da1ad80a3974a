// Must not compile: a geometry pairing each column with its mirror image forgets that on an
// odd grid the middle column is its own mirror, so that position fills both slots of its window.
#include <tmm/tmm.hpp>

struct mirror_columns {
    template <int Rows, int Cols>
    static constexpr auto windows() {
        tmm::window_list<Rows, (Cols + 1) / 2, 2> list;
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < (Cols + 1) / 2; ++c) {
                const int mirror = Cols - 1 - c;
#ifdef TMM_EXPECT_VALID
                list.at(r, c) = {r * Cols + c, mirror == c ? -1 : r * Cols + mirror};
#else
                list.at(r, c) = {r * Cols + c, r * Cols + mirror};
#endif
            }
        return list;
    }
};

// 10x10 pixels in 2x2 patches: a 5x5 grid, paired into 5x3 windows.
constexpr auto model = tmm::input<10, 10> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::conv<8> | tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
