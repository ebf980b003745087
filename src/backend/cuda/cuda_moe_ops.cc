// Adapters for attention and the MoE ops: tensor views (validated by ops::run) to the kernels in
// kernels/ and to cuBLAS.
//
// Data checks: the metadata (query_start, kv_lens, block ids, topk ids, row_of, expert offsets)
// lives on the device, so the kernels check what they index with and record failures in the
// backend's error block. When one is recorded, the offending array is copied back and the shared
// host checker (ops/data_checks.h) produces the message, so both backends word errors the same.
#include <fmt/format.h>

#include <climits>
#include <cstdint>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_mxfp4.h"
#include "kernels/attention/attention.h"
#include "kernels/cast/cast.h"
#include "kernels/moe_experts/expert_bias_act.h"
#include "kernels/moe_experts/moe_experts_plan.h"
#include "kernels/moe_experts/swiglu.h"
#include "kernels/moe_permute/moe_permute.h"
#include "kernels/moe_route/moe_route.h"
#include "kernels/moe_unpermute/moe_unpermute.h"
#include "ops/data_checks.h"
#include "ops/ops.h"

namespace moe::cuda {
namespace {

CudaBackend& cuda_of(Backend& be) {
    return static_cast<CudaBackend&>(be);
}

// A host copy of a device i32 view, and a view of it (same shape) for the host checkers.
struct HostCopy {
    std::vector<int32_t> data;
    TensorView view;
};

StatusOr<HostCopy> copy_to_host(CudaBackend& be, const TensorView& dev) {
    HostCopy h;
    h.data.resize(static_cast<size_t>(dev.numel()));
    if (!h.data.empty()) {
        MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(h.data.data(), dev.data, h.data.size() * sizeof(int32_t),
                                                 cudaMemcpyDeviceToHost, be.stream()));
        MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(be.stream()));
    }
    h.view = dev;
    h.view.data = h.data.data();
    h.view.device = Device{};
    return h;
}

// The kernel recorded a bad index but the host checker found none: the device and the host
// disagree, which is a bug rather than bad input.
Status checker_disagrees(const char* op, const kernels::KernelError& err) {
    return internal_error(
        fmt::format("{}: the kernel reported {} bad entries (first at {}) that the host check did not find", op,
                    err.num_bad, kernels::first_bad_row(err)));
}

Status attention(Backend& b, const AttentionArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    kernels::AttentionParams p;
    p.q = a.q.ptr<const float>();
    p.k_cache = a.k_cache.data;
    p.v_cache = a.v_cache.data;
    p.block_tables = a.block_tables.ptr<const int32_t>();
    p.query_start = a.query_start.ptr<const int32_t>();
    p.kv_lens = a.kv_lens.ptr<const int32_t>();
    p.out = a.out.ptr<float>();
    p.num_tokens = a.q.dim(0);
    p.num_seqs = a.kv_lens.dim(0);
    p.num_q_heads = a.q.dim(1);
    p.num_kv_heads = a.k_cache.dim(2);
    p.head_dim = a.q.dim(2);
    p.block_size = a.k_cache.dim(1);
    p.num_blocks = a.k_cache.dim(0);
    p.max_blocks_per_seq = a.block_tables.dim(1);
    p.scale = a.scale;
    p.sliding_window = a.sliding_window;
    p.sinks = a.sinks.empty() ? nullptr : a.sinks.ptr<const float>();
    if (p.num_seqs == 0) return ok_status();
    const kernels::AttentionPlan plan =
        kernels::plan_attention(p.num_tokens, p.num_seqs, p.num_q_heads, p.num_kv_heads, p.head_dim,
                                p.max_blocks_per_seq * p.block_size, be.num_sms());
    if (plan.head_dim_bucket == 0)
        return unimplemented(
            fmt::format("attention: head_dim {} is over 256, the largest the CUDA kernel is built for", p.head_dim));
    if (plan.grid_x > INT_MAX || plan.grid_y > 65535)
        return unimplemented(
            fmt::format("attention: {} row tiles x {} KV heads exceed the CUDA grid limits", plan.grid_x, plan.grid_y));
    if (plan.num_splits > 1) {
        MOE_ASSIGN_OR_RETURN(void* partials, be.scratch(plan.partial_floats * sizeof(float)));
        p.partials = static_cast<float*>(partials);
    }
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const auto cache_type = a.k_cache.dtype == DType::kBF16 ? kernels::ElemType::kBF16 : kernels::ElemType::kF32;
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_attention(p, cache_type, plan, be.kernel_error(), be.stream()));
    // NOTE: reading the error block waits for the stream (one sync per call); a deferred check at
    // the step's sync point can replace it, the block accumulates across launches.
    MOE_ASSIGN_OR_RETURN(kernels::KernelError err, be.read_kernel_error());
    if (!kernels::has_error(err)) return ok_status();
    MOE_ASSIGN_OR_RETURN(HostCopy qs, copy_to_host(be, a.query_start));
    MOE_ASSIGN_OR_RETURN(HostCopy kv, copy_to_host(be, a.kv_lens));
    MOE_ASSIGN_OR_RETURN(HostCopy tables, copy_to_host(be, a.block_tables));
    AttentionArgs host = a;
    host.query_start = qs.view;
    host.kv_lens = kv.view;
    host.block_tables = tables.view;
    MOE_RETURN_IF_ERROR(ops::check_attention_data(host));
    return checker_disagrees("attention", err);
}

