// One matrix product as the CPU GEMM kernels take it, and who multiplies by weight panels. The
// bottom of the GEMM road: the kernels' headers include this, never the dispatcher (cpu_gemm.h)
// that calls them.
#pragma once

#include <cstdint>

#include "backend/cpu/cpu_weight.h"
#include "moe/cpu_backend.h"

namespace moe::cpu {

// y[M, N] (+)= x[M, K] * w[N, K]^T (+ bias[N]); leading dimensions in elements.
struct GemmProblem {
    int64_t m = 0, n = 0, k = 0;
    const float* x = nullptr;
    int64_t ldx = 0;
    CpuMatrix w;                  // [N, K] (w.n == n, w.k == k), in any CpuLayout
    const float* bias = nullptr;  // optional, [N]
    float* y = nullptr;
    int64_t ldy = 0;
    bool accumulate = false;
};

// Who multiplies by packed panels (CpuMatmul, resolved by the backend).
enum class PanelRoute : uint8_t {
    kOwn,
    kOnednn,         // every row count
    kOnednnPrefill,  // products of kOnednnPrefillMinRows rows or more (moe/cpu_backend.h)
};

// Whether a product of `rows` rows over packed panels goes to oneDNN on `route`.
inline bool panel_route_onednn(PanelRoute route, int64_t rows) {
    return route == PanelRoute::kOnednn || (route == PanelRoute::kOnednnPrefill && rows >= kOnednnPrefillMinRows);
}

}  // namespace moe::cpu
