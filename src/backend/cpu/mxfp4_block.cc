#include "backend/cpu/mxfp4_block.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

// GCC 12 flags the undefined pass-through vectors inside its own AVX-512 extract intrinsics
// (hsum4, _mm512_reduce_add_ps) once inlined here; a known false positive.
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "backend/cpu/avx512_math.h"
#include "backend/cpu/bf16_matmul.h"
#include "backend/cpu/bf16_tiles.h"
#include "backend/cpu/cpu_features.h"

namespace moe::cpu {
namespace {

constexpr int64_t kBlockK = 32;      // weights per block (one scale)
constexpr int64_t kBlockBytes = 16;  // two e2m1 per byte
// Columns per chunk of a product split over the pool.
constexpr int64_t kChunkCols = 64;
// Bytes of bf16 weights one expansion slice may take (per thread, L2-resident).
constexpr int64_t kExpandSliceBytes = 256 * 1024;

// Per e8m0 scale s: the 16 e2m1 codes' values times 2^(s - 127), as bf16 (twice: words 16-31
// repeat 0-15, so VPERMW may ignore index bit 4) and as f32. Exact: an e2m1 value has two
// significant bits, which bf16 keeps, subnormals included; non-finite entries (s >= 253 with
// large codes, s = 255) exist in the table but never in a prepared matrix.
struct Tables {
    alignas(64) uint16_t bf16[256][32];
    alignas(64) float f32[256][16];
};

const Tables& tables() {
    static const Tables* t = [] {
        auto* tb = new Tables;
        for (int s = 0; s < 256; ++s)
            for (int i = 0; i < 16; ++i) {
                const float v =
                    s == 255 ? std::nanf("") : std::ldexp(fp4_e2m1_to_f32(static_cast<uint8_t>(i)), s - 127);
                tb->f32[s][i] = v;
                uint32_t bits;
                std::memcpy(&bits, &v, sizeof(bits));
                tb->bf16[s][i] = tb->bf16[s][i + 16] = static_cast<uint16_t>(bits >> 16);  // low half is zero
            }
        return tb;
    }();
    return *t;
}

const uint8_t* values_of(const CpuMatrix& w, int64_t c) {
    return static_cast<const uint8_t*>(w.data) + c * (w.k / kBlockK) * kBlockBytes;
}
const uint8_t* scales_of(const CpuMatrix& w, int64_t c) {
    return static_cast<const uint8_t*>(w.scales) + c * (w.k / kBlockK);
}

// One block's 32 bf16 weights in k order (see mxfp4_block.h).
MOE_BF16_TARGET inline __m512i decode_bf16(const uint8_t* block, const uint16_t* table) {
    const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    const __m512i idx = _mm512_or_si512(d, _mm512_slli_epi32(d, 12));
    return _mm512_permutexvar_epi16(idx, _mm512_load_si512(table));
}

// M rows of x against 4 columns starting at c (columns past c + cols - 1 repeat the last valid
// one; their sums are dropped). Per output: VDPBF16PS per lane over the blocks in order, then
// hsum4: the order of bf16_dot_block's tiles.
template <int M>
MOE_BF16_TARGET void decode_tile(const uint16_t* x, int64_t ldx, const CpuMatrix& w, int64_t c, int64_t cols, float* y,
                                 int64_t ldy, bool accumulate) {
    const Tables& tb = tables();
    const int64_t kb = w.k / kBlockK;
    const uint8_t* v[4];
    const uint8_t* s[4];
    for (int j = 0; j < 4; ++j) {
        const int64_t cj = c + std::min<int64_t>(j, cols - 1);
        v[j] = values_of(w, cj);
        s[j] = scales_of(w, cj);
    }
    __m512 acc[4][M];
    for (int j = 0; j < 4; ++j)
        for (int m = 0; m < M; ++m) acc[j][m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < kb; ++b) {
        __m512i wv[4];
        for (int j = 0; j < 4; ++j) wv[j] = decode_bf16(v[j] + b * kBlockBytes, tb.bf16[s[j][b]]);
        for (int m = 0; m < M; ++m) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * ldx + b * kBlockK);
            for (int j = 0; j < 4; ++j) acc[j][m] = _mm512_dpbf16_ps(acc[j][m], xv, (__m512bh)wv[j]);
        }
    }
    for (int m = 0; m < M; ++m) {
        alignas(16) float out[4];
        _mm_store_ps(out, hsum4(acc[0][m], acc[1][m], acc[2][m], acc[3][m]));
        float* yr = y + m * ldy;
        for (int64_t j = 0; j < std::min<int64_t>(4, cols); ++j) yr[j] = accumulate ? yr[j] + out[j] : out[j];
    }
}

