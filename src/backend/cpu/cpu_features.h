// Run-time detection of the x86 features the CPU kernels (and oneDNN) care about. Nothing in
// the build assumes them: code for AVX-512 is compiled per function and chosen from here.
#pragma once

#include <string>

namespace moe::cpu {

struct CpuFeatures {
    bool avx512f = false;      // CPU and OS (ZMM state enabled in XCR0)
    bool avx512_bf16 = false;  // VCVTNE2PS2BF16, VDPBF16PS
    bool amx_bf16 = false;     // AMX tiles with bf16; the OS enables tile state and granted it
                               // to this process (arch_prctl, requested at detection)

    // "avx512f avx512_bf16" or "none"
    std::string to_string() const;
};

// Detected once (cpuid + xgetbv), then cached. Thread safe.
const CpuFeatures& cpu_features();

}  // namespace moe::cpu
