#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/data_checks.h"
#include "ops/ops.h"
#include "ops/ref_util.h"

namespace moe::ref {

Status attention(const AttentionArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    MOE_RETURN_IF_ERROR(ops::check_attention_data(a));
    const int64_t num_q_heads = a.q.dim(1);
    const int64_t head_dim = a.q.dim(2);
    const int64_t block_size = a.k_cache.dim(1);
    const int64_t num_kv_heads = a.k_cache.dim(2);
    const int64_t group = num_q_heads / num_kv_heads;
    const int64_t max_blocks = a.block_tables.dim(1);
    const auto* qs = a.query_start.ptr<const int32_t>();
    std::vector<double> scores;
    for (int64_t s = 0; s < a.kv_lens.dim(0); ++s) {
        const int64_t kv_len = a.kv_lens.ptr<const int32_t>()[s];
        const int64_t q_len = qs[s + 1] - qs[s];
        for (int64_t j = 0; j < q_len; ++j) {
            const int64_t t = qs[s] + j;
            const int64_t pos = kv_len - q_len + j;
            const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
            for (int64_t h = 0; h < num_q_heads; ++h) {
                const int64_t kvh = h / group;
                const float* q = a.q.ptr<const float>() + (t * num_q_heads + h) * head_dim;
                // Element index of cache position c, head kvh, dim 0.
                auto cache_index = [&](int64_t c) {
                    const int64_t block = a.block_tables.ptr<const int32_t>()[s * max_blocks + c / block_size];
                    return ((block * block_size + c % block_size) * num_kv_heads + kvh) * head_dim;
                };
                scores.assign(static_cast<size_t>(pos - lo + 1), 0.0);
                double max_score = -INFINITY;
                for (int64_t c = lo; c <= pos; ++c) {
                    double dot = 0.0;
                    for (int64_t d = 0; d < head_dim; ++d)
                        dot += static_cast<double>(q[d]) * load(a.k_cache, cache_index(c) + d);
                    scores[static_cast<size_t>(c - lo)] = dot * a.scale;
                    max_score = std::max(max_score, dot * a.scale);
                }
                // A sink is one more logit in the denominator only.
                const double sink = a.sinks.empty() ? -INFINITY : a.sinks.ptr<const float>()[h];
                max_score = std::max(max_score, sink);
                double sum = a.sinks.empty() ? 0.0 : std::exp(sink - max_score);
                for (double& sc : scores) {
                    sc = std::exp(sc - max_score);
                    sum += sc;
                }
                float* out = a.out.ptr<float>() + (t * num_q_heads + h) * head_dim;
                for (int64_t d = 0; d < head_dim; ++d) {
                    double acc = 0.0;
                    for (int64_t c = lo; c <= pos; ++c)
                        acc += scores[static_cast<size_t>(c - lo)] * load(a.v_cache, cache_index(c) + d);
                    out[d] = static_cast<float>(acc / sum);
                }
            }
        }
    }
    return ok_status();
}

}  // namespace moe::ref
