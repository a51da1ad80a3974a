// Google Benchmark of the CPU backend's single-threaded MEX kernels (log-space 1x1 conv):
// forward, backward with and without din, and the forward GEMM alone, at the shapes of the
// published model. Counters: rows per second (items) and FLOP/s, counting 2*rows*I*O per GEMM.
#include <benchmark/benchmark.h>

#include <tmm/backends/cpu/mex_kernels.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace {

namespace cpu = tmm::backends::cpu_kernels;

struct mex_data {
    std::size_t rows, inputs, outputs;
    std::vector<float> in, weights, weights_t, log_weights, out, dout, din, dtheta;

    mex_data(std::size_t r, std::size_t I, std::size_t O)
        : rows(r),
          inputs(I),
          outputs(O),
          in(r * I),
          weights(O * I),
          weights_t(I * O),
          log_weights(O * I),
          out(r * O),
          dout(r * O),
          din(r * I),
          dtheta(O * I) {
        std::mt19937 rng(42);
        std::normal_distribution<float> x(0.0f, 3.0f);
        for (auto& v : in) v = x(rng);
        for (auto& v : dout) v = x(rng) / 128.0f;
        for (std::size_t o = 0; o < O; ++o) {
            double sum = 0;
            for (std::size_t i = 0; i < I; ++i) sum += weights[o * I + i] = std::exp(x(rng) / 2);
            for (std::size_t i = 0; i < I; ++i) {
                weights[o * I + i] = static_cast<float>(weights[o * I + i] / sum);
                weights_t[i * O + o] = weights[o * I + i];
                log_weights[o * I + i] = std::log(weights[o * I + i]);
            }
        }
        forward();
    }

    void forward() {
        cpu::mex_forward(rows, inputs, outputs, in.data(), weights.data(), weights_t.data(),
                         log_weights.data(), out.data());
    }

    void backward(bool with_din) {
        cpu::mex_backward(rows, inputs, outputs, in.data(), out.data(), dout.data(), weights.data(),
                          weights_t.data(), log_weights.data(), with_din ? din.data() : nullptr,
                          dtheta.data());
    }
};

void set_counters(benchmark::State& state, const mex_data& d, double gemms) {
    const double flops = gemms * 2.0 * double(d.rows) * double(d.inputs) * double(d.outputs);
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * d.rows));
    state.counters["FLOP/s"] =
        benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

void mex_forward(benchmark::State& state) {
    mex_data d(state.range(0), state.range(1), state.range(2));
    for (auto _ : state) {
        d.forward();
        benchmark::DoNotOptimize(d.out.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, d, 1);
}

void mex_backward(benchmark::State& state) {
    mex_data d(state.range(0), state.range(1), state.range(2));
    for (auto _ : state) {
        d.backward(true);
        benchmark::DoNotOptimize(d.dtheta.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, d, 2);
}

void mex_backward_without_din(benchmark::State& state) {
    mex_data d(state.range(0), state.range(1), state.range(2));
    for (auto _ : state) {
        d.backward(false);
        benchmark::DoNotOptimize(d.dtheta.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, d, 1);
}

// S = E W^T alone, on operands packed once: the GEMM the forward pass spends its time in
// (one chunk of rows, as mex_forward runs it).
void mex_forward_gemm_only(benchmark::State& state) {
    namespace detail = cpu::detail;
    const std::size_t rows = state.range(0), I = state.range(1), O = state.range(2);
    mex_data d(rows, I, O);
    detail::with_panel_vectors(O, [&](auto nv) {
        constexpr std::size_t nr = decltype(nv)::value * detail::mex_lanes;
        const std::size_t rows_padded = detail::round_up(rows, detail::mex_mr);
        const std::size_t o_padded = detail::round_up(O, nr);
        detail::aligned_floats a, b, c;
        std::vector<float> e(rows * I);
        for (std::size_t k = 0; k < e.size(); ++k) e[k] = std::exp(-std::abs(d.in[k]));
        float* packed_e = a.get(rows_padded * I);
        float* packed_w_t = b.get(o_padded * I);
        float* s = c.get(rows_padded * o_padded);
        detail::pack_a_from_rows(rows, I, e.data(), I, packed_e);
        detail::pack_b<decltype(nv)::value>(I, O, d.weights_t.data(), O, packed_w_t);
        for (auto _ : state) {
            detail::gemm_packed<decltype(nv)::value>(rows, O, I, packed_e, packed_w_t, s, o_padded,
                                                     false);
            benchmark::DoNotOptimize(s);
            benchmark::ClobberMemory();
        }
    });
    set_counters(state, d, 1);
}

// rows x I x O: a batch of 128 at one position and 128 * 64 for a shared layer, at the
// published model's (I, O) pairs.
void published_shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"rows", "I", "O"});
    for (const std::int64_t rows : {128, 128 * 64})
        for (const auto& [i, o] : {std::pair<std::int64_t, std::int64_t>{32, 64},
                                   {64, 128},
                                   {128, 256},
                                   {256, 512},
                                   {512, 10}})
            b->Args({rows, i, o});
}

// The GEMM alone at one chunk of rows (mex_forward works through rows 128 at a time).
void chunk_shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"rows", "I", "O"});
    for (const auto& [i, o] : {std::pair<std::int64_t, std::int64_t>{32, 64},
                               {64, 128},
                               {128, 256},
                               {256, 512},
                               {512, 10}})
        b->Args({128, i, o});
}

BENCHMARK(mex_forward)->Apply(published_shapes);
BENCHMARK(mex_forward_gemm_only)->Apply(chunk_shapes);
BENCHMARK(mex_backward)->Apply(published_shapes);
BENCHMARK(mex_backward_without_din)->Apply(published_shapes);

}  // namespace

BENCHMARK_MAIN();
