// What the subcommands of the `tmm` program share: their options, the architectures and
// backends they accept, data checks, the imputation methods and batched evaluation.
#pragma once

#include <tmm/data/dataset.hpp>
#include <tmm/data/missing.hpp>
#include <tmm/parameters.hpp>
#include <tmm/plan.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tmm::cli {

// A problem with the command line itself (exit code 2); every other failure exits with 1.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// thrust: the thrust backend on thrust's TBB device system (CPU), when built with Thrust.
enum class backend_kind { cpu, reference, thrust };
enum class impute_kind { marginalize, mean, zero };

struct train_command {
    std::string data, architecture = "ht", out;
    std::optional<std::size_t> iterations;  // the trainer's default when absent
    std::size_t batch = 128;
    std::uint64_t seed = 0;
    backend_kind backend = backend_kind::cpu;
};

struct eval_command {
    std::string model, data, missing = "none";
    impute_kind impute = impute_kind::marginalize;
    int shift_radius = 0;  // > 0: shift-averaged prediction over (2R+1)^2 shifts
    std::uint64_t seed = 0;
    bool json = false;
    backend_kind backend = backend_kind::cpu;
};

struct experiment_command {
    std::string data, out = "out";
    std::optional<std::size_t> iterations;
    std::size_t batch = 128;
    std::uint64_t seed = 0;
    std::size_t knn_count = 1000;
    backend_kind backend = backend_kind::cpu;
};

int run_train(const train_command& command);
int run_eval(const eval_command& command);
int run_experiment(const experiment_command& command);

// ---- architectures and data (evaluate.cpp) --------------------------------------------------

// The architecture names the program knows, and their plans ("ht", "cp").
const std::vector<std::string>& architecture_names();
plan architecture_plan(std::string_view name);

// Throws usage_error unless `name` is "fashion-mnist", "mnist" or an existing directory, so
// that a misspelt name is reported before any work starts.
void check_data_name(const std::string& name);

// tmm::data::load_split, then a check that the images fit `p` (size, channels, classes).
data::split load_data(const std::string& name, const plan& p, std::string_view architecture);

// Throws usage_error when `path` could not be created (its directory is missing or is not a
// directory, or `path` is a directory), std::runtime_error when it exists and is not a
// regular file or no file can be created beside it (tried for real with a probe file that
// is removed at once). Run before long work whose result is written to `path`.
void check_output_path(const std::filesystem::path& path);

// tmm::data::parse_missing with its error turned into a usage_error.
data::missing_spec parse_missing_option(const std::string& text);

// A usage_error when the --missing spec (`text` as given) cannot fit the plan's images: a
// rectangle wider than the image, or more pixels to delete than the image has.
void check_missing_fits(const data::missing_spec& spec, const std::string& text, const plan& p);

const char* backend_name(backend_kind backend);
const char* impute_name(impute_kind impute);

// ---- evaluation (evaluate.cpp) ---------------------------------------------------------------

// Per-pixel mean of the training images on the model's input scale (v - 127.5) / 255.
std::vector<float> pixel_means(const data::dataset& train);

// The first `count` images of `masked` as the model reads them: missing pixels marginalised
// (kept missing in the mask), or filled in (mean of the training set / 0 on the input scale)
// and then treated as observed.
struct model_inputs {
    std::size_t count = 0;
    std::vector<float> values;
    std::vector<std::uint8_t> observed;  // empty: everything observed
};
model_inputs make_inputs(const data::masked_images& masked, std::size_t image_size,
                         std::size_t count, impute_kind impute, std::span<const float> means);

struct accuracy_result {
    std::size_t count = 0, correct = 0;
    double accuracy() const { return count == 0 ? 0.0 : double(correct) / double(count); }
};

// Classifies the inputs in batches of `batch` through the backend's log_likelihoods and
// tmm::predict, and counts the labels it gets right. With shift_radius > 0 the prediction is
// the published shift-averaged one (tmm::shift_averaged_log_likelihoods).
accuracy_result evaluate(const plan& p, const parameters<float>& params, backend_kind backend,
                         const model_inputs& inputs, std::span<const int> labels,
                         std::size_t batch = 1024, int shift_radius = 0);

// ---- training (train.cpp) --------------------------------------------------------------------

struct training_settings {
    std::optional<std::size_t> iterations;
    std::size_t batch = 128;
    std::uint64_t seed = 0;
    backend_kind backend = backend_kind::cpu;
};

// The published recipe (tmm::fit) on the training split, with a progress bar on stderr.
parameters<float> train_model(const plan& p, std::string_view architecture,
                              const data::dataset& train, const training_settings& settings);

// ---- files ---------------------------------------------------------------------------------

// tmm::io::write_file_atomically: writes `text` to a temporary file beside `path`, then
// renames it over `path`; on failure (or when `path` exists and is not a regular file) the
// temporary file is removed, an existing `path` stays as it was, and std::runtime_error says
// why.
void write_text_atomically(const std::filesystem::path& path, std::string_view text);

}  // namespace tmm::cli
