#include "core/thread_pool.h"

#include <linux/futex.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>

#include "core/cpu_quota.h"
#include "moe/check.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe {
namespace {

// Whether this thread is inside a job (a worker always is): nested loops then run inline.
thread_local bool t_in_region = false;
thread_local int t_index = 0;

// The low half of claim_ once a job is done: no unit index reaches it (units < 2^30).
constexpr uint32_t kClosed = 0xffffffffu;
constexpr uint32_t kMaxUnits = 1u << 30;
// How long a thread waiting for a phase (or the caller for the job's last units) spins before it
// sleeps on a quiet machine, and in contended mode. Idle workers spin spin_us (quiet) or
// kContendedIdleSpinNs.
constexpr int64_t kQuietWaitNs = 200'000;
constexpr int64_t kContendedWaitNs = 5'000;
constexpr int64_t kContendedIdleSpinNs = 20'000;
// A wait this long means the awaited unit's thread lost its core for about a time slice.
constexpr int64_t kMissedSliceNs = 2'000'000;
constexpr int64_t kPreemptCheckNs = 1'000'000;

inline void cpu_relax() {
#if defined(__x86_64__)
    _mm_pause();
#endif
}

inline int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void futex_wait(std::atomic<uint32_t>* addr, uint32_t expected) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* addr) {
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

// Spins until done() holds or limit_ns pass; true if done() held.
template <typename Done>
bool spin_for(int64_t limit_ns, Done&& done) {
    if (done()) return true;
    if (limit_ns <= 0) return false;
    const int64_t end = now_ns() + limit_ns;
    for (int i = 1;; ++i) {
        if (done()) return true;
        cpu_relax();
        // NOTE: the clock every 64 pauses (~1 us on Zen): reading it costs ~20 ns.
        if ((i & 63) == 0 && now_ns() > end) return done();
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
    stop_.store(true, std::memory_order_seq_cst);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&generation_);
    for (auto& t : workers_) t.join();
}

bool ThreadPool::in_region() {
    return t_in_region;
}

int ThreadPool::thread_index() {
    return t_index;
}

bool ThreadPool::contended() const {
    return now_ns() < contended_until_ns_.load(std::memory_order_relaxed);
}

ThreadPool::Stats ThreadPool::stats() const {
    Stats s;
    s.jobs = jobs_.load(std::memory_order_relaxed);
    s.units_by_workers = units_by_workers_.load(std::memory_order_relaxed);
    s.phase_sleeps = phase_sleeps_.load(std::memory_order_relaxed);
    s.idle_sleeps = idle_sleeps_.load(std::memory_order_relaxed);
    s.preemptions = preemptions_.load(std::memory_order_relaxed);
    return s;
}

void ThreadPool::mark_contended(int64_t now) {
    contended_until_ns_.store(now + int64_t{kContendedHoldMs} * 1'000'000, std::memory_order_relaxed);
}

int64_t ThreadPool::spin_ns(int64_t quiet_ns) const {
    return contended() ? std::min(quiet_ns, kContendedWaitNs) : quiet_ns;
}

void ThreadPool::check_preempted() {
    // NOTE: per thread (RUSAGE_THREAD counts the calling thread only), whichever pool it serves.
    thread_local int64_t last_check = 0;
    thread_local int64_t last_nivcsw = -1;
    const int64_t now = now_ns();
    if (now - last_check < kPreemptCheckNs) return;
    last_check = now;
    rusage ru{};
    if (getrusage(RUSAGE_THREAD, &ru) != 0) return;
    const int64_t n = ru.ru_nivcsw;
    if (last_nivcsw >= 0 && n > last_nivcsw) {
        preemptions_.fetch_add(n - last_nivcsw, std::memory_order_relaxed);
        mark_contended(now);
    }
    last_nivcsw = n;
}

void ThreadPool::worker(int idx) {
    t_in_region = true;
    t_index = idx;
    uint32_t seen = 0;
    for (;;) {
        const int64_t idle_spin =
            contended() ? std::min<int64_t>(kContendedIdleSpinNs, int64_t{spin_us_} * 1000) : int64_t{spin_us_} * 1000;
        auto moved = [&] { return generation_.load(std::memory_order_acquire) != seen; };
        if (!spin_for(idle_spin, moved)) {
            idle_sleeps_.fetch_add(1, std::memory_order_relaxed);
            while (!moved()) {
                // NOTE: announce the sleep, then re-check: run_impl() bumps the generation before it
                // reads sleepers_ (both seq_cst), so either it sees us and wakes us, or we see it.
                sleepers_.fetch_add(1, std::memory_order_seq_cst);
                if (generation_.load(std::memory_order_seq_cst) == seen) futex_wait(&generation_, seen);
                sleepers_.fetch_sub(1, std::memory_order_seq_cst);
            }
        }
        seen = generation_.load(std::memory_order_acquire);
        if (stop_.load(std::memory_order_acquire)) return;
        const int64_t units = work(seen);
        if (units > 0) units_by_workers_.fetch_add(units, std::memory_order_relaxed);
        check_preempted();
    }
}

// NOTE: why a stale thread is harmless. The caller writes the job's fields, then publishes
// claim_ = (gen, 0) (release). A unit is taken by a compare-and-swap that expects the exact
// word (gen, u) with u < total: it succeeds only while job `gen` has units left, so the job's
// fields (read before the CAS, which is acq_rel) are that job's: the caller overwrites them only
// after it has seen every unit done and closed the word (gen, kClosed), after which every CAS
// expecting (gen, u) fails. A thread whose CAS succeeded runs its unit; the caller waits for it
// (done_), so ctx_ is alive.
int64_t ThreadPool::work(uint32_t gen) {
    int64_t ran = 0;
    uint64_t w = claim_.load(std::memory_order_acquire);
    for (;;) {
        if (static_cast<uint32_t>(w >> 32) != gen) return ran;
        const uint32_t u = static_cast<uint32_t>(w);
        if (u >= total_.load(std::memory_order_relaxed)) return ran;
        if (claim_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
            run_unit(u);
            ++ran;
            w = claim_.load(std::memory_order_acquire);
        }
    }
}

void ThreadPool::run_unit(uint32_t u) {
    int phase = 0;
    while (u >= phase_end_[phase].load(std::memory_order_relaxed)) ++phase;
    const uint32_t begin = phase == 0 ? 0 : phase_end_[phase - 1].load(std::memory_order_relaxed);
    // Units are taken in order, so every unit of the earlier phases has been taken: wait for them.
    if (phase > 0) wait_done(begin);
    if (!failed_.load(std::memory_order_relaxed)) {
        try {
            invoke_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), phase,
                                                    static_cast<int64_t>(u - begin));
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mu_);
            if (!error_) error_ = std::current_exception();
            failed_.store(true, std::memory_order_relaxed);
        }
    }
    done_.fetch_add(1, std::memory_order_seq_cst);
    if (done_sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(&done_);
}

