// The `tmm` program: train a Tensorial Mixture Model on 28x28 images, evaluate it with pixels
// missing, and run the missing-data experiment. Exit codes: 0 success, 1 a runtime failure
// (unreadable or malformed files, training errors), 2 a bad command line.
#include "cli.hpp"
#include "generate.hpp"
#include "validators.hpp"

#include <tbb/global_control.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <vector>

namespace {

using namespace tmm::cli;

const std::map<std::string, backend_kind> backends = {
    {"cpu", backend_kind::cpu},
    {"reference", backend_kind::reference},
#if defined(TMM_CLI_THRUST)
    {"thrust", backend_kind::thrust},
#endif
};
const std::map<std::string, impute_kind> imputations = {{"marginalize", impute_kind::marginalize},
                                                        {"mean", impute_kind::mean},
                                                        {"zero", impute_kind::zero}};
const std::vector<std::string> subcommands = {"train",  "eval",    "experiment",
                                              "sample", "inpaint", "visualise"};

constexpr const char* data_help =
    "fashion-mnist (Debian's dataset-fashion-mnist package), mnist (made by "
    "scripts/fetch-mnist), or a directory holding train-images-idx3-ubyte, "
    "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each may be "
    ".gz); images must be 28x28 single-channel";
constexpr const char* backend_help =
    "cpu (vectorised, multi-threaded), "
#if defined(TMM_CLI_THRUST)
    "thrust (the thrust backend on thrust's TBB device system, i.e. on the CPU), "
#endif
    "or reference (scalar, slow; for debugging)";
constexpr const char* missing_help =
    "which test pixels are missing: none; iid:P (each pixel independently with probability P); "
    "rects:N:W (N squares of side W, each inside the image, overlaps allowed); delete:N (N "
    "non-zero pixels set to 0 and missing)";
constexpr const char* impute_help =
    "what the model does with a missing pixel: marginalize (integrate it out exactly); mean "
    "(replace it by that pixel's mean over the training images); zero (replace it by 0 on the "
    "model's input scale (v - 127.5) / 255, i.e. the raw value 127.5, mid-grey)";
constexpr const char* threads_help = "worker threads (default: every core)";

// A string option restricted to the keys of `choices`; the value is looked up after parsing.
template <class T>
CLI::Option* add_choice(CLI::App* app, const std::string& flag, std::string& text,
                        const std::map<std::string, T>& choices, const std::string& help) {
    std::vector<std::string> keys;
    for (const auto& [key, value] : choices) keys.push_back(key);
    return app->add_option(flag, text, help)->check(CLI::IsMember(keys))->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{
        "tmm: Tensorial Mixture Models that classify images with missing pixels by exact "
        "marginalisation",
        "tmm"};
    app.set_version_flag("--version", "tmm 0.1.0");
    app.require_subcommand(1, 1);

    std::size_t threads = 0;
    auto add_threads = [&](CLI::App* sub) {
        return sub->add_option("--threads", threads, threads_help)->check(positive_integer);
    };

    std::string train_backend = "cpu", eval_backend = "cpu", experiment_backend = "cpu";
    std::string eval_impute = "marginalize";

    // tmm train
    train_command train;
    std::size_t train_iterations = 0;
    CLI::App* train_app = app.add_subcommand(
        "train", "Train a model with the published recipe and save it (progress on stderr)");
    train_app->add_option("--data", train.data, data_help)->required();
    train_app->add_option("--arch", train.architecture, "ht (deep, published) or cp (shallow)")
        ->required()
        ->check(CLI::IsMember({"ht", "cp"}));
    train_app->add_option("--out", train.out, "the model file to write")->required();
    CLI::Option* train_iterations_option =
        train_app
            ->add_option("--iterations", train_iterations,
                         "optimiser steps (default: the recipe's 25000)")
            ->check(positive_integer);
    train_app->add_option("--batch", train.batch, "images per step")
        ->capture_default_str()
        ->check(positive_integer);
    train_app->add_option("--seed", train.seed, "seed of the whole training run")
        ->capture_default_str()
        ->check(seed_value);
    add_threads(train_app);
    add_choice(train_app, "--backend", train_backend, backends, backend_help);

    // tmm eval
    eval_command eval;
    CLI::App* eval_app =
        app.add_subcommand("eval", "Accuracy of a saved model on the test images, pixels missing");
    eval_app->add_option("--model", eval.model, "a model file written by tmm train")->required();
    eval_app->add_option("--data", eval.data, data_help)->required();
    eval_app->add_option("--missing", eval.missing, missing_help)->capture_default_str();
    add_choice(eval_app, "--impute", eval_impute, imputations, impute_help);
    eval_app
        ->add_option("--seed", eval.seed,
                     "seed of the masks (tmm experiment with the same seed draws the same ones)")
        ->capture_default_str()
        ->check(seed_value);
    eval_app
        ->add_option("--shift-average", eval.shift_radius,
                     "R > 0: predict from the class log-likelihoods summed over the (2R+1)^2 "
                     "shifts of the image by at most R pixels, pixels shifted in from outside "
                     "missing (the published shift-averaged prediction; R = 1: 9 shifts, 9x the "
                     "time)")
        ->capture_default_str()
        ->check(shift_radius);
    eval_app->add_flag("--json", eval.json,
                       "print one JSON object (accuracy, count, missing, impute, ...) instead");
    add_threads(eval_app);
    add_choice(eval_app, "--backend", eval_backend, backends, backend_help);

    // tmm experiment
    experiment_command experiment;
    std::size_t experiment_iterations = 0;
    bool experiment_out_given = false;
    CLI::App* experiment_app = app.add_subcommand(
        "experiment",
        "Train the HT model, then evaluate it with pixels missing (none; iid:P for P in 0.25 "
        "0.5 0.75 0.9 0.95 0.99; rects:N:W for N in 1 2 3, W in 7 11 15) by marginalisation, "
        "mean and zero imputation, and 5-nearest neighbours; writes DIR/experiment.json, "
        "DIR/model.tmm and DIR/iid.svg");
    experiment_app->add_option("--data", experiment.data, data_help)->required();
    CLI::Option* experiment_out_option = experiment_app->add_option(
        "--out", experiment.out, "output directory (default: out/<data set name>)");
    CLI::Option* experiment_iterations_option =
        experiment_app
            ->add_option("--iterations", experiment_iterations,
                         "training steps (default: the recipe's 25000)")
            ->check(positive_integer);
    experiment_app->add_option("--batch", experiment.batch, "training images per step")
        ->capture_default_str()
        ->check(positive_integer);
    experiment_app
        ->add_option("--seed", experiment.seed, "seed of the training run and of the masks")
        ->capture_default_str()
        ->check(seed_value);
    add_threads(experiment_app);
    experiment_app
        ->add_option("--knn-count", experiment.knn_count,
                     "kNN runs on the first N test images (it is slow on all of them)")
        ->capture_default_str()
        ->check(positive_integer);
    add_choice(experiment_app, "--backend", experiment_backend, backends, backend_help);

    // tmm sample, tmm inpaint, tmm visualise (generate.cpp)
    for (CLI::App* sub : add_generation_commands(app)) add_threads(sub);

    // CLI11 would only say that a subcommand is required; name the word it did not know.
    if (argc > 1 && argv[1][0] != '-' &&
        std::find(subcommands.begin(), subcommands.end(), argv[1]) == subcommands.end()) {
        fmt::print(stderr,
                   "tmm: unknown subcommand \"{}\"; expected train, eval, experiment, sample, "
                   "inpaint or visualise\n"
                   "Run 'tmm --help' for more information.\n",
                   argv[1]);
        return 2;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --version exit 0; every parse error exits 2, reported in the same form
        // as the subcommands' own errors.
        if (e.get_exit_code() == 0) return app.exit(e);
        const std::string command =
            argc > 1 && argv[1][0] != '-' ? "tmm " + std::string(argv[1]) : "tmm";
        fmt::print(stderr, "{}: error: {}\nRun '{} --help' for the options.\n", command, e.what(),
                   command);
        return 2;
    }
    train.backend = backends.at(train_backend);
    eval.backend = backends.at(eval_backend);
    experiment.backend = backends.at(experiment_backend);
    eval.impute = imputations.at(eval_impute);
    if (train_iterations_option->count() > 0) train.iterations = train_iterations;
    if (experiment_iterations_option->count() > 0) experiment.iterations = experiment_iterations;
    experiment_out_given = experiment_out_option->count() > 0;

    CLI::App* chosen = app.get_subcommands().front();
    const std::string name = chosen->get_name();
    try {
        std::unique_ptr<tbb::global_control> limit;
        if (threads > 0)
            limit = std::make_unique<tbb::global_control>(
                tbb::global_control::max_allowed_parallelism, threads);
        if (chosen == train_app) return run_train(train);
        if (chosen == eval_app) return run_eval(eval);
        if (const int code = run_generation(chosen); code >= 0) return code;
        if (!experiment_out_given) {
            // The data set's name: "mnist", or the directory's own name, also for "." or
            // "dir/" or "a/../b" (made absolute and normal first, so never "." or "..").
            std::filesystem::path data(experiment.data);
            if (std::filesystem::is_directory(data))
                data = std::filesystem::absolute(data).lexically_normal();
            if (data.filename().empty()) data = data.parent_path();
            std::string base = data.filename().string();
            if (base == "." || base == "..") base.clear();
            experiment.out =
                (std::filesystem::path("out") / (base.empty() ? "experiment" : base)).string();
        }
        return run_experiment(experiment);
    } catch (const usage_error& e) {
        std::fflush(stdout);
        fmt::print(stderr, "tmm {}: error: {}\nRun 'tmm {} --help' for the options.\n", name,
                   e.what(), name);
        return 2;
    } catch (const std::bad_alloc&) {
        std::fflush(stdout);
        fmt::print(stderr, "tmm {}: error: out of memory\n", name);
        return 1;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        fmt::print(stderr, "tmm {}: error: {}\n", name, e.what());
        return 1;
    } catch (...) {
        std::fflush(stdout);
        fmt::print(stderr, "tmm {}: error: an unknown exception stopped the program\n", name);
        return 1;
    }
}
