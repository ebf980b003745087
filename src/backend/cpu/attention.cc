// Paged attention on the CPU, two-pass softmax in f32.
//
// One task per (query token, KV head): the task computes all num_q_heads / num_kv_heads query
// heads that share that KV head, so each K/V row is read once per group (GQA). Cache positions
// are walked as runs inside one block:
//
//   block_tables[s] = [b7, b2, b9]   block_size 4, kv_len 10, window unlimited
//   positions 0..3 -> b7[0..3], 4..7 -> b2[0..3], 8..9 -> b9[0..1]
//
// Each output element is computed by exactly one task in a fixed order, so results do not
// depend on the thread count or on scheduling. Against the double reference: f32 dot products
// and exp, ~1e-6 relative.
//
// With AVX-512 (attention_tiles below), a task is (sequence, KV head, block of up to 16 query
// tokens): its rows (tokens x the group's query heads, up to 64 for Qwen3) go through the
// cache in chunks of up to 32 positions (across pages, K transposed into a small tile), with
// an online softmax (running max and sum per row, as in FlashAttention), so each K/V row is
// read once per 16 query tokens instead of once per token, and scores are 32-wide FMAs.
// Decode rows whose 4-row groups each sit in one KV head (GQA groups of 4, 8, ...) read K and V
// in place, a bf16 cache widened in registers; other shapes stage bf16 rows as f32 per chunk.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "backend/cpu/avx512_math.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_features.h"
#include "ops/data_checks.h"

