// The CPU backend's 12-bit panels (bf16_panels.h) packed directly, for the tests that need that
// form whatever the backend would choose for the matrix.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cpu/bf16_panels.h"
#include "backend/cpu/cpu_weight.h"
#include "moe/backend.h"

namespace moe::testing {

// The packed form of a matrix; data() is 64-byte aligned, as the backend's allocations are.
// Movable, not copyable: data() points into storage.
struct Packed12 {
    Packed12() = default;
    Packed12(Packed12&&) = default;
    Packed12& operator=(Packed12&&) = default;
    Packed12(const Packed12&) = delete;
    Packed12& operator=(const Packed12&) = delete;

    std::vector<uint8_t> storage;
    uint8_t* at = nullptr;
    const uint8_t* data() const { return at; }
};

// w [n, k] bf16 in the 12-bit form, exceptions and all, its panels packed in two ranges as the
// backend's threads pack them.
inline Packed12 pack_panels12(const uint16_t* w, int64_t n, int64_t k) {
    const cpu::Bf16Panels12Plan plan = cpu::plan_bf16_panels12(w, n, k);
    Packed12 p;
    p.storage.resize(static_cast<size_t>(plan.bytes) + 64);
    p.at = p.storage.data() + (64 - reinterpret_cast<uintptr_t>(p.storage.data()) % 64) % 64;
    const int64_t panels = cpu::bf16_panel_count(n);
    cpu::pack_bf16_panels12(w, plan, 0, std::min<int64_t>(1, panels), p.at);
    cpu::pack_bf16_panels12(w, plan, std::min<int64_t>(1, panels), panels, p.at);
    return p;
}

// The layout the CPU backend prepared `w` in.
inline cpu::CpuLayout cpu_layout(const PreparedWeight& w) {
    return static_cast<const cpu::CpuWeight&>(w).matrix().layout;
}

// A CPU weight handle over the 12-bit form `p` of a bf16 [n, k] matrix packed directly (the
// backend keeps plain panels for a matrix with as many exceptions as some test matrices have).
// `p` must outlive the handle.
inline std::unique_ptr<PreparedWeight> panels12_weight(const Backend& be, const Packed12& p, int64_t n, int64_t k) {
    static cpu::CpuWeightCounts counts;  // NOTE: these handles own no memory; the counts are the tests'
    TensorView logical;
    logical.dtype = DType::kBF16;
    logical.ndim = 2;
    logical.shape = {n, k, 0, 0};
    logical.strides = {k, 1, 0, 0};
    return std::make_unique<cpu::CpuWeight>(
        be, logical,
        cpu::CpuMatrix{.layout = cpu::CpuLayout::kPanels12, .dtype = DType::kBF16, .n = n, .k = k, .data = p.data()},
        DeviceBuffer{}, &counts);
}

}  // namespace moe::testing
