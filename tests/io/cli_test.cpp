// The `tmm` program end to end on a tiny generated IDX data set (no downloads): train, eval
// and experiment succeed, and every bad input gets its exit code (2: command line, 1: runtime)
// and a message that names the problem, never a crash.
#define BOOST_TEST_MODULE cli
#include <boost/test/unit_test.hpp>

#include <tmm/backends/reference/reference.hpp>
#include <tmm/data/idx.hpp>
#include <tmm/dsl/decompositions.hpp>
#include <tmm/io/model_file.hpp>

#include "../common/run_program.hpp"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using namespace tmm_test;

// A data set of `count` images of rows x cols: class c is a bright square at a place of its
// own on a noisy background, so a few training steps already separate the classes.
tmm::data::dataset make_images(std::size_t count, int rows, int cols, unsigned seed) {
    tmm::data::dataset d;
    d.count = count;
    d.rows = rows;
    d.cols = cols;
    d.classes = 3;
    d.pixels.resize(count * std::size_t(rows) * cols);
    d.labels.resize(count);
    std::mt19937 rng(seed);
    for (std::size_t i = 0; i < count; ++i) {
        const int label = int(i % 3);
        d.labels[i] = label;
        auto image = d.image(i);
        for (auto& v : image) v = std::uint8_t(rng() % 40);
        const int top = rows / 4 + (label == 1 ? rows / 3 : 0);
        const int left = cols / 4 + (label == 2 ? cols / 3 : 0);
        for (int r = top; r < std::min(rows, top + rows / 4); ++r)
            for (int c = left; c < std::min(cols, left + cols / 4); ++c)
                image[std::size_t(r) * cols + c] = std::uint8_t(200 + rng() % 56);
    }
    return d;
}

void write_split(const fs::path& dir, int rows, int cols) {
    fs::create_directories(dir);
    tmm::data::write_idx_dataset(dir / "train-images-idx3-ubyte", dir / "train-labels-idx1-ubyte",
                                 make_images(48, rows, cols, 1));
    tmm::data::write_idx_dataset(dir / "t10k-images-idx3-ubyte", dir / "t10k-labels-idx1-ubyte",
                                 make_images(21, rows, cols, 2));
}

// Everything the tests share: the program, a data set, and a model trained on it once.
struct world {
    scratch_dir dir;
    std::string program;
    fs::path data = dir.path / "tiny";
    fs::path model = dir.path / "tiny.tmm";
    result trained;

    world() {
        const char* env = std::getenv("TMM_CLI");
        BOOST_TEST_REQUIRE(env != nullptr, "TMM_CLI must name the tmm program to test");
        program = env;
        write_split(data, 28, 28);
        trained = run("train --data " + quote(data.string()) + " --arch ht --out " +
                      quote(model.string()) + " --iterations 3 --batch 16 --seed 1 --threads 2");
    }

    // Runs the program with `args`, in the directory `cwd` when given.
    result run(const std::string& args, const fs::path& cwd = {}) {
        return run_program(program, args, dir.path, cwd);
    }
};

world& shared() {
    static world w;
    return w;
}

std::string eval_args(const fs::path& model, const fs::path& data, const std::string& more) {
    return "eval --model " + quote(model.string()) + " --data " + quote(data.string()) + " " + more;
}

}  // namespace

BOOST_AUTO_TEST_CASE(train_writes_a_model_and_reports_progress_and_accuracy) {
    auto& w = shared();
    BOOST_TEST_REQUIRE(w.trained.code == 0);
    BOOST_TEST(contains(w.trained.out, "wrote " + w.model.string()));
    BOOST_TEST(contains(w.trained.out, "clean test accuracy"));
    BOOST_TEST(contains(w.trained.err, "iteration 3/3"));
    BOOST_TEST(contains(w.trained.err, "images/s"));
    const auto loaded = tmm::load_model(w.model, tmm::make_plan(tmm::published_ht));
    BOOST_TEST(loaded.architecture == "ht");
}

