#include <cuda_bf16.h>

#include "kernels/common/launch.h"
#include "kernels/kv_write/kv_write.cuh"
#include "kernels/kv_write/kv_write.h"

namespace moe::kernels {

cudaError_t launch_kv_write(const float* k, const float* v, const int64_t* slot_mapping, void* k_cache, void* v_cache,
                            ElemType cache_type, int64_t num_tokens, int64_t row, int64_t num_slots, KernelError* err,
                            cudaStream_t stream) {
    if (num_tokens == 0 || row == 0) return cudaSuccess;
    const unsigned grid = grid_for(num_tokens, 1);
    const int threads = threads_for_row(row, 1, 256);
    if (cache_type == ElemType::kF32) {
        kv_write_kernel<float><<<grid, threads, 0, stream>>>(k, v, slot_mapping, static_cast<float*>(k_cache),
                                                             static_cast<float*>(v_cache), num_tokens, row, num_slots,
                                                             err);
    } else {
        kv_write_kernel<__nv_bfloat16>
            <<<grid, threads, 0, stream>>>(k, v, slot_mapping, static_cast<__nv_bfloat16*>(k_cache),
                                           static_cast<__nv_bfloat16*>(v_cache), num_tokens, row, num_slots, err);
    }
    return cudaGetLastError();
}

}  // namespace moe::kernels
