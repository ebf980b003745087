// tiktoken rank files (Kimi K2's tokenizer format) against the `tiktoken` package: ids and decoded
// text of tests/reference/tokenizer/tiktoken/cases.json (make_tiktoken_vectors.py), and the
// refusals of bad rank files and configs.
#include "tokenizer/tiktoken.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "core/sha256.h"
#include "tokenizer/tokenizer_test_util.h"
#include "tokenizer/unicode.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using testing::read_all;
using testing::source_path;
using testing::test_data;

std::string base64(std::string_view in) {
    static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
        for (int s = 18; s >= 0; s -= 6) out += a[(v >> s) & 63];
    }
    if (i + 1 == in.size()) {
        const uint32_t v = uint8_t(in[i]) << 16;
        out += a[(v >> 18) & 63];
        out += a[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
        out += a[(v >> 18) & 63];
        out += a[(v >> 12) & 63];
        out += a[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

// GPT-2's vocabulary as a tiktoken rank file (r50k_base): byte-level strings back to bytes.
std::string gpt2_rank_file() {
    const auto vocab = nlohmann::json::parse(read_all(test_data("tokenizers/gpt2/vocab.json")));
    std::map<int32_t, std::string> tokens;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        if (it.key() == "<|endoftext|>") continue;
        std::string bytes;
        const std::string& s = it.key();
        for (size_t i = 0; i < s.size();) {
            const int b = tok::code_point_to_byte(tok::next_code_point(s, i));
            if (b < 0) throw std::runtime_error("vocab.json: a token outside GPT-2's byte table: " + s);
            bytes += static_cast<char>(b);
        }
        tokens[it.value().get<int32_t>()] = bytes;
    }
    std::string file;
    for (const auto& [rank, bytes] : tokens) file += base64(bytes) + " " + std::to_string(rank) + "\n";
    return file;
}

class TiktokenTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("moe_tiktoken_" + std::to_string(::getpid()));
        fs::create_directories(dir_);
        fs::copy_file(source_path("tests/reference/tokenizer/tiktoken/tokenizer_config.json"),
                      dir_ / "tokenizer_config.json", fs::copy_options::overwrite_existing);
    }
    void TearDown() override { fs::remove_all(dir_); }
    void write(const std::string& name, const std::string& text) {
        std::ofstream(dir_ / name, std::ios::binary) << text;
    }
    Status load_status() { return Tokenizer::load(dir_.string()).status(); }
    fs::path dir_;
};

TEST_F(TiktokenTest, MatchesTiktokenIdsAndDecodeOnEveryCase) {
    const auto cases = nlohmann::json::parse(read_all(source_path("tests/reference/tokenizer/tiktoken/cases.json")));
    const std::string ranks = gpt2_rank_file();
    // The rank file here is byte for byte the one tiktoken read when the vectors were made.
    ASSERT_EQ(Sha256::hex(Sha256::of(ranks)), cases["rank_file_sha256"].get<std::string>());
    write("tiktoken.model", ranks);
    auto tk = Tokenizer::load(dir_.string());
    ASSERT_TRUE(tk.ok()) << tk.status().to_string();
    const int32_t num_base = cases["num_base"].get<int32_t>();
    EXPECT_EQ((*tk)->vocab_size(), num_base + 258);
    ASSERT_GE(cases["cases"].size(), 60u);
    for (const auto& c : cases["cases"]) {
        const std::string text = c["text"].get<std::string>();
        const auto expected = c["ids"].get<std::vector<int32_t>>();
        auto ids = (*tk)->encode(text);
        ASSERT_TRUE(ids.ok()) << ids.status().to_string();
        EXPECT_EQ(*ids, expected) << "text: " << text;
        auto decoded = (*tk)->decode(expected);
        ASSERT_TRUE(decoded.ok());
        EXPECT_EQ(*decoded, c["decoded"].get<std::string>()) << "text: " << text;
    }
}

