// Picks the backend a command runs on: --device cpu | cuda[:N].
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "moe/backend.h"

namespace moe::cli {

// "cpu", "cuda", "cuda:1". Unavailable with a clear reason when the build has no CUDA or no
// GPU answers. compress_weights: CpuBackendOptions::compress_streamed (--compress-weights);
// cpu_matmul: CpuBackendOptions::matmul (--cpu-matmul: auto, own, onednn, onednn-prefill). The
// CPU backend logs which kernels its bf16 products took.
StatusOr<std::unique_ptr<Backend>> make_backend(const std::string& device, int cpu_threads,
                                                bool compress_weights = true, const std::string& cpu_matmul = "auto");

// The --compress-weights option of run and serve (--compress-experts: its name until the
// attention projections and lm_head took the 12-bit form too).
inline constexpr const char* kCompressWeightsHelp =
    "CPU: keep bf16 weight matrices in a lossless 12-bit form (the same bf16 values, 25% fewer bytes "
    "read per decode step; a slower load). false: plain bf16 panels";

// The --cpu-matmul option of run and serve: its values (parse_cpu_matmul's) and help.
inline const std::vector<std::string> kCpuMatmulValues = {"auto", "own", "onednn", "onednn-prefill"};
inline constexpr const char* kCpuMatmulHelp =
    "CPU: who multiplies by the bf16 weight panels: auto (onednn-prefill where the CPU has AMX, else "
    "own), own (our AVX512-BF16 kernels), onednn (oneDNN for every product: bitwise batch invariant, "
    "slower decode) or onednn-prefill (oneDNN for products of 64 rows or more, ours below)";

}  // namespace moe::cli
