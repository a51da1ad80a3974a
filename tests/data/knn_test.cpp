// The kNN baseline against a brute-force double loop over observed pixels, and hand-made cases
// whose answers are obvious (missing pixels ignored, vote ties broken as documented).
#define BOOST_TEST_MODULE data_knn
#ifndef BOOST_TEST_DYN_LINK
#define BOOST_TEST_DYN_LINK
#endif
#include <boost/test/unit_test.hpp>

#include "../../tools/tmm/knn.hpp"

#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace data = tmm::data;
namespace tools = tmm::tools;

namespace {

data::dataset random_set(std::size_t count, int rows, int cols, int classes, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    data::dataset d;
    d.count = count;
    d.rows = rows;
    d.cols = cols;
    d.classes = classes;
    d.pixels.resize(count * d.image_size());
    for (auto& p : d.pixels) p = static_cast<std::uint8_t>(rng() & 0xFF);
    for (std::size_t i = 0; i < count; ++i)
        d.labels.push_back(static_cast<int>(rng() % static_cast<std::uint64_t>(classes)));
    return d;
}

data::dataset tiny(const std::vector<std::vector<std::uint8_t>>& images,
                   const std::vector<int>& labels, int classes) {
    data::dataset d;
    d.count = images.size();
    d.rows = 1;
    d.cols = static_cast<int>(images[0].size());
    d.classes = classes;
    for (const auto& im : images) d.pixels.insert(d.pixels.end(), im.begin(), im.end());
    d.labels = labels;
    return d;
}

std::vector<float> scaled(const std::vector<std::uint8_t>& bytes) {
    std::vector<float> out;
    for (auto b : bytes) out.push_back(tools::knn_pixel(b));
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(matches_brute_force_with_masks) {
    // 300 training images (not a multiple of the 32-image panel), 50 test images (several
    // tiles and tasks), 30 pixels, 40% missing with NaN in every missing slot.
    const auto train = random_set(300, 5, 6, 4, 1);
    const auto test = random_set(50, 5, 6, 4, 2);
    const std::size_t dim = 30;
    std::mt19937_64 rng(3);
    std::vector<std::uint8_t> observed(test.pixels.size());
    std::vector<float> x = scaled(test.pixels);
    for (std::size_t v = 0; v < x.size(); ++v) {
        observed[v] = (rng() % 10) >= 4;
        if (!observed[v]) x[v] = std::numeric_limits<float>::quiet_NaN();
    }

    tools::knn_index index(train);
    for (int k : {1, 3, 5, 8}) {
        const auto kk = static_cast<std::size_t>(k);
        auto found = index.neighbours(x, observed, test.count, k);
        auto predicted = index.predict(x, observed, test.count, k);
        BOOST_REQUIRE(found.size() == test.count * kk);
        std::size_t near_ties = 0;
        for (std::size_t t = 0; t < test.count; ++t) {
            // Exact distances in byte units: sum over observed pixels of (x - y)^2, an integer.
            std::vector<std::pair<long, std::uint32_t>> brute;
            for (std::size_t n = 0; n < train.count; ++n) {
                long d = 0;
                for (std::size_t p = 0; p < dim; ++p)
                    if (observed[t * dim + p]) {
                        long diff =
                            long{test.pixels[t * dim + p]} - long{train.pixels[n * dim + p]};
                        d += diff * diff;
                    }
                brute.emplace_back(d, static_cast<std::uint32_t>(n));
            }
            std::sort(brute.begin(), brute.end());
            // Float rounding may order distances closer than this either way; such images
            // only get their distances checked.
            bool tie = false;
            for (std::size_t n = 0; n < kk; ++n) tie |= brute[n + 1].first - brute[n].first < 20;
            near_ties += tie;
            BOOST_TEST_CONTEXT("k " << k << " test " << t) {
                for (std::size_t n = 0; n < kk; ++n) {
                    const auto& got = found[t * kk + n];
                    BOOST_TEST(got.distance * 255.0 * 255.0 == double(brute[n].first),
                               boost::test_tools::tolerance(1e-4));
                    if (!tie) BOOST_TEST(got.index == brute[n].second);
                }
                if (!tie) {
                    // Majority, then smaller summed distance, then smaller label.
                    std::map<int, std::pair<int, long>> votes;
                    for (std::size_t n = 0; n < kk; ++n) {
                        auto& v = votes[train.labels[brute[n].second]];
                        ++v.first;
                        v.second += brute[n].first;
                    }
                    int best = -1;
                    for (auto& [label, v] : votes)
                        if (best < 0 || v.first > votes[best].first ||
                            (v.first == votes[best].first && v.second < votes[best].second))
                            best = label;
                    BOOST_TEST(predicted[t] == best);
                }
            }
        }
        BOOST_TEST(near_ties <= test.count / 10);
    }
}

BOOST_AUTO_TEST_CASE(threads_do_not_change_results) {
    const auto train = random_set(200, 4, 4, 3, 4);
    const auto test = random_set(100, 4, 4, 3, 5);
    const auto x = scaled(test.pixels);
    std::vector<std::uint8_t> observed(x.size());
    std::mt19937_64 rng(6);
    for (auto& o : observed) o = rng() % 2;
    std::vector<int> one, two;
    {
        oneapi::tbb::global_control c(oneapi::tbb::global_control::max_allowed_parallelism, 1);
        one = tools::knn_predict(train, x, observed, test.count, 5);
    }
    {
        oneapi::tbb::global_control c(oneapi::tbb::global_control::max_allowed_parallelism, 2);
        two = tools::knn_predict(train, x, observed, test.count, 5);
    }
    BOOST_CHECK(one == two);
}

BOOST_AUTO_TEST_CASE(obvious_answers) {
    // Class 0 is dark, class 1 bright, class 2 dark on the left and bright on the right.
    const auto train = tiny({{0, 10, 0, 10},
                             {5, 5, 5, 5},
                             {250, 240, 255, 245},
                             {255, 255, 250, 250},
                             {0, 0, 255, 255},
                             {10, 0, 245, 250}},
                            {0, 0, 1, 1, 2, 2}, 3);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float dark = tools::knn_pixel(3), bright = tools::knn_pixel(252);
    // Squared byte distances to training images 0..5, over the observed pixels:
    std::vector<float> x = {dark,   dark,   dark,   dark,     // 116, 16, ...: image 1, class 0
                            bright, bright, bright, bright,   // image 3 at 26, image 2 at 206
                            dark,   dark,   bright, bright,   // image 4 at 36, image 5 at 111
                            nan,    nan,    bright, bright,   // right half: 58, 8, 18, 53 for 2..5
                            dark,   nan,    nan,    bright};  // corners: image 4 at 18, 5 at 53
    std::vector<std::uint8_t> observed = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                          1, 1, 0, 0, 1, 1, 1, 0, 0, 1};
    const std::vector<int> expected = {0, 1, 2, 1, 2};
    BOOST_CHECK(tools::knn_predict(train, x, observed, 5, 1) == expected);
    // k = 2: the right-half image has one vote each for classes 1 (at 8) and 2 (at 18); the
    // smaller summed distance gives class 1. k = 4: two votes each, sums 8 + 58 against
    // 18 + 53, class 1 again.
    BOOST_CHECK(tools::knn_predict(train, x, observed, 5, 2) == expected);
    BOOST_TEST(tools::knn_predict(train, x, observed, 5, 4)[3] == 1);

    auto near = tools::knn_index(train).neighbours(x, observed, 5, 2);
    BOOST_TEST(near[0].index == 1u);
    BOOST_TEST(near[1].index == 0u);
    BOOST_TEST(near[6].index == 3u);
    BOOST_TEST(near[7].index == 4u);
    // The expanded form sum m x^2 - 2 m x t + m t^2 cancels; in byte units it is good to
    // about 1e-7 of sum x^2 + t^2 (here 2 * 4 * 127.5^2), not to 1e-4 of a small distance.
    BOOST_TEST(std::abs(near[6].distance * 255 * 255 - 8.0) < 0.05);
}

BOOST_AUTO_TEST_CASE(vote_ties_break_on_distance_then_label) {
    const auto train = tiny({{100, 100}, {0, 0}, {200, 200}, {50, 50}}, {2, 1, 0, 0}, 3);
    // Nearest two of {90, 90}: {100,100} (class 2, 10 away per pixel) and {50,50} (class 0,
    // 40 away): one vote each, class 2's summed distance is smaller.
    auto x = scaled({90, 90});
    BOOST_CHECK(tools::knn_predict(train, x, {}, 1, 2) == (std::vector<int>{2}));

    // Nothing observed: every distance is exactly 0, the neighbours are the first k training
    // images, and with k = 2 (classes 2 and 1, equal votes and sums) the smaller label wins.
    std::vector<std::uint8_t> none = {0, 0};
    auto found = tools::knn_index(train).neighbours(x, none, 1, 2);
    BOOST_TEST(found[0].index == 0u);
    BOOST_TEST(found[1].index == 1u);
    BOOST_TEST(found[0].distance == 0.0f);
    BOOST_CHECK(tools::knn_predict(train, x, none, 1, 2) == (std::vector<int>{1}));
    // k = 3 adds class 0: three classes with one vote each and summed distance 0; label 0 wins.
    BOOST_CHECK(tools::knn_predict(train, x, none, 1, 3) == (std::vector<int>{0}));
}

BOOST_AUTO_TEST_CASE(bad_arguments) {
    const auto train = tiny({{1, 2}, {3, 4}}, {0, 1}, 2);
    auto x = scaled({1, 2});
    auto message = [&](auto&& f) -> std::string {
        try {
            f();
        } catch (const data::error& e) {
            return e.what();
        }
        return "<no error>";
    };
    BOOST_TEST(message([&] {
                   tools::knn_predict(train, x, {}, 1, 0);
               }).find("k = 0 must be in 1..2") != std::string::npos);
    BOOST_TEST(message([&] { tools::knn_predict(train, x, {}, 1, 3); }).find("k = 3") !=
               std::string::npos);
    BOOST_TEST(message([&] {
                   tools::knn_predict(train, x, {}, 2, 1);
               }).find("2 test values, expected 4") != std::string::npos);
    std::vector<std::uint8_t> short_mask = {1};
    BOOST_TEST(message([&] {
                   tools::knn_predict(train, x, short_mask, 1, 1);
               }).find("observed mask has 1") != std::string::npos);
    x[1] = std::numeric_limits<float>::infinity();
    BOOST_TEST(message([&] {
                   tools::knn_predict(train, x, {}, 1, 1);
               }).find("test image 0, value 1 is observed but not finite") != std::string::npos);
}
