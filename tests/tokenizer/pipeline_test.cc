// One pipeline stage at a time on tiny tokenizer.json files, against the ids and decodes HF
// `tokenizers` gives (tests/reference/tokenizer/pipeline_cases.json, from
// make_tokenizer_vectors.py), plus loader variants the real files do not cover.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tokenizer/tokenizer_test_util.h"

namespace moe {
namespace {

using testing::ids_str;
using testing::read_all;
using testing::source_path;

TEST(TokenizerPipeline, MatchesHfOnHandMadeTokenizers) {
    const auto all = nlohmann::json::parse(read_all(source_path("tests/reference/tokenizer/pipeline_cases.json")));
    ASSERT_GE(all.size(), 5u);
    size_t checked = 0;
    for (const auto& [name, group] : all.items()) {
        auto tok = Tokenizer::from_json_string(group["tokenizer"].dump(), name);
        ASSERT_TRUE(tok.ok()) << name << ": " << tok.status().to_string();
        for (const auto& c : group["cases"]) {
            const std::string text = c["text"].get<std::string>();
            const auto expected = c["ids"].get<std::vector<int32_t>>();
            auto ids = (*tok)->encode(text);
            ASSERT_TRUE(ids.ok()) << ids.status().to_string();
            EXPECT_EQ(ids_str(*ids), ids_str(expected)) << name << ": '" << text << "'";
            auto decoded = (*tok)->decode(expected);
            ASSERT_TRUE(decoded.ok());
            EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << name << ": '" << text << "'";
            ++checked;
        }
    }
    EXPECT_GE(checked, 20u);
}

TEST(TokenizerPipeline, MergesTxtWithVersionHeaderAndCrlf) {
    // Same Qwen2 merges with the "#version" line and CRLF endings of the other upload.
    const std::string src = testing::test_data("tokenizers/qwen2");
    const std::string dir = ::testing::TempDir() + "/qwen2_crlf";
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(src + "/vocab.json", dir + "/vocab.json",
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(src + "/qwen3-30b-a3b.tokenizer_config.json", dir + "/tokenizer_config.json",
                               std::filesystem::copy_options::overwrite_existing);
    {
        std::ifstream in(src + "/merges.txt");
        std::ofstream out(dir + "/merges.txt", std::ios::binary);
        out << "#version: 0.2\r\n";
        std::string line;
        while (std::getline(in, line)) out << line << "\r\n";
    }
    auto a = Tokenizer::load(dir);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    const auto& b = testing::cached_tokenizer(src);
    const std::string text = "Hello, world! Ünïcödé 12345 <|im_start|>assistant\n  spaces\t\ttabs";
    EXPECT_EQ((*a)->encode(text).value(), b.encode(text).value());
}

TEST(TokenizerPipeline, MergesAsPairsEqualMergesAsStrings) {
    const std::string path = testing::test_data("tokenizers/gpt2/tokenizer.json");
    auto j = nlohmann::json::parse(read_all(path));
    for (auto& m : j["model"]["merges"]) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        m = nlohmann::json::array({s.substr(0, sp), s.substr(sp + 1)});
    }
    auto pairs = Tokenizer::from_json_string(j.dump(), "pairs.json");
    ASSERT_TRUE(pairs.ok()) << pairs.status().to_string();
    const auto& strings = testing::cached_tokenizer(path);
    for (const std::string text : {"Hello world", "  tabs\tand 123 numbers!!", "ünïcode 日本語"}) {
        EXPECT_EQ((*pairs)->encode(text).value(), strings.encode(text).value()) << text;
    }
}

TEST(TokenizerPipeline, ConcurrentEncodeIsDeterministic) {
    const auto& tok = testing::cached_tokenizer(testing::test_data("tokenizers/qwen2"));
    std::string text;
    for (int k = 0; k < 2000; ++k) text += "word" + std::to_string(k * 7919 % 1000) + " and more text, ";
    const auto expected = tok.encode(text).value();
    std::vector<std::thread> threads;
    std::vector<int> ok(2, 0);
    for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] {
            for (int r = 0; r < 5; ++r) ok[static_cast<size_t>(t)] += tok.encode(text).value() == expected;
        });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(ok[0], 5);
    EXPECT_EQ(ok[1], 5);
}

}  // namespace
}  // namespace moe
