// Pooling geometries: how the positions of a grid are grouped into product-pooling windows.
// A geometry is any type with a constexpr `windows<Rows, Cols>()` returning a `window_list`;
// the rectangular windows of the paper and the global pool are the two built in.
#pragma once

#include <array>
#include <concepts>

namespace tmm {

// Output windows of one pooling step, laid out on an OutRows x OutCols grid. Each window lists
// up to Size input positions (row-major index r * cols + c); an entry of -1 is an empty slot,
// i.e. a padded position that is entirely missing and contributes log 1 = 0.
template <int OutRows, int OutCols, int Size>
struct window_list {
    static constexpr int out_rows = OutRows;
    static constexpr int out_cols = OutCols;
    static constexpr int size = Size;
    std::array<std::array<int, Size>, OutRows * OutCols> members{};

    constexpr window_list() {
        for (auto& w : members) w.fill(-1);
    }
    constexpr std::array<int, Size>& at(int row, int col) { return members[row * OutCols + col]; }
    constexpr const std::array<int, Size>& at(int row, int col) const {
        return members[row * OutCols + col];
    }
};

// A pooling geometry for an input grid of Rows x Cols.
template <class G, int Rows, int Cols>
concept pooling_geometry_for = requires {
    {G::template windows<Rows, Cols>()};
};

// How a geometry covers its input grid, counted in a constant expression.
struct coverage {
    bool outside = false;  // a window names a position that is not on the grid
    bool twice = false;    // a position lies in two windows (or twice in one)
    bool none = false;     // a position lies in no window
    bool empty_window = false;
};

template <int Rows, int Cols, class List>
constexpr coverage cover(const List& list) {
    coverage result;
    std::array<int, Rows * Cols> count{};
    for (const auto& window : list.members) {
        bool any = false;
        for (int p : window) {
            if (p == -1) continue;
            if (p < 0 || p >= Rows * Cols) {
                result.outside = true;
                continue;
            }
            any = true;
            ++count[p];
        }
        if (!any) result.empty_window = true;
    }
    for (int c : count) {
        if (c > 1) result.twice = true;
        if (c == 0) result.none = true;
    }
    return result;
}

// Rectangular windows of A x B positions (the paper's 2x2 pooling). Whether they must tile
// the grid exactly is decided by the padding policy of `product_pool`.
template <int A, int B = A>
struct window {
    static_assert(A > 0 && B > 0,
                  "tmm::window: a pooling window needs at least one row and one column; write "
                  "tmm::window<2, 2> or similar");
    static constexpr int rows = A;
    static constexpr int cols = B;

    template <int Rows, int Cols>
    static constexpr auto windows() {
        constexpr int out_rows = (Rows + A - 1) / A;
        constexpr int out_cols = (Cols + B - 1) / B;
        window_list<out_rows, out_cols, A * B> list;
        for (int r = 0; r < out_rows; ++r)
            for (int c = 0; c < out_cols; ++c)
                for (int i = 0; i < A; ++i)
                    for (int j = 0; j < B; ++j) {
                        const int row = r * A + i, col = c * B + j;
                        // positions past the edge stay -1: padded, entirely missing
                        if (row < Rows && col < Cols) list.at(r, c)[i * B + j] = row * Cols + col;
                    }
        return list;
    }
};

template <class G>
inline constexpr bool is_rectangular_window = false;
template <int A, int B>
inline constexpr bool is_rectangular_window<window<A, B>> = true;

// One window holding every position: the global pooling of the shallow (CP) model.
struct global {
    template <int Rows, int Cols>
    static constexpr auto windows() {
        window_list<1, 1, Rows * Cols> list;
        for (int p = 0; p < Rows * Cols; ++p) list.members[0][p] = p;
        return list;
    }
};

// Padding policies of product pooling.
struct no_padding {};
// Windows that run past the grid see padded positions that are entirely missing; a missing
// position has log-marginal 0, so padding changes no probability.
struct pad_missing {};

}  // namespace tmm