namespace moe::cpu {
namespace {

struct Geometry {
    int64_t num_q_heads, num_kv_heads, group, head_dim, block_size, max_blocks, row;
};

// Calls fn(c, row) for cache positions c in [lo, hi] of sequence s with the f32 row of `cache`
// (K or V) for KV head kvh; bf16 rows are widened into `tmp`.
template <typename Fn>
void for_each_position(const TensorView& cache, const AttentionArgs& a, const Geometry& g, int64_t s, int64_t kvh,
                       int64_t lo, int64_t hi, std::vector<float>& tmp, Fn&& fn) {
    const int32_t* table = a.block_tables.ptr<const int32_t>() + s * g.max_blocks;
    const bool bf16 = cache.dtype == DType::kBF16;
    for (int64_t c = lo; c <= hi;) {
        const int64_t block = table[c / g.block_size];
        const int64_t run_end = std::min(hi, (c / g.block_size + 1) * g.block_size - 1);
        for (; c <= run_end; ++c) {
            const int64_t base = (block * g.block_size + c % g.block_size) * g.row + kvh * g.head_dim;
            if (bf16) {
                convert_to_f32(cache.ptr<const uint16_t>() + base, DType::kBF16, tmp.data(),
                               static_cast<size_t>(g.head_dim));
                fn(c, tmp.data());
            } else {
                fn(c, cache.ptr<const float>() + base);
            }
        }
    }
}

// dst[0, n) = the f32 values of bf16 src[0, n) (exact: a bf16 is the top half of an f32).
// 16 floats from f32 or bf16 (widened), all or the lanes of m.
MOE_AVX512_TARGET inline __m512 load16(const float* p) {
    return _mm512_loadu_ps(p);
}
MOE_AVX512_TARGET inline __m512 load16(const uint16_t* p) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
MOE_AVX512_TARGET inline __m512 load16(__mmask16 m, const float* p) {
    return _mm512_maskz_loadu_ps(m, p);
}
MOE_AVX512_TARGET inline __m512 load16(__mmask16 m, const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// dst[0, n) = the f32 values of bf16 src[0, n) (exact: a bf16 is the top half of an f32).
MOE_AVX512_TARGET inline void widen_bf16(const uint16_t* src, int64_t n, float* dst) {
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = lanes16(n - j);
        _mm512_mask_storeu_ps(dst + j, m, load16(m, src + j));
    }
}

constexpr int64_t kQueryBlock = 16;  // query tokens per task
constexpr int64_t kPosChunk = 32;    // cache positions per chunk (two vectors of scores)
// Rows (query tokens x heads of the group) from which K is transposed into a tile; below,
// scores are dot products straight from the cache (decode: one token x the group).
constexpr int64_t kTransposeMinRows = 12;

// Scratch of one task, reused across tasks on the same thread.
struct TileScratch {
    std::vector<float> o, m, l, s, kt, k, v;
    std::vector<int64_t> pos, lo, first, last;
    std::vector<float> alpha;
};

// One task: KV heads [kvh, kvh + nk) of sequence s for query tokens [t_begin, t_end); rows
// r = ((token i of the block) * nk + (KV head j of the task)) * group + (head h of the group),
// i.e. the task's query heads in order for each token. nk > 1 only for one decode token with
// a group below kTransposeMinRows: then the task walks whole cache rows (all of its KV heads
// at a position are adjacent), which the prefetchers follow, instead of one head's slice at the
// stride of a row.
struct TileTask {
    const AttentionArgs& a;
    const Geometry& g;
    int64_t s, kvh, nk, t_begin;
    int64_t hd, heads, rows, hd16;  // heads: query heads per token in this task
    const int32_t* table;           // the sequence's block table
    bool bf16;
    // Decode with each 4-row group inside one KV head and whole vectors: scores and P * V read
    // the cache rows directly, bf16 widened in registers (k16 / v16), nothing staged in kbuf.
    bool fast;
    // Next-chunk prefetches one position at a time instead of in one burst (see prefetch_ahead).
    bool spread;
    int64_t head_stride;  // from one KV head's row to the next's: hd in the cache, hd16 in kbuf / vbuf
    int64_t elem_bytes;   // K and V share it
    int64_t row_bytes;
    int64_t lo_min, hi_max;  // the cache positions any row of the task sees
};

// Query rows: q[t, kvh * group + (r % heads), :] for t in the block.
inline int64_t head_index(const TileTask& t, int64_t r) {
    return (t.t_begin + r / t.heads) * t.g.num_q_heads + t.kvh * t.g.group + r % t.heads;
}
inline const float* q_row(const TileTask& t, int64_t r) {
    return t.a.q.ptr<const float>() + head_index(t, r) * t.hd;
}
// The task's KV head (0 .. nk - 1) of row r.
inline int64_t kv_of(const TileTask& t, int64_t r) {
    return (r % t.heads) / t.g.group;
}
// Element offset of position c's K/V row for the task's first KV head.
inline int64_t row_offset(const TileTask& t, int64_t c) {
    return (static_cast<int64_t>(t.table[c / t.g.block_size]) * t.g.block_size + c % t.g.block_size) * t.g.row +
           t.kvh * t.hd;
}

// K and V rows are prefetched ahead of use: one KV head's rows are scattered over pages at
// a stride of all heads' rows, too irregular for the hardware prefetchers, and a decode task
// does too little work per row for out-of-order execution to keep more than a few misses
// in flight.
// One position's K and V rows, toward L2 (locality 1, PREFETCHT2): with whole-row decode
// tasks a chunk's rows (32 positions x all KV heads) do not fit L1 next to the current
// chunk's. benchmarks/attention_decode_bench (moe-s shape, 16 x 513 positions), alternated:
// f32 / bf16 cache 790 / 535 us per layer with T2, 1450 / 930 with T0, 1117 / 895 with none.
// NOTE: these helpers must be inlined (always_inline). GCC's pure-const analysis counts a
// function whose only effect is __builtin_prefetch as having none, and deletes the calls
// to it when it is left out of line: from 3f52f51 to here no prefetch was ever emitted.
// Heads [h, h + nheads) of the task (all of them: the whole rows).
MOE_AVX512_TARGET __attribute__((always_inline)) inline void prefetch_position(const TileTask& t, int64_t c,
                                                                               int64_t h = 0, int64_t nheads = -1) {
    const int64_t off = (row_offset(t, c) + h * t.hd) * t.elem_bytes;
    const int64_t bytes = nheads < 0 ? t.row_bytes : nheads * t.hd * t.elem_bytes;
    const char* k = static_cast<const char*>(t.a.k_cache.data) + off;
    const char* v = static_cast<const char*>(t.a.v_cache.data) + off;
    for (int64_t b = 0; b < bytes; b += 64) {
        __builtin_prefetch(k + b, 0, 1);
        __builtin_prefetch(v + b, 0, 1);
    }
}
MOE_AVX512_TARGET __attribute__((always_inline)) inline void prefetch_chunk(const TileTask& t, int64_t c) {
    for (const int64_t end = std::min(t.hi_max + 1, c + kPosChunk); c < end; ++c) prefetch_position(t, c);
}

// The task's constants, its rows' positions and windows (sc.pos, sc.lo), and the scratch sized
// and reset for its rows.
MOE_AVX512_TARGET __attribute__((always_inline)) inline TileTask start_task(const AttentionArgs& a, const Geometry& g,
                                                                            int64_t s, int64_t kvh, int64_t nk,
                                                                            int64_t t_begin, int64_t t_end,
                                                                            TileScratch& sc) {
    const int64_t hd = g.head_dim;
    const int64_t heads = nk * g.group;
    const int64_t rows = (t_end - t_begin) * heads;
    const int64_t hd16 = (hd + 15) / 16 * 16;
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* kv_lens = a.kv_lens.ptr<const int32_t>();
    const int64_t q_len = qs[s + 1] - qs[s];
    sc.o.assign(static_cast<size_t>(rows * hd16), 0.0f);
    sc.m.assign(static_cast<size_t>(rows), -INFINITY);
    sc.l.assign(static_cast<size_t>(rows), 0.0f);
    if (!a.sinks.empty()) {
        // A sink is a key of logit sinks[h] and value 0: the running max starts at it and the
        // running sum at its exp(sinks[h] - m) = 1; the online softmax then rescales it as
        // any other term.
        const float* sinks = a.sinks.ptr<const float>();
        for (int64_t r = 0; r < rows; ++r) {
            sc.m[static_cast<size_t>(r)] = sinks[kvh * g.group + r % heads];
            sc.l[static_cast<size_t>(r)] = 1.0f;
        }
    }
    sc.s.resize(static_cast<size_t>(rows * kPosChunk));
    sc.kt.resize(static_cast<size_t>(hd * kPosChunk));
    sc.k.resize(static_cast<size_t>(kPosChunk * nk * hd16));
    sc.v.resize(static_cast<size_t>(kPosChunk * nk * hd16));
    sc.pos.resize(static_cast<size_t>(rows));
    sc.lo.resize(static_cast<size_t>(rows));
    sc.first.resize(static_cast<size_t>(rows));
    sc.last.resize(static_cast<size_t>(rows));
    sc.alpha.resize(static_cast<size_t>(rows));
    int64_t lo_min = INT64_MAX, hi_max = -1;
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = t_begin + r / heads;
        const int64_t pos = kv_lens[s] - q_len + (t - qs[s]);
        const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
        sc.pos[static_cast<size_t>(r)] = pos;
        sc.lo[static_cast<size_t>(r)] = lo;
        lo_min = std::min(lo_min, lo);
        hi_max = std::max(hi_max, pos);
    }
    const bool bf16 = a.k_cache.dtype == DType::kBF16;
    const bool fast = !(nk == 1 && rows >= kTransposeMinRows) && g.group % 4 == 0 && hd % 16 == 0;
    const int64_t elem_bytes = static_cast<int64_t>(dtype_size(a.k_cache.dtype));
    return TileTask{.a = a,
                    .g = g,
                    .s = s,
                    .kvh = kvh,
                    .nk = nk,
                    .t_begin = t_begin,
                    .hd = hd,
                    .heads = heads,
                    .rows = rows,
                    .hd16 = hd16,
                    .table = a.block_tables.ptr<const int32_t>() + s * g.max_blocks,
                    .bf16 = bf16,
                    .fast = fast,
                    .spread = rows < kTransposeMinRows || nk > 1,
                    .head_stride = bf16 && !fast ? hd16 : hd,
                    .elem_bytes = elem_bytes,
                    .row_bytes = nk * hd * elem_bytes,
                    .lo_min = lo_min,
                    .hi_max = hi_max};
}

// A chunk: positions [c0, c1), at most kPosChunk of them, across pages, and where each
// position's K and V rows (of the task's first KV head) are read from.
struct Chunk {
    int64_t c0, c1, n;
    // Spread prefetching: position c1 + p's rows while position p is first touched (widened
    // from bf16, or its f32 K row read for the scores); positions p < spread_end.
    int64_t spread_end;
    const float* krows[kPosChunk];
    const float* vrows[kPosChunk];
    const uint16_t* k16[kPosChunk];
    const uint16_t* v16[kPosChunk];
};

// K and V rows of the task's first KV head: straight from an f32 cache (the task's next heads
// follow at hd), widened into kbuf / vbuf from bf16 (next heads at hd16), or, on the fast path,
// the bf16 rows in place.
MOE_AVX512_TARGET __attribute__((always_inline)) inline void gather_chunk(const TileTask& t, Chunk& ch,
                                                                          TileScratch& sc) {
    const int64_t hd = t.hd, hd16 = t.hd16, nk = t.nk;
    float* kbuf = sc.k.data();
    float* vbuf = sc.v.data();
    int64_t off[kPosChunk];
    for (int64_t p = 0; p < ch.n; ++p) off[p] = row_offset(t, ch.c0 + p);
    for (int64_t p = 0; p < ch.n; ++p) {
        if (t.bf16 && t.fast) {
            ch.k16[p] = t.a.k_cache.ptr<const uint16_t>() + off[p];
            ch.v16[p] = t.a.v_cache.ptr<const uint16_t>() + off[p];
        } else if (t.bf16) {
            if (p < ch.spread_end) prefetch_position(t, ch.c1 + p);
            const uint16_t* k = t.a.k_cache.ptr<const uint16_t>() + off[p];
            const uint16_t* v = t.a.v_cache.ptr<const uint16_t>() + off[p];
            for (int64_t kv = 0; kv < nk; ++kv) {
                widen_bf16(k + kv * hd, hd, kbuf + (p * nk + kv) * hd16);
                widen_bf16(v + kv * hd, hd, vbuf + (p * nk + kv) * hd16);
            }
            ch.krows[p] = kbuf + p * nk * hd16;
            ch.vrows[p] = vbuf + p * nk * hd16;
        } else {
            ch.krows[p] = t.a.k_cache.ptr<const float>() + off[p];
            ch.vrows[p] = t.a.v_cache.ptr<const float>() + off[p];
        }
    }
}

// Scores, many rows sharing each K row (one KV head, a block of query tokens): transpose K into
// kt[j][p] once (j outer: contiguous stores), then scores for 4 rows at a time as 8
// accumulators of 16 positions. Columns p >= n hold stale values: their scores are masked out
// by the softmax.
MOE_AVX512_TARGET __attribute__((always_inline)) inline void scores_transposed(const TileTask& t, const Chunk& ch,
                                                                               TileScratch& sc) {
    const int64_t hd = t.hd, rows = t.rows, n = ch.n;
    float* kt = sc.kt.data();
    for (int64_t j = 0; j < hd; ++j)
        for (int64_t p = 0; p < n; ++p) kt[j * kPosChunk + p] = ch.krows[p][j];
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        const int64_t nr = std::min<int64_t>(4, rows - r0);
        const float* qr[4];
        for (int64_t i = 0; i < 4; ++i) qr[i] = q_row(t, r0 + std::min<int64_t>(i, nr - 1));
        __m512 acc[4][2];
        for (auto& x : acc) x[0] = x[1] = _mm512_setzero_ps();
        for (int64_t j = 0; j < hd; ++j) {
            const __m512 k0 = _mm512_loadu_ps(kt + j * kPosChunk);
            const __m512 k1 = _mm512_loadu_ps(kt + j * kPosChunk + 16);
            for (int i = 0; i < 4; ++i) {
                const __m512 qv = _mm512_set1_ps(qr[i][j]);
                acc[i][0] = _mm512_fmadd_ps(qv, k0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(qv, k1, acc[i][1]);
            }
        }
        for (int64_t i = 0; i < nr; ++i) {
            float* srow = sc.s.data() + (r0 + i) * kPosChunk;
            _mm512_storeu_ps(srow, _mm512_mul_ps(acc[i][0], _mm512_set1_ps(t.a.scale)));
            _mm512_storeu_ps(srow + 16, _mm512_mul_ps(acc[i][1], _mm512_set1_ps(t.a.scale)));
        }
    }
}

// Scores, decode, each 4-row group inside one KV head (group a multiple of 4), whole vectors:
// groups outer, positions inner, with the group's query rows and K offset fixed, so a position
// costs its K vectors (each loaded once for the 4 rows, bf16 widened in the register), the
// products and one hsum4; scores_few_rows redoes the row bookkeeping for every position. The
// same operations per score as scores_few_rows. KRow: float (f32 rows or staged) or uint16_t
// (bf16 rows in place).
template <typename KRow>
MOE_AVX512_TARGET __attribute__((always_inline)) inline void scores_grouped_decode(const TileTask& t, const Chunk& ch,
                                                                                   const KRow* const* k_rows,
                                                                                   TileScratch& sc) {
    const int64_t hd = t.hd, rows = t.rows, n = ch.n;
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        const float* q0 = q_row(t, r0);
        const float* q1 = q_row(t, r0 + 1);
        const float* q2 = q_row(t, r0 + 2);
        const float* q3 = q_row(t, r0 + 3);
        const int64_t ko = kv_of(t, r0) * t.head_stride;
        float* s0 = sc.s.data() + r0 * kPosChunk;
        for (int64_t p = 0; p < n; ++p) {
            // Each head's first group fetches that head's slice of the next chunk's rows:
            // spread over every group's pass, not one burst.
            if (r0 % t.g.group == 0 && p < ch.spread_end) prefetch_position(t, ch.c1 + p, kv_of(t, r0), 1);
            const KRow* kr = k_rows[p] + ko;
            __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
            for (int64_t j = 0; j < hd; j += 16) {
                const __m512 k = load16(kr + j);
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q0 + j), k, acc0);
                acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(q1 + j), k, acc1);
                acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(q2 + j), k, acc2);
                acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(q3 + j), k, acc3);
            }
            alignas(16) float d[4];
            _mm_store_ps(d, hsum4(acc0, acc1, acc2, acc3));
            for (int i = 0; i < 4; ++i) s0[i * kPosChunk + p] = d[i] * t.a.scale;
        }
    }
}

