#include "model/load_progress.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace moe {
namespace {

struct FakeClock {
    LoadProgress::Clock::time_point t{};
    void advance(double seconds) {
        t += std::chrono::duration_cast<LoadProgress::Clock::duration>(std::chrono::duration<double>(seconds));
    }
};

TEST(LoadProgress, QuietForASecondThenEveryTenPercentOrTwoSeconds) {
    FakeClock clock;
    std::vector<std::string> lines;
    const uint64_t total = 1000;
    LoadProgress p(
        total, [&](const std::string& l) { lines.push_back(l); }, [&] { return clock.t; });
    // 25% in the first half second: a fast start logs nothing.
    p.add(250);
    clock.advance(0.5);
    p.add(0);
    EXPECT_TRUE(lines.empty());
    // After a second: 29% (same decile as when quiet): nothing; 31%: a line.
    clock.advance(0.6);
    p.add(40);
    EXPECT_TRUE(lines.empty());
    p.add(20);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_NE(lines[0].find("31%"), std::string::npos) << lines[0];
    EXPECT_NE(lines[0].find("mapped and copied/packed"), std::string::npos) << lines[0];
    // Slow progress within the decile: a line every 2 s, not before.
    clock.advance(1.5);
    p.add(10);
    EXPECT_EQ(lines.size(), 1u);
    clock.advance(0.6);
    p.add(10);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_NE(lines[1].find("33%"), std::string::npos) << lines[1];
    // A big jump: one line (the last decile), then the end at 100%, never beyond.
    clock.advance(0.1);
    p.add(400);
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_NE(lines[2].find("73%"), std::string::npos) << lines[2];
    p.add(100000);
    ASSERT_EQ(lines.size(), 4u);
    EXPECT_NE(lines[3].find("100%"), std::string::npos) << lines[3];
    EXPECT_EQ(p.done_bytes(), total);
}

TEST(LoadProgress, EmptyModelLogsNothing) {
    FakeClock clock;
    int lines = 0;
    LoadProgress p(
        0, [&](const std::string&) { ++lines; }, [&] { return clock.t; });
    clock.advance(10);
    p.add(5);
    EXPECT_EQ(lines, 0);
}

}  // namespace
}  // namespace moe
