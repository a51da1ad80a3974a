// tmm::detail::exp, two ways: against its algorithm written out in scalar code (std::fma, one
// rounding per step) bit for bit, over a sweep of every range of floats (one bit pattern in 257,
// zeros, subnormals, infinities and NaN included) and the edges of its cases (k = -126 / -127,
// xsimd's minlog and maxlog), with and without flush-to-zero; and within 2 ulp of exp in double
// where the result is a normal float. (xsimd::exp itself is no fixed reference: its
// multiply-adds are written x * y + z, fused by GCC at -O2 but not under the sanitizers.)
#define BOOST_TEST_MODULE cpu_exp
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstddef>
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

// The algorithm in scalar code: k = nearest integer to x / log 2, r = x - k log 2 in two fused
// steps, xsimd 8's degree-5 polynomial for exp(r) by fused steps, then e 2^k, or 0 where
// k <= -127 (as xsimd's 2^k from bits gives), +inf from its maxlog on.
float scalar_exp(float x, bool flush) {
    if (std::isnan(x)) return x;
    if (x >= 88.3762626647949f) return std::numeric_limits<float>::infinity();
    const float k = std::nearbyint(1.44269504088896341f * x);
    if (!(k > -127.0f)) return 0.0f;
    float r = std::fma(-k, from_bits(0x3f318000u), x);
    r = std::fma(-k, from_bits(0xb95e8083u), r);
    float y = std::fma(r, from_bits(0x3ab778cfu), from_bits(0x3c098d8bu));
    y = std::fma(r, y, from_bits(0x3d2aa957u));
    y = std::fma(r, y, from_bits(0x3e2aa9a5u));
    y = std::fma(r, y, from_bits(0x3f000000u));
    const float e = std::fma(y, r * r, r) + 1.0f;
    const float value = std::ldexp(e, int(k));
    return flush && value < std::numeric_limits<float>::min() ? 0.0f : value;
}

// The number of inputs where tmm::detail::exp and the scalar statement differ (NaN equals NaN).
std::size_t differences_from_scalar(const std::vector<float>& x, bool flush) {
    std::size_t count = 0;
    alignas(64) float mine[batch::size];
    for (std::size_t i = 0; i < x.size(); i += batch::size) {
        tmm::detail::exp(batch::load_unaligned(x.data() + i)).store_aligned(mine);
        for (std::size_t j = 0; j < batch::size; ++j) {
            const float want = scalar_exp(x[i + j], flush);
            if (!(std::isnan(mine[j]) && std::isnan(want)) && bits_of(mine[j]) != bits_of(want)) {
                if (count < 5)
                    BOOST_TEST_MESSAGE("exp(" << x[i + j] << "): " << mine[j] << ", want " << want);
                ++count;
            }
        }
    }
    return count;
}

}  // namespace

BOOST_AUTO_TEST_CASE(same_as_the_algorithm_in_scalar_code) {
    BOOST_TEST(differences_from_scalar(inputs(), false) == 0u);
}

#if defined(__SSE__)
BOOST_AUTO_TEST_CASE(same_as_the_algorithm_in_scalar_code_under_flush_to_zero) {
    const std::vector<float> x = inputs();
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);  // FTZ and DAZ, as the kernels run
    // (DAZ reads a subnormal x as 0: the scalar statement is given 0 for those)
    std::vector<float> read(x);
    for (float& v : read)
        if (v != 0.0f && std::abs(v) < std::numeric_limits<float>::min())
            v = std::copysign(0.0f, v);
    std::size_t count = 0;
    alignas(64) float mine[batch::size];
    for (std::size_t i = 0; i < x.size(); i += batch::size) {
        tmm::detail::exp(batch::load_unaligned(x.data() + i)).store_aligned(mine);
        for (std::size_t j = 0; j < batch::size; ++j) {
            _mm_setcsr(saved);  // the statement computed exactly, then flushed by hand
            const float want = scalar_exp(read[i + j], true);
            _mm_setcsr(saved | 0x8040u);
            count +=
                !(std::isnan(mine[j]) && std::isnan(want)) && bits_of(mine[j]) != bits_of(want);
        }
    }
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
