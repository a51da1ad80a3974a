// `throughput`: end-to-end speed of the CPU backend on the published HT model, through the
// public API only. Training steps (gradients + Nadam update) on real images with the recipe's
// random marginalisation; inference with half the pixels missing (marginalised) and with none
// missing; the conv layers' useful GFLOP/s; peak memory. `--json` prints one JSON object,
// which bench/compare-peer reads to set tmm beside the PyTorch peer.
#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/data/missing.hpp>
#include <tmm/data/sources.hpp>
#include <tmm/dsl/decompositions.hpp>
#include <tmm/io/model_file.hpp>
#include <tmm/model.hpp>
#include <tmm/train/images.hpp>
#include <tmm/train/train.hpp>

#include <sys/resource.h>

#include <tbb/global_control.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_commit.hpp"  // TMM_BENCH_COMMIT, written at build time by commit.cmake

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

// Per-call wall times of one measurement; rates use the median, which a noisy neighbour moves
// least.
struct timing {
    std::vector<double> seconds;

    double median() const {
        std::vector<double> s = seconds;
        std::sort(s.begin(), s.end());
        const std::size_t n = s.size();
        return n % 2 == 1 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    }
};

// Calls `step` `warmup` times untimed (thread-local buffers grow on the first call), then
// times calls until `budget` seconds have passed and at least `min_calls` were made.
template <class Step>
timing measure(double budget, int warmup, Step&& step, std::size_t min_calls = 5) {
    for (int i = 0; i < warmup; ++i) step();
    timing t;
    const auto start = clock_type::now();
    while (t.seconds.size() < min_calls ||
           std::chrono::duration<double>(clock_type::now() - start).count() < budget) {
        const auto before = clock_type::now();
        step();
        t.seconds.push_back(std::chrono::duration<double>(clock_type::now() - before).count());
    }
    return t;
}

double peak_rss_mb() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return double(usage.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos)
                return line.substr(line.find_first_not_of(' ', colon + 1));
        }
    return "unknown";
}

// Useful FLOPs of one forward pass per image: 2 * positions * in * out for every conv layer
// (class layer included), the count the PyTorch peer uses. A training step does three such
// products (forward, and the two backward ones).
double conv_flops_per_image(const tmm::plan& p) {
    double flops = 0;
    for (const tmm::layer& l : p.layers)
        if (l.kind == tmm::layer_kind::conv)
            flops += 2.0 * l.in_positions() * l.in_channels * l.out_channels;
    return flops;
}

// One training batch with its random marginalisation drawn in advance, so that the timed
// step is the library's work alone (gradients and the optimiser), as in the peer.
struct training_batch {
    std::vector<float> values;
    std::vector<std::uint8_t> observed, kept_positions;
    std::vector<int> labels;
};

std::vector<training_batch> draw_training_batches(const tmm::plan& p,
                                                  const tmm::data::dataset& train,
                                                  std::size_t batch, std::size_t count,
                                                  const tmm::training_options& options) {
    std::mt19937_64 rng(options.seed);
    std::uniform_int_distribution<std::size_t> pick(0, train.count - 1);
    std::bernoulli_distribution keep(options.pixel_keep), keep_position(options.position_keep);
    const std::size_t pixels = std::size_t(p.pixels());
    const std::size_t level = tmm::marginalized_level(p, options);
    const std::size_t positions = level < p.layers.size() ? p.layers[level].out_positions() : 0;
    std::vector<training_batch> batches(count);
    for (training_batch& b : batches) {
        b.values.resize(batch * pixels);
        b.observed.resize(batch * pixels);
        b.labels.resize(batch);
        b.kept_positions.resize(batch * positions);
        for (std::size_t i = 0; i < batch; ++i) {
            const std::size_t image = pick(rng);
            b.labels[i] = train.labels[image];
            const auto bytes = train.image(image);
            for (std::size_t j = 0; j < pixels; ++j) {
                b.values[i * pixels + j] = tmm::normalize_pixel(bytes[j]);
                b.observed[i * pixels + j] = keep(rng);
            }
        }
        for (auto& k : b.kept_positions) k = keep_position(rng);
    }
    return batches;
}

struct settings {
    std::size_t threads = std::max(1u, std::thread::hardware_concurrency());
    double seconds = 3.0;
    std::string data = "fashion-mnist", model_file;
    std::size_t train_batch = 128;
    std::vector<std::size_t> infer_batches = {128, 1024};
    double missing = 0.5;
    double pixel_keep = 0.5, position_keep = 0.5;  // the recipe's random marginalisation
    std::uint64_t seed = 0;
    bool json = false;
};

