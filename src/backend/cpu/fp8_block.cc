#include "backend/cpu/fp8_block.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/avx512_math.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/cpu_features.h"
#include "moe/dtype.h"

namespace moe::cpu {
namespace {

// All 256 codes as f32 (fp8_e4m3_to_f32, the reference decoder).
struct E4m3Table {
    float f[256];
    E4m3Table() {
        for (int i = 0; i < 256; ++i) f[i] = fp8_e4m3_to_f32(static_cast<uint8_t>(i));
    }
};
const E4m3Table& e4m3_table() {
    static const E4m3Table t;
    return t;
}

int64_t scale_cols(const CpuMatrix& w) {
    return (w.k + w.block_k - 1) / w.block_k;
}

// ---- the vector conversion ------------------------------------------------------------------
//
// Per 16-bit lane, code v = s eeee mmm:
//   e > 0:  bf16 = s | (e + 120) << 7 | m << 4          (bias 7 -> 127; exact)
//   e = 0:  m * 2^-9 from an 8-entry table (bf16 normals; VDPBF16PS would flush bf16 subnormals)
//   0x7f:   NaN (0x7fc0), with the sign
MOE_AVX512_TARGET inline __m512i e4m3x32_to_bf16(__m256i bytes) {
    const __m512i v = _mm512_cvtepu8_epi16(bytes);
    const __m512i mag7 = _mm512_and_si512(v, _mm512_set1_epi16(0x7f));
    const __m512i normal = _mm512_add_epi16(_mm512_slli_epi16(mag7, 4), _mm512_set1_epi16(120 << 7));
    // m * 2^-9 for m = 0..7: 0, 2^-9, 2^-8, 1.5 * 2^-8, 2^-7, 1.25 * 2^-7, 1.5 * 2^-7, 1.75 * 2^-7.
    const __m512i table = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                           0x3c60, 0x3c40, 0x3c20, 0x3c00, 0x3bc0, 0x3b80, 0x3b00, 0);
    const __mmask32 sub = _mm512_cmplt_epu16_mask(mag7, _mm512_set1_epi16(8));
    __m512i mag = _mm512_mask_blend_epi16(sub, normal, _mm512_permutexvar_epi16(mag7, table));
    const __mmask32 nan = _mm512_cmpeq_epi16_mask(mag7, _mm512_set1_epi16(0x7f));
    mag = _mm512_mask_mov_epi16(mag, nan, _mm512_set1_epi16(0x7fc0));
    return _mm512_or_si512(mag, _mm512_slli_epi16(_mm512_and_si512(v, _mm512_set1_epi16(0x80)), 8));
}

// n in [0, 32] codes from p (masked: nothing past p + n is read), as 32 bf16 (zeros past n).
MOE_AVX512_TARGET inline __m512i load_e4m3x32(const uint8_t* p, int64_t n) {
    const __mmask32 mask = n >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << n) - 1u);
    return e4m3x32_to_bf16(_mm256_maskz_loadu_epi8(mask, p));
}

MOE_AVX512_TARGET void convert_row(const uint8_t* src, int64_t n, uint16_t* dst) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) _mm512_storeu_si512(dst + i, load_e4m3x32(src + i, 32));
    if (i < n)
        _mm512_mask_storeu_epi16(dst + i, static_cast<__mmask32>((1u << (n - i)) - 1u), load_e4m3x32(src + i, n - i));
}

