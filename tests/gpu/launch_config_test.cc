// Host-side launch arithmetic of the kernels: runs on every machine, GPU or not.
#include <gtest/gtest.h>

#include "kernels/common/kernel_types.h"
#include "kernels/common/launch.h"

namespace moe::kernels {
namespace {

TEST(LaunchConfig, GridCoversTheWorkAndStaysWithinTheCap) {
    EXPECT_EQ(grid_for(0, 256), 1u);  // a launch always has a block; kernels loop zero times
    EXPECT_EQ(grid_for(1, 256), 1u);
    EXPECT_EQ(grid_for(256, 256), 1u);
    EXPECT_EQ(grid_for(257, 256), 2u);
    EXPECT_EQ(grid_for(19, 1), 19u);
    // Beyond the cap the grid-stride loops take over.
    EXPECT_EQ(grid_for(int64_t{1} << 40, 256), static_cast<unsigned>(kMaxGridX));
}

TEST(LaunchConfig, RowThreadsAreWholeWarpsBetweenOneWarpAndTheCap) {
    EXPECT_EQ(threads_for_row(0, 1), 32);
    EXPECT_EQ(threads_for_row(1, 1), 32);
    EXPECT_EQ(threads_for_row(33, 1), 64);
    EXPECT_EQ(threads_for_row(111, 4), 32);  // 28 threads of 4 elements -> one warp
    EXPECT_EQ(threads_for_row(4096, 4, 512), 512);
    EXPECT_EQ(threads_for_row(2048, 4, 512), 512);
    EXPECT_EQ(threads_for_row(1000, 4, 512), 256);
    EXPECT_EQ(threads_for_row(1 << 20, 1, 256), 256);
    for (int64_t n : {1, 7, 31, 32, 63, 64, 100, 1023, 5000}) {
        const int t = threads_for_row(n, 1, 1024);
        EXPECT_EQ(t % 32, 0) << n;
        EXPECT_GE(t, 32) << n;
        EXPECT_LE(t, 1024) << n;
    }
}

TEST(LaunchConfig, AlignmentCheck) {
    alignas(16) float buf[8] = {};
    EXPECT_TRUE(is_aligned(buf, 16));
    EXPECT_FALSE(is_aligned(buf + 1, 16));
    EXPECT_TRUE(is_aligned(buf + 1, 4));
}

TEST(KernelError, DecodesTheLowestBadRow) {
    // The kernels record ~row with atomicMax; the lowest row wins.
    KernelError e;
    EXPECT_FALSE(has_error(e));
    for (uint32_t row : {7u, 3u, 12u}) {
        e.num_bad += 1;
        e.not_first_bad = std::max(e.not_first_bad, ~row);
    }
    EXPECT_TRUE(has_error(e));
    EXPECT_EQ(first_bad_row(e), 3u);
    KernelError zero_row;
    zero_row.num_bad = 1;
    zero_row.not_first_bad = ~0u;
    EXPECT_EQ(first_bad_row(zero_row), 0u);
}

}  // namespace
}  // namespace moe::kernels
