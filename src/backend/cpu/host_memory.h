// The host memory a CPU backend can use: /proc/meminfo, capped by the process's cgroup memory
// limit (v2 memory.max / memory.current, v1 memory.limit_in_bytes / memory.usage_in_bytes, the
// tightest of the cgroup and its ancestors), so that a container sizes its KV cache by its own
// limit, not by the machine.
#pragma once

#include <cstdint>
#include <string>

#include "moe/backend.h"

namespace moe::cpu {

// A cgroup's memory limit and usage in bytes; limit < 0: none.
struct CgroupMemory {
    int64_t limit = -1;
    int64_t usage = 0;
};

// MemTotal / MemAvailable of `meminfo` (the text of /proc/meminfo), each capped by the cgroup:
// total by its limit, available by limit - usage. kUnavailable when either field is missing.
StatusOr<MemoryInfo> host_memory_info_from(const std::string& meminfo, const CgroupMemory& cgroup);

// The tightest limit (and its usage) of this process's cgroup and its ancestors; none if unknown.
CgroupMemory current_cgroup_memory();

// host_memory_info_from(/proc/meminfo, current_cgroup_memory()).
StatusOr<MemoryInfo> host_memory_info();

}  // namespace moe::cpu
