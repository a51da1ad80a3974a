// IDX reading and writing: round trips, exact bytes on disk, atomic replacement, and a clear
// error (file, byte offset, problem) for every kind of malformed file.
#define BOOST_TEST_MODULE data_idx
#ifndef BOOST_TEST_DYN_LINK
#define BOOST_TEST_DYN_LINK
#endif
#include <boost/test/unit_test.hpp>

#include <tmm/data/idx.hpp>

#include "test_files.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <random>

using namespace tmm_test;
namespace data = tmm::data;

namespace {

data::dataset random_dataset(std::size_t count, int rows, int cols, int channels, int classes,
                             std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    data::dataset d;
    d.count = count;
    d.rows = rows;
    d.cols = cols;
    d.channels = channels;
    d.classes = classes;
    d.pixels.resize(count * d.image_size());
    for (auto& p : d.pixels) p = static_cast<std::uint8_t>(rng() & 0xFF);
    // Every class occurs: the first `classes` labels are 0..classes-1.
    for (std::size_t i = 0; i < count; ++i)
        d.labels.push_back(i < static_cast<std::size_t>(classes)
                               ? static_cast<int>(i)
                               : static_cast<int>(rng() % static_cast<std::uint64_t>(classes)));
    return d;
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

#define CHECK_HAS(message, part) \
    BOOST_CHECK_MESSAGE(contains(message, part), "\"" << message << "\" lacks \"" << part << "\"")

// A valid 3-image 2x2 file, built by hand.
bytes small_images() {
    return concat(be32s({0x803, 3, 2, 2}), bytes{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
}

}  // namespace

BOOST_AUTO_TEST_CASE(plain_round_trip_and_exact_bytes) {
    scratch_dir dir;
    auto d = random_dataset(37, 5, 7, 1, 4, 1);
    data::write_idx_dataset(dir / "img", dir / "lab", d);

    // Independently: the standard header, big-endian, then the payload as given.
    bytes expected_images = concat(be32s({0x00000803, 37, 5, 7}), d.pixels);
    BOOST_CHECK(read_raw(dir / "img") == expected_images);
    bytes expected_labels = be32s({0x00000801, 37});
    for (int l : d.labels) expected_labels.push_back(static_cast<std::uint8_t>(l));
    BOOST_CHECK(read_raw(dir / "lab") == expected_labels);

    auto back = data::load_idx_dataset(dir / "img", dir / "lab");
    BOOST_TEST(back.count == 37u);
    BOOST_TEST(back.rows == 5);
    BOOST_TEST(back.cols == 7);
    BOOST_TEST(back.channels == 1);
    BOOST_TEST(back.classes == 4);
    BOOST_CHECK(back.pixels == d.pixels);
    BOOST_CHECK(back.labels == d.labels);
    BOOST_TEST(back.image(36)[34] == d.pixels[36 * 35 + 34]);
}

BOOST_AUTO_TEST_CASE(gzip_round_trip) {
    scratch_dir dir;
    auto d = random_dataset(100, 28, 28, 1, 10, 2);
    data::write_idx_dataset(dir / "img.gz", dir / "lab.gz", d, data::idx_compression::gzip);
    bytes raw = read_raw(dir / "img.gz");
    BOOST_REQUIRE(raw.size() > 2);
    BOOST_TEST(raw[0] == 0x1f);  // gzip magic
    BOOST_TEST(raw[1] == 0x8b);
    auto back = data::load_idx_dataset(dir / "img.gz", dir / "lab.gz");
    BOOST_CHECK(back.pixels == d.pixels);
    BOOST_CHECK(back.labels == d.labels);
    BOOST_TEST(back.classes == 10);
}

BOOST_AUTO_TEST_CASE(colour_images_use_four_dimensions) {
    scratch_dir dir;
    auto d = random_dataset(4, 3, 2, 3, 2, 3);
    data::write_idx_images(dir / "img", d);
    BOOST_CHECK(read_raw(dir / "img") == concat(be32s({0x00000804, 4, 3, 2, 3}), d.pixels));
    auto back = data::read_idx_images(dir / "img");
    BOOST_TEST(back.channels == 3);
    BOOST_CHECK(back.pixels == d.pixels);
}

BOOST_AUTO_TEST_CASE(writer_replaces_atomically_and_leaves_no_temporaries) {
    scratch_dir dir;
    auto d = random_dataset(5, 2, 2, 1, 2, 4);
    data::write_idx_labels(dir / "lab", d.labels);
    bytes before = read_raw(dir / "lab");

    // A failing write (label 300 does not fit a byte) leaves the old file untouched.
    std::vector<int> bad = {0, 1, 300};
    auto msg = error_of([&] { data::write_idx_labels(dir / "lab", bad); });
    CHECK_HAS(msg, (dir / "lab").string());
    CHECK_HAS(msg, "label 300 at index 2");
    BOOST_CHECK(read_raw(dir / "lab") == before);

    // A good write replaces it; either way only the target file is left.
    std::vector<int> other = {1, 0, 1};
    data::write_idx_labels(dir / "lab", other);
    BOOST_CHECK(read_raw(dir / "lab") == concat(be32s({0x801, 3}), bytes{1, 0, 1}));
    BOOST_CHECK(dir.entries() == std::vector<std::string>{"lab"});

    msg = error_of([&] { data::write_idx_labels(dir / "no-such-dir" / "lab", other); });
    CHECK_HAS(msg, "no-such-dir");
    CHECK_HAS(msg, "cannot create the temporary file");

    msg = error_of([&] { data::write_idx_images(dir / "img", d.pixels, 6, 2, 2); });
    CHECK_HAS(msg, "20 pixel bytes given, expected 24");
}

BOOST_AUTO_TEST_CASE(missing_file_and_directory) {
    scratch_dir dir;
    auto msg = error_of([&] { data::read_idx_images(dir / "nothing-here"); });
    CHECK_HAS(msg, (dir / "nothing-here").string());
    CHECK_HAS(msg, "no such file");
    msg = error_of([&] { data::read_idx_labels(dir.path); });
    CHECK_HAS(msg, "is a directory");
}

BOOST_AUTO_TEST_CASE(bad_magic_numbers) {
    scratch_dir dir;
    const auto p = dir / "f";
    struct bad_case {
        bytes file;
        bool images;
        std::vector<std::string> parts;
    };
    const std::vector<bad_case> cases = {
        {{}, true, {"byte offset 0", "truncated header (magic number): expected 4 bytes, got 0"}},
        {bytes{0, 0, 8}, true, {"byte offset 0", "expected 4 bytes, got 3"}},
        {be32s({0x12345678, 1, 1, 1}),
         true,
         {"byte offset 0: bad magic 0x12345678, expected 0x00000803", "two zero bytes"}},
        {be32s({0x00000D03, 1, 1, 1}), true, {"byte offset 2", "0x0d is float32"}},
        {be32s({0x00000801, 1, 0}),
         true,
         {"byte offset 3", "wrong dimension count 1", "label file"}},
        {be32s({0x00000802, 1, 1}), true, {"byte offset 3", "wrong dimension count 2"}},
        {be32s({0x00000803, 1, 1, 1}),
         false,
         {"byte offset 3", "bad magic 0x00000803, expected 0x00000801", "image file"}},
        {be32s({0x00000901, 1}), false, {"byte offset 2", "0x09 is signed byte"}},
    };
    for (const auto& c : cases) {
        write_raw(p, c.file);
        auto msg = error_of([&] {
            if (c.images)
                data::read_idx_images(p);
            else
                data::read_idx_labels(p);
        });
        CHECK_HAS(msg, p.string());
        for (const auto& part : c.parts) CHECK_HAS(msg, part);
    }
}

BOOST_AUTO_TEST_CASE(bad_sizes) {
    scratch_dir dir;
    const auto p = dir / "f";
    const std::vector<std::pair<bytes, std::vector<std::string>>> cases = {
        {be32s({0x803, 0, 2, 2}), {"byte offset 4", "image count is 0"}},
        {be32s({0x803, 1, 0, 2}), {"byte offset 8", "rows is 0"}},
        {be32s({0x803, 1, 2, 0}), {"byte offset 12", "cols is 0"}},
        {be32s({0x804, 1, 2, 2, 0}), {"byte offset 16", "channels is 0"}},
        {be32s({0x803, 1, 70000, 2}), {"byte offset 8", "rows is 70000", "65536"}},
        {be32s({0x803, 0xFFFFFFFF, 65536, 65536}), {"byte offset 4", "4294967295 images", "GiB"}},
        {concat(be32s({0x803, 1}), bytes{0, 0}),
         {"byte offset 8", "truncated header (rows): expected 4 bytes, got 2"}},
    };
    for (const auto& [file, parts] : cases) {
        write_raw(p, file);
        auto msg = error_of([&] { data::read_idx_images(p); });
        CHECK_HAS(msg, p.string());
        for (const auto& part : parts) CHECK_HAS(msg, part);
    }
    write_raw(p, be32s({0x801, 0}));
    CHECK_HAS(error_of([&] { data::read_idx_labels(p); }), "byte offset 4: label count is 0");
}

BOOST_AUTO_TEST_CASE(truncated_and_trailing_payload) {
    scratch_dir dir;
    const auto p = dir / "f";
    bytes good = small_images();
    write_raw(p, good);
    BOOST_TEST(data::read_idx_images(p).pixels.size() == 12u);

    bytes cut(good.begin(), good.end() - 2);
    write_raw(p, cut);
    auto msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, p.string() + ": byte offset 16: truncated pixel data (3 images of 2x2)");
    CHECK_HAS(msg, "expected 12 bytes, got 10");

    write_raw(p, concat(good, bytes{9, 9, 9, 9, 9}));
    msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, "byte offset 28: 5 unexpected bytes after the last of the 3 images");

    write_raw(p, concat(be32s({0x801, 4}), bytes{1, 2, 3}));
    msg = error_of([&] { data::read_idx_labels(p); });
    CHECK_HAS(msg, "byte offset 8: truncated label data (4 labels): expected 4 bytes, got 3");

    // Inside a gzip file offsets count decompressed bytes, and the message says so.
    write_gz(p, cut);
    msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, "byte offset 16 (of the decompressed data): truncated pixel data");
}

