// The VDPBF16PS compute peak of this CPU, measured: a loop of 16 independent accumulator chains
// (enough to cover the instruction's latency at two issues per cycle, as on Zen 5), each
// instruction 16 lanes x 2 bf16 products = 64 FLOPs. Run on every thread of a pool at once, so
// the figure includes what sharing the cores (SMT siblings, a loaded host) leaves; the prefill
// GEMM's GFLOP/s divided by it, in the same run, is the kernel's fraction of the peak.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "core/thread_pool.h"

namespace moe::bench {

#define MOE_PEAK_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

// FLOPs of `iters` passes of 16 VDPBF16PS on zmm.
MOE_PEAK_TARGET inline double vdpbf16ps_loop(int64_t iters) {
    __m512 acc[16];
    for (auto& v : acc) v = _mm512_setzero_ps();
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
    __m512bh b = (__m512bh)_mm512_set1_epi16(0x3c00);        // bf16 2^-7
    for (int64_t i = 0; i < iters; ++i) {
        // NOTE: the empty asm keeps b opaque, so the compiler cannot fold the chains.
        asm volatile("" : "+v"(b));
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
    }
    __m512 s = acc[0];
    for (int j = 1; j < 16; ++j) s = _mm512_add_ps(s, acc[j]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return static_cast<double>(iters) * 16 * 64;
}

// Per-thread GFLOP/s while every thread of `pool` runs the loop at once: the median over the
// threads of the best of `repeats` timed passes of `iters` each. Returns 0 without AVX512-BF16.
inline double vdpbf16ps_peak_gflops_per_thread(ThreadPool& pool, bool have_bf16, int repeats = 5,
                                               int64_t iters = 2'000'000) {
    if (!have_bf16) return 0;
    const int threads = pool.size();
    std::vector<double> best(static_cast<size_t>(threads), 0);
    for (int r = 0; r < repeats; ++r) {
        pool.parallel_tasks(threads, [&](int64_t t) {
            const auto t0 = std::chrono::steady_clock::now();
            const double flops = vdpbf16ps_loop(iters);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best[static_cast<size_t>(t)] = std::max(best[static_cast<size_t>(t)], flops / s / 1e9);
        });
    }
    std::sort(best.begin(), best.end());
    return best[best.size() / 2];
}

}  // namespace moe::bench
