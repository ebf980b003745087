// Adapters from the op Args (tensor views, already validated and placed on this device by
// ops::run) to the kernel launchers in kernels/ and to cuBLAS.
#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_mxfp4.h"
#include "kernels/add/add.h"
#include "kernels/cast/cast.h"
#include "kernels/embedding/embedding.h"
#include "kernels/kv_write/kv_write.h"
#include "kernels/rms_norm/rms_norm.h"
#include "kernels/rope/rope.h"
#include "kernels/silu_mul/silu_mul.h"
#include "ops/ops.h"

namespace moe::cuda {
namespace {

CudaBackend& cuda_of(Backend& be) {
    return static_cast<CudaBackend&>(be);
}

kernels::ElemType elem_type(DType d) {
    return d == DType::kBF16 ? kernels::ElemType::kBF16 : kernels::ElemType::kF32;
}

// The element at `index` of a device i32/i64 array, for error messages only (waits for the stream).
template <typename T>
StatusOr<int64_t> read_device_value(CudaBackend& be, const T* array, int64_t index) {
    T value{};
    MOE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&value, array + index, sizeof(T), cudaMemcpyDeviceToHost, be.stream()));
    MOE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(be.stream()));
    return static_cast<int64_t>(value);
}

// Waits for the index-checking kernel just queued and turns a recorded bad index into the same
// kOutOfRange message the reference gives: "<op>: <name>[i] = v is outside [lo, hi)<suffix>".
// NOTE: this costs a stream sync per call; a deferred check at the step's sync point can replace
// it once the engine runs on the GPU (the error block already accumulates across launches).
template <typename T>
Status report_bad_index(CudaBackend& be, const char* op, const char* name, const T* values, int64_t lo, int64_t hi,
                        const char* suffix = "") {
    MOE_ASSIGN_OR_RETURN(kernels::KernelError err, be.read_kernel_error());
    if (!kernels::has_error(err)) return ok_status();
    const int64_t row = kernels::first_bad_row(err);
    MOE_ASSIGN_OR_RETURN(int64_t value, read_device_value(be, values, row));
    return out_of_range(fmt::format("{}: {}[{}] = {} is outside [{}, {}){} ({} bad in all)", op, name, row, value, lo,
                                    hi, suffix, err.num_bad));
}

Status embedding(Backend& b, const EmbeddingArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const auto* ids = a.ids.ptr<const int32_t>();
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_embedding(ids, a.table.data, elem_type(a.table.dtype), a.out.ptr<float>(),
                                                       a.ids.dim(0), a.table.dim(0), a.table.dim(1), be.kernel_error(),
                                                       be.stream()));
    return report_bad_index(be, "embedding", "ids", ids, 0, a.table.dim(0));
}

Status rms_norm(Backend& b, const RmsNormArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_rms_norm(a.x.ptr<const float>(), a.x.stride(0),
                                                      a.weight.ptr<const float>(), a.out.ptr<float>(), a.out.stride(0),
                                                      a.x.dim(0), a.x.dim(1), a.eps, be.stream()));
    return ok_status();
}

Status rope(Backend& b, const RopeArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const kernels::RopeParams params{
        .num_tokens = a.q.dim(0),
        .num_q_heads = a.q.dim(1),
        .num_kv_heads = a.k.dim(1),
        .head_dim = a.q.dim(2),
        .rotary_dim = a.rotary_dim,
        .theta = a.theta,
        .inv_freq = a.inv_freq.empty() ? nullptr : a.inv_freq.ptr<const float>(),
        .attention_factor = a.attention_factor,
    };
    const auto* positions = a.positions.ptr<const int32_t>();
    MOE_CUDA_RETURN_IF_ERROR(
        kernels::launch_rope(a.q.ptr<float>(), a.k.ptr<float>(), positions, params, be.kernel_error(), be.stream()));
    return report_bad_index(be, "rope", "positions", positions, 0, int64_t{INT32_MAX} + 1);
}

Status silu_mul(Backend& b, const SiluMulArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_silu_mul(a.gate.ptr<const float>(), a.gate.stride(0),
                                                      a.up.ptr<const float>(), a.up.stride(0), a.out.ptr<float>(),
                                                      a.gate.dim(0), a.gate.dim(1), be.stream()));
    return ok_status();
}

Status add(Backend& b, const AddArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_add(a.a.ptr<const float>(), a.b.ptr<const float>(), a.out.ptr<float>(),
                                                 a.a.numel(), be.stream()));
    return ok_status();
}

