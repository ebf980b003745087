#include <cub/device/device_scan.cuh>

#include "kernels/common/launch.h"
#include "kernels/moe_permute/moe_permute.cuh"
#include "kernels/moe_permute/moe_permute.h"

namespace moe::kernels {
namespace {

constexpr size_t kAlign = 256;

size_t align_up(size_t n) {
    return (n + kAlign - 1) / kAlign * kAlign;
}

}  // namespace

cudaError_t moe_permute_scratch_bytes(const PermutePlan& plan, size_t* bytes) {
    size_t cub_bytes = 0;
    const cudaError_t e = cub::DeviceScan::ExclusiveSum(nullptr, cub_bytes, static_cast<const int32_t*>(nullptr),
                                                        static_cast<int32_t*>(nullptr), plan.counts_len);
    if (e != cudaSuccess) return e;
    *bytes = 2 * align_up(static_cast<size_t>(plan.counts_len) * sizeof(int32_t)) + align_up(cub_bytes);
    return cudaSuccess;
}

cudaError_t launch_moe_permute(const float* x, const int32_t* topk_ids, int64_t num_tokens, int64_t top_k,
                               int64_t hidden, const PermutePlan& plan, float* x_permuted, int32_t* expert_offsets,
                               int32_t* row_of, int32_t* token_of, void* scratch, size_t scratch_bytes,
                               KernelError* err, cudaStream_t stream) {
    if (!permute_supported(plan.num_experts)) return cudaErrorInvalidValue;
    if (plan.num_pairs == 0)
        return cudaMemsetAsync(expert_offsets, 0, (plan.num_experts + 1) * sizeof(int32_t), stream);
    const size_t counts_bytes = align_up(static_cast<size_t>(plan.counts_len) * sizeof(int32_t));
    if (scratch_bytes < 2 * counts_bytes) return cudaErrorInvalidValue;
    auto* counts = static_cast<int32_t*>(scratch);
    auto* bases = reinterpret_cast<int32_t*>(static_cast<char*>(scratch) + counts_bytes);
    void* cub_temp = static_cast<char*>(scratch) + 2 * counts_bytes;
    size_t cub_bytes = scratch_bytes - 2 * counts_bytes;
    const unsigned chunks = static_cast<unsigned>(plan.num_chunks);
    const int experts = static_cast<int>(plan.num_experts);
    moe_permute_count_kernel<<<chunks, kPermuteChunk, plan.smem_bytes, stream>>>(topk_ids, plan.num_pairs, experts,
                                                                                 plan.num_chunks, counts, err);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    e = cub::DeviceScan::ExclusiveSum(cub_temp, cub_bytes, counts, bases, plan.counts_len, stream);
    if (e != cudaSuccess) return e;
    moe_permute_scatter_kernel<<<chunks, kPermuteChunk, plan.smem_bytes, stream>>>(
        topk_ids, plan.num_pairs, experts, plan.num_chunks, top_k, counts, bases, row_of, token_of, expert_offsets);
    e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    moe_permute_gather_kernel<<<grid_for(plan.num_pairs, 1), threads_for_row(hidden, 1, 256), 0, stream>>>(
        x, token_of, x_permuted, plan.num_pairs, num_tokens, hidden);
    return cudaGetLastError();
}

}  // namespace moe::kernels
