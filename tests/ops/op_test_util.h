// The op test driver's plumbing: the list of backends to test, backend buffers with canaries
// around them, random inputs with a printed seed, and the comparisons (per-element tolerance
// with NaN/Inf parity, exact, bitwise).
//
// Every op test runs each case on every backend from backend_factories() (backend_factories.h),
// against the naive reference (ref::*) on host copies of the same inputs: tensors reach a backend
// only through DeviceArena (Backend::allocate/copy), so the same case runs on host and device
// memory alike.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "moe/backend.h"
#include "moe/cpu_backend.h"
#include "moe/dtype.h"
#include "moe/tensor.h"
#include "ops/backend_factories.h"
#include "ops/ops.h"

namespace moe::testing {

// Backend memory for a test case. Each buffer gets kPad canary bytes before and after it;
// outputs are pre-filled with a byte pattern (NaN for floats, -1 for ints) so unwritten
// elements show up.
class DeviceArena {
public:
    static constexpr size_t kPad = 64;
    static constexpr uint8_t kCanary = 0xA5;

    explicit DeviceArena(Backend& be) : be_(be) {}
    ~DeviceArena() { expect_canaries_intact(); }

    template <typename T>
    TensorView put(const std::vector<T>& host, DType dtype, std::initializer_list<int64_t> shape) {
        TensorView v = alloc(dtype, shape, 0);
        EXPECT_EQ(host.size() * sizeof(T), v.nbytes()) << "test bug: host size does not match the shape";
        copy_in(v.data, host.data(), std::min(host.size() * sizeof(T), v.nbytes()));
        return v;
    }

    // An uninitialized output, filled with `fill` bytes.
    TensorView alloc(DType dtype, std::initializer_list<int64_t> shape, uint8_t fill = 0xFF) {
        TensorView v = TensorView::make(nullptr, dtype, shape, be_.device());
        const size_t bytes = v.nbytes();
        auto buf = DeviceBuffer::allocate(be_, bytes + 2 * kPad);
        EXPECT_TRUE(buf.ok()) << buf.status().to_string();
        std::vector<uint8_t> init(bytes + 2 * kPad, kCanary);
        std::memset(init.data() + kPad, fill, bytes);
        Status s = be_.copy(buf->data(), be_.device(), init.data(), Device{}, init.size());
        EXPECT_TRUE(s.ok()) << s.to_string();
        v.data = static_cast<uint8_t*>(buf->data()) + kPad;
        entries_.push_back({std::move(buf).value(), bytes});
        return v;
    }

    template <typename T>
    std::vector<T> get(const TensorView& v) {
        // Whole extent, including any gaps of a strided view.
        int64_t extent = 1;
        for (int d = 0; d < v.ndim; ++d) extent += (v.dim(d) - 1) * v.stride(d);
        if (v.numel() == 0) extent = 0;
        std::vector<T> host(static_cast<size_t>(extent) * dtype_size(v.dtype) / sizeof(T));
        Status s = be_.copy(host.data(), Device{}, v.data, be_.device(), host.size() * sizeof(T));
        EXPECT_TRUE(s.ok()) << s.to_string();
        return host;
    }

    void copy_in(void* dst, const void* src, size_t bytes) {
        Status s = be_.copy(dst, be_.device(), src, Device{}, bytes);
        EXPECT_TRUE(s.ok()) << s.to_string();
    }

    void expect_canaries_intact() {
        for (size_t i = 0; i < entries_.size(); ++i) {
            const Entry& e = entries_[i];
            std::vector<uint8_t> all(e.bytes + 2 * kPad);
            Status s = be_.copy(all.data(), Device{}, e.buf.data(), be_.device(), all.size());
            EXPECT_TRUE(s.ok()) << s.to_string();
            for (size_t b = 0; b < kPad; ++b) {
                if (all[b] != kCanary || all[kPad + e.bytes + b] != kCanary) {
                    ADD_FAILURE() << "buffer " << i << " (" << e.bytes << " bytes): canary overwritten at "
                                  << (all[b] != kCanary ? "front" : "back") << " byte " << b;
                    break;
                }
            }
        }
    }

private:
    struct Entry {
        DeviceBuffer buf;
        size_t bytes;
    };
    Backend& be_;
    std::vector<Entry> entries_;
};

// A 2-D view [rows, cols] with row stride `ld` over a flat tensor.
inline TensorView rows_view(TensorView flat, int64_t rows, int64_t cols, int64_t ld) {
    TensorView v = flat;
    v.ndim = 2;
    v.shape = {rows, cols, 0, 0};
    v.strides = {ld, 1, 0, 0};
    return v;
}

inline TensorView host_view(void* data, DType dtype, std::initializer_list<int64_t> shape) {
    return TensorView::make(data, dtype, shape);
}

class Rng {
public:
    explicit Rng(uint32_t seed) : gen_(seed) {}
    std::vector<float> uniform(size_t n, float lo, float hi) {
        std::uniform_real_distribution<float> d(lo, hi);
        std::vector<float> v(n);
        for (auto& x : v) x = d(gen_);
        return v;
    }
    // Small integers: products and sums stay exact in f32 and in bf16.
    std::vector<float> small_ints(size_t n, int lo, int hi) {
        std::uniform_int_distribution<int> d(lo, hi);
        std::vector<float> v(n);
        for (auto& x : v) x = static_cast<float>(d(gen_));
        return v;
    }
    std::vector<int32_t> ints(size_t n, int32_t lo, int32_t hi) {
        std::uniform_int_distribution<int32_t> d(lo, hi);
        std::vector<int32_t> v(n);
        for (auto& x : v) x = d(gen_);
        return v;
    }
    int32_t one(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(gen_); }
    std::mt19937& gen() { return gen_; }

private:
    std::mt19937 gen_;
};

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
    return out;
}

