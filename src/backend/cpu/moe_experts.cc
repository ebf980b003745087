// Grouped expert MLP: for each expert with rows, two GEMMs (gate, up) into scratch, silu * up
// in place, and the down GEMM straight into the expert's rows of out_permuted. The GEMMs go
// through the backend's GemmEngine (BLAS for f32, oneDNN for bf16) and use all its threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "ops/data_checks.h"

namespace moe::cpu {

Status moe_experts(Backend& be, const MoeExpertsArgs& a) {
    MOE_RETURN_IF_ERROR(ops::check_moe_experts_data(a));
    CpuBackend& cpu = as_cpu(be);
    const int64_t hidden = a.x_permuted.dim(1);
    const int64_t num_experts = a.expert_offsets.dim(0) - 1;
    const auto* off = a.expert_offsets.ptr<const int32_t>();
    int64_t max_rows = 0, inter = 0;
    for (int64_t e = 0; e < num_experts; ++e) {
        max_rows = std::max<int64_t>(max_rows, off[e + 1] - off[e]);
        if (off[e + 1] > off[e]) inter = a.w_gate[static_cast<size_t>(e)].dim(0);
    }
    if (max_rows == 0) return ok_status();
    std::vector<float> gate(static_cast<size_t>(max_rows * inter)), up(static_cast<size_t>(max_rows * inter));

    for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t rows = off[e + 1] - off[e];
        if (rows == 0) continue;
        const size_t i = static_cast<size_t>(e);
        GemmProblem p;
        p.m = rows;
        p.k = hidden;
        p.n = inter;
        p.x = a.x_permuted.ptr<const float>() + off[e] * hidden;
        p.ldx = hidden;
        p.ldy = inter;
        p.w = a.w_gate[i].data;
        p.w_dtype = a.w_gate[i].dtype;
        p.y = gate.data();
        MOE_RETURN_IF_ERROR(cpu.gemm_engine().run(p));
        p.w = a.w_up[i].data;
        p.w_dtype = a.w_up[i].dtype;
        p.y = up.data();
        MOE_RETURN_IF_ERROR(cpu.gemm_engine().run(p));

        cpu.pool().parallel_for(rows, [&](int64_t begin, int64_t end) {
            for (int64_t idx = begin * inter; idx < end * inter; ++idx) {
                const float g = gate[static_cast<size_t>(idx)];
                gate[static_cast<size_t>(idx)] = g / (1.0f + std::exp(-g)) * up[static_cast<size_t>(idx)];
            }
        });

        GemmProblem down;
        down.m = rows;
        down.k = inter;
        down.n = hidden;
        down.x = gate.data();
        down.ldx = inter;
        down.w = a.w_down[i].data;
        down.w_dtype = a.w_down[i].dtype;
        down.y = a.out_permuted.ptr<float>() + off[e] * hidden;
        down.ldy = hidden;
        MOE_RETURN_IF_ERROR(cpu.gemm_engine().run(down));
    }
    return ok_status();
}

}  // namespace moe::cpu
