// Tutorial 3: classify images with missing pixels. The model marginalises what is missing in
// the same forward pass: its outputs are log P(observed pixels | y), exactly.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <tmm/tmm.hpp>
#include <vector>

// 4x4 images, one pixel per patch, two Gaussians ("dark", "bright"), two classes: a bright
// left half (class 0) or a bright right half (class 1). A CP model with one term per class.
constexpr auto halves = tmm::cp<tmm::input<4, 4>, tmm::gaussians<2>, 1, 2, 2>;
constexpr int dark = 0, bright = 1;

// Parameters would come from training; here we write them down. Conv weights are stored as
// logits theta (log W = theta - logsumexp theta), so log w itself is a valid choice.
void set_parameters(tmm::parameters<float>& theta) {
    theta.mean = {-0.5f, 0.5f};                              // per component, per coordinate
    theta.log_precision = {std::log(16.f), std::log(16.f)};  // standard deviation 0.25
    // Layer 0, one weight set per position j: term z expects bright pixels on its half.
    for (int j = 0; j < 16; ++j)
        for (int z = 0; z < 2; ++z) {
            const bool left = j % 4 < 2;
            const int expected = left == (z == 0) ? bright : dark;
            for (int d = 0; d < 2; ++d)
                theta.theta[0][(j * 2 + z) * 2 + d] = std::log(d == expected ? 0.8f : 0.2f);
        }
    // Layer 1 is the global product pooling (no weights). Layer 2 is the class layer: class
    // y is term y, with weight 1 / (1 + e^-30) on it and e^-30 / (1 + e^-30) on the other.
    theta.theta[2] = {0.f, -30.f, -30.f, 0.f};
    theta.log_prior = {std::log(0.3f), std::log(0.7f)};  // P(y): class 1 is more common
}

int main() {
    tmm::model model{halves};
    set_parameters(model.params());

    const float nan = std::nanf("");
    const float b = 0.5f, d = -0.5f, x = 123.f;  // x: whatever sits in a masked slot
    // Five images, row-major, and their masks (1 = observed).
    // clang-format off
    const std::vector<float> values = {
        b, b, d, d,  b, b, d, d,  b, b, d, d,  b, b, d, d,  // complete, bright left
        x, x, d, d,  x, x, d, d,  x, x, d, d,  x, x, d, d,  // left half masked
        nan, nan, d, d,  nan, nan, d, d,  nan, nan, d, d,  nan, nan, d, d,  // left half NaN
        x, x, x, b,  x, x, x, x,  x, x, x, x,  x, x, x, x,  // one bright pixel, top right
        x, x, x, x,  x, x, x, x,  x, x, x, x,  x, x, x, x,  // nothing observed
    };
    const std::vector<std::uint8_t> mask = {
        1, 1, 1, 1,  1, 1, 1, 1,  1, 1, 1, 1,  1, 1, 1, 1,
        0, 0, 1, 1,  0, 0, 1, 1,  0, 0, 1, 1,  0, 0, 1, 1,
        1, 1, 1, 1,  1, 1, 1, 1,  1, 1, 1, 1,  1, 1, 1, 1,
        0, 0, 0, 1,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
    };
    // clang-format on
    const tmm::observations<float> batch{5, values, mask};

    // log P(X | y), 5 x 2, on the scalar reference backend.
    const std::vector<float> out = model.log_likelihoods(batch, tmm::backends::reference{});
    const std::vector<float>& prior = model.params().log_prior;
    const std::vector<int> labels = tmm::predict<float>(out, prior);
    const std::vector<float> evidence = tmm::log_marginal<float>(out, prior);

    const char* names[] = {"complete", "left half masked", "left half NaN", "one bright pixel",
                           "nothing observed"};
    for (int i = 0; i < 5; ++i) {
        const float posterior = std::exp(out[i * 2 + 1] + prior[1] - evidence[i]);
        std::printf(
            "%-17s log P(X|y) = %8.3f %8.3f   log P(X) = %8.3f   P(y=1|X) = %-9.3g "
            "prediction %d\n",
            names[i], out[i * 2], out[i * 2 + 1], evidence[i], posterior, labels[i]);
    }

    // What the numbers say: the placeholder in a missing slot changes nothing, a mask and a
    // NaN are the same, and with nothing observed the likelihoods are log 1 = 0 and the
    // prediction is the prior's favourite.
    const bool same = out[2] == out[4] && out[3] == out[5];
    const bool empty = out[8] == 0.f && out[9] == 0.f && labels[4] == 1;
    const bool expected = labels[0] == 0 && labels[1] == 0 && labels[3] == 1;
    return same && empty && expected ? 0 : 1;
}
