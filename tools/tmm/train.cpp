// `tmm train`: the published recipe on a data set, with a progress bar, then the model file
// and its clean test accuracy.
#include "cli.hpp"
#include "progress.hpp"

#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/backends/reference/reference.hpp>
#if defined(TMM_CLI_THRUST)
#include <tmm/backends/thrust/thrust.hpp>
#endif
#include <tmm/io/model_file.hpp>
#include <tmm/train/images.hpp>
#include <tmm/train/train.hpp>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>

namespace tmm::cli {

parameters<float> train_model(const plan& p, std::string_view architecture,
                              const data::dataset& train, const training_settings& settings) {
    const std::vector<float> values = normalize_pixels(train.pixels);
    const labelled_images images{train.count, values, {}, train.labels};

    training_options options;
    if (settings.iterations) options.iterations = *settings.iterations;
    options.batch = settings.batch;
    options.seed = settings.seed;
    // recipe.md: beta = 0.01 for HT on digits, 0.1 for the shallow CP model.
    if (architecture == "cp") options.generative_weight = 0.1;

    progress_bar bar;
    options.on_progress = [&](const training_progress& r) { bar.update(r); };
    options.progress_every = std::max<std::size_t>(1, options.iterations / 1000);

    // The trainer never draws more images per step than the training set holds.
    const std::size_t batch = std::min(options.batch, train.count);
    const std::string batch_note =
        batch < options.batch ? fmt::format(" (--batch {} is more than the {} training images)",
                                            options.batch, train.count)
                              : std::string();
    fmt::print(stderr,
               "training {} on {} images ({} backend): GMM initialisation of the Gaussians, then "
               "{} iterations of batch {}{}, seed {}\n",
               architecture, train.count, backend_name(settings.backend), options.iterations, batch,
               batch_note, options.seed);
    std::fflush(stderr);

    parameters<float> params = zero_parameters<float>(p);
    const auto start = std::chrono::steady_clock::now();
    try {
        if (settings.backend == backend_kind::cpu) fit<backends::cpu>(p, params, images, options);
#if defined(TMM_CLI_THRUST)
        else if (settings.backend == backend_kind::thrust)
            fit<backends::thrust>(p, params, images, options);
#endif
        else
            fit<backends::reference>(p, params, images, options);
    } catch (...) {
        bar.finish();
        throw;
    }
    bar.finish();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print(stderr, "trained in {}\n", clock_time(seconds));
    return params;
}

int run_train(const train_command& command) {
    check_data_name(command.data);
    check_output_path(command.out);
    const plan p = architecture_plan(command.architecture);
    const data::split split = load_data(command.data, p, command.architecture);

    const parameters<float> params =
        train_model(p, command.architecture, split.train,
                    {command.iterations, command.batch, command.seed, command.backend});
    save_model(command.out, p, params, command.architecture);
    fmt::print("wrote {} ({} architecture, {} parameters)\n", command.out, command.architecture,
               params.size());
    std::fflush(stdout);

    const data::dataset& test = split.test;
    const data::masked_images clean = data::make_missing(data::missing_spec{}, test, 0);
    const accuracy_result result =
        evaluate(p, params, command.backend,
                 make_inputs(clean, test.image_size(), test.count, impute_kind::marginalize, {}),
                 test.labels);
    fmt::print("clean test accuracy {:.2f}% ({} of {} test images of {})\n",
               100.0 * result.accuracy(), result.correct, result.count, split.name);
    return 0;
}

}  // namespace tmm::cli
