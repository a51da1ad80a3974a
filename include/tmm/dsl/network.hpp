// Typed expressions for Tensorial Mixture Models. A model is written as a pipeline
//   tmm::input<H, W> | tmm::representation<tmm::gaussians<M>, P> | tmm::conv<R> | ... |
//   tmm::classes<K>
// whose shapes are template parameters; every stage checks itself against the shape that
// reaches it, so a malformed network is a compile error naming the stage and the fix.
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "../plan.hpp"
#include "pooling.hpp"

namespace tmm {

// What flows between stages: the image before the representation layer, a grid of
// positions with `channels` log-activations each after it.
struct shape {
    int height = 0, width = 0, image_channels = 0;
    int pad = 0;
    int patch = 0;
    int rows = 0, cols = 0, channels = 0;
    bool represented = false;
    bool classified = false;
};

// ---- leaves (mixing components) ----

// M diagonal Gaussians over the s = p * p * C coordinates of a patch.
template <int M>
struct gaussians {
    static_assert(M > 0,
                  "tmm::gaussians: a representation needs at least one mixing component; write "
                  "tmm::gaussians<M> with M > 0");
    static constexpr int components = M;
    static constexpr leaf_kind kind = leaf_kind::gaussian;
    static constexpr int values = 0;
};

// M categorical leaves for discrete inputs: coordinate k of a patch takes one of V symbols
// (the input value, an integer in [0, V)) with its own probabilities per component.
template <int M, int V>
struct categorical {
    static_assert(M > 0,
                  "tmm::categorical: a representation needs at least one mixing component; "
                  "write tmm::categorical<M, V> with M > 0");
    static_assert(V > 1,
                  "tmm::categorical: a categorical leaf needs at least two symbols; write "
                  "tmm::categorical<M, V> with V >= 2");
    static constexpr int components = M;
    static constexpr leaf_kind kind = leaf_kind::categorical;
    static constexpr int values = V;
};

template <class L>
concept leaves = requires {
    { L::components } -> std::convertible_to<int>;
    { L::kind } -> std::convertible_to<leaf_kind>;
};

// ---- weight sharing of conv layers ----
struct unshared {};  // one weight matrix per position
struct shared {};    // one matrix for all positions
// Weights chosen by position modulo an A x B tile (the published first layer uses 2 x 2).
template <int A, int B = A>
struct tiled {
    static_assert(A > 0 && B > 0,
                  "tmm::tiled: a sharing tile needs at least one row and one column; write "
                  "tmm::tiled<2, 2> or similar");
};

namespace detail {
template <class S>
struct sharing_traits;
template <>
struct sharing_traits<unshared> {
    static int sets(int rows, int cols) { return rows * cols; }
    static int set_of(int row, int col, int cols) { return row * cols + col; }
};
template <>
struct sharing_traits<shared> {
    static int sets(int, int) { return 1; }
    static int set_of(int, int, int) { return 0; }
};
template <int A, int B>
struct sharing_traits<tiled<A, B>> {
    static int sets(int, int) { return A * B; }
    static int set_of(int row, int col, int) { return (row % A) * B + col % B; }
};
}  // namespace detail

template <class S>
concept weight_sharing = requires {
    detail::sharing_traits<S>::sets(1, 1);
};

// Constant weights written by the user: an O x I matrix whose rows must lie on the simplex.
template <int O, int I>
struct weights {
    std::array<double, std::size_t(O) * I> values{};

