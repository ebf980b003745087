// Small helpers for the naive references: element access by flat index and row, nothing clever.
#pragma once

#include <cstdint>

#include "moe/dtype.h"
#include "moe/tensor.h"

namespace moe::ref {

// Element `i` (flat, contiguous view) of an f32 or bf16 tensor, as double.
inline double load(const TensorView& t, int64_t i) {
    if (t.dtype == DType::kBF16) return bf16_to_f32(t.ptr<const uint16_t>()[i]);
    return t.ptr<const float>()[i];
}

// Element [r, c] of a 2-D f32 view with a row stride.
inline float& at2(const TensorView& t, int64_t r, int64_t c) {
    return t.ptr<float>()[r * t.stride(0) + c];
}

}  // namespace moe::ref
