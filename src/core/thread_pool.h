// A fixed-size thread pool for data-parallel loops. The calling thread takes part in the work,
// so a pool of size 1 runs everything inline. Workers block (no spinning) between jobs, so they
// do not fight oneDNN's OpenMP threads, which run while the pool is idle.
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
    void worker_loop(int worker_idx);

    int num_threads_;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable cv_work_;
    std::condition_variable cv_done_;
    const std::function<void(int)>* job_ = nullptr;
    uint64_t generation_ = 0;
    int pending_ = 0;
    bool stop_ = false;
};

}  // namespace moe
