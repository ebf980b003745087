// `moeserve ep-plan` as a user runs it: counts file in, placement file out, read back by the
// loader the server uses; bad input gets a clear error and a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "model/ep_placement.h"

namespace {

struct Result {
    int exit_code = -1;
    std::string out;
};

Result run(const std::string& args) {
    const std::string cmd = std::string(MOESERVE_BIN) + " " + args + " 2>&1";
    Result r;
    FILE* p = popen(cmd.c_str(), "r");
    if (p == nullptr) return r;
    std::array<char, 4096> buf;
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

class EpPlanCli : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() / ("ep_plan_cli_" + std::to_string(getpid()));
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string write(const std::string& name, const std::string& text) {
        const auto p = dir_ / name;
        std::ofstream(p) << text;
        return p.string();
    }
    std::filesystem::path dir_;
};

TEST_F(EpPlanCli, PlansHotExpertsAndTheServerLoaderAcceptsTheFile) {
    const std::string counts = write(
        "counts.json",
        R"({"num_layers": 2, "num_experts": 8, "layers": [{"layer": 1, "counts": [900, 10, 10, 10, 300, 10, 10, 50]}]})");
    const std::string out = (dir_ / "plan.json").string();
    Result r = run("ep-plan --counts " + counts + " --world-size 3 --redundant 2 -o " + out);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("layer 1: busiest rank at"), std::string::npos) << r.out;
    auto p = moe::EpPlacement::load(out, 2, 8, 3);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    EXPECT_TRUE(p->layer(0).is_contiguous());
    EXPECT_EQ(p->layer(1).num_physical(), 10);
    EXPECT_EQ(p->layer(1).replicas(0).size(), 3u);  // 900 -> 450 -> 300, each above expert 4's 300
    const std::vector<int64_t> c{900, 10, 10, 10, 300, 10, 10, 50};
    auto base = moe::LayerPlacement::contiguous(8, 3);
    ASSERT_TRUE(base.ok());
    EXPECT_LT(moe::placement_imbalance(p->layer(1), c), moe::placement_imbalance(*base, c));
}

TEST_F(EpPlanCli, BadInputIsAClearErrorAndNoFile) {
    const std::string counts =
        write("bad.json", R"({"num_layers": 2, "num_experts": 3, "layers": [{"layer": 0, "counts": [1, -5, 2]}]})");
    const std::string out = (dir_ / "plan.json").string();
    Result r = run("ep-plan --counts " + counts + " --world-size 2 -o " + out);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("counts[1] = -5 is not a token count"), std::string::npos) << r.out;
    EXPECT_FALSE(std::filesystem::exists(out));
    const std::string good = write("good.json", R"({"num_layers": 1, "num_experts": 3, "layers": []})");
    r = run("ep-plan --counts " + good + " --world-size 2 --redundant 9 -o " + out);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("--redundant 9: must be in [0, 3]"), std::string::npos) << r.out;
    r = run("ep-plan --counts " + good + " --world-size 0 -o " + out);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("--world-size 0: must be in [1, 4096]"), std::string::npos) << r.out;
}

TEST_F(EpPlanCli, ServersUnreachableOrMixedWithCountsAreClearErrors) {
    const std::string good = write("good.json", R"({"num_layers": 1, "num_experts": 3, "layers": []})");
    const std::string out = (dir_ / "plan.json").string();
    // Port 1 on loopback: nothing listens there.
    Result r = run("ep-plan --servers 127.0.0.1:1 --world-size 2 -o " + out);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("GetModelInfo on 127.0.0.1:1: UNAVAILABLE"), std::string::npos) << r.out;
    r = run("ep-plan --servers 127.0.0.1:1 --counts " + good + " --world-size 2 -o " + out);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("exactly one of --counts FILE and --servers"), std::string::npos) << r.out;
    r = run("ep-plan --counts " + good + " --save-counts x.json --world-size 2 -o " + out);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("--save-counts needs --servers"), std::string::npos) << r.out;
    EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