// ---- decode: bytes converted in registers --------------------------------------------------
//
// M rows of x against the 4 weight rows starting at c (entries past `cols` repeat the last
// valid row; their sums are dropped). Per k-block: the tiles' VDPBF16PS chain per lane (full
// chunks of 32, then a masked tail at k's end), the shuffle-tree sum, then fma with the scale.
template <int M>
MOE_BF16_TARGET void direct_tile(const uint16_t* x, int64_t ldx, const CpuMatrix& w, int64_t c, int64_t cols, float* y,
                                 int64_t ldy, bool accumulate) {
    const auto* values = static_cast<const uint8_t*>(w.data);
    const auto* scales = static_cast<const float*>(w.scales);
    const int64_t k = w.k, bk = w.block_k, sk = scale_cols(w);
    const uint8_t* wr[4];
    const float* sr[4];
    for (int j = 0; j < 4; ++j) {
        const int64_t cj = c + std::min<int64_t>(j, cols - 1);
        wr[j] = values + cj * k;
        sr[j] = scales + (cj / w.block_n) * sk;
    }
    float total[M][4] = {};
    for (int64_t b = 0; b < sk; ++b) {
        const int64_t k0 = b * bk, k1 = std::min(k, k0 + bk);
        __m512 acc[4][M];
        for (int j = 0; j < 4; ++j)
            for (int m = 0; m < M; ++m) acc[j][m] = _mm512_setzero_ps();
        for (int64_t kk = k0; kk < k1; kk += 32) {
            const int64_t n = std::min<int64_t>(32, k1 - kk);
            for (int j = 0; j < 4; ++j) {
                const __m512bh wv = (__m512bh)load_e4m3x32(wr[j] + kk, n);
                for (int m = 0; m < M; ++m)
                    acc[j][m] = _mm512_dpbf16_ps(acc[j][m], (__m512bh)_mm512_loadu_si512(x + m * ldx + kk), wv);
            }
        }
        for (int m = 0; m < M; ++m) {
            alignas(16) float s[4];
            _mm_store_ps(s, hsum4(acc[0][m], acc[1][m], acc[2][m], acc[3][m]));
            for (int j = 0; j < 4; ++j) total[m][j] = std::fma(sr[j][b], s[j], total[m][j]);
        }
    }
    for (int m = 0; m < M; ++m)
        for (int64_t j = 0; j < cols; ++j) {
            float& out = y[m * ldy + j];
            out = accumulate ? out + total[m][j] : total[m][j];
        }
}

void direct_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                  float* y, int64_t ldy, bool accumulate) {
    for (int64_t c = n_begin; c < n_end; c += 4) {
        const int64_t cols = std::min<int64_t>(4, n_end - c);
        for (int64_t r = 0; r < rows; r += 4)
            with_rows<4>(std::min<int64_t>(4, rows - r), [&](auto m) {
                direct_tile<decltype(m)::value>(x + r * ldx, ldx, w, c, cols, y + r * ldy + (c - n_begin), ldy,
                                                accumulate);
            });
    }
}

// ---- prefill: bf16 panels per k-block, the existing tiles ----------------------------------
//
// Per group of kFp8PanelCols weight rows, in the thread's scratch:
//   panel  [sk][cols][len_b]  bf16 (block b's columns, row stride len_b = its length)
//   sums   [rows][cols]       f32, one k-block's tile sums
//   total  [rows][cols]       f32, the scaled sums so far
void panel_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                 float* y, int64_t ldy, bool accumulate) {
    const auto* values = static_cast<const uint8_t*>(w.data);
    const auto* scales = static_cast<const float*>(w.scales);
    const int64_t k = w.k, bk = w.block_k, sk = scale_cols(w);
    thread_local std::vector<uint16_t> panel;
    thread_local std::vector<float> sums, total;
    if (panel.size() < static_cast<size_t>(kFp8PanelCols * k)) panel.resize(static_cast<size_t>(kFp8PanelCols * k));
    if (sums.size() < static_cast<size_t>(rows * kFp8PanelCols)) {
        sums.resize(static_cast<size_t>(rows * kFp8PanelCols));
        total.resize(static_cast<size_t>(rows * kFp8PanelCols));
    }
    for (int64_t c0 = n_begin; c0 < n_end; c0 += kFp8PanelCols) {
        const int64_t cols = std::min(kFp8PanelCols, n_end - c0);
        for (int64_t b = 0; b < sk; ++b) {
            const int64_t k0 = b * bk, len = std::min(k, k0 + bk) - k0;
            for (int64_t j = 0; j < cols; ++j)
                convert_row(values + (c0 + j) * k + k0, len, panel.data() + k0 * cols + j * len);
        }
        std::fill(total.begin(), total.begin() + rows * cols, 0.0f);
        for (int64_t b = 0; b < sk; ++b) {
            const int64_t k0 = b * bk, len = std::min(k, k0 + bk) - k0;
            // NOTE: x + k0 keeps the tiles' padding rule: bk is a multiple of 32, so only the
            // last block has a tail, and x is zero padded past k.
            bf16_dot_block(x + k0, ldx, rows, panel.data() + k0 * cols, len, 0, cols, sums.data(), cols, false);
            for (int64_t j = 0; j < cols; ++j) {
                const float s = scales[((c0 + j) / w.block_n) * sk + b];
                for (int64_t r = 0; r < rows; ++r)
                    total[r * cols + j] = std::fma(s, sums[r * cols + j], total[r * cols + j]);
            }
        }
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j) {
                float& out = y[r * ldy + (c0 - n_begin) + j];
                out = accumulate ? out + total[r * cols + j] : total[r * cols + j];
            }
    }
}

