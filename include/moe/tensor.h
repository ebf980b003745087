// Non-owning tensor views: pointer, dtype, device, shape and strides (in elements).
//
// Views never own memory; whoever allocated the buffer (a Backend, a test) keeps it alive for as
// long as any view of it is used. A weight in a backend's own form is a PreparedWeight
// (moe/backend.h), not a view.
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
