// Picks the backend a command runs on: --device cpu | cuda[:N].
#pragma once

#include <memory>
#include <string>

#include "moe/backend.h"

namespace moe::cli {

// "cpu", "cuda", "cuda:1". Unavailable with a clear reason when the build has no CUDA or no
// GPU answers. compress_experts: CpuBackendOptions::compress_streamed (--compress-experts).
StatusOr<std::unique_ptr<Backend>> make_backend(const std::string& device, int cpu_threads,
                                                bool compress_experts = true);

// The --compress-experts option of run and serve.
inline constexpr const char* kCompressExpertsHelp =
    "CPU: keep MoE expert weights in a lossless 12-bit form (the same bf16 values, 25% fewer bytes "
    "read per decode step; a slower load). false: plain bf16 panels";

}  // namespace moe::cli