// Scores, few rows (decode): a transposition would cost more than the products. Each K row
// against 4 query rows at a time, dot products over the head dimension. With several KV heads
// in the task, 4 consecutive rows may span two of them: each row takes its own head's K row
// (the same address, from L1, when they share it).
MOE_AVX512_TARGET __attribute__((always_inline)) inline void scores_few_rows(const TileTask& t, const Chunk& ch,
                                                                             TileScratch& sc) {
    const int64_t hd = t.hd, rows = t.rows, n = ch.n;
    for (int64_t p = 0; p < n; ++p) {
        if (!t.bf16 && p < ch.spread_end) prefetch_position(t, ch.c1 + p);
        for (int64_t r0 = 0; r0 < rows; r0 += 4) {
            const int64_t nr = std::min<int64_t>(4, rows - r0);
            const float* qr[4];
            const float* kr[4];
            for (int64_t i = 0; i < 4; ++i) {
                const int64_t r = r0 + std::min<int64_t>(i, nr - 1);
                qr[i] = q_row(t, r);
                kr[i] = ch.krows[p] + kv_of(t, r) * t.head_stride;
            }
            __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
            for (int64_t j = 0; j < hd; j += 16) {
                const __mmask16 m = lanes16(hd - j);
                for (int i = 0; i < 4; ++i)
                    acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qr[i] + j), _mm512_maskz_loadu_ps(m, kr[i] + j),
                                             acc[i]);
            }
            alignas(16) float d[4];
            _mm_store_ps(d, hsum4(acc[0], acc[1], acc[2], acc[3]));
            for (int64_t i = 0; i < nr; ++i) sc.s[static_cast<size_t>((r0 + i) * kPosChunk + p)] = d[i] * t.a.scale;
        }
    }
}

