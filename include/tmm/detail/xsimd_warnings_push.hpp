// Included (with xsimd_warnings_pop.hpp at the end) around code that inlines xsimd: GCC 12
// reports the _mm512_undefined_ps idiom inside its own AVX-512 intrinsics as
// -W(maybe-)uninitialized once they are inlined (GCC bug 105593, fixed in 12.3).
// No include guard: each inclusion pushes once.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
