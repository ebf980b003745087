// bf16 GEMMs with weights streamed from DRAM: our AVX512-BF16 tiles (bf16_matmul.h) against
// oneDNN's matmul, alternated in one run, for decode-shaped M (1, 2, 4: prints GB/s of weights
// read) and prefill-shaped M (16, 64, 512: prints GFLOP/s).
//
// Run with OMP_WAIT_POLICY=passive: oneDNN runs on OpenMP, whose threads otherwise keep spinning
// into the tiles' passes (the tiles run on the backend's own pool) and halve their figures.
//
//   gemm_decode_bench [--threads 2] [--n 4096] [--k 2048] [--matrices 16] [--repeats 5] [--ms 1,2,4,16,64,512]
//       [--packed 1] (instead of oneDNN, the second path is our tiles on weights packed into
//       panels at load, bf16_panels.h: the two layouts of our own kernel, alternated)
//       [--packed 12] (the plain panels against the lossless 12-bit panels, bf16_panels.h)
//       [--outliers P] (with --packed 12: P in 1000 weights drawn 3000x wider, so that the 12-bit
//       form keeps them as exceptions; it is then packed directly, past the backend's bound of 1
//       exception in 1024 values, to measure what exceptions cost)
//       [--peak 1] (the VDPBF16PS peak, bf16_peak_probe.h, measured on the backend's threads right
//       before and right after the products; prefill-shaped lines add their fraction of it)
//
// Weights are drawn like a checkpoint's (normal, std 0.02), so that the 12-bit form keeps as
// many exceptions as it would on a model. GB/s and GFLOP/s count the bf16 bytes (2 per weight)
// for every path: a higher figure is a faster pass whatever the layout reads.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "bench_args.h"
#include "bf16_peak_probe.h"
#include "ops/ops.h"

using namespace moe;

