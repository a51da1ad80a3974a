// Missingness specs: spelling, parse errors, and each generator checked against what it must
// produce (brute-force reconstruction of rectangles, exact deletion counts, binomial bounds).
#define BOOST_TEST_MODULE data_missing
#ifndef BOOST_TEST_DYN_LINK
#define BOOST_TEST_DYN_LINK
#endif
#include <boost/test/unit_test.hpp>

#include <tmm/data/missing.hpp>

#include <chrono>
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace data = tmm::data;

namespace {

data::dataset random_images(std::size_t count, int rows, int cols, int channels,
                            double nonzero_fraction, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    data::dataset d;
    d.count = count;
    d.rows = rows;
    d.cols = cols;
    d.channels = channels;
    d.classes = 1;
    d.pixels.resize(count * d.image_size());
    for (auto& p : d.pixels)
        p = u(rng) < nonzero_fraction ? static_cast<std::uint8_t>(1 + rng() % 255) : 0;
    d.labels.assign(count, 0);
    return d;
}

std::string error_of(const std::string& text) {
    try {
        data::parse_missing(text);
    } catch (const data::error& e) {
        return e.what();
    }
    return "<no error>";
}

// True when `missing` (rows x cols, 1 = missing) is a union of at most n w x w squares lying
// inside the image: search all combinations of the squares that are wholly missing.
bool union_of_squares(const std::vector<int>& missing, int rows, int cols, int n, int w) {
    std::vector<std::pair<int, int>> inside;
    for (int r = 0; r + w <= rows; ++r)
        for (int c = 0; c + w <= cols; ++c) {
            bool all = true;
            for (int i = r; i < r + w && all; ++i)
                for (int j = c; j < c + w && all; ++j)
                    all = missing[static_cast<std::size_t>(i * cols + j)] == 1;
            if (all) inside.emplace_back(r, c);
        }
    // Each step must cover the first missing pixel not yet covered, so only squares holding
    // it are tried: at most n levels of few choices each.
    std::vector<int> cover(missing.size(), 0);
    auto search = [&](auto&& self, int left) -> bool {
        std::size_t first = 0;
        while (first < missing.size() && (missing[first] == 0 || cover[first] > 0)) ++first;
        if (first == missing.size()) return true;
        if (left == 0) return false;
        const int fr = static_cast<int>(first) / cols, fc = static_cast<int>(first) % cols;
        for (auto [r, c] : inside) {
            if (fr < r || fr >= r + w || fc < c || fc >= c + w) continue;
            for (int i = r; i < r + w; ++i)
                for (int j = c; j < c + w; ++j) ++cover[static_cast<std::size_t>(i * cols + j)];
            bool ok = self(self, left - 1);
            for (int i = r; i < r + w; ++i)
                for (int j = c; j < c + w; ++j) --cover[static_cast<std::size_t>(i * cols + j)];
            if (ok) return true;
        }
        return false;
    };
    return search(search, n);
}

}  // namespace

BOOST_AUTO_TEST_CASE(spellings_parse_to_canonical_form) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"none", "none"},           {"iid:0.75", "iid:0.75"},    {"iid:0.9", "iid:0.9"},
        {"iid:0.750", "iid:0.75"},  {"iid:.5", "iid:0.5"},       {"iid:1", "iid:1"},
        {"iid:1.0", "iid:1"},       {"iid:0", "iid:0"},          {"iid:-0", "iid:0"},
        {"iid:1e-3", "iid:0.001"},  {"iid:0.99", "iid:0.99"},    {"rects:2:11", "rects:2:11"},
        {"rects:0:1", "rects:0:1"}, {"rects:03:7", "rects:3:7"}, {"delete:25", "delete:25"},
        {"delete:0", "delete:0"},
    };
    for (const auto& [text, canonical] : cases)
        BOOST_TEST(data::to_string(data::parse_missing(text)) == canonical);

    auto s = data::parse_missing("rects:3:15");
    BOOST_TEST((s.kind == data::missing_kind::rects && s.count == 3 && s.width == 15));
    s = data::parse_missing("iid:0.25");
    BOOST_TEST((s.kind == data::missing_kind::iid && s.probability == 0.25));
    s = data::parse_missing("delete:150");
    BOOST_TEST((s.kind == data::missing_kind::deletion && s.count == 150));
}