BOOST_AUTO_TEST_CASE(eval_prints_one_json_object) {
    auto& w = shared();
    BOOST_TEST_REQUIRE(w.trained.code == 0);
    for (const std::string impute : {"marginalize", "mean", "zero"}) {
        const auto r = w.run(
            eval_args(w.model, w.data, "--missing iid:0.5 --seed 3 --json --impute " + impute));
        BOOST_TEST_REQUIRE(r.code == 0);
        const auto j = nlohmann::json::parse(r.out);  // exactly one object: parse rejects more
        BOOST_TEST(j.is_object());
        BOOST_TEST(j.at("count").get<int>() == 21);
        BOOST_TEST(j.at("missing").get<std::string>() == "iid:0.5");
        BOOST_TEST(j.at("impute").get<std::string>() == impute);
        const double accuracy = j.at("accuracy").get<double>();
        BOOST_TEST((accuracy >= 0.0 && accuracy <= 1.0));
        // The same seed gives the same masks, hence the same answer.
        const auto again = w.run(
            eval_args(w.model, w.data, "--missing iid:0.5 --seed 3 --json --impute " + impute));
        BOOST_TEST(nlohmann::json::parse(again.out).at("accuracy").get<double>() == accuracy);
    }
}

// --shift-average 1: the class log-likelihoods of the 9 shifts of each test image by at most
// one pixel (pixels shifted in from outside missing) are summed, then the prior is added once.
// Recomputed here by shifting the images by hand and asking the reference backend.
BOOST_AUTO_TEST_CASE(eval_shift_average_sums_the_shifted_log_likelihoods) {
    auto& w = shared();
    BOOST_TEST_REQUIRE(w.trained.code == 0);
    const auto r =
        w.run(eval_args(w.model, w.data, "--shift-average 1 --json --backend reference"));
    BOOST_TEST_REQUIRE(r.code == 0, r.err);
    const auto j = nlohmann::json::parse(r.out);
    BOOST_TEST(j.at("shift_average").get<int>() == 1);

    const auto model = tmm::load_model(w.model);
    const tmm::plan& p = model.structure;
    const tmm::data::dataset test = tmm::data::load_idx_dataset(w.data / "t10k-images-idx3-ubyte",
                                                                w.data / "t10k-labels-idx1-ubyte");
    const int rows = p.height, cols = p.width;
    std::size_t correct = 0;
    for (std::size_t b = 0; b < test.count; ++b) {
        std::vector<float> total(std::size_t(p.classes), 0.0f);
        for (int dy = -1; dy <= 1; ++dy)
            for (int dx = -1; dx <= 1; ++dx) {
                std::vector<float> values(std::size_t(rows * cols), 0.0f);
                std::vector<std::uint8_t> observed(values.size(), 0);
                for (int y = 0; y < rows; ++y)
                    for (int x = 0; x < cols; ++x) {
                        const int sy = y - dy, sx = x - dx;
                        if (sy < 0 || sy >= rows || sx < 0 || sx >= cols) continue;
                        const std::uint8_t v = test.pixels[b * values.size() + sy * cols + sx];
                        values[y * cols + x] = (float(v) - 127.5f) / 255.0f;
                        observed[y * cols + x] = 1;
                    }
                const auto ll = tmm::backends::reference::log_likelihoods(
                    p, model.params, tmm::observations<float>(1, values, observed));
                for (std::size_t y = 0; y < total.size(); ++y) total[y] += ll[y];
            }
        std::size_t best = 0;
        for (std::size_t y = 1; y < total.size(); ++y)
            if (total[y] + model.params.log_prior[y] > total[best] + model.params.log_prior[best])
                best = y;
        correct += int(best) == test.labels[b];
    }
    BOOST_TEST(j.at("correct").get<std::size_t>() == correct);
    BOOST_TEST(j.at("count").get<std::size_t>() == test.count);

    // 0 is the plain evaluation; a radius above 4 is refused
    const auto plain = w.run(eval_args(w.model, w.data, "--json"));
    const auto zero = w.run(eval_args(w.model, w.data, "--shift-average 0 --json"));
    BOOST_TEST(nlohmann::json::parse(plain.out).at("correct").get<int>() ==
               nlohmann::json::parse(zero.out).at("correct").get<int>());
    const auto bad = w.run(eval_args(w.model, w.data, "--shift-average 5"));
    BOOST_TEST(bad.code == 2);
    BOOST_TEST(contains(bad.err, "--shift-average"));
}

