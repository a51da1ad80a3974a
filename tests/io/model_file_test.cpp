// Model files: bit-exact round trips, atomic writes, and a clear refusal for every damaged,
// foreign or mismatched file (crafted here by truncating, flipping and re-encoding files).
#define BOOST_TEST_MODULE model_file
#include <boost/test/unit_test.hpp>

#include <tmm/dsl/decompositions.hpp>
#include <tmm/io/model_file.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// A fresh directory under the system's temporary directory, removed with everything in it.
struct scratch_dir {
    fs::path path;
    scratch_dir() {
        std::random_device rd;
        path = fs::temp_directory_path() /
               ("tmm_model_file_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
        fs::create_directories(path);
    }
    ~scratch_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    // Names in the directory other than `keep`: leftovers such as temporary files.
    std::vector<std::string> entries() const {
        std::vector<std::string> names;
        for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename());
        std::sort(names.begin(), names.end());
        return names;
    }
};

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// Recomputes the header's CRC after a payload was edited on purpose.
void fix_crc(std::vector<std::uint8_t>& file) {
    const std::uint32_t crc = tmm::detail::crc32_of(
        std::span<const std::uint8_t>(file).subspan(tmm::model_file_header_size));
    for (int i = 0; i < 4; ++i) file[12 + i] = std::uint8_t(crc >> (8 * i));
}

constexpr auto small_ht = tmm::ht<tmm::input<4, 4>, tmm::gaussians<3>, 2, 3, 2>;
constexpr auto wider_ht = tmm::ht<tmm::input<4, 4>, tmm::gaussians<3>, 2, 3, 4>;
constexpr auto other_input = tmm::ht<tmm::input<6, 6>, tmm::gaussians<3>, 2, 3, 2, 2>;
constexpr auto categorical_cp = tmm::cp<tmm::input<4, 4>, tmm::categorical<2, 5>, 2, 3, 4>;
constexpr auto with_fixed_weights =
    tmm::input<4, 4> | tmm::representation<tmm::gaussians<3>, 2> |
    tmm::fixed_conv<tmm::weights<2, 3>{{0.5, 0.25, 0.25, 0.2, 0.3, 0.5}}> |
    tmm::product_pool<tmm::global> | tmm::classes<2>;

// Random parameters for p, sprinkled with the values a careless format would mangle:
// -0, subnormals, the largest and smallest normal floats, and a -inf class prior. The class
// prior is a random distribution (log P(y) = z_y - log sum exp z, in double).
tmm::parameters<float> random_parameters(const tmm::plan& p, unsigned seed) {
    auto params = tmm::zero_parameters<float>(p);
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    const float specials[] = {-0.0f,
                              std::numeric_limits<float>::denorm_min(),
                              -std::numeric_limits<float>::denorm_min(),
                              std::numeric_limits<float>::max(),
                              std::numeric_limits<float>::lowest(),
                              std::numeric_limits<float>::min(),
                              1e-40f};
    std::size_t n = 0;
    params.for_each_array([&](std::vector<float>& a) {
        for (auto& v : a) v = normal(rng);
        for (std::size_t i = 0; i < a.size(); i += 7) a[i] = specials[n++ % std::size(specials)];
    });
    std::vector<double> z(params.log_prior.size() - 1);
    double total = 0;
    for (double& v : z) total += std::exp(v = normal(rng));
    for (std::size_t y = 0; y < z.size(); ++y) params.log_prior[y] = float(z[y] - std::log(total));
    params.log_prior.back() = -std::numeric_limits<float>::infinity();
    return params;
}

void check_bit_exact(const tmm::parameters<float>& a, const tmm::parameters<float>& b) {
    auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
        BOOST_TEST_REQUIRE(x.size() == y.size());
        BOOST_TEST((x.empty() || std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0));
    };
    same(a.mean, b.mean);
    same(a.log_precision, b.log_precision);
    same(a.logits, b.logits);
    BOOST_TEST_REQUIRE(a.theta.size() == b.theta.size());
    for (std::size_t l = 0; l < a.theta.size(); ++l) same(a.theta[l], b.theta[l]);
    same(a.log_prior, b.log_prior);
}