// Online softmax per row over the chunk's scores (sc.s becomes the probabilities, sc.alpha the
// rescale of the row's running output, sc.m / sc.l the running max and sum); positions outside
// [lo, pos] of the row get probability 0 (rows with none in this chunk: alpha 1, all zeros).
MOE_AVX512_TARGET __attribute__((always_inline)) inline void online_softmax(const TileTask& t, const Chunk& ch,
                                                                            TileScratch& sc) {
    for (int64_t r = 0; r < t.rows; ++r) {
        const size_t ri = static_cast<size_t>(r);
        const int64_t first = std::max<int64_t>(0, sc.lo[ri] - ch.c0);
        const int64_t last = std::min<int64_t>(ch.n, sc.pos[ri] - ch.c0 + 1);  // exclusive
        float* srow = sc.s.data() + r * kPosChunk;
        sc.first[ri] = first;
        sc.last[ri] = last;
        if (first >= last) {
            std::fill(srow, srow + kPosChunk, 0.0f);
            sc.alpha[ri] = 1.0f;
            continue;
        }
        float mx = -INFINITY;
        for (int64_t p = first; p < last; ++p) mx = std::max(mx, srow[p]);
        float& m = sc.m[ri];
        const float m_new = std::max(m, mx);
        const float alpha = m == -INFINITY ? 0.0f : std::exp(m - m_new);
        m = m_new;
        float sum = 0.0f;
        for (int64_t h = 0; h < kPosChunk; h += 16) {
            const __mmask16 valid = static_cast<__mmask16>(lanes16(last - h) & ~lanes16(first - h));
            const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(srow + h), _mm512_set1_ps(m_new)));
            const __m512 pv = _mm512_maskz_mov_ps(valid, e);
            _mm512_storeu_ps(srow + h, pv);
            sum += _mm512_reduce_add_ps(pv);
        }
        sc.l[ri] = sc.l[ri] * alpha + sum;
        sc.alpha[ri] = alpha;
    }
}

