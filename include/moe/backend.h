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

#include "moe/status.h"
#include "moe/tensor.h"

namespace moe {

class Backend;

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
    // One line for the startup log: what the backend runs on and which kernels it picked
    // ("2 threads, avx512f avx512bw ...; bf16 products: own AVX512-BF16 kernels"). Empty by default.
    virtual std::string describe() const { return {}; }
    // A copy of matrix `w` (2-D, on this device) in a layout this backend's kernels read
    // faster, to be set as w.packed by the caller, who owns it for as long as w is used; an
    // empty buffer when the backend keeps no such layout for w (the default). Called once per
    // matrix at model load.
    virtual StatusOr<DeviceBuffer> pack_matrix(const TensorView& w) {
        (void)w;
        return DeviceBuffer{};
    }
    // pack_matrix for a matrix that decode streams from memory for a few rows a step (the model
    // loads every matrix so: attention projections, experts, lm_head): the backend may choose a
    // smaller layout that costs more arithmetic per byte. *layout gets the value for
    // w.packed_layout.
    virtual StatusOr<DeviceBuffer> pack_streamed_matrix(const TensorView& w, uint8_t* layout) {
        *layout = 0;
        return pack_matrix(w);
    }

    const OpTable& ops() const { return ops_; }

protected:
    Backend() = default;
    OpTable ops_;
};

}  // namespace moe
