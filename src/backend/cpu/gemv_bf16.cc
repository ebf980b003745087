#include "backend/cpu/gemv_bf16.h"

// GCC 12 warns inside its own AVX-512 headers (_mm512_reduce_add_ps) about an intentionally
// undefined vector; the warning is a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_features.h"

namespace moe::cpu {
namespace {

constexpr int64_t kColsPerIter = 8;  // weight rows streamed together (a multiple of every C below)

// Output columns [n_begin, n_end) for all M rows. xb: M rows of bf16 x, each k_pad long (zero
// padded to a multiple of 32).
// C weight rows in flight: 8 for M <= 2, 4 above (M * C accumulators must fit in 32 registers).
template <int M, int C>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void gemv_block(const GemmProblem& p, const uint16_t* xb,
                                                                       int64_t k_pad, int64_t n_begin, int64_t n_end) {
    const auto* w = static_cast<const uint16_t*>(p.w);
    const int64_t k = p.k;
    const int64_t k_full = k / 32 * 32;
    const __mmask32 tail_mask = static_cast<__mmask32>((k - k_full) >= 32 ? ~0u : ((1u << (k - k_full)) - 1u));
    int64_t n = n_begin;
    for (; n < n_end; n += C) {
        const int64_t cols = std::min<int64_t>(C, n_end - n);
        __m512 acc[M][C];
        for (int m = 0; m < M; ++m)
            for (int j = 0; j < C; ++j) acc[m][j] = _mm512_setzero_ps();
        const uint16_t* rows[C];
        for (int j = 0; j < C; ++j) rows[j] = w + (n + std::min<int64_t>(j, cols - 1)) * k;
        for (int64_t kk = 0; kk < k_full; kk += 32) {
            __m512i wv[C];
            for (int j = 0; j < C; ++j) wv[j] = _mm512_loadu_si512(rows[j] + kk);
            for (int m = 0; m < M; ++m) {
                const __m512i xv = _mm512_loadu_si512(xb + m * k_pad + kk);
                for (int j = 0; j < C; ++j)
                    acc[m][j] = _mm512_dpbf16_ps(acc[m][j], (__m512bh)xv, (__m512bh)wv[j]);
            }
        }
        if (k_full < k) {
            __m512i wv[C];
            for (int j = 0; j < C; ++j) wv[j] = _mm512_maskz_loadu_epi16(tail_mask, rows[j] + k_full);
            for (int m = 0; m < M; ++m) {
                const __m512i xv = _mm512_loadu_si512(xb + m * k_pad + k_full);
                for (int j = 0; j < C; ++j)
                    acc[m][j] = _mm512_dpbf16_ps(acc[m][j], (__m512bh)xv, (__m512bh)wv[j]);
            }
        }
        for (int m = 0; m < M; ++m) {
            float* y = p.y + m * p.ldy + n;
            for (int64_t j = 0; j < cols; ++j) {
                float v = _mm512_reduce_add_ps(acc[m][j]);
                if (p.bias != nullptr) v += p.bias[n + j];
                y[j] = p.accumulate ? y[j] + v : v;
            }
        }
    }
}

}  // namespace

bool gemv_bf16_applies(const GemmProblem& p) {
    return p.w_dtype == DType::kBF16 && p.m >= 1 && p.m <= kGemvMaxRows && p.k > 0 && cpu_features().avx512_bf16;
}

void gemv_bf16(const GemmProblem& p, ThreadPool* pool) {
    const int64_t k_pad = (p.k + 31) / 32 * 32;
    // NOTE: thread_local scratch: the backend is used by one thread at a time, and this keeps
    // the decode path free of per-call allocation once warmed up.
    thread_local std::vector<uint16_t> xb;
    xb.assign(static_cast<size_t>(p.m * k_pad), 0);
    for (int64_t m = 0; m < p.m; ++m)
        for (int64_t i = 0; i < p.k; ++i) xb[static_cast<size_t>(m * k_pad + i)] = f32_to_bf16(p.x[m * p.ldx + i]);
    // NOTE: a plain pointer: a lambda naming the thread_local itself would see the worker
    // thread's own (empty) instance.
    const uint16_t* x_bf16 = xb.data();
    // Column blocks of kColsPerIter, split evenly over the pool's threads.
    const int64_t groups = (p.n + kColsPerIter - 1) / kColsPerIter;
    auto body = [&](int64_t g_begin, int64_t g_end) {
        const int64_t n0 = g_begin * kColsPerIter, n1 = std::min(p.n, g_end * kColsPerIter);
        switch (p.m) {
            case 1: gemv_block<1, 8>(p, x_bf16, k_pad, n0, n1); break;
            case 2: gemv_block<2, 8>(p, x_bf16, k_pad, n0, n1); break;
            case 3: gemv_block<3, 4>(p, x_bf16, k_pad, n0, n1); break;
            default: gemv_block<4, 4>(p, x_bf16, k_pad, n0, n1); break;
        }
    };
    // NOTE: OpenMP, not the pool: a decode step runs hundreds of these small calls, and OpenMP's
    // threads (kept warm by oneDNN, which uses them too) start far faster than the pool's
    // condition-variable wake-up. The static split keeps results deterministic.
    const int threads = pool != nullptr ? static_cast<int>(std::min<int64_t>(pool->size(), groups)) : 1;
    if (threads > 1) {
#pragma omp parallel num_threads(threads)
        {
            const int t = omp_get_thread_num();
            const int nt = omp_get_num_threads();
            body(groups * t / nt, groups * (t + 1) / nt);
        }
    } else {
        body(0, groups);
    }
}

}  // namespace moe::cpu
