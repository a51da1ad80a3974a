// The runtime description of a network that every backend executes: the typed expression
// (tmm/dsl) is checked at compile time, then lowered to this plain list of layers.
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace tmm {

// A batch, a parameter set or a plan that does not fit what it is used with.
struct input_error : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

enum class leaf_kind { gaussian, categorical };
enum class layer_kind { conv, pool };

// A 1x1 conv ("MEX") at each position, or a product pooling over windows of positions.
struct layer {
    layer_kind kind = layer_kind::conv;
    int in_rows = 0, in_cols = 0, out_rows = 0, out_cols = 0;
    int in_channels = 0, out_channels = 0;

    // conv: out[j, g] = log sum_a W[set_of_position[j]][g, a] exp(in[j, a])
    int weight_sets = 0;
    std::vector<int> set_of_position;
    bool fixed = false;                 // constant weights written by the user (no parameters)
    std::vector<double> fixed_weights;  // out_channels x in_channels, linear, rows on the simplex

    // pool: out[J, g] = sum over the members j of window J of in[j, g]; -1 is a padded slot
    int window_size = 0;
    std::vector<int> members;

    // Calls f(window, position) for every member of every pooling window, padded slots skipped.
    template <class F>
    void for_each_member(F&& f) const {
        for (int w = 0; w < out_positions(); ++w)
            for (int slot = 0; slot < window_size; ++slot)
                if (const int j = members[std::size_t(w) * window_size + slot]; j >= 0) f(w, j);
    }

    int in_positions() const { return in_rows * in_cols; }
    int out_positions() const { return out_rows * out_cols; }
    std::size_t weight_count() const {
        return fixed ? 0 : std::size_t(weight_sets) * out_channels * in_channels;
    }
};

struct plan {
    // input image and its cutting into local structures (patches)
    int height = 0, width = 0, image_channels = 0;
    int pad = 0;  // missing pixels added on every side
    int patch = 0;
    int grid_rows = 0, grid_cols = 0;  // (height + 2 pad) / patch, (width + 2 pad) / patch

    // representation layer: M mixing components shared by every position
    leaf_kind leaves = leaf_kind::gaussian;
    int components = 0;
    int values = 0;  // categorical leaves: symbols per coordinate

    std::vector<layer> layers;  // conv and pool layers; the last one is the class layer
    int classes = 0;

    int pixels() const { return height * width * image_channels; }
    int patch_size() const { return patch * patch * image_channels; }  // s = p * p * C
    int positions() const { return grid_rows * grid_cols; }

    // Input pixel index (or -1 for a padded pixel) of coordinate k of the patch at `position`;
    // coordinates are ordered (row in patch, column in patch, channel).
    int pixel_of(int position, int k) const {
        const int channel = k % image_channels;
        const int within = k / image_channels;
        const int row = (position / grid_cols) * patch + within / patch - pad;
        const int col = (position % grid_cols) * patch + within % patch - pad;
        if (row < 0 || row >= height || col < 0 || col >= width) return -1;
        return (row * width + col) * image_channels + channel;
    }
};

// Empty when the layers of `p` fit together and every index is in range; otherwise the first
// problem, in words. Plans made by make_plan always pass; a plan read from a file or written
// by hand is checked before any backend indexes with it.
inline std::string plan_problem(const plan& p) {
    const auto at = [](std::size_t l) { return "layer " + std::to_string(l) + ": "; };
    if (p.height <= 0 || p.width <= 0 || p.image_channels <= 0 || p.pad < 0 || p.patch <= 0)
        return "the image is " + std::to_string(p.height) + "x" + std::to_string(p.width) + "x" +
               std::to_string(p.image_channels) + " with padding " + std::to_string(p.pad) +
               " and patch " + std::to_string(p.patch) + "; all must be positive";
    if ((p.height + 2 * p.pad) % p.patch != 0 || (p.width + 2 * p.pad) % p.patch != 0 ||
        p.grid_rows != (p.height + 2 * p.pad) / p.patch ||
        p.grid_cols != (p.width + 2 * p.pad) / p.patch)
        return "the grid " + std::to_string(p.grid_rows) + "x" + std::to_string(p.grid_cols) +
               " does not match the padded image and the patch size";
    if (p.components <= 0) return "the representation has no components";
    if (p.leaves == leaf_kind::categorical && p.values < 2)
        return "categorical leaves need at least two symbols";
    if (p.layers.empty()) return "the plan has no layers";
    int rows = p.grid_rows, cols = p.grid_cols, channels = p.components;
    for (std::size_t l = 0; l < p.layers.size(); ++l) {
        const layer& ly = p.layers[l];
        if (ly.in_rows != rows || ly.in_cols != cols || ly.in_channels != channels)
            return at(l) + "its input shape does not match the previous layer's output";
        if (ly.out_rows <= 0 || ly.out_cols <= 0 || ly.out_channels <= 0)
            return at(l) + "its output shape is empty";
        if (ly.kind == layer_kind::conv) {
            if (ly.out_rows != ly.in_rows || ly.out_cols != ly.in_cols)
                return at(l) + "a conv layer keeps the grid";
            if (ly.weight_sets <= 0 || ly.set_of_position.size() != std::size_t(ly.in_positions()))
                return at(l) + "it needs one weight set per position";
            for (int set : ly.set_of_position)
                if (set < 0 || set >= ly.weight_sets) return at(l) + "a weight set is out of range";
            if (ly.fixed &&
                ly.fixed_weights.size() != std::size_t(ly.out_channels) * ly.in_channels)
                return at(l) + "its constant weights have the wrong size";
            // constant weights are mixing probabilities: each row on the simplex
            for (int o = 0; ly.fixed && o < ly.out_channels; ++o) {
                double sum = 0.0;
                for (int i = 0; i < ly.in_channels; ++i) {
                    const double w = ly.fixed_weights[std::size_t(o) * ly.in_channels + i];
                    if (!(w >= 0.0 && w <= 1.0))
                        return at(l) + "constant weight [" + std::to_string(o) + "][" +
                               std::to_string(i) + "] is " + std::to_string(w) +
                               "; it must be a probability in [0, 1]";
                    sum += w;
                }
                if (!(std::abs(sum - 1.0) <= 1e-6))
                    return at(l) + "the constant weights of output " + std::to_string(o) +
                           " sum to " + std::to_string(sum) + ", not 1";
            }
        } else {
            if (ly.out_channels != ly.in_channels) return at(l) + "pooling keeps the channels";
            if (ly.window_size <= 0 ||
                ly.members.size() != std::size_t(ly.out_positions()) * ly.window_size)
                return at(l) + "its windows have the wrong size";
            std::vector<int> seen(ly.in_positions(), 0);
            for (int j : ly.members) {
                if (j < -1 || j >= ly.in_positions())
                    return at(l) + "a window member is out of range";
                if (j >= 0 && seen[j]++) return at(l) + "a position lies in two windows";
            }
            for (int count : seen)
                if (count == 0) return at(l) + "a position lies in no window";
        }
        rows = ly.out_rows, cols = ly.out_cols, channels = ly.out_channels;
    }
    if (rows * cols != 1) return "the last layer does not reach a single position";
    if (channels != p.classes) return "the last layer does not have one output per class";
    return {};
}

}  // namespace tmm
