#include "backend/cpu/cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <cstdint>

namespace moe::cpu {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0: which register states the OS saves on a context switch. Without OS support the
// instructions fault even when cpuid advertises them.
uint64_t read_xcr0() {
    uint32_t eax = 0, edx = 0;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<uint64_t>(edx) << 32) | eax;
}

// Linux (5.16+) hands out AMX tile data per process, on request: without it the first tile
// instruction faults. true when granted (or not needed: no Linux).
bool request_amx_permission() {
#if defined(__linux__) && defined(__x86_64__)
    constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023;
    constexpr unsigned long kXtileData = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXtileData) != 0) return false;
    unsigned long granted = 0;
    if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) != 0) return false;
    return (granted >> kXtileData) & 1u;
#else
    return true;
#endif
}

CpuFeatures detect() {
    CpuFeatures f;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
    const bool osxsave = (ecx >> 27) & 1u;
    if (!osxsave) return f;
    const uint64_t xcr0 = read_xcr0();
    const bool zmm_state = (xcr0 & 0xe6) == 0xe6;               // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
    const bool tile_state = (xcr0 & (3u << 17)) == (3u << 17);  // XTILECFG, XTILEDATA
    if (__get_cpuid_max(0, nullptr) < 7) return f;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const unsigned max_subleaf = eax;
    f.avx512f = zmm_state && ((ebx >> 16) & 1u);
    f.amx_bf16 = tile_state && ((edx >> 22) & 1u) && ((edx >> 24) & 1u);  // AMX-BF16 and AMX-TILE
    // Usable only once the kernel grants this process the tile state (oneDNN asks too; asking
    // twice is harmless). Refused: report no AMX, so nothing picks a route that needs it.
    if (f.amx_bf16) f.amx_bf16 = request_amx_permission();
    if (max_subleaf >= 1) {
        __cpuid_count(7, 1, eax, ebx, ecx, edx);
        f.avx512_bf16 = f.avx512f && ((eax >> 5) & 1u);
    }
    return f;
}
#else
CpuFeatures detect() {
    return {};
}
#endif

}  // namespace

std::string CpuFeatures::to_string() const {
    std::string s;
    if (avx512f) s += "avx512f ";
    if (avx512_bf16) s += "avx512_bf16 ";
    if (amx_bf16) s += "amx_bf16 ";
    if (s.empty()) return "none";
    s.pop_back();
    return s;
}

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

}  // namespace moe::cpu
