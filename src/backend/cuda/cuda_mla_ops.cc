// Adapters for the MLA ops and DeepSeek-V3's grouped router (ops/mla_ops.h): tensor views,
// validated and placed on this device by ops::run, to the launchers in kernels/mla.
//
// Data checks: a check kernel records any bad index (positions, slots, sequence metadata, block
// ids) under the host checks' own conditions, and the main kernel then writes nothing. The error
// block is read once per call (a stream sync, as for attention); when it holds an error, the
// arrays are copied back and the host checker of ops/mla_ops.h words it, so both backends give
// the same message.
#include <fmt/format.h>

#include <climits>
#include <cstdint>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "kernels/mla/mla.h"
#include "ops/mla_ops.h"

namespace moe::cuda {
namespace {

CudaBackend& cuda_of(Backend& be) {
    return static_cast<CudaBackend&>(be);
}

kernels::ElemType elem_type(DType d) {
    return d == DType::kBF16 ? kernels::ElemType::kBF16 : kernels::ElemType::kF32;
}

// A host copy of a device view's elements (its whole extent) and a host view of it with the same
// shape and strides, for the host checkers.
struct HostCopy {
    std::vector<uint8_t> bytes;
    TensorView view;
};

StatusOr<HostCopy> copy_to_host(CudaBackend& be, const TensorView& dev) {
    HostCopy h;
    int64_t extent = dev.numel() == 0 ? 0 : 1;
    for (int d = 0; d < dev.ndim && dev.numel() != 0; ++d) extent += (dev.dim(d) - 1) * dev.stride(d);
    h.bytes.resize(static_cast<size_t>(extent) * dtype_size(dev.dtype));
    if (!h.bytes.empty()) {
        MOE_CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(h.bytes.data(), dev.data, h.bytes.size(), cudaMemcpyDeviceToHost, be.stream()));
        MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(be.stream()));
    }
    h.view = dev;
    h.view.data = h.bytes.data();
    h.view.device = Device{};
    return h;
}

// Waits for the queued kernels; OK when no bad index was recorded. Otherwise `host_check` (which
// copies what it needs to the host and runs the shared checker) gives the error; a recorded error
// the host check does not find is a bug, not bad input.
template <typename HostCheck>
Status finish_checked(CudaBackend& be, const char* op, HostCheck&& host_check) {
    MOE_ASSIGN_OR_RETURN(kernels::KernelError err, be.read_kernel_error());
    if (!kernels::has_error(err)) return ok_status();
    MOE_RETURN_IF_ERROR(host_check());
    return internal_error(
        fmt::format("{}: the kernel reported {} bad entries (first at {}) that the host check did not find", op,
                    err.num_bad, kernels::first_bad_row(err)));
}

Status rope_table(Backend& b, const RopeTableArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const auto* positions = a.positions.ptr<const int32_t>();
    const int64_t tokens = a.positions.dim(0);
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_check_index_range_i32(positions, tokens, 0, int64_t{INT32_MAX} + 1,
                                                                   be.kernel_error(), be.stream()));
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_rope_table(
        a.x.ptr<float>(), a.x.stride(0), a.x.dim(0), a.x.dim(1), positions, tokens == 0 ? 1 : a.x.dim(0) / tokens,
        a.inv_freq.ptr<const float>(), a.attention_factor, a.interleaved, be.kernel_error(), be.stream()));
    return finish_checked(be, "rope_table", [&]() -> Status {
        MOE_ASSIGN_OR_RETURN(HostCopy pos, copy_to_host(be, a.positions));
        RopeTableArgs host = a;
        host.positions = pos.view;
        return ops::check_rope_table_data(host);
    });
}

int64_t num_slots(const TensorView& cache) {
    return cache.dim(0) * cache.dim(1);
}