BOOST_AUTO_TEST_CASE(damaged_gzip_streams) {
    scratch_dir dir;
    const auto p = dir / "f.gz";
    // Incompressible payload, so cutting the compressed file loses pixel bytes.
    std::mt19937_64 rng(5);
    bytes payload(100 * 10 * 10);
    for (auto& b : payload) b = static_cast<std::uint8_t>(rng() & 0xFF);
    write_gz(p, concat(be32s({0x803, 100, 10, 10}), payload));
    bytes gz = read_raw(p);

    write_raw(p, bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
    auto msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, p.string());
    CHECK_HAS(msg, "truncated pixel data (100 images of 10x10): expected 10000 bytes, got");
    CHECK_HAS(msg, "unexpected end of file");

    // Only the 8-byte trailer missing: all pixels arrive, then zlib reports the cut.
    write_raw(p, bytes(gz.begin(), gz.end() - 8));
    msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, p.string() + ": byte offset 10016 (of the decompressed data)");
    CHECK_HAS(msg, "the gzip stream ends early");

    // A flipped byte in the deflate data: an error, never garbage pixels or a crash.
    bytes flipped = gz;
    flipped[gz.size() / 2] ^= 0x55;
    write_raw(p, flipped);
    msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, p.string());
    CHECK_HAS(msg, p.string() + ": corrupt gzip data: incorrect data check");
}

