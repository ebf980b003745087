// FP8 e4m3 block-scaled weights (fp8_block.h) against the same matrices in bf16 column panels
// (bf16_panels.h, what a bf16 checkpoint loads as), through the gemm op, alternated in one run:
// decode-shaped M streams the weights from DRAM, so FP8 (1 byte per weight + 4 bytes per
// 128 x 128 block) should take about half the time of bf16 (2 bytes per weight). Prints the
// time per pass over all matrices, the bytes each form reads per second, the time ratio, and the
// process CPU time per pass (on a shared machine, wall time also counts waiting for a core).
//
//   fp8_decode_bench [--threads 2] [--n 4096] [--k 2048] [--matrices 16] [--repeats 7] [--ms 1,4,16,64]
//       [--block 128]
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "bench_args.h"
#include "moe/quant.h"
#include "ops/ops.h"

using namespace moe;

int main(int argc, char** argv) {
    int threads = 2, repeats = 7;
    int64_t n = 4096, k = 2048, matrices = 16, block = 128;
    std::vector<int64_t> ms = {1, 4, 16, 64};
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
        else if (a == "--block")
            block = std::stoll(argv[i + 1]);
        else if (a == "--ms")
            ms = bench::parse_int_list(argv[i + 1]);
    }
    auto be = make_cpu_backend({.num_threads = threads, .compress_streamed = false});
    // Weights like a checkpoint's (normal, std 0.02), in bf16 and quantized to e4m3 blocks.
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    const int64_t sn = (n + block - 1) / block, sk = (k + block - 1) / block;
    std::vector<std::unique_ptr<PreparedWeight>> forms[2];  // 0: bf16 panels, 1: FP8
    {
        std::vector<float> w(static_cast<size_t>(n * k));
        std::vector<uint16_t> wb(w.size());
        std::vector<uint8_t> codes(w.size());
        std::vector<float> scales(static_cast<size_t>(sn * sk));
        for (int64_t mat = 0; mat < matrices; ++mat) {
            for (auto& v : w) v = dist(rng);
            for (size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
            for (int64_t bi = 0; bi < sn; ++bi)
                for (int64_t bj = 0; bj < sk; ++bj) {
                    float amax = 0;
                    for (int64_t r = bi * block; r < std::min(n, (bi + 1) * block); ++r)
                        for (int64_t c = bj * block; c < std::min(k, (bj + 1) * block); ++c)
                            amax = std::max(amax, std::abs(w[static_cast<size_t>(r * k + c)]));
                    const float s = amax > 0 ? amax / 448.0f : 1.0f;
                    scales[static_cast<size_t>(bi * sk + bj)] = s;
                    for (int64_t r = bi * block; r < std::min(n, (bi + 1) * block); ++r)
                        for (int64_t c = bj * block; c < std::min(k, (bj + 1) * block); ++c)
                            codes[static_cast<size_t>(r * k + c)] =
                                f32_to_fp8_e4m3(w[static_cast<size_t>(r * k + c)] / s);
                }
            auto pb = be->prepare_weight("w", TensorView::make(wb.data(), DType::kBF16, {n, k}), WeightUse::kMatmul);
            QuantizedTensor q{.format = QuantFormat::kFp8E4M3Block,
                              .n = n,
                              .k = k,
                              .values = TensorView::make(codes.data(), DType::kF8E4M3, {n, k}),
                              .scales = TensorView::make(scales.data(), DType::kF32, {sn, sk}),
                              .block_n = block,
                              .block_k = block};
            auto pq = be->prepare_quantized_weight("w", q, WeightUse::kStreamedMatmul);
            if (!pb.ok() || !pq.ok()) {
                std::fprintf(stderr, "prepare: %s\n", (!pb.ok() ? pb.status() : pq.status()).to_string().c_str());
                return 1;
            }
            forms[0].push_back(std::move(pb).value());
            forms[1].push_back(std::move(pq).value());
        }
    }
    double bytes[2] = {0, 0};
    for (int f = 0; f < 2; ++f)
        for (const auto& w : forms[f]) bytes[f] += static_cast<double>(w->bytes());
    std::printf(
        "cpu: %s, %d threads; %lld matrices of %lld x %lld: bf16 panels %.0f MB, FP8 [%lld, %lld] blocks %.0f MB\n",
        cpu::cpu_features().to_string().c_str(), threads, static_cast<long long>(matrices), static_cast<long long>(n),
        static_cast<long long>(k), bytes[0] / 1e6, static_cast<long long>(block), static_cast<long long>(block),
        bytes[1] / 1e6);
    std::printf("weights: %s\n", be->weight_summary().c_str());
    const int64_t max_m = *std::max_element(ms.begin(), ms.end());
    std::vector<float> x(static_cast<size_t>(max_m * k)), y(static_cast<size_t>(max_m * n));
    for (auto& v : x) v = dist(rng) * 50.0f;
    for (int64_t m : ms) {
        std::vector<double> secs[2], cpu_secs[2];
        for (int rep = 0; rep < repeats; ++rep) {
            for (int f = 0; f < 2; ++f) {  // alternated
                timespec c0{}, c1{};
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
                const auto t0 = std::chrono::steady_clock::now();
                for (int64_t i = 0; i < matrices; ++i) {
                    GemmArgs a{.x = TensorView::make(x.data(), DType::kF32, {m, k}),
                               .w = WeightView(*forms[f][static_cast<size_t>(i)]),
                               .bias = {},
                               .y = TensorView::make(y.data(), DType::kF32, {m, n})};
                    if (!ops::run(*be, a).ok()) return 1;
                }
                secs[f].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
                cpu_secs[f].push_back(static_cast<double>(c1.tv_sec - c0.tv_sec) +
                                      1e-9 * static_cast<double>(c1.tv_nsec - c0.tv_nsec));
            }
        }
        for (auto& v : secs) std::sort(v.begin(), v.end());
        for (auto& v : cpu_secs) std::sort(v.begin(), v.end());
        const double tb = secs[0][secs[0].size() / 2], tf = secs[1][secs[1].size() / 2];
        std::printf(
            "M=%lld: bf16 %.2f ms (%.1f GB/s read), FP8 %.2f ms (%.1f GB/s read); bf16/FP8 time %.2fx "
            "(median of %d)\n",
            static_cast<long long>(m), tb * 1e3, bytes[0] / tb / 1e9, tf * 1e3, bytes[1] / tf / 1e9, tb / tf, repeats);
        // On a shared machine wall time includes time the process waited for a core.
        std::printf("      process CPU time (median): bf16 %.2f ms, FP8 %.2f ms\n",
                    cpu_secs[0][cpu_secs[0].size() / 2] * 1e3, cpu_secs[1][cpu_secs[1].size() / 2] * 1e3);
    }
    return 0;
}
