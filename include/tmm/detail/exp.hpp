// exp of a vector of floats: xsimd::exp's values bit for bit, in fewer instructions where
// AVX-512 can scale by 2^k in one (vscalefps).
#pragma once

#include "xsimd_warnings_push.hpp"

#include <limits>

#include <xsimd/xsimd.hpp>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace tmm::detail {

// xsimd::exp(x) for a batch of floats. With 16-lane AVX-512 it runs xsimd 8's algorithm step
// for step (k = nearest integer to x / log 2, r = x - k log 2 in two parts, its degree-5
// polynomial for exp(r)) but scales by 2^k with vscalefps, where xsimd builds 2^k from bits,
// multiplies, and then selects 0 and +inf with two comparisons. xsimd's 2^k bits are 0 for
// k = -127, so its result is 0 exactly when k <= -127 (x <= its minlog included): the scaling
// here is masked to 0 there. Between, r 2^k is one correctly rounded product either way (a
// subnormal one flushed to zero alike under FTZ). +inf from x >= its maxlog is kept, NaN stays
// NaN. All 2^32 inputs gave the same floats as xsimd 8.1's exp in our -O2 builds when this was
// written, with and without FTZ/DAZ (NaN payloads aside). xsimd writes its multiply-adds as
// x * y + z, which GCC fuses at -O2 but not under the sanitizers; the fused steps here are
// fused in every build. tests/cpu/exp_test.cpp checks a sweep against the algorithm in scalar
// code.
// About 25% fewer cycles per vector than xsimd::exp on the AVX-512 Xeons we measure on.
template <class Arch>
inline xsimd::batch<float, Arch> exp(const xsimd::batch<float, Arch>& x) {
#if defined(__AVX512F__)
    if constexpr (xsimd::batch<float, Arch>::size == 16) {
        const __m512 a = x;
        const auto constant = [](unsigned bits) {
            return _mm512_castsi512_ps(_mm512_set1_epi32(int(bits)));
        };
        const __m512 k = _mm512_roundscale_ps(
            _mm512_mul_ps(_mm512_set1_ps(1.44269504088896341f), a), _MM_FROUND_TO_NEAREST_INT);
        __m512 r = _mm512_fnmadd_ps(k, constant(0x3f318000u), a);  // log 2, high part
        r = _mm512_fnmadd_ps(k, constant(0xb95e8083u), r);         // log 2, low part
        __m512 y = _mm512_fmadd_ps(r, constant(0x3ab778cfu), constant(0x3c098d8bu));
        y = _mm512_fmadd_ps(r, y, constant(0x3d2aa957u));
        y = _mm512_fmadd_ps(r, y, constant(0x3e2aa9a5u));
        y = _mm512_fmadd_ps(r, y, constant(0x3f000000u));
        const __m512 e =
            _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
        // k >= -126, or NaN
        const __mmask16 scaled = _mm512_cmp_ps_mask(k, _mm512_set1_ps(-126.5f), _CMP_NLT_UQ);
        const __m512 value = _mm512_maskz_scalef_ps(scaled, e, k);
        const __mmask16 overflow =
            _mm512_cmp_ps_mask(a, _mm512_set1_ps(88.3762626647949f), _CMP_GE_OQ);
        return _mm512_mask_mov_ps(value, overflow,
                                  _mm512_set1_ps(std::numeric_limits<float>::infinity()));
    }
#endif
    return xsimd::exp(x);
}

}  // namespace tmm::detail

#include "xsimd_warnings_pop.hpp"
