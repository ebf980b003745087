// Byte-exact checks of the template interpreter against Python jinja2 as transformers renders chat
// templates: tests/data/chat-templates/*/cases.json (real templates of each served family) and
// constructs.json (one construct each), written by tests/reference/make_template_vectors.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "template/chat_template.h"

namespace moe::tmpl {
namespace {

const std::filesystem::path kDir = std::filesystem::path(MOE_TEST_DATA_DIR) / "chat-templates";

nlohmann::ordered_json read_json(const std::filesystem::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return nlohmann::ordered_json::parse(ss.str());
}

// Compares and, on a mismatch, shows both texts with the first differing byte.
void expect_same(const std::string& name, const std::string& expected, const std::string& got) {
    if (expected == got) return;
    size_t i = 0;
    while (i < expected.size() && i < got.size() && expected[i] == got[i]) ++i;
    ADD_FAILURE() << name << ": first difference at byte " << i << "\n--- expected (jinja2) ---\n"
                  << expected << "\n--- got ---\n"
                  << got << "\n--- expected from there: [" << expected.substr(i, 40) << "]\n--- got from there: ["
                  << got.substr(i, 40) << "]";
}

TEST(TemplateVectors, Constructs) {
    const auto doc = read_json(kDir / "constructs.json");
    const std::time_t fixed = doc["generated_by"]["fixed_time"].get<std::time_t>();
    int checked = 0;
    for (const auto& c : doc["cases"]) {
        const std::string name = c["name"].get<std::string>();
        SCOPED_TRACE(name);
        auto t = ChatTemplate::from_string(c["template"].get<std::string>(), "", "");
        if (c.contains("error") && c["error"] == "syntax") {
            EXPECT_FALSE(t.ok()) << name << ": jinja2 refused this template at load (" << c["message"] << ")";
            if (!t.ok()) EXPECT_NE(t.status().message().find("line"), std::string::npos) << t.status().message();
            ++checked;
            continue;
        }
        ASSERT_TRUE(t.ok()) << name << ": " << t.status().to_string();
        t->set_fixed_time_for_testing(fixed);
        auto out = t->render(nlohmann::ordered_json::array(), nullptr, false, c["vars"]);
        if (c.contains("error")) {
            EXPECT_FALSE(out.ok()) << name << ": jinja2 failed with " << c["message"] << ", we rendered ["
                                   << (out.ok() ? *out : "") << "]";
            if (!out.ok() && c["error"] == "raise") {
                EXPECT_NE(out.status().message().find(c["message"].get<std::string>()), std::string::npos)
                    << out.status().message();
            }
        } else {
            ASSERT_TRUE(out.ok()) << name << ": " << out.status().to_string();
            expect_same(name, c["expected"].get<std::string>(), *out);
        }
        ++checked;
    }
    EXPECT_GT(checked, 90);
}

class FamilyVectors : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyVectors, MatchesTransformers) {
    const auto dir = kDir / GetParam();
    const auto doc = read_json(dir / "cases.json");
    auto t = ChatTemplate::load(dir.string());
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    t->set_fixed_time_for_testing(doc["generated_by"]["fixed_time"].get<std::time_t>());
    int rendered = 0;
    for (const auto& c : doc["cases"]) {
        const std::string name = GetParam() + "/" + c["name"].get<std::string>();
        SCOPED_TRACE(name);
        auto out = t->render(c["messages"], c["tools"], c["add_generation_prompt"].get<bool>(), c["extra"]);
        if (c.contains("error")) {
            EXPECT_FALSE(out.ok()) << name << ": transformers failed with " << c["message"] << ", we rendered:\n"
                                   << (out.ok() ? *out : "");
            if (!out.ok() && c["error"] == "raise") {
                EXPECT_NE(out.status().message().find(c["message"].get<std::string>()), std::string::npos)
                    << out.status().message();
            }
            continue;
        }
        ASSERT_TRUE(out.ok()) << name << ": " << out.status().to_string();
        expect_same(name, c["expected"].get<std::string>(), *out);
        ++rendered;
    }
    // Every family renders most conversations; a family that errors on all would check nothing.
    EXPECT_GE(rendered, 10);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyVectors,
                         ::testing::Values("qwen3", "mixtral", "deepseek-v3", "deepseek-r1", "kimi-k2", "gpt-oss",
                                           "glm-4.5"),
                         [](const auto& info) {
                             std::string n = info.param;
                             for (auto& ch : n) {
                                 if (ch == '-' || ch == '.') ch = '_';
                             }
                             return n;
                         });

}  // namespace
}  // namespace moe::tmpl
