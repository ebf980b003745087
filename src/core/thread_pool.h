// Data-parallel loops over a team of threads (the caller plus size() - 1 workers of our own),
// built to hold its speed when the machine is shared.
//
// Execution model: a call is a job of units, in up to kMaxPhases phases. Every thread of the
// team, the caller included, takes the next unit from one shared counter (a compare-and-swap
// on a word that also names the job), runs it, and takes the next, until none is left. No unit
// belongs to a thread: a worker that the kernel has descheduled (a neighbour on the host, the
// gRPC threads, a CPU quota) delays only the unit it is running, and a worker that wakes up
// after the last unit was taken joins nothing; the caller waits for the units in flight, never
// for the workers. A unit of phase p starts once every unit of phase p - 1 has completed (the
// only synchronisation inside a job, and it waits for units that were taken, not for threads to
// arrive). Loops are split into kUnitsPerThread times more units than threads.
//
// Determinism: units are a pure function of the loop size and size(); which thread runs which
// unit does not change what a unit computes, so results are bitwise the same whatever the
// scheduling (and kernels keep each output element inside one unit).
//
// Waiting, adaptive: workers between jobs spin for spin_us, then sleep on a futex; a thread
// waiting for a phase to complete spins, then sleeps on a futex that the unit completing it
// wakes. On a quiet machine the waits are short and spinning keeps today's speed (a futex
// wake-up costs ~50-100 us on these VMs). When the machine is oversubscribed a spinning waiter
// burns the time slice that the thread it waits for needs, so the pool watches for it: each
// thread reads its own involuntary context switches (getrusage RUSAGE_THREAD, at most once per
// millisecond per thread) and a wait that runs out of its spin counts as a missed spin. Either
// sign puts the pool in contended mode for kContendedHoldMs: spins shrink to a few
// microseconds, so idle threads give their cores back almost at once.
//
// Why not OpenMP's team (what this pool once wrapped): a decode step runs a hundred or more short
// parallel regions, and with OMP_WAIT_POLICY=passive each region start and barrier is a futex
// sleep and wake-up (moe-s batch-1 decode 30 tok/s passive vs 47 spinning); with active it is
// lock-step and spins through a neighbour's time slice.
//
// The kernels that run on this pool never use OpenMP; oneDNN and OpenBLAS keep their own teams
// and are used only where our kernels do not apply, never at the same time as a job of this pool.
//
// Exceptions: an exception thrown by a unit is caught on the thread that ran it; the units not
// yet started are skipped and the first exception is rethrown on the caller once the units in
// flight are done. Kernels report failures through Status (FirstError), not exceptions.
//
// Thread safety: run_phases/parallel_for/parallel_tasks may be called by one thread at a time. A
// call made from inside a running unit (a nested loop) runs inline on the calling thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace moe {

class ThreadPool {
public:
    // Microseconds an idle worker spins before it sleeps (on a quiet machine).
    static constexpr int kDefaultSpinUs = 200;
    // Units per thread that parallel_for splits a loop into.
    static constexpr int kUnitsPerThread = 4;
    static constexpr int kMaxPhases = 4;
    // How long one sign of oversubscription keeps the pool in contended mode.
    static constexpr int kContendedHoldMs = 50;