// Four rows' share of O = alpha * O + P * V: their probabilities, outputs, rescales and the
// offset of each row's KV head within a position's V row(s).
struct PvRows {
    int64_t nr;      // real rows (1..4); the others repeat the last and are not stored
    int64_t p0, p1;  // positions any of them sees in this chunk
    const float* srow[4];
    float* o[4];
    __m512 alpha[4];
    int64_t vo[4];
};

// All four rows in one KV head: 64 columns at a time, 4 rows x 4 vectors = 16 independent
// accumulator chains (one vector's 4 chains were bound by the FMA latency), and each
// position's V row is read as 4 adjacent vectors (bf16 on the fast path: widened in the
// register). The same chain of operations per element as pv_per_row_head: o * alpha, then the
// positions in increasing order.
template <typename VRow>
MOE_AVX512_TARGET __attribute__((always_inline)) inline void pv_one_head(const TileTask& t, const PvRows& pr,
                                                                         const VRow* const* v_rows) {
    const int64_t hd = t.hd, hd16 = t.hd16, nr = pr.nr, p0 = pr.p0, p1 = pr.p1;
    for (int64_t j0 = 0; j0 < hd16; j0 += 64) {
        __mmask16 mj[4];
        __m512 acc[4][4];
#pragma GCC unroll 4
        for (int jj = 0; jj < 4; ++jj) {
            mj[jj] = j0 + 16 * jj < hd16 ? lanes16(hd - j0 - 16 * jj) : 0;
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i)
                acc[i][jj] = mj[jj] == 0 ? _mm512_setzero_ps()
                                         : _mm512_mul_ps(_mm512_loadu_ps(pr.o[i] + j0 + 16 * jj), pr.alpha[i]);
        }
        for (int64_t p = p0; p < p1; ++p) {
            const VRow* vr = v_rows[p] + pr.vo[0] + j0;
            __m512 v[4];
#pragma GCC unroll 4
            for (int jj = 0; jj < 4; ++jj) v[jj] = load16(mj[jj], vr + 16 * jj);
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
                const __m512 sp = _mm512_set1_ps(pr.srow[i][p]);
#pragma GCC unroll 4
                for (int jj = 0; jj < 4; ++jj) acc[i][jj] = _mm512_fmadd_ps(sp, v[jj], acc[i][jj]);
            }
        }
        // Constant indices only (unrolled, padding rows and vectors skipped by test): a
        // run-time index would keep acc in memory, stored every position.