// A file of several gzip members is valid gzip (RFC 1952, section 2.2) and gzip -d reads them
// all: so does the reader, the IDX bytes being the members' contents one after another. Bytes
// after the last member that do not start another one (garbage, tar's zero padding, one
// stray byte) are refused, naming the file and the byte offset in it where they start.
BOOST_AUTO_TEST_CASE(gzip_members_are_read_in_turn_and_trailing_bytes_refused) {
    scratch_dir dir;
    const auto p = dir / "f.gz";
    const auto gzipped = [&](const bytes& b) {
        write_gz(p, b);
        return read_raw(p);
    };
    const bytes good = small_images();  // a 16-byte header and 12 pixels
    const bytes first = gzipped(bytes(good.begin(), good.begin() + 10));
    const bytes second = gzipped(bytes(good.begin() + 10, good.end()));
    const bytes empty = gzipped({});  // a member with no data is a member all the same

    write_raw(p, concat(concat(first, empty), second));
    const auto images = data::read_idx_images(p);
    BOOST_TEST(images.count == 3u);
    BOOST_CHECK(images.pixels == bytes(good.begin() + 16, good.end()));

    const bytes whole = gzipped(good);
    for (const bytes& junk : {bytes{'j', 'u', 'n', 'k'}, bytes(512, 0), bytes{0x1f}})
        for (const bytes& members : {whole, concat(first, second)}) {
            write_raw(p, concat(members, junk));
            const auto msg = error_of([&] { data::read_idx_images(p); });
            CHECK_HAS(msg, p.string() + ": byte offset " + std::to_string(members.size()) +
                               " (of the gzip file): " + std::to_string(junk.size()) +
                               (junk.size() == 1 ? " byte" : " bytes") +
                               " of trailing garbage after the end of the gzip data");
        }

    // Label files are read the same way.
    const bytes labels = gzipped(concat(be32s({0x801, 3}), bytes{0, 1, 2}));
    write_raw(p, concat(labels, bytes{'x', 'y'}));
    CHECK_HAS(error_of([&] { data::read_idx_labels(p); }),
              p.string() + ": byte offset " + std::to_string(labels.size()) +
                  " (of the gzip file): 2 bytes of trailing garbage");
}

