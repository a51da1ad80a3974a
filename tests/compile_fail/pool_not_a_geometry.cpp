// Must not compile: a pooling geometry without a windows<Rows, Cols>() function.
#include <tmm/tmm.hpp>

struct mirror_columns {
#ifdef TMM_EXPECT_VALID
    template <int Rows, int Cols>
    static constexpr auto windows(){
#else
    template <int Rows, int Cols>
    static constexpr auto window_list() {
#endif
        tmm::window_list<Rows, Cols / 2, 2> list;
    for (int r = 0; r < Rows; ++r)
        for (int c = 0; c < Cols / 2; ++c) list.at(r, c) = {r * Cols + c, r* Cols + Cols - 1 - c};
    return list;
}
}
;

constexpr auto model = tmm::input<8, 8> | tmm::representation<tmm::gaussians<4>, 2> | tmm::conv<8> |
                       tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<tmm::global> | tmm::classes<2>;
