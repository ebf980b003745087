// Small AVX-512 math helpers shared by the CPU kernels. Every function is compiled for
// AVX-512F only (target attribute), so callers must check cpu_features().avx512f first.
#pragma once

#include <cstdint>
#include <type_traits>

// GCC 12 warns inside its own AVX-512 headers about intentionally undefined vectors; the
// warning is a known false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#define MOE_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
// Kernels using VDPBF16PS; callers must check cpu_features().avx512_bf16.
#define MOE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

namespace moe::cpu {

// exp(x) in f32: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by Taylor to degree 6 (relative error
// ~2e-7), times 2^n. Inputs are clamped to [-87, 88]: exp(-inf) gives ~1.6e-38, not 0; callers
// that need an exact 0 for masked lanes mask the result.
MOE_AVX512_TARGET inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2, high bits
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);  // ln2, low bits
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// Lane sums of a, b, c, d as [sum a, sum b, sum c, sum d]: a shuffle tree, the same order of
// additions for each of the four.
MOE_AVX512_TARGET inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    // Per lane: [a, b, c, d] partial sums.
    const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 s2 = _mm256_add_ps(_mm512_castps512_ps256(s), _mm512_extractf32x8_ps(s, 1));
    return _mm_add_ps(_mm256_castps256_ps128(s2), _mm256_extractf128_ps(s2, 1));
}

// Mask of the first n lanes (n clamped to [0, 16]).
inline __mmask16 lanes16(long n) {
    return n >= 16  ? static_cast<__mmask16>(0xffff)
           : n <= 0 ? static_cast<__mmask16>(0)
                    : static_cast<__mmask16>((1u << n) - 1u);
}

// Calls fn(std::integral_constant<int, R>) for R = rows, 1 <= rows <= kMax (nothing otherwise):
// a run-time row count to a tile's compile-time one.
template <int kMax, int R = 1, typename Fn>
void with_rows(int64_t rows, Fn&& fn) {
    if constexpr (R <= kMax) {
        if (rows == R) {
            fn(std::integral_constant<int, R>{});
        } else {
            with_rows<kMax, R + 1>(rows, fn);
        }
    }
}

}  // namespace moe::cpu