    constexpr double at(int o, int i) const { return values[std::size_t(o) * I + i]; }
    constexpr bool non_negative() const {
        for (double v : values)
            if (!(v >= 0.0)) return false;
        return true;
    }
    constexpr bool rows_sum_to_one() const {
        for (int o = 0; o < O; ++o) {
            double sum = 0.0;
            for (int i = 0; i < I; ++i) sum += at(o, i);
            if (!(sum > 1.0 - 1e-9 && sum < 1.0 + 1e-9)) return false;
        }
        return true;
    }
};

// ---- stages ----

namespace detail {
template <int Pixels>
struct pad_stage {
    template <shape In>
    static constexpr shape next() {
        static_assert(Pixels >= 0,
                      "tmm::pad: the padding is negative; write tmm::pad<N> with N >= 0 missing "
                      "pixels on every side");
        static_assert(!In.represented,
                      "tmm::pad: pads the input image, so it must come before "
                      "tmm::representation; to pad a grid of positions use "
                      "tmm::product_pool<G, tmm::pad_missing>");
        shape out = In;
        out.pad += Pixels;
        return out;
    }
    template <shape In>
    static void lower(plan& p) {
        p.pad += Pixels;
    }
};

template <class Leaves, int Patch>
struct representation_stage {
    template <shape In>
    static constexpr shape next() {
        static_assert(leaves<Leaves>,
                      "tmm::representation: the first argument must be leaves, e.g. "
                      "tmm::gaussians<32> or tmm::categorical<M, V>");
        static_assert(!In.represented,
                      "tmm::representation: a network has exactly one representation layer; "
                      "remove the second one");
        static_assert(Patch > 0,
                      "tmm::representation: the patch size is not positive; write "
                      "tmm::representation<L, P> with P >= 1");
        static_assert((In.height + 2 * In.pad) % Patch == 0 && (In.width + 2 * In.pad) % Patch == 0,
                      "tmm::representation: the patch size does not divide the (padded) image; "
                      "choose a patch size that divides it or pad the image first with "
                      "tmm::pad<N>");
        shape out = In;
        out.patch = Patch;
        out.rows = (In.height + 2 * In.pad) / Patch;
        out.cols = (In.width + 2 * In.pad) / Patch;
        out.channels = Leaves::components;
        out.represented = true;
        return out;
    }
    template <shape In>
    static void lower(plan& p) {
        constexpr shape out = next<In>();
        p.patch = Patch;
        p.grid_rows = out.rows;
        p.grid_cols = out.cols;
        p.leaves = Leaves::kind;
        p.components = Leaves::components;
        p.values = Leaves::values;
    }
};

template <int R, class Sharing>
struct conv_stage {
    template <shape In>
    static constexpr shape next() {
        static_assert(R > 0,
                      "tmm::conv: a conv layer needs at least one output channel; write "
                      "tmm::conv<R> with R > 0");
        static_assert(weight_sharing<Sharing>,
                      "tmm::conv: the sharing must be tmm::unshared, tmm::shared or "
                      "tmm::tiled<A, B>");
        static_assert(In.represented,
                      "tmm::conv: a conv layer needs a representation layer before it; start "
                      "with tmm::input<H, W> | tmm::representation<tmm::gaussians<M>, P>");
        static_assert(!In.classified,
                      "tmm::conv: the class layer (tmm::classes<K>) must be the last stage; move "
                      "this conv before it");
        shape out = In;
        out.channels = R;
        return out;
    }
    template <shape In>
    static void lower(plan& p) {
        layer l;
        l.kind = layer_kind::conv;
        l.in_rows = l.out_rows = In.rows;
        l.in_cols = l.out_cols = In.cols;
        l.in_channels = In.channels;
        l.out_channels = R;
        l.weight_sets = sharing_traits<Sharing>::sets(In.rows, In.cols);
        for (int r = 0; r < In.rows; ++r)
            for (int c = 0; c < In.cols; ++c)
                l.set_of_position.push_back(sharing_traits<Sharing>::set_of(r, c, In.cols));
        p.layers.push_back(std::move(l));
    }
};

template <auto Weights>
struct fixed_conv_stage;

template <int O, int I, weights<O, I> W>
struct fixed_conv_stage<W> {
    template <shape In>
    static constexpr shape next() {
        static_assert(W.non_negative(),
                      "tmm::fixed_conv: a constant weight is negative; mixing weights are "
                      "probabilities, write values >= 0");
        static_assert(W.rows_sum_to_one(),
                      "tmm::fixed_conv: a row of constant weights does not sum to one; divide "
                      "each row by its sum so that it lies on the probability simplex");
        static_assert(In.represented,
                      "tmm::fixed_conv: a conv layer needs a representation layer before it; start "
                      "with tmm::input<H, W> | tmm::representation<tmm::gaussians<M>, P>");
        static_assert(!In.classified,
                      "tmm::fixed_conv: the class layer (tmm::classes<K>) must be the last stage; "
                      "move this conv before it");
        static_assert(In.channels == I,
                      "tmm::fixed_conv: the weight matrix must have one column per input "
                      "channel (weights<O, I> with I = channels of the previous layer)");
        shape out = In;
        out.channels = O;
        return out;
    }
    template <shape In>
    static void lower(plan& p) {
        // a shared conv whose one weight matrix is the constant W
        conv_stage<O, shared>::template lower<In>(p);
        p.layers.back().fixed = true;
        p.layers.back().fixed_weights.assign(W.values.begin(), W.values.end());
    }
};

template <class Geometry, class Padding>
struct pool_stage {
    template <shape In>
    static constexpr auto list() {
        return Geometry::template windows<In.rows, In.cols>();
    }

