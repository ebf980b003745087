// Host memory: 64-byte aligned allocations (one AVX-512 line), with a byte counter so tests
// can prove that nothing leaks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "moe/status.h"

namespace moe {

class CpuAllocator {
public:
    static constexpr size_t kAlignment = 64;
    // Fails with kResourceExhausted (naming the size) instead of throwing or returning null.
    static StatusOr<void*> allocate(size_t bytes);
    static void deallocate(void* ptr);
    // Bytes currently allocated through this allocator, process-wide.
    static int64_t bytes_in_use();
};

struct CpuFree {
    void operator()(void* p) const { CpuAllocator::deallocate(p); }
};

// An owned, aligned host array of T (trivial types only), zero-initialized.
template <typename T>
class HostArray {
public:
    HostArray() = default;
    static StatusOr<HostArray> make(size_t count) {
        HostArray a;
        if (count == 0) return a;
        MOE_ASSIGN_OR_RETURN(void* p, CpuAllocator::allocate(count * sizeof(T)));
        a.ptr_.reset(p);
        a.size_ = count;
        std::memset(p, 0, count * sizeof(T));
        return a;
    }
    T* data() const { return static_cast<T*>(ptr_.get()); }
    size_t size() const { return size_; }
    T& operator[](size_t i) const { return data()[i]; }

private:
    std::unique_ptr<void, CpuFree> ptr_;
    size_t size_ = 0;
};

}  // namespace moe
