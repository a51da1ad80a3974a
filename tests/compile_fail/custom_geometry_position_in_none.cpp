// Must not compile: a geometry pairing each column with its mirror image makes Cols / 2
// windows per row, which on an odd grid leaves the middle column in no window.
#include <tmm/tmm.hpp>

struct mirror_columns {
    template <int Rows, int Cols>
    static constexpr auto windows() {
#ifdef TMM_EXPECT_VALID
        tmm::window_list<Rows, (Cols + 1) / 2, 2> list;
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < (Cols + 1) / 2; ++c) {
                const int mirror = Cols - 1 - c;
                list.at(r, c) = {r * Cols + c, mirror == c ? -1 : r * Cols + mirror};
            }
#else
        tmm::window_list<Rows, Cols / 2, 2> list;
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < Cols / 2; ++c)
                list.at(r, c) = {r * Cols + c, r * Cols + Cols - 1 - c};
#endif
        return list;
    }
};

// 10x10 pixels in 2x2 patches: a 5x5 grid.
constexpr auto model = tmm::input<10, 10> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::conv<8> | tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