void ThreadPool::wait_done(uint32_t target) {
    auto reached = [&] { return done_.load(std::memory_order_acquire) >= target; };
    const int64_t t0 = now_ns();
    if (spin_for(spin_ns(kQuietWaitNs), reached)) return;
    phase_sleeps_.fetch_add(1, std::memory_order_relaxed);
    while (!reached()) {
        // NOTE: as the workers' sleep: run_unit() adds to done_ before it reads done_sleepers_.
        done_sleepers_.fetch_add(1, std::memory_order_seq_cst);
        const uint32_t d = done_.load(std::memory_order_seq_cst);
        if (d < target) futex_wait(&done_, d);
        done_sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
    // A missed spin that lasted a time slice: the awaited thread had lost its core.
    const int64_t now = now_ns();
    if (now - t0 >= kMissedSliceNs) mark_contended(now);
}

void ThreadPool::run_impl(const int64_t* units, int num_phases, Invoke invoke, void* ctx) {
    MOE_CHECK(num_phases >= 1 && num_phases <= kMaxPhases);
    int64_t total = 0;
    for (int p = 0; p < num_phases; ++p) {
        MOE_CHECK_GE(units[p], 0);
        total += units[p];
    }
    MOE_CHECK_LT(total, int64_t{kMaxUnits});
    if (total == 0) return;
    if (num_threads_ == 1 || t_in_region || total == 1) {
        for (int p = 0; p < num_phases; ++p)
            for (int64_t u = 0; u < units[p]; ++u) invoke(ctx, p, u);
        return;
    }
    invoke_.store(invoke, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    uint32_t end = 0;
    for (int p = 0; p < kMaxPhases; ++p) {
        if (p < num_phases) end += static_cast<uint32_t>(units[p]);
        phase_end_[p].store(p < num_phases ? end : kClosed, std::memory_order_relaxed);
    }
    total_.store(end, std::memory_order_relaxed);
    failed_.store(false, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint32_t gen = generation_.load(std::memory_order_relaxed) + 1;
    claim_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
    generation_.store(gen, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) futex_wake_all(&generation_);
    jobs_.fetch_add(1, std::memory_order_relaxed);

    t_in_region = true;
    work(gen);
    t_in_region = false;
    wait_done(end);
    claim_.store(static_cast<uint64_t>(gen) << 32 | kClosed, std::memory_order_seq_cst);
    check_preempted();
    if (failed_.load(std::memory_order_relaxed)) {
        std::exception_ptr e;
        {
            std::lock_guard<std::mutex> lock(error_mu_);
            std::swap(e, error_);
        }
        std::rethrow_exception(e);
    }
}

}  // namespace moe
