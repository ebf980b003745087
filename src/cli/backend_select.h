// Picks the backend a command runs on: --device cpu | cuda[:N].
#pragma once

#include <memory>
#include <string>

#include "moe/backend.h"

namespace moe::cli {

// "cpu", "cuda", "cuda:1". Unavailable with a clear reason when the build has no CUDA or no
// GPU answers. compress_weights: CpuBackendOptions::compress_streamed (--compress-weights).
StatusOr<std::unique_ptr<Backend>> make_backend(const std::string& device, int cpu_threads,
                                                bool compress_weights = true);

// The --compress-weights option of run and serve (--compress-experts: its name until the
// attention projections and lm_head took the 12-bit form too).
inline constexpr const char* kCompressWeightsHelp =
    "CPU: keep bf16 weight matrices in a lossless 12-bit form (the same bf16 values, 25% fewer bytes "
    "read per decode step; a slower load). false: plain bf16 panels";

}  // namespace moe::cli
