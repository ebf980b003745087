// The HF-generated vectors in tests/data, id for id, and streaming decode on each string.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer_test_util.h"

namespace moe {
namespace {

using testing::cached_tokenizer;
using testing::ids_str;
using testing::read_inp;
using testing::read_out;
using testing::source_path;
using testing::test_data;

void expect_vectors(const Tokenizer& tok, const std::string& inp, const std::string& out) {
    const auto texts = read_inp(inp);
    const auto expected = read_out(out);
    ASSERT_GT(texts.size(), 10u) << inp;
    ASSERT_EQ(texts.size(), expected.size()) << inp << " vs " << out;
    int failures = 0;
    for (size_t k = 0; k < texts.size(); ++k) {
        auto ids = tok.encode(texts[k], false);
        ASSERT_TRUE(ids.ok()) << ids.status().to_string();
        if (*ids != expected[k]) ++failures;
        EXPECT_EQ(ids_str(*ids), ids_str(expected[k])) << "string " << k << ": '" << texts[k] << "'";
    }
    EXPECT_EQ(failures, 0) << "of " << texts.size();
}

// The deltas of the incremental detokenizer, plus finish(), concatenate to decode(ids).
void expect_streaming(const Tokenizer& tok, const std::string& inp, bool add_special) {
    for (const auto& text : read_inp(inp)) {
        auto ids = tok.encode(text, add_special);
        ASSERT_TRUE(ids.ok());
        for (bool skip : {false, true}) {
            auto full = tok.decode(*ids, skip);
            ASSERT_TRUE(full.ok());
            IncrementalDetokenizer detok(tok, skip);
            std::string streamed;
            for (int32_t id : *ids) {
                auto delta = detok.push(id);
                ASSERT_TRUE(delta.ok());
                // Never half a character: every delta is valid UTF-8 on its own.
                for (size_t i = 0; i < delta->size();) {
                    const auto b = static_cast<unsigned char>((*delta)[i]);
                    const size_t n = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
                    ASSERT_LE(i + n, delta->size()) << "split character in delta for '" << text << "'";
                    i += n;
                }
                streamed += *delta;
            }
            auto tail = detok.finish();
            ASSERT_TRUE(tail.ok());
            streamed += *tail;
            EXPECT_EQ(streamed, *full) << "text '" << text << "' skip_special=" << skip;
        }
    }
}

const std::string kGpt2 = test_data("tokenizers/gpt2");

TEST(TokenizerVectors, Gpt2TokenizerJson) {
    const auto& tok = cached_tokenizer(kGpt2 + "/tokenizer.json");
    EXPECT_EQ(tok.vocab_size(), 50257);
    expect_vectors(tok, test_data("tokenizer-vectors/gpt-2.inp"), test_data("tokenizer-vectors/gpt-2.out"));
}

TEST(TokenizerVectors, Gpt2VocabMerges) {
    // The directory has both; a vocab.json + merges.txt copy is reached through a temp dir.
    const std::string dir = ::testing::TempDir() + "/gpt2_slow";
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(kGpt2 + "/vocab.json", dir + "/vocab.json",
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(kGpt2 + "/merges.txt", dir + "/merges.txt",
                               std::filesystem::copy_options::overwrite_existing);
    const auto& tok = cached_tokenizer(dir);
    EXPECT_EQ(tok.vocab_size(), 50257);
    EXPECT_TRUE(tok.is_special(50256));
    expect_vectors(tok, test_data("tokenizer-vectors/gpt-2.inp"), test_data("tokenizer-vectors/gpt-2.out"));
}

TEST(TokenizerVectors, Qwen2VocabMerges) {
    const auto& tok = cached_tokenizer(test_data("tokenizers/qwen2"));
    EXPECT_EQ(tok.vocab_size(), 151669);
    EXPECT_EQ(tok.token_to_id("<|im_start|>"), 151644);
    EXPECT_TRUE(tok.is_special(151645));
    EXPECT_EQ(tok.eos_id(), 151645);
    expect_vectors(tok, test_data("tokenizer-vectors/qwen2.inp"), test_data("tokenizer-vectors/qwen2.out"));
}

TEST(TokenizerVectors, Qwen2SpecialTokensInText) {
    const auto& tok = cached_tokenizer(test_data("tokenizers/qwen2"));
    auto ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false);
    ASSERT_TRUE(ids.ok());
    ASSERT_GE(ids->size(), 4u);
    EXPECT_EQ(ids->front(), 151644);
    EXPECT_EQ(ids->back(), 151645);
    auto text = tok.decode(*ids, true);
    ASSERT_TRUE(text.ok());
    EXPECT_EQ(*text, "user\nhi");
}

TEST(TokenizerVectors, OlmoeWithMptVectors) {
    const auto& tok = cached_tokenizer(test_data("tokenizers/olmoe"));
    EXPECT_EQ(tok.vocab_size(), 50280);
    expect_vectors(tok, test_data("tokenizer-vectors/mpt.inp"), test_data("tokenizer-vectors/mpt.out"));
}

const std::string kMixtral = test_data("tokenizers/mixtral-8x7b-instruct");

TEST(TokenizerVectors, MixtralMatchesHfTokenizers) {
    const auto& tok = cached_tokenizer(kMixtral);
    EXPECT_EQ(tok.vocab_size(), 32000);
    EXPECT_EQ(tok.bos_id(), 1);
    EXPECT_EQ(tok.eos_id(), 2);
    for (const std::string name : {"gpt-2", "mixtral_extra"}) {
        const std::string inp = name == "gpt-2" ? test_data("tokenizer-vectors/gpt-2.inp")
                                                : source_path("tests/reference/tokenizer/mixtral_extra.inp");
        SCOPED_TRACE(name);
        expect_vectors(tok, inp, source_path("tests/reference/tokenizer/mixtral." + name + ".out"));
        // With the post-processor: BOS in front, as transformers' default encode.
        const auto texts = testing::read_inp(inp);
        const auto expected = read_out(source_path("tests/reference/tokenizer/mixtral." + name + ".special.out"));
        ASSERT_EQ(texts.size(), expected.size());
        for (size_t k = 0; k < texts.size(); ++k) {
            auto ids = tok.encode(texts[k], true);
            ASSERT_TRUE(ids.ok());
            EXPECT_EQ(ids_str(*ids), ids_str(expected[k])) << "string " << k;
        }
    }
}

TEST(TokenizerVectors, MixtralRoundTrip) {
    const auto& tok = cached_tokenizer(kMixtral);
    const auto texts = testing::read_inp(test_data("tokenizer-vectors/gpt-2.inp"));
    for (const auto& text : texts) {
        auto ids = tok.encode(text, false);
        ASSERT_TRUE(ids.ok());
        auto back = tok.decode(*ids, false);
        ASSERT_TRUE(back.ok());
        EXPECT_EQ(*back, text);
    }
}

TEST(TokenizerVectors, MixtralDecodeMatchesHfTokenizers) {
    // Includes strings that do not round-trip (special-token text, a literal U+2581): the
    // decode must still be the one HF gives.
    const auto& tok = cached_tokenizer(kMixtral);
    for (const std::string name : {"gpt-2", "mixtral_extra"}) {
        const auto ids = read_out(source_path("tests/reference/tokenizer/mixtral." + name + ".out"));
        const auto expected = nlohmann::json::parse(
            testing::read_all(source_path("tests/reference/tokenizer/mixtral." + name + ".decoded.json")));
        ASSERT_EQ(ids.size(), expected.size());
        for (size_t k = 0; k < ids.size(); ++k) {
            auto text = tok.decode(ids[k], false);
            ASSERT_TRUE(text.ok());
            EXPECT_EQ(*text, expected[k].get<std::string>()) << name << " string " << k;
        }
    }
}

// gpt-oss's o200k_harmony shape (tests/reference/make_harmony_tokenizer.py): o200k's split regex
// through our PCRE2 path, then byte-level BPE with ignore_merges, the harmony special tokens as
// added tokens; a small vocabulary trained with HF tokenizers, whose ids and decodes we match.
const std::string kHarmony = source_path("tests/reference/tokenizer/harmony");

TEST(TokenizerVectors, HarmonyShapedO200kMatchesHfTokenizers) {
    const auto& tok = cached_tokenizer(kHarmony);
    EXPECT_EQ(tok.vocab_size(), 2342);
    // The 21 harmony specials follow the trained vocabulary in the published order.
    EXPECT_EQ(tok.token_to_id("<|startoftext|>"), 2321);
    EXPECT_EQ(tok.token_to_id("<|endofprompt|>"), 2321 + 20);
    for (const std::string name : {"gpt-2", "harmony_extra"}) {
        SCOPED_TRACE(name);
        const std::string inp = name == "gpt-2" ? test_data("tokenizer-vectors/gpt-2.inp")
                                                : source_path("tests/reference/tokenizer/harmony_extra.inp");
        expect_vectors(tok, inp, source_path("tests/reference/tokenizer/harmony." + name + ".out"));
        const auto ids = read_out(source_path("tests/reference/tokenizer/harmony." + name + ".out"));
        const auto expected = nlohmann::json::parse(
            testing::read_all(source_path("tests/reference/tokenizer/harmony." + name + ".decoded.json")));
        ASSERT_EQ(ids.size(), expected.size());
        for (size_t k = 0; k < ids.size(); ++k) {
            auto text = tok.decode(ids[k], false);
            ASSERT_TRUE(text.ok());
            EXPECT_EQ(*text, expected[k].get<std::string>()) << name << " string " << k;
        }
    }
    // The harmony markers are single special tokens inside text, and skipped on request.
    auto ids = tok.encode("<|start|>assistant<|channel|>final<|message|>Hi<|return|>", false);
    ASSERT_TRUE(ids.ok());
    ASSERT_GE(ids->size(), 5u);
    EXPECT_EQ(ids->front(), 2321 + 8);  // <|start|>: the 9th of the published specials
    EXPECT_EQ(ids->back(), 2321 + 4);   // <|return|>
    auto plain = tok.decode(*ids, true);
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(*plain, "assistantfinalHi");
    // Streaming decode of the same strings concatenates to decode (byte-level pieces of CJK and
    // emoji held back until whole).
    expect_streaming(tok, source_path("tests/reference/tokenizer/harmony_extra.inp"), false);
}

TEST(TokenizerStreaming, DeltasConcatenateToDecode) {
    const std::string inp = test_data("tokenizer-vectors/gpt-2.inp");
    const std::string extra = source_path("tests/reference/tokenizer/mixtral_extra.inp");
    for (const auto& [dir, special] : std::vector<std::pair<std::string, bool>>{{kGpt2 + "/tokenizer.json", false},
                                                                                {test_data("tokenizers/qwen2"), false},
                                                                                {test_data("tokenizers/olmoe"), false},
                                                                                {kMixtral, false},
                                                                                {kMixtral, true}}) {
        SCOPED_TRACE(dir);
        const auto& tok = cached_tokenizer(dir);
        expect_streaming(tok, inp, special);
        expect_streaming(tok, extra, special);
    }
}

TEST(TokenizerStreaming, ContextGivesTheLeadingSpace) {
    const auto& tok = cached_tokenizer(kMixtral);
    auto prompt = tok.encode("Hello", true);
    auto gen = tok.encode("Hello world again", false);
    ASSERT_TRUE(prompt.ok() && gen.ok());
    // Generated ids after the prompt: "▁world", "▁again".
    std::vector<int32_t> tail(gen->begin() + 1, gen->end());
    IncrementalDetokenizer detok(tok, true, *prompt);
    std::string out;
    for (int32_t id : tail) out += detok.push(id).value();
    out += detok.finish().value();
    EXPECT_EQ(out, " world again");
    EXPECT_EQ(detok.num_tokens(), tail.size());
}

TEST(TokenizerStreaming, HoldsBackPartialCharacters) {
    const auto& tok = cached_tokenizer(kMixtral);
    // U+1F9D1 is not in the Mixtral vocabulary: "▁" then four byte-fallback tokens.
    auto ids = tok.encode("\xF0\x9F\xA7\x91", false);
    ASSERT_TRUE(ids.ok());
    IncrementalDetokenizer detok(tok);
    std::vector<std::string> deltas;
    for (int32_t id : *ids) deltas.push_back(detok.push(id).value());
    ASSERT_EQ(deltas.size(), 5u);
    for (size_t k = 0; k + 1 < deltas.size(); ++k) EXPECT_EQ(deltas[k], "") << k;
    EXPECT_EQ(deltas.back(), "\xF0\x9F\xA7\x91");
}

}  // namespace
}  // namespace moe
