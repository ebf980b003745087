// The read-bandwidth probe of moe_engine_bench (benchmarks/cpu_vs_llamacpp's roofline): threads
// summing slices of an f32 array from moeserve's allocator. Header only: each benchmarks/*.cc is
// its own executable.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <thread>
#include <vector>

#include "core/allocator.h"

namespace moe::bench {

__attribute__((target("avx512f"))) inline float sum_avx512(const float* p, size_t n) {
    // 8 independent accumulators: enough misses in flight per core to approach DRAM speed.
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
        a4 = _mm512_add_ps(a4, _mm512_load_ps(p + i + 64));
        a5 = _mm512_add_ps(a5, _mm512_load_ps(p + i + 80));
        a6 = _mm512_add_ps(a6, _mm512_load_ps(p + i + 96));
        a7 = _mm512_add_ps(a7, _mm512_load_ps(p + i + 112));
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                                                 _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))));
    for (; i < n; ++i) s += p[i];
    return s;
}

inline float sum_scalar(const float* p, size_t n) {
    float s[8] = {};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) s[k] += p[i + k];
    for (; i < n; ++i) s[0] += p[i];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

// Read GB/s of `passes` passes (after one warm-up pass) of `threads` threads each summing its
// slice of a fresh `bytes` array from the engine's allocator (2 MiB-aligned MADV_HUGEPAGE
// mappings, as moeserve's packed weights get, so that the probe is not held back by TLB misses
// the engine does not take). Empty on an allocation failure.
inline std::vector<double> bandwidth_passes(int threads, size_t bytes, int passes) {
    const size_t n = bytes / sizeof(float) / 1024 * 1024;
    auto mem = CpuAllocator::allocate(n * sizeof(float));
    if (!mem.ok()) return {};
    auto* data = static_cast<float*>(*mem);
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>(i & 1023) * 1e-3f;  // touch every page
    const bool avx512 = __builtin_cpu_supports("avx512f");
    std::vector<double> gbs;
    volatile float sink = 0;
    for (int pass = 0; pass < passes + 1; ++pass) {  // pass 0 warms up
        std::vector<float> part(static_cast<size_t>(threads));
        std::vector<std::thread> ts;
        const size_t chunk = n / static_cast<size_t>(threads) / 128 * 128;
        const auto t0 = std::chrono::steady_clock::now();
        for (int t = 0; t < threads; ++t) {
            ts.emplace_back([&, t] {
                const size_t b = chunk * static_cast<size_t>(t);
                const size_t len = t == threads - 1 ? n - b : chunk;
                part[static_cast<size_t>(t)] = avx512 ? sum_avx512(data + b, len) : sum_scalar(data + b, len);
            });
        }
        for (auto& t : ts) t.join();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        for (float p : part) sink = sink + p;
        if (pass > 0) gbs.push_back(static_cast<double>(n * sizeof(float)) / s / 1e9);
    }
    CpuAllocator::deallocate(data);
    return gbs;
}

inline double median_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

inline const char* probe_kernel() {
    return __builtin_cpu_supports("avx512f") ? "avx512 f32 sum, 8 accumulators per thread"
                                             : "scalar f32 sum, 8 accumulators";
}

}  // namespace moe::bench