    template <shape In>
    static constexpr shape next() {
        static_assert(In.represented,
                      "tmm::product_pool: pooling needs a representation layer before it; start "
                      "with tmm::input<H, W> | tmm::representation<tmm::gaussians<M>, P>");
        static_assert(!In.classified,
                      "tmm::product_pool: the class layer (tmm::classes<K>) must be the last "
                      "stage; move this pooling before it");
        static_assert(std::is_same_v<Padding, no_padding> || std::is_same_v<Padding, pad_missing>,
                      "tmm::product_pool: the padding policy must be tmm::no_padding or "
                      "tmm::pad_missing");
        static_assert(pooling_geometry_for<Geometry, In.rows, In.cols>,
                      "tmm::product_pool: the geometry must have a static constexpr "
                      "windows<Rows, Cols>() returning a tmm::window_list");
        constexpr auto windows = list<In>();
        constexpr coverage c = cover<In.rows, In.cols>(windows);
        if constexpr (is_rectangular_window<Geometry>) {
            static_assert(std::is_same_v<Padding, pad_missing> ||
                              (In.rows % Geometry::rows == 0 && In.cols % Geometry::cols == 0),
                          "tmm::product_pool: the windows do not tile the grid; pad it "
                          "(tmm::product_pool<tmm::window<A, B>, tmm::pad_missing>) or choose "
                          "a window that divides the grid");
        } else {
            static_assert(!c.outside,
                          "tmm::product_pool: a window of the custom geometry names a position "
                          "outside the grid; positions are row * cols + col, or -1 for a padded "
                          "slot");
            static_assert(!c.twice,
                          "tmm::product_pool: the custom geometry is not a partition: a "
                          "position is listed twice (in two windows, or twice in one); list "
                          "every position exactly once and mark an empty slot with -1");
            static_assert(!c.none,
                          "tmm::product_pool: the custom geometry is not a partition: a "
                          "position lies in no window; list every position exactly once");
            static_assert(!c.empty_window,
                          "tmm::product_pool: a window of the custom geometry is empty; give "
                          "every window at least one position");
        }
        shape out = In;
        out.rows = windows.out_rows;
        out.cols = windows.out_cols;
        return out;
    }
    template <shape In>
    static void lower(plan& p) {
        constexpr auto windows = list<In>();
        layer l;
        l.kind = layer_kind::pool;
        l.in_rows = In.rows;
        l.in_cols = In.cols;
        l.out_rows = windows.out_rows;
        l.out_cols = windows.out_cols;
        l.in_channels = l.out_channels = In.channels;
        l.window_size = windows.size;
        for (const auto& w : windows.members) l.members.insert(l.members.end(), w.begin(), w.end());
        p.layers.push_back(std::move(l));
    }
};

template <int K>
struct classes_stage {
    template <shape In>
    static constexpr shape next() {
        static_assert(K > 0,
                      "tmm::classes: the class layer needs at least one class; write "
                      "tmm::classes<K> with K >= 1");
        static_assert(In.represented,
                      "tmm::classes: the class layer needs a representation layer before it; start "
                      "with tmm::input<H, W> | tmm::representation<tmm::gaussians<M>, P>");
        static_assert(!In.classified,
                      "tmm::classes: a network has exactly one class layer; remove "
                      "the second tmm::classes<K>");
        static_assert(In.rows * In.cols == 1,
                      "tmm::classes: the network does not reach a single position before the "
                      "class layer; add product pooling (e.g. tmm::product_pool<tmm::global>) "
                      "until one position is left");
        shape out = In;
        out.channels = K;
        out.classified = true;
        return out;
    }
    template <shape In>
    static void lower(plan& p) {
        conv_stage<K, shared>::template lower<In>(p);
        p.classes = K;
    }
};
}  // namespace detail

// ---- the network: a list of stages and the shape they produce ----

template <shape Out, class... Stages>
struct network {
    static constexpr shape out = Out;
};

template <class T>
inline constexpr bool is_network_v = false;
template <shape Out, class... Stages>
inline constexpr bool is_network_v<network<Out, Stages...>> = true;

template <class T>
concept network_expression = is_network_v<std::remove_cvref_t<T>>;

template <class T>
concept complete_network = network_expression<T> && std::remove_cvref_t<T>::out.classified;

namespace detail {
template <class S>
concept stage = requires {
    &S::template next<shape{}>;
};
}  // namespace detail

template <shape Out, class... Stages, class Stage>
constexpr auto operator|(network<Out, Stages...>, Stage) {
    static_assert(detail::stage<Stage>,
                  "tmm::operator|: the right-hand side is not a stage; write a layer such as "
                  "tmm::conv<R> or tmm::product_pool<G> (leaves go inside "
                  "tmm::representation<L, P>)");
    constexpr shape next = Stage::template next<Out>();
    return network<next, Stages..., Stage>{};
}

// ---- the names users write ----

template <int H, int W, int C = 1>
inline constexpr network<shape{.height = H, .width = W, .image_channels = C}> input{};

// Pads the image with `Pixels` entirely missing pixels on every side.
template <int Pixels>
inline constexpr detail::pad_stage<Pixels> pad{};

template <class Leaves, int Patch>
inline constexpr detail::representation_stage<Leaves, Patch> representation{};

template <int R, class Sharing = unshared>
inline constexpr detail::conv_stage<R, Sharing> conv{};

template <auto Weights>
inline constexpr detail::fixed_conv_stage<Weights> fixed_conv{};

template <class Geometry, class Padding = no_padding>
inline constexpr detail::pool_stage<Geometry, Padding> product_pool{};

template <int K>
inline constexpr detail::classes_stage<K> classes{};

// ---- lowering to the runtime plan ----

namespace detail {
template <shape In, class Stage, class... Rest>
void lower_all(plan& p) {
    Stage::template lower<In>(p);
    if constexpr (sizeof...(Rest) > 0) lower_all<Stage::template next<In>(), Rest...>(p);
}
}  // namespace detail

template <shape Out, class... Stages>
plan make_plan(network<Out, Stages...>) {
    static_assert(Out.classified,
                  "tmm::make_plan: the network has no class layer; end it with "
                  "| tmm::classes<K>");
    plan p;
    // Recover the input shape: every stage before the representation only adds padding,
    // so the original image is Out's image with the padding taken off.
    constexpr shape in{
        .height = Out.height, .width = Out.width, .image_channels = Out.image_channels};
    p.height = Out.height;
    p.width = Out.width;
    p.image_channels = Out.image_channels;
    detail::lower_all<in, Stages...>(p);
    return p;
}

}  // namespace tmm
