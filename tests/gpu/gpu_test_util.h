// Helpers for the CUDA backend tests: a fixture that skips visibly without a GPU, host <-> device
// copies of tensor views (strided ones included), random inputs and an all-elements comparison.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <sstream>
#include <vector>

#include "moe/backend.h"
#include "moe/cuda_backend.h"
#include "moe/status.h"
#include "moe/tensor.h"

namespace moe::gpu_test {

// Each test gets its own backend on device 0. No device (any cudaGetDeviceCount error, or zero
// devices) skips the test with the reason; any other failure to create the backend fails it.
class CudaTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto be = make_cuda_backend(0);
        if (!be.ok()) {
            if (be.status().code() == StatusCode::kUnavailable) GTEST_SKIP() << be.status().message();
            FAIL() << "make_cuda_backend(0): " << be.status().to_string();
        }
        be_ = std::move(be).value();
    }
    Backend& be() { return *be_; }
    std::unique_ptr<Backend> be_;
};

// A 2-D view with a row stride (in elements).
inline TensorView view2d(void* data, DType dtype, int64_t rows, int64_t cols, int64_t row_stride, Device device = {}) {
    TensorView t = TensorView::make(data, dtype, {rows, cols}, device);
    t.strides[0] = row_stride;
    return t;
}

// Elements from the first to one past the last addressed element of `t`.
inline int64_t span_elems(const TensorView& t) {
    if (t.numel() == 0) return 0;
    int64_t last = 0;
    for (int d = 0; d < t.ndim; ++d) last += (t.dim(d) - 1) * t.stride(d);
    return last + 1;
}

// A device copy of a host view: the same shape and strides, its own buffer.
struct DeviceTensor {
    DeviceBuffer buffer;
    TensorView view;
};

inline StatusOr<DeviceTensor> to_device(Backend& be, const TensorView& host) {
    const size_t bytes = static_cast<size_t>(span_elems(host)) * dtype_size(host.dtype);
    MOE_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::allocate(be, bytes));
    MOE_RETURN_IF_ERROR(be.copy(buf.data(), be.device(), host.data, Device{}, bytes));
    DeviceTensor d{std::move(buf), host};
    d.view.data = d.buffer.data();
    d.view.device = be.device();
    return d;
}

// Copies the whole span of `dev` back over the host view `host` (same shape and strides).
inline Status to_host(Backend& be, const DeviceTensor& dev, const TensorView& host) {
    const size_t bytes = static_cast<size_t>(span_elems(host)) * dtype_size(host.dtype);
    return be.copy(host.data, Device{}, dev.view.data, be.device(), bytes);
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
}

// Small integers as floats: GEMMs on them are exact in f32 and bf16, so results compare exactly.
inline std::vector<float> random_small_ints(size_t n, uint32_t seed, int lo = -4, int hi = 4) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = static_cast<float>(dist(rng));
    return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
    return out;
}

// Rows [0, rows) x cols [0, cols) of a buffer with a row stride, packed.
inline std::vector<float> packed_rows(const std::vector<float>& buf, int64_t rows, int64_t cols, int64_t stride) {
    std::vector<float> out;
    out.reserve(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) out.push_back(buf[static_cast<size_t>(r * stride + c)]);
    return out;
}

// Every element: NaN where the reference is NaN, the same infinity where it is infinite, else
// |got - want| <= atol + rtol * |want|. Reports the count and the first few mismatches.
inline ::testing::AssertionResult all_close(std::span<const float> got, std::span<const float> want, double atol,
                                            double rtol) {
    if (got.size() != want.size())
        return ::testing::AssertionFailure() << "size " << got.size() << " vs reference " << want.size();
    size_t bad = 0;
    std::ostringstream first;
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = got[i];
        const double w = want[i];
        bool ok;
        if (std::isnan(w) || std::isinf(w)) {
            ok = std::isnan(w) ? std::isnan(g) : g == w;
        } else {
            ok = std::isfinite(g) && std::fabs(g - w) <= atol + rtol * std::fabs(w);
        }
        if (!ok && bad++ < 5) first << "\n  [" << i << "] got " << g << ", reference " << w;
    }
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements differ (atol " << atol
                                         << ", rtol " << rtol << "):" << first.str();
}

template <typename T>
::testing::AssertionResult bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    if (a.size() != b.size()) return ::testing::AssertionFailure() << "size " << a.size() << " vs " << b.size();
    if (std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0) return ::testing::AssertionSuccess();
    size_t i = 0;
    while (std::memcmp(&a[i], &b[i], sizeof(T)) == 0) ++i;
    return ::testing::AssertionFailure() << "first difference at element " << i;
}

}  // namespace moe::gpu_test

// Fails the test (with the status) when `expr` is not OK.
#define MOE_ASSERT_OK(expr)                                                 \
    do {                                                                    \
        const ::moe::Status moe_test_status_ = (expr);                      \
        ASSERT_TRUE(moe_test_status_.ok()) << moe_test_status_.to_string(); \
    } while (0)

// Binds the value of a StatusOr expression or fails the test.
#define MOE_ASSERT_OK_AND_ASSIGN(lhs, expr) \
    MOE_ASSERT_OK_AND_ASSIGN_IMPL_(MOE_STATUS_CONCAT_(moe_test_or_, __LINE__), lhs, expr)
#define MOE_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
    auto tmp = (expr);                                 \
    ASSERT_TRUE(tmp.ok()) << tmp.status().to_string(); \
    lhs = std::move(tmp).value()
