// Bad input: corrupt tokenizer files, out-of-range ids, invalid UTF-8, hostile text sizes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
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

// ---- #18 B, C, F, G: hostile tokenizer files ----------------------------------------------

// `n` levels of `open` ... `inner` ... `close`.
std::string nest(size_t n, const std::string& open, const std::string& close, const std::string& inner) {
    std::string s;
    for (size_t i = 0; i < n; ++i) s += open;
    s += inner;
    for (size_t i = 0; i < n; ++i) s += close;
    return s;
}

// `j` dumped with the string value "@@" replaced by `raw`.
std::string splice(const nlohmann::json& j, const std::string& raw) {
    std::string s = j.dump();
    const size_t at = s.find("\"@@\"");
    EXPECT_NE(at, std::string::npos);
    return s.replace(at, 4, raw);
}

class ScratchDir {
public:
    ScratchDir() {
        static int counter = 0;
        path_ = std::filesystem::temp_directory_path() /
                ("moe_tok_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        std::filesystem::remove_all(path_);
        std::filesystem::create_directories(path_);
    }
    ~ScratchDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
    std::string str() const { return path_.string(); }

private:
    std::filesystem::path path_;
};

void write_file(const std::filesystem::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
}

TEST(TokenizerHostile, DeeplyNestedJsonIsRefusedNamingTheFile) {
    auto j = tiny_json();
    j["normalizer"] = "@@";
    const auto t0 = std::chrono::steady_clock::now();
    expect_error(Tokenizer::from_json_string(splice(j, nest(100000, "[", "]", "1")), "deep.json").status(),
                 "deep.json: JSON nested deeper than the limit of 64");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));

    ScratchDir dir;
    write_file(dir / "tokenizer.json", tiny_json().dump());
    write_file(dir / "tokenizer_config.json", splice({{"bos_token", "@@"}}, nest(100000, "{\"a\":", "}", "1")));
    expect_error(Tokenizer::load(dir.str()).status(), "tokenizer_config.json: JSON nested deeper");

    ScratchDir slow;
    write_file(slow / "vocab.json", splice({{"a", "@@"}}, nest(100000, "[", "]", "0")));
    write_file(slow / "merges.txt", "#version: 0.2\n");
    expect_error(Tokenizer::load(slow.str()).status(), "vocab.json: JSON nested deeper");
}

TEST(TokenizerHostile, FifoInPlaceOfTokenizerJsonIsRefusedAtOnce) {
    ScratchDir dir;
    ASSERT_EQ(::mkfifo((dir / "tokenizer.json").c_str(), 0600), 0);
    const auto t0 = std::chrono::steady_clock::now();
    expect_error(Tokenizer::load(dir.str()).status(), "not a regular file");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

// Nested Sequences of each component kind, `depth` levels around `leaf`.
nlohmann::json nested_sequence(const char* list_key, int depth, const nlohmann::json& leaf) {
    nlohmann::json j = leaf;
    for (int i = 0; i < depth; ++i) j = {{"type", "Sequence"}, {list_key, nlohmann::json::array({j})}};
    return j;
}

TEST(TokenizerHostile, SequenceNestingIsBounded) {
    struct Kind {
        const char* field;
        const char* list_key;
        nlohmann::json leaf;
    };
    const Kind kinds[] = {
        {"normalizer", "normalizers", {{"type", "NFC"}}},
        {"pre_tokenizer", "pretokenizers", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
        {"decoder", "decoders", {{"type", "ByteLevel"}}},
        {"post_processor", "processors", {{"type", "ByteLevel"}}},
    };
    for (const Kind& k : kinds) {
        SCOPED_TRACE(k.field);
        auto j = tiny_json();
        j[k.field] = nested_sequence(k.list_key, 16, k.leaf);  // the limit itself loads
        auto ok = Tokenizer::from_json_string(j.dump(), "tiny.json");
        ASSERT_TRUE(ok.ok()) << ok.status().to_string();
        EXPECT_EQ((*ok)->encode("ab ab", false).value(), (std::vector<int32_t>{2, 4}));
        j[k.field] = nested_sequence(k.list_key, 20, k.leaf);
        expect_error(load_status(j), "Sequence nested deeper than the limit of 16 levels");
        expect_error(load_status(j), k.field);
    }
    // 10k levels (1 GB and a crash before) now stop at the JSON depth limit, in no time. Built as
    // text: nesting json values copies each level again.
    auto j = tiny_json();
    j["normalizer"] = "@@";
    const std::string deep =
        splice(j, nest(10000, R"({"type": "Sequence", "normalizers": [)", "]}", R"({"type": "NFC"})"));
    const auto t0 = std::chrono::steady_clock::now();
    expect_error(Tokenizer::from_json_string(deep, "deep.json").status(), "nested deeper");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

nlohmann::json replace(const std::string& pattern, const std::string& content, bool regex = false) {
    return {{"type", "Replace"}, {"pattern", {{regex ? "Regex" : "String", pattern}}}, {"content", content}};
}

TEST(TokenizerHostile, ReplaceThatMultipliesTextIsRefusedAtLoad) {
    auto j = tiny_json();
    j["normalizer"] = replace("a", std::string(1 << 20, 'b'));  // 1 MiB for every 'a': bad_alloc before
    expect_error(load_status(j), "Replace content of 1048576 bytes");
    expect_error(load_status(j), "limit of 16");
    j["normalizer"] = replace(".", std::string(17, 'b'), true);  // a regex match may be 1 byte
    expect_error(load_status(j), "over the limit of 16");
    // Each step within the bound, but together 8 x 8 = 64 times.
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", {replace("a", std::string(8, 'a')), replace("a", std::string(8, 'a'))}}};
    expect_error(load_status(j), "together can make text 64 times longer");
    j["normalizer"] = nullptr;
    j["decoder"] = replace("a", std::string(1 << 16, 'b'));
    expect_error(load_status(j), "decoder: Replace content of 65536 bytes");

    // What published tokenizers do (" " -> U+2581, 3x) still loads and runs.
    j = tiny_json();
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", {replace(" ", "\xE2\x96\x81"), replace("\xE2\x96\x81", " ")}}};
    auto tok = Tokenizer::from_json_string(j.dump(), "tiny.json");
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    EXPECT_EQ((*tok)->encode("ab ab", false).value(), (std::vector<int32_t>{2, 4}));
}

TEST(TokenizerHostile, NormalizedLengthIsCappedAtRunTime) {
    // Within the load-time bound (16x per regex match) but after NFKC's own expansion
    // (U+FDFA is 3 bytes and 18 characters), the text would grow ~100x: refused, not built.
    auto j = tiny_json();
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", {{{"type", "NFKC"}}, replace(".", std::string(16, 'a'), true)}}};
    auto tok = Tokenizer::from_json_string(j.dump(), "tiny.json");
    ASSERT_TRUE(tok.ok()) << tok.status().to_string();
    std::string text;
    for (int i = 0; i < 1000; ++i) text += "\xEF\xB7\xBA";
    auto ids = (*tok)->encode(text, false);
    ASSERT_FALSE(ids.ok()) << ids->size() << " ids";
    EXPECT_NE(ids.status().message().find("Replace would make the text"), std::string::npos)
        << ids.status().to_string();
    EXPECT_NE(ids.status().message().find("over the limit of 52096 bytes"), std::string::npos)
        << ids.status().to_string();
    // Short text is under the cap and encodes.
    EXPECT_TRUE((*tok)->encode("ab", false).ok());
}

}  // namespace
}  // namespace moe
