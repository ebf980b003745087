// The default thread count from the affinity mask and a cgroup CPU quota (v2 cpu.max up the
// tree, v1 cfs_quota_us), on fake cgroup trees.
#include "core/cpu_quota.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace moe {
namespace {

namespace fs = std::filesystem;

class CpuQuotaTest : public ::testing::Test {
protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() / ("moe_cgroup_" + std::to_string(::getpid()) + "_" +
                                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::create_directories(root_);
    }
    void TearDown() override { fs::remove_all(root_); }
    void write(const std::string& rel, const std::string& text) {
        fs::create_directories((root_ / rel).parent_path());
        std::ofstream(root_ / rel) << text;
    }
    fs::path root_;
};

TEST_F(CpuQuotaTest, NoQuotaUsesTheAffinityMask) {
    write("cpu.max", "max 100000\n");
    const CpuBudget b = cpu_budget(8, "0::/\n", root_.string());
    EXPECT_EQ(b.threads, 8);
    EXPECT_FALSE(b.quota_cpus.has_value());
    EXPECT_NE(b.describe().find("no cgroup CPU quota"), std::string::npos);
}

TEST_F(CpuQuotaTest, V2QuotaOfOneAndAHalfGivesOneThread) {
    write("kubepods/pod1/cpu.max", "150000 100000\n");
    const CpuBudget b = cpu_budget(4, "0::/kubepods/pod1\n", root_.string());
    ASSERT_TRUE(b.quota_cpus.has_value());
    EXPECT_DOUBLE_EQ(*b.quota_cpus, 1.5);
    EXPECT_EQ(b.threads, 1);
    EXPECT_NE(b.describe().find("1.50"), std::string::npos) << b.describe();
}

TEST_F(CpuQuotaTest, V2TightestAncestorWins) {
    write("a/cpu.max", "200000 100000\n");
    write("a/b/cpu.max", "max 100000\n");
    write("a/b/c/cpu.max", "300000 100000\n");
    const CpuBudget b = cpu_budget(16, "0::/a/b/c\n", root_.string());
    ASSERT_TRUE(b.quota_cpus.has_value());
    EXPECT_DOUBLE_EQ(*b.quota_cpus, 2.0);
    EXPECT_EQ(b.threads, 2);
    EXPECT_NE(b.quota_source.find("a/cpu.max"), std::string::npos) << b.quota_source;
}

TEST_F(CpuQuotaTest, QuotaAboveTheAffinityMaskIsCappedByIt) {
    write("x/cpu.max", "800000 100000\n");
    EXPECT_EQ(cpu_budget(2, "0::/x\n", root_.string()).threads, 2);
}

TEST_F(CpuQuotaTest, TinyQuotaStillGivesOneThread) {
    write("x/cpu.max", "10000 100000\n");
    EXPECT_EQ(cpu_budget(4, "0::/x\n", root_.string()).threads, 1);
}

TEST_F(CpuQuotaTest, V1CfsQuota) {
    write("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n");
    write("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    const CpuBudget b = cpu_budget(8, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n", root_.string());
    ASSERT_TRUE(b.quota_cpus.has_value());
    EXPECT_DOUBLE_EQ(*b.quota_cpus, 2.5);
    EXPECT_EQ(b.threads, 2);
}

TEST_F(CpuQuotaTest, V1UnlimitedAndGarbageAreIgnored) {
    write("cpu/a/cpu.cfs_quota_us", "-1\n");
    write("cpu/a/cpu.cfs_period_us", "100000\n");
    write("b/cpu.max", "lots 0\n");
    EXPECT_EQ(cpu_budget(3, "2:cpu:/a\n0::/b\n", root_.string()).threads, 3);
    // A path that climbs out of the mount is not followed.
    write("cpu.max", "100000 100000\n");
    EXPECT_EQ(cpu_budget(3, "0::/../../etc\n", root_.string()).threads, 3);
}

TEST(CpuQuota, ThisProcessHasAtLeastOneThread) {
    const CpuBudget& b = process_cpu_budget();
    EXPECT_GE(b.threads, 1);
    EXPECT_LE(b.threads, b.affinity_cpus);
}

}  // namespace
}  // namespace moe