// The model to time: a saved one, or the recipe's initialisation (GMM fit of the Gaussians,
// Dirichlet conv weights) before any training.
tmm::parameters<float> make_parameters(const tmm::plan& p, const settings& s,
                                       const tmm::data::dataset& train, std::string& how) {
    if (!s.model_file.empty()) {
        how = "model file " + s.model_file;
        return tmm::load_model(s.model_file, p).params;
    }
    // The recipe's patches are drawn from the first images only, to keep the set-up's memory
    // small (all 60,000 as floats would add 188 MB to the peak RSS).
    const std::size_t count = std::min<std::size_t>(train.count, 10000);
    const std::vector<float> values =
        tmm::normalize_pixels(std::span(train.pixels).first(count * train.image_size()));
    const tmm::labelled_images images{count, values, {}, std::span(train.labels).first(count)};
    tmm::training_options options;
    options.seed = s.seed;
    tmm::parameters<float> theta = tmm::zero_parameters<float>(p);
    tmm::fit_gaussians(p, theta, images, options);
    tmm::initialize_weights(p, theta, s.seed);
    how = fmt::format(
        "the recipe's initialisation, untrained: GMM fit on {} patches of the first {} training "
        "images, Dirichlet conv weights (pass --model for a trained model)",
        options.gmm_patches, count);
    return theta;
}

