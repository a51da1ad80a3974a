#pragma once
// Named data sets: "fashion-mnist" (Debian's dataset-fashion-mnist package), "mnist" (the
// split that scripts/fetch-mnist writes) and any directory holding the four standard IDX files.

#include <tmm/data/dataset.hpp>
#include <tmm/data/idx.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tmm::data {

inline std::filesystem::path fashion_mnist_dir() {
    return "/usr/share/datasets/fashion-mnist";
}

// $TMM_DATA_DIR/mnist, or $HOME/.cache/tmm/mnist; scripts/fetch-mnist uses the same rule.
inline std::filesystem::path mnist_dir() {
    if (const char* dir = std::getenv("TMM_DATA_DIR"); dir != nullptr && *dir != '\0')
        return std::filesystem::path(dir) / "mnist";
    const char* home = std::getenv("HOME");
    return std::filesystem::path(home != nullptr && *home != '\0' ? home : ".") / ".cache" / "tmm" /
           "mnist";
}

namespace detail {

inline constexpr const char* idx_split_files[4] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte"};

// Finds each standard file, plain or with ".gz"; `missing` lists what was not found, and
// `not_files` the names that exist but are not regular files (a directory, a FIFO, ...).
inline std::vector<std::filesystem::path> find_idx_split(const std::filesystem::path& dir,
                                                         std::vector<std::string>& missing,
                                                         std::vector<std::string>& not_files) {
    namespace fs = std::filesystem;
    std::vector<fs::path> found;
    for (const char* base : idx_split_files) {
        std::error_code ec;
        fs::path plain = dir / base;
        fs::path gz = dir / (std::string(base) + ".gz");
        if (fs::is_regular_file(plain, ec)) {
            found.push_back(plain);
        } else if (fs::is_regular_file(gz, ec)) {
            found.push_back(gz);
        } else {
            bool exists = false;
            for (const fs::path& candidate : {plain, gz})
                if (const fs::file_status st = fs::status(candidate, ec); fs::exists(st)) {
                    exists = true;
                    not_files.push_back(
                        candidate.filename().string() +
                        (fs::is_directory(st) ? " is a directory" : " is not a regular file"));
                }
            if (!exists) missing.push_back(std::string(base) + "[.gz]");
            found.emplace_back();
        }
    }
    return found;
}

inline std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
    return out;
}

}  // namespace detail

// Reads train-{images,labels} and t10k-{images,labels} from dir. The training labels define
// the classes (0..max, none missing); test labels must lie among them.
inline split load_split_dir(const std::filesystem::path& dir, std::string name,
                            const std::string& how_to_get = "") {
    const std::string advice = how_to_get.empty() ? "" : "; " + how_to_get;
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec))
        throw error("data set \"" + name + "\": " + dir.string() + " is not a directory" + advice);
    std::vector<std::string> missing, not_files;
    auto files = detail::find_idx_split(dir, missing, not_files);
    if (!not_files.empty())
        throw error("data set \"" + name + "\": in " + dir.string() + ", " +
                    detail::join(not_files) + "; the IDX images and labels must be files");
    if (!missing.empty())
        throw error("data set \"" + name + "\": " + dir.string() + " lacks " +
                    detail::join(missing) + advice);

    split out;
    out.name = std::move(name);
    out.train = load_idx_dataset(files[0], files[1]);
    out.test = load_idx_dataset(files[2], files[3], out.train.classes);
    if (out.train.rows != out.test.rows || out.train.cols != out.test.cols ||
        out.train.channels != out.test.channels)
        throw error("data set \"" + out.name + "\": training images (" + files[0].string() +
                    ") are " + std::to_string(out.train.rows) + "x" +
                    std::to_string(out.train.cols) + "x" + std::to_string(out.train.channels) +
                    " but test images (" + files[2].string() + ") are " +
                    std::to_string(out.test.rows) + "x" + std::to_string(out.test.cols) + "x" +
                    std::to_string(out.test.channels));
    return out;
}

// "fashion-mnist", "mnist", or a directory path.
inline split load_split(std::string_view name) {
    if (name == "fashion-mnist")
        return load_split_dir(fashion_mnist_dir(), std::string(name),
                              "install it with `apt-get install -y dataset-fashion-mnist`");
    if (name == "mnist")
        return load_split_dir(mnist_dir(), std::string(name),
                              "run scripts/fetch-mnist to create it (it honours $TMM_DATA_DIR)");
    std::error_code ec;
    if (!std::filesystem::is_directory(std::filesystem::path(name), ec))
        throw error("data set \"" + std::string(name) +
                    "\" is neither \"fashion-mnist\", \"mnist\" nor a directory of IDX files");
    return load_split_dir(std::filesystem::path(name), std::string(name));
}

}  // namespace tmm::data
