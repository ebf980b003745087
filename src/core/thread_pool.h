// Data-parallel loops over a fixed number of threads. The loops run on OpenMP's thread team,
// the same team oneDNN and OpenBLAS use, so the cores are never oversubscribed and a loop starts
// in microseconds. A pool of size 1 runs everything inline on the caller. A loop nested inside
// another runs on one thread (OpenMP's nested parallelism stays off).
//
// Thread safety: parallel_for may be called by one thread at a time.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace moe {

class ThreadPool {
public:
    // num_threads <= 0: hardware concurrency (at least 1).
    explicit ThreadPool(int num_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return num_threads_; }

    // Splits [0, n) into at most size() contiguous chunks and runs fn(begin, end) on each.
    // Chunks are a pure function of n and size(), so results are deterministic.
    void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

    // Runs fn(i) for i in [0, num_tasks), tasks handed out dynamically.
    void parallel_tasks(int64_t num_tasks, const std::function<void(int64_t)>& fn);

private:
    int num_threads_;
};

}  // namespace moe
