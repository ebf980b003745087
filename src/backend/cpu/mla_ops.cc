// CPU kernels of the MLA and grouped-routing ops (ops/mla_ops.h). f32 arithmetic throughout,
// bf16 caches and weights widened as they are read; rows and heads spread over the thread pool.
// The data checks run before anything is written.
#include "ops/mla_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {
namespace {

// Row `slot` of a [num_blocks, block_size, D] pool as f32: the pool's own memory when f32,
// else widened into `buf`.
const float* cache_row(const TensorView& cache, int64_t slot, std::vector<float>& buf) {
    const int64_t D = cache.dim(2);
    if (cache.dtype == DType::kF32) return cache.ptr<const float>() + slot * D;
    buf.resize(static_cast<size_t>(D));
    const uint16_t* src = cache.ptr<const uint16_t>() + slot * D;
    for (int64_t d = 0; d < D; ++d) buf[static_cast<size_t>(d)] = bf16_to_f32(src[d]);
    return buf.data();
}

// Row r of a [rows, C] weight as f32 (same idea).
const float* weight_row(const TensorView& w, int64_t r, std::vector<float>& buf) {
    const int64_t C = w.dim(1);
    if (w.dtype == DType::kF32) return w.ptr<const float>() + r * C;
    buf.resize(static_cast<size_t>(C));
    const uint16_t* src = w.ptr<const uint16_t>() + r * C;
    for (int64_t c = 0; c < C; ++c) buf[static_cast<size_t>(c)] = bf16_to_f32(src[c]);
    return buf.data();
}

// In place: scores -> exp(score - max) / sum, as f32.
void softmax_inplace(float* s, int64_t n) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, s[i]);
    float sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += (s[i] = std::exp(s[i] - mx));
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) s[i] *= inv;
}

}  // namespace

Status rope_table(Backend& be, const RopeTableArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_rope_table_data(a));
    const int64_t R = a.x.dim(0), half = a.inv_freq.dim(0), per_token = R / a.positions.dim(0);
    const float* inv_freq = a.inv_freq.ptr<const float>();
    // As transformers computes it: angle = f32(pos) * inv_freq, cos/sin in f32, times the factor.
    as_cpu(be).pool().parallel_for(a.positions.dim(0), [&](int64_t begin, int64_t end) {
        std::vector<float> cs(static_cast<size_t>(2 * half));
        for (int64_t t = begin; t < end; ++t) {
            const float pos = static_cast<float>(a.positions.ptr<const int32_t>()[t]);
            for (int64_t i = 0; i < half; ++i) {
                const float angle = pos * inv_freq[i];
                cs[static_cast<size_t>(i)] = std::cos(angle) * a.attention_factor;
                cs[static_cast<size_t>(half + i)] = std::sin(angle) * a.attention_factor;
            }
            for (int64_t r = t * per_token; r < (t + 1) * per_token; ++r) {
                float* x = a.x.ptr<float>() + r * a.x.stride(0);
                for (int64_t i = 0; i < half; ++i) {
                    const int64_t i0 = a.interleaved ? 2 * i : i, i1 = a.interleaved ? 2 * i + 1 : i + half;
                    const float c = cs[static_cast<size_t>(i)], s = cs[static_cast<size_t>(half + i)];
                    const float x0 = x[i0], x1 = x[i1];
                    x[i0] = x0 * c - x1 * s;
                    x[i1] = x1 * c + x0 * s;
                }
            }
        }
    });
    return ok_status();
}

Status latent_write(Backend&, const LatentWriteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_latent_write_data(a));
    const int64_t D = a.rows.dim(1);
    for (int64_t t = 0; t < a.rows.dim(0); ++t) {
        const int64_t slot = a.slot_mapping.ptr<const int64_t>()[t];
        if (slot < 0) continue;
        const float* src = a.rows.ptr<const float>() + t * a.rows.stride(0);
        if (a.cache.dtype == DType::kF32) {
            std::memcpy(a.cache.ptr<float>() + slot * D, src, static_cast<size_t>(D) * 4);
        } else {
            uint16_t* dst = a.cache.ptr<uint16_t>() + slot * D;
            for (int64_t d = 0; d < D; ++d) dst[d] = f32_to_bf16(src[d]);
        }
    }
    return ok_status();
}

