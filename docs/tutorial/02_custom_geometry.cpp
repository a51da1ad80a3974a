// Tutorial 2: a pooling geometry of our own. Any partition of the grid into windows is a
// valid HT tree; here each column is pooled with its mirror image.
#include <cstdio>
#include <tmm/tmm.hpp>

// Column c pools with column Cols - 1 - c of the same row. On an odd grid the middle column
// is its own mirror: it pools alone, its second slot -1 (a padded, missing position).
struct mirror_columns {
    template <int Rows, int Cols>
    static constexpr auto windows() {
        tmm::window_list<Rows, (Cols + 1) / 2, 2> list;
        for (int r = 0; r < Rows; ++r)
            for (int c = 0; c < (Cols + 1) / 2; ++c) {
                const int mirror = Cols - 1 - c;
                list.at(r, c) = {r * Cols + c, mirror == c ? -1 : r * Cols + mirror};
            }
        return list;
    }
};

// 8x10 pixels in 2x2 patches: 4x5 positions -> 4x3 -> 4x2 -> 4x1 -> 1x1.
constexpr auto model = tmm::input<8, 10> | tmm::representation<tmm::gaussians<4>, 2> |
                       tmm::conv<8> | tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<mirror_columns> | tmm::conv<8> |
                       tmm::product_pool<tmm::window<4, 1>> | tmm::classes<2>;

int main() {
    const tmm::plan p = tmm::make_plan(model);
    for (const tmm::layer& l : p.layers) {
        if (l.kind != tmm::layer_kind::pool) continue;
        std::printf("pool %dx%d -> %dx%d, windows of row 0:", l.in_rows, l.in_cols, l.out_rows,
                    l.out_cols);
        for (int w = 0; w < l.out_cols; ++w) {
            std::printf(" {");
            for (int slot = 0; slot < l.window_size; ++slot) {
                const int j = l.members[w * l.window_size + slot];
                if (j < 0)
                    std::printf(" pad");
                else
                    std::printf(" (%d,%d)", j / l.in_cols, j % l.in_cols);
            }
            std::printf(" }");
        }
        std::printf("\n");
    }
}
