#include "backend/cpu/host_memory.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace moe::cpu {
namespace {

std::string read_text(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) return {};
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// A number from a cgroup file; -1 for "max", a missing file or anything else.
int64_t read_bytes(const std::filesystem::path& path) {
    const std::string text = read_text(path);
    if (text.empty() || text[0] < '0' || text[0] > '9') return -1;
    try {
        return static_cast<int64_t>(std::stoull(text));
    } catch (...) {
        return -1;
    }
}

// Keeps the limit with the least room left.
void tighten(CgroupMemory& best, int64_t limit, int64_t usage) {
    // cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages).
    if (limit < 0 || limit >= (int64_t{1} << 60)) return;
    usage = std::max<int64_t>(usage, 0);
    if (best.limit < 0 || limit - usage < best.limit - best.usage) best = {.limit = limit, .usage = usage};
}

}  // namespace

StatusOr<MemoryInfo> host_memory_info_from(const std::string& meminfo, const CgroupMemory& cgroup) {
    std::istringstream in(meminfo);
    std::string key, unit;
    int64_t kb = 0, total = -1, available = -1;
    while (in >> key >> kb) {
        std::getline(in, unit);
        if (key == "MemTotal:") total = kb * 1024;
        if (key == "MemAvailable:") available = kb * 1024;
    }
    if (total < 0 || available < 0) return unavailable("/proc/meminfo has no MemTotal or MemAvailable");
    if (cgroup.limit >= 0) {
        total = std::min(total, cgroup.limit);
        available = std::min(available, std::max<int64_t>(0, cgroup.limit - cgroup.usage));
    }
    return MemoryInfo{.total_bytes = total, .available_bytes = available};
}

CgroupMemory current_cgroup_memory() {
    CgroupMemory best;
    std::istringstream lines(read_text("/proc/self/cgroup"));
    std::string line;
    while (std::getline(lines, line)) {
        // "0::/path" (v2) or "N:memory:/path" / "N:cpu,memory:/path" (v1)
        const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
        if (b == std::string::npos) continue;
        const std::string controllers = line.substr(a + 1, b - a - 1);
        std::filesystem::path rel = line.substr(b + 1);
        const bool v2 = controllers.empty();
        bool v1 = false;
        std::istringstream cs(controllers);
        for (std::string c; std::getline(cs, c, ',');) v1 = v1 || c == "memory";
        if (!v2 && !v1) continue;
        const std::filesystem::path root = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
        // The cgroup and each ancestor up to the root of the hierarchy.
        for (std::filesystem::path p = rel.relative_path();; p = p.parent_path()) {
            const std::filesystem::path dir = root / p;
            if (v2)
                tighten(best, read_bytes(dir / "memory.max"), read_bytes(dir / "memory.current"));
            else
                tighten(best, read_bytes(dir / "memory.limit_in_bytes"), read_bytes(dir / "memory.usage_in_bytes"));
            if (p.empty()) break;
        }
    }
    return best;
}

StatusOr<MemoryInfo> host_memory_info() {
    return host_memory_info_from(read_text("/proc/meminfo"), current_cgroup_memory());
}

}  // namespace moe::cpu
