// `tmm sample`, `tmm inpaint` and `tmm visualise`: generation from a saved model through
// tmm/generation.hpp, pictures written as PNG grids.
#include "generate.hpp"

#include <tmm/backends/cpu/cpu.hpp>
#include <tmm/backends/reference/reference.hpp>
#include <tmm/generation.hpp>
#include <tmm/io/model_file.hpp>
#include <tmm/train/images.hpp>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <system_error>

#include "cli.hpp"
#include "png.hpp"
#include "validators.hpp"

namespace tmm::cli {

namespace {

struct sample_command {
    std::string model, png;
    std::optional<int> label;
    std::size_t count = 10;
    std::uint64_t seed = 0;
    int scale = 3;
    bool modes = false;
    std::string backend = "cpu";
};

struct inpaint_command {
    std::string model, data, missing = "iid:0.5", png, mode = "mean";
    std::size_t count = 0, show = 10;  // count 0: 1000, or the whole test split if smaller
    std::uint64_t seed = 0;
    bool json = false;
    int scale = 3;
    std::string backend = "cpu";
};

struct visualise_command {
    std::string model, png;
    int layer = 0;
    int channels = 16;
    int scale = 4;
    std::string backend = "cpu";
};

sample_command sample_options;
inpaint_command inpaint_options;
visualise_command visualise_options;
CLI::App *sample_app = nullptr, *inpaint_app = nullptr, *visualise_app = nullptr;
CLI::Option* class_option = nullptr;
int class_value = 0;

const std::map<std::string, completion> modes = {
    {"sample", completion::sample}, {"mpe", completion::most_probable}, {"mean", completion::mean}};

// Model input scale (v - 127.5) / 255 back to the pixel scale 0..255.
double to_pixel(float v) {
    return double(v) * 255.0 + 127.5;
}

// A saved model whose network generation can read: Gaussian leaves over single-channel
// images (the pictures and the pixel scale assume both).
loaded_model load_generative_model(const std::string& path) {
    loaded_model model = load_model(path);
    if (model.structure.leaves != leaf_kind::gaussian || model.structure.image_channels != 1)
        throw model_file_error(
            path, std::nullopt,
            "the generation commands read models of single-channel images "
            "with Gaussian leaves; this one has " +
                std::to_string(model.structure.image_channels) + " channel(s) and " +
                (model.structure.leaves == leaf_kind::gaussian ? "Gaussian" : "categorical") +
                " leaves");
    return model;
}

// Calls f with the backend policy that supplies generation's upward pass (--backend): the
// CPU backend's vectorised kernels, or the scalar reference for checking them.
template <class F>
decltype(auto) with_backend(const std::string& name, F&& f) {
    if (name == "reference") return f(backends::reference{});
    return f(backends::cpu{});
}

void check_scale(int scale) {
    if (scale < 1 || scale > 16)
        throw usage_error(fmt::format("--scale {}: expected a whole number in 1..16", scale));
}

// ---- tmm sample ---------------------------------------------------------------------------

int run_sample(const sample_command& command) {
    check_scale(command.scale);
    check_output_path(command.png);
    const loaded_model model = load_generative_model(command.model);
    const plan& p = model.structure;
    if (command.label && (*command.label < 0 || *command.label >= p.classes))
        throw usage_error(
            fmt::format("--class {}: the model has classes 0..{}", *command.label, p.classes - 1));
    // The grid holds every sample at once: a bound keeps the image (and its memory) sane.
    constexpr std::size_t max_count = 1000;
    if (command.count > max_count)
        throw usage_error(fmt::format("--count {}: at most {} samples (per class) fit in one grid",
                                      command.count, max_count));
    const auto start = std::chrono::steady_clock::now();
    // One row per class asked for; at most 10 samples a row, more rows when there are more.
    std::vector<int> labels;
    if (command.label)
        labels = {*command.label};
    else
        for (int y = 0; y < p.classes; ++y) labels.push_back(y);
    const int per_row = int(std::min<std::size_t>(command.count, 10));
    const int rows_per_label = int((command.count + per_row - 1) / per_row);
    image_grid grid(int(labels.size()) * rows_per_label, per_row, p.height, p.width, command.scale);
    std::vector<double> grey(p.pixels());
    for (std::size_t r = 0; r < labels.size(); ++r) {
        // Each class draws with its own seed, so a class's samples do not depend on the others.
        const auto samples = with_backend(command.backend, [&]<class B>(B) {
            return sample<B>(p, model.params, command.count, labels[r],
                             item_seed(command.seed, labels[r]),
                             command.modes ? patch_values::modes : patch_values::drawn);
        });
        for (std::size_t n = 0; n < command.count; ++n) {
            for (int i = 0; i < p.pixels(); ++i) grey[i] = to_pixel(samples[n * p.pixels() + i]);
            grid.set_tile(int(r) * rows_per_label + int(n) / per_row, int(n) % per_row, grey);
        }
    }
    write_png(command.png, grid);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("wrote {} ({} sample(s) of {}{}, seed {}, {:.1f} s)\n", command.png, command.count,
               command.label ? fmt::format("class {}", *command.label) : "every class",
               command.modes ? ", patches shown as component means" : "", command.seed, seconds);
    return 0;
}

// ---- tmm inpaint --------------------------------------------------------------------------

int run_inpaint(const inpaint_command& given) {
    inpaint_command command = given;
    check_scale(command.scale);
    const data::missing_spec spec = parse_missing_option(command.missing);
    check_data_name(command.data);
    check_output_path(command.png);
    const completion how = modes.at(command.mode);
    const loaded_model model = load_generative_model(command.model);
    const plan& p = model.structure;
    check_missing_fits(spec, command.missing, p);

    const data::split split = load_data(command.data, p, model.architecture);
    const data::dataset& test = split.test;
    if (command.count == 0) command.count = std::min<std::size_t>(1000, test.count);
    if (command.count > test.count)
        throw usage_error(fmt::format("--count {}: the test split of {} holds {} images",
                                      command.count, split.name, test.count));
    const data::masked_images masked = data::make_missing(spec, test, command.seed);
    const model_inputs inputs =
        make_inputs(masked, test.image_size(), command.count, impute_kind::marginalize, {});
    const std::vector<float> means = pixel_means(split.train);

    const auto start = std::chrono::steady_clock::now();
    const observations<float> x(inputs.count, inputs.values, inputs.observed);
    const std::vector<float> filled = with_backend(command.backend, [&]<class B>(B) {
        return complete<B>(p, model.params, x, how, command.seed);
    });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    // Squared errors on the missing pixels, on the pixel scale 0..255, unrounded.
    double error = 0, error_mean = 0;
    std::size_t missing = 0;
    const std::size_t pixels = p.pixels();
    for (std::size_t b = 0; b < command.count; ++b) {
        const auto original = test.image(b);
        for (std::size_t i = 0; i < pixels; ++i) {
            if (masked.observed[b * pixels + i]) continue;
            const double truth = original[i];
            error += (to_pixel(filled[b * pixels + i]) - truth) *
                     (to_pixel(filled[b * pixels + i]) - truth);
            error_mean += (to_pixel(means[i]) - truth) * (to_pixel(means[i]) - truth);
            ++missing;
        }
    }
    // With no pixel missing there is no error to average: JSON null, "n/a" in the text.
    const double mse = missing ? error / double(missing) : 0.0;
    const double mse_mean = missing ? error_mean / double(missing) : 0.0;
    const auto json_value = [&](double v) {
        return missing ? nlohmann::json(v) : nlohmann::json(nullptr);
    };
    const auto text = [&](double v) {
        return missing ? fmt::format("{:.1f}", v) : std::string("n/a");
    };

    // Rows: original, masked input (missing pixels in blue), completion.
    const int shown = int(std::min(command.show, command.count));
    image_grid grid(3, shown, p.height, p.width, command.scale);
    std::vector<double> grey(pixels);
    for (int b = 0; b < shown; ++b) {
        const auto original = test.image(b);
        for (std::size_t i = 0; i < pixels; ++i) grey[i] = original[i];
        grid.set_tile(0, b, grey);
        for (std::size_t i = 0; i < pixels; ++i) grey[i] = masked.pixels[b * pixels + i];
        grid.set_tile(1, b, grey,
                      std::span<const std::uint8_t>(masked.observed).subspan(b * pixels, pixels),
                      {40, 90, 220});
        for (std::size_t i = 0; i < pixels; ++i) grey[i] = to_pixel(filled[b * pixels + i]);
        grid.set_tile(2, b, grey);
    }
    write_png(command.png, grid);

    const std::string missing_text = data::to_string(spec);
    if (command.json) {
        const nlohmann::json out = {{"mse", json_value(mse)},
                                    {"mse_mean_imputation", json_value(mse_mean)},
                                    {"count", command.count},
                                    {"missing_pixels", missing},
                                    {"scale", "pixel values 0..255"},
                                    {"mode", command.mode},
                                    {"missing", missing_text},
                                    {"seed", command.seed},
                                    {"model", command.model},
                                    {"data", split.name},
                                    {"png", command.png},
                                    {"backend", command.backend},
                                    {"seconds", seconds}};
        fmt::print("{}\n", out.dump());
    } else {
        fmt::print(
            "mse {} ({} completion) vs {} (per-pixel mean imputation) on {} missing "
            "pixels of {} test images (pixel scale 0..255), missing {}, seed {}\n",
            text(mse), command.mode, text(mse_mean), missing, command.count, missing_text,
            command.seed);
        fmt::print("wrote {} ({:.1f} s)\n", command.png, seconds);
    }
    return 0;
}

// ---- tmm visualise ------------------------------------------------------------------------

int run_visualise(const visualise_command& command) {
    check_scale(command.scale);
    check_output_path(command.png);
    const loaded_model model = load_generative_model(command.model);
    const plan& p = model.structure;
    const int layers = int(p.layers.size());
    if (command.layer < 0 || command.layer >= layers)
        throw usage_error(
            fmt::format("--layer {}: the network has layers 0..{}", command.layer, layers - 1));
    const layer& ly = p.layers[command.layer];
    const int channels = std::min(command.channels, ly.out_channels);

    // One tile per channel: every position's most likely patch for that channel, in place.
    const int cols = std::min(channels, 8);
    image_grid grid((channels + cols - 1) / cols, cols, p.height, p.width, command.scale);
    std::vector<double> grey(p.pixels());
    with_backend(command.backend, [&]<class B>(B) {
        const latent_tree<float, B> tree(p, model.params);
        typename latent_tree<float, B>::values prior_max;
        tree.upward_of_nothing(semiring::max_product, prior_max);
        for (int g = 0; g < channels; ++g) {
            const auto patches = most_likely_patches(tree, prior_max, command.layer, g);
            for (int i = 0; i < p.pixels(); ++i) grey[i] = to_pixel(patches.values[i]);
            grid.set_tile(g / cols, g % cols, grey, patches.covered, {255, 255, 255});
        }
    });
    write_png(command.png, grid);
    fmt::print("wrote {} (layer {}: {} of {} channel(s), {} position(s) each)\n", command.png,
               command.layer, channels, ly.out_channels, ly.out_positions());
    return 0;
}

}  // namespace

std::vector<CLI::App*> add_generation_commands(CLI::App& app) {
    constexpr const char* model_help = "a model file written by tmm train";
    sample_app = app.add_subcommand(
        "sample", "Draw instances from a saved model and write them as a PNG grid");
    sample_app->add_option("--model", sample_options.model, model_help)->required();
    class_option = sample_app->add_option(
        "--class", class_value,
        "draw from P(X | class); without it, one row of samples for every class");
    sample_app
        ->add_option("--count", sample_options.count,
                     "samples (per class without --class; at most 1000)")
        ->capture_default_str()
        ->check(positive_integer);
    sample_app->add_option("--png", sample_options.png, "the PNG file to write")->required();
    sample_app->add_option("--seed", sample_options.seed, "seed of the draws")
        ->capture_default_str()
        ->check(seed_value);
    sample_app->add_option("--scale", sample_options.scale, "screen pixels per image pixel")
        ->capture_default_str();
    sample_app->add_flag("--modes", sample_options.modes,
                         "draw the hidden variables as usual but show each patch's component "
                         "mean instead of drawing its pixels (the leaves' noise left out)");

    inpaint_app = app.add_subcommand(
        "inpaint",
        "Complete the missing pixels of test images; writes rows of original, masked input "
        "(missing in blue) and completion");
    inpaint_app->add_option("--model", inpaint_options.model, model_help)->required();
    inpaint_app
        ->add_option("--data", inpaint_options.data,
                     "fashion-mnist, mnist, or a directory of IDX files (see tmm eval)")
        ->required();
    inpaint_app
        ->add_option("--missing", inpaint_options.missing,
                     "which test pixels are missing: none, iid:P, rects:N:W or delete:N (see "
                     "tmm eval)")
        ->capture_default_str();
    inpaint_app
        ->add_option("--count", inpaint_options.count,
                     "test images completed and measured (the first N; default 1000, or the "
                     "whole test split if it is smaller)")
        ->check(positive_integer);
    inpaint_app->add_option("--show", inpaint_options.show, "images shown in the PNG")
        ->capture_default_str()
        ->check(positive_integer);
    inpaint_app->add_option("--png", inpaint_options.png, "the PNG file to write")->required();
    inpaint_app
        ->add_option("--mode", inpaint_options.mode,
                     "mean (expected value under the posterior), mpe (most probable "
                     "explanation) or sample (a draw from the posterior)")
        ->capture_default_str()
        ->check(CLI::IsMember({"mean", "mpe", "sample"}));
    inpaint_app->add_option("--seed", inpaint_options.seed, "seed of the masks and the draws")
        ->capture_default_str()
        ->check(seed_value);
    inpaint_app->add_flag("--json", inpaint_options.json,
                          "print one JSON object: mse and mse_mean_imputation on the missing "
                          "pixels (pixel scale 0..255), count, ...");
    inpaint_app->add_option("--scale", inpaint_options.scale, "screen pixels per image pixel")
        ->capture_default_str();

    visualise_app = app.add_subcommand(
        "visualise",
        "Draw what the neurons of a layer stand for: for each channel, every position's most "
        "likely patch, laid out where it lies in the image");
    visualise_app->add_option("--model", visualise_options.model, model_help)->required();
    visualise_app
        ->add_option("--layer", visualise_options.layer,
                     "layer index: 0 is the first conv after the representation, the "
                     "last is the class layer")
        ->required();
    visualise_app->add_option("--png", visualise_options.png, "the PNG file to write")->required();
    visualise_app
        ->add_option("--channels", visualise_options.channels, "channels drawn (the first N)")
        ->capture_default_str()
        ->check(positive_integer);
    visualise_app->add_option("--scale", visualise_options.scale, "screen pixels per image pixel")
        ->capture_default_str();
    for (auto [sub, backend] : {std::pair{sample_app, &sample_options.backend},
                                std::pair{inpaint_app, &inpaint_options.backend},
                                std::pair{visualise_app, &visualise_options.backend}})
        sub->add_option("--backend", *backend,
                        "the upward pass: cpu (vectorised kernels) or reference (scalar, slow; "
                        "for checking)")
            ->capture_default_str()
            ->check(CLI::IsMember({"cpu", "reference"}));
    return {sample_app, inpaint_app, visualise_app};
}

int run_generation(const CLI::App* chosen) {
    if (chosen == sample_app) {
        if (class_option->count() > 0) sample_options.label = class_value;
        return run_sample(sample_options);
    }
    if (chosen == inpaint_app) return run_inpaint(inpaint_options);
    if (chosen == visualise_app) return run_visualise(visualise_options);
    return -1;
}

}  // namespace tmm::cli
