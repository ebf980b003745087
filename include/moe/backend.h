// Backend: owns device memory, copies and the table of ops it implements.
//
// A Backend is a small virtual class plus an OpTable of plain function pointers, one per op.
// A null entry means "not supported on this backend"; ops::run_* turns that into
// StatusCode::kUnimplemented. Argument checking (shapes, dtypes) happens once above every
// backend, in ops::validate(); table entries may assume valid arguments.
//
// Thread safety: a Backend is used by one engine thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "moe/quant.h"
#include "moe/status.h"
#include "moe/tensor.h"

namespace moe {

class Backend;
class PreparedWeight;

struct EmbeddingArgs;
struct RmsNormArgs;
struct RopeArgs;
struct GemmArgs;
struct SiluMulArgs;
struct AddArgs;
struct KvWriteArgs;
struct AttentionArgs;
struct MoeRouteArgs;
struct MoeSharedGateArgs;
struct MoePermuteArgs;
struct MoeExpertsArgs;
struct MoeUnpermuteArgs;
struct RopeTableArgs;
struct LatentWriteArgs;
struct LatentGatherArgs;
struct MlaExpandArgs;
struct RaggedAttentionArgs;
struct MlaAttentionArgs;
struct HeadGemmArgs;
struct MoeRouteGroupedArgs;

// One entry per op. Signatures are uniform: (backend, args) -> Status.
struct OpTable {
    Status (*embedding)(Backend&, const EmbeddingArgs&) = nullptr;
    Status (*rms_norm)(Backend&, const RmsNormArgs&) = nullptr;
    Status (*rope)(Backend&, const RopeArgs&) = nullptr;
    Status (*gemm)(Backend&, const GemmArgs&) = nullptr;
    Status (*silu_mul)(Backend&, const SiluMulArgs&) = nullptr;
    Status (*add)(Backend&, const AddArgs&) = nullptr;
    Status (*kv_write)(Backend&, const KvWriteArgs&) = nullptr;
    Status (*attention)(Backend&, const AttentionArgs&) = nullptr;
    Status (*moe_route)(Backend&, const MoeRouteArgs&) = nullptr;
    Status (*moe_shared_gate)(Backend&, const MoeSharedGateArgs&) = nullptr;
    Status (*moe_permute)(Backend&, const MoePermuteArgs&) = nullptr;
    Status (*moe_experts)(Backend&, const MoeExpertsArgs&) = nullptr;
    Status (*moe_unpermute)(Backend&, const MoeUnpermuteArgs&) = nullptr;
    // Multi-head latent attention and DeepSeek-V3 routing (src/ops/mla_ops.h).
    Status (*rope_table)(Backend&, const RopeTableArgs&) = nullptr;
    Status (*latent_write)(Backend&, const LatentWriteArgs&) = nullptr;
    Status (*latent_gather)(Backend&, const LatentGatherArgs&) = nullptr;
    Status (*mla_expand)(Backend&, const MlaExpandArgs&) = nullptr;
    Status (*ragged_attention)(Backend&, const RaggedAttentionArgs&) = nullptr;
    Status (*mla_attention)(Backend&, const MlaAttentionArgs&) = nullptr;
    Status (*head_gemm)(Backend&, const HeadGemmArgs&) = nullptr;
    Status (*moe_route_grouped)(Backend&, const MoeRouteGroupedArgs&) = nullptr;
};

// Owned device buffer, freed through its backend.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    static StatusOr<DeviceBuffer> allocate(Backend& backend, size_t bytes);
    DeviceBuffer(DeviceBuffer&& other) noexcept;
    DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer();

    void* data() const { return data_; }
    size_t size() const { return size_; }
    void reset();

private:
    Backend* backend_ = nullptr;
    void* data_ = nullptr;
    size_t size_ = 0;
};

// How the model will use a weight it asks the backend to prepare (Backend::prepare_weight).
enum class WeightUse : uint8_t {
    // The weight of y = x * w^T (gemm, moe_experts), for products of any row count: the backend
    // may keep it in a layout of its own that its kernels read faster.
    kMatmul,
    // kMatmul for a matrix that decode streams from memory for a few rows a step (the model
    // prepares every matrix so: attention projections, experts, lm_head): the backend may also
    // choose a smaller form that costs more arithmetic per byte.
    kStreamedMatmul,
};

// A weight in the form a backend's kernels read, made by Backend::prepare_weight. The form is the
// backend's own business (a blocked layout, a compressed one, FP8 or MXFP4 with block scales:
// each is added inside one backend): everything outside that backend sees only the logical
// tensor and passes the handle back to the ops (WeightView).
class PreparedWeight {
public:
    virtual ~PreparedWeight() = default;
    PreparedWeight(const PreparedWeight&) = delete;
    PreparedWeight& operator=(const PreparedWeight&) = delete;