#pragma GCC unroll 4
        for (int jj = 0; jj < 4; ++jj) {
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i)
                if (mj[jj] != 0 && i < nr) _mm512_storeu_ps(pr.o[i] + j0 + 16 * jj, acc[i][jj]);
        }
    }
}

// Rows in two KV heads (whole-row decode tasks): 16 columns at a time, each row its own V row.
MOE_AVX512_TARGET __attribute__((always_inline)) inline void pv_per_row_head(const TileTask& t, const PvRows& pr,
                                                                             const float* const* vrows) {
    const int64_t hd = t.hd;
    for (int64_t j = 0; j < t.hd16; j += 16) {
        const __mmask16 mj = lanes16(hd - j);
        __m512 acc[4];
        for (int i = 0; i < 4; ++i) acc[i] = _mm512_mul_ps(_mm512_loadu_ps(pr.o[i] + j), pr.alpha[i]);
        for (int64_t p = pr.p0; p < pr.p1; ++p)
            for (int i = 0; i < 4; ++i)
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(pr.srow[i][p]),
                                         _mm512_maskz_loadu_ps(mj, vrows[p] + pr.vo[i] + j), acc[i]);
        for (int64_t i = 0; i < pr.nr; ++i) _mm512_storeu_ps(pr.o[i] + j, acc[i]);  // padding rows dropped
    }
}

// O = alpha * O + P * V, 4 rows at a time: each V vector loaded once for the 4.
MOE_AVX512_TARGET __attribute__((always_inline)) inline void accumulate_pv(const TileTask& t, const Chunk& ch,
                                                                           TileScratch& sc) {
    for (int64_t r0 = 0; r0 < t.rows; r0 += 4) {
        PvRows pr;
        pr.nr = std::min<int64_t>(4, t.rows - r0);
        pr.p0 = kPosChunk;
        pr.p1 = 0;
        for (int64_t i = 0; i < pr.nr; ++i) {
            const size_t ri = static_cast<size_t>(r0 + i);
            if (sc.first[ri] >= sc.last[ri]) continue;
            pr.p0 = std::min(pr.p0, sc.first[ri]);
            pr.p1 = std::max(pr.p1, sc.last[ri]);
        }
        if (pr.p0 >= pr.p1) continue;  // alpha is 1 for all of them: O unchanged
        bool one_head = true;
        for (int64_t i = 0; i < 4; ++i) {
            const int64_t r = r0 + std::min<int64_t>(i, pr.nr - 1);
            pr.srow[i] = sc.s.data() + r * kPosChunk;
            pr.o[i] = sc.o.data() + r * t.hd16;
            pr.alpha[i] = _mm512_set1_ps(sc.alpha[static_cast<size_t>(r)]);
            pr.vo[i] = kv_of(t, r) * t.head_stride;
            one_head = one_head && pr.vo[i] == pr.vo[0];
        }
        if (!one_head) {
            pv_per_row_head(t, pr, ch.vrows);
        } else if (t.bf16 && t.fast) {
            pv_one_head(t, pr, ch.v16);
        } else {
            pv_one_head(t, pr, ch.vrows);
        }
    }
}

// out = O / l per row.
MOE_AVX512_TARGET __attribute__((always_inline)) inline void write_output(const TileTask& t, const TileScratch& sc) {
    for (int64_t r = 0; r < t.rows; ++r) {
        float* out = t.a.out.ptr<float>() + head_index(t, r) * t.hd;
        const float inv = 1.0f / sc.l[static_cast<size_t>(r)];
        const float* o = sc.o.data() + r * t.hd16;
        for (int64_t j = 0; j < t.hd; ++j) out[j] = o[j] * inv;
    }
}