TEST_F(TiktokenTest, SpecialTokensComeFromTheConfigAndBosEosResolve) {
    write("tiktoken.model", gpt2_rank_file());
    auto tk = Tokenizer::load(dir_.string());
    ASSERT_TRUE(tk.ok()) << tk.status().to_string();
    // Kimi's [BOS] is the first id after the ranks, [EOS] the second; unnamed ones are reserved.
    EXPECT_EQ((*tk)->bos_id(), std::optional<int32_t>(50256));
    EXPECT_EQ((*tk)->eos_id(), std::optional<int32_t>(50257));
    EXPECT_EQ((*tk)->token_to_id("<|im_end|>"), std::optional<int32_t>(50258));
    EXPECT_EQ((*tk)->token_to_id("<|reserved_token_50513|>"), std::optional<int32_t>(50513));
    EXPECT_FALSE((*tk)->token_to_id("<|reserved_token_50514|>").has_value());
}

TEST(TiktokenRanks, RefusesBadFilesNamingTheLine) {
    auto err = [](const std::string& text) { return tok::parse_tiktoken_ranks(text, "t.model").status().message(); };
    EXPECT_NE(err("YQ== 0\nYg== x\n").find("t.model:2"), std::string::npos);
    EXPECT_NE(err("YQ== 0\n!!!! 1\n").find("not valid base64"), std::string::npos);
    EXPECT_NE(err("YR== 0\n").find("not valid base64"), std::string::npos);  // non-zero trailing bits
    EXPECT_NE(err("YQ== 0\nYg== 0\n").find("rank 0 appears twice"), std::string::npos);
    EXPECT_NE(err("YQ== 0\nYQ== 1\n").find("appears twice"), std::string::npos);
    EXPECT_NE(err("YQ== 99999999\n").find("over the limit"), std::string::npos);
    EXPECT_NE(err("YQ==  0\n").find("expected"), std::string::npos);
    EXPECT_NE(err("").find("no tokens"), std::string::npos);
    EXPECT_NE(err(std::string(5000, 'Y') + " 0\n").find("over the limit"), std::string::npos);
    auto ok = tok::parse_tiktoken_ranks("YQ== 1\r\nYWI= 0\n\n", "t.model");
    ASSERT_TRUE(ok.ok());
    ASSERT_EQ(ok->size(), 2u);
    EXPECT_EQ((*ok)[1].first, "ab");
    EXPECT_EQ((*ok)[1].second, 0);
}

TEST_F(TiktokenTest, RefusesAModelWithoutEverySingleByte) {
    write("tiktoken.model", "YQ== 0\nYg== 1\n");
    const Status s = load_status();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("byte 0x00 is not a token"), std::string::npos) << s.message();
}

TEST_F(TiktokenTest, RefusesGapsInRanksAndSpecialIdsOutsideTheirRange) {
    std::string ranks = gpt2_rank_file();
    ranks += base64("zzzzqq") + " 60000\n";  // a gap: the special tokens would collide with nothing
    write("tiktoken.model", ranks);
    Status s = load_status();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("without gaps"), std::string::npos) << s.message();

    write("tiktoken.model", gpt2_rank_file());
    auto cfg = nlohmann::json::parse(read_all((dir_ / "tokenizer_config.json").string()));
    cfg["added_tokens_decoder"]["12"] = {{"content", "<x>"}, {"special", true}};
    write("tokenizer_config.json", cfg.dump());
    s = load_status();
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("not an id in range (the model's added tokens are ids [50256, 50514))"),
              std::string::npos)
        << s.message();
}

TEST_F(TiktokenTest, RefusesAnUnknownPythonClassByName) {
    write("tiktoken.model", gpt2_rank_file());
    auto cfg = nlohmann::json::parse(read_all((dir_ / "tokenizer_config.json").string()));
    cfg["auto_map"]["AutoTokenizer"] = {"tokenization_other.OtherTokenizer", nullptr};
    write("tokenizer_config.json", cfg.dump());
    const Status s = load_status();
    EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
    EXPECT_NE(s.message().find("tokenization_other.OtherTokenizer"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace moe
