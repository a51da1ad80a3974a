// `tmm eval`, and what every subcommand shares: architectures, data checks, imputation and
// batched evaluation on the chosen backend.
#include "cli.hpp"

#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/backends/reference/reference.hpp>
#if defined(TMM_CLI_THRUST)
#include <tmm/backends/thrust/thrust.hpp>
#endif
#include <tmm/data/sources.hpp>
#include <tmm/dsl/decompositions.hpp>
#include <tmm/io/atomic_file.hpp>
#include <tmm/io/model_file.hpp>
#include <tmm/model.hpp>
#include <tmm/train/images.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>

namespace tmm::cli {

namespace fs = std::filesystem;

const std::vector<std::string>& architecture_names() {
    static const std::vector<std::string> names = {"ht", "cp"};
    return names;
}

plan architecture_plan(std::string_view name) {
    if (name == "ht") return make_plan(published_ht);
    if (name == "cp") return make_plan(published_cp<>);
    throw usage_error(fmt::format("unknown architecture \"{}\"; expected ht or cp", name));
}

void check_data_name(const std::string& name) {
    if (name == "fashion-mnist" || name == "mnist") return;
    std::error_code ec;
    if (!fs::is_directory(name, ec))
        throw usage_error(fmt::format(
            "--data \"{}\": expected fashion-mnist, mnist, or a directory holding "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (each optionally .gz); \"{}\" is none of these",
            name, name));
}

data::split load_data(const std::string& name, const plan& p, std::string_view architecture) {
    data::split split = data::load_split(name);
    const data::dataset& t = split.train;
    if (t.rows != p.height || t.cols != p.width || t.channels != p.image_channels)
        throw std::runtime_error(fmt::format(
            "data set \"{}\" holds {}x{} images with {} channel(s); architecture {} takes "
            "{}x{} single-channel images only",
            split.name, t.rows, t.cols, t.channels, architecture, p.height, p.width));
    if (t.classes > p.classes)
        throw std::runtime_error(
            fmt::format("data set \"{}\" has {} classes; architecture {} has {} class outputs",
                        split.name, t.classes, architecture, p.classes));
    return split;
}

void check_output_path(const fs::path& path) {
    std::error_code ec;
    if (path.empty()) throw usage_error("the output path is empty");
    if (fs::is_directory(path, ec))
        throw usage_error(
            fmt::format("{} is a directory; give the name of a file to write", path.string()));
    const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
    if (!fs::exists(dir, ec))
        throw usage_error(fmt::format("cannot write {}: directory {} does not exist", path.string(),
                                      dir.string()));
    if (!fs::is_directory(dir, ec))
        throw usage_error(
            fmt::format("cannot write {}: {} is not a directory", path.string(), dir.string()));
    // For real: the target must be absent or a regular file, and a file must be creatable
    // beside it (this catches read-only and special file systems, over-long names, ...).
    try {
        io::check_atomic_write(path);
    } catch (const io::atomic_write_error& e) {
        throw std::runtime_error(fmt::format("cannot write {}: {}", path.string(), e.problem()));
    }
}

data::missing_spec parse_missing_option(const std::string& text) {
    try {
        return data::parse_missing(text);
    } catch (const data::error& e) {
        throw usage_error(fmt::format("--missing: {}", e.what()));
    }
}

void check_missing_fits(const data::missing_spec& spec, const std::string& text, const plan& p) {
    if (spec.kind == data::missing_kind::rects && (spec.width > p.height || spec.width > p.width))
        throw usage_error(
            fmt::format("--missing {}: a {}x{} square does not fit inside a {}x{} "
                        "image",
                        text, spec.width, spec.width, p.height, p.width));
    const long long pixels = static_cast<long long>(p.height) * p.width;
    if (spec.kind == data::missing_kind::deletion && spec.count > pixels)
        throw usage_error(
            fmt::format("--missing {}: cannot delete {} pixels of a {}x{} image, "
                        "which has {} pixels (N must be at most {})",
                        text, spec.count, p.height, p.width, pixels, pixels));
}

const char* backend_name(backend_kind backend) {
    switch (backend) {
        case backend_kind::cpu:
            return "cpu";
        case backend_kind::thrust:
            return "thrust";
        case backend_kind::reference:
            break;
    }
    return "reference";
}

const char* impute_name(impute_kind impute) {
    switch (impute) {
        case impute_kind::marginalize:
            return "marginalize";
        case impute_kind::mean:
            return "mean";
        case impute_kind::zero:
            return "zero";
    }
    return "marginalize";
}

std::vector<float> pixel_means(const data::dataset& train) {
    const std::size_t size = train.image_size();
    std::vector<double> sums(size, 0.0);
    for (std::size_t i = 0; i < train.count; ++i) {
        const auto image = train.image(i);
        for (std::size_t j = 0; j < size; ++j) sums[j] += image[j];
    }
    // mean of (v - 127.5) / 255 = (mean of v - 127.5) / 255
    std::vector<float> means(size);
    for (std::size_t j = 0; j < size; ++j)
        means[j] = float((sums[j] / double(std::max<std::size_t>(train.count, 1)) - 127.5) / 255.0);
    return means;
}

model_inputs make_inputs(const data::masked_images& masked, std::size_t image_size,
                         std::size_t count, impute_kind impute, std::span<const float> means) {
    const std::size_t n = count * image_size;
    if (masked.pixels.size() < n || masked.observed.size() < n)
        throw std::logic_error("make_inputs: fewer masked images than requested");
    if (impute == impute_kind::mean && means.size() != image_size)
        throw std::logic_error("make_inputs: mean imputation needs one mean per pixel");
    model_inputs in;
    in.count = count;
    in.values.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (masked.observed[i] != 0) {
            in.values[i] = normalize_pixel(masked.pixels[i]);
            continue;
        }
        switch (impute) {
            // NaN marks the slot missing as well: the hidden pixel cannot leak into a result.
            case impute_kind::marginalize:
                in.values[i] = std::numeric_limits<float>::quiet_NaN();
                break;
            case impute_kind::mean:
                in.values[i] = means[i % image_size];
                break;
            case impute_kind::zero:
                in.values[i] = 0.0f;
                break;
        }
    }
    if (impute == impute_kind::marginalize)
        in.observed.assign(masked.observed.begin(), masked.observed.begin() + std::ptrdiff_t(n));
    return in;
}

