// Data-parallel loops over a fixed team of threads: the caller plus size() - 1 workers of our
// own that spin briefly between jobs, then sleep on a futex.
//
// Why not OpenMP's team (what this pool used to wrap): a decode step runs a hundred or more
// short parallel regions, and with OMP_WAIT_POLICY=passive (the right setting on a shared host,
// and what the benchmarks use for every engine) each region start and each barrier is a futex
// sleep and wake-up, ~100 us on this VM: moe-s batch-1 decode measured 30 tok/s passive vs 47
// tok/s with spinning. Workers here spin for spin_us after a job (cheap when the next region
// comes microseconds later, as inside a forward pass) and only then sleep, so an idle server
// burns no CPU; barriers inside a region spin and yield. llama.cpp's ggml does the same (one
// region per graph, its own spinning barrier).
//
// The kernels that run on this pool never use OpenMP; oneDNN and OpenBLAS keep their own teams
// and are used only where our kernels do not apply (f32 models, large bf16 GEMMs when
// configured), never at the same time as a region of this pool.
//
// Thread safety: run/parallel_for/parallel_tasks may be called by one thread at a time. A call
// made from inside a running region (a nested loop) runs inline on the calling thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

namespace moe {

class ThreadPool {
public:
    // Microseconds an idle worker spins before it sleeps.
    static constexpr int kDefaultSpinUs = 200;

    // num_threads <= 0: hardware concurrency (at least 1).
    explicit ThreadPool(int num_threads, int spin_us = kDefaultSpinUs);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return num_threads_; }

    // One thread's view of a running region.
    class Region {
    public:
        int thread() const { return thread_; }
        int threads() const { return threads_; }
        // Waits until every thread of the region has reached it (all must call it equally often).
        void barrier() const;

    private:
        friend class ThreadPool;
        Region(ThreadPool* pool, int thread, int threads) : pool_(pool), thread_(thread), threads_(threads) {}
        ThreadPool* pool_;
        int thread_, threads_;
    };

    // Runs fn(region) once on each thread (the caller is thread 0) and returns when all are done.
    // Templates over the callable (no std::function): a loop costs no heap allocation.
    template <typename Fn>
    void run(Fn&& fn) {
        auto invoke = [](void* ctx, const Region& r) { (*static_cast<std::remove_reference_t<Fn>*>(ctx))(r); };
        run_impl(invoke, const_cast<void*>(static_cast<const void*>(&fn)));
    }

    // Splits [0, n) into at most size() contiguous chunks and runs fn(begin, end) on each.
    // Chunks are a pure function of n and size(), so results are deterministic.
    template <typename Fn>
    void parallel_for(int64_t n, Fn&& fn) {
        if (n <= 0) return;
        const int64_t chunks = n < num_threads_ ? n : num_threads_;
        if (chunks == 1 || in_region()) {
            fn(int64_t{0}, n);
            return;
        }
        // Chunk c is [n * c / chunks, n * (c + 1) / chunks): a pure function of n and the size,
        // so results are deterministic whichever thread runs which chunk.
        run([&](const Region& r) {
            for (int64_t c = r.thread(); c < chunks; c += r.threads()) {
                const int64_t begin = n * c / chunks;
                const int64_t end = n * (c + 1) / chunks;
                if (begin < end) fn(begin, end);
            }
        });
    }

    // Runs fn(i) for i in [0, num_tasks), tasks handed out dynamically.
    template <typename Fn>
    void parallel_tasks(int64_t num_tasks, Fn&& fn) {
        if (num_tasks <= 0) return;
        if (num_threads_ == 1 || num_tasks == 1 || in_region()) {
            for (int64_t i = 0; i < num_tasks; ++i) fn(i);
            return;
        }
        std::atomic<int64_t> next{0};
        run([&](const Region&) {
            for (int64_t i = next.fetch_add(1); i < num_tasks; i = next.fetch_add(1)) fn(i);
        });
    }

    // Whether the calling thread is inside a region of some pool (loops then run inline).
    static bool in_region();

private:
    using Invoke = void (*)(void*, const Region&);
    void run_impl(Invoke invoke, void* ctx);
    void worker(int idx);
    void region_barrier();

    int num_threads_;
    int spin_us_;
    std::vector<std::thread> workers_;
    Invoke job_invoke_ = nullptr;
    void* job_ctx_ = nullptr;
    bool stop_ = false;
    // Bumped once per job; workers wait for it to change (spinning, then futex).
    alignas(64) std::atomic<uint32_t> generation_{0};
    alignas(64) std::atomic<int> sleepers_{0};
    alignas(64) std::atomic<int> pending_{0};
    alignas(64) std::atomic<int> barrier_arrived_{0};
    alignas(64) std::atomic<uint32_t> barrier_generation_{0};
};

}  // namespace moe
