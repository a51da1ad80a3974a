// `tmm sample`, `tmm inpaint` and `tmm visualise` end to end on a tiny generated IDX data set
// and a model file written here (no training, no downloads): the PNG files decode (libpng)
// to the grid the options ask for, the same seed writes the same file, a completion keeps
// every observed pixel, the mean-imputation baseline in the JSON equals the one computed
// here from the data, and bad arguments exit with 2 (command line) or 1 (files) and a
// message naming the problem.
#define BOOST_TEST_MODULE generate_cli
#include <boost/test/unit_test.hpp>

#include <png.h>

#include <tmm/data/idx.hpp>
#include <tmm/data/missing.hpp>
#include <tmm/dsl/decompositions.hpp>
#include <tmm/io/model_file.hpp>

#include "../common/run_program.hpp"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using namespace tmm_test;

// Images whose class is a bright bar at a row of its own, on a dark noisy background.
tmm::data::dataset bars(std::size_t count, unsigned seed) {
    tmm::data::dataset d;
    d.count = count;
    d.rows = d.cols = 28;
    d.classes = 10;
    d.pixels.resize(count * 28 * 28);
    d.labels.resize(count);
    std::mt19937 rng(seed);
    for (std::size_t i = 0; i < count; ++i) {
        d.labels[i] = int(i % 10);
        auto image = d.image(i);
        for (auto& v : image) v = std::uint8_t(rng() % 50);
        for (int c = 4; c < 24; ++c) image[std::size_t(2 + 2 * d.labels[i]) * 28 + c] = 230;
    }
    return d;
}

// A decoded PNG: width x height RGB pixels.
struct picture {
    int width = 0, height = 0;
    std::vector<std::uint8_t> rgb;
    const std::uint8_t* at(int x, int y) const {
        return rgb.data() + (std::size_t(y) * width + x) * 3;
    }
};

picture read_png(const fs::path& path) {
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    BOOST_TEST_REQUIRE(png_image_begin_read_from_file(&image, path.c_str()) != 0,
                       path << " is not a PNG file");
    image.format = PNG_FORMAT_RGB;
    picture p;
    p.width = int(image.width);
    p.height = int(image.height);
    p.rgb.resize(PNG_IMAGE_SIZE(image));
    BOOST_TEST_REQUIRE(png_image_finish_read(&image, nullptr, p.rgb.data(), 0, nullptr) != 0);
    return p;
}

struct world {
    scratch_dir scratch{"tmm_generate_cli_"};
    fs::path dir = scratch.path, data, model;
    std::string program;
    tmm::data::dataset train = bars(40, 1), test = bars(12, 2);

    world() {
        const char* env = std::getenv("TMM_CLI");
        BOOST_TEST_REQUIRE(env != nullptr, "TMM_CLI must name the tmm program to test");
        program = env;
        data = dir / "bars";
        model = dir / "model.tmm";
        fs::create_directories(data);
        tmm::data::write_idx_dataset(data / "train-images-idx3-ubyte",
                                     data / "train-labels-idx1-ubyte", train);
        tmm::data::write_idx_dataset(data / "t10k-images-idx3-ubyte",
                                     data / "t10k-labels-idx1-ubyte", test);
        // The published HT network with random Gaussian means: enough to draw from.
        const tmm::plan p = tmm::make_plan(tmm::published_ht);
        auto params = tmm::zero_parameters<float>(p);
        std::mt19937 rng(3);
        std::uniform_real_distribution<float> mean(-0.5f, 0.5f), logit(-1.0f, 1.0f);
        for (float& v : params.mean) v = mean(rng);
        for (float& v : params.log_precision) v = 3.0f;
        for (auto& t : params.theta)
            for (float& v : t) v = logit(rng);
        tmm::save_model(model, p, params, "ht");
    }

    result run(const std::string& args) { return run_program(program, args, dir); }
    std::string file(const std::string& name) const { return quote((dir / name).string()); }
    std::string with_model(const std::string& command) const {
        return command + " --model " + quote(model.string());
    }
};

world& shared() {
    static world w;
    return w;
}

// Tiles of 28 x 28 pixels drawn `scale` times larger, with a gap of 2 around every tile.
int grid_size(int tiles, int scale) {
    return tiles * (28 * scale + 2) + 2;
}

}  // namespace