BOOST_AUTO_TEST_CASE(eval_in_words_and_on_the_reference_backend) {
    auto& w = shared();
    BOOST_TEST_REQUIRE(w.trained.code == 0);
    auto r = w.run(eval_args(w.model, w.data, "--missing rects:2:11"));
    BOOST_TEST(r.code == 0);
    BOOST_TEST(contains(r.out, "accuracy"));
    BOOST_TEST(contains(r.out, "of 21 test images"));
    r = w.run(eval_args(w.model, w.data, "--missing delete:50 --backend reference --json"));
    BOOST_TEST(r.code == 0);
    BOOST_TEST(nlohmann::json::parse(r.out).at("missing").get<std::string>() == "delete:50");
}

BOOST_AUTO_TEST_CASE(bad_missing_specs_exit_2) {
    auto& w = shared();
    for (const std::string spec : {"iid:2", "bogus", "rects:1", "iid:", "rects:1:40"}) {
        const auto r = w.run(eval_args(w.model, w.data, "--missing " + quote(spec)));
        BOOST_TEST(r.code == 2, spec);
        BOOST_TEST(contains(r.err, spec), spec);
        BOOST_TEST(contains(r.err, "--missing"), spec);
        BOOST_TEST(r.out.empty(), spec);
    }
    // delete:N deletes at most the 28 x 28 = 784 pixels an image has: 784 is all of them,
    // 785 is a mistake
    BOOST_TEST_REQUIRE(w.trained.code == 0);
    auto r = w.run(eval_args(w.model, w.data, "--missing delete:784 --json"));
    BOOST_TEST(r.code == 0, r.err);
    r = w.run(eval_args(w.model, w.data, "--missing delete:785"));
    BOOST_TEST(r.code == 2);
    BOOST_TEST(contains(r.err, "--missing delete:785"), r.err);
    BOOST_TEST(contains(r.err, "which has 784 pixels"), r.err);
    BOOST_TEST(r.out.empty());
}

BOOST_AUTO_TEST_CASE(model_file_problems_exit_1_naming_the_file) {
    auto& w = shared();
    BOOST_TEST_REQUIRE(w.trained.code == 0);
    const fs::path missing = w.dir.path / "absent.tmm";
    auto r = w.run(eval_args(missing, w.data, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, missing.string()));
    BOOST_TEST(contains(r.err, "no such file"));

    std::string bytes = read_text(w.model);
    const fs::path corrupted = w.dir.path / "corrupted.tmm";
    std::string flipped = bytes;
    flipped[flipped.size() / 2] ^= 0x10;
    std::ofstream(corrupted, std::ios::binary) << flipped;
    r = w.run(eval_args(corrupted, w.data, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, corrupted.string()));
    BOOST_TEST(contains(r.err, "corrupted"));

    const fs::path truncated = w.dir.path / "truncated.tmm";
    std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 3);
    r = w.run(eval_args(truncated, w.data, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "truncated"));

    r = w.run(eval_args(w.data / "train-labels-idx1-ubyte", w.data, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "bad magic"));

    // A valid file (right CRC) whose class prior is not a distribution: 1e38 for class 0
    // would win every prediction.
    auto model = tmm::load_model(w.model);
    model.params.log_prior.at(0) = 1e38f;
    const fs::path heavy = w.dir.path / "heavy-prior.tmm";
    const auto encoded = tmm::detail::encode_model(model.structure, model.params, "ht");
    std::ofstream(heavy, std::ios::binary)
        .write(reinterpret_cast<const char*>(encoded.data()), std::streamsize(encoded.size()));
    r = w.run(eval_args(heavy, w.data, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, heavy.string()), r.err);
    BOOST_TEST(contains(r.err, "array log_prior is not a log distribution"), r.err);
    BOOST_TEST(r.out.empty());
}

