// `moeserve template` as a user runs it: the printed prompt equals transformers' rendering
// (tests/data/chat-templates/*/cases.json) byte for byte, for both messages-file forms.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace {

struct Result {
    int exit_code = -1;
    std::string out;
};

Result run_cmd(const std::string& args, bool with_stderr) {
    const std::string cmd = std::string(MOESERVE_BIN) + " " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
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

const std::filesystem::path kData = std::filesystem::path(MOE_TEST_DATA_DIR) / "chat-templates";

nlohmann::ordered_json find_case(const std::string& family, const std::string& name, std::time_t* fixed_time) {
    std::ifstream f(kData / family / "cases.json");
    std::stringstream ss;
    ss << f.rdbuf();
    const auto doc = nlohmann::ordered_json::parse(ss.str());
    *fixed_time = doc["generated_by"]["fixed_time"].get<std::time_t>();
    for (const auto& c : doc["cases"]) {
        if (c["name"] == name) return c;
    }
    ADD_FAILURE() << "no case " << name << " in " << family;
    return {};
}

class TemplateCli : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() / ("moe_template_cli_" + std::to_string(::getpid()));
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string write(const std::string& name, const std::string& text) {
        std::ofstream(dir_ / name) << text;
        return (dir_ / name).string();
    }
    std::filesystem::path dir_;
};

TEST_F(TemplateCli, PrintsWhatTransformersRenders) {
    struct Check {
        const char* family;
        const char* name;
    };
    // Object form with tools (Qwen3, gpt-oss harmony with its clock), array form (Mixtral, DeepSeek-R1).
    for (const Check& chk : {Check{"qwen3", "tool_calls_dict_args"}, Check{"gpt-oss", "tool_calls_system"},
                             Check{"mixtral", "multi_turn_no_system"}, Check{"deepseek-r1", "multi_turn"},
                             Check{"qwen3", "enable_thinking_false"}}) {
        SCOPED_TRACE(std::string(chk.family) + "/" + chk.name);
        std::time_t t = 0;
        const auto c = find_case(chk.family, chk.name, &t);
        ASSERT_TRUE(c.contains("expected"));
        std::string file;
        if (c["tools"].is_null()) {
            file = write("messages.json", c["messages"].dump());
        } else {
            nlohmann::ordered_json doc = {{"messages", c["messages"]}, {"tools", c["tools"]}};
            file = write("messages.json", doc.dump());
        }
        std::string args = "template --model " + (kData / chk.family).string() + " --messages " + file + " --time " +
                           std::to_string(t);
        if (c["add_generation_prompt"].get<bool>()) args += " --add-generation-prompt";
        if (!c["extra"].empty()) args += " --kwargs '" + c["extra"].dump() + "'";
        const Result r = run_cmd(args, false);
        ASSERT_EQ(r.exit_code, 0);
        EXPECT_EQ(r.out, c["expected"].get<std::string>());
    }
}

TEST_F(TemplateCli, ErrorsSayWhat) {
    const std::string msgs = write("m.json", R"([{"role": "user", "content": "hi"}])");
    Result r = run_cmd("template --model " + dir_.string() + " --messages " + msgs, true);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("no chat template"), std::string::npos) << r.out;

    const std::string model = (kData / "qwen3").string();
    r = run_cmd("template --model " + model + " --messages " + write("bad.json", "{oops"), true);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("not valid JSON"), std::string::npos) << r.out;
    r = run_cmd("template --model " + model + " --messages " + write("obj.json", R"({"msgs": []})"), true);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("\"messages\""), std::string::npos) << r.out;
    r = run_cmd("template --model " + model + " --messages " + (dir_ / "missing.json").string(), true);
    EXPECT_EQ(r.exit_code, 1);
    // Mixtral's template refuses a system-less conversation that does not alternate.
    r = run_cmd("template --model " + (kData / "mixtral").string() + " --messages " +
                    write("alt.json", R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])"),
                true);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("alternate"), std::string::npos) << r.out;
}

}  // namespace