Status moe_route(Backend& b, const MoeRouteArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_moe_route(a.logits.ptr<const float>(), a.topk_ids.ptr<int32_t>(),
                                                       a.topk_weights.ptr<float>(), a.logits.dim(0), a.logits.dim(1),
                                                       a.top_k, a.renormalize, be.stream()));
    return ok_status();
}

Status moe_shared_gate(Backend& b, const MoeSharedGateArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_moe_shared_gate(a.gate_logits.ptr<const float>(),
                                                             a.shared_out.ptr<const float>(), a.y.ptr<float>(),
                                                             a.y.dim(0), a.y.dim(1), be.stream()));
    return ok_status();
}

Status moe_permute(Backend& b, const MoePermuteArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    if (!kernels::permute_supported(a.num_experts))
        return unimplemented(fmt::format("moe_permute: {} experts; the CUDA kernel handles 1 to {}", a.num_experts,
                                         kernels::kPermuteMaxExperts));
    const int64_t top_k = a.topk_ids.dim(1);
    const kernels::PermutePlan plan = kernels::plan_moe_permute(a.topk_ids.numel(), a.num_experts);
    size_t scratch_bytes = 0;
    MOE_CUDA_RETURN_IF_ERROR(kernels::moe_permute_scratch_bytes(plan, &scratch_bytes));
    MOE_ASSIGN_OR_RETURN(void* scratch, be.scratch(scratch_bytes));
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_moe_permute(
        a.x.ptr<const float>(), a.topk_ids.ptr<const int32_t>(), a.x.dim(0), top_k, a.x.dim(1), plan,
        a.x_permuted.ptr<float>(), a.expert_offsets.ptr<int32_t>(), a.row_of.ptr<int32_t>(), a.token_of.ptr<int32_t>(),
        scratch, scratch_bytes, be.kernel_error(), be.stream()));
    MOE_ASSIGN_OR_RETURN(kernels::KernelError err, be.read_kernel_error());
    if (!kernels::has_error(err)) return ok_status();
    MOE_ASSIGN_OR_RETURN(HostCopy ids, copy_to_host(be, a.topk_ids));
    MoePermuteArgs host = a;
    host.topk_ids = ids.view;
    MOE_RETURN_IF_ERROR(ops::check_moe_permute_data(host));
    return checker_disagrees("moe_permute", err);
}