BOOST_AUTO_TEST_CASE(models_of_unknown_or_altered_architectures_exit_1) {
    auto& w = shared();
    const auto small =
        tmm::make_plan(tmm::ht<tmm::input<28, 28> | tmm::pad<2>, tmm::gaussians<2>, 16, 10, 2>);
    const fs::path foreign = w.dir.path / "foreign.tmm";
    tmm::save_model(foreign, small, tmm::zero_parameters<float>(small), "lenet");
    auto r = w.run(eval_args(foreign, w.data, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "\"lenet\""));
    BOOST_TEST(contains(r.err, "does not know"));

    const fs::path altered = w.dir.path / "altered.tmm";
    tmm::save_model(altered, small, tmm::zero_parameters<float>(small), "ht");
    r = w.run(eval_args(altered, w.data, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "the patch size is 16 in the file, 2 expected"));
}

BOOST_AUTO_TEST_CASE(bad_data_is_refused) {
    auto& w = shared();
    BOOST_TEST_REQUIRE(w.trained.code == 0);
    // Neither a known name nor a directory: a command-line mistake.
    auto r = w.run(eval_args(w.model, "no-such-data-set", ""));
    BOOST_TEST(r.code == 2);
    BOOST_TEST(contains(r.err, "no-such-data-set"));

    // A directory without the IDX files.
    const fs::path empty = w.dir.path / "empty";
    fs::create_directories(empty);
    r = w.run(eval_args(w.model, empty, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "train-images-idx3-ubyte"));

    // Images of another size.
    const fs::path small = w.dir.path / "small";
    write_split(small, 8, 8);
    r = w.run(eval_args(w.model, small, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "8x8"));
    BOOST_TEST(contains(r.err, "28x28"));
    r = w.run("train --data " + quote(small.string()) + " --arch cp --out " +
              quote((w.dir.path / "x.tmm").string()) + " --iterations 1");
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "28x28"));
    BOOST_TEST(!fs::exists(w.dir.path / "x.tmm"));

    // A damaged IDX file.
    const fs::path damaged = w.dir.path / "damaged";
    write_split(damaged, 28, 28);
    fs::resize_file(damaged / "t10k-images-idx3-ubyte", 1000);
    r = w.run(eval_args(w.model, damaged, ""));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "t10k-images-idx3-ubyte"));
    BOOST_TEST(contains(r.err, "truncated"));
}

BOOST_AUTO_TEST_CASE(bad_command_lines_exit_2) {
    auto& w = shared();
    const std::string data = quote(w.data.string());
    const std::string out = quote((w.dir.path / "m.tmm").string());
    struct bad_case {
        std::string args, says;
    };
    const bad_case cases[] = {
        {"", "subcommand"},
        {"fly", "fly"},
        {"train --data " + data + " --arch rnn --out " + out, "rnn"},
        {"train --data " + data + " --out " + out, "--arch"},
        {"train --data " + data + " --arch ht --out " + out + " --iterations 0", "--iterations"},
        {"train --data " + data + " --arch ht --out " + out + " --iterations many", "many"},
        {"train --data " + data + " --arch ht --out " + out + " --backend gpu", "gpu"},
        {"train --data " + data + " --arch ht --out " +
             quote((w.dir.path / "no" / "m.tmm").string()),
         "does not exist"},
        {"train --data " + data + " --arch ht --out " + quote(w.dir.path.string()),
         "is a directory"},
        {"eval --data " + data, "--model"},
        {eval_args(w.model, w.data, "--impute median"), "median"},
        {eval_args(w.model, w.data, "--threads 0"), "--threads"},
        {eval_args(w.model, w.data, "--seed -1"), "--seed"},
        {"experiment --data " + data + " --knn-count -3", "--knn-count"},
        {"eval --model m --data " + data + " --unknown", "--unknown"},
    };
    for (const auto& c : cases) {
        const auto r = w.run(c.args);
        BOOST_TEST(r.code == 2, c.args);
        BOOST_TEST(contains(r.err, c.says), c.args << " should mention " << c.says);
        // one form for every error, whether the option parser or the command found it
        const std::string word = c.args.substr(0, c.args.find(' '));
        const bool known = word == "train" || word == "eval" || word == "experiment";
        const std::string prefix = known ? "tmm " + word + ": error: " : "tmm: ";
        BOOST_TEST(r.err.rfind(prefix, 0) == 0, c.args << ": " << r.err);
    }
    BOOST_TEST(!fs::exists(w.dir.path / "m.tmm"));

    const auto help = w.run("eval --help");
    BOOST_TEST(help.code == 0);
    BOOST_TEST(contains(help.out, "127.5"));  // what zero imputation fills in
}

