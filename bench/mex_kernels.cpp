// Google Benchmark of the CPU backend's single-threaded kernels at the shapes of the published
// model: the MEX layer (log-space 1x1 conv) forward, backward with and without din, with the
// weights packed on each call or once (as the backend does), the forward GEMM alone, the conv
// fused with a 2x2 product pooling (per-member logs, as training runs it, and the window kernel
// inference runs), and the representation layer. Counters: rows per second
// (items) and FLOP/s, counting 2*rows*I*O per GEMM (representation: 5 FLOPs per component and
// observed coordinate).
#include <benchmark/benchmark.h>

#include <tmm/backends/cpu/leaf_kernels.hpp>
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

// The backend's path: weights packed once (outside the timed loop), as prepared per call.
void mex_forward_prepacked(benchmark::State& state) {
    mex_data d(state.range(0), state.range(1), state.range(2));
    cpu::detail::aligned_floats packed;
    float* w = packed.get(cpu::mex_forward_packed_size(d.inputs, d.outputs));
    cpu::mex_pack_forward_weights(d.inputs, d.outputs, d.weights.data(), w);
    for (auto _ : state) {
        cpu::mex_forward_packed(d.rows, d.inputs, d.outputs, d.in.data(), w, d.log_weights.data(),
                                d.out.data());
        benchmark::DoNotOptimize(d.out.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, d, 1);
}

void mex_backward_prepacked(benchmark::State& state) {
    mex_data d(state.range(0), state.range(1), state.range(2));
    cpu::detail::aligned_floats packed;
    float* w = packed.get(cpu::mex_backward_packed_size(d.inputs, d.outputs));
    cpu::mex_pack_backward_weights(d.inputs, d.outputs, d.weights.data(), w);
    for (auto _ : state) {
        cpu::mex_backward_packed(d.rows, d.inputs, d.outputs, d.in.data(), d.out.data(),
                                 d.dout.data(), w, d.log_weights.data(), d.din.data(),
                                 d.dtheta.data());
        benchmark::DoNotOptimize(d.dtheta.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, d, 2);
}

// The four members of a 2x2 pooling window, each with its own inputs and weights, the
// weights packed for the forward GEMM.
struct window_data {
    static constexpr std::size_t size = 4;
    std::vector<mex_data> members;
    std::vector<cpu::detail::aligned_floats> packed{size};
    std::vector<const float*> ins, weights, logs;  // member by member

    explicit window_data(const benchmark::State& state) {
        for (std::size_t j = 0; j < size; ++j)
            members.emplace_back(state.range(0), state.range(1), state.range(2));
        const mex_data& d = members[0];
        for (std::size_t j = 0; j < size; ++j) {
            float* w = packed[j].get(cpu::mex_forward_packed_size(d.inputs, d.outputs));
            cpu::mex_pack_forward_weights(d.inputs, d.outputs, members[j].weights.data(), w);
            ins.push_back(members[j].in.data());
            weights.push_back(w);
            logs.push_back(members[j].log_weights.data());
        }
    }
};

// A conv fused with the 2x2 product pooling after it: four positions (own inputs, own weights)
// summed into one window's output, no conv output written. Items: rows of the window.
void conv_pool_fused(benchmark::State& state) {
    const window_data window(state);
    const mex_data& d = window.members[0];
    std::vector<float> pooled(d.rows * d.outputs);
    for (auto _ : state) {
        for (std::size_t j = 0; j < window.size; ++j)
            cpu::mex_forward_packed(d.rows, d.inputs, d.outputs, window.ins[j], window.weights[j],
                                    window.logs[j], nullptr, pooled.data(), j > 0);
        benchmark::DoNotOptimize(pooled.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, d, window.size);
}

// The same window through mex_forward_window, inference's kernel: one log per output (the
// members' logs summed as the log of their product).
void conv_pool_window(benchmark::State& state) {
    const window_data window(state);
    const mex_data& d = window.members[0];
    std::vector<float> pooled(d.rows * d.outputs);
    for (auto _ : state) {
        cpu::mex_forward_window(d.rows, d.inputs, d.outputs, window.size, window.ins.data(),
                                window.weights.data(), window.logs.data(), pooled.data());
        benchmark::DoNotOptimize(pooled.data());
        benchmark::ClobberMemory();
    }
    set_counters(state, d, window.size);
}

// The representation layer at one position: rows patches of s = 4 coordinates (2x2), M = 32
// Gaussians, each pixel missing with probability 1/2 (mask fixed by a seed).
void representation(benchmark::State& state) {
    const std::size_t rows = state.range(0), m = 32, s = 4, pixels = 784;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-0.5f, 0.5f);
    std::bernoulli_distribution keep(0.5);
    std::vector<float> values(rows * pixels), mean(s * m), half_log(s * m), half_precision(s * m);
    std::vector<std::uint8_t> observed(values.size());
    for (auto& v : values) v = u(rng);
    for (auto& o : observed) o = keep(rng);
    for (auto& v : mean) v = u(rng);
    for (auto& v : half_log) v = u(rng);
    for (auto& v : half_precision) v = 2.0f + u(rng);
    cpu::leaf_tables t;
    t.components = m, t.coordinates = s, t.gaussian = true;
    t.mean_t = mean.data(), t.half_log_precision_t = half_log.data();
    t.half_precision_t = half_precision.data();
    const tmm::observations<float> x(rows, values, observed);
    const int coordinates[s] = {300, 301, 328, 329};  // a 2x2 patch of a 28-wide image
    std::vector<float> out(rows * m);
    std::size_t seen = 0;
    for (std::size_t b = 0; b < rows; ++b)
        for (const int k : coordinates) seen += observed[b * pixels + k];
    for (auto _ : state) {
        cpu::leaf_log_densities(t, x, 0, rows, coordinates, pixels, out.data());
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * rows));
    state.counters["FLOP/s"] = benchmark::Counter(5.0 * double(seen) * double(m),
                                                  benchmark::Counter::kIsIterationInvariantRate);
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

// The published model's conv layers that are followed by a 2x2 pooling.
void pooled_shapes(benchmark::internal::Benchmark* b) {
    b->ArgNames({"rows", "I", "O"});
    for (const std::int64_t rows : {64, 128})
        for (const auto& [i, o] :
             {std::pair<std::int64_t, std::int64_t>{32, 64}, {64, 128}, {128, 256}, {256, 512}})
            b->Args({rows, i, o});
}

BENCHMARK(representation)->ArgName("rows")->Arg(64)->Arg(128)->Arg(1024);
BENCHMARK(mex_forward)->Apply(published_shapes);
BENCHMARK(mex_forward_prepacked)->Apply(published_shapes);
BENCHMARK(conv_pool_fused)->Apply(pooled_shapes);
BENCHMARK(conv_pool_window)->Apply(pooled_shapes);
BENCHMARK(mex_forward_gemm_only)->Apply(chunk_shapes);
BENCHMARK(mex_backward)->Apply(published_shapes);
BENCHMARK(mex_backward_prepacked)->Apply(published_shapes);
BENCHMARK(mex_backward_without_din)->Apply(published_shapes);

}  // namespace

BENCHMARK_MAIN();