// Columns [c0, c1) as bf16 rows of w.k values: out[(c - c0) * w.k + kk].
MOE_BF16_TARGET void expand_bf16(const CpuMatrix& w, int64_t c0, int64_t c1, uint16_t* out) {
    const Tables& tb = tables();
    const int64_t kb = w.k / kBlockK;
    for (int64_t c = c0; c < c1; ++c) {
        const uint8_t* v = values_of(w, c);
        const uint8_t* s = scales_of(w, c);
        uint16_t* o = out + (c - c0) * w.k;
        for (int64_t b = 0; b < kb; ++b)
            _mm512_storeu_si512(o + b * kBlockK, decode_bf16(v + b * kBlockBytes, tb.bf16[s[b]]));
    }
}

// ---- the f32 route: x in f32, de-interleaved per row into even and odd k ----
//
// xe[r * kh + i] = x[r][2i], xo[r * kh + i] = x[r][2i + 1], kh = k / 2: block b's 16 low nibbles
// meet xe[16b .. 16b + 15], its high nibbles xo[16b ..].
void deinterleave(const float* x, int64_t ldx, int64_t rows, int64_t k, float* xe, float* xo) {
    const int64_t kh = k / 2;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < kh; ++i) {
            xe[r * kh + i] = x[r * ldx + 2 * i];
            xo[r * kh + i] = x[r * ldx + 2 * i + 1];
        }
}

// Up to 4 rows against column c: per row 16 f32 lanes over the blocks in order, then a fixed
// horizontal sum.
template <int M>
MOE_AVX512_TARGET void f32_col(const float* xe, const float* xo, int64_t kh, const CpuMatrix& w, int64_t c,
                               float* out) {
    const Tables& tb = tables();
    const int64_t kb = w.k / kBlockK;
    const uint8_t* v = values_of(w, c);
    const uint8_t* s = scales_of(w, c);
    __m512 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    for (int64_t b = 0; b < kb; ++b) {
        const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + b * kBlockBytes)));
        const __m512 t = _mm512_load_ps(tb.f32[s[b]]);
        const __m512 lo = _mm512_permutexvar_ps(d, t);  // VPERMPS reads index bits 0-3: the low nibble
        const __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), t);
        for (int m = 0; m < M; ++m) {
            acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xe + m * kh + b * 16), lo, acc[m]);
            acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xo + m * kh + b * 16), hi, acc[m]);
        }
    }
    for (int m = 0; m < M; ++m) out[m] = _mm512_reduce_add_ps(acc[m]);
}

void f32_cols_avx512(const float* xe, const float* xo, int64_t rows, const CpuMatrix& w, int64_t c0, int64_t c1,
                     float* y, int64_t ldy, bool accumulate) {
    const int64_t kh = w.k / 2;
    for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = 0; r < rows; r += 4) {
            float out[4];
            const int64_t n = std::min<int64_t>(4, rows - r);
            with_rows<4>(n, [&](auto m) { f32_col<decltype(m)::value>(xe + r * kh, xo + r * kh, kh, w, c, out); });
            for (int64_t i = 0; i < n; ++i) {
                float& dst = y[(r + i) * ldy + c];
                dst = accumulate ? dst + out[i] : out[i];
            }
        }
}

void f32_cols_scalar(const float* xe, const float* xo, int64_t rows, const CpuMatrix& w, int64_t c0, int64_t c1,
                     float* y, int64_t ldy, bool accumulate) {
    const Tables& tb = tables();
    const int64_t kh = w.k / 2, kb = w.k / kBlockK;
    for (int64_t c = c0; c < c1; ++c) {
        const uint8_t* v = values_of(w, c);
        const uint8_t* s = scales_of(w, c);
        for (int64_t r = 0; r < rows; ++r) {
            float acc = 0.0f;
            for (int64_t b = 0; b < kb; ++b) {
                const float* t = tb.f32[s[b]];
                for (int64_t j = 0; j < kBlockBytes; ++j) {
                    const uint8_t byte = v[b * kBlockBytes + j];
                    acc += xe[r * kh + b * 16 + j] * t[byte & 0xf];
                    acc += xo[r * kh + b * 16 + j] * t[byte >> 4];
                }
            }
            float& dst = y[r * ldy + c];
            dst = accumulate ? dst + acc : acc;
        }
    }
}

}  // namespace

void mxfp4_decode_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                        int64_t n_end, float* y, int64_t ldy, bool accumulate) {
    for (int64_t r = 0; r < rows; r += 4) {
        const int64_t m = std::min<int64_t>(4, rows - r);
        for (int64_t c = n_begin; c < n_end; c += 4) {
            const int64_t cols = std::min<int64_t>(4, n_end - c);
            float* yc = y + r * ldy + (c - n_begin);
            with_rows<4>(m, [&](auto mm) {
                decode_tile<decltype(mm)::value>(x + r * ldx, ldx, w, c, cols, yc, ldy, accumulate);
            });
        }
    }
}

