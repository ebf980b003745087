#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>

namespace moe {

ThreadPool::ThreadPool(int num_threads) {
    if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    num_threads_ = num_threads;
    for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mu_);
        stop_ = true;
    }
    cv_work_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(int worker_idx) {
    uint64_t seen = 0;
    for (;;) {
        const std::function<void(int)>* job;
        {
            std::unique_lock<std::mutex> lock(mu_);
            cv_work_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            job = job_;
        }
        (*job)(worker_idx);
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (--pending_ == 0) cv_done_.notify_one();
        }
    }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    const int64_t chunks = std::min<int64_t>(n, num_threads_);
    if (chunks == 1) {
        fn(0, n);
        return;
    }
    const std::function<void(int)> job = [&](int worker_idx) {
        if (worker_idx >= chunks) return;
        const int64_t begin = n * worker_idx / chunks;
        const int64_t end = n * (worker_idx + 1) / chunks;
        if (begin < end) fn(begin, end);
    };
    {
        std::lock_guard<std::mutex> lock(mu_);
        job_ = &job;
        pending_ = num_threads_ - 1;
        ++generation_;
    }
    cv_work_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lock(mu_);
    cv_done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
}

void ThreadPool::parallel_tasks(int64_t num_tasks, const std::function<void(int64_t)>& fn) {
    if (num_tasks <= 0) return;
    if (num_threads_ == 1 || num_tasks == 1) {
        for (int64_t i = 0; i < num_tasks; ++i) fn(i);
        return;
    }
    std::atomic<int64_t> next{0};
    parallel_for(num_threads_, [&](int64_t, int64_t) {
        for (int64_t i = next.fetch_add(1); i < num_tasks; i = next.fetch_add(1)) fn(i);
    });
}

}  // namespace moe