Status latent_gather(Backend& be, const LatentGatherArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_latent_gather_data(a));
    const int64_t D = a.out.dim(1);
    as_cpu(be).pool().parallel_for(a.slots.dim(0), [&](int64_t begin, int64_t end) {
        std::vector<float> buf;
        for (int64_t n = begin; n < end; ++n) {
            const float* row = cache_row(a.cache, a.slots.ptr<const int64_t>()[n], buf);
            std::memcpy(a.out.ptr<float>() + n * D, row, static_cast<size_t>(D) * 4);
        }
    });
    return ok_status();
}

Status mla_expand(Backend& be, const MlaExpandArgs& a) {
    const int64_t N = a.kv.dim(0), H = a.kv.dim(1), rope = a.k_rope.dim(1), Dk = a.k.dim(2), nope = Dk - rope;
    const int64_t Dv = a.v.dim(2), Dkv = a.kv.dim(2);
    as_cpu(be).pool().parallel_for(N, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
            const float* rope_row = a.k_rope.ptr<const float>() + n * a.k_rope.stride(0);
            for (int64_t h = 0; h < H; ++h) {
                const float* kv = a.kv.ptr<const float>() + (n * H + h) * Dkv;
                float* k = a.k.ptr<float>() + (n * H + h) * Dk;
                std::memcpy(k, kv, static_cast<size_t>(nope) * 4);
                std::memcpy(k + nope, rope_row, static_cast<size_t>(rope) * 4);
                std::memcpy(a.v.ptr<float>() + (n * H + h) * Dv, kv + nope, static_cast<size_t>(Dv) * 4);
            }
        }
    });
    return ok_status();
}

Status ragged_attention(Backend& be, const RaggedAttentionArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_ragged_attention_data(a));
    const int64_t S = a.query_start.dim(0) - 1, T = a.q.dim(0), H = a.q.dim(1), Dqk = a.q.dim(2), Dv = a.v.dim(2);
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* ks = a.kv_start.ptr<const int32_t>();
    // Sequence of each query row, so that (row, head) tasks can be spread evenly.
    std::vector<int32_t> seq_of(static_cast<size_t>(T));
    for (int64_t s = 0; s < S; ++s)
        for (int64_t t = qs[s]; t < qs[s + 1]; ++t) seq_of[static_cast<size_t>(t)] = static_cast<int32_t>(s);
    as_cpu(be).pool().parallel_for(T * H, [&](int64_t begin, int64_t end) {
        std::vector<float> score;
        for (int64_t i = begin; i < end; ++i) {
            const int64_t t = i / H, h = i % H, s = seq_of[static_cast<size_t>(t)];
            const int64_t q_len = qs[s + 1] - qs[s], kv_len = ks[s + 1] - ks[s];
            const int64_t p = kv_len - q_len + (t - qs[s]);
            const float* q = a.q.ptr<const float>() + (t * H + h) * Dqk;
            score.resize(static_cast<size_t>(p + 1));
            for (int64_t c = 0; c <= p; ++c)
                score[static_cast<size_t>(c)] =
                    dot_f32(q, a.k.ptr<const float>() + ((ks[s] + c) * H + h) * Dqk, Dqk) * a.scale;
            softmax_inplace(score.data(), p + 1);
            float* out = a.out.ptr<float>() + (t * H + h) * Dv;
            std::fill(out, out + Dv, 0.0f);
            for (int64_t c = 0; c <= p; ++c) {
                const float w = score[static_cast<size_t>(c)];
                const float* v = a.v.ptr<const float>() + ((ks[s] + c) * H + h) * Dv;
                for (int64_t d = 0; d < Dv; ++d) out[d] += w * v[d];
            }
        }
    });
    return ok_status();
}