Status latent_write(Backend& b, const LatentWriteArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const auto* slots = a.slot_mapping.ptr<const int64_t>();
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_check_index_range_i64(slots, a.slot_mapping.dim(0), -1, num_slots(a.cache),
                                                                   be.kernel_error(), be.stream()));
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_latent_write(a.rows.ptr<const float>(), a.rows.stride(0), slots,
                                                          a.rows.dim(0), a.rows.dim(1), a.cache.data,
                                                          elem_type(a.cache.dtype), be.kernel_error(), be.stream()));
    return finish_checked(be, "latent_write", [&]() -> Status {
        MOE_ASSIGN_OR_RETURN(HostCopy s, copy_to_host(be, a.slot_mapping));
        LatentWriteArgs host = a;
        host.slot_mapping = s.view;
        return ops::check_latent_write_data(host);
    });
}

Status latent_gather(Backend& b, const LatentGatherArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const auto* slots = a.slots.ptr<const int64_t>();
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_check_index_range_i64(slots, a.slots.dim(0), 0, num_slots(a.cache),
                                                                   be.kernel_error(), be.stream()));
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_latent_gather(a.cache.data, elem_type(a.cache.dtype), slots,
                                                           a.slots.dim(0), a.out.dim(1), a.out.ptr<float>(),
                                                           be.kernel_error(), be.stream()));
    return finish_checked(be, "latent_gather", [&]() -> Status {
        MOE_ASSIGN_OR_RETURN(HostCopy s, copy_to_host(be, a.slots));
        LatentGatherArgs host = a;
        host.slots = s.view;
        return ops::check_latent_gather_data(host);
    });
}

Status mla_expand(Backend& b, const MlaExpandArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    const int64_t rope = a.k_rope.dim(1);
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_mla_expand(
        a.kv.ptr<const float>(), a.k_rope.ptr<const float>(), a.k_rope.stride(0), a.k.ptr<float>(), a.v.ptr<float>(),
        a.kv.dim(0), a.kv.dim(1), a.k.dim(2) - rope, rope, a.v.dim(2), be.stream()));
    return ok_status();
}

Status value_dim_supported(const char* op, const char* what, int64_t dim) {
    if (dim <= kernels::kMlaMaxValueDim) return ok_status();
    return unimplemented(fmt::format("{}: {} {} is over {}, the largest the CUDA kernel keeps per block", op, what, dim,
                                     kernels::kMlaMaxValueDim));
}

Status ragged_attention(Backend& b, const RaggedAttentionArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(value_dim_supported("ragged_attention", "v head dim", a.v.dim(2)));
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const int64_t S = a.query_start.dim(0) - 1;
    const kernels::RaggedAttentionParams p{.q = a.q.ptr<const float>(),
                                           .k = a.k.ptr<const float>(),
                                           .v = a.v.ptr<const float>(),
                                           .query_start = a.query_start.ptr<const int32_t>(),
                                           .kv_start = a.kv_start.ptr<const int32_t>(),
                                           .out = a.out.ptr<float>(),
                                           .num_tokens = a.q.dim(0),
                                           .num_seqs = S,
                                           .heads = a.q.dim(1),
                                           .dqk = a.q.dim(2),
                                           .dv = a.v.dim(2),
                                           .scale = a.scale};
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_check_ragged_meta(p.query_start, p.kv_start, S, p.num_tokens, a.k.dim(0),
                                                               be.kernel_error(), be.stream()));
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_ragged_attention(p, be.kernel_error(), be.stream()));
    return finish_checked(be, "ragged_attention", [&]() -> Status {
        MOE_ASSIGN_OR_RETURN(HostCopy qs, copy_to_host(be, a.query_start));
        MOE_ASSIGN_OR_RETURN(HostCopy ks, copy_to_host(be, a.kv_start));
        RaggedAttentionArgs host = a;
        host.query_start = qs.view;
        host.kv_start = ks.view;
        return ops::check_ragged_attention_data(host);
    });
}

