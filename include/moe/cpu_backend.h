// The CPU backend's public face: its options and factory. Everything else about it (kernels,
// weight layouts, thread pool) is private to src/backend/cpu.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "moe/backend.h"
#include "moe/status.h"

namespace moe {

// Which kernels multiply by the packed bf16 weight panels on the CPU.
enum class CpuMatmul {
    // kOnednnPrefill where the CPU has AMX, else kOwn.
    kAuto,
    // Our AVX512-BF16 kernels for every product (bf16_panels.h): batch invariant bitwise.
    kOwn,
    // oneDNN for every product, reading the same panels in place (onednn_panels.h): batch
    // invariant bitwise, but decode runs at ~0.5x of kOwn (measured on AVX512-BF16, moe-s), and
    // oneDNN allocates a few small blocks inside every execute (so a decode step does too).
    kOnednn,
    // oneDNN (AMX tiles where present) for products of at least kOnednnPrefillMinRows rows,
    // our kernels below: prefill on AMX, decode on our fused 12-bit kernels. A row's result can
    // then differ in the last bits between a product below and one above the threshold (another
    // f32 summation order; bitwise equal on AVX512-BF16 for plain panels, measured).
    kOnednnPrefill,
};
inline constexpr int64_t kOnednnPrefillMinRows = 64;

// "auto", "own", "onednn" or "onednn-prefill" (--cpu-matmul) -> CpuMatmul; anything else:
// kInvalidArgument naming the choices.
StatusOr<CpuMatmul> parse_cpu_matmul(const std::string& name);

struct CpuBackendOptions {
    int num_threads = 0;  // 0: all cores the process may use
    // bf16 matrices packed into column panels at model load (Backend::prepare_weight) where the
    // CPU has AVX512-BF16; false keeps every kernel on the checkpoint layout (for A/B runs and
    // tests).
    bool pack_weights = true;
    // With pack_weights: matrices prepared as WeightUse::kStreamedMatmul in the lossless 12-bit
    // form of the panels: 25% fewer bytes streamed per decode step, the same bf16 values.
    bool compress_streamed = true;
    // With pack_weights. The oneDNN routes fall back to kOwn (with a warning) when oneDNN cannot
    // build a bf16 matmul over the panels on this CPU.
    CpuMatmul matmul = CpuMatmul::kAuto;
};

// The CPU backend (AVX-512/AMX where present, oneDNN and OpenBLAS for GEMMs).
std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options = {});

}  // namespace moe