BOOST_AUTO_TEST_CASE(experiment_writes_results_model_and_plot) {
    auto& w = shared();
    const fs::path out = w.dir.path / "experiment";
    const auto r =
        w.run("experiment --data " + quote(w.data.string()) + " --out " + quote(out.string()) +
              " --iterations 2 --batch 16 --seed 4 --knn-count 7 --threads 2");
    BOOST_TEST_REQUIRE(r.code == 0);
    BOOST_TEST(contains(r.out, "rects:3:15"));
    BOOST_TEST(contains(r.out, "knn5"));

    const auto report = nlohmann::json::parse(read_text(out / "experiment.json"));
    // how the run was made, as the command line above says
    BOOST_TEST(report.at("iterations").get<int>() == 2);
    BOOST_TEST(report.at("batch").get<int>() == 16);
    BOOST_TEST(report.at("seed").get<int>() == 4);
    BOOST_TEST(report.at("knn_count").get<int>() == 7);
    BOOST_TEST(report.at("threads").get<int>() == 2);
    BOOST_TEST(report.at("backend").get<std::string>() == "cpu");
    BOOST_TEST(report.at("architecture").get<std::string>() == "ht");
    BOOST_TEST(report.at("test_images").get<int>() == 21);
    BOOST_TEST(report.at("train_seconds").get<double>() >= 0.0);
    BOOST_TEST(report.at("complete").get<bool>());
    BOOST_TEST(report.at("settings").get<int>() == 16);
    const auto& results = report.at("results");
    BOOST_TEST_REQUIRE(results.is_array());
    BOOST_TEST(results.size() == 16u * 4u);
    std::set<std::string> missing, methods;
    for (const auto& entry : results) {
        missing.insert(entry.at("missing").get<std::string>());
        const auto method = entry.at("method").get<std::string>();
        methods.insert(method);
        BOOST_TEST(entry.at("count").get<int>() == (method == "knn5" ? 7 : 21));
        const double accuracy = entry.at("accuracy").get<double>();
        BOOST_TEST((accuracy >= 0.0 && accuracy <= 1.0));
    }
    BOOST_TEST(missing.size() == 16u);
    for (const char* m : {"none", "iid:0.25", "iid:0.99", "rects:1:7", "rects:2:11", "rects:3:15"})
        BOOST_TEST(missing.count(m) == 1u, m);
    BOOST_TEST((methods == std::set<std::string>{"tmm", "tmm-mean", "tmm-zero", "knn5"}));

    const std::string svg = read_text(out / "iid.svg");
    BOOST_TEST(svg.rfind("<svg", 0) == 0u);
    std::size_t polylines = 0;
    for (std::size_t at = 0; (at = svg.find("<polyline", at)) != std::string::npos; ++at)
        ++polylines;
    BOOST_TEST(polylines == 4u);
    BOOST_TEST(tmm::load_model(out / "model.tmm").architecture == "ht");
    for (const auto& e : fs::directory_iterator(out))
        BOOST_TEST(!contains(e.path().filename().string(), ".tmp."), e.path());
}