Status mla_attention(Backend& be, const MlaAttentionArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_mla_attention_data(a));
    const int64_t S = a.kv_lens.dim(0), T = a.q_latent.dim(0), H = a.q_latent.dim(1), L = a.q_latent.dim(2);
    const int64_t R = a.q_rope.dim(2), bs = a.cache.dim(1), max_blocks = a.block_tables.dim(1);
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* kv_lens = a.kv_lens.ptr<const int32_t>();
    const auto* tables = a.block_tables.ptr<const int32_t>();
    std::vector<int32_t> seq_of(static_cast<size_t>(T));
    for (int64_t s = 0; s < S; ++s)
        for (int64_t t = qs[s]; t < qs[s + 1]; ++t) seq_of[static_cast<size_t>(t)] = static_cast<int32_t>(s);
    // One task = one query row and a block of heads: every latent row read (and widened from
    // bf16) once serves all heads of the block, which is what makes MLA decode cheap. Blocks of
    // up to 16 heads, smaller when there are fewer rows than threads (a single decode).
    const int64_t threads = as_cpu(be).pool().size();
    const int64_t head_block = std::clamp<int64_t>(H * T / std::max<int64_t>(threads, 1), 1, 16);
    const int64_t head_blocks = (H + head_block - 1) / head_block;
    as_cpu(be).pool().parallel_for(T * head_blocks, [&](int64_t begin, int64_t end) {
        std::vector<float> score, buf;
        for (int64_t i = begin; i < end; ++i) {
            const int64_t t = i / head_blocks, h0 = (i % head_blocks) * head_block, h1 = std::min(H, h0 + head_block);
            const int64_t nh = h1 - h0, s = seq_of[static_cast<size_t>(t)];
            const int64_t q_len = qs[s + 1] - qs[s], p = kv_lens[s] - q_len + (t - qs[s]), n = p + 1;
            const auto slot = [&](int64_t c) { return int64_t{tables[s * max_blocks + c / bs]} * bs + c % bs; };
            score.resize(static_cast<size_t>(nh * n));
            for (int64_t c = 0; c < n; ++c) {
                const float* row = cache_row(a.cache, slot(c), buf);
                for (int64_t h = h0; h < h1; ++h) {
                    const float* ql = a.q_latent.ptr<const float>() + (t * H + h) * L;
                    const float* qr = a.q_rope.ptr<const float>() + t * a.q_rope.stride(0) + h * a.q_rope.stride(1);
                    score[static_cast<size_t>((h - h0) * n + c)] =
                        (dot_f32(ql, row, L) + dot_f32(qr, row + L, R)) * a.scale;
                }
            }
            for (int64_t h = 0; h < nh; ++h) softmax_inplace(score.data() + h * n, n);
            for (int64_t h = h0; h < h1; ++h) std::fill_n(a.out.ptr<float>() + (t * H + h) * L, L, 0.0f);
            for (int64_t c = 0; c < n; ++c) {
                const float* row = cache_row(a.cache, slot(c), buf);
                for (int64_t h = h0; h < h1; ++h) {
                    const float w = score[static_cast<size_t>((h - h0) * n + c)];
                    float* out = a.out.ptr<float>() + (t * H + h) * L;
                    for (int64_t d = 0; d < L; ++d) out[d] += w * row[d];
                }
            }
        }
    });
    return ok_status();
}

