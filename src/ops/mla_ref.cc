// Naive references of the MLA and grouped-routing ops (ops/mla_ops.h): plain loops, double
// accumulation, host memory only. Each validates its arguments and runs the data checks first.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/mla_ops.h"
#include "ops/ref_util.h"

namespace moe::ref {
namespace {

// Element [i, j, k] of a 3-D f32 view with any strides.
inline float& at3(const TensorView& t, int64_t i, int64_t j, int64_t k) {
    return t.ptr<float>()[i * t.stride(0) + j * t.stride(1) + k * t.stride(2)];
}

// Cache row element: row `slot` of a [num_blocks, block_size, D] pool, f32 or bf16.
inline double cache_at(const TensorView& cache, int64_t slot, int64_t d) {
    return load(cache, slot * cache.dim(2) + d);
}

}  // namespace

Status rope_table(const RopeTableArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_rope_table_data(a));
    const int64_t R = a.x.dim(0), half = a.inv_freq.dim(0), per_token = R / a.positions.dim(0);
    for (int64_t r = 0; r < R; ++r) {
        const double pos = a.positions.ptr<const int32_t>()[r / per_token];
        for (int64_t i = 0; i < half; ++i) {
            const double angle = pos * static_cast<double>(a.inv_freq.ptr<const float>()[i]);
            const double c = std::cos(angle) * a.attention_factor, s = std::sin(angle) * a.attention_factor;
            const int64_t i0 = a.interleaved ? 2 * i : i, i1 = a.interleaved ? 2 * i + 1 : i + half;
            const double x0 = at2(a.x, r, i0), x1 = at2(a.x, r, i1);
            at2(a.x, r, i0) = static_cast<float>(x0 * c - x1 * s);
            at2(a.x, r, i1) = static_cast<float>(x1 * c + x0 * s);
        }
    }
    return ok_status();
}

Status latent_write(const LatentWriteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_latent_write_data(a));
    const int64_t D = a.rows.dim(1);
    for (int64_t t = 0; t < a.rows.dim(0); ++t) {
        const int64_t slot = a.slot_mapping.ptr<const int64_t>()[t];
        if (slot < 0) continue;
        for (int64_t d = 0; d < D; ++d) {
            const float v = at2(a.rows, t, d);
            if (a.cache.dtype == DType::kBF16) {
                a.cache.ptr<uint16_t>()[slot * D + d] = f32_to_bf16(v);
            } else {
                a.cache.ptr<float>()[slot * D + d] = v;
            }
        }
    }
    return ok_status();
}

Status latent_gather(const LatentGatherArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_latent_gather_data(a));
    for (int64_t n = 0; n < a.slots.dim(0); ++n)
        for (int64_t d = 0; d < a.out.dim(1); ++d)
            a.out.ptr<float>()[n * a.out.dim(1) + d] =
                static_cast<float>(cache_at(a.cache, a.slots.ptr<const int64_t>()[n], d));
    return ok_status();
}

Status mla_expand(const MlaExpandArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    const int64_t rope = a.k_rope.dim(1), nope = a.k.dim(2) - rope, vd = a.v.dim(2);
    for (int64_t n = 0; n < a.kv.dim(0); ++n)
        for (int64_t h = 0; h < a.kv.dim(1); ++h) {
            for (int64_t d = 0; d < nope; ++d) at3(a.k, n, h, d) = at3(a.kv, n, h, d);
            for (int64_t d = 0; d < rope; ++d) at3(a.k, n, h, nope + d) = at2(a.k_rope, n, d);
            for (int64_t d = 0; d < vd; ++d) at3(a.v, n, h, d) = at3(a.kv, n, h, nope + d);
        }
    return ok_status();
}

Status ragged_attention(const RaggedAttentionArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_ragged_attention_data(a));
    const int64_t S = a.query_start.dim(0) - 1, H = a.q.dim(1), Dqk = a.q.dim(2), Dv = a.v.dim(2);
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* ks = a.kv_start.ptr<const int32_t>();
    for (int64_t s = 0; s < S; ++s) {
        const int64_t q_len = qs[s + 1] - qs[s], kv_len = ks[s + 1] - ks[s];
        for (int64_t j = 0; j < q_len; ++j) {
            const int64_t t = qs[s] + j, p = kv_len - q_len + j;
            for (int64_t h = 0; h < H; ++h) {
                std::vector<double> score(static_cast<size_t>(p + 1));
                double mx = -std::numeric_limits<double>::infinity();
                for (int64_t c = 0; c <= p; ++c) {
                    double dot = 0;
                    for (int64_t d = 0; d < Dqk; ++d) dot += double{at3(a.q, t, h, d)} * at3(a.k, ks[s] + c, h, d);
                    score[static_cast<size_t>(c)] = dot * a.scale;
                    mx = std::max(mx, score[static_cast<size_t>(c)]);
                }
                double sum = 0;
                for (double& x : score) sum += (x = std::exp(x - mx));
                for (int64_t d = 0; d < Dv; ++d) {
                    double acc = 0;
                    for (int64_t c = 0; c <= p; ++c) acc += score[static_cast<size_t>(c)] * at3(a.v, ks[s] + c, h, d);
                    at3(a.out, t, h, d) = static_cast<float>(acc / sum);
                }
            }
        }
    }
    return ok_status();
}