void mxfp4_expand_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin,
                        int64_t n_end, float* y, int64_t ldy, bool accumulate) {
    const int64_t slice =
        std::max<int64_t>(kBf16ColGroup, kExpandSliceBytes / (w.k * static_cast<int64_t>(sizeof(uint16_t))) /
                                             kBf16ColGroup * kBf16ColGroup);
    // NOTE: per calling thread (pool workers each have their own); no allocation once warmed up.
    thread_local std::vector<uint16_t> scratch;
    const size_t need = static_cast<size_t>(std::min(slice, n_end - n_begin) * w.k);
    if (scratch.size() < need) scratch.resize(need);
    for (int64_t n0 = n_begin; n0 < n_end; n0 += slice) {
        const int64_t n1 = std::min(n_end, n0 + slice);
        expand_bf16(w, n0, n1, scratch.data());
        bf16_dot_block(x, ldx, rows, scratch.data(), w.k, 0, n1 - n0, y + (n0 - n_begin), ldy, accumulate);
    }
}

void mxfp4_block(const uint16_t* x, int64_t ldx, int64_t rows, const CpuMatrix& w, int64_t n_begin, int64_t n_end,
                 float* y, int64_t ldy, bool accumulate) {
    if (rows <= kMxfp4DecodeMaxRows) {
        mxfp4_decode_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate);
    } else {
        mxfp4_expand_block(x, ldx, rows, w, n_begin, n_end, y, ldy, accumulate);
    }
}

bool mxfp4_kernel_available(Mxfp4Kernel kernel) {
    switch (kernel) {
        case Mxfp4Kernel::kAuto:
        case Mxfp4Kernel::kScalar:
            return true;
        case Mxfp4Kernel::kDecode:
        case Mxfp4Kernel::kExpand:
            return bf16_tiles_available();
        case Mxfp4Kernel::kAvx512F:
            return cpu_features().avx512f;
    }
    return false;
}

Status mxfp4_matmul(const GemmProblem& p, ThreadPool* pool, Mxfp4Kernel kernel) {
    if (!mxfp4_kernel_available(kernel))
        return invalid_argument("mxfp4 matmul: the requested kernel needs CPU features this machine lacks (" +
                                cpu_features().to_string() + ")");
    if (p.m == 0) return ok_status();
    if (kernel == Mxfp4Kernel::kAuto) {
        if (bf16_tiles_available()) return bf16_matmul(p, pool);  // -> bf16_block -> mxfp4_block
        kernel = cpu_features().avx512f ? Mxfp4Kernel::kAvx512F : Mxfp4Kernel::kScalar;
    }
    const int64_t chunks = (p.n + kChunkCols - 1) / kChunkCols;
    auto for_chunks = [&](auto&& fn) {
        auto run = [&](int64_t begin, int64_t end) {
            for (int64_t ch = begin; ch < end; ++ch) {
                const int64_t c0 = ch * kChunkCols, c1 = std::min(p.n, c0 + kChunkCols);
                fn(c0, c1);
                if (p.bias != nullptr)
                    for (int64_t i = 0; i < p.m; ++i)
                        for (int64_t j = c0; j < c1; ++j) p.y[i * p.ldy + j] += p.bias[j];
            }
        };
        if (pool != nullptr && pool->size() > 1 && chunks > 1) {
            pool->parallel_for(chunks, run);
        } else {
            run(0, chunks);
        }
    };
    if (kernel == Mxfp4Kernel::kDecode || kernel == Mxfp4Kernel::kExpand) {
        const int64_t kp = bf16_padded_k(p.k);
        std::vector<uint16_t> xb(static_cast<size_t>(p.m * kp));
        f32_rows_to_bf16(p.x, p.ldx, p.m, p.k, xb.data(), kp);
        const uint16_t* xr = xb.data();
        const bool decode = kernel == Mxfp4Kernel::kDecode;
        for_chunks([&](int64_t c0, int64_t c1) {
            if (decode) {
                mxfp4_decode_block(xr, kp, p.m, p.w, c0, c1, p.y + c0, p.ldy, p.accumulate);
            } else {
                mxfp4_expand_block(xr, kp, p.m, p.w, c0, c1, p.y + c0, p.ldy, p.accumulate);
            }
        });
        return ok_status();
    }
    const int64_t kh = p.k / 2;
    std::vector<float> xe(static_cast<size_t>(p.m * kh)), xo(static_cast<size_t>(p.m * kh));
    deinterleave(p.x, p.ldx, p.m, p.k, xe.data(), xo.data());
    const float* e = xe.data();
    const float* o = xo.data();
    const bool avx = kernel == Mxfp4Kernel::kAvx512F;
    for_chunks([&](int64_t c0, int64_t c1) {
        if (avx) {
            f32_cols_avx512(e, o, p.m, p.w, c0, c1, p.y, p.ldy, p.accumulate);
        } else {
            f32_cols_scalar(e, o, p.m, p.w, c0, c1, p.y, p.ldy, p.accumulate);
        }
    });
    return ok_status();
}

}  // namespace moe::cpu
