// Launch-configuration arithmetic, host-only and CUDA-free so that it is unit-tested on the CPU.
#pragma once

#include <algorithm>
#include <cstdint>

namespace moe::kernels {

inline constexpr int kWarpSize = 32;
// Grid sizes are capped; kernels walk the remaining rows/elements with a grid-stride loop.
inline constexpr int64_t kMaxGridX = 65535LL * 16;

inline int64_t ceil_div(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

// Blocks for `n` work items of `block` threads each: at least 1, at most kMaxGridX.
inline unsigned grid_for(int64_t n, int block) {
    return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(n, block), 1, kMaxGridX));
}

// Threads per block for a kernel that walks one row of `row_len` elements with `per_thread`
// elements per step: enough warps to cover the row in one step, rounded to whole warps,
// between one warp and `max_threads`.
inline int threads_for_row(int64_t row_len, int per_thread, int max_threads = 1024) {
    const int64_t want = ceil_div(std::max<int64_t>(row_len, 1), per_thread);
    const int64_t warps = ceil_div(want, kWarpSize);
    return static_cast<int>(std::clamp<int64_t>(warps * kWarpSize, kWarpSize, max_threads));
}

// True when `p` is aligned for a vector load of `bytes` bytes.
inline bool is_aligned(const void* p, int bytes) {
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace moe::kernels
