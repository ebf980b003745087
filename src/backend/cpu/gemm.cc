#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/cpu_backend.h"

namespace moe::cpu {

Status gemm(Backend& be, const GemmArgs& a) {
    GemmProblem p;
    p.m = a.x.dim(0);
    p.n = a.w.dim(0);
    p.k = a.w.dim(1);
    p.x = a.x.ptr<const float>();
    // A 1-row view may carry any stride; BLAS wants ld >= K.
    p.ldx = p.m > 1 ? a.x.stride(0) : p.k;
    p.w = cpu_matrix(a.w);
    p.bias = a.bias.empty() ? nullptr : a.bias.ptr<const float>();
    p.y = a.y.ptr<float>();
    p.ldy = p.m > 1 ? a.y.stride(0) : p.n;
    p.accumulate = a.accumulate;
    return as_cpu(be).gemm_engine().run(p);
}

}  // namespace moe::cpu