nlohmann::json run(const settings& s) {
    const tmm::plan p = tmm::make_plan(tmm::published_ht);
    fmt::print(stderr, "throughput: loading {}\n", s.data);
    const tmm::data::split split = tmm::data::load_split(s.data);
    if (split.train.rows != p.height || split.train.cols != p.width ||
        split.train.channels != p.image_channels)
        throw std::runtime_error(fmt::format(
            "data set \"{}\" holds {}x{}x{} images; the published HT model takes {}x{}x{}",
            split.name, split.train.rows, split.train.cols, split.train.channels, p.height, p.width,
            p.image_channels));
    const std::size_t largest = *std::max_element(s.infer_batches.begin(), s.infer_batches.end());
    if (largest > split.test.count)
        throw std::runtime_error(fmt::format("--infer-batches {} is more than the {} test images",
                                             largest, split.test.count));

    fmt::print(stderr, "throughput: initialising the model\n");
    std::string how;
    const auto init_start = clock_type::now();
    tmm::parameters<float> theta = make_parameters(p, s, split.train, how);
    const double init_seconds =
        std::chrono::duration<double>(clock_type::now() - init_start).count();

    tmm::training_options options;  // the recipe's Nadam and loss
    options.seed = s.seed;
    options.pixel_keep = s.pixel_keep;
    options.position_keep = s.position_keep;
    const std::vector<training_batch> batches =
        draw_training_batches(p, split.train, s.train_batch, 8, options);

    // inputs for inference: the first test images, i.i.d. missing pixels marked NaN as well
    const tmm::data::missing_spec spec{tmm::data::missing_kind::iid, s.missing, 0, 0};
    const tmm::data::masked_images masked = tmm::data::make_missing(spec, split.test, s.seed);
    const std::size_t pixels = std::size_t(p.pixels());
    std::vector<float> test_values(largest * pixels), marginal_values(largest * pixels);
    std::vector<std::uint8_t> observed(masked.observed.begin(),
                                       masked.observed.begin() + std::ptrdiff_t(largest * pixels));
    for (std::size_t i = 0; i < largest * pixels; ++i) {
        test_values[i] = tmm::normalize_pixel(split.test.pixels[i]);
        marginal_values[i] = observed[i] ? test_values[i] : std::numeric_limits<float>::quiet_NaN();
    }
    const double setup_rss = peak_rss_mb();

    // training: gradients of the recipe's loss, then Nadam on every conv layer
    fmt::print(stderr, "throughput: training steps of batch {}\n", s.train_batch);
    const std::size_t level = tmm::marginalized_level(p, options);
    tmm::nadam optimiser(options);
    tmm::parameters<float> grad;
    std::size_t step = 0;
    double last_loss = 0;
    const timing train = measure(s.seconds, 3, [&] {
        const training_batch& b = batches[step % batches.size()];
        tmm::observations<float> x(s.train_batch, b.values, b.observed);
        if (!b.kept_positions.empty())
            x.marginalized_layer = level, x.kept_positions = b.kept_positions;
        last_loss = tmm::training_step<tmm::backends::cpu>(p, theta, x, b.labels, options,
                                                           optimiser, grad, step);
        ++step;
    });
    const double train_rss = peak_rss_mb();

    // inference, marginalised and with nothing missing
    auto inputs = [&](std::size_t batch, bool marginalised) {
        return marginalised
                   ? tmm::observations<float>(batch,
                                              std::span(marginal_values).first(batch * pixels),
                                              std::span(observed).first(batch * pixels))
                   : tmm::observations<float>(batch, std::span(test_values).first(batch * pixels));
    };
    // The parameters are prepared once for every inference call, as `tmm eval` and
    // shift-averaged prediction do (tmm::with_inference); that preparation is timed on its own.
    const tmm::backends::cpu::prepared_network net =
        tmm::backends::cpu::prepare_inference(p, theta);
    const timing prepare =
        measure(s.seconds / 3, 2, [&] { (void)tmm::backends::cpu::prepare_inference(p, theta); });
    auto infer = [&](const tmm::observations<float>& x) {
        const std::vector<float> out = tmm::backends::cpu::log_likelihoods(net, x);
        if (!std::isfinite(out.front()))
            throw std::runtime_error("inference returned a non-finite log-likelihood");
    };

    const double flops = conv_flops_per_image(p);
    nlohmann::json result = {
        {"benchmark", "tmm throughput"},
        {"model", "published_ht"},
        {"backend", "cpu"},
        {"threads",
         tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism)},
        {"seconds_per_measurement", s.seconds},
        {"data", split.name},
        {"init", how},
        {"init_seconds", init_seconds},
        {"conv_flops_per_image", flops},
        {"train_batch", s.train_batch},
        {"train_steps", train.seconds.size()},
        {"train_ms_median", 1e3 * train.median()},
        {"train_img_s", double(s.train_batch) / train.median()},
        {"train_conv_gflops", 3 * flops * double(s.train_batch) / train.median() / 1e9},
        {"train_loss_last", last_loss},
        {"train_marginalisation",
         level < p.layers.size()
             ? fmt::format("pixels kept with probability {}, positions of layer {} ({} of them) "
                           "with probability {}",
                           options.pixel_keep, level, p.layers[level].out_positions(),
                           options.position_keep)
             : fmt::format("pixels kept with probability {}", options.pixel_keep)},
        {"infer_missing_rate", s.missing},
        {"infer_prepare_ms_median", 1e3 * prepare.median()},
    };
    for (std::size_t batch : s.infer_batches) {
        if (batch == largest) continue;
        fmt::print(stderr, "throughput: inference of batch {}, {}% of the pixels missing\n", batch,
                   100 * s.missing);
        const tmm::observations<float> x = inputs(batch, true);
        const timing t = measure(s.seconds, 2, [&] { infer(x); });
        result[fmt::format("infer_img_s_{}", batch)] = double(batch) / t.median();
        result[fmt::format("infer_ms_median_{}", batch)] = 1e3 * t.median();
    }

    // The largest batch with and without missing pixels, call after call, so that the cost
    // of marginalisation is a ratio of neighbouring measurements on a noisy machine.
    fmt::print(stderr,
               "throughput: inference of batch {}, {}% of the pixels missing and none missing, "
               "alternately\n",
               largest, 100 * s.missing);
    const tmm::observations<float> with_missing = inputs(largest, true),
                                   complete = inputs(largest, false);
    timing marginal, full;
    std::size_t calls = 0;
    measure(
        2 * s.seconds, 2,
        [&] {
            const bool odd = calls++ % 2 == 1;
            const auto before = clock_type::now();
            infer(odd ? complete : with_missing);
            (odd ? full : marginal)
                .seconds.push_back(
                    std::chrono::duration<double>(clock_type::now() - before).count());
        },
        10);
    const double marginal_rate = double(largest) / marginal.median(),
                 full_rate = double(largest) / full.median();
    result[fmt::format("infer_img_s_{}", largest)] = marginal_rate;
    result[fmt::format("infer_ms_median_{}", largest)] = 1e3 * marginal.median();
    result[fmt::format("infer_full_img_s_{}", largest)] = full_rate;
    result["conv_gflops"] = flops * marginal_rate / 1e9;
    result["conv_gflops_full"] = flops * full_rate / 1e9;
    // > 0: marginalising costs that fraction more time than inference with nothing missing
    result["marginalisation_overhead"] = full_rate / marginal_rate - 1.0;

    result["peak_rss_mb_setup"] = setup_rss;
    result["peak_rss_mb_train"] = train_rss;
    result["peak_rss_mb"] = peak_rss_mb();
    result["host"] = {{"cpu", cpu_model()},
                      {"hardware_threads", std::thread::hardware_concurrency()}};
    result["compiler"] = __VERSION__;
    result["commit"] = TMM_BENCH_COMMIT;
    return result;
}

