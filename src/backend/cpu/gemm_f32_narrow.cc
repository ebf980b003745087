#include "backend/cpu/gemm_f32_narrow.h"

#include <algorithm>

#include "backend/cpu/avx512_math.h"
#include "backend/cpu/cpu_features.h"

namespace moe::cpu {
namespace {

// R rows of x against 4 weight rows (entries past `cols` repeat the last valid one).
template <int R>
MOE_AVX512_TARGET void tile(const GemmProblem& p, int64_t r0, int64_t n0) {
    const int64_t cols = std::min<int64_t>(4, p.n - n0);
    const auto* w = static_cast<const float*>(p.w.data);
    const float* wr[4];
    for (int64_t j = 0; j < 4; ++j) wr[j] = w + (n0 + std::min<int64_t>(j, cols - 1)) * p.k;
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r)
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < p.k; kk += 16) {
        const __mmask16 m = lanes16(p.k - kk);
        __m512 wv[4];
        for (int j = 0; j < 4; ++j) wv[j] = _mm512_maskz_loadu_ps(m, wr[j] + kk);
        for (int r = 0; r < R; ++r) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, p.x + (r0 + r) * p.ldx + kk);
            for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_fmadd_ps(xv, wv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < R; ++r) {
        alignas(16) float s[4];
        _mm_store_ps(s, hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]));
        float* y = p.y + (r0 + r) * p.ldy + n0;
        for (int64_t j = 0; j < cols; ++j) {
            float v = s[j];
            if (p.bias != nullptr) v += p.bias[n0 + j];
            y[j] = p.accumulate ? y[j] + v : v;
        }
    }
}

// Rows [r_begin, r_end) against columns [n_begin, n_end) (n_begin a multiple of 4): each group
// of 4 weight rows stays in cache while the row blocks pass.
void block(const GemmProblem& p, int64_t r_begin, int64_t r_end, int64_t n_begin, int64_t n_end) {
    for (int64_t n0 = n_begin; n0 < n_end; n0 += 4) {
        int64_t r = r_begin;
        for (; r + 4 <= r_end; r += 4) tile<4>(p, r, n0);
        for (; r < r_end; ++r) tile<1>(p, r, n0);
    }
}

}  // namespace

bool f32_narrow_applies(const GemmProblem& p) {
    return p.w.dtype == DType::kF32 && !p.w.panels() && p.n <= kF32NarrowMaxCols && p.k > 0 && cpu_features().avx512f;
}

void f32_narrow_gemm(const GemmProblem& p, ThreadPool* pool) {
    const int64_t blocks = (p.m + 3) / 4;
    const int64_t groups = (p.n + 3) / 4;
    const int threads = pool != nullptr ? pool->size() : 1;
    // NOTE: a product this small (moe-s's router at decode: 32 x 1024) costs less on the calling
    // thread than a job of the pool.
    constexpr int64_t kMinJobMacs = int64_t{1} << 17;
    if (p.m * p.n * p.k < kMinJobMacs) {
        block(p, 0, p.m, 0, p.n);
    } else if (threads > 1 && blocks < 4 * threads && groups >= 2 * threads) {
        // A decode step's router (16 rows x 128 experts x 2048): columns split over the threads,
        // so each reads only its share of the weights (a row split had every thread stream all
        // of them: 149 us a call on qwen3's shape).
        pool->parallel_for(groups, [&](int64_t g0, int64_t g1) { block(p, 0, p.m, g0 * 4, std::min(p.n, g1 * 4)); });
    } else if (pool != nullptr && blocks > 1) {
        // Rows in blocks of 4 split over the threads (a block is 4 rows against every column).
        pool->parallel_for(blocks, [&](int64_t b0, int64_t b1) { block(p, b0 * 4, std::min(p.m, b1 * 4), 0, p.n); });
    } else {
        block(p, 0, p.m, 0, p.n);
    }
}

}  // namespace moe::cpu