// Runs `f`, requires a model_file_error, and returns its message.
template <class F>
std::string refusal(F&& f) {
    try {
        f();
    } catch (const tmm::model_file_error& e) {
        return e.what();
    }
    BOOST_FAIL("expected tmm::model_file_error");
    return {};
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

// A small valid model file, its bytes, and its plan.
struct small_file {
    scratch_dir dir;
    tmm::plan plan = tmm::make_plan(small_ht);
    tmm::parameters<float> params = random_parameters(plan, 1);
    fs::path path = dir.path / "model.tmm";
    std::vector<std::uint8_t> bytes;
    small_file() {
        tmm::save_model(path, plan, params, "small-ht");
        bytes = read_bytes(path);
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_is_bit_exact) {
    scratch_dir dir;
    struct network_case {
        std::string name;
        tmm::plan plan;
    };
    const network_case cases[] = {{"small-ht", tmm::make_plan(small_ht)},
                                  {"categorical-cp", tmm::make_plan(categorical_cp)},
                                  {"fixed", tmm::make_plan(with_fixed_weights)},
                                  {"ht", tmm::make_plan(tmm::published_ht)}};
    unsigned seed = 0;
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT("network " << c.name) {
            const auto params = random_parameters(c.plan, ++seed);
            const fs::path path = dir.path / (c.name + ".tmm");
            tmm::save_model(path, c.plan, params, c.name);

            const auto loaded = tmm::load_model(path, c.plan);
            BOOST_TEST(loaded.architecture == c.name);
            BOOST_TEST(tmm::plan_difference(loaded.structure, c.plan) == "");
            BOOST_TEST(loaded.plan_fingerprint == tmm::plan_fingerprint(c.plan));
            check_bit_exact(loaded.params, params);

            // Saving what was loaded writes the same bytes again.
            const fs::path again = dir.path / (c.name + ".again.tmm");
            tmm::save_model(again, loaded.structure, loaded.params, loaded.architecture);
            BOOST_TEST((read_bytes(path) == read_bytes(again)));
        }
    }
    const auto fixed = tmm::load_model(dir.path / "fixed.tmm");
    BOOST_TEST(fixed.structure.layers.at(0).fixed);
    BOOST_TEST(fixed.structure.layers.at(0).fixed_weights.size() == 6u);
}

BOOST_AUTO_TEST_CASE(header_is_magic_version_crc_length) {
    small_file f;
    BOOST_TEST_REQUIRE(f.bytes.size() > tmm::model_file_header_size);
    BOOST_TEST(std::memcmp(f.bytes.data(), "\x89TMM\r\n\x1a\n", 8) == 0);
    BOOST_TEST(f.bytes[8] == 1);  // version 1, little-endian
    BOOST_TEST((f.bytes[9] | f.bytes[10] | f.bytes[11]) == 0);
    std::uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= std::uint64_t(f.bytes[16 + i]) << (8 * i);
    BOOST_TEST(length + tmm::model_file_header_size == f.bytes.size());
    BOOST_TEST(f.dir.entries() == std::vector<std::string>{"model.tmm"});
}

BOOST_AUTO_TEST_CASE(missing_file_and_directory_are_refused) {
    scratch_dir dir;
    const auto missing = refusal([&] { tmm::load_model(dir.path / "nothing.tmm"); });
    BOOST_TEST(contains(missing, (dir.path / "nothing.tmm").string()));
    BOOST_TEST(contains(missing, "no such file"));
    const auto directory = refusal([&] { tmm::load_model(dir.path); });
    BOOST_TEST(contains(directory, "is a directory"));
}

// Opening a FIFO for reading would block until some writer appeared: it is refused first,
// like a device, and a path through a regular file names its real problem.
BOOST_AUTO_TEST_CASE(special_files_are_refused_without_being_opened) {
    scratch_dir dir;
    const fs::path fifo = dir.path / "fifo.tmm";
    BOOST_TEST_REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
    const auto from_fifo = refusal([&] { tmm::load_model(fifo); });
    BOOST_TEST(contains(from_fifo, fifo.string()));
    BOOST_TEST(contains(from_fifo, "is not a regular file (a FIFO"));
    const auto from_device = refusal([&] { tmm::load_model("/dev/null"); });
    BOOST_TEST(contains(from_device, "is not a regular file (a character device)"));
    const fs::path file = dir.path / "plain";
    { std::ofstream(file) << "x"; }
    const auto through_file = refusal([&] { tmm::load_model(file / "model.tmm"); });
    BOOST_TEST(contains(through_file, "Not a directory"));
}

BOOST_AUTO_TEST_CASE(every_truncation_is_refused) {
    small_file f;
    const fs::path cut = f.dir.path / "cut.tmm";
    for (std::size_t size = 0; size < f.bytes.size(); ++size) {
        BOOST_TEST_CONTEXT("truncated to " << size << " bytes") {
            write_bytes(cut, std::vector<std::uint8_t>(f.bytes.begin(), f.bytes.begin() + size));
            const auto message = refusal([&] { tmm::load_model(cut); });
            BOOST_TEST(contains(message, cut.string()));
            BOOST_TEST((contains(message, "truncated") || contains(message, "empty file")));
            if (size > 0) BOOST_TEST(contains(message, "byte offset"));
        }
    }
}

BOOST_AUTO_TEST_CASE(every_flipped_byte_is_refused) {
    small_file f;
    const fs::path bad = f.dir.path / "flipped.tmm";
    for (std::size_t at = 0; at < f.bytes.size(); ++at) {
        for (std::uint8_t mask : {std::uint8_t(0x01), std::uint8_t(0x80)}) {
            BOOST_TEST_CONTEXT("byte " << at << " xor " << int(mask)) {
                auto bytes = f.bytes;
                bytes[at] ^= mask;
                write_bytes(bad, bytes);
                const auto message = refusal([&] { tmm::load_model(bad); });
                BOOST_TEST(contains(message, bad.string()));
                if (at < 8) {
                    BOOST_TEST(contains(message, "bad magic"));
                } else if (at < 12) {
                    BOOST_TEST(contains(message, "unsupported format version"));
                } else if (at < 16 || at >= 24) {
                    BOOST_TEST(contains(message, "corrupted: the CRC32"));
                } else {
                    BOOST_TEST((contains(message, "truncated") ||
                                contains(message, "unexpected bytes after")));
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(other_versions_are_refused_naming_the_supported_one) {
    small_file f;
    auto bytes = f.bytes;
    bytes[8] = 2;
    write_bytes(f.path, bytes);
    const auto message = refusal([&] { tmm::load_model(f.path); });
    BOOST_TEST(contains(message, "byte offset 8"));
    BOOST_TEST(contains(message, "unsupported format version 2"));
    BOOST_TEST(contains(message, "reads version 1"));
}

BOOST_AUTO_TEST_CASE(appended_bytes_are_refused) {
    small_file f;
    auto bytes = f.bytes;
    bytes.push_back(0);
    write_bytes(f.path, bytes);
    const auto message = refusal([&] { tmm::load_model(f.path); });
    BOOST_TEST(contains(message, "1 unexpected bytes after"));
    BOOST_TEST(contains(message, "byte offset " + std::to_string(f.bytes.size())));
}

BOOST_AUTO_TEST_CASE(non_finite_parameters_are_refused_on_load) {
    small_file f;
    const float inf = std::numeric_limits<float>::infinity();
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), inf}) {
        auto params = f.params;
        params.theta.at(0).at(5) = bad;
        // encode_model does not check: it writes what save_model refuses to.
        write_bytes(f.path, tmm::detail::encode_model(f.plan, params, "small-ht"));
        const auto message = refusal([&] { tmm::load_model(f.path); });
        BOOST_TEST(contains(message, "array theta.0 value 5 is"));
        BOOST_TEST(contains(message, std::isnan(bad) ? "NaN" : "+inf"));
        BOOST_TEST(contains(message, "byte offset"));
    }
    // The Gaussians are finite: -inf there is refused.
    auto params = f.params;
    params.mean.at(2) = -inf;
    write_bytes(f.path, tmm::detail::encode_model(f.plan, params, "small-ht"));
    BOOST_TEST(contains(refusal([&] { tmm::load_model(f.path); }), "array mean value 2 is -inf"));
    // A NaN class prior is refused too; -inf there (an impossible class) is allowed.
    params = f.params;
    params.log_prior.at(0) = std::numeric_limits<float>::quiet_NaN();
    write_bytes(f.path, tmm::detail::encode_model(f.plan, params, "small-ht"));
    BOOST_TEST(contains(refusal([&] { tmm::load_model(f.path); }), "log_prior value 0 is NaN"));
}

// A conv logit of -inf is a weight of zero, which tmm::validate and every backend accept: such a
// model saves and loads back bit for bit. A whole row of -inf (no weight left to normalise) is
// refused on save and on load, naming the row and where it starts in the file.
BOOST_AUTO_TEST_CASE(zero_weights_round_trip_but_a_row_of_them_is_refused) {
    small_file f;
    const float inf = std::numeric_limits<float>::infinity();
    const std::size_t row = std::size_t(f.plan.layers.at(0).in_channels);
    auto params = f.params;
    params.theta.at(0).at(1) = -inf;
    params.theta.at(0).at(row + 1) = -inf;
    for (float& v : params.log_precision) v = 0.0f;  // (the fixture's extremes aside)
    tmm::validate(f.plan, params);                   // the library's own check accepts it
    tmm::save_model(f.path, f.plan, params, "small-ht");
    const auto loaded = tmm::load_model(f.path);
    BOOST_TEST(loaded.params.theta.at(0) == params.theta.at(0));

    for (std::size_t i = row; i < 2 * row; ++i) params.theta.at(0).at(i) = -inf;  // row 1
    const auto saving = refusal([&] { tmm::save_model(f.path, f.plan, params, "small-ht"); });
    BOOST_TEST(contains(saving, "array theta.0 row 1 (values " + std::to_string(row) + ".." +
                                    std::to_string(2 * row - 1) + ") is entirely -inf"));
    const auto bytes = tmm::detail::encode_model(f.plan, params, "small-ht");
    write_bytes(f.path, bytes);
    const auto loading = refusal([&] { tmm::load_model(f.path); });
    BOOST_TEST(contains(loading, "array theta.0 row 1"));
    // the offset named is that of the row's first value: its 4 bytes are -inf there
    const std::size_t at = loading.find("byte offset ");
    BOOST_TEST_REQUIRE(at != std::string::npos);
    const std::size_t offset = std::stoul(loading.substr(at + 12));
    BOOST_TEST_REQUIRE(offset + 4 <= bytes.size());
    float value = 0;
    std::memcpy(&value, bytes.data() + offset, 4);
    BOOST_TEST(value == -inf);
    BOOST_TEST(offset >= 4 * row);
    float before = 0;
    std::memcpy(&before, bytes.data() + offset - 4 * row, 4);
    BOOST_TEST(before != -inf);  // row 0 starts with a finite logit
}

// log_prior is log P(y): a file whose class probabilities do not sum to 1 (say 1e38 for one
// class, which would win every prediction) is refused, naming the array and the sum; so is
// saving one. A prior off by 1e-4 in the log is refused, one off by 1e-6 (float rounding) is
// not: the tolerance is 1e-5.
BOOST_AUTO_TEST_CASE(class_priors_that_are_not_distributions_are_refused) {
    small_file f;
    const float inf = std::numeric_limits<float>::infinity();
    const auto refused = [&](std::vector<float> log_prior, const std::string& sum) {
        auto params = f.params;
        params.log_prior = std::move(log_prior);
        write_bytes(f.path, tmm::detail::encode_model(f.plan, params, "small-ht"));
        auto message = refusal([&] { tmm::load_model(f.path); });
        BOOST_TEST(contains(message, f.path.string()), message);
        BOOST_TEST(contains(message, "array log_prior is not a log distribution"), message);
        BOOST_TEST(contains(message, "sum to " + sum), message);
        message = refusal([&] { tmm::save_model(f.path, f.plan, params, "small-ht"); });
        BOOST_TEST(contains(message, "array log_prior is not a log distribution"), message);
        BOOST_TEST(contains(message, "nothing was written"), message);
    };
    // small_ht has 3 classes
    refused({1e38f, std::log(0.5f), std::log(0.5f)}, "inf (");
    refused({0.0f, 0.0f, 0.0f}, "3 (");                                      // P = 1, 1, 1
    refused({std::log(0.25f), std::log(0.25f), std::log(0.25f)}, "0.75 (");  // P = 3 x 1/4
    refused({-inf, -inf, -inf}, "0 (");                                      // no class possible
    const float third = -std::log(3.0f);
    refused({third + 1e-4f, third + 1e-4f, third + 1e-4f}, "1.0001");  // sum e^1e-4
    // within the tolerance: loads, and the prior read back is the one written
    for (const std::vector<float>& fine :
         {std::vector<float>{third + 1e-6f, third + 1e-6f, third},
          std::vector<float>{0.0f, -inf, -inf}, std::vector<float>{-1e38f, 0.0f, -inf}}) {
        auto params = f.params;
        params.log_prior = fine;
        write_bytes(f.path, tmm::detail::encode_model(f.plan, params, "small-ht"));
        BOOST_TEST((tmm::load_model(f.path).params.log_prior == fine));
    }
}

BOOST_AUTO_TEST_CASE(array_sizes_that_do_not_fit_the_plan_are_refused) {
    small_file f;
    auto params = f.params;
    params.theta.at(0).pop_back();
    write_bytes(f.path, tmm::detail::encode_model(f.plan, params, "small-ht"));
    const auto message = refusal([&] { tmm::load_model(f.path); });
    const auto expected = f.params.theta.at(0).size();
    BOOST_TEST(contains(message, "array theta.0 holds " + std::to_string(expected - 1) +
                                     " values, the plan in the file needs " +
                                     std::to_string(expected)));

    params = f.params;
    params.theta.pop_back();  // one theta array fewer than the plan has layers
    write_bytes(f.path, tmm::detail::encode_model(f.plan, params, "small-ht"));
    BOOST_TEST(contains(refusal([&] { tmm::load_model(f.path); }), "parameter arrays"));
}

BOOST_AUTO_TEST_CASE(malformed_payloads_with_a_valid_crc_are_refused) {
    small_file f;
    // The payload begins with the architecture name's length: claim far more than is there.
    auto bytes = f.bytes;
    bytes[24 + 3] = 0x7f;
    fix_crc(bytes);
    write_bytes(f.path, bytes);
    auto message = refusal([&] { tmm::load_model(f.path); });
    BOOST_TEST(contains(message, "byte offset 24"));
    BOOST_TEST(contains(message, "architecture name"));

    // An empty architecture name.
    bytes = tmm::detail::encode_model(f.plan, f.params, "");
    write_bytes(f.path, bytes);
    BOOST_TEST(contains(refusal([&] { tmm::load_model(f.path); }), "empty architecture name"));

    // A leaf kind that does not exist: it follows the name (4 + 8 bytes) and 7 integers.
    bytes = f.bytes;
    bytes[24 + 4 + 8 + 7 * 4] = 7;
    fix_crc(bytes);
    write_bytes(f.path, bytes);
    message = refusal([&] { tmm::load_model(f.path); });
    BOOST_TEST(contains(message, "leaf kind is 7"));
    BOOST_TEST(contains(message, "byte offset " + std::to_string(24 + 4 + 8 + 7 * 4)));

    // A payload with bytes after the last array (the header's length and CRC agree with it).
    bytes = f.bytes;
    bytes.insert(bytes.end(), {1, 2, 3});
    std::uint64_t length = bytes.size() - tmm::model_file_header_size;
    for (int i = 0; i < 8; ++i) bytes[16 + i] = std::uint8_t(length >> (8 * i));
    fix_crc(bytes);
    write_bytes(f.path, bytes);
    BOOST_TEST(contains(refusal([&] { tmm::load_model(f.path); }),
                        "unexpected bytes after the last parameter array"));
}

BOOST_AUTO_TEST_CASE(a_file_for_another_network_is_refused_saying_what_differs) {
    small_file f;
    auto message = refusal([&] { tmm::load_model(f.path, tmm::make_plan(wider_ht)); });
    BOOST_TEST(contains(message, f.path.string()));
    BOOST_TEST(contains(message, "different network"));
    BOOST_TEST(contains(message, "\"small-ht\""));
    BOOST_TEST(contains(message, "layer 0 (conv) output channels is 2 in the file, 4 expected"));

    message = refusal([&] { tmm::load_model(f.path, tmm::make_plan(other_input)); });
    BOOST_TEST(contains(message, "the input image is 4x4x1 in the file, 6x6x1 expected"));

    message = refusal([&] { tmm::load_model(f.path, tmm::make_plan(categorical_cp)); });
    BOOST_TEST(contains(message, "the leaf kind is gaussian in the file, categorical expected"));

    auto fixed = tmm::make_plan(with_fixed_weights);
    auto changed = fixed;
    changed.layers.at(0).fixed_weights.at(1) = 0.125;
    BOOST_TEST(contains(tmm::plan_difference(fixed, changed), "constant weights differ: entry 1"));
    BOOST_TEST(tmm::plan_fingerprint(fixed) != tmm::plan_fingerprint(changed));
}

BOOST_AUTO_TEST_CASE(save_refuses_parameters_it_could_not_load) {
    small_file f;
    auto params = f.params;
    params.mean.at(2) = std::numeric_limits<float>::quiet_NaN();
    auto message = refusal([&] { tmm::save_model(f.path, f.plan, params, "small-ht"); });
    BOOST_TEST(contains(message, "array mean value 2 is NaN"));
    BOOST_TEST(contains(message, "nothing was written"));

    params = f.params;
    params.log_precision.push_back(0.0f);
    message = refusal([&] { tmm::save_model(f.path, f.plan, params, "small-ht"); });
    BOOST_TEST(contains(message, "array log_precision holds"));

    message = refusal([&] { tmm::save_model(f.path, f.plan, f.params, ""); });
    BOOST_TEST(contains(message, "architecture name"));

    // None of the refusals touched the existing file or left anything behind.
    BOOST_TEST((read_bytes(f.path) == f.bytes));
    BOOST_TEST(f.dir.entries() == std::vector<std::string>{"model.tmm"});
}

BOOST_AUTO_TEST_CASE(a_failed_save_leaves_no_temporary_file_and_no_damage) {
    small_file f;
    // The parent "directory" is a regular file: the temporary file cannot even be created.
    const fs::path under_file = f.path / "model.tmm";
    auto message = refusal([&] { tmm::save_model(under_file, f.plan, f.params, "small-ht"); });
    BOOST_TEST(contains(message, under_file.string()));
    BOOST_TEST(contains(message, "cannot create the temporary file"));

    // The parent does not exist.
    message = refusal(
        [&] { tmm::save_model(f.dir.path / "no" / "such" / "m.tmm", f.plan, f.params, "x"); });
    BOOST_TEST(contains(message, "No such file or directory"));

    // The target is a directory: refused before anything is written.
    const fs::path directory = f.dir.path / "occupied";
    fs::create_directory(directory);
    fs::path keep = directory / "keep";
    write_bytes(keep, {1, 2, 3});
    message = refusal([&] { tmm::save_model(directory, f.plan, f.params, "small-ht"); });
    BOOST_TEST(contains(message, directory.string()));
    BOOST_TEST(contains(message, "is not a regular file (a directory)"));
    BOOST_TEST(contains(message, "nothing was written"));
    BOOST_TEST(fs::is_directory(directory));
    BOOST_TEST((read_bytes(keep) == std::vector<std::uint8_t>{1, 2, 3}));

    if (::geteuid() != 0) {
        // A read-only directory (root ignores permissions, so only as another user).
        const fs::path locked = f.dir.path / "locked";
        fs::create_directory(locked);
        tmm::save_model(locked / "m.tmm", f.plan, f.params, "small-ht");
        const auto before = read_bytes(locked / "m.tmm");
        fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
        auto other = f.params;
        other.mean.at(0) += 1.0f;
        message = refusal([&] { tmm::save_model(locked / "m.tmm", f.plan, other, "small-ht"); });
        fs::permissions(locked, fs::perms::owner_all);
        BOOST_TEST(contains(message, "cannot create the temporary file"));
        BOOST_TEST((read_bytes(locked / "m.tmm") == before));
    }

    BOOST_TEST((read_bytes(f.path) == f.bytes));
    auto names = f.dir.entries();
    for (const auto& name : names) BOOST_TEST(!contains(name, ".tmp."), "leftover " << name);
}

BOOST_AUTO_TEST_CASE(saving_over_an_existing_file_replaces_it) {
    small_file f;
    auto other = random_parameters(f.plan, 99);
    tmm::save_model(f.path, f.plan, other, "small-ht");
    check_bit_exact(tmm::load_model(f.path).params, other);
    BOOST_TEST(f.dir.entries() == std::vector<std::string>{"model.tmm"});
}

// The rename would replace whatever is at the target; a device node, FIFO or directory (or a
// link to one) must be refused, untouched, with nothing left behind.
BOOST_AUTO_TEST_CASE(saving_over_something_that_is_not_a_regular_file_is_refused) {
    small_file f;
    const fs::path fifo = f.dir.path / "fifo.tmm";
    BOOST_TEST_REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
    auto message = refusal([&] { tmm::save_model(fifo, f.plan, f.params, "small-ht"); });
    BOOST_TEST(contains(message, fifo.string()));
    BOOST_TEST(contains(message, "is not a regular file (a FIFO"));
    BOOST_TEST(fs::is_fifo(fs::symlink_status(fifo)));

    // A link to a device: the link stays a link to /dev/null (the device is never touched).
    const fs::path device_link = f.dir.path / "null.tmm";
    fs::create_symlink("/dev/null", device_link);
    message = refusal([&] { tmm::save_model(device_link, f.plan, f.params, "small-ht"); });
    BOOST_TEST(contains(message, device_link.string()));
    BOOST_TEST(contains(message, "is not a regular file (a symbolic link to a character device)"));
    BOOST_TEST(fs::is_symlink(device_link));
    BOOST_TEST(fs::read_symlink(device_link) == fs::path("/dev/null"));

    const fs::path dir_link = f.dir.path / "dir.tmm";
    fs::create_directory(f.dir.path / "d");
    fs::create_directory_symlink(f.dir.path / "d", dir_link);
    message = refusal([&] { tmm::save_model(dir_link, f.plan, f.params, "small-ht"); });
    BOOST_TEST(contains(message, "a symbolic link to a directory"));
    BOOST_TEST(fs::is_symlink(dir_link));
    BOOST_TEST(fs::is_empty(f.dir.path / "d"));

    // A link to a regular file is still fine: the new file takes the link's place.
    BOOST_TEST((read_bytes(f.path) == f.bytes));
    BOOST_TEST((f.dir.entries() ==
                std::vector<std::string>{"d", "dir.tmm", "fifo.tmm", "model.tmm", "null.tmm"}));
}

// A plan whose array sizes fit but which cannot run (a pooling window member out of range),
// with a valid CRC: load_model without an expected plan must still refuse it.
BOOST_AUTO_TEST_CASE(inconsistent_plans_are_refused_without_an_expected_plan) {
    small_file f;
    tmm::plan bad = f.plan;
    tmm::layer* pool = nullptr;
    for (auto& l : bad.layers)
        if (l.kind == tmm::layer_kind::pool && !l.members.empty()) pool = &l;
    BOOST_TEST_REQUIRE(pool != nullptr);
    pool->members.front() = pool->in_rows * pool->in_cols;  // one past the last position
    write_bytes(f.path, tmm::detail::encode_model(bad, f.params, "small-ht"));
    const auto message = refusal([&] { tmm::load_model(f.path); });
    BOOST_TEST(contains(message, f.path.string()));
    BOOST_TEST(contains(message, "malformed plan"));
    BOOST_TEST(contains(message, "a window member is out of range"));
    // The plan starts after the 24-byte header, the 4-byte name length and "small-ht".
    BOOST_TEST(contains(message, "byte offset 36"));
}