void print_text(const nlohmann::json& r, const settings& s) {
    const auto threads = r["threads"].get<std::size_t>();
    fmt::print("tmm throughput, published HT model, CPU backend, {} thread{} ({}, commit {})\n",
               threads, threads == 1 ? "" : "s", r["host"]["cpu"].get<std::string>(),
               r["commit"].get<std::string>());
    fmt::print("model: {}\n", r["init"].get<std::string>());
    fmt::print("training, batch {:<5}        {:>10.0f} images/s  {:>7.1f} conv GFLOP/s\n",
               s.train_batch, r["train_img_s"].get<double>(), r["train_conv_gflops"].get<double>());
    for (std::size_t batch : s.infer_batches)
        fmt::print("inference, batch {:<5} {:>3.0f}% missing {:>10.0f} images/s\n", batch,
                   100 * s.missing, r[fmt::format("infer_img_s_{}", batch)].get<double>());
    const std::size_t largest = *std::max_element(s.infer_batches.begin(), s.infer_batches.end());
    fmt::print("inference, batch {:<5} none missing {:>10.0f} images/s\n", largest,
               r[fmt::format("infer_full_img_s_{}", largest)].get<double>());
    fmt::print("preparing the parameters for inference (once per model): {:.2f} ms\n",
               r["infer_prepare_ms_median"].get<double>());
    fmt::print("conv GFLOP/s in marginalised inference (batch {}): {:.1f}\n", largest,
               r["conv_gflops"].get<double>());
    fmt::print("marginalisation overhead: {:+.1f}%\n",
               100 * r["marginalisation_overhead"].get<double>());
    fmt::print("peak RSS: {:.0f} MB after setup, {:.0f} MB after training, {:.0f} MB at the end\n",
               r["peak_rss_mb_setup"].get<double>(), r["peak_rss_mb_train"].get<double>(),
               r["peak_rss_mb"].get<double>());
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "Throughput of the CPU backend on the published HT model: training steps, marginalised "
        "inference, conv GFLOP/s and peak memory",
        "throughput"};
    settings s;
    app.add_option("--threads", s.threads, "worker threads")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t(1), std::size_t(1024)));
    app.add_option("--seconds", s.seconds, "wall time of each measurement (at least 5 calls)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 3600.0));
    app.add_option("--data", s.data,
                   "fashion-mnist (Debian's dataset-fashion-mnist package), mnist (made by "
                   "scripts/fetch-mnist) or a directory of the four IDX files")
        ->capture_default_str();
    app.add_option("--model", s.model_file,
                   "a published-HT model file written by `tmm train` (default: a freshly "
                   "initialised model)")
        ->check(CLI::ExistingFile);
    app.add_option("--train-batch", s.train_batch, "images per training step")
        ->capture_default_str()
        ->check(CLI::Range(std::size_t(1), std::size_t(1) << 16));
    app.add_option("--infer-batches", s.infer_batches, "inference batch sizes")
        ->delimiter(',')
        ->capture_default_str()
        ->check(CLI::Range(std::size_t(1), std::size_t(1) << 16));
    app.add_option("--missing", s.missing, "fraction of pixels missing (i.i.d.) in inference")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--train-pixel-keep", s.pixel_keep,
                   "training: probability that a pixel stays observed (1: none marginalised)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--train-position-keep", s.position_keep,
                   "training: probability that a position of the 8x8 level stays (1: none "
                   "marginalised)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--seed", s.seed, "seed of the batches, masks and initialisation")
        ->capture_default_str();
    app.add_flag("--json", s.json, "print one JSON object instead of a table");
    CLI11_PARSE(app, argc, argv);

    try {
        tbb::global_control limit(tbb::global_control::max_allowed_parallelism, s.threads);
        const nlohmann::json result = run(s);
        if (s.json)
            fmt::print("{}\n", result.dump());
        else
            print_text(result, s);
        return 0;
    } catch (const std::exception& e) {
        fmt::print(stderr, "throughput: error: {}\n", e.what());
        return 1;
    }
}
