// The runtime description of a network that every backend executes: the typed expression
// (tmm/dsl) is checked at compile time, then lowered to this plain list of layers.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

namespace tmm {

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

}  // namespace tmm
