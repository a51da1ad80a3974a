// tmm::detail::exp against xsimd::exp, which the kernels used before it: the same float bit for
// bit over a sweep of every range of floats (one bit pattern in 257, both signs, zeros,
// subnormals, infinities and NaN included) and at the edges of its cases (k = -126 / -127,
// xsimd's minlog and maxlog), with and without flush-to-zero; and within 2 ulp of exp in
// double where the result is a normal float.
#define BOOST_TEST_MODULE cpu_exp
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tmm/detail/exp.hpp>
#include <vector>
#include <xsimd/xsimd.hpp>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace {

using batch = xsimd::batch<float>;

float from_bits(std::uint32_t bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
std::uint32_t bits_of(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

// Inputs: a sweep of bit patterns and the edges of the algorithm's cases.
std::vector<float> inputs() {
    std::vector<float> x;
    for (std::uint64_t u = 0; u < (std::uint64_t(1) << 32); u += 257)
        x.push_back(from_bits(std::uint32_t(u)));
    const float edges[] = {0.0f,
                           -0.0f,
                           1.0f,
                           -1.0f,
                           88.3762626647949f,
                           88.37626f,
                           88.376f,
                           88.72f,
                           89.0f,
                           -87.3365f,
                           -87.68f,
                           -87.7f,
                           -88.02f,
                           -88.3762626647949f,
                           -88.38f,
                           -88.72f,
                           -103.97f,
                           -104.0f,
                           -150.0f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::denorm_min(),
                           -std::numeric_limits<float>::denorm_min()};
    for (float e : edges)
        for (int step = -64; step <= 64; ++step) {  // and the floats around each edge
            const float y = std::isfinite(e) ? from_bits(std::uint32_t(bits_of(e) + step)) : e;
            x.push_back(y);
        }
    while (x.size() % batch::size != 0) x.push_back(0.0f);
    return x;
}

// The number of inputs where tmm::detail::exp and xsimd::exp differ (NaN equals NaN).
std::size_t differences(const std::vector<float>& x) {
    std::size_t count = 0;
    alignas(64) float mine[batch::size], theirs[batch::size];
    for (std::size_t i = 0; i < x.size(); i += batch::size) {
        const batch v = batch::load_unaligned(x.data() + i);
        tmm::detail::exp(v).store_aligned(mine);
        xsimd::exp(v).store_aligned(theirs);
        for (std::size_t j = 0; j < batch::size; ++j) {
            const bool both_nan = std::isnan(mine[j]) && std::isnan(theirs[j]);
            if (!both_nan && bits_of(mine[j]) != bits_of(theirs[j])) {
                if (count < 5)
                    BOOST_TEST_MESSAGE("exp(" << x[i + j] << "): " << mine[j] << " vs "
                                              << theirs[j]);
                ++count;
            }
        }
    }
    return count;
}

}  // namespace

BOOST_AUTO_TEST_CASE(same_as_xsimd_exp) {
    const std::vector<float> x = inputs();
    BOOST_TEST(differences(x) == 0u);
}

#if defined(__SSE__)
BOOST_AUTO_TEST_CASE(same_as_xsimd_exp_under_flush_to_zero) {
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);  // FTZ and DAZ, as the kernels run
    const std::size_t count = differences(inputs());
    _mm_setcsr(saved);
    BOOST_TEST(count == 0u);
}
#endif

BOOST_AUTO_TEST_CASE(close_to_exp_in_double) {
    // x from -87 to 88 in steps of about 1/64: every result a normal float
    std::vector<float> x;
    for (int i = -87 * 64; i <= 88 * 64; ++i) x.push_back(float(i) / 64.0f + 0.001f);
    while (x.size() % batch::size != 0) x.push_back(0.0f);
    double worst = 0;
    alignas(64) float out[batch::size];
    for (std::size_t i = 0; i < x.size(); i += batch::size) {
        tmm::detail::exp(batch::load_unaligned(x.data() + i)).store_aligned(out);
        for (std::size_t j = 0; j < batch::size; ++j) {
            const double exact = std::exp(double(x[i + j]));
            const double ulp =
                std::nextafter(float(exact), std::numeric_limits<float>::infinity()) - float(exact);
            worst = std::max(worst, std::abs(double(out[j]) - exact) / ulp);
        }
    }
    BOOST_TEST_MESSAGE("worst error " << worst << " ulp");
    BOOST_TEST(worst <= 2.0);
}
