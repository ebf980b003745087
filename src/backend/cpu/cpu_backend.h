// The CPU backend: host memory from CpuAllocator, synchronous memcpy copies, a ThreadPool for
// the data-parallel kernels and a GemmEngine (OpenBLAS f32, oneDNN bf16) for matrix products.
// Op kernels live one per file in this directory, in namespace moe::cpu; they may assume
// validated arguments (ops::run validated them) and run the data checks themselves.
#pragma once

#include <memory>
#include <string>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_weight.h"
#include "core/thread_pool.h"
#include "moe/backend.h"
#include "moe/cpu_backend.h"
#include "ops/mla_ops.h"
#include "ops/ops.h"

namespace moe::cpu {

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(const CpuBackendOptions& options);
    ~CpuBackend() override;

    const char* name() const override { return "cpu"; }
    Device device() const override { return Device{}; }
    StatusOr<void*> allocate(size_t bytes) override;
    void deallocate(void* ptr) override;
    Status copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) override;
    Status synchronize() override { return ok_status(); }
    int num_threads() const override { return pool_.size(); }
    // "2 threads, <cpu features>; bf16 products: <matmul()>"
    std::string describe() const override;
    // bf16 [N, K] matrices -> column panels (bf16_panels.h) when options.pack_weights and the
    // CPU has AVX512-BF16; for kStreamedMatmul with options.compress_streamed, their lossless
    // 12-bit form when the matrix keeps at most 1 in 1024 values as exceptions. Anything else: a
    // plain row-major copy. Always a CpuWeight (cpu_weight.h), in memory the backend owns.
    StatusOr<std::unique_ptr<PreparedWeight>> prepare_weight(const std::string& name, const TensorView& w,
                                                             WeightUse use) override;
    // Block-scaled checkpoint formats (moe/quant.h), after validate_quantized, kept as the
    // checkpoint stores them: FP8 e4m3 block-scaled (#20), 1 byte per weight plus the f32 block
    // scales (CpuLayout::kFp8Block, fp8_block.h); MXFP4 (#24; CpuLayout::kMxfp4: values then
    // scales in one buffer, 4.25 bits per weight; mxfp4_block.h), refused when a weight is not
    // finite in f32.
    StatusOr<std::unique_ptr<PreparedWeight>> prepare_quantized_weight(const std::string& name,
                                                                       const QuantizedTensor& q,
                                                                       WeightUse use) override;
    // "64 in the lossless 12-bit form, 3 in bf16 column panels, 1 row-major; 812.0 MiB"
    std::string weight_summary() const override;
    // /proc/meminfo capped by the process's cgroup memory limit (host_memory.h).
    StatusOr<MemoryInfo> memory_info() const override;
    // bf16 weights on the AVX512-BF16 route of moe_experts (moe_experts.cc: the same test).
    bool moe_experts_round_input_to_bf16(DType weight_dtype) const override;

    // Who multiplies by bf16 matrices: "own AVX512-BF16 kernels", "oneDNN brg:avx512_core_amx
    // over the packed panels", ... (CpuBackendOptions::matmul as resolved on this CPU).
    const std::string& matmul() const { return matmul_; }

    ThreadPool& pool() { return pool_; }
    GemmEngine& gemm_engine() { return gemm_; }

private:
    void resolve_matmul(CpuMatmul requested);
    // w (bf16 [n, k], packable) as column panels / in their 12-bit form (an empty buffer when
    // the form would keep too many exceptions to pay).
    StatusOr<DeviceBuffer> pack_panels(const TensorView& w);
    StatusOr<DeviceBuffer> pack_panels12(const TensorView& w);
    // mxfp4_weight.cc
    StatusOr<std::unique_ptr<PreparedWeight>> prepare_mxfp4(const std::string& name, const QuantizedTensor& q);

    bool pack_weights_;
    bool compress_streamed_;
    ThreadPool pool_;
    GemmEngine gemm_;
    std::string matmul_;
    CpuWeightCounts weight_counts_;
};

// Table entries are only installed on a CpuBackend, so the downcast is safe.
inline CpuBackend& as_cpu(Backend& be) {
    return static_cast<CpuBackend&>(be);
}

Status embedding(Backend& be, const EmbeddingArgs& a);
Status rms_norm(Backend& be, const RmsNormArgs& a);
Status rope(Backend& be, const RopeArgs& a);
Status gemm(Backend& be, const GemmArgs& a);
Status silu_mul(Backend& be, const SiluMulArgs& a);
Status add(Backend& be, const AddArgs& a);
Status kv_write(Backend& be, const KvWriteArgs& a);
Status attention(Backend& be, const AttentionArgs& a);
Status moe_route(Backend& be, const MoeRouteArgs& a);
Status moe_shared_gate(Backend& be, const MoeSharedGateArgs& a);
Status moe_permute(Backend& be, const MoePermuteArgs& a);
Status moe_experts(Backend& be, const MoeExpertsArgs& a);
Status moe_unpermute(Backend& be, const MoeUnpermuteArgs& a);
// mla_ops.cc
Status rope_table(Backend& be, const RopeTableArgs& a);
Status latent_write(Backend& be, const LatentWriteArgs& a);
Status latent_gather(Backend& be, const LatentGatherArgs& a);
Status mla_expand(Backend& be, const MlaExpandArgs& a);
Status ragged_attention(Backend& be, const RaggedAttentionArgs& a);
Status mla_attention(Backend& be, const MlaAttentionArgs& a);
Status head_gemm(Backend& be, const HeadGemmArgs& a);
Status moe_route_grouped(Backend& be, const MoeRouteGroupedArgs& a);

// A dot product with 8 independent f32 partial sums, so the compiler vectorizes it and the
// summation order (hence the result) is fixed.
inline float dot_f32(const float* a, const float* b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
    for (; i < n; ++i) acc[0] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

}  // namespace moe::cpu