Status kv_write(Backend& b, const KvWriteArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    MOE_RETURN_IF_ERROR(be.reset_kernel_error());
    const int64_t num_slots = a.k_cache.dim(0) * a.k_cache.dim(1);
    const auto* slots = a.slot_mapping.ptr<const int64_t>();
    MOE_CUDA_RETURN_IF_ERROR(kernels::launch_kv_write(
        a.k.ptr<const float>(), a.v.ptr<const float>(), slots, a.k_cache.data, a.v_cache.data,
        elem_type(a.k_cache.dtype), a.k.dim(0), a.k.dim(1) * a.k.dim(2), num_slots, be.kernel_error(), be.stream()));
    return report_bad_index(be, "kv_write", "slot_mapping", slots, -1, num_slots,
                            " (blocks * block_size of the cache)");
}

// Row-major y[M, N] = x[M, K] * w[N, K]^T is, in cuBLAS's column-major terms, y^T[N, M] =
// op(W)[N, K] * x^T[K, M] where the buffer of w read column-major is W = w^T [K, N] (ld K), so
// op = T; x's buffer read column-major is x^T [K, M] with ld = x's row stride; y^T has ld = y's
// row stride.
//
//   y (row-major M x N, ld_y)  ==  y^T (col-major N x M, ld_y)  =  w (T, lda K) * x (N, ldb ld_x)
Status gemm(Backend& b, const GemmArgs& a) {
    CudaBackend& be = cuda_of(b);
    MOE_RETURN_IF_ERROR(be.activate());
    const int64_t m = a.x.dim(0);
    const int64_t k = a.x.dim(1);
    const int64_t n = a.w.dim(0);
    if (m == 0) return ok_status();
    for (int64_t v : {m, n, k, a.x.stride(0), a.y.stride(0)}) {
        if (v > INT_MAX) {
            return unimplemented(fmt::format("gemm: cuBLAS takes 32-bit sizes; got M={} N={} K={} (ld_x {}, ld_y {})",
                                             m, n, k, a.x.stride(0), a.y.stride(0)));
        }
    }
    const int mi = static_cast<int>(m);
    const int ni = static_cast<int>(n);
    const int ki = static_cast<int>(k);
    // For a single row, strides are meaningless to validate() but cuBLAS wants ld >= rows.
    const int ld_x = std::max(static_cast<int>(a.x.stride(0)), ki);
    const int ld_y = std::max(static_cast<int>(a.y.stride(0)), ni);
    const float alpha = 1.0f;
    const float beta = a.accumulate ? 1.0f : 0.0f;
    if (const CudaMxfp4Weight* mx = as_mxfp4(a.w)) {
        MOE_RETURN_IF_ERROR(mxfp4_gemm(be, a, *mx));
    } else if (a.w.dtype() == DType::kF32) {
        MOE_CUDA_RETURN_IF_ERROR(cublasSgemm(be.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, ni, mi, ki, &alpha,
                                             a.w.tensor.ptr<const float>(), ki, a.x.ptr<const float>(), ld_x, &beta,
                                             a.y.ptr<float>(), ld_y));
    } else {
        // bf16 weights: x is rounded to bf16 (one small pass over M*K) so that the tensor cores take
        // both operands; products and sums stay in f32 (CUBLAS_COMPUTE_32F).
        MOE_ASSIGN_OR_RETURN(void* xb, be.scratch(static_cast<size_t>(m * k) * sizeof(uint16_t)));
        MOE_CUDA_RETURN_IF_ERROR(kernels::launch_cast_f32_to_bf16(a.x.ptr<const float>(), a.x.stride(0),
                                                                  static_cast<uint16_t*>(xb), m, k, be.stream()));
        MOE_CUDA_RETURN_IF_ERROR(cublasGemmEx(be.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, ni, mi, ki, &alpha,
                                              a.w.tensor.data, CUDA_R_16BF, ki, xb, CUDA_R_16BF, ki, &beta, a.y.data,
                                              CUDA_R_32F, ld_y, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (!a.bias.empty()) {
        MOE_CUDA_RETURN_IF_ERROR(
            kernels::launch_add_bias_rows(a.y.ptr<float>(), ld_y, a.bias.ptr<const float>(), m, n, be.stream()));
    }
    return ok_status();
}

}  // namespace

void register_cuda_ops(OpTable& table) {
    table.embedding = &embedding;
    table.rms_norm = &rms_norm;
    table.rope = &rope;
    table.gemm = &gemm;
    table.silu_mul = &silu_mul;
    table.add = &add;
    table.kv_write = &kv_write;
    register_cuda_moe_ops(table);
}

}  // namespace moe::cuda
