// Google Benchmark of the machine's single-precision FMA peak: the yardstick the kernels are
// measured against (a GEMM kernel at 60% of the peak does well). Each thread updates many
// independent registers with fused multiply-adds, enough to hide the instruction's latency, so
// the rate is bounded by the FMA units alone. Counter FLOP/s counts 2 per lane per FMA, summed
// over threads, per second of CPU time (Google Benchmark's default): another process taking a
// core away lowers the wall-clock rate, not what a core does while it runs.
// Run: build/bench/bench_fma_peak --benchmark_repetitions=5 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>

#include <tmm/detail/xsimd_warnings_push.hpp>  // GCC 12 and AVX-512, see there

#include <xsimd/xsimd.hpp>

#include <tmm/detail/xsimd_warnings_pop.hpp>

#include <cstdint>
#include <string>
#include <utility>

namespace {

// `Registers` independent chains of acc = acc * a + b; a just below 1 keeps every value near
// b / (1 - a), far from overflow and from subnormals (which would slow the units down).
template <class Arch, int Registers>
void fma_peak(benchmark::State& state) {
    using batch = xsimd::batch<float, Arch>;
    constexpr int repeats = 1024;
    const batch a(0.999999f), b(1e-7f);
    // Unrolled by a fold over the register indices, so that every chain stays in a register.
    [&]<int... K>(std::integer_sequence<int, K...>) {
        batch acc[Registers] = {batch(float(K))...};
        for (auto _ : state) {
            for (int r = 0; r < repeats; ++r) ((acc[K] = xsimd::fma(acc[K], a, b)), ...);
            batch sum = (acc[K] + ...);
            benchmark::DoNotOptimize(sum);
        }
    }
    (std::make_integer_sequence<int, Registers>());
    const double flops = 2.0 * repeats * Registers * batch::size;
    state.counters["FLOP/s"] =
        benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
    state.SetLabel(std::string(Arch::name()) + ", " + std::to_string(Registers) + " registers");
}

}  // namespace

#if XSIMD_WITH_AVX512F
BENCHMARK(fma_peak<xsimd::avx512f, 16>)->Name("BM_fma_peak/avx512")->Threads(1)->Threads(2);
#endif
#if XSIMD_WITH_FMA3_AVX2
BENCHMARK(fma_peak<xsimd::fma3<xsimd::avx2>, 12>)->Name("BM_fma_peak/avx2")->Threads(1)->Threads(2);
#endif

BENCHMARK_MAIN();
