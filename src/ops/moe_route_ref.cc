#include <cmath>
#include <vector>

#include "ops/ops.h"

namespace moe::ref {

// Softmax is strictly increasing, so ranking by logit is ranking by exact probability; ranking
// by rounded probabilities would invent ties (and break them by id) where the logits differ.
Status moe_route(const MoeRouteArgs& a) {
    MOE_RETURN_IF_ERROR(ops::validate(a));
    const int64_t num_experts = a.logits.dim(1);
    std::vector<double> prob(static_cast<size_t>(num_experts));
    std::vector<bool> taken(static_cast<size_t>(num_experts));
    for (int64_t t = 0; t < a.logits.dim(0); ++t) {
        const float* logits = a.logits.ptr<const float>() + t * num_experts;
        double max_logit = -INFINITY;
        for (int64_t e = 0; e < num_experts; ++e) max_logit = std::fmax(max_logit, logits[e]);
        double sum = 0.0;
        for (int64_t e = 0; e < num_experts; ++e) {
            prob[static_cast<size_t>(e)] = std::exp(static_cast<double>(logits[e]) - max_logit);
            sum += prob[static_cast<size_t>(e)];
        }
        std::fill(taken.begin(), taken.end(), false);
        int32_t* ids = a.topk_ids.ptr<int32_t>() + t * a.top_k;
        float* weights = a.topk_weights.ptr<float>() + t * a.top_k;
        double picked_sum = 0.0;
        for (int j = 0; j < a.top_k; ++j) {
            int64_t best = -1;
            for (int64_t e = 0; e < num_experts; ++e) {
                if (taken[static_cast<size_t>(e)]) continue;
                if (best < 0 || logits[e] > logits[best]) best = e;  // strict: ties keep the lower id
            }
            taken[static_cast<size_t>(best)] = true;
            ids[j] = static_cast<int32_t>(best);
            picked_sum += prob[static_cast<size_t>(best)] / sum;
        }
        for (int j = 0; j < a.top_k; ++j) {
            const double p = prob[static_cast<size_t>(ids[j])] / sum;
            weights[j] = static_cast<float>(a.renormalize ? p / picked_sum : p);
        }
    }
    return ok_status();
}

}  // namespace moe::ref