Status head_gemm(Backend& be, const HeadGemmArgs& a) {
    const int64_t T = a.x.dim(0), H = a.x.dim(1), K = a.x.dim(2), N = a.out.dim(2);
    // One task per head: its slice of w is widened once and serves every token.
    as_cpu(be).pool().parallel_for(H, [&](int64_t begin, int64_t end) {
        std::vector<float> buf;
        for (int64_t h = begin; h < end; ++h) {
            const int64_t base = h * a.head_rows + a.row_offset;
            for (int64_t t = 0; t < T; ++t) {
                const float* x = a.x.ptr<const float>() + t * a.x.stride(0) + h * a.x.stride(1);
                float* out = a.out.ptr<float>() + (t * H + h) * N;
                if (a.transpose_w) {
                    for (int64_t n = 0; n < N; ++n) out[n] = dot_f32(x, weight_row(a.w, base + n, buf), K);
                } else {
                    std::fill_n(out, N, 0.0f);
                    for (int64_t k = 0; k < K; ++k) {
                        const float xv = x[k];
                        const float* w = weight_row(a.w, base + k, buf);
                        for (int64_t n = 0; n < N; ++n) out[n] += xv * w[n];
                    }
                }
            }
        }
    });
    return ok_status();
}

Status moe_route_grouped(Backend& be, const MoeRouteGroupedArgs& a) {
    const int64_t T = a.logits.dim(0), E = a.logits.dim(1), G = a.num_groups, per = E / G, K = a.top_k;
    const float* bias = a.bias.ptr<const float>();
    as_cpu(be).pool().parallel_for(T, [&](int64_t begin, int64_t end) {
        std::vector<float> score(static_cast<size_t>(E)), choice(static_cast<size_t>(E)),
            gscore(static_cast<size_t>(G));
        std::vector<int32_t> groups(static_cast<size_t>(G)), cand;
        for (int64_t t = begin; t < end; ++t) {
            const float* logit = a.logits.ptr<const float>() + t * E;
            for (int64_t e = 0; e < E; ++e) {
                score[static_cast<size_t>(e)] = 1.0f / (1.0f + std::exp(-logit[e]));
                choice[static_cast<size_t>(e)] = score[static_cast<size_t>(e)] + bias[e];
            }
            for (int64_t g = 0; g < G; ++g) {
                float m1 = -std::numeric_limits<float>::infinity(), m2 = m1;
                for (int64_t e = g * per; e < (g + 1) * per; ++e) {
                    const float c = choice[static_cast<size_t>(e)];
                    if (c > m1) {
                        m2 = m1;
                        m1 = c;
                    } else if (c > m2) {
                        m2 = c;
                    }
                }
                gscore[static_cast<size_t>(g)] = per > 1 ? m1 + m2 : m1;
            }
            std::iota(groups.begin(), groups.end(), 0);
            std::stable_sort(groups.begin(), groups.end(), [&](int32_t x, int32_t y) {
                return gscore[static_cast<size_t>(x)] > gscore[static_cast<size_t>(y)];
            });
            cand.clear();
            for (int64_t i = 0; i < a.topk_groups; ++i)
                for (int64_t e = 0; e < per; ++e)
                    cand.push_back(static_cast<int32_t>(groups[static_cast<size_t>(i)] * per + e));
            std::sort(cand.begin(), cand.end());
            std::partial_sort(cand.begin(), cand.begin() + K, cand.end(), [&](int32_t x, int32_t y) {
                const float cx = choice[static_cast<size_t>(x)], cy = choice[static_cast<size_t>(y)];
                return cx > cy || (cx == cy && x < y);
            });
            float sum = 0;
            for (int64_t k = 0; k < K; ++k) sum += score[static_cast<size_t>(cand[static_cast<size_t>(k)])];
            const float denom = a.renormalize ? sum + 1e-20f : 1.0f;
            for (int64_t k = 0; k < K; ++k) {
                const int32_t e = cand[static_cast<size_t>(k)];
                a.topk_ids.ptr<int32_t>()[t * K + k] = e;
                a.topk_weights.ptr<float>()[t * K + k] = score[static_cast<size_t>(e)] / denom * a.scaling_factor;
            }
        }
    });
    return ok_status();
}

}  // namespace moe::cpu
