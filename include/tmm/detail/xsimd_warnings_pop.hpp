// Ends what xsimd_warnings_push.hpp began. No include guard: each inclusion pops once.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
