// Non-owning tensor views: pointer, dtype, device, shape and strides (in elements).
//
// Views never own memory; whoever allocated the buffer (a Backend, a weight mmap, a test)
// keeps it alive for as long as any view of it is used.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "moe/dtype.h"

namespace moe {

enum class DeviceKind : uint8_t { kCpu = 0, kCuda };

struct Device {
    DeviceKind kind = DeviceKind::kCpu;
    int index = 0;
    bool operator==(const Device&) const = default;
    std::string to_string() const;
};

inline constexpr int kMaxDims = 4;

struct TensorView {
    void* data = nullptr;
    DType dtype = DType::kF32;
    Device device{};
    int ndim = 0;
    std::array<int64_t, kMaxDims> shape{};
    std::array<int64_t, kMaxDims> strides{};  // in elements
    // Optional: the same whole matrix in a layout of the backend's own, made once at load by
    // Backend::pack_matrix (the CPU backend's bf16 column panels, bf16_panels.h). Kernels that
    // know the layout read it instead of `data`; everything else reads `data`, which stays
    // valid. Describes the whole view: code that takes a sub-view of a weight must clear it.
    const void* packed = nullptr;
    // Which of the backend's layouts `packed` holds (backend-defined; 0: its default). The CPU
    // backend: 0 bf16 column panels, 1 their lossless 12-bit form (pack_streamed_matrix,
    // bf16_panels.h).
    uint8_t packed_layout = 0;

    // Contiguous row-major view.
    static TensorView make(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device = {});

    int64_t dim(int i) const { return shape[static_cast<size_t>(i)]; }
    int64_t stride(int i) const { return strides[static_cast<size_t>(i)]; }
    int64_t numel() const;
    size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
    bool is_contiguous() const;
    bool empty() const { return data == nullptr; }

    template <typename T>
    T* ptr() const {
        return static_cast<T*>(data);
    }

    // "bf16[4, 64] cpu"
    std::string to_string() const;
};

// Convenience for tests and host code: same shape?
bool same_shape(const TensorView& a, const TensorView& b);

}  // namespace moe
