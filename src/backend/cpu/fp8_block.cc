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

// How far ahead of each weight row the decode kernel prefetches (past the row's end it touches the
// next rows, which the next tiles read).
constexpr int64_t kFp8PrefetchBytes = 512;

int64_t scale_cols(const CpuMatrix& w) {
    return (w.k + w.block_k - 1) / w.block_k;
}

// ---- the vector conversion ------------------------------------------------------------------
//
// The 128 magnitudes (code & 0x7f) as bf16 bit patterns, built once from the reference decoder
// (every e4m3 value is exactly a bf16 value; 0x7f is NaN, 0x7fc0): a 256-byte table in four
// registers, looked up with two VPERMI2W (64 entries each, index bits 0-5) and bit 6 choosing
// between them; the sign is bit 7 moved to bit 15. Subnormal codes come out as bf16 normals,
// which VDPBF16PS does not flush (it flushes bf16 subnormals).
struct Bf16Table {
    alignas(64) uint16_t v[128];
    Bf16Table() {
        for (int i = 0; i < 128; ++i) v[i] = fp8_e4m3_to_bf16_bits(static_cast<uint8_t>(i));
    }
};
const Bf16Table& bf16_table() {
    static const Bf16Table t;
    return t;
}

struct E4m3Lut {
    __m512i t0, t1, t2, t3;
};

MOE_AVX512_TARGET inline E4m3Lut load_lut() {
    const uint16_t* t = bf16_table().v;
    return {_mm512_load_si512(t), _mm512_load_si512(t + 32), _mm512_load_si512(t + 64), _mm512_load_si512(t + 96)};
}

MOE_AVX512_TARGET inline __m512i e4m3x32_to_bf16(__m256i bytes, const E4m3Lut& lut) {
    const __m512i v = _mm512_cvtepu8_epi16(bytes);
    const __m512i lo = _mm512_permutex2var_epi16(lut.t0, v, lut.t1);  // codes 0-63 (index bits 0-5)
    const __m512i hi = _mm512_permutex2var_epi16(lut.t2, v, lut.t3);  // codes 64-127
    const __m512i mag = _mm512_mask_blend_epi16(_mm512_test_epi16_mask(v, _mm512_set1_epi16(0x40)), lo, hi);
    // mag | (v << 8 & 0x8000): the sign, bit 7 of the code, to bf16's bit 15.
    return _mm512_ternarylogic_epi32(mag, _mm512_slli_epi16(v, 8), _mm512_set1_epi16(static_cast<int16_t>(0x8000)),
                                     0xf8);
}

// n in [0, 32] codes from p (nothing past p + n is read), as 32 bf16 (zeros past n). NOTE: a
// full chunk takes a plain load: masked loads do not train the hardware prefetchers (measured on
// the EPYC: weights streamed from L3/DRAM at ~1 GB/s with masked loads throughout).
MOE_AVX512_TARGET inline __m512i load_e4m3x32(const uint8_t* p, int64_t n, const E4m3Lut& lut) {
    if (n >= 32) return e4m3x32_to_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), lut);
    return e4m3x32_to_bf16(_mm256_maskz_loadu_epi8(static_cast<__mmask32>((1u << n) - 1u), p), lut);
}

MOE_AVX512_TARGET void convert_row(const uint8_t* src, int64_t n, uint16_t* dst) {
    const E4m3Lut lut = load_lut();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) _mm512_storeu_si512(dst + i, load_e4m3x32(src + i, 32, lut));
    if (i < n)
        _mm512_mask_storeu_epi16(dst + i, static_cast<__mmask32>((1u << (n - i)) - 1u),
                                 load_e4m3x32(src + i, n - i, lut));
}

