// How many CPUs this process may really use: the affinity mask (taskset, cpusets) and the CFS
// bandwidth quota of its cgroup (a container's `--cpus 1.5`, a Kubernetes CPU limit).
//
// The quota is read from cgroup v2 (`cpu.max` of the process's cgroup and every ancestor: the
// tightest wins) or, on a v1 hierarchy, from `cpu.cfs_quota_us` / `cpu.cfs_period_us`. A quota
// of q CPUs gives floor(q) threads, at least 1: a thread more than the quota pays for is
// descheduled every period (the pool's dynamic units keep that from stalling the others, but
// the thread still costs its switches and its cache).
#pragma once

#include <optional>
#include <string>

namespace moe {

struct CpuBudget {
    int affinity_cpus = 1;             // CPUs in the affinity mask
    std::optional<double> quota_cpus;  // quota / period, when a quota is set
    std::string quota_source;          // the file the quota came from, for the log
    int threads = 1;                   // what a thread pool should use by default
    std::string describe() const;      // "2 CPUs (affinity 2, cgroup quota 1.50 from /sys/...)"
};

// `proc_self_cgroup` is the text of /proc/self/cgroup; `cgroup_root` the cgroup mount
// (/sys/fs/cgroup); both are parameters so tests can give fake ones.
CpuBudget cpu_budget(int affinity_cpus, const std::string& proc_self_cgroup, const std::string& cgroup_root);

// The budget of this process, read once.
const CpuBudget& process_cpu_budget();

}  // namespace moe