// Every output path is checked, for real, before the data is read or a step trained: a FIFO
// (or anything else not a regular file) is refused and left as it was, a name too long for
// the file system is refused, and so is an experiment directory whose model.tmm or iid.svg
// is taken by something else.
BOOST_AUTO_TEST_CASE(bad_output_paths_are_refused_before_training) {
    auto& w = shared();
    const fs::path dir = w.dir.path / "outputs";
    fs::create_directories(dir);
    const std::string train =
        "train --data " + quote(w.data.string()) + " --arch cp --iterations 1 --out ";
    // What the training banner starts with: none of these runs may get that far.
    const std::string banner = "training cp on";

    const fs::path fifo = dir / "fifo.tmm";
    BOOST_TEST_REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
    auto r = w.run(train + quote(fifo.string()));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, fifo.string()));
    BOOST_TEST(contains(r.err, "is not a regular file (a FIFO"));
    BOOST_TEST(!contains(r.err, banner));
    BOOST_TEST(fs::is_fifo(fs::symlink_status(fifo)));

    const fs::path null_link = dir / "null.tmm";
    fs::create_symlink("/dev/null", null_link);
    r = w.run(train + quote(null_link.string()));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "a symbolic link to a character device"));
    BOOST_TEST(!contains(r.err, banner));
    BOOST_TEST(fs::read_symlink(null_link) == fs::path("/dev/null"));

    const fs::path long_name = dir / (std::string(300, 'm') + ".tmm");
    r = w.run(train + quote(long_name.string()));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, "File name too long"));
    BOOST_TEST(!contains(r.err, banner));

    // Experiment: model.tmm is a directory (a command-line mistake), iid.svg a FIFO.
    const std::string experiment =
        "experiment --data " + quote(w.data.string()) + " --iterations 1 --knn-count 3 --out ";
    const fs::path taken = dir / "taken";
    fs::create_directories(taken / "model.tmm");
    r = w.run(experiment + quote(taken.string()));
    BOOST_TEST(r.code == 2);
    BOOST_TEST(contains(r.err, (taken / "model.tmm").string() + " is a directory"));
    BOOST_TEST(!contains(r.err, "training ht on"));
    BOOST_TEST(!contains(r.out, "data set"));
    fs::remove(taken / "model.tmm");
    BOOST_TEST_REQUIRE(::mkfifo((taken / "iid.svg").c_str(), 0644) == 0);
    r = w.run(experiment + quote(taken.string()));
    BOOST_TEST(r.code == 1);
    BOOST_TEST(contains(r.err, (taken / "iid.svg").string()));
    BOOST_TEST(contains(r.err, "is not a regular file"));
    BOOST_TEST(!contains(r.err, "training ht on"));

    // Nothing was written anywhere: only what the test made itself is there.
    std::set<std::string> names;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        names.insert(e.path().lexically_relative(dir).string());
    std::string listed;
    for (const auto& n : names) listed += n + " ";
    BOOST_TEST((names == std::set<std::string>{"fifo.tmm", "null.tmm", "taken", "taken/iid.svg"}),
               listed);
}

// A batch larger than the training set: the banner says the batch actually used.
BOOST_AUTO_TEST_CASE(training_banner_shows_the_effective_batch) {
    auto& w = shared();
    const fs::path out = w.dir.path / "big-batch.tmm";
    const auto r = w.run("train --data " + quote(w.data.string()) + " --arch cp --out " +
                         quote(out.string()) + " --iterations 1 --batch 1000 --threads 2");
    BOOST_TEST_REQUIRE(r.code == 0);
    // write_split puts 48 images in the training set.
    BOOST_TEST(contains(r.err,
                        "iterations of batch 48 (--batch 1000 is more than the 48 "
                        "training images)"));
}

// `--data .` names the default output directory after the data directory, not "out/.".
BOOST_AUTO_TEST_CASE(experiment_default_output_is_named_after_the_data_directory) {
    auto& w = shared();
    const fs::path copy = w.dir.path / "digits";
    fs::create_directories(copy);
    for (const auto& e : fs::directory_iterator(w.data))
        if (e.is_regular_file()) fs::copy_file(e.path(), copy / e.path().filename());
    const auto r = w.run("experiment --data . --iterations 1 --knn-count 3 --threads 2", copy);
    BOOST_TEST_REQUIRE(r.code == 0);
    BOOST_TEST(fs::is_regular_file(copy / "out" / "digits" / "experiment.json"));
    BOOST_TEST(fs::is_regular_file(copy / "out" / "digits" / "model.tmm"));
    BOOST_TEST(!fs::exists(copy / "out" / "model.tmm"));  // where "out/./" put it
    BOOST_TEST(contains(r.out, "out/digits/experiment.json"));
    BOOST_TEST(!contains(r.out, "out/./"));
}
