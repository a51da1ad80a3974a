// Throughput of the thrust backend on the published HT model: marginalised inference (half
// of the pixels missing, batches of --batch images) and training steps (tmm::train: batch
// assembly, the recipe's loss, forward and backward pass, the Nadam update) at that batch,
// in images per second, printed as one JSON object per backend. Built for thrust's TBB
// device system (where --baseline also measures the CPU backend in the same run) and, with
// nvcc, for CUDA (bench_thrust_cuda: exit code 77 without a GPU).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <tmm/tmm.hpp>
#include <tmm/train/train.hpp>
#include <vector>

#if defined(TMM_BENCH_CUDA)
#include "thrust_cuda_entry.hpp"
using under_test = tmm::cuda_entry::backend;
#else
#include <tbb/info.h>

#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/backends/thrust/thrust.hpp>
using under_test = tmm::backends::thrust;
#endif

namespace {

struct workload {
    tmm::plan plan = tmm::make_plan(tmm::published_ht);
    tmm::parameters<float> theta = tmm::zero_parameters<float>(plan);
    std::vector<float> values;
    std::vector<std::uint8_t> observed;
    std::vector<int> labels;
    std::size_t count = 0;

    explicit workload(std::size_t n) : count(n) {
        std::mt19937_64 rng(1);
        std::uniform_real_distribution<float> pixel(-0.5f, 0.5f);  // the model's input scale
        std::bernoulli_distribution seen(0.5);
        std::uniform_int_distribution<int> label(0, plan.classes - 1);
        for (std::size_t i = 0; i < n * std::size_t(plan.pixels()); ++i)
            values.push_back(pixel(rng)), observed.push_back(seen(rng));
        for (std::size_t i = 0; i < n; ++i) labels.push_back(label(rng));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (auto& v : theta.mean) v = 0.3f * normal(rng);
        tmm::initialize_weights(plan, theta, 1);
    }
};

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <class Backend>
nlohmann::json measure(const std::string& name, const std::string& device, workload& w,
                       std::size_t batch, std::size_t repeats) {
    const tmm::observations<float> x{
        batch, std::span<const float>(w.values).first(batch * std::size_t(w.plan.pixels())),
        std::span<const std::uint8_t>(w.observed).first(batch * std::size_t(w.plan.pixels()))};
    Backend::log_likelihoods(w.plan, w.theta, x);  // warm-up: allocations, first upload
    auto start = std::chrono::steady_clock::now();
    for (std::size_t r = 0; r < repeats; ++r) Backend::log_likelihoods(w.plan, w.theta, x);
    const double infer = double(repeats * batch) / seconds_since(start);

    const tmm::labelled_images data{w.count, w.values, {}, w.labels};
    tmm::training_options options;
    options.batch = batch;
    options.iterations = 1;
    auto theta = w.theta;
    tmm::train<Backend>(w.plan, theta, data, options);  // warm-up
    options.iterations = repeats;
    start = std::chrono::steady_clock::now();
    tmm::train<Backend>(w.plan, theta, data, options);
    const double train = double(repeats * batch) / seconds_since(start);
    return {{"backend", name},   {"device", device},     {"model", "published_ht"},
            {"batch", batch},    {"infer_img_s", infer}, {"train_img_s", train},
            {"repeats", repeats}};
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Throughput of the thrust backend on the published HT model"};
    std::size_t batch = 1024, repeats = 5;
    app.add_option("--batch", batch, "images per call and per training step")
        ->check(CLI::PositiveNumber);
    app.add_option("--repeats", repeats, "timed calls and training steps")
        ->check(CLI::PositiveNumber);
#if !defined(TMM_BENCH_CUDA)
    bool baseline = false;
    app.add_flag("--baseline", baseline, "also measure the CPU backend in the same run");
#endif
    CLI11_PARSE(app, argc, argv);

#if defined(TMM_BENCH_CUDA)
    std::string device;
    if (!tmm::cuda_entry::device_available(device)) {
        std::fprintf(stderr, "bench_thrust_cuda: skipped: %s\n", device.c_str());
        return 77;
    }
#else
    const std::string device = "cpu via thrust's TBB device system (" +
                               std::to_string(tbb::info::default_concurrency()) + " threads)";
#endif
    workload w(std::max<std::size_t>(batch, 2048));
    std::cout << measure<under_test>("thrust", device, w, batch, repeats).dump() << std::endl;
#if !defined(TMM_BENCH_CUDA)
    if (baseline)
        std::cout << measure<tmm::backends::cpu>(
                         "cpu",
                         "cpu (" + std::to_string(tbb::info::default_concurrency()) + " threads)",
                         w, batch, repeats)
                         .dump()
                  << std::endl;
#endif
    return 0;
}
