#include "core/thread_pool.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>

#include "core/cpu_quota.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe {
namespace {

// Whether this thread is inside a region (a worker always is): nested loops then run inline.
thread_local bool t_in_region = false;

inline void cpu_relax() {
#if defined(__x86_64__)
    _mm_pause();
#endif
}

void futex_wait(std::atomic<uint32_t>* addr, uint32_t expected) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* addr) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

// Spins until done() holds; after a while yields the core each round, so a waiter on an
// oversubscribed host does not starve the thread it waits for.
template <typename Done>
void spin_until(Done&& done) {
    for (int i = 0; !done(); ++i) {
        if (i < 2000) {
            cpu_relax();
        } else {
            std::this_thread::yield();
        }
    }
}

}  // namespace

ThreadPool::ThreadPool(int num_threads, int spin_us) {
    if (num_threads <= 0) num_threads = process_cpu_budget().threads;
    num_threads_ = num_threads;
    spin_us_ = std::max(0, spin_us);
    workers_.reserve(static_cast<size_t>(num_threads_ - 1));
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    if (workers_.empty()) return;
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&generation_);
    for (auto& t : workers_) t.join();
}

void ThreadPool::worker(int idx) {
    t_in_region = true;
    uint32_t seen = 0;
    for (;;) {
        // Spin for spin_us_, then sleep until the generation moves.
        const auto spin_end = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
        for (int i = 0; generation_.load(std::memory_order_acquire) == seen; ++i) {
            if ((i & 255) != 255) {
                cpu_relax();
                continue;
            }
            if (std::chrono::steady_clock::now() < spin_end) continue;
            // NOTE: announce the sleep, then re-check: run() bumps the generation before it
            // reads sleepers_ (both seq_cst), so either it sees us and wakes us, or we see it.
            sleepers_.fetch_add(1, std::memory_order_seq_cst);
            if (generation_.load(std::memory_order_seq_cst) == seen) futex_wait(&generation_, seen);
            sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        }
        seen = generation_.load(std::memory_order_acquire);
        if (stop_) return;
        job_invoke_(job_ctx_, Region(this, idx, num_threads_));
        pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

bool ThreadPool::in_region() {
    return t_in_region;
}

void ThreadPool::run_impl(Invoke invoke, void* ctx) {
    if (num_threads_ == 1 || t_in_region) {
        invoke(ctx, Region(this, 0, 1));
        return;
    }
    job_invoke_ = invoke;
    job_ctx_ = ctx;
    pending_.store(num_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(&generation_);
    t_in_region = true;
    invoke(ctx, Region(this, 0, num_threads_));
    t_in_region = false;
    spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
}

void ThreadPool::Region::barrier() const {
    if (threads_ > 1) pool_->region_barrier();
}

void ThreadPool::region_barrier() {
    const uint32_t gen = barrier_generation_.load(std::memory_order_acquire);
    if (barrier_arrived_.fetch_add(1, std::memory_order_acq_rel) == num_threads_ - 1) {
        barrier_arrived_.store(0, std::memory_order_relaxed);
        barrier_generation_.fetch_add(1, std::memory_order_acq_rel);
        return;
    }
    spin_until([&] { return barrier_generation_.load(std::memory_order_acquire) != gen; });
}

}  // namespace moe
