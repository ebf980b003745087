#include "core/allocator.h"

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>

namespace moe {
namespace {

// Large buffers (packed weights, the KV cache, activations of big batches) come from anonymous
// mappings aligned to 2 MiB with MADV_HUGEPAGE, so streaming them does not take a TLB miss every
// 4 KiB (hosts where transparent huge pages are "madvise", the Debian default, would otherwise
// give none). Buffers of kArenaMin..kOwnMappingMin share 64 MiB chunks, bump-allocated: freed
// space is not reused until the chunk's last buffer is freed, then the chunk is unmapped (or,
// the current one, emptied). What lives there is load-time weights and the few activation
// buffers a model grows to its largest batch, so little is stranded. Smaller buffers:
// aligned_alloc. Under AddressSanitizer
// everything goes to aligned_alloc so that overruns stay detectable.
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kArenaMin = size_t{256} << 10;
constexpr size_t kOwnMappingMin = size_t{16} << 20;
constexpr size_t kChunkBytes = size_t{64} << 20;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kUseMappings = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kUseMappings = false;
#else
constexpr bool kUseMappings = true;
#endif
#else
constexpr bool kUseMappings = true;
#endif

struct Chunk {
    char* base = nullptr;
    size_t size = 0;
    size_t used = 0;
    int64_t live = 0;  // buffers handed out and not yet freed
};

struct Allocation {
    size_t bytes = 0;
    Chunk* chunk = nullptr;    // arena buffer: its chunk
    bool own_mapping = false;  // a mapping of its own (bytes rounded to whole huge pages)
};

std::atomic<int64_t> g_bytes{0};
std::mutex g_mu;  // guards everything below
std::unordered_map<void*, Allocation>& allocations() {
    static std::unordered_map<void*, Allocation> m;
    return m;
}
Chunk* g_current = nullptr;  // the chunk new arena buffers come from

// A mapping of `bytes` (a multiple of kHugePage) aligned to kHugePage, or null.
char* map_huge(size_t bytes) {
    const size_t span = bytes + kHugePage;
    void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
    if (aligned > start) ::munmap(raw, aligned - start);
    const uintptr_t tail = start + span - (aligned + bytes);
    if (tail > 0) ::munmap(reinterpret_cast<void*>(aligned + bytes), tail);
    char* p = reinterpret_cast<char*>(aligned);
    ::madvise(p, bytes, MADV_HUGEPAGE);  // a hint: failing (no THP) is fine
    return p;
}

// Under g_mu. A buffer of `rounded` bytes from the mappings, or null (then aligned_alloc).
void* allocate_mapped(size_t rounded, Allocation& a) {
    if (rounded >= kOwnMappingMin) {
        const size_t bytes = (rounded + kHugePage - 1) / kHugePage * kHugePage;
        char* p = map_huge(bytes);
        if (p == nullptr) return nullptr;
        a.own_mapping = true;
        a.bytes = bytes;
        return p;
    }
    if (g_current == nullptr || g_current->size - g_current->used < rounded) {
        char* base = map_huge(kChunkBytes);
        if (base == nullptr) return nullptr;
        if (g_current != nullptr && g_current->live == 0) {
            ::munmap(g_current->base, g_current->size);
            delete g_current;
        }
        g_current = new Chunk{.base = base, .size = kChunkBytes, .used = 0, .live = 0};
    }
    void* p = g_current->base + g_current->used;
    g_current->used += rounded;
    ++g_current->live;
    a.chunk = g_current;
    a.bytes = rounded;
    return p;
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
    Allocation a{.bytes = rounded};
    void* p = nullptr;
    std::lock_guard<std::mutex> lock(g_mu);
    if (kUseMappings && rounded >= kArenaMin) p = allocate_mapped(rounded, a);
    if (p == nullptr) {
        a = Allocation{.bytes = rounded};
        p = std::aligned_alloc(kAlignment, rounded);
    }
    if (p == nullptr) return resource_exhausted("host allocation of " + std::to_string(bytes) + " bytes failed");
    allocations()[p] = a;
    g_bytes += static_cast<int64_t>(a.bytes);
    return p;
}

void CpuAllocator::deallocate(void* ptr) {
    if (ptr == nullptr) return;
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = allocations().find(ptr);
    if (it == allocations().end()) {
        std::free(ptr);  // not ours to count (never happens through the backends)
        return;
    }
    const Allocation a = it->second;
    allocations().erase(it);
    g_bytes -= static_cast<int64_t>(a.bytes);
    if (a.own_mapping) {
        ::munmap(ptr, a.bytes);
    } else if (a.chunk != nullptr) {
        if (--a.chunk->live == 0) {
            if (a.chunk == g_current) {
                a.chunk->used = 0;  // empty: reuse it from the start, and give its pages back
                ::madvise(a.chunk->base, a.chunk->size, MADV_DONTNEED);
            } else {
                ::munmap(a.chunk->base, a.chunk->size);
                delete a.chunk;
            }
        }
    } else {
        std::free(ptr);
    }
}

int64_t CpuAllocator::bytes_in_use() {
    return g_bytes.load();
}

}  // namespace moe
