// `tmm experiment`, the main job: train the published HT model once on clean images, then
// classify the test set with pixels missing (i.i.d. and rectangles) by marginalisation,
// mean imputation, zero imputation, and 5-nearest neighbours over the observed pixels.
#include "cli.hpp"
#include "knn.hpp"
#include "svg_plot.hpp"

#include <tmm/io/model_file.hpp>
#include <tmm/train/train.hpp>

#include <tbb/global_control.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

namespace tmm::cli {

namespace {

// The protocols of recipe.md, spelled as --missing spells them.
std::vector<std::string> experiment_settings() {
    std::vector<std::string> settings = {"none"};
    for (const char* p : {"0.25", "0.5", "0.75", "0.9", "0.95", "0.99"})
        settings.push_back(std::string("iid:") + p);
    for (int n : {1, 2, 3})
        for (int w : {7, 11, 15}) settings.push_back(fmt::format("rects:{}:{}", n, w));
    return settings;
}

constexpr int knn_k = 5;
const std::vector<std::string> methods = {"tmm", "tmm-mean", "tmm-zero", "knn5"};

std::string percent(const accuracy_result& r) {
    return fmt::format("{:.2f}%", 100.0 * r.accuracy());
}

}  // namespace

int run_experiment(const experiment_command& command) {
    namespace fs = std::filesystem;
    check_data_name(command.data);
    const std::string architecture = "ht";
    const plan p = architecture_plan(architecture);

    // Every output is checked before the data is read and the model trained.
    const fs::path dir = command.out;
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir))
        throw std::runtime_error(fmt::format("cannot create the output directory {}: {}",
                                             dir.string(), ec ? ec.message() : "not a directory"));
    const fs::path json_path = dir / "experiment.json";
    const fs::path model_path = dir / "model.tmm";
    const fs::path svg_path = dir / "iid.svg";
    for (const fs::path& out : {json_path, model_path, svg_path}) check_output_path(out);

    const data::split split = load_data(command.data, p, architecture);
    const data::dataset& test = split.test;
    fmt::print("data set {}: {} training images, {} test images of {}x{}\n", split.name,
               split.train.count, test.count, test.rows, test.cols);
    std::fflush(stdout);

    const auto train_start = std::chrono::steady_clock::now();
    const parameters<float> params =
        train_model(p, architecture, split.train,
                    {command.iterations, command.batch, command.seed, command.backend});
    const double train_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();
    save_model(model_path, p, params, architecture);
    fmt::print("wrote {}\n", model_path.string());

    const std::vector<float> means = pixel_means(split.train);
    const std::size_t knn_count = std::min(command.knn_count, test.count);
    const tools::knn_index knn(split.train);

    fmt::print(
        "\naccuracy on the test set; tmm methods on all {} test images, knn5 on the first "
        "{}; masks drawn once per setting with seed {}\n",
        test.count, knn_count, command.seed);
    fmt::print("{:<12} {:>9} {:>9} {:>9} {:>9}  {:>7}\n", "missing", methods[0], methods[1],
               methods[2], methods[3], "time");
    std::fflush(stdout);

    // experiment.json: how the run was made, then one entry per setting and method.
    nlohmann::json report = {
        {"data", split.name},
        {"architecture", architecture},
        {"train_images", split.train.count},
        {"test_images", test.count},
        {"iterations", command.iterations.value_or(training_options{}.iterations)},
        {"batch", command.batch},
        {"seed", command.seed},
        {"backend", backend_name(command.backend)},
        {"threads",
         tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism)},
        {"knn_count", knn_count},
        {"train_seconds", train_seconds},
        {"model", model_path.string()},
    };
    // "complete" stays false until every setting is in (an interrupted run keeps a partial file)
    report["complete"] = false;
    report["settings"] = experiment_settings().size();
    nlohmann::json& results = report["results"] = nlohmann::json::array();
    std::map<std::string, std::vector<std::pair<double, double>>> iid_curves;
    const auto start = std::chrono::steady_clock::now();

    for (const std::string& setting : experiment_settings()) {
        const auto row_start = std::chrono::steady_clock::now();
        const data::missing_spec spec = data::parse_missing(setting);
        // One set of masks per setting, shared by every method.
        const data::masked_images masked = data::make_missing(spec, test, command.seed);

        std::vector<accuracy_result> row;
        for (impute_kind impute : {impute_kind::marginalize, impute_kind::mean, impute_kind::zero})
            row.push_back(evaluate(
                p, params, command.backend,
                make_inputs(masked, test.image_size(), test.count, impute, means), test.labels));

        // kNN reads the same values and masks, for the first knn_count test images.
        const model_inputs knn_inputs =
            make_inputs(masked, test.image_size(), knn_count, impute_kind::marginalize, means);
        const std::vector<int> predicted =
            knn.predict(knn_inputs.values, knn_inputs.observed, knn_count, knn_k);
        accuracy_result knn_result;
        knn_result.count = knn_count;
        for (std::size_t i = 0; i < knn_count; ++i)
            knn_result.correct += predicted[i] == test.labels[i];
        row.push_back(knn_result);

        const double row_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - row_start).count();
        fmt::print("{:<12} {:>9} {:>9} {:>9} {:>9}  {:5.1f} s\n", setting, percent(row[0]),
                   percent(row[1]), percent(row[2]), percent(row[3]), row_seconds);
        std::fflush(stdout);

        for (std::size_t m = 0; m < methods.size(); ++m) {
            results.push_back({{"missing", data::to_string(spec)},
                               {"method", methods[m]},
                               {"accuracy", row[m].accuracy()},
                               {"count", row[m].count}});
            if (spec.kind == data::missing_kind::none || spec.kind == data::missing_kind::iid)
                iid_curves[methods[m]].emplace_back(spec.probability, 100.0 * row[m].accuracy());
        }
        // Rewritten after every setting, so an interrupted run keeps what it measured.
        write_text_atomically(json_path, report.dump(2) + "\n");
    }

    std::vector<plot_series> series;
    for (const std::string& m : methods) series.push_back({m, iid_curves[m]});
    plot_axes axes;
    axes.title = fmt::format("{}: accuracy with pixels missing i.i.d.", split.name);
    axes.x_label = "probability p that a pixel is missing";
    axes.y_label = "test accuracy (%)";
    write_text_atomically(svg_path, line_plot_svg(axes, series));
    report["complete"] = true;
    write_text_atomically(json_path, report.dump(2) + "\n");

    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("\nevaluated in {:.1f} s; wrote {}, {} and {}\n", seconds, json_path.string(),
               model_path.string(), svg_path.string());
    return 0;
}

}  // namespace tmm::cli