Status moe_unpermute(Backend& b, const MoeUnpermuteArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_moe_unpermute(
        a.out_permuted.ptr<const float>(), a.row_of.ptr<const int32_t>(), a.topk_weights.ptr<const float>(),
        a.y.ptr<float>(), a.y.dim(0), a.topk_weights.dim(1), a.y.dim(1), a.out_permuted.dim(0), a.accumulate,
        be.kernel_error(), be.stream()));
    MOE_ASSIGN_OR_RETURN(kernels::KernelError err, be.read_kernel_error());
    if (!kernels::has_error(err)) return ok_status();
    MOE_ASSIGN_OR_RETURN(HostCopy rows, copy_to_host(be, a.row_of));
    MoeUnpermuteArgs host = a;
    host.row_of = rows.view;
    MOE_RETURN_IF_ERROR(ops::check_moe_unpermute_data(host));
    return checker_disagrees("moe_unpermute", err);
}

// Row-major C[n, m] = B[n, k] * A[m, k]^T as cuBLAS column-major C^T = op_T(A) * B^T (see gemm in
// cuda_ops.cc): A is the weight (ld k), B the activations (ld k), C the output (ld m).
Status expert_gemm(CudaBackend& be, DType w_type, const void* w, const void* x, float* y, int m, int n, int k) {
    const float alpha = 1.0f, beta = 0.0f;
    if (w_type == DType::kF32) {
        MOE_CUDA_RETURN_IF_ERROR(cublasSgemm(be.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha,
                                             static_cast<const float*>(w), k, static_cast<const float*>(x), k, &beta, y,
                                             m));
    } else {
        MOE_CUDA_RETURN_IF_ERROR(cublasGemmEx(be.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w, CUDA_R_16BF, k,
                                              x, CUDA_R_16BF, k, &beta, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                                              CUBLAS_GEMM_DEFAULT));
    }
    return ok_status();
}

