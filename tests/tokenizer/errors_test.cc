// Bad input: corrupt tokenizer files, out-of-range ids, invalid UTF-8, hostile text sizes.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer_test_util.h"

namespace moe {
namespace {

using testing::cached_tokenizer;
using testing::test_data;

// A small valid byte-level tokenizer.json to corrupt one field at a time.
nlohmann::json tiny_json() {
    nlohmann::json j;
    j["version"] = "1.0";
    j["added_tokens"] = nlohmann::json::array({{{"id", 5}, {"content", "<eos>"}, {"special", true}}});
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
    j["decoder"] = {{"type", "ByteLevel"}};
    j["model"] = {
        {"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}, {"Ġ", 3}, {"Ġab", 4}}}, {"merges", {"a b", "Ġ ab"}}};
    return j;
}

Status load_status(const nlohmann::json& j) {
    return Tokenizer::from_json_string(j.dump(), "tiny.json").status();
}

void expect_error(const Status& s, const std::string& fragment) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(fragment), std::string::npos) << "message: " << s.message();
}

TEST(TokenizerErrors, TinyTokenizerWorks) {
    auto tok = Tokenizer::from_json_string(tiny_json().dump(), "tiny.json");
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    auto ids = (*tok)->encode("ab ab<eos>", false);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, (std::vector<int32_t>{2, 4, 5}));
    EXPECT_EQ((*tok)->decode(*ids, true).value(), "ab ab");
}

TEST(TokenizerErrors, CorruptTokenizerJson) {
    expect_error(Tokenizer::from_json_string("{\"model\": ", "bad.json").status(), "not valid JSON");
    expect_error(Tokenizer::from_json_string("[1, 2]", "bad.json").status(), "JSON object");
    auto j = tiny_json();
    j.erase("model");
    expect_error(load_status(j), "missing \"model\"");

    j = tiny_json();
    j["model"]["merges"].push_back("a zz");
    expect_error(load_status(j), "'zz'");

    j = tiny_json();
    j["model"]["merges"].push_back("b a");  // "ba" is not in the vocabulary
    expect_error(load_status(j), "'ba'");

    j = tiny_json();
    j["model"]["vocab"]["c"] = 1;
    expect_error(load_status(j), "duplicate id 1");

    j = tiny_json();
    j["model"]["vocab"]["c"] = 2000000000;
    expect_error(load_status(j), "2000000000");

    j = tiny_json();
    j["model"]["vocab"]["c"] = -3;
    expect_error(load_status(j), "-3");

    j = tiny_json();
    j["model"]["vocab"]["c"] = "seven";
    expect_error(load_status(j), "not an integer");

    j = tiny_json();
    j["model"]["merges"] = {"a b c"};
    expect_error(load_status(j), "merges[0]");

    j = tiny_json();
    j["model"]["type"] = "Unigram";
    expect_error(load_status(j), "Unigram");

    j = tiny_json();
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
    expect_error(load_status(j), "does not compile");

    j = tiny_json();
    j["added_tokens"][0]["id"] = 9000000000LL;
    expect_error(load_status(j), "9000000000");

    j = tiny_json();
    j["added_tokens"][0]["id"] = 500000;
    expect_error(load_status(j), "far past");

    j = tiny_json();
    j["added_tokens"].push_back({{"id", 5}, {"content", "<other>"}, {"special", true}});
    expect_error(load_status(j), "duplicate added token id 5");

    j = tiny_json();
    j["decoder"] = {{"type", "NoSuchDecoder"}};
    expect_error(load_status(j), "NoSuchDecoder");
}

TEST(TokenizerErrors, MissingFiles) {
    auto s = Tokenizer::load("/nonexistent/dir").status();
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    s = Tokenizer::load(test_data("configs/deepseek-v3")).status();
    EXPECT_EQ(s.code(), StatusCode::kNotFound);
    EXPECT_NE(s.message().find("tokenizer.json"), std::string::npos);
}

TEST(TokenizerErrors, IdsOutOfRange) {
    const auto& tok = cached_tokenizer(test_data("tokenizers/mixtral-8x7b-instruct"));
    std::vector<int32_t> ids = {1, 22557, 32000};
    auto s = tok.decode(ids).status();
    EXPECT_EQ(s.code(), StatusCode::kOutOfRange);
    EXPECT_NE(s.message().find("32000"), std::string::npos) << s.message();
    ids = {-7};
    s = tok.decode(ids).status();
    EXPECT_NE(s.message().find("-7"), std::string::npos) << s.message();
    IncrementalDetokenizer detok(tok);
    s = detok.push(123456).status();
    EXPECT_NE(s.message().find("123456"), std::string::npos) << s.message();
    EXPECT_EQ(detok.num_tokens(), 0u);
    EXPECT_FALSE(tok.id_to_token(32000).has_value());
}

TEST(TokenizerErrors, InvalidUtf8) {
    const auto& tok = cached_tokenizer(test_data("tokenizers/qwen2"));
    for (const std::string bad : {std::string("abc\xFF"), std::string("\xC3"), std::string("x\xED\xA0\x80y"),
                                  std::string("\xC0\xAF"), std::string("ok \xF4\x90\x80\x80")}) {
        auto s = tok.encode(bad).status();
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
        EXPECT_NE(s.message().find("UTF-8"), std::string::npos) << s.message();
    }
    auto s = tok.encode("abc\xFF").status();
    EXPECT_NE(s.message().find("offset 3"), std::string::npos) << s.message();
}

// Linear-time guards: each input is ~1 MB or a long run that a quadratic BPE or a
// backtracking regex would take minutes on. The bound is loose for a shared, noisy machine.
double seconds_to_encode(const Tokenizer& tok, const std::string& text, size_t* n_ids) {
    const auto t0 = std::chrono::steady_clock::now();
    auto ids = tok.encode(text);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(ids.ok()) << ids.status().to_string();
    if (ids.ok()) {
        *n_ids = ids->size();
        auto back = tok.decode(*ids);
        EXPECT_TRUE(back.ok());
    }
    return s;
}

// Sanitizer builds run this code 5-10x slower; the bound is about complexity (a quadratic
// tokenizer takes minutes here), not speed, so it scales with the build.
#if defined(__SANITIZE_ADDRESS__)
constexpr double kHostileBoundSeconds = 60.0;
#else
constexpr double kHostileBoundSeconds = 10.0;
#endif

TEST(TokenizerHostile, LongRunsEncodeInBoundedTime) {
    std::string combining;
    for (int k = 0; k < 100000; ++k) combining += "\xCC\x81";  // U+0301
    std::string emoji;
    for (int k = 0; k < 10000; ++k) emoji += "\xF0\x9F\x98\x80";
    const std::vector<std::pair<std::string, std::string>> inputs = {
        {"1 MB of 'a'", std::string(1 << 20, 'a')}, {"1 MB of spaces", std::string(1 << 20, ' ')},
        {"1 MB of '!'", std::string(1 << 20, '!')}, {"1 MB of digits", std::string(1 << 20, '7')},
        {"100k combining marks", "e" + combining},  {"10k emoji", emoji},
    };
    for (const std::string dir : {"tokenizers/qwen2", "tokenizers/olmoe", "tokenizers/mixtral-8x7b-instruct"}) {
        const auto& tok = cached_tokenizer(test_data(dir));
        for (const auto& [name, text] : inputs) {
            size_t n = 0;
            const double s = seconds_to_encode(tok, text, &n);
            EXPECT_LT(s, kHostileBoundSeconds) << dir << ": " << name;
            EXPECT_GT(n, 0u) << dir << ": " << name;
        }
    }
}

TEST(TokenizerHostile, RepeatedCharacterDecodesBack) {
    const auto& tok = cached_tokenizer(test_data("tokenizers/qwen2"));
    const std::string text(1 << 20, 'a');
    auto ids = tok.encode(text);
    ASSERT_TRUE(ids.ok());
    // Merges must have run: far fewer tokens than characters.
    EXPECT_LT(ids->size(), text.size() / 4);
    EXPECT_EQ(tok.decode(*ids).value(), text);
}

}  // namespace
}  // namespace moe