    // The backend that made it; ops refuse a handle of another backend.
    const Backend& backend() const { return *backend_; }
    // The weight as the model sees it: dtype and shape, on the backend's device. `data` points at
    // its plain row-major values in memory the backend owns, or is null when the backend keeps
    // only a form of its own (then only that backend's kernels can read it).
    const TensorView& logical() const { return logical_; }
    // Bytes of the backend's memory it holds.
    size_t bytes() const { return bytes_; }

protected:
    PreparedWeight(const Backend& backend, const TensorView& logical, size_t bytes)
        : backend_(&backend), logical_(logical), bytes_(bytes) {}

private:
    const Backend* backend_;
    TensorView logical_;
    size_t bytes_;
};

// A weight as the ops take it: the logical tensor (dtype and shape, checked by ops::validate;
// `data`, when not null, the plain row-major values that the references and plain kernels read)
// and optionally the backend's prepared form, which that backend's kernels read instead.
struct WeightView {
    TensorView tensor;
    const PreparedWeight* prepared = nullptr;

    WeightView() = default;
    // A weight the backend did not prepare (tests, small weights): its kernels read `t` as is.
    WeightView(const TensorView& t) : tensor(t) {}  // NOLINT(google-explicit-constructor)
    explicit WeightView(const PreparedWeight& w) : tensor(w.logical()), prepared(&w) {}

    // No weight at all (an expert that lives on another rank).
    bool empty() const { return tensor.data == nullptr && prepared == nullptr; }
    int64_t dim(int i) const { return tensor.dim(i); }
    DType dtype() const { return tensor.dtype; }
};

// The memory of a backend's device, in bytes.
struct MemoryInfo {
    int64_t total_bytes = 0;      // the device's (or the process's cgroup limit, when lower)
    int64_t available_bytes = 0;  // what new allocations can still get now
};

class Backend {
public:
    virtual ~Backend() = default;
    Backend(const Backend&) = delete;
    Backend& operator=(const Backend&) = delete;

    // "cpu", "cuda"
    virtual const char* name() const = 0;
    virtual Device device() const = 0;

    // Allocates `bytes` of device memory aligned to at least 64 bytes. Never returns null on OK.
    virtual StatusOr<void*> allocate(size_t bytes) = 0;
    virtual void deallocate(void* ptr) = 0;
    // Copies between host and this device (or within it). Synchronous on the CPU backend.
    virtual Status copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) = 0;
    // Waits for all queued work.
    virtual Status synchronize() = 0;
    // Threads the backend's kernels use (1 for devices that manage their own).
    virtual int num_threads() const { return 1; }
    // One line for the startup log: what the backend runs on and which kernels it picked. Empty
    // by default.
    virtual std::string describe() const { return {}; }
    // Prepares weight `w` for this backend's ops: copies it into memory the backend owns, in
    // whatever form its kernels read best for `use` (a plain copy by default). `w` is in host
    // memory, contiguous, of a dtype the ops take; it is only read during the call, so the
    // caller may free or unmap it afterwards: nothing the backend runs later reads it. `name`
    // (the checkpoint's tensor name) is for errors. The caller owns the handle and destroys it
    // before the backend. Called at model load, by one thread.
    // Errors: kInvalidArgument naming the weight (empty, not contiguous, not in host memory),
    // kResourceExhausted when the memory cannot be had.
    virtual StatusOr<std::unique_ptr<PreparedWeight>> prepare_weight(const std::string& name, const TensorView& w,
                                                                     WeightUse use);
    // A block-scaled matrix as the checkpoint stores it (include/moe/quant.h), kept in a form this
    // backend's gemm and moe_experts kernels read directly; logical() is [q.n, q.k] bf16 with no
    // data. The default refuses (kUnimplemented naming the backend and the format): a backend
    // that cannot multiply by a format says so at load, never by expanding it.
    virtual StatusOr<std::unique_ptr<PreparedWeight>> prepare_quantized_weight(const std::string& name,
                                                                               const QuantizedTensor& q, WeightUse use);
    // What the prepared weights alive now hold, in words, for the load log (counts per form and
    // bytes); empty when the backend has nothing to say.
    virtual std::string weight_summary() const { return {}; }
    // The memory of the device that holds this backend's allocations (the KV cache among them):
    // host memory within the process's cgroup limit for a host backend, the GPU's for a GPU
    // backend. kUnimplemented by default; backends may report kUnavailable.
    virtual StatusOr<MemoryInfo> memory_info() const;
    // Whether the moe_experts kernel rounds its f32 input rows to bf16 before multiplying by
    // weights of `weight_dtype` (then a caller may ship those rows as bf16 and get bitwise the
    // same result: expert parallelism's wire format). False by default.
    virtual bool moe_experts_round_input_to_bf16(DType weight_dtype) const {
        (void)weight_dtype;
        return false;
    }

    const OpTable& ops() const { return ops_; }

protected:
    Backend() = default;
    OpTable ops_;
};

// For implementations of Backend::prepare_weight: the checks every backend makes on `w`
// (present, in host memory, contiguous), as kInvalidArgument naming the weight.
Status check_weight_to_prepare(const std::string& name, const TensorView& w);

}  // namespace moe