    // num_threads <= 0: process_cpu_budget().threads (affinity mask and cgroup CPU quota).
    explicit ThreadPool(int num_threads, int spin_us = kDefaultSpinUs);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return num_threads_; }

    // Runs fn(phase, unit) for every unit of every phase: units[p] units in phase p (at most
    // kMaxPhases phases, each < 2^30 units). The units of a phase run in any order on any threads;
    // all of phase p complete (their writes visible) before any unit of phase p + 1 starts.
    template <typename Fn>
    void run_phases(std::initializer_list<int64_t> units, Fn&& fn) {
        auto invoke = [](void* ctx, int phase, int64_t unit) {
            (*static_cast<std::remove_reference_t<Fn>*>(ctx))(phase, unit);
        };
        run_impl(units.begin(), static_cast<int>(units.size()), invoke,
                 const_cast<void*>(static_cast<const void*>(&fn)));
    }

    // Splits [0, n) into min(n / grain, kUnitsPerThread * size()) contiguous chunks (at least one)
    // and runs fn(begin, end) on each. Chunks are a pure function of n, grain and size(). grain:
    // the fewest indices worth a unit of their own (grain_for()); a loop of one chunk runs inline.
    template <typename Fn>
    void parallel_for(int64_t n, Fn&& fn, int64_t grain = 1) {
        if (n <= 0) return;
        const int64_t most = grain > 1 ? std::max<int64_t>(1, n / grain) : n;
        const int64_t chunks = std::min<int64_t>(most, int64_t{kUnitsPerThread} * num_threads_);
        if (chunks == 1 || num_threads_ == 1 || in_region()) {
            fn(int64_t{0}, n);
            return;
        }
        // Chunk c is [n * c / chunks, n * (c + 1) / chunks).
        run_phases({chunks}, [&](int, int64_t c) { fn(n * c / chunks, n * (c + 1) / chunks); });
    }

    // The grain of a loop whose index costs about `elements_per_index` elements of streaming work:
    // a unit gets at least kMinUnitElements (~16K floats, a few microseconds), below which a job's
    // wake-up and completion cost more than they save (and on a shared host, each job is a
    // point where a descheduled thread can hold the caller).
    static constexpr int64_t kMinUnitElements = int64_t{1} << 14;
    static int64_t grain_for(int64_t elements_per_index) {
        return std::max<int64_t>(1, kMinUnitElements / std::max<int64_t>(1, elements_per_index));
    }

    // Runs fn(i) for i in [0, num_tasks), one unit each.
    template <typename Fn>
    void parallel_tasks(int64_t num_tasks, Fn&& fn) {
        if (num_tasks <= 0) return;
        if (num_threads_ == 1 || num_tasks == 1 || in_region()) {
            for (int64_t i = 0; i < num_tasks; ++i) fn(i);
            return;
        }
        run_phases({num_tasks}, [&](int, int64_t i) { fn(i); });
    }

    // Whether the calling thread is inside a job of some pool (loops then run inline).
    static bool in_region();
    // The calling thread's index in its pool: 0 for the caller (any thread not a worker),
    // 1..size()-1 for workers. For per-thread scratch: two units running at once never share it.
    static int thread_index();

    // Whether the pool currently believes the machine is oversubscribed (see the file comment).
    bool contended() const;

    // Counters since construction, for tests and benchmarks (relaxed; approximate while running).
    struct Stats {
        int64_t jobs = 0;  // calls that ran on the team (not inline)
        int64_t units_by_workers = 0;
        int64_t phase_sleeps = 0;  // phase/completion waits that ran out of spin and slept
        int64_t idle_sleeps = 0;   // workers that slept between jobs
        int64_t preemptions = 0;   // involuntary context switches seen by the pool's threads
    };
    Stats stats() const;

private:
    using Invoke = void (*)(void*, int, int64_t);
    void run_impl(const int64_t* units, int num_phases, Invoke invoke, void* ctx);
    // Takes and runs units of job `gen` until none is left (or the job is another one).
    int64_t work(uint32_t gen);  // the number of units it ran
    void run_unit(uint32_t u);
    // Waits until done_ >= target (phase or job completion).
    void wait_done(uint32_t target);
    void worker(int idx);
    // Reads the calling thread's involuntary context switches (at most once per millisecond).
    void check_preempted();
    void mark_contended(int64_t now_ns);
    int64_t spin_ns(int64_t quiet_ns) const;

    int num_threads_;
    int spin_us_;
    std::vector<std::thread> workers_;
    std::atomic<bool> stop_{false};

    // The job: written by the caller before it publishes the job, read by threads that have
    // seen it (atomics only so that a stale reader is not a data race; see work()).
    std::atomic<Invoke> invoke_{nullptr};
    std::atomic<void*> ctx_{nullptr};
    std::atomic<uint32_t> phase_end_[kMaxPhases] = {};  // cumulative unit counts
    std::atomic<int> num_phases_{0};
    std::atomic<uint32_t> total_{0};
    std::atomic<bool> failed_{false};
    std::mutex error_mu_;
    std::exception_ptr error_;

    // generation (high 32 bits) | next unit (low 32 bits); kClosed after the job is done.
    alignas(64) std::atomic<uint64_t> claim_{0};
    // Bumped once per job; idle workers wait for it to change (spinning, then futex).
    alignas(64) std::atomic<uint32_t> generation_{0};
    alignas(64) std::atomic<int> sleepers_{0};
    // Units completed in the current job; phase waiters sleep on it.
    alignas(64) std::atomic<uint32_t> done_{0};
    alignas(64) std::atomic<int> done_sleepers_{0};
    alignas(64) std::atomic<int64_t> contended_until_ns_{0};
    // Statistics (relaxed).
    std::atomic<int64_t> jobs_{0}, units_by_workers_{0}, phase_sleeps_{0}, idle_sleeps_{0}, preemptions_{0};
};

}  // namespace moe
