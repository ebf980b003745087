// Host-side plan of the grouped expert MLP: which experts run (those with rows), their row ranges,
// and the scratch layout. The GEMMs are cuBLAS calls issued by src/backend/cuda; the SwiGLU between
// them is kernels/moe_experts/swiglu. CUDA-free, tested on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moe::kernels {

struct ExpertGemm {
    int64_t expert = 0;
    int64_t row_begin = 0;
    int64_t rows = 0;
};

// Experts with at least one row, in expert order (the order the GEMMs are queued in). `offsets`
// has E + 1 entries and has been checked (starts at 0, non-decreasing).
inline std::vector<ExpertGemm> plan_expert_gemms(const int32_t* offsets, int64_t num_experts) {
    std::vector<ExpertGemm> out;
    for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t n = static_cast<int64_t>(offsets[e + 1]) - offsets[e];
        if (n > 0) out.push_back({e, offsets[e], n});
    }
    return out;
}

// Scratch for one call, each piece 256-byte aligned: x in bf16 (bf16 weights only), the gate and
// up projections in f32 [R, I], and the SwiGLU activations in bf16 (bf16 weights; with f32
// weights they overwrite the gate buffer).
struct ExpertsScratch {
    size_t x_bf16 = 0;  // byte offsets
    size_t gate = 0;
    size_t up = 0;
    size_t act_bf16 = 0;
    size_t total = 0;
};

inline ExpertsScratch plan_experts_scratch(int64_t rows, int64_t hidden, int64_t inter, bool bf16_weights) {
    auto align = [](size_t n) { return (n + 255) / 256 * 256; };
    const size_t r = static_cast<size_t>(rows);
    ExpertsScratch s;
    size_t at = 0;
    s.x_bf16 = at;
    at += bf16_weights ? align(r * static_cast<size_t>(hidden) * 2) : 0;
    s.gate = at;
    at += align(r * static_cast<size_t>(inter) * 4);
    s.up = at;
    at += align(r * static_cast<size_t>(inter) * 4);
    s.act_bf16 = at;
    at += bf16_weights ? align(r * static_cast<size_t>(inter) * 2) : 0;
    s.total = at;
    return s;
}

}  // namespace moe::kernels