Status mla_attention(const MlaAttentionArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_mla_attention_data(a));
    const int64_t S = a.kv_lens.dim(0), H = a.q_latent.dim(1), L = a.q_latent.dim(2), R = a.q_rope.dim(2);
    const int64_t bs = a.cache.dim(1), max_blocks = a.block_tables.dim(1);
    const auto* qs = a.query_start.ptr<const int32_t>();
    const auto* kv_lens = a.kv_lens.ptr<const int32_t>();
    const auto* tables = a.block_tables.ptr<const int32_t>();
    for (int64_t s = 0; s < S; ++s) {
        const int64_t q_len = qs[s + 1] - qs[s], kv_len = kv_lens[s];
        for (int64_t j = 0; j < q_len; ++j) {
            const int64_t t = qs[s] + j, p = kv_len - q_len + j;
            for (int64_t h = 0; h < H; ++h) {
                std::vector<double> score(static_cast<size_t>(p + 1));
                std::vector<int64_t> slot(static_cast<size_t>(p + 1));
                double mx = -std::numeric_limits<double>::infinity();
                for (int64_t c = 0; c <= p; ++c) {
                    const int64_t sl = int64_t{tables[s * max_blocks + c / bs]} * bs + c % bs;
                    double dot = 0;
                    for (int64_t d = 0; d < L; ++d) dot += double{at3(a.q_latent, t, h, d)} * cache_at(a.cache, sl, d);
                    for (int64_t d = 0; d < R; ++d)
                        dot += double{at3(a.q_rope, t, h, d)} * cache_at(a.cache, sl, L + d);
                    slot[static_cast<size_t>(c)] = sl;
                    score[static_cast<size_t>(c)] = dot * a.scale;
                    mx = std::max(mx, score[static_cast<size_t>(c)]);
                }
                double sum = 0;
                for (double& x : score) sum += (x = std::exp(x - mx));
                for (int64_t d = 0; d < L; ++d) {
                    double acc = 0;
                    for (int64_t c = 0; c <= p; ++c)
                        acc += score[static_cast<size_t>(c)] * cache_at(a.cache, slot[static_cast<size_t>(c)], d);
                    at3(a.out, t, h, d) = static_cast<float>(acc / sum);
                }
            }
        }
    }
    return ok_status();
}

Status head_gemm(const HeadGemmArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    const int64_t T = a.x.dim(0), H = a.x.dim(1), K = a.x.dim(2), N = a.out.dim(2), C = a.w.dim(1);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
            const int64_t base = h * a.head_rows + a.row_offset;
            for (int64_t n = 0; n < N; ++n) {
                double acc = 0;
                for (int64_t k = 0; k < K; ++k) {
                    const double w = a.transpose_w ? load(a.w, (base + n) * C + k) : load(a.w, (base + k) * C + n);
                    acc += double{at3(a.x, t, h, k)} * w;
                }
                at3(a.out, t, h, n) = static_cast<float>(acc);
            }
        }
    return ok_status();
}

Status moe_route_grouped(const MoeRouteGroupedArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    const int64_t T = a.logits.dim(0), E = a.logits.dim(1), G = a.num_groups, per = E / G, K = a.top_k;
    for (int64_t t = 0; t < T; ++t) {
        std::vector<double> score(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
        for (int64_t e = 0; e < E; ++e) {
            score[static_cast<size_t>(e)] = 1.0 / (1.0 + std::exp(-double{a.logits.ptr<const float>()[t * E + e]}));
            choice[static_cast<size_t>(e)] = score[static_cast<size_t>(e)] + a.bias.ptr<const float>()[e];
        }
        std::vector<double> group_score(static_cast<size_t>(G));
        for (int64_t g = 0; g < G; ++g) {
            std::vector<double> v(choice.begin() + g * per, choice.begin() + (g + 1) * per);
            std::sort(v.begin(), v.end(), std::greater<>());
            group_score[static_cast<size_t>(g)] = v[0] + (per > 1 ? v[1] : 0.0);
        }
        std::vector<int64_t> groups(static_cast<size_t>(G));
        std::iota(groups.begin(), groups.end(), 0);
        std::stable_sort(groups.begin(), groups.end(), [&](int64_t x, int64_t y) {
            return group_score[static_cast<size_t>(x)] > group_score[static_cast<size_t>(y)];
        });
        std::vector<int64_t> cand;
        for (int64_t i = 0; i < a.topk_groups; ++i)
            for (int64_t e = 0; e < per; ++e) cand.push_back(groups[static_cast<size_t>(i)] * per + e);
        std::sort(cand.begin(), cand.end());
        std::stable_sort(cand.begin(), cand.end(), [&](int64_t x, int64_t y) {
            return choice[static_cast<size_t>(x)] > choice[static_cast<size_t>(y)];
        });
        double sum = 0;
        for (int64_t k = 0; k < K; ++k) sum += score[static_cast<size_t>(cand[static_cast<size_t>(k)])];
        for (int64_t k = 0; k < K; ++k) {
            const int64_t e = cand[static_cast<size_t>(k)];
            double w = score[static_cast<size_t>(e)];
            if (a.renormalize) w /= sum + 1e-20;
            a.topk_ids.ptr<int32_t>()[t * K + k] = static_cast<int32_t>(e);
            a.topk_weights.ptr<float>()[t * K + k] = static_cast<float>(w * a.scaling_factor);
        }
    }
    return ok_status();
}

}  // namespace moe::ref
