#include "core/cpu_quota.h"

#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace moe {
namespace {

namespace fs = std::filesystem;

// The first line of a small file, or nullopt.
std::optional<std::string> first_line(const fs::path& p) {
    std::ifstream in(p);
    if (!in) return std::nullopt;
    std::string line;
    if (!std::getline(in, line)) return std::nullopt;
    return line;
}

std::optional<long long> to_int(const std::string& s) {
    try {
        size_t used = 0;
        const long long v = std::stoll(s, &used);
        if (used != s.size()) return std::nullopt;
        return v;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// cgroup paths are absolute within the mount; refuse anything that would walk out of it.
std::optional<fs::path> inside(const std::string& root, std::string rel) {
    if (rel.empty() || rel[0] != '/') return std::nullopt;
    for (const auto& part : fs::path(rel)) {
        if (part == "..") return std::nullopt;
    }
    return fs::path(root) / rel.substr(1);
}

struct Quota {
    double cpus;
    std::string source;
};

void keep_tighter(std::optional<Quota>& best, double cpus, const fs::path& file) {
    if (!(cpus > 0) || !std::isfinite(cpus)) return;
    if (!best || cpus < best->cpus) best = Quota{cpus, file.string()};
}

// v2: "max 100000" or "150000 100000" in cpu.max, in the cgroup and each ancestor up to the root.
void v2_quota(const fs::path& cgroup_root, fs::path dir, std::optional<Quota>& best) {
    const fs::path root = fs::path(cgroup_root).lexically_normal();
    for (int depth = 0; depth < 64; ++depth) {
        const fs::path file = dir / "cpu.max";
        if (auto line = first_line(file)) {
            std::istringstream ls(*line);
            std::string q, p;
            ls >> q >> p;
            auto quota = to_int(q), period = to_int(p);
            if (q != "max" && quota && period && *period > 0 && *quota > 0) {
                keep_tighter(best, static_cast<double>(*quota) / static_cast<double>(*period), file);
            }
        }
        if (dir.lexically_normal() == root || !dir.has_parent_path() || dir.parent_path() == dir) break;
        dir = dir.parent_path();
    }
}

// v1: cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us, in the cpu controller's cgroup.
void v1_quota(const fs::path& dir, std::optional<Quota>& best) {
    auto q = first_line(dir / "cpu.cfs_quota_us");
    auto p = first_line(dir / "cpu.cfs_period_us");
    if (!q || !p) return;
    auto quota = to_int(*q), period = to_int(*p);
    if (quota && period && *quota > 0 && *period > 0) {
        keep_tighter(best, static_cast<double>(*quota) / static_cast<double>(*period), dir / "cpu.cfs_quota_us");
    }
}

}  // namespace

std::string CpuBudget::describe() const {
    if (!quota_cpus)
        return fmt::format("{} threads (affinity mask: {} CPUs; no cgroup CPU quota)", threads, affinity_cpus);
    return fmt::format("{} threads (affinity mask: {} CPUs; cgroup CPU quota {:.2f} CPUs from {})", threads,
                       affinity_cpus, *quota_cpus, quota_source);
}

CpuBudget cpu_budget(int affinity_cpus, const std::string& proc_self_cgroup, const std::string& cgroup_root) {
    CpuBudget b;
    b.affinity_cpus = std::max(1, affinity_cpus);
    std::optional<Quota> best;
    std::istringstream in(proc_self_cgroup);
    std::string line;
    // Lines are "id:controllers:path"; v2 is "0::path".
    while (std::getline(in, line)) {
        const size_t a = line.find(':');
        const size_t c = a == std::string::npos ? std::string::npos : line.find(':', a + 1);
        if (c == std::string::npos) continue;
        const std::string controllers = line.substr(a + 1, c - a - 1);
        const std::string path = line.substr(c + 1);
        if (controllers.empty()) {
            if (auto dir = inside(cgroup_root, path)) v2_quota(cgroup_root, *dir, best);
            continue;
        }
        std::istringstream cs(controllers);
        std::string ctl;
        bool cpu = false;
        while (std::getline(cs, ctl, ',')) cpu = cpu || ctl == "cpu";
        if (!cpu) continue;
        // v1 mounts the cpu controller at cpu,cpuacct (or cpu); try both names.
        for (const char* mount : {"cpu", "cpu,cpuacct"}) {
            if (auto dir = inside((fs::path(cgroup_root) / mount).string(), path)) v1_quota(*dir, best);
        }
    }
    b.threads = b.affinity_cpus;
    if (best) {
        b.quota_cpus = best->cpus;
        b.quota_source = best->source;
        b.threads = std::clamp(static_cast<int>(std::floor(best->cpus)), 1, b.affinity_cpus);
    }
    return b;
}

const CpuBudget& process_cpu_budget() {
    static const CpuBudget budget = [] {
        int affinity = 0;
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof(set), &set) == 0) affinity = CPU_COUNT(&set);
        if (affinity <= 0) affinity = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        std::string text;
        if (std::ifstream in("/proc/self/cgroup"); in) {
            std::stringstream ss;
            ss << in.rdbuf();
            text = ss.str();
        }
        return cpu_budget(affinity, text, "/sys/fs/cgroup");
    }();
    return budget;
}

}  // namespace moe