// One task (see TileTask): the cache in chunks of up to kPosChunk positions, each chunk's K/V
// rows gathered, scored (by the kernel that suits the task's rows), softmaxed online and
// accumulated into O; then O / l.
MOE_AVX512_TARGET void attention_task(const AttentionArgs& a, const Geometry& g, int64_t s, int64_t kvh, int64_t nk,
                                      int64_t t_begin, int64_t t_end, TileScratch& sc) {
    const TileTask t = start_task(a, g, s, kvh, nk, t_begin, t_end, sc);
    // The first chunk at once; the next chunk's positions either at once too (many rows: the
    // chunk's arithmetic hides them) or, with few rows (decode), one position per position
    // processed: a whole chunk's prefetches in one burst fill the core's miss buffers and stall
    // it until they are served, which leaves nothing to overlap them with.
    prefetch_chunk(t, t.lo_min);
    Chunk ch;
    for (int64_t c0 = t.lo_min; c0 <= t.hi_max;) {
        ch.c0 = c0;
        ch.c1 = std::min(t.hi_max + 1, c0 + kPosChunk);
        ch.n = ch.c1 - c0;
        if (ch.c1 <= t.hi_max && !t.spread) prefetch_chunk(t, ch.c1);
        ch.spread_end = t.spread ? std::min(t.hi_max + 1, ch.c1 + kPosChunk) - ch.c1 : 0;
        gather_chunk(t, ch, sc);
        if (nk == 1 && t.rows >= kTransposeMinRows) {
            scores_transposed(t, ch, sc);
        } else if (t.fast && t.bf16) {
            scores_grouped_decode(t, ch, ch.k16, sc);
        } else if (t.fast) {
            scores_grouped_decode(t, ch, ch.krows, sc);
        } else {
            scores_few_rows(t, ch, sc);
        }
        online_softmax(t, ch, sc);
        accumulate_pv(t, ch, sc);
        c0 = ch.c1;
    }
    write_output(t, sc);
}

Status attention_tiles(Backend& be, const AttentionArgs& a, const Geometry& g) {
    const int64_t num_seqs = a.kv_lens.dim(0);
    const auto* qs = a.query_start.ptr<const int32_t>();
    // Tasks: (sequence, KV head, query block), longest contexts first is not needed: tasks are
    // handed out dynamically.
    ThreadPool& pool = as_cpu(be).pool();
    // Decode rows take all KV heads of their sequence in one task (whole cache rows, see
    // attention_task) when there are enough sequences to keep every thread busy; otherwise,
    // and for prefill blocks, one task per KV head.
    int64_t decode_seqs = 0;
    for (int64_t s = 0; s < num_seqs; ++s) decode_seqs += qs[s + 1] - qs[s] == 1 ? 1 : 0;
    const bool whole_rows = g.group < kTransposeMinRows && decode_seqs >= 4 * static_cast<int64_t>(pool.size());
    struct Task {
        int64_t seq, t0, kvh, nk;
    };
    thread_local std::vector<Task> tasks;
    tasks.clear();
    for (int64_t s = 0; s < num_seqs; ++s) {
        if (whole_rows && qs[s + 1] - qs[s] == 1) {
            tasks.push_back({s, qs[s], 0, g.num_kv_heads});
            continue;
        }
        for (int64_t t = qs[s]; t < qs[s + 1]; t += kQueryBlock)
            for (int64_t kvh = 0; kvh < g.num_kv_heads; ++kvh) tasks.push_back({s, t, kvh, 1});
    }
    const Task* task_of = tasks.data();
    // One scratch per pool thread, sized here on the calling thread for the largest task, so
    // that whichever thread picks which task (dynamic), no task allocates.
    thread_local std::vector<TileScratch> scratch;
    if (scratch.size() < static_cast<size_t>(pool.size())) scratch.resize(static_cast<size_t>(pool.size()));
    const size_t max_rows = static_cast<size_t>(std::max(kQueryBlock * g.group, g.num_q_heads));
    const size_t hd16 = static_cast<size_t>((g.head_dim + 15) / 16 * 16);
    for (TileScratch& sc : scratch) {
        for (auto* v : {&sc.m, &sc.l, &sc.alpha}) v->reserve(max_rows);
        for (auto* v : {&sc.pos, &sc.lo, &sc.first, &sc.last}) v->reserve(max_rows);
        sc.o.reserve(max_rows * hd16);
        sc.s.reserve(max_rows * kPosChunk);
        sc.kt.reserve(static_cast<size_t>(g.head_dim * kPosChunk));
        sc.k.reserve(static_cast<size_t>(kPosChunk * g.num_kv_heads) * hd16);
        sc.v.reserve(static_cast<size_t>(kPosChunk * g.num_kv_heads) * hd16);
    }
    TileScratch* per_thread = scratch.data();
    std::atomic<int64_t> next{0};
    const int64_t num_tasks = static_cast<int64_t>(tasks.size());
    pool.run([&](const ThreadPool::Region& r) {
        for (int64_t i = next.fetch_add(1); i < num_tasks; i = next.fetch_add(1)) {
            const Task& t = task_of[i];
            const int64_t t1 = std::min<int64_t>(qs[t.seq + 1], t.t0 + kQueryBlock);
            attention_task(a, g, t.seq, t.kvh, t.nk, t.t0, t1, per_thread[r.thread()]);
        }
    });
    return ok_status();
}

}  // namespace

