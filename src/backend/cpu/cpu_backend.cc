#include "backend/cpu/cpu_backend.h"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include "core/allocator.h"

namespace moe {
namespace cpu {
namespace {

// 0 means "all cores the process may use": the affinity mask (taskset, cgroups cpusets), which
// can be smaller than the machine.
int resolve_threads(int requested) {
    if (requested > 0) return requested;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : pool_(resolve_threads(options.num_threads)), gemm_(pool_.size(), &pool_) {
    ops_.embedding = &cpu::embedding;
    ops_.rms_norm = &cpu::rms_norm;
    ops_.rope = &cpu::rope;
    ops_.gemm = &cpu::gemm;
    ops_.silu_mul = &cpu::silu_mul;
    ops_.add = &cpu::add;
    ops_.kv_write = &cpu::kv_write;
    ops_.attention = &cpu::attention;
    ops_.moe_route = &cpu::moe_route;
    ops_.moe_shared_gate = &cpu::moe_shared_gate;
    ops_.moe_permute = &cpu::moe_permute;
    ops_.moe_experts = &cpu::moe_experts;
    ops_.moe_unpermute = &cpu::moe_unpermute;
}

CpuBackend::~CpuBackend() = default;

StatusOr<void*> CpuBackend::allocate(size_t bytes) { return CpuAllocator::allocate(bytes); }

void CpuBackend::deallocate(void* ptr) { CpuAllocator::deallocate(ptr); }

Status CpuBackend::copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
    if (dst_device.kind != DeviceKind::kCpu || src_device.kind != DeviceKind::kCpu)
        return invalid_argument("cpu backend copy: from " + src_device.to_string() + " to " + dst_device.to_string() +
                                ", but the cpu backend only copies within host memory");
    if (bytes == 0) return ok_status();
    if (dst == nullptr || src == nullptr) return invalid_argument("cpu backend copy: null pointer for " + std::to_string(bytes) + " bytes");
    std::memmove(dst, src, bytes);
    return ok_status();
}

}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options) {
    return std::make_unique<cpu::CpuBackend>(options);
}

}  // namespace moe
