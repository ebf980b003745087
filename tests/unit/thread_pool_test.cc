// The CPU thread pool (core/thread_pool.h): every unit once, phases ordered, nesting inline,
// exceptions back on the caller, and all of it with more threads than cores and busy neighbours.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace moe {
namespace {

int hardware_threads() {
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Busy loops (`while :; do :; done`) on `n` threads until destroyed.
class BusyNeighbours {
public:
    explicit BusyNeighbours(int n) {
        for (int i = 0; i < n; ++i)
            threads_.emplace_back([this] {
                uint64_t x = 0;
                while (!stop_.load(std::memory_order_relaxed)) x = x * 6364136223846793005ull + 1;
                sink_.fetch_add(x, std::memory_order_relaxed);
            });
    }
    ~BusyNeighbours() {
        stop_ = true;
        for (auto& t : threads_) t.join();
    }

private:
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> sink_{0};
    std::vector<std::thread> threads_;
};

// Three dependent phases: phase 0 writes a[i] = i + round, phase 1 reads all of a into b[j]
// (so it must see every write of phase 0), phase 2 reads all of b. Any unit started early, run
// twice or skipped shows up in the sums. Returns false (with a gtest failure) on a mismatch.
// work_us: each unit also spins that long, so that the units overlap across threads.
bool run_three_phases(ThreadPool& pool, int64_t n0, int64_t n1, int64_t n2, int round, int work_us = 0) {
    std::vector<int64_t> a(static_cast<size_t>(n0), -1), b(static_cast<size_t>(n1), -1);
    std::vector<std::atomic<int>> hits2(static_cast<size_t>(n2));
    std::vector<int64_t> c(static_cast<size_t>(n2), -1);
    std::atomic<int> bad_index{0};
    pool.run_phases({n0, n1, n2}, [&](int phase, int64_t u) {
        if (ThreadPool::thread_index() < 0 || ThreadPool::thread_index() >= pool.size()) bad_index++;
        if (work_us > 0) {
            const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(work_us);
            while (std::chrono::steady_clock::now() < end) {
            }
        }
        if (phase == 0) {
            a[static_cast<size_t>(u)] = u + round;
        } else if (phase == 1) {
            int64_t sum = 0;
            for (int64_t v : a) sum += v;
            b[static_cast<size_t>(u)] = sum + u;
        } else {
            int64_t sum = 0;
            for (int64_t v : b) sum += v;
            c[static_cast<size_t>(u)] = sum;
            hits2[static_cast<size_t>(u)]++;
        }
    });
    const int64_t sum_a = n0 * (n0 - 1) / 2 + n0 * round;
    const int64_t sum_b = n1 * sum_a + n1 * (n1 - 1) / 2;
    EXPECT_EQ(bad_index.load(), 0);
    for (int64_t j = 0; j < n1; ++j) {
        EXPECT_EQ(b[static_cast<size_t>(j)], sum_a + j) << "phase 1 unit " << j << " round " << round;
        if (b[static_cast<size_t>(j)] != sum_a + j) return false;
    }
    for (int64_t k = 0; k < n2; ++k) {
        EXPECT_EQ(c[static_cast<size_t>(k)], sum_b) << "phase 2 unit " << k << " round " << round;
        EXPECT_EQ(hits2[static_cast<size_t>(k)].load(), 1);
        if (c[static_cast<size_t>(k)] != sum_b || hits2[static_cast<size_t>(k)].load() != 1) return false;
    }
    return true;
}

TEST(ThreadPool, PhasesRunInOrderEveryUnitOnce) {
    for (int spin_us : {0, ThreadPool::kDefaultSpinUs}) {
        for (int threads : {1, 2, 3, 5}) {
            ThreadPool pool(threads, spin_us);
            for (int round = 0; round < 40; ++round) {
                // Odd sizes, empty phases, a single unit.
                const int64_t sizes[][3] = {{1, 1, 1}, {19, 3, 111}, {0, 5, 2}, {7, 0, 4}, {2, 2, 0}};
                for (const auto& sz : sizes)
                    ASSERT_TRUE(run_three_phases(pool, sz[0], sz[1], sz[2], round))
                        << "threads " << threads << " spin_us " << spin_us;
                if (round % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
            ASSERT_TRUE(run_three_phases(pool, 13, 7, 29, 0, /*work_us=*/30));
        }
    }
}

TEST(ThreadPool, EmptyJobsAndNestedLoopsRunInline) {
    ThreadPool pool(3);
    int calls = 0;
    pool.run_phases({0, 0}, [&](int, int64_t) { calls++; });
    pool.parallel_for(0, [&](int64_t, int64_t) { calls++; });
    pool.parallel_tasks(0, [&](int64_t) { calls++; });
    EXPECT_EQ(calls, 0);
    EXPECT_FALSE(ThreadPool::in_region());
    EXPECT_EQ(ThreadPool::thread_index(), 0);
    std::atomic<int> nested_whole{0}, outer{0};
    pool.parallel_for(9, [&](int64_t, int64_t) {
        outer++;
        EXPECT_TRUE(ThreadPool::in_region());
        const int idx = ThreadPool::thread_index();
        // A nested loop runs on this thread, in one piece, and keeps its thread index.
        pool.parallel_for(10, [&](int64_t b, int64_t e) {
            EXPECT_EQ(ThreadPool::thread_index(), idx);
            if (b == 0 && e == 10) nested_whole++;
        });
        pool.run_phases({2, 3}, [&](int, int64_t) { EXPECT_EQ(ThreadPool::thread_index(), idx); });
    });
    EXPECT_EQ(outer.load(), 9);  // 9 < kUnitsPerThread * 3: one unit per index
    EXPECT_EQ(nested_whole.load(), 9);
    EXPECT_FALSE(ThreadPool::in_region());
}

TEST(ThreadPool, CoversEveryIndexOnceWithMoreUnitsThanThreads) {
    ThreadPool pool(2);
    for (int64_t n : {1, 2, 7, 8, 9, 1000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int64_t> chunks{0};
        pool.parallel_for(n, [&](int64_t b, int64_t e) {
            chunks++;
            for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n " << n;
        EXPECT_EQ(chunks.load(), std::min<int64_t>(n, ThreadPool::kUnitsPerThread * 2)) << "n " << n;
    }
    // With a grain: at most n / grain chunks (at least one, then inline on the caller).
    for (int64_t n : {1, 5, 63, 64, 65, 1000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int64_t> chunks{0};
        std::atomic<int> off_caller{0};
        pool.parallel_for(
            n,
            [&](int64_t b, int64_t e) {
                chunks++;
                if (e - b < 16 && n >= 16) off_caller++;  // a chunk below the grain
                for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
            },
            /*grain=*/16);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n " << n;
        EXPECT_EQ(chunks.load(), std::min<int64_t>(std::max<int64_t>(1, n / 16), ThreadPool::kUnitsPerThread * 2))
            << "n " << n;
        EXPECT_EQ(off_caller.load(), 0) << "n " << n;
    }
    EXPECT_EQ(ThreadPool::grain_for(64), ThreadPool::kMinUnitElements / 64);
    EXPECT_EQ(ThreadPool::grain_for(1 << 20), 1);
    EXPECT_EQ(ThreadPool::grain_for(0), ThreadPool::kMinUnitElements);
}

// An exception in a unit comes back on the caller after the units in flight are done; the
// units not started are skipped; the pool runs the next job normally.
TEST(ThreadPool, ExceptionsComeBackToTheCaller) {
    for (int threads : {1, 2, 4}) {
        ThreadPool pool(threads);
        for (int round = 0; round < 20; ++round) {
            std::atomic<int> after{0};
            try {
                pool.run_phases({8, 8}, [&](int phase, int64_t u) {
                    if (phase == 0 && u == 3) throw std::runtime_error("unit 3 failed");
                    if (phase == 1) after++;
                });
                FAIL() << "no exception, threads " << threads;
            } catch (const std::runtime_error& e) {
                EXPECT_STREQ(e.what(), "unit 3 failed");
            }
            // Phase 1 waits for all of phase 0, which failed: nothing of it runs.
            EXPECT_EQ(after.load(), 0) << "threads " << threads;
            EXPECT_FALSE(ThreadPool::in_region());
            ASSERT_TRUE(run_three_phases(pool, 5, 3, 7, round));
        }
    }
}

// More threads than cores and busy neighbours on every core: every job still completes with the
// right result (no unit lost or run twice, phases ordered), in bounded time, and the pool notices
// that it is sharing its cores (preemptions seen).
TEST(ThreadPool, OversubscribedWithBusyNeighbours) {
    const int hw = std::min(hardware_threads(), 16);
    ThreadPool pool(2 * hw + 1);
    BusyNeighbours busy(hw);
    const auto t0 = std::chrono::steady_clock::now();
    int rounds = 0;
    // A bounded number of rounds, or 10 s of them on a slow shared machine.
    for (; rounds < 200; ++rounds) {
        ASSERT_TRUE(run_three_phases(pool, 9, 4, 33, rounds, /*work_us=*/20)) << "round " << rounds;
        std::vector<std::atomic<int>> hits(257);
        pool.parallel_tasks(257, [&](int64_t i) { hits[static_cast<size_t>(i)]++; });
        for (auto& h : hits) ASSERT_EQ(h.load(), 1);
        if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) break;
    }
    const ThreadPool::Stats s = pool.stats();
    std::printf(
        "oversubscribed: %d rounds in %.2f s, %lld jobs, %lld units by workers, %lld phase sleeps, "
        "%lld idle sleeps, %lld preemptions\n",
        rounds, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
        static_cast<long long>(s.jobs), static_cast<long long>(s.units_by_workers),
        static_cast<long long>(s.phase_sleeps), static_cast<long long>(s.idle_sleeps),
        static_cast<long long>(s.preemptions));
    EXPECT_GE(rounds, 20);
    EXPECT_GT(s.preemptions, 0);
}

// Workers asleep between jobs (spin 0) and jobs short enough that the caller often takes every
// unit before a worker has woken up: a worker arriving after the job it was woken for finds the
// word closed or a newer job, takes nothing of the old one, and no job loses or repeats a unit.
TEST(ThreadPool, SleepingWorkersAndShortJobs) {
    ThreadPool pool(4, /*spin_us=*/0);
    for (int round = 0; round < 200; ++round) {
        int64_t sum = 0;  // written only by whoever runs the single phase-1 unit
        std::vector<int64_t> parts(8, 0);
        pool.run_phases({8, 1}, [&](int phase, int64_t u) {
            if (phase == 0) {
                parts[static_cast<size_t>(u)] = u * round;
            } else {
                for (int64_t v : parts) sum += v;
            }
        });
        ASSERT_EQ(sum, 28 * round);
    }
    EXPECT_EQ(pool.stats().jobs, 200);
}

}  // namespace
}  // namespace moe