// ---- the tile: decode from the bytes, prefill from a bf16 panel ---------------------------
//
// M rows of x against the 4 weight rows starting at c (entries past `cols` repeat the last
// valid row; their sums are dropped). Per k-block: per lane a VDPBF16PS chain over the block's
// chunks of 32 (the last chunk of k masked), the shuffle-tree sum, then fma with the block's
// scale. kPanel: the weight rows come already expanded to bf16 (panel rows of stride ldp, the
// same values the conversion gives, zeros included), else from the e4m3 bytes, converted in
// registers. Both give bitwise the same sums.
template <int M, bool kPanel>
MOE_BF16_TARGET void fp8_tile(const uint16_t* x, int64_t ldx, const CpuMatrix& w, const uint16_t* panel, int64_t ldp,
                              int64_t c, int64_t cols, float* y, int64_t ldy, bool accumulate) {
    const auto* values = static_cast<const uint8_t*>(w.data);
    const auto* scales = static_cast<const float*>(w.scales);
    const int64_t k = w.k, bk = w.block_k, sk = scale_cols(w);
    const uint8_t* wr[4];
    const uint16_t* pr[4];
    const float* sr[4];
    for (int j = 0; j < 4; ++j) {
        const int64_t cj = std::min<int64_t>(j, cols - 1);
        wr[j] = values + (c + cj) * k;
        pr[j] = panel + cj * ldp;
        sr[j] = scales + ((c + cj) / w.block_n) * sk;
    }
    float total[M][4] = {};
    const E4m3Lut lut = load_lut();
    for (int64_t b = 0; b < sk; ++b) {
        const int64_t k0 = b * bk, k1 = std::min(k, k0 + bk);
        __m512 acc[4][M];
        for (int j = 0; j < 4; ++j)
            for (int m = 0; m < M; ++m) acc[j][m] = _mm512_setzero_ps();
        for (int64_t kk = k0; kk < k1; kk += 32) {
            const int64_t n = std::min<int64_t>(32, k1 - kk);
            for (int j = 0; j < 4; ++j) {
                __m512bh wv;
                if constexpr (kPanel) {
                    wv = (__m512bh)(n >= 32
                                        ? _mm512_loadu_si512(pr[j] + kk)
                                        : _mm512_maskz_loadu_epi16(static_cast<__mmask32>((1u << n) - 1u), pr[j] + kk));
                } else {
                    // The 4 rows are 4 streams; prefetching ahead keeps DRAM busy for all of them.
                    _mm_prefetch(reinterpret_cast<const char*>(wr[j] + kk) + kFp8PrefetchBytes, _MM_HINT_T0);
                    wv = (__m512bh)load_e4m3x32(wr[j] + kk, n, lut);
                }
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

// Decode: the bytes stream once, converted in registers, against all rows.
void direct_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                  float* y, int64_t ldy, bool accumulate) {
    for (int64_t c = n_begin; c < n_end; c += 4) {
        const int64_t cols = std::min<int64_t>(4, n_end - c);
        for (int64_t r = 0; r < rows; r += 4)
            with_rows<4>(std::min<int64_t>(4, rows - r), [&](auto m) {
                fp8_tile<decltype(m)::value, false>(x + r * ldx, ldx, w, nullptr, 0, c, cols,
                                                    y + r * ldy + (c - n_begin), ldy, accumulate);
            });
    }
}

// Prefill: per group of kFp8PanelCols weight rows, the rows expanded once to a bf16 panel
// ([cols][k], in the thread's cache), which every group of 4 rows of x then reads.
void panel_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                 float* y, int64_t ldy, bool accumulate) {
    const auto* values = static_cast<const uint8_t*>(w.data);
    const int64_t k = w.k;
    thread_local std::vector<uint16_t> panel;
    if (panel.size() < static_cast<size_t>(kFp8PanelCols * k)) panel.resize(static_cast<size_t>(kFp8PanelCols * k));
    for (int64_t c0 = n_begin; c0 < n_end; c0 += kFp8PanelCols) {
        const int64_t cols = std::min(kFp8PanelCols, n_end - c0);
        // The group's rows are adjacent in memory: one sequential stream.
        for (int64_t j = 0; j < cols; ++j) convert_row(values + (c0 + j) * k, k, panel.data() + j * k);
        for (int64_t r = 0; r < rows; r += 4)
            for (int64_t c = c0; c < c0 + cols; c += 4)
                with_rows<4>(std::min<int64_t>(4, rows - r), [&](auto m) {
                    fp8_tile<decltype(m)::value, true>(x + r * ldx, ldx, w, panel.data() + (c - c0) * k, k, c,
                                                       std::min<int64_t>(4, c0 + cols - c), y + r * ldy + (c - n_begin),
                                                       ldy, accumulate);
                });
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
