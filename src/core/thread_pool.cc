#include "core/thread_pool.h"

#include <omp.h>

#include <algorithm>
#include <atomic>

namespace moe {

// NOTE: the loops run on OpenMP's threads rather than threads of our own. oneDNN and OpenBLAS
// already keep an OpenMP team warm, a decode step runs hundreds of short parallel loops, and an
// OpenMP region starts in a few microseconds where a condition-variable wake-up of our own
// workers took tens: moving the decode GEMV onto OpenMP made moe-s batch-1 decode 1.8x faster
// (benchmarks/forward_bench). Sharing one team also means the cores are never oversubscribed.
ThreadPool::ThreadPool(int num_threads) {
    if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    num_threads_ = num_threads;
}

ThreadPool::~ThreadPool() = default;


void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    const int64_t chunks = std::min<int64_t>(n, num_threads_);
    if (chunks == 1) {
        fn(0, n);
        return;
    }
    // Chunk c is [n * c / chunks, n * (c + 1) / chunks): a pure function of n and the size, so
    // results are deterministic whichever OpenMP thread runs which chunk.
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static, 1)
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t begin = n * c / chunks;
        const int64_t end = n * (c + 1) / chunks;
        if (begin < end) fn(begin, end);
    }
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