// ---- scalar: any block_k, any CPU ------------------------------------------------------------
template <typename XAt>
void scalar_block(XAt x_at, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end, float* y, int64_t ldy,
                  bool accumulate) {
    const float* lut = e4m3_table().f;
    const auto* values = static_cast<const uint8_t*>(w.data);
    const auto* scales = static_cast<const float*>(w.scales);
    const int64_t k = w.k, bk = w.block_k, sk = scale_cols(w);
    for (int64_t c = n_begin; c < n_end; ++c) {
        const uint8_t* wr = values + c * k;
        const float* sr = scales + (c / w.block_n) * sk;
        for (int64_t r = 0; r < rows; ++r) {
            float total = 0.0f;
            for (int64_t b = 0; b < sk; ++b) {
                const int64_t k0 = b * bk, k1 = std::min(k, k0 + bk);
                float s = 0.0f;
                for (int64_t j = k0; j < k1; ++j) s += x_at(r, j) * lut[wr[j]];
                total = std::fma(sr[b], s, total);
            }
            float& out = y[r * ldy + (c - n_begin)];
            out = accumulate ? out + total : total;
        }
    }
}

}  // namespace

uint16_t fp8_e4m3_to_bf16_bits(uint8_t v) {
    const float f = fp8_e4m3_to_f32(v);
    if (std::isnan(f)) return static_cast<uint16_t>((v & 0x80) << 8 | 0x7fc0);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof(bits));
    return static_cast<uint16_t>(bits >> 16);  // exact: e4m3 has 3 mantissa bits
}

void fp8_e4m3_to_bf16_avx512(const uint8_t* src, int64_t n, uint16_t* dst) {
    convert_row(src, n, dst);
}

void fp8_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
               float* y, int64_t ldy, bool accumulate) {
    if (w.block_k % 32 != 0 || !bf16_tiles_available()) {
        scalar_block([&](int64_t r, int64_t j) { return bf16_to_f32(x[r * ldx + j]); }, rows, w, n_begin, n_end, y, ldy,
                     accumulate);
        return;
    }
    if (rows <= kFp8DirectRows) {
        direct_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate);
        return;
    }
    panel_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate);
}

Status fp8_gemm_f32(const GemmProblem& p, ThreadPool* pool) {
    auto body = [&](int64_t c0, int64_t c1) {
        scalar_block([&](int64_t r, int64_t j) { return p.x[r * p.ldx + j]; }, p.m, p.w, c0, c1, p.y + c0, p.ldy,
                     p.accumulate);
        if (p.bias != nullptr)
            for (int64_t r = 0; r < p.m; ++r)
                for (int64_t c = c0; c < c1; ++c) p.y[r * p.ldy + c] += p.bias[c];
    };
    if (pool != nullptr && pool->size() > 1)
        pool->parallel_for(p.n, body);
    else
        body(0, p.n);
    return ok_status();
}

StatusOr<Fp8Prepared> prepare_fp8_weight(Backend& backend, const QuantizedTensor& q) {
    const size_t value_bytes = q.values.nbytes(), scale_offset = (value_bytes + 63) / 64 * 64;
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(backend, scale_offset + q.scales.nbytes()));
    auto* base = static_cast<uint8_t*>(buf.data());
    std::memcpy(base, q.values.data, value_bytes);
    std::memcpy(base + scale_offset, q.scales.data, q.scales.nbytes());
    Fp8Prepared out;
    out.matrix = CpuMatrix{.layout = CpuLayout::kFp8Block,
                           .dtype = DType::kF8E4M3,
                           .n = q.n,
                           .k = q.k,
                           .data = base,
                           .scales = base + scale_offset,
                           .block_n = q.block_n,
                           .block_k = q.block_k};
    out.buffer = std::move(buf);
    return out;
}

}  // namespace moe::cpu
