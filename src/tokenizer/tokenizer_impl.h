// The parts a Tokenizer is assembled from; shared by the loader and the encode/decode code.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "moe/tokenizer.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"

namespace moe {

struct Tokenizer::Impl {
    std::string origin;  // file the tokenizer came from, for messages
    std::unique_ptr<tok::BpeModel> model;
    std::unique_ptr<tok::Normalizer> normalizer;       // may be null
    std::unique_ptr<tok::PreTokenizer> pre_tokenizer;  // may be null
    std::unique_ptr<tok::Decoder> decoder;             // may be null: tokens joined with spaces
    std::vector<tok::AddedToken> added;                // sorted by id
    std::unordered_map<int32_t, size_t> added_index;   // id -> index into `added`
    tok::TokenMap added_by_content;
    tok::AddedTokenMatcher raw_matcher;         // added tokens with normalized == false
    tok::AddedTokenMatcher normalized_matcher;  // the others, matched after normalization
    // Post-processor for a single sequence: ids around the encoded text.
    std::vector<int32_t> post_prefix, post_suffix;
    std::optional<int32_t> bos, eos;
    int32_t vocab_size = 0;
    std::vector<bool> special;  // by id

    // Finishes construction once the fields above are filled: indexes, matchers, vocab size.
    Status finalize();
    const tok::AddedToken* added_token(int32_t id) const {
        auto it = added_index.find(id);
        return it == added_index.end() ? nullptr : &added[it->second];
    }
};

namespace tok {
// Builds the Impl from tokenizer.json text, or from the slow vocab.json + merges.txt pair.
StatusOr<std::unique_ptr<Tokenizer::Impl>> load_tokenizer_json(std::string_view json, const std::string& origin,
                                                               const std::string& config_file);
StatusOr<std::unique_ptr<Tokenizer::Impl>> load_vocab_merges(const std::string& vocab_file,
                                                             const std::string& merges_file,
                                                             const std::string& config_file);
// Builds the Impl from a tiktoken rank file (tiktoken.model) and the tokenizer_config.json that
// names its Python class (for the split pattern) and special tokens.
StatusOr<std::unique_ptr<Tokenizer::Impl>> load_tiktoken(const std::string& model_file, const std::string& config_file);
// Reads a whole file, refusing more than `max_bytes`.
StatusOr<std::string> read_file(const std::string& path, size_t max_bytes);
}  // namespace tok

}  // namespace moe
