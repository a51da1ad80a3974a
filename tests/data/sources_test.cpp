// Named data sets and IDX directories, on generated files (never on the real downloads).
#define BOOST_TEST_MODULE data_sources
#ifndef BOOST_TEST_DYN_LINK
#define BOOST_TEST_DYN_LINK
#endif
#include <boost/test/unit_test.hpp>

#include <tmm/data/sources.hpp>

#include "test_files.hpp"

#include <stdlib.h>

using namespace tmm_test;
namespace data = tmm::data;

namespace {

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

#define CHECK_HAS(message, part) \
    BOOST_CHECK_MESSAGE(contains(message, part), "\"" << message << "\" lacks \"" << part << "\"")

bytes images(std::uint32_t count, std::uint32_t rows, std::uint32_t cols, std::uint8_t fill) {
    return concat(be32s({0x803, count, rows, cols}), bytes(count * rows * cols, fill));
}

bytes labels(const bytes& values) {
    return concat(be32s({0x801, static_cast<std::uint32_t>(values.size())}), values);
}

// A 4-train, 2-test split of 3x2 images; train and test mix plain and gzipped files.
void write_split(const fs::path& dir) {
    fs::create_directories(dir);
    write_raw(dir / "train-images-idx3-ubyte", images(4, 3, 2, 7));
    write_gz(dir / "train-labels-idx1-ubyte.gz", labels({0, 1, 2, 1}));
    write_gz(dir / "t10k-images-idx3-ubyte.gz", images(2, 3, 2, 9));
    write_raw(dir / "t10k-labels-idx1-ubyte", labels({2, 2}));
}

}  // namespace

BOOST_AUTO_TEST_CASE(directory_split) {
    scratch_dir dir;
    write_split(dir.path);
    auto s = data::load_split(dir.path.string());
    BOOST_TEST(s.name == dir.path.string());
    BOOST_TEST(s.train.count == 4u);
    BOOST_TEST(s.test.count == 2u);
    BOOST_TEST(s.train.rows == 3);
    BOOST_TEST(s.train.cols == 2);
    BOOST_TEST(s.train.classes == 3);
    // The test set has only class 2, yet shares the training classes.
    BOOST_TEST(s.test.classes == 3);
    BOOST_CHECK(s.test.labels == (std::vector<int>{2, 2}));
    BOOST_TEST(s.test.pixels[5] == 9);
}

BOOST_AUTO_TEST_CASE(directory_errors) {
    scratch_dir dir;
    write_split(dir.path);
    fs::remove(dir / "t10k-labels-idx1-ubyte");
    fs::remove(dir / "train-images-idx3-ubyte");
    auto msg = error_of([&] { data::load_split(dir.path.string()); });
    CHECK_HAS(msg, dir.path.string() +
                       " lacks train-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]");

    // a name that is there but is not a file is said to be so, not to be missing
    write_split(dir.path);
    fs::remove(dir / "t10k-images-idx3-ubyte");
    fs::remove(dir / "t10k-images-idx3-ubyte.gz");
    fs::create_directory(dir / "t10k-images-idx3-ubyte");
    msg = error_of([&] { data::load_split(dir.path.string()); });
    CHECK_HAS(msg, "t10k-images-idx3-ubyte is a directory");
    BOOST_TEST(msg.find("lacks") == std::string::npos, msg);
    fs::remove(dir / "t10k-images-idx3-ubyte");

    msg = error_of([&] { data::load_split((dir / "nowhere").string()); });
    CHECK_HAS(msg, "is neither \"fashion-mnist\", \"mnist\" nor a directory");

    // Shapes must agree between train and test.
    write_split(dir.path);
    write_raw(dir / "t10k-images-idx3-ubyte", images(2, 2, 3, 0));
    fs::remove(dir / "t10k-images-idx3-ubyte.gz");
    msg = error_of([&] { data::load_split(dir.path.string()); });
    CHECK_HAS(msg, "are 3x2x1 but test images");
    CHECK_HAS(msg, "are 2x3x1");

    // A test label the training set never uses.
    write_split(dir.path);
    fs::remove(dir / "t10k-images-idx3-ubyte");
    write_raw(dir / "t10k-labels-idx1-ubyte", labels({1, 3}));
    msg = error_of([&] { data::load_split(dir.path.string()); });
    CHECK_HAS(msg, (dir / "t10k-labels-idx1-ubyte").string());
    CHECK_HAS(msg, "label 3 at index 1 is out of range, expected 0..2");
}

BOOST_AUTO_TEST_CASE(mnist_location) {
    scratch_dir dir;
    ::setenv("TMM_DATA_DIR", dir.path.c_str(), 1);
    BOOST_TEST(data::mnist_dir() == dir.path / "mnist");
    auto msg = error_of([&] { data::load_split("mnist"); });
    CHECK_HAS(msg, (dir.path / "mnist").string());
    CHECK_HAS(msg, "scripts/fetch-mnist");

    write_split(dir.path / "mnist");
    auto s = data::load_split("mnist");
    BOOST_TEST(s.name == "mnist");
    BOOST_TEST(s.train.count == 4u);

    ::unsetenv("TMM_DATA_DIR");
    ::setenv("HOME", dir.path.c_str(), 1);
    BOOST_TEST(data::mnist_dir() == dir.path / ".cache" / "tmm" / "mnist");
}

BOOST_AUTO_TEST_CASE(fashion_mnist_location) {
    BOOST_TEST(data::fashion_mnist_dir() == fs::path("/usr/share/datasets/fashion-mnist"));
    // Only where the package is absent can its error be seen without touching the system.
    if (!fs::exists(data::fashion_mnist_dir())) {
        auto msg = error_of([&] { data::load_split("fashion-mnist"); });
        CHECK_HAS(msg, "apt-get install -y dataset-fashion-mnist");
    }
}