namespace {

template <class Backend>
accuracy_result evaluate_with(const plan& p, const parameters<float>& params,
                              const model_inputs& inputs, std::span<const int> labels,
                              std::size_t batch, int shift_radius) {
    const std::size_t pixels = std::size_t(p.pixels());
    accuracy_result result;
    with_inference<Backend>(p, params, [&](const auto& score) {
        for (std::size_t first = 0; first < inputs.count; first += batch) {
            const std::size_t n = std::min(batch, inputs.count - first);
            observations<float> x;
            x.count = n;
            x.values = std::span<const float>(inputs.values).subspan(first * pixels, n * pixels);
            if (!inputs.observed.empty())
                x.observed = std::span<const std::uint8_t>(inputs.observed)
                                 .subspan(first * pixels, n * pixels);
            const std::vector<float> scores =
                shift_radius > 0 ? shift_averaged(p, x, shift_radius, score) : score(x);
            const std::vector<int> predicted =
                predict<float>(scores, std::span<const float>(params.log_prior));
            for (std::size_t b = 0; b < n; ++b) result.correct += predicted[b] == labels[first + b];
            result.count += n;
        }
    });
    return result;
}

}  // namespace

accuracy_result evaluate(const plan& p, const parameters<float>& params, backend_kind backend,
                         const model_inputs& inputs, std::span<const int> labels, std::size_t batch,
                         int shift_radius) {
    if (labels.size() < inputs.count) throw std::logic_error("evaluate: fewer labels than images");
    if (backend == backend_kind::cpu)
        return evaluate_with<backends::cpu>(p, params, inputs, labels, batch, shift_radius);
#if defined(TMM_CLI_THRUST)
    if (backend == backend_kind::thrust)
        return evaluate_with<backends::thrust>(p, params, inputs, labels, batch, shift_radius);
#endif
    return evaluate_with<backends::reference>(p, params, inputs, labels, batch, shift_radius);
}

void write_text_atomically(const fs::path& path, std::string_view text) {
    try {
        io::write_file_atomically(path, text);
    } catch (const io::atomic_write_error& e) {
        throw std::runtime_error(fmt::format("cannot write {}: {}", path.string(), e.problem()));
    }
}

// ---- tmm eval --------------------------------------------------------------------------------

int run_eval(const eval_command& command) {
    // Everything the command line alone can refute is checked before any file is read.
    const data::missing_spec spec = parse_missing_option(command.missing);
    check_data_name(command.data);

    loaded_model model = load_model(command.model);
    const auto& names = architecture_names();
    if (std::find(names.begin(), names.end(), model.architecture) == names.end())
        throw model_file_error(command.model, std::nullopt,
                               fmt::format("saved for architecture \"{}\", which this program "
                                           "does not know (it knows ht and cp)",
                                           model.architecture));
    const plan p = architecture_plan(model.architecture);
    if (const std::string d = plan_difference(model.structure, p); !d.empty())
        throw model_file_error(command.model, std::nullopt,
                               fmt::format("saved as architecture \"{}\" but not for the network "
                                           "this program builds under that name: {}",
                                           model.architecture, d));
    check_missing_fits(spec, command.missing, p);

    const data::split split = load_data(command.data, p, model.architecture);
    const data::dataset& test = split.test;
    const data::masked_images masked = data::make_missing(spec, test, command.seed);
    const std::vector<float> means =
        command.impute == impute_kind::mean ? pixel_means(split.train) : std::vector<float>{};
    const model_inputs inputs =
        make_inputs(masked, test.image_size(), test.count, command.impute, means);

    const auto start = std::chrono::steady_clock::now();
    const accuracy_result result =
        evaluate(p, model.params, command.backend, inputs, test.labels, 1024, command.shift_radius);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    const std::string missing = data::to_string(spec);
    if (command.json) {
        const nlohmann::json out = {{"accuracy", result.accuracy()},
                                    {"count", result.count},
                                    {"correct", result.correct},
                                    {"missing", missing},
                                    {"impute", impute_name(command.impute)},
                                    {"shift_average", command.shift_radius},
                                    {"seed", command.seed},
                                    {"model", command.model},
                                    {"architecture", model.architecture},
                                    {"data", split.name},
                                    {"backend", backend_name(command.backend)},
                                    {"seconds", seconds}};
        fmt::print("{}\n", out.dump());
    } else {
        fmt::print("accuracy {:.2f}% ({} of {} test images)  missing {}  impute {}  seed {}{}\n",
                   100.0 * result.accuracy(), result.correct, result.count, missing,
                   impute_name(command.impute), command.seed,
                   command.shift_radius > 0 ? fmt::format("  shift average over {} shifts",
                                                          (2 * command.shift_radius + 1) *
                                                              (2 * command.shift_radius + 1))
                                            : std::string());
        fmt::print("model {} ({}), data {}, {} backend, {:.1f} s\n", command.model,
                   model.architecture, split.name, backend_name(command.backend), seconds);
    }
    return 0;
}

}  // namespace tmm::cli