// |got - ref| <= atol + rtol * |ref| for every element; NaN where ref is NaN; same infinities.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double atol, double rtol,
                         const std::string& what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    int failures = 0;
    double worst = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        const double g = got[i], r = ref[i];
        bool ok;
        if (std::isnan(r) || std::isnan(g)) {
            ok = std::isnan(r) && std::isnan(g);
        } else if (std::isinf(r) || std::isinf(g)) {
            ok = g == r;
        } else {
            const double err = std::fabs(g - r);
            worst = std::max(worst, err / (atol + rtol * std::fabs(r)));
            ok = err <= atol + rtol * std::fabs(r);
        }
        if (!ok && ++failures <= 5)
            ADD_FAILURE() << what << "[" << i << "]: got " << g << ", reference " << r << " (atol " << atol << ", rtol "
                          << rtol << ")";
    }
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << ref.size() << " elements out of tolerance";
}

template <typename T>
void expect_exact(const std::vector<T>& got, const std::vector<T>& ref, const std::string& what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    int failures = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        if (std::memcmp(&got[i], &ref[i], sizeof(T)) != 0 && ++failures <= 5)
            ADD_FAILURE() << what << "[" << i << "]: got " << +got[i] << ", reference " << +ref[i];
    }
    EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << ref.size() << " elements differ";
}

template <typename T>
void expect_bitwise_equal(const std::vector<T>& a, const std::vector<T>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(T)), 0)
        << what << ": two runs differ (not deterministic)";
}

// Experts' bf16 weights (w[0] gate and w[1] up [inter, hidden], w[2] down [hidden, inter], one
// vector per expert) as host views with the forms `be` prepares of them: as streamed matrices
// (WeightUse::kStreamedMatmul) or not (kMatmul). packs own the prepared weights.
struct PackedExperts {
    std::vector<WeightView> views[3];
    std::vector<std::unique_ptr<PreparedWeight>> packs;
};

inline PackedExperts pack_experts(Backend& be, std::vector<std::vector<uint16_t>> (&w)[3], int64_t hidden,
                                  int64_t inter, bool streamed) {
    PackedExperts pe;
    for (int m = 0; m < 3; ++m)
        for (auto& data : w[m]) {
            TensorView v = m == 2 ? host_view(data.data(), DType::kBF16, {hidden, inter})
                                  : host_view(data.data(), DType::kBF16, {inter, hidden});
            auto p = be.prepare_weight("expert", v, streamed ? WeightUse::kStreamedMatmul : WeightUse::kMatmul);
            EXPECT_TRUE(p.ok());
            WeightView wv(v);
            if (p.ok()) {
                wv.prepared = p.value().get();
                pe.packs.push_back(std::move(p.value()));
            }
            pe.views[m].push_back(wv);
        }
    return pe;
}

// ops::moe_experts over pe's views for the rows of x that `offsets` (num_experts + 1) assigns,
// on host memory; the output rows (offsets.back() x hidden).
inline std::vector<float> run_packed_experts(Backend& be, const PackedExperts& pe, const std::vector<float>& x,
                                             const std::vector<int32_t>& offsets, int64_t hidden) {
    const int64_t rows = offsets.back();
    const int64_t num_experts = static_cast<int64_t>(offsets.size()) - 1;
    std::vector<float> out(static_cast<size_t>(rows * hidden), -1.0f);
    MoeExpertsArgs a{host_view(const_cast<float*>(x.data()), DType::kF32, {rows, hidden}),
                     host_view(const_cast<int32_t*>(offsets.data()), DType::kI32, {num_experts + 1}),
                     pe.views[0],
                     pe.views[1],
                     pe.views[2],
                     host_view(out.data(), DType::kF32, {rows, hidden})};
    EXPECT_TRUE(ops::run(be, a).ok());
    return out;
}

// Elements [r, c < cols] of a row-strided host buffer, packed.
inline std::vector<float> pack_rows(const std::vector<float>& strided, int64_t rows, int64_t cols, int64_t ld) {
    std::vector<float> out(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
            out[static_cast<size_t>(r * cols + c)] = strided[static_cast<size_t>(r * ld + c)];
    return out;
}

#define MOE_ASSERT_OK(expr)                             \
    do {                                                \
        const ::moe::Status moe_s_ = (expr);            \
        ASSERT_TRUE(moe_s_.ok()) << moe_s_.to_string(); \
    } while (0)

}  // namespace moe::testing