int main(int argc, char** argv) {
    int threads = 2, repeats = 5;
    int packed = 0, peak = 0;
    double outliers = 0;
    int64_t n = 4096, k = 2048, matrices = 16;
    std::vector<int64_t> ms = {1, 2, 4, 16, 64, 512};
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--threads")
            threads = std::stoi(argv[i + 1]);
        else if (a == "--n")
            n = std::stoll(argv[i + 1]);
        else if (a == "--k")
            k = std::stoll(argv[i + 1]);
        else if (a == "--matrices")
            matrices = std::stoll(argv[i + 1]);
        else if (a == "--repeats")
            repeats = std::stoi(argv[i + 1]);
        else if (a == "--packed")
            packed = std::stoi(argv[i + 1]);
        else if (a == "--outliers")
            outliers = std::stod(argv[i + 1]);
        else if (a == "--peak")
            peak = std::stoi(argv[i + 1]);
        else if (a == "--ms")
            ms = bench::parse_int_list(argv[i + 1]);
    }
    auto be = make_cpu_backend({.num_threads = threads});
    auto& engine = cpu::as_cpu(*be).gemm_engine();
    // Weights well past the last-level cache so every pass reads DRAM.
    std::vector<std::vector<uint16_t>> w(static_cast<size_t>(matrices),
                                         std::vector<uint16_t>(static_cast<size_t>(n * k)));
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    std::uniform_real_distribution<double> pick(0.0, 1000.0);
    for (auto& wi : w)
        for (auto& v : wi) v = f32_to_bf16(outliers > 0 && pick(rng) < outliers ? dist(rng) * 3000.0f : dist(rng));
    // The 12-bit form packed directly (--outliers): 64-byte aligned storage per matrix.
    int64_t exceptions = 0;
    // panels[0]: the plain panels (--packed 1 and 12), panels[1]: the 12-bit form (--packed 12).
    cpu::CpuWeightCounts direct_counts;  // of the 12-bit forms packed directly; outlives them
    std::vector<std::unique_ptr<PreparedWeight>> panels[2];
    if (packed != 0) {
        for (auto& wi : w) {
            for (int f = 0; f < (packed == 12 ? 2 : 1); ++f) {
                const TensorView view = TensorView::make(wi.data(), DType::kBF16, {n, k});
                if (f == 1 && outliers > 0) {
                    const cpu::Bf16Panels12Plan plan = cpu::plan_bf16_panels12(wi.data(), n, k);
                    if (plan.bytes < 0) return 1;
                    auto buf = DeviceBuffer::allocate(*be, static_cast<size_t>(plan.bytes));
                    if (!buf.ok()) return 1;
                    cpu::pack_bf16_panels12(wi.data(), plan, 0, cpu::bf16_panel_count(n),
                                            static_cast<uint8_t*>(buf.value().data()));
                    exceptions += plan.exceptions;
                    TensorView logical = view;
                    logical.data = nullptr;
                    panels[f].push_back(
                        std::make_unique<cpu::CpuWeight>(*be, logical,
                                                         cpu::CpuMatrix{.layout = cpu::CpuLayout::kPanels12,
                                                                        .dtype = DType::kBF16,
                                                                        .n = n,
                                                                        .k = k,
                                                                        .data = buf.value().data()},
                                                         std::move(buf.value()), &direct_counts));
                    continue;
                }
                auto pm = be->prepare_weight("w", view, f == 0 ? WeightUse::kMatmul : WeightUse::kStreamedMatmul);
                const cpu::CpuLayout want = f == 0 ? cpu::CpuLayout::kPanels : cpu::CpuLayout::kPanels12;
                if (!pm.ok() || static_cast<const cpu::CpuWeight&>(*pm.value()).matrix().layout != want) {
                    std::fprintf(stderr, "--packed: this backend does not pack bf16 matrices so (no AVX512-BF16?)\n");
                    return 1;
                }
                panels[f].push_back(std::move(pm.value()));
            }
        }
    }
    const char* first = packed == 12 ? "panels" : "tiles";
    const char* second = packed == 12 ? "12-bit" : packed ? "panels" : "oneDNN";
    const int64_t max_m = *std::max_element(ms.begin(), ms.end());
    std::vector<float> x(static_cast<size_t>(max_m * k), 0.5f), y(static_cast<size_t>(max_m * n));
    const double bytes = static_cast<double>(matrices) * static_cast<double>(n * k) * 2;
    std::printf("cpu: %s, %d threads; %lld matrices of %lld x %lld bf16 (%.0f MB)\n",
                cpu::cpu_features().to_string().c_str(), threads, static_cast<long long>(matrices),
                static_cast<long long>(n), static_cast<long long>(k), bytes / 1e6);
    if (outliers > 0)
        std::printf("12-bit form packed directly: %.4f%% of the values are exceptions (1 in %.0f)\n",
                    100.0 * static_cast<double>(exceptions) / static_cast<double>(matrices * n * k),
                    static_cast<double>(matrices * n * k) / static_cast<double>(std::max<int64_t>(1, exceptions)));
    // The peak right before and right after the products; the faster of the two is the harsher
    // denominator.
    auto probe_peak = [&] {
        return bench::vdpbf16ps_peak_gflops_per_thread(cpu::as_cpu(*be).pool(), cpu::cpu_features().avx512_bf16);
    };
    const double peak_before = peak ? probe_peak() : 0;
    std::vector<std::pair<int64_t, std::pair<double, double>>> prefill_lines;
    for (int64_t m : ms) {
        std::vector<double> gbs[2];
        for (int rep = 0; rep < repeats; ++rep) {
            for (int path = 0; path < 2; ++path) {  // 0: first, 1: second, alternated
                engine.set_bf16_tiles_max_rows(path == 0 || packed != 0 ? INT64_MAX : 0);
                const auto t0 = std::chrono::steady_clock::now();
                for (int64_t i = 0; i < matrices; ++i) {
                    GemmArgs a{.x = TensorView::make(x.data(), DType::kF32, {m, k}),
                               .w = TensorView::make(w[static_cast<size_t>(i)].data(), DType::kBF16, {n, k}),
                               .bias = {},
                               .y = TensorView::make(y.data(), DType::kF32, {m, n})};
                    const int form = packed == 12 ? path : path - 1;  // into panels[], -1: none
                    if (packed != 0 && form >= 0) a.w = WeightView(*panels[form][static_cast<size_t>(i)]);
                    if (!ops::run(*be, a).ok()) return 1;
                }
                const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                gbs[path].push_back(bytes / s / 1e9);
            }
        }
        for (auto& v : gbs) std::sort(v.begin(), v.end());
        const double g = gbs[0][gbs[0].size() / 2], d = gbs[1][gbs[1].size() / 2];
        if (m <= 4) {
            std::printf("M=%lld: %s %.1f GB/s, %s %.1f GB/s (median of %d), ratio %.2fx\n", static_cast<long long>(m),
                        first, g, second, d, repeats, g / d);
        } else {
            // FLOPs per weight byte: 2 * m per bf16 element = m per byte.
            std::printf("M=%lld: %s %.1f GFLOP/s, %s %.1f GFLOP/s (median of %d), ratio %.2fx\n",
                        static_cast<long long>(m), first, g * static_cast<double>(m), second,
                        d * static_cast<double>(m), repeats, g / d);
            prefill_lines.push_back({m, {g * static_cast<double>(m), d * static_cast<double>(m)}});
        }
    }
    if (peak) {
        const double peak_after = probe_peak();
        const double per_thread = std::max(peak_before, peak_after);
        std::printf(
            "VDPBF16PS peak (16 accumulators, all %d threads at once): %.1f GFLOP/s per thread before, "
            "%.1f after; %.1f for the team\n",
            threads, peak_before, peak_after, per_thread * threads);
        for (const auto& [m, f] : prefill_lines)
            std::printf("M=%lld: %s %.0f%% of the peak, %s %.0f%%\n", static_cast<long long>(m), first,
                        100 * f.first / (per_thread * threads), second, 100 * f.second / (per_thread * threads));
    }
    return 0;
}
