// Softmax in f32; experts ranked by logit (softmax is strictly increasing, so this is the
// ranking by exact probability, ties to the lower id, as in the reference). Weights are within
// ~1e-6 relative of the double reference; ids match exactly.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {

Status moe_route(Backend& be, const MoeRouteArgs& a) {
    const int64_t num_experts = a.logits.dim(1);
    as_cpu(be).pool().parallel_for(
        a.logits.dim(0),
        [&](int64_t begin, int64_t end) {
            // NOTE: thread_local: no allocation per step once warmed up.
            thread_local std::vector<float> prob;
            thread_local std::vector<uint8_t> taken;
            prob.resize(static_cast<size_t>(num_experts));
            taken.resize(static_cast<size_t>(num_experts));
            for (int64_t t = begin; t < end; ++t) {
                const float* logits = a.logits.ptr<const float>() + t * num_experts;
                float max_logit = -INFINITY;
                for (int64_t e = 0; e < num_experts; ++e) max_logit = std::fmax(max_logit, logits[e]);
                float sum = 0.0f;
                for (int64_t e = 0; e < num_experts; ++e) {
                    prob[static_cast<size_t>(e)] = std::exp(logits[e] - max_logit);
                    sum += prob[static_cast<size_t>(e)];
                }
                std::fill(taken.begin(), taken.end(), 0);
                int32_t* ids = a.topk_ids.ptr<int32_t>() + t * a.top_k;
                float* weights = a.topk_weights.ptr<float>() + t * a.top_k;
                float picked = 0.0f;
                for (int j = 0; j < a.top_k; ++j) {
                    int64_t best = -1;
                    for (int64_t e = 0; e < num_experts; ++e) {
                        if (taken[static_cast<size_t>(e)]) continue;
                        if (best < 0 || logits[e] > logits[best]) best = e;
                    }
                    taken[static_cast<size_t>(best)] = 1;
                    ids[j] = static_cast<int32_t>(best);
                    weights[j] = prob[static_cast<size_t>(best)] / sum;
                    picked += weights[j];
                }
                if (a.renormalize)
                    for (int j = 0; j < a.top_k; ++j) weights[j] /= picked;
            }
        },
        ThreadPool::grain_for(num_experts));
    return ok_status();
}

}  // namespace moe::cpu