BOOST_AUTO_TEST_CASE(sample_writes_a_grid_and_the_seed_decides_it) {
    auto& w = shared();
    auto r = w.run(w.with_model("sample") + " --count 3 --seed 5 --png " + w.file("a.png"));
    BOOST_TEST_REQUIRE(r.code == 0);
    BOOST_TEST(contains(r.out, "a.png"));
    const picture every = read_png(w.dir / "a.png");
    BOOST_TEST(every.width == grid_size(3, 3));    // 3 samples a row
    BOOST_TEST(every.height == grid_size(10, 3));  // one row per class

    r = w.run(w.with_model("sample") + " --class 4 --count 12 --scale 1 --seed 5 --png " +
              w.file("b.png"));
    BOOST_TEST_REQUIRE(r.code == 0);
    const picture one = read_png(w.dir / "b.png");
    BOOST_TEST(one.width == grid_size(10, 1));  // at most 10 a row
    BOOST_TEST(one.height == grid_size(2, 1));

    BOOST_TEST_REQUIRE(w.run(w.with_model("sample") +
                             " --class 4 --count 12 --scale 1 --seed 5 "
                             "--png " +
                             w.file("c.png"))
                           .code == 0);
    BOOST_TEST_REQUIRE(w.run(w.with_model("sample") +
                             " --class 4 --count 12 --scale 1 --seed 6 "
                             "--png " +
                             w.file("d.png"))
                           .code == 0);
    BOOST_TEST((read_text(w.dir / "b.png") == read_text(w.dir / "c.png")));
    BOOST_TEST((read_text(w.dir / "b.png") != read_text(w.dir / "d.png")));
    BOOST_TEST_REQUIRE(
        w.run(w.with_model("sample") + " --modes --count 2 --png " + w.file("e.png")).code == 0);
}

// Without --count, inpaint takes 1000 images or the whole test split when it is smaller.
BOOST_AUTO_TEST_CASE(inpaint_count_defaults_to_a_small_test_split) {
    auto& w = shared();
    const auto r = w.run(w.with_model("inpaint") + " --data " + quote(w.data.string()) +
                         " --missing iid:0.5 --mode mpe --json --png " + w.file("d.png"));
    BOOST_TEST_REQUIRE(r.code == 0, r.err);
    BOOST_TEST(nlohmann::json::parse(r.out).at("count").get<std::size_t>() == w.test.count);
}

// With nothing missing there is no error to average: null in JSON, "n/a" in the text.
BOOST_AUTO_TEST_CASE(inpaint_with_nothing_missing_reports_no_error) {
    auto& w = shared();
    const std::string base = w.with_model("inpaint") + " --data " + quote(w.data.string()) +
                             " --missing none --count 5 --png " + w.file("n.png");
    const auto r = w.run(base + " --json");
    BOOST_TEST_REQUIRE(r.code == 0, r.err);
    const auto j = nlohmann::json::parse(r.out);
    BOOST_TEST(j.at("missing_pixels").get<std::size_t>() == 0u);
    BOOST_TEST(j.at("mse").is_null());
    BOOST_TEST(j.at("mse_mean_imputation").is_null());
    const auto text = w.run(base);
    BOOST_TEST_REQUIRE(text.code == 0, text.err);
    BOOST_TEST(text.out.find("mse n/a") != std::string::npos, text.out);
}

BOOST_AUTO_TEST_CASE(inpaint_keeps_observed_pixels_and_reports_both_errors) {
    auto& w = shared();
    for (const std::string mode : {"mean", "mpe", "sample"}) {
        const auto r = w.run(w.with_model("inpaint") + " --data " + quote(w.data.string()) +
                             " --missing iid:0.5 --seed 4 --count 12 --show 4 --scale 1 --json "
                             "--mode " +
                             mode + " --png " + w.file("i.png"));
        BOOST_TEST_REQUIRE(r.code == 0, mode);
        const auto j = nlohmann::json::parse(r.out);
        BOOST_TEST(j.at("count").get<int>() == 12);
        BOOST_TEST(j.at("mode").get<std::string>() == mode);

        // the baseline, from the data alone: training mean of each pixel vs the hidden truth
        const auto mask = tmm::data::make_missing(tmm::data::parse_missing("iid:0.5"), w.test, 4);
        std::vector<double> means(28 * 28, 0.0);
        for (std::size_t b = 0; b < w.train.count; ++b)
            for (std::size_t i = 0; i < means.size(); ++i)
                means[i] += w.train.image(b)[i] / double(w.train.count);
        double error = 0;
        std::size_t missing = 0;
        for (std::size_t b = 0; b < 12; ++b)
            for (std::size_t i = 0; i < means.size(); ++i)
                if (!mask.observed[b * means.size() + i]) {
                    const double diff = means[i] - w.test.image(b)[i];
                    error += diff * diff;
                    ++missing;
                }
        BOOST_TEST(j.at("missing_pixels").get<std::size_t>() == missing);
        const double baseline = j.at("mse_mean_imputation").get<double>();
        BOOST_TEST(std::abs(baseline - error / double(missing)) < 1e-3 * baseline);
        const double mse = j.at("mse").get<double>();
        BOOST_TEST((std::isfinite(mse) && mse >= 0.0));

        // rows: original, masked, completion; an observed pixel is the same in all three
        const picture pic = read_png(w.dir / "i.png");
        BOOST_TEST_REQUIRE(pic.width == grid_size(4, 1));
        BOOST_TEST_REQUIRE(pic.height == grid_size(3, 1));
        for (int b = 0; b < 4; ++b)
            for (int y = 0; y < 28; ++y)
                for (int x = 0; x < 28; ++x) {
                    const std::size_t i = std::size_t(b) * 784 + std::size_t(y) * 28 + x;
                    const int left = 2 + b * 30 + x;
                    const std::uint8_t truth = w.test.pixels[i];
                    BOOST_TEST_REQUIRE(pic.at(left, 2 + y)[0] == truth);
                    if (mask.observed[i])
                        BOOST_TEST_REQUIRE(pic.at(left, 2 + 2 * 30 + y)[0] == truth,
                                           mode << " image " << b << " pixel " << y << "," << x);
                }
    }
}