Status mla_attention(Backend& b, const MlaAttentionArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(value_dim_supported("mla_attention", "kv_lora_rank", a.q_latent.dim(2)));
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const kernels::MlaAttentionParams p{.q_latent = a.q_latent.ptr<const float>(),
                                        .q_rope = a.q_rope.ptr<const float>(),
                                        .q_rope_token_stride = a.q_rope.stride(0),
                                        .q_rope_head_stride = a.q_rope.stride(1),
                                        .cache = a.cache.data,
                                        .block_tables = a.block_tables.ptr<const int32_t>(),
                                        .query_start = a.query_start.ptr<const int32_t>(),
                                        .kv_lens = a.kv_lens.ptr<const int32_t>(),
                                        .out = a.out.ptr<float>(),
                                        .num_tokens = a.q_latent.dim(0),
                                        .num_seqs = a.kv_lens.dim(0),
                                        .heads = a.q_latent.dim(1),
                                        .latent = a.q_latent.dim(2),
                                        .rope = a.q_rope.dim(2),
                                        .block_size = a.cache.dim(1),
                                        .max_blocks = a.block_tables.dim(1),
                                        .scale = a.scale};
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_check_paged_meta(p.query_start, p.kv_lens, p.block_tables, p.num_seqs,
                                                              p.num_tokens, p.max_blocks, p.block_size, a.cache.dim(0),
                                                              be.kernel_error(), be.stream()));
    MOE_CUDA_RETURN_IF_ERROR(
        kernels::launch_mla_attention(p, elem_type(a.cache.dtype), be.kernel_error(), be.stream()));
    return finish_checked(be, "mla_attention", [&]() -> Status {
        MOE_ASSIGN_OR_RETURN(HostCopy qs, copy_to_host(be, a.query_start));
        MOE_ASSIGN_OR_RETURN(HostCopy kv, copy_to_host(be, a.kv_lens));
        MOE_ASSIGN_OR_RETURN(HostCopy tables, copy_to_host(be, a.block_tables));
        MlaAttentionArgs host = a;
        host.query_start = qs.view;
        host.kv_lens = kv.view;
        host.block_tables = tables.view;
        return ops::check_mla_attention_data(host);
    });
}

Status head_gemm(Backend& b, const HeadGemmArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    if (a.x.dim(1) > 65535)
        return unimplemented(fmt::format("head_gemm: {} heads; the CUDA grid takes at most 65535", a.x.dim(1)));
    const kernels::HeadGemmParams p{.x = a.x.ptr<const float>(),
                                    .x_token_stride = a.x.stride(0),
                                    .x_head_stride = a.x.stride(1),
                                    .w = a.w.data,
                                    .head_rows = a.head_rows,
                                    .row_offset = a.row_offset,
                                    .cols = a.w.dim(1),
                                    .transpose_w = a.transpose_w,
                                    .out = a.out.ptr<float>(),
                                    .tokens = a.x.dim(0),
                                    .heads = a.x.dim(1),
                                    .k = a.x.dim(2),
                                    .n = a.out.dim(2)};
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_head_gemm(p, elem_type(a.w.dtype), be.stream()));
    return ok_status();
}

Status moe_route_grouped(Backend& b, const MoeRouteGroupedArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    const int64_t E = a.logits.dim(1);
    if (E > kernels::kRouteGroupedMaxExperts)
        return unimplemented(fmt::format("moe_route_grouped: {} experts; the CUDA kernel handles up to {}", E,
                                         kernels::kRouteGroupedMaxExperts));
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_moe_route_grouped(
        a.logits.ptr<const float>(), a.bias.ptr<const float>(), a.topk_ids.ptr<int32_t>(), a.topk_weights.ptr<float>(),
        a.logits.dim(0), E, a.top_k, a.num_groups, a.topk_groups, a.renormalize, a.scaling_factor, be.stream()));
    return ok_status();
}

}  // namespace

void register_cuda_mla_ops(OpTable& table) {
    table.rope_table = &rope_table;
    table.latent_write = &latent_write;
    table.latent_gather = &latent_gather;
    table.mla_expand = &mla_expand;
    table.ragged_attention = &ragged_attention;
    table.mla_attention = &mla_attention;
    table.head_gemm = &head_gemm;
    table.moe_route_grouped = &moe_route_grouped;
}

}  // namespace moe::cuda
