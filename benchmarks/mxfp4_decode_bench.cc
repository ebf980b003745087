// Decode-shaped products over expert-sized matrices held as MXFP4 (4.25 bits per weight, decoded in
// registers: backend/cpu/mxfp4_block.h) against the same values in bf16 (the CPU backend's
// packed panels, 16 bits per weight), alternated in one run: each repeat times every matrix once
// per path (more matrices than the caches hold, so weights stream from DRAM), medians reported.
// Prints, per M: ms per pass, the bytes each path reads per pass, their GB/s, and the time ratio.
//
//   mxfp4_decode_bench [--threads 2] [--n 2880] [--k 2880] [--matrices 24] [--repeats 7] [--ms 1,2,4,8,64]
//
// First figures (2 threads, 2-vCPU AMD EPYC with AVX512-BF16, load average 17-19 from other
// builds, so the process got a fraction of the cores: the ratios are loose and the GB/s are not
// the machine's): M=1 mxfp4 88 ms vs bf16 96 ms per pass (1.08x), M=4 0.93x, M=16 0.81x, M=64
// 0.58x; the MXFP4 pass reads 105.8 MB, the bf16 one 398.1 MB. A second run at load 10 (the
// process got 2.3 s of CPU in 10.6 s of wall time on 2 threads): M=1 0.91x, M=4 0.95x, M=16
// 0.78x. Starved of CPU, both passes are bound by the cycles they get, not by DRAM, so the 3.8x
// fewer bytes do not show; to be rerun on a quiet machine.
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
    int64_t n = 2880, k = 2880, matrices = 24;
    std::vector<int64_t> ms = {1, 2, 4, 8, 64};
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
        else if (a == "--ms")
            ms = bench::parse_int_list(argv[i + 1]);
    }
    if (k % 32 != 0) {
        std::fprintf(stderr, "--k must be a multiple of 32\n");
        return 2;
    }
    auto be = make_cpu_backend({.num_threads = threads});
    std::printf("cpu: %s\n", be->describe().c_str());
    std::mt19937 gen(1);
    std::uniform_int_distribution<int> byte(0, 255), scale(118, 124);
    std::vector<std::unique_ptr<PreparedWeight>> mx, bf;
    for (int64_t i = 0; i < matrices; ++i) {
        std::vector<uint8_t> values(static_cast<size_t>(n * k / 2)), scales(static_cast<size_t>(n * k / 32));
        for (auto& v : values) v = static_cast<uint8_t>(byte(gen));
        for (auto& s : scales) s = static_cast<uint8_t>(scale(gen));
        QuantizedTensor q;
        q.format = QuantFormat::kMxfp4;
        q.n = n;
        q.k = k;
        q.block_n = 1;
        q.block_k = 32;
        q.values = TensorView::make(values.data(), DType::kU8, {n, k / 32, 16});
        q.scales = TensorView::make(scales.data(), DType::kU8, {n, k / 32});
        auto m = be->prepare_quantized_weight("w", q, WeightUse::kStreamedMatmul);
        if (!m.ok()) {
            std::fprintf(stderr, "%s\n", m.status().to_string().c_str());
            return 1;
        }
        mx.push_back(std::move(m).value());
        std::vector<float> f(static_cast<size_t>(n * k));
        dequantize_to_f32(q, 0, n, f.data());
        std::vector<uint16_t> b(f.size());
        for (size_t j = 0; j < f.size(); ++j) b[j] = f32_to_bf16(f[j]);
        // kMatmul: the plain bf16 panels (the 12-bit form would not hold these values losslessly often enough).
        auto p = be->prepare_weight("w", TensorView::make(b.data(), DType::kBF16, {n, k}), WeightUse::kMatmul);
        if (!p.ok()) {
            std::fprintf(stderr, "%s\n", p.status().to_string().c_str());
            return 1;
        }
        bf.push_back(std::move(p).value());
    }
    std::printf("%s\n", be->weight_summary().c_str());
    const double mx_bytes = static_cast<double>(mx[0]->bytes()) * static_cast<double>(matrices);
    const double bf_bytes = static_cast<double>(bf[0]->bytes()) * static_cast<double>(matrices);
    std::printf("%lld matrices of [%lld, %lld]; bytes per pass: mxfp4 %.1f MB (%.2f bits/weight), bf16 %.1f MB\n",
                static_cast<long long>(matrices), static_cast<long long>(n), static_cast<long long>(k), mx_bytes / 1e6,
                8.0 * mx_bytes / static_cast<double>(matrices * n * k), bf_bytes / 1e6);
    std::printf("%4s %12s %12s %10s %10s %12s\n", "M", "mxfp4 ms", "bf16 ms", "mxfp4 GB/s", "bf16 GB/s",
                "bf16/mxfp4 t");
    for (int64_t m : ms) {
        std::vector<float> x(static_cast<size_t>(m * k)), y(static_cast<size_t>(m * n));
        for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 17) * 0.01f - 0.08f;
        auto pass = [&](std::vector<std::unique_ptr<PreparedWeight>>& ws) {
            const auto t0 = std::chrono::steady_clock::now();
            for (auto& w : ws) {
                GemmArgs a{TensorView::make(x.data(), DType::kF32, {m, k}), WeightView(*w), TensorView{},
                           TensorView::make(y.data(), DType::kF32, {m, n}), false};
                const Status s = ops::run(*be, a);
                if (!s.ok()) std::fprintf(stderr, "%s\n", s.to_string().c_str());
            }
            return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        };
        pass(mx);
        pass(bf);
        std::vector<double> tm, tb;
        for (int r = 0; r < repeats; ++r) {
            tm.push_back(pass(mx));
            tb.push_back(pass(bf));
        }
        std::sort(tm.begin(), tm.end());
        std::sort(tb.begin(), tb.end());
        const double a = tm[tm.size() / 2], b = tb[tb.size() / 2];
        std::printf("%4lld %12.3f %12.3f %10.1f %10.1f %12.2f\n", static_cast<long long>(m), a, b, mx_bytes / a / 1e6,
                    bf_bytes / b / 1e6, b / a);
    }
    return 0;
}
