// Must not compile: a geometry marks the empty slot of the middle column's window with a
// past-the-end index instead of -1, naming a position that is not on the grid.
#include <tmm/tmm.hpp>

struct mirror_columns {
    template <int Rows, int Cols>
    static constexpr auto windows() {
#ifdef TMM_EXPECT_VALID
        constexpr int padded = -1;
#else
        constexpr int padded = Rows * Cols;
#endif
        tmm::window_list<Rows, (Cols + 1) / 2, 2> list;
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < (Cols + 1) / 2; ++c) {
                const int mirror = Cols - 1 - c;
                list.at(r, c) = {r * Cols + c, mirror == c ? padded : r * Cols + mirror};
            }
        return list;
    }
};

constexpr auto model = tmm::input<10, 10> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::conv<8> | tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
