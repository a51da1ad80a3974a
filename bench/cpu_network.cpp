// Google Benchmark of the CPU backend on the whole published HT model: marginalised inference
// (batch 128 and 1024, nothing or half of the pixels missing) and one training step (batch
// 128, half of the pixels and half of the 8x8 positions marginalised, as the trainer does).
// Items are images; FLOP/s counts 2 I O per position and image of every conv layer (the GEMMs),
// times 3 for a training step (forward, din and dtheta).
//
// Images: the first Fashion-MNIST test images when the data set is installed, else seeded noise
// on the same scale. Parameters: the model file named by $TMM_BENCH_MODEL (a trained model has
// sharper weights, hence more underflow, than a fresh one), else the recipe's initialisation
// (GMM on a few patches, Dirichlet weights). Threads: oneTBB's default, or --threads=N
// handled here before Google Benchmark's own flags.
#include <benchmark/benchmark.h>
#include <tbb/global_control.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/data/sources.hpp>
#include <tmm/io/model_file.hpp>
#include <tmm/tmm.hpp>
#include <tmm/train/images.hpp>
#include <tmm/train/train.hpp>
#include <vector>

namespace {

struct setup {
    tmm::plan plan = tmm::make_plan(tmm::published_ht);
    tmm::parameters<float> theta;
    std::vector<float> values;  // images x pixels
    std::vector<int> labels;
    std::size_t images = 0;

    setup() {
        const std::size_t pixels = plan.pixels();
        images = 2048;
        try {
            const tmm::data::split data = tmm::data::load_split("fashion-mnist");
            images = std::min(images, data.test.count);
            values = tmm::normalize_pixels(
                std::span<const std::uint8_t>(data.test.pixels).first(images * pixels));
            labels.assign(data.test.labels.begin(), data.test.labels.begin() + images);
        } catch (const std::exception&) {
            std::mt19937_64 rng(7);
            std::uniform_real_distribution<float> v(-0.5f, 0.5f);
            values.resize(images * pixels);
            for (float& x : values) x = v(rng);
            labels.resize(images);
            for (std::size_t i = 0; i < images; ++i) labels[i] = int(i % 10);
        }
        if (const char* file = std::getenv("TMM_BENCH_MODEL")) {
            theta = tmm::load_model(file, plan).params;
        } else {
            theta = tmm::zero_parameters<float>(plan);
            tmm::training_options options;
            options.gmm_patches = 20000;
            options.gmm_kmeans_iterations = 10;
            options.gmm_em_epochs = 1;
            const std::vector<std::uint8_t> none;
            tmm::labelled_images train{images, values, none, labels};
            tmm::fit_gaussians(plan, theta, train, options);
            tmm::initialize_weights(plan, theta, 0);
        }
    }

    double conv_flops_per_image() const {
        double f = 0;
        for (const tmm::layer& l : plan.layers)
            if (l.kind == tmm::layer_kind::conv)
                f += 2.0 * l.in_positions() * l.in_channels * l.out_channels;
        return f;
    }
};

const setup& shared_setup() {
    static const setup s;
    return s;
}

// A mask keeping each pixel with probability `keep` (seeded).
std::vector<std::uint8_t> mask(std::size_t n, double keep, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::bernoulli_distribution k(keep);
    std::vector<std::uint8_t> m(n);
    for (auto& v : m) v = k(rng);
    return m;
}

void set_counters(benchmark::State& state, double images, double flops_per_image) {
    state.SetItemsProcessed(std::int64_t(state.iterations() * images));
    state.counters["FLOP/s"] =
        benchmark::Counter(images * flops_per_image, benchmark::Counter::kIsIterationInvariantRate);
}

// args: batch, percent of pixels missing
void infer(benchmark::State& state) {
    const setup& s = shared_setup();
    const std::size_t batch = std::min<std::size_t>(state.range(0), s.images);
    const std::size_t pixels = s.plan.pixels();
    const std::vector<std::uint8_t> observed =
        mask(batch * pixels, 1.0 - double(state.range(1)) / 100.0, 1);
    const tmm::observations<float> x(batch, std::span<const float>(s.values).first(batch * pixels),
                                     observed);
    // prepared once, as tmm eval does (tmm::with_inference)
    const auto net = tmm::backends::cpu::prepare_inference(s.plan, s.theta);
    for (auto _ : state) {
        auto out = tmm::backends::cpu::log_likelihoods(net, x);
        benchmark::DoNotOptimize(out.data());
    }
    set_counters(state, double(batch), s.conv_flops_per_image());
}

// args: batch
void train_step(benchmark::State& state) {
    const setup& s = shared_setup();
    const std::size_t batch = std::min<std::size_t>(state.range(0), s.images);
    const std::size_t pixels = s.plan.pixels();
    const std::vector<std::uint8_t> observed = mask(batch * pixels, 0.5, 2);
    const std::size_t inner = 1;  // the trainer's default: the output of the first pooling
    const std::vector<std::uint8_t> kept =
        mask(batch * s.plan.layers[inner].out_positions(), 0.5, 3);
    tmm::observations<float> x(batch, std::span<const float>(s.values).first(batch * pixels),
                               observed);
    x.marginalized_layer = inner;
    x.kept_positions = kept;
    tmm::parameters<float> grad;
    const std::span<const int> labels(s.labels.data(), batch);
    for (auto _ : state) {
        auto out = tmm::backends::cpu::gradients(
            s.plan, s.theta, x,
            [&](std::span<const float> o, std::span<float> d) {
                tmm::classification_loss<float>(o, labels,
                                                std::span<const float>(s.theta.log_prior), 0.01, d);
            },
            grad, false);
        benchmark::DoNotOptimize(out.data());
    }
    set_counters(state, double(batch), 3 * s.conv_flops_per_image());
}

BENCHMARK(infer)
    ->ArgNames({"batch", "missing%"})
    ->Args({128, 0})
    ->Args({128, 50})
    ->Args({1024, 0})
    ->Args({1024, 50})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(train_step)->ArgNames({"batch"})->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
    std::unique_ptr<tbb::global_control> threads;
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], "--threads=", 10) == 0) {
            threads = std::make_unique<tbb::global_control>(
                tbb::global_control::max_allowed_parallelism, std::stoul(argv[i] + 10));
            for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
            --argc;
            break;
        }
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