BOOST_AUTO_TEST_CASE(to_string_round_trips_every_probability) {
    std::mt19937_64 rng(11);
    for (int i = 0; i < 10000; ++i) {
        data::missing_spec s{data::missing_kind::iid,
                             std::ldexp(static_cast<double>(rng() >> 11), -53)};
        auto text = data::to_string(s);
        BOOST_REQUIRE(data::parse_missing(text) == s);
        BOOST_REQUIRE(data::to_string(data::parse_missing(text)) == text);
    }
}

BOOST_AUTO_TEST_CASE(bad_spellings_are_refused_clearly) {
    BOOST_TEST(error_of("iid:1.5") == "bad missingness \"iid:1.5\": probability must be in [0, 1]");
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", "expected none, iid:P, rects:N:W or delete:N"},
        {"None", "expected none, iid:P, rects:N:W or delete:N"},
        {" iid:0.5", "expected none, iid:P"},
        {"none:1", "takes no parameters"},
        {"iid", "expected iid:P"},
        {"iid:", "is not a number"},
        {"iid:abc", "probability \"abc\" is not a number"},
        {"iid:0.5x", "is not a number"},
        {"iid:+0.5", "is not a number"},
        {"iid:0.5:1", "expected iid:P"},
        {"iid:-0.1", "probability must be in [0, 1]"},
        {"iid:nan", "probability must be in [0, 1]"},
        {"iid:inf", "probability must be in [0, 1]"},
        {"iid:1e-400", "probability \"1e-400\" is out of the range of a double"},
        {"iid:1e400", "is out of the range of a double; it must be in [0, 1]"},
        {"rects:2", "expected rects:N:W"},
        {"rects:1:2:3", "expected rects:N:W"},
        {"rects:2:0", "side W must be an integer >= 1, got \"0\""},
        {"rects:-1:3", "square count N must be an integer >= 0"},
        {"rects:a:3", "square count N must be an integer >= 0, got \"a\""},
        {"rects:1.5:3", "square count N must be an integer"},
        {"delete:", "pixel count N must be an integer >= 0, got \"\""},
        {"delete:-3", "pixel count N must be an integer >= 0"},
        {"delete:99999999999", "pixel count N \"99999999999\" is too large"},
        {"delete", "expected delete:N"},
    };
    for (const auto& [text, part] : cases) {
        const std::string msg = error_of(text);
        BOOST_TEST_CONTEXT("spec \"" << text << "\" gave: " << msg) {
            BOOST_TEST(msg.rfind("bad missingness \"" + text + "\": ", 0) == 0u);
            BOOST_TEST(msg.find(part) != std::string::npos);
        }
    }
}

