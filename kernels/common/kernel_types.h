// Plain types shared by the kernels and their host-side callers. Host-includable: no CUDA
// headers, nothing of the framework.
#pragma once

#include <cstdint>

namespace moe::kernels {

// Element type of a weight or cache buffer (activations are always f32).
enum class ElemType : int32_t { kF32 = 0, kBF16 = 1 };

// Where a kernel reports bad indices it met (ids past the vocabulary, slots past the cache).
// The caller zeroes it before the launch and reads it back after; the kernel never reads or
// writes out of bounds because of a bad index, it skips (or zero-fills) that row and records it.
struct KernelError {
    uint32_t num_bad = 0;        // how many rows had a bad index
    uint32_t not_first_bad = 0;  // ~(lowest bad row index); 0 when there was none
};

inline bool has_error(const KernelError& e) {
    return e.num_bad != 0;
}
// Lowest row (token) index whose index was bad; meaningful only when has_error().
inline uint32_t first_bad_row(const KernelError& e) {
    return ~e.not_first_bad;
}

}  // namespace moe::kernels