BOOST_AUTO_TEST_CASE(labels_checked_against_images_and_classes) {
    scratch_dir dir;
    write_raw(dir / "img", small_images());

    write_raw(dir / "lab", concat(be32s({0x801, 4}), bytes{0, 1, 0, 1}));
    auto msg = error_of([&] { data::load_idx_dataset(dir / "img", dir / "lab"); });
    CHECK_HAS(msg, (dir / "img").string() + " holds 3 images but " + (dir / "lab").string() +
                       " holds 4 labels");

    write_raw(dir / "lab", concat(be32s({0x801, 3}), bytes{0, 5, 2}));
    msg = error_of([&] { data::load_idx_dataset(dir / "img", dir / "lab", 3); });
    CHECK_HAS(msg, (dir / "lab").string() + ": byte offset 9: label 5 at index 1 is out of range");
    CHECK_HAS(msg, "expected 0..2 (3 classes)");

    // Inferred classes must have no gaps: 0 and 2 without 1 is a broken label file.
    write_raw(dir / "lab", concat(be32s({0x801, 3}), bytes{0, 2, 2}));
    msg = error_of([&] { data::load_idx_dataset(dir / "img", dir / "lab"); });
    CHECK_HAS(msg, "class 1 never occurs, yet labels go up to 2");

    // With an expected count, a class may be absent (a small test set).
    auto d = data::load_idx_dataset(dir / "img", dir / "lab", 4);
    BOOST_TEST(d.classes == 4);
    BOOST_CHECK(d.labels == (std::vector<int>{0, 2, 2}));
}

// The writer's rename would replace whatever is at the target: a FIFO, a link to a device or
// a directory is refused, left as it was, and no temporary file is left behind.
BOOST_AUTO_TEST_CASE(writer_refuses_targets_that_are_not_regular_files) {
    scratch_dir dir;
    std::vector<int> labels = {0, 1, 2};
    const auto fifo = dir / "fifo";
    BOOST_TEST_REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
    auto msg = error_of([&] { data::write_idx_labels(fifo, labels); });
    CHECK_HAS(msg, fifo.string());
    CHECK_HAS(msg, "is not a regular file (a FIFO");
    BOOST_TEST(fs::is_fifo(fs::symlink_status(fifo)));

    const auto null_link = dir / "null";
    fs::create_symlink("/dev/null", null_link);
    msg = error_of([&] { data::write_idx_labels(null_link, labels, data::idx_compression::gzip); });
    CHECK_HAS(msg, null_link.string());
    CHECK_HAS(msg, "a symbolic link to a character device");
    BOOST_TEST(fs::read_symlink(null_link) == fs::path("/dev/null"));

    fs::create_directory(dir / "sub");
    msg = error_of([&] { data::write_idx_images(dir / "sub", bytes{1, 2, 3, 4}, 1, 2, 2); });
    CHECK_HAS(msg, "is not a regular file (a directory)");
    BOOST_TEST(fs::is_empty(dir / "sub"));

    auto names = dir.entries();
    std::sort(names.begin(), names.end());
    BOOST_TEST((names == std::vector<std::string>{"fifo", "null", "sub"}));
}

// A gzip stream that inflates far past the declared images (a "gzip bomb") is refused after
// a bounded amount of decompression, not after inflating all of it.
BOOST_AUTO_TEST_CASE(gzip_data_past_the_declared_images_is_not_all_inflated) {
    scratch_dir dir;
    const auto p = dir / "bomb.gz";
    bytes good = small_images();  // 3 images of 2x2
    // 64 MiB of zeros compress to about 64 KiB; reading them all would take visible time, the
    // count in the message proves they were not.
    write_gz(p, concat(good, bytes(std::size_t{64} << 20, 0)));
    auto msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, p.string() +
                       ": byte offset 28 (of the decompressed data): at least 65536 "
                       "unexpected bytes after the last of the 3 images");

    // A few extra bytes are still counted exactly.
    write_gz(p, concat(good, bytes{7, 7, 7}));
    msg = error_of([&] { data::read_idx_images(p); });
    CHECK_HAS(msg, "byte offset 28 (of the decompressed data): 3 unexpected bytes after");
}