BOOST_AUTO_TEST_CASE(both_backends_give_the_same_completions) {
    // the upward pass of the CPU backend (the default) against the scalar reference: the
    // most probable completions are the same picture, the conditional means the same error
    auto& w = shared();
    const std::string base = w.with_model("inpaint") + " --data " + quote(w.data.string()) +
                             " --missing iid:0.5 --seed 4 --count 12 --show 4 --scale 1 --json ";
    for (const std::string mode : {"mean", "mpe"}) {
        const auto cpu = w.run(base + "--mode " + mode + " --png " + w.file("bc.png"));
        const auto ref =
            w.run(base + "--mode " + mode + " --backend reference --png " + w.file("br.png"));
        BOOST_TEST_REQUIRE(cpu.code == 0, mode);
        BOOST_TEST_REQUIRE(ref.code == 0, mode);
        const auto a = nlohmann::json::parse(cpu.out), b = nlohmann::json::parse(ref.out);
        BOOST_TEST(a.at("backend").get<std::string>() == "cpu");
        BOOST_TEST(b.at("backend").get<std::string>() == "reference");
        const double mse = a.at("mse").get<double>(), want = b.at("mse").get<double>();
        BOOST_TEST(std::abs(mse - want) <= 1e-4 * want, mode << ": " << mse << " vs " << want);
        if (mode == "mpe") BOOST_TEST((read_text(w.dir / "bc.png") == read_text(w.dir / "br.png")));
    }
}

BOOST_AUTO_TEST_CASE(visualise_draws_one_tile_per_channel) {
    auto& w = shared();
    auto r = w.run(w.with_model("visualise") + " --layer 8 --scale 1 --png " + w.file("v.png"));
    BOOST_TEST_REQUIRE(r.code == 0);
    const picture classes = read_png(w.dir / "v.png");  // 10 classes, 8 a row
    BOOST_TEST(classes.width == grid_size(8, 1));
    BOOST_TEST(classes.height == grid_size(2, 1));
    r = w.run(w.with_model("visualise") + " --layer 0 --channels 3 --png " + w.file("v0.png"));
    BOOST_TEST_REQUIRE(r.code == 0);
    BOOST_TEST(read_png(w.dir / "v0.png").width == grid_size(3, 4));
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_refused_with_a_reason) {
    auto& w = shared();
    const std::string png = " --png " + w.file("x.png");
    struct bad {
        std::string args;
        int code;
        std::string message;
    };
    const std::vector<bad> cases = {
        {w.with_model("sample") + " --class 10" + png, 2, "--class 10"},
        {w.with_model("sample") + " --class -1" + png, 2, "--class -1"},
        {w.with_model("sample") + " --count 0" + png, 2, "--count"},
        {w.with_model("sample") + " --count 1001" + png, 2, "--count 1001: at most 1000"},
        {w.with_model("sample") + " --count 99999999999999" + png, 2, "at most 1000"},
        {w.with_model("sample") + " --seed -3" + png, 2, "--seed"},
        {w.with_model("sample") + " --png " + w.file("missing-dir/x.png"), 2, "does not exist"},
        {"sample --model " + w.file("nothing.tmm") + png, 1, "nothing.tmm"},
        {w.with_model("visualise") + " --layer 9" + png, 2, "--layer 9"},
        {w.with_model("visualise") + " --layer -1" + png, 2, "--layer -1"},
        {w.with_model("visualise") + " --layer 0 --backend gpu" + png, 2, "--backend"},
        {w.with_model("inpaint") + " --data " + quote(w.data.string()) + " --mode best" + png, 2,
         "--mode"},
        {w.with_model("inpaint") + " --data " + quote(w.data.string()) + " --count 13" + png, 2,
         "--count 13"},
        {w.with_model("inpaint") + " --data " + quote(w.data.string()) + " --missing iid:7" + png,
         2, "--missing"},
        {w.with_model("inpaint") + " --data " + quote(w.data.string()) + " --missing delete:785" +
             png,
         2, "--missing delete:785: cannot delete 785 pixels of a 28x28 image, which has 784"},
    };
    for (const auto& c : cases) {
        const auto r = w.run(c.args);
        BOOST_TEST(r.code == c.code, c.args);
        BOOST_TEST(contains(r.err, c.message), c.args << ": " << r.err);
    }
    BOOST_TEST(!fs::exists(w.dir / "x.png"));
}
