#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>

namespace moe {
namespace {
std::atomic<int64_t> g_bytes{0};
std::mutex g_mu;
std::unordered_map<void*, size_t>& sizes() {
    static std::unordered_map<void*, size_t> m;
    return m;
}
}  // namespace

StatusOr<void*> CpuAllocator::allocate(size_t bytes) {
    if (bytes == 0) bytes = kAlignment;
    // Round up: aligned_alloc wants a multiple of the alignment.
    // NOTE: no machine we serve on has 1 TiB for one buffer; refusing here gives a clear error
    // instead of a size the C library (or a sanitizer) treats as fatal.
    constexpr size_t kMaxBytes = size_t{1} << 40;
    if (bytes > kMaxBytes)
        return resource_exhausted("host allocation of " + std::to_string(bytes) + " bytes exceeds the limit of " +
                                  std::to_string(kMaxBytes) + " bytes");
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded < bytes) return resource_exhausted("host allocation of " + std::to_string(bytes) + " bytes overflows");
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) return resource_exhausted("host allocation of " + std::to_string(bytes) + " bytes failed");
    {
        std::lock_guard<std::mutex> lock(g_mu);
        sizes()[p] = rounded;
    }
    g_bytes += static_cast<int64_t>(rounded);
    return p;
}

void CpuAllocator::deallocate(void* ptr) {
    if (ptr == nullptr) return;
    size_t n = 0;
    {
        std::lock_guard<std::mutex> lock(g_mu);
        auto it = sizes().find(ptr);
        if (it != sizes().end()) {
            n = it->second;
            sizes().erase(it);
        }
    }
    g_bytes -= static_cast<int64_t>(n);
    std::free(ptr);
}

int64_t CpuAllocator::bytes_in_use() { return g_bytes.load(); }

}  // namespace moe
