// Why the CPU backend packs bf16 weights at load: the kernel over [N, K] checkpoint weights
// (bf16_tiles.h, dot products + shuffle-tree sums) against a kernel over weights packed for
// broadcast FMAs (VNNI pairs, [N/16][K/2][16][2]: one vector holds 16 columns x 2 k, x pairs are
// broadcast), the layout oneDNN and llama.cpp repack into and, in 64-column panels, the one
// bf16_panels.h packs into at load. One thread, operands in L2, so the figure is the kernel's
// compute rate, not DRAM.
//
//   tile_layout_bench [--m 64] [--n 512] [--k 1024] [--iters 200] [--repeats 5]
//
// The packed kernel here is a plain register tile (6 rows x 64 columns, or 8 x 32), the shape a
// first version of a packed path would have; prints GFLOP/s medians for each.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/bf16_tiles.h"
#include "moe/dtype.h"

namespace {

#define BENCH_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

// MR rows x NB blocks of 16 columns over packed weights (block stride k * 16 elements).
template <int MR, int NB>
BENCH_TARGET void packed_tile(const uint16_t* x, int64_t ldx, const uint16_t* wp, int64_t k, float* y, int64_t ldy) {
    __m512 acc[MR][NB];
    for (int m = 0; m < MR; ++m)
        for (int b = 0; b < NB; ++b) acc[m][b] = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < k / 2; ++kp) {
        __m512i w[NB];
        for (int b = 0; b < NB; ++b) w[b] = _mm512_loadu_si512(wp + b * k * 16 + kp * 32);
        for (int m = 0; m < MR; ++m) {
            uint32_t pair;
            std::memcpy(&pair, x + m * ldx + 2 * kp, 4);
            const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
            for (int b = 0; b < NB; ++b) acc[m][b] = _mm512_dpbf16_ps(acc[m][b], xb, (__m512bh)w[b]);
        }
    }
    for (int m = 0; m < MR; ++m)
        for (int b = 0; b < NB; ++b) _mm512_storeu_ps(y + m * ldy + b * 16, acc[m][b]);
}

template <typename Fn>
double median_gflops(int repeats, int iters, double flops, Fn&& fn) {
    std::vector<double> r;
    for (int rep = 0; rep < repeats; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) fn();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        r.push_back(flops * iters / s / 1e9);
    }
    std::sort(r.begin(), r.end());
    return r[r.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    int64_t m = 64, n = 512, k = 1024;
    int iters = 200, repeats = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--m")
            m = std::stoll(argv[i + 1]);
        else if (a == "--n")
            n = std::stoll(argv[i + 1]);
        else if (a == "--k")
            k = std::stoll(argv[i + 1]);
        else if (a == "--iters")
            iters = std::stoi(argv[i + 1]);
        else if (a == "--repeats")
            repeats = std::stoi(argv[i + 1]);
    }
    if (!moe::cpu::bf16_tiles_available()) {
        std::printf("this CPU has no AVX512-BF16: nothing to compare\n");
        return 0;
    }
    // The packed tiles need m % 24 == 0 (6- and 8-row tiles), n % 64 == 0, k even.
    m = std::max<int64_t>(24, m / 24 * 24);
    n = std::max<int64_t>(64, n / 64 * 64);
    k = std::max<int64_t>(32, k / 32 * 32);
    std::vector<uint16_t> x(static_cast<size_t>(m * k)), w(static_cast<size_t>(n * k)), wp(w.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = moe::f32_to_bf16(static_cast<float>(i % 7) * 0.1f);
    for (size_t i = 0; i < w.size(); ++i) w[i] = moe::f32_to_bf16(static_cast<float>(i % 5) * 0.1f);
    // Pack: block b (16 columns), pair kp, column c, element e <- w[(b * 16 + c) * k + 2 * kp + e].
    for (int64_t b = 0; b < n / 16; ++b)
        for (int64_t kp = 0; kp < k / 2; ++kp)
            for (int64_t c = 0; c < 16; ++c)
                for (int64_t e = 0; e < 2; ++e)
                    wp[static_cast<size_t>(b * k * 16 + kp * 32 + c * 2 + e)] =
                        w[static_cast<size_t>((b * 16 + c) * k + 2 * kp + e)];
    std::vector<float> y(static_cast<size_t>(m * n)), y_packed(y.size());
    const double flops = 2.0 * static_cast<double>(m * n * k);

    const double dot = median_gflops(repeats, iters, flops, [&] {
        moe::cpu::bf16_dot_block(x.data(), k, m, w.data(), k, 0, n, y.data(), n, false);
    });
    const double p6 = median_gflops(repeats, iters, flops, [&] {
        for (int64_t n0 = 0; n0 < n; n0 += 64)
            for (int64_t m0 = 0; m0 < m; m0 += 6)
                packed_tile<6, 4>(x.data() + m0 * k, k, wp.data() + n0 * k, k, y_packed.data() + m0 * n + n0, n);
    });
    const double p8 = median_gflops(repeats, iters, flops, [&] {
        for (int64_t n0 = 0; n0 < n; n0 += 32)
            for (int64_t m0 = 0; m0 < m; m0 += 8)
                packed_tile<8, 2>(x.data() + m0 * k, k, wp.data() + n0 * k, k, y_packed.data() + m0 * n + n0, n);
    });
    // Both layouts must compute the same products (exact: small values, f32 sums of bf16 pairs
    // in a different order can still differ in the last bit, so compare with a tolerance).
    double max_rel = 0;
    for (size_t i = 0; i < y.size(); ++i)
        max_rel = std::max(max_rel, std::abs(static_cast<double>(y[i]) - y_packed[i]) / (1e-6 + std::abs(y[i])));
    std::printf("m=%lld n=%lld k=%lld, 1 thread, median of %d x %d iterations\n", static_cast<long long>(m),
                static_cast<long long>(n), static_cast<long long>(k), repeats, iters);
    std::printf("checkpoint layout, dot-product tiles: %.1f GFLOP/s\n", dot);
    std::printf("packed layout, 6x64 broadcast tile:   %.1f GFLOP/s\n", p6);
    std::printf("packed layout, 8x32 broadcast tile:   %.1f GFLOP/s\n", p8);
    std::printf("max relative difference between the layouts' results: %.2e\n", max_rel);
    return max_rel < 1e-3 ? 0 : 1;
}
