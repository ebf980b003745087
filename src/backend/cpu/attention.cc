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
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
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
                convert_to_f32(cache.ptr<const uint16_t>() + base, DType::kBF16, tmp.data(), static_cast<size_t>(g.head_dim));
                fn(c, tmp.data());
            } else {
                fn(c, cache.ptr<const float>() + base);
            }
        }
    }
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
            const float max_score = *std::max_element(sc, sc + n);
            float sum = 0.0f;
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