BOOST_AUTO_TEST_CASE(none_and_iid_extremes) {
    auto d = random_images(20, 6, 5, 3, 0.5, 1);
    for (auto text : {"none", "iid:0", "rects:0:3", "delete:0"}) {
        auto m = data::make_missing(data::parse_missing(text), d, 7);
        BOOST_TEST(m.observed == std::vector<std::uint8_t>(d.pixels.size(), 1),
                   boost::test_tools::per_element());
        BOOST_CHECK(m.pixels == d.pixels);
    }
    auto all = data::make_masks(data::parse_missing("iid:1"), d, 7);
    BOOST_TEST(all == std::vector<std::uint8_t>(d.pixels.size(), 0),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(iid_frequency_within_binomial_bound) {
    // 200 images of 28x28 = 156,800 pixels, each missing with p = 0.3: the count is
    // Binomial(n, p), mean 47,040, sd sqrt(n p (1 - p)) = 181.5. Allow 6 sd (1,089).
    const double p = 0.3;
    auto d = random_images(200, 28, 28, 2, 0.5, 2);
    auto masks = data::make_masks(data::missing_spec{data::missing_kind::iid, p}, d, 3);
    double n = 200.0 * 28 * 28;
    double missing = 0;
    for (std::size_t px = 0; px < masks.size(); px += 2) {
        BOOST_REQUIRE(masks[px] == masks[px + 1]);  // a pixel drops all its channels
        missing += masks[px] == 0;
    }
    const double sd = std::sqrt(n * p * (1 - p));
    BOOST_TEST(std::abs(missing - n * p) < 6 * sd, "missing " << missing << " expected " << n * p);
}

BOOST_AUTO_TEST_CASE(rects_are_unions_of_squares_inside_the_image) {
    for (auto [rows, cols] : {std::pair{28, 28}, std::pair{20, 30}}) {
        for (int n : {1, 2, 3}) {
            for (int w : {1, 7, 11, 15, 20}) {
                auto d = random_images(30, rows, cols, 1, 0.5, 4);
                auto masks =
                    data::make_masks(data::missing_spec{data::missing_kind::rects, 0, n, w}, d, 5);
                for (std::size_t i = 0; i < d.count; ++i) {
                    std::vector<int> missing(static_cast<std::size_t>(rows * cols));
                    int total = 0;
                    for (std::size_t j = 0; j < missing.size(); ++j)
                        total += missing[j] = masks[i * missing.size() + j] == 0;
                    BOOST_TEST_CONTEXT(rows << "x" << cols << " rects:" << n << ":" << w
                                            << " image " << i) {
                        BOOST_TEST(total >= w * w);
                        BOOST_TEST(total <= n * w * w);
                        BOOST_TEST(union_of_squares(missing, rows, cols, n, w));
                    }
                }
            }
        }
    }
    // A square that cannot fit is an error, not a clipped square.
    auto d = random_images(1, 10, 12, 1, 0.5, 6);
    try {
        data::make_masks(data::parse_missing("rects:1:11"), d, 1);
        BOOST_FAIL("rects:1:11 on 10x12 accepted");
    } catch (const data::error& e) {
        BOOST_TEST(
            std::string(e.what()) ==
            "bad missingness \"rects:1:11\": a 11x11 square does not fit inside a 10x12 image");
    }
}

BOOST_AUTO_TEST_CASE(rect_corners_are_uniform) {
    // One 4x4 square in a 10x10 image has 7 x 7 = 49 corners. Over 49,000 images each should
    // appear 1,000 times; chi-square with 48 degrees of freedom has mean 48 and sd 9.8, so
    // allow 48 + 6 sd = 107. A square's corner is its first missing pixel in row-major order.
    auto d = random_images(49000, 10, 10, 1, 0.0, 7);
    auto masks = data::make_masks(data::parse_missing("rects:1:4"), d, 8);
    std::vector<double> seen(49, 0);
    for (std::size_t i = 0; i < d.count; ++i) {
        std::size_t j = 0;
        while (masks[i * 100 + j] != 0) ++j;
        int r = static_cast<int>(j / 10), c = static_cast<int>(j % 10);
        BOOST_REQUIRE((r <= 6 && c <= 6));
        ++seen[static_cast<std::size_t>(r * 7 + c)];
    }
    double chi2 = 0;
    for (double s : seen) chi2 += (s - 1000) * (s - 1000) / 1000;
    BOOST_TEST(chi2 < 107.0);
}

BOOST_AUTO_TEST_CASE(delete_zeroes_exactly_the_chosen_nonzero_pixels) {
    // Two channels; a pixel is non-zero when either channel is.
    auto d = random_images(50, 8, 8, 2, 0.3, 9);
    for (int n : {0, 1, 5, 20, 64, 200}) {
        auto m = data::make_missing(data::missing_spec{data::missing_kind::deletion, 0, n}, d, 10);
        for (std::size_t i = 0; i < d.count; ++i) {
            int nonzero = 0, deleted = 0;
            for (std::size_t px = 0; px < 64; ++px) {
                const std::size_t v = (i * 64 + px) * 2;
                const bool was_nonzero = d.pixels[v] != 0 || d.pixels[v + 1] != 0;
                nonzero += was_nonzero;
                BOOST_REQUIRE(m.observed[v] == m.observed[v + 1]);
                if (m.observed[v] == 0) {
                    ++deleted;
                    BOOST_REQUIRE(was_nonzero);
                    BOOST_REQUIRE((m.pixels[v] == 0 && m.pixels[v + 1] == 0));
                } else {
                    BOOST_REQUIRE(
                        (m.pixels[v] == d.pixels[v] && m.pixels[v + 1] == d.pixels[v + 1]));
                }
            }
            BOOST_TEST(deleted == std::min(n, nonzero));
        }
    }
}

BOOST_AUTO_TEST_CASE(delete_picks_uniformly) {
    // 20 non-zero pixels, delete 5: each is chosen with probability 1/4. Over 20,000 images a
    // pixel's count is Binomial(20000, 0.25): mean 5,000, sd 61.2; allow 6 sd.
    data::dataset d;
    d.count = 20000;
    d.rows = 5;
    d.cols = 8;
    d.classes = 1;
    d.labels.assign(d.count, 0);
    for (std::size_t i = 0; i < d.count; ++i)
        for (int px = 0; px < 40; ++px) d.pixels.push_back(px % 2 == 0 ? 200 : 0);
    auto masks = data::make_masks(data::parse_missing("delete:5"), d, 12);
    std::vector<double> chosen(40, 0);
    for (std::size_t i = 0; i < d.count; ++i)
        for (std::size_t px = 0; px < 40; ++px) chosen[px] += masks[i * 40 + px] == 0;
    for (std::size_t px = 0; px < 40; ++px) {
        if (px % 2 == 1) {
            BOOST_TEST(chosen[px] == 0.0);
        } else {
            BOOST_TEST(std::abs(chosen[px] - 5000) < 6 * 61.2);
        }
    }
}

BOOST_AUTO_TEST_CASE(masks_are_deterministic_per_image) {
    auto d = random_images(12, 7, 9, 1, 0.4, 13);
    for (auto text : {"iid:0.5", "rects:2:3", "delete:6"}) {
        auto spec = data::parse_missing(text);
        auto a = data::make_missing(spec, d, 99);
        auto b = data::make_missing(spec, d, 99);
        BOOST_CHECK(a.observed == b.observed);
        BOOST_CHECK(a.pixels == b.pixels);
        BOOST_CHECK(data::make_masks(spec, d, 99) == a.observed);
        BOOST_CHECK(data::make_masks(spec, d, 100) != a.observed);

        // Image 7's mask comes from its own stream, whatever else is in the set.
        std::vector<std::uint8_t> image(d.image(7).begin(), d.image(7).end());
        std::vector<std::uint8_t> observed(image.size());
        auto rng = data::missing_rng(99, 7);
        data::apply_missing(spec, d.rows, d.cols, d.channels, image, observed, rng);
        BOOST_CHECK(std::equal(observed.begin(), observed.end(), a.observed.begin() + 7 * 63));
        BOOST_CHECK(std::equal(image.begin(), image.end(), a.pixels.begin() + 7 * 63));
    }
}

BOOST_AUTO_TEST_CASE(apply_missing_checks_sizes) {
    std::vector<std::uint8_t> image(12), observed(11);
    std::mt19937_64 rng(1);
    try {
        data::apply_missing(data::parse_missing("none"), 2, 2, 3, image, observed, rng);
        BOOST_FAIL("wrong mask size accepted");
    } catch (const data::error& e) {
        BOOST_TEST(std::string(e.what()).find("mask 11, expected 12 for 2x2x3") !=
                   std::string::npos);
    }
}

// rects:N:W with a huge N used to draw all N squares per image (hours for N = 2^31 - 1); once
// every pixel is missing more squares change nothing, so drawing stops there.
BOOST_AUTO_TEST_CASE(huge_rect_counts_stop_once_everything_is_missing) {
    const auto d = random_images(50, 28, 28, 1, 0.5, 3);
    const auto start = std::chrono::steady_clock::now();
    // W = 28 covers a 28x28 image with one square; W = 3 on it needs a few hundred.
    for (const char* text : {"rects:2147483647:28", "rects:2147483647:3", "rects:2147483647:1"}) {
        const auto spec = data::parse_missing(text);
        BOOST_TEST(spec.count == 2147483647);
        const auto masks = data::make_masks(spec, d, 11);
        BOOST_TEST(masks == std::vector<std::uint8_t>(d.pixels.size(), 0), text);
        BOOST_TEST(data::make_masks(spec, d, 11) == masks, text);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    BOOST_TEST(seconds < 20.0);

    // A count that does not cover the image is unchanged by the early stop: each image's
    // mask is still the union of exactly N drawn squares (same draws as before).
    const auto few = data::make_masks(data::parse_missing("rects:2:5"), d, 11);
    std::size_t missing = 0;
    for (auto v : few) missing += v == 0;
    BOOST_TEST(missing > 0u);
    BOOST_TEST(missing <= 50u * 2u * 25u);
}