Status attention(Backend& be, const AttentionArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_attention_data(a));
    Geometry g;
    g.num_q_heads = a.q.dim(1);
    g.num_kv_heads = a.k_cache.dim(2);
    g.group = g.num_q_heads / g.num_kv_heads;
    g.head_dim = a.q.dim(2);
    g.block_size = a.k_cache.dim(1);
    g.max_blocks = a.block_tables.dim(1);
    g.row = g.num_kv_heads * g.head_dim;
    const int64_t num_tokens = a.q.dim(0);
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* kv_lens = a.kv_lens.ptr<const int32_t>();
    if (cpu_features().avx512f) return attention_tiles(be, a, g);

    std::vector<int32_t> seq_of(static_cast<size_t>(num_tokens));
    for (int64_t s = 0; s < a.kv_lens.dim(0); ++s)
        for (int64_t t = qs[s]; t < qs[s + 1]; ++t) seq_of[static_cast<size_t>(t)] = static_cast<int32_t>(s);

    as_cpu(be).pool().parallel_tasks(num_tokens * g.num_kv_heads, [&](int64_t task) {
        const int64_t t = task / g.num_kv_heads;
        const int64_t kvh = task % g.num_kv_heads;
        const int64_t s = seq_of[static_cast<size_t>(t)];
        const int64_t q_len = qs[s + 1] - qs[s];
        const int64_t pos = kv_lens[s] - q_len + (t - qs[s]);
        const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
        const int64_t n = pos - lo + 1;

        thread_local std::vector<float> scores, tmp;
        scores.assign(static_cast<size_t>(g.group * n), 0.0f);
        tmp.resize(static_cast<size_t>(g.head_dim));
        const float* q = a.q.ptr<const float>() + (t * g.num_q_heads + kvh * g.group) * g.head_dim;
        float* out = a.out.ptr<float>() + (t * g.num_q_heads + kvh * g.group) * g.head_dim;

        // Pass 1: scores for every head of the group.
        for_each_position(a.k_cache, a, g, s, kvh, lo, pos, tmp, [&](int64_t c, const float* k) {
            for (int64_t h = 0; h < g.group; ++h)
                scores[static_cast<size_t>(h * n + (c - lo))] = dot_f32(q + h * g.head_dim, k, g.head_dim) * a.scale;
        });
        thread_local std::vector<float> inv_sum;
        inv_sum.resize(static_cast<size_t>(g.group));
        for (int64_t h = 0; h < g.group; ++h) {
            float* sc = scores.data() + h * n;
            const float sink = a.sinks.empty() ? -INFINITY : a.sinks.ptr<const float>()[kvh * g.group + h];
            const float max_score = std::max(sink, *std::max_element(sc, sc + n));
            float sum = a.sinks.empty() ? 0.0f : std::exp(sink - max_score);
            for (int64_t i = 0; i < n; ++i) {
                sc[i] = std::exp(sc[i] - max_score);
                sum += sc[i];
            }
            inv_sum[static_cast<size_t>(h)] = 1.0f / sum;
        }
        // Pass 2: probability-weighted sum of V rows.
        std::fill(out, out + g.group * g.head_dim, 0.0f);
        for_each_position(a.v_cache, a, g, s, kvh, lo, pos, tmp, [&](int64_t c, const float* v) {
            for (int64_t h = 0; h < g.group; ++h) {
                const float p = scores[static_cast<size_t>(h * n + (c - lo))];
                float* o = out + h * g.head_dim;
                for (int64_t d = 0; d < g.head_dim; ++d) o[d] += p * v[d];
            }
        });
        for (int64_t h = 0; h < g.group; ++h)
            for (int64_t d = 0; d < g.head_dim; ++d) out[h * g.head_dim + d] *= inv_sum[static_cast<size_t>(h)];
    });
    return ok_status();
}

}  // namespace moe::cpu