Status moe_experts(Backend& b, const MoeExpertsArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    const int64_t num_experts = a.expert_offsets.dim(0) - 1;
    const int64_t rows = a.x_permuted.dim(0);
    const int64_t hidden = a.x_permuted.dim(1);
    // NOTE: cuBLAS takes each expert's row count on the host, so the E + 1 offsets are copied back
    // once per call (a stream sync). cublasGemmGroupedBatchedEx (in this toolkit) takes its m/n/k
    // arrays on the host too, so it would save launches but not this copy; per-expert calls it is.
    MOE_ASSIGN_OR_RETURN(HostCopy offsets, copy_to_host(be, a.expert_offsets));
    MoeExpertsArgs host = a;
    host.expert_offsets = offsets.view;
    MOE_RETURN_IF_ERROR(ops::check_moe_experts_data(host));
    const std::vector<kernels::ExpertGemm> gemms = kernels::plan_expert_gemms(offsets.data.data(), num_experts);
    if (gemms.empty()) return ok_status();
    const size_t first = static_cast<size_t>(gemms.front().expert);
    const DType w_type = a.w_gate[first].dtype();
    const int64_t inter = a.w_gate[first].dim(0);
    for (const kernels::ExpertGemm& g : gemms) {
        const size_t e = static_cast<size_t>(g.expert);
        if (a.w_gate[e].dtype() != w_type || a.w_up[e].dtype() != w_type || a.w_down[e].dtype() != w_type)
            return unimplemented(
                fmt::format("moe_experts: expert {} mixes weight dtypes; the CUDA backend needs one "
                            "dtype ({}) for every expert's weights",
                            g.expert, dtype_name(w_type)));
    }
    for (int64_t v : {rows, hidden, inter})
        if (v > INT_MAX)
            return unimplemented(fmt::format("moe_experts: cuBLAS takes 32-bit sizes; got rows {} hidden {} inter {}",
                                             rows, hidden, inter));
    if (as_mxfp4(a.w_gate[first]) != nullptr) return mxfp4_moe_experts(be, a, gemms, inter);
    const bool bf16 = w_type == DType::kBF16;
    const kernels::ExpertsScratch layout = kernels::plan_experts_scratch(rows, hidden, inter, bf16);
    MOE_ASSIGN_OR_RETURN(void* scratch_ptr, be.scratch(layout.total));
    char* scratch = static_cast<char*>(scratch_ptr);
    auto* gate = reinterpret_cast<float*>(scratch + layout.gate);
    auto* up = reinterpret_cast<float*>(scratch + layout.up);
    const float* x = a.x_permuted.ptr<const float>();
    // bf16 weights: x and the activations are rounded to bf16 so that the tensor cores take both
    // operands; sums stay f32.
    const void* x_in = x;
    size_t x_elem = sizeof(float);
    if (bf16) {
        auto* xb = reinterpret_cast<uint16_t*>(scratch + layout.x_bf16);
        MOE_CUDA_RETURN_IF_ERROR(kernels::launch_cast_f32_to_bf16(x, hidden, xb, rows, hidden, be.stream()));
        x_in = xb;
        x_elem = sizeof(uint16_t);
    }
    const int h = static_cast<int>(hidden);
    const int i = static_cast<int>(inter);
    for (const kernels::ExpertGemm& g : gemms) {
        const size_t e = static_cast<size_t>(g.expert);
        const void* xe = static_cast<const char*>(x_in) + static_cast<size_t>(g.row_begin * hidden) * x_elem;
        const int n = static_cast<int>(g.rows);
        MOE_RETURN_IF_ERROR(expert_gemm(be, w_type, a.w_gate[e].tensor.data, xe, gate + g.row_begin * inter, i, n, h));
        MOE_RETURN_IF_ERROR(expert_gemm(be, w_type, a.w_up[e].tensor.data, xe, up + g.row_begin * inter, i, n, h));
    }
    // One SwiGLU over all rows (every row belongs to a running expert since offsets[E] == R);
    // with biases or the clamped SwiGLU (gpt-oss), one launch per running expert for its biases.
    void* act = bf16 ? static_cast<void*>(scratch + layout.act_bf16) : static_cast<void*>(gate);
    const auto act_type = bf16 ? kernels::ElemType::kBF16 : kernels::ElemType::kF32;
    if (a.activation == ExpertActivation::kSwiGLU && a.b_gate.empty() && a.b_up.empty()) {
        MOE_CUDA_RETURN_IF_ERROR(kernels::launch_swiglu(gate, up, act, act_type, rows * inter, be.stream()));
    } else {
        const size_t act_bytes = bf16 ? sizeof(uint16_t) : sizeof(float);
        for (const kernels::ExpertGemm& g : gemms) {
            const size_t e = static_cast<size_t>(g.expert);
            const int64_t at = g.row_begin * inter;
            MOE_CUDA_RETURN_IF_ERROR(kernels::launch_expert_bias_act(
                gate + at, up + at, a.b_gate.empty() ? nullptr : a.b_gate[e].ptr<const float>(),
                a.b_up.empty() ? nullptr : a.b_up[e].ptr<const float>(),
                static_cast<char*>(act) + static_cast<size_t>(at) * act_bytes, act_type, g.rows, inter,
                a.activation == ExpertActivation::kClampedSwiGLU, a.swiglu_alpha, a.swiglu_limit, be.stream()));
        }
    }
    const size_t act_elem = bf16 ? sizeof(uint16_t) : sizeof(float);
    for (const kernels::ExpertGemm& g : gemms) {
        const size_t e = static_cast<size_t>(g.expert);
        const void* ae = static_cast<const char*>(act) + static_cast<size_t>(g.row_begin * inter) * act_elem;
        MOE_RETURN_IF_ERROR(expert_gemm(be, w_type, a.w_down[e].tensor.data, ae,
                                        a.out_permuted.ptr<float>() + g.row_begin * hidden, h, static_cast<int>(g.rows),
                                        i));
        if (!a.b_down.empty())
            MOE_CUDA_RETURN_IF_ERROR(kernels::launch_add_bias_rows(a.out_permuted.ptr<float>() + g.row_begin * hidden,
                                                                   a.b_down[e].ptr<const float>(), g.rows, hidden,
                                                                   hidden, be.stream()));
    }
    return ok_status();
}

}  // namespace

void register_cuda_moe_ops(OpTable& table) {
    table.attention = &attention;
    table.moe_route = &moe_route;
    table.moe_shared_gate = &moe_shared_gate;
    table.moe_permute = &moe_permute;
    table.moe_experts = &moe_experts;
    table.moe_unpermute = &moe_unpermute;
}

}  // namespace moe::cuda
