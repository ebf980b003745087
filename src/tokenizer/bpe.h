// The BPE model: words to ids by applying ranked merges, lowest rank first (HF's semantics,
// with a heap so a word of n symbols costs O(n log n), never a quadratic rescan).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "moe/status.h"

namespace moe::tok {

struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Limits on what a file may declare, checked before anything is allocated from them.
inline constexpr size_t kMaxVocabEntries = 4u << 20;
inline constexpr int64_t kMaxTokenId = (16 << 20) - 1;
inline constexpr size_t kMaxMerges = 4u << 20;
inline constexpr size_t kMaxTokenBytes = 1u << 16;

struct BpeOptions {
    // Words arrive as raw bytes and start as GPT-2 byte-table characters.
    bool byte_level = false;
    bool byte_fallback = false;
    bool fuse_unk = false;
    bool ignore_merges = false;
    std::optional<std::string> unk_token;
    std::string continuing_subword_prefix;
    std::string end_of_word_suffix;
};

class BpeModel {
public:
    // `vocab` is (token, id); `merges` is (left, right) in rank order. `where` names the source
    // in error messages.
    static StatusOr<std::unique_ptr<BpeModel>> build(std::vector<std::pair<std::string, int64_t>> vocab,
                                                     const std::vector<std::pair<std::string, std::string>>& merges,
                                                     BpeOptions options, const std::string& where);
    // tiktoken's model (tokenizer/tiktoken.h): `ranks` are (token bytes, rank); a token's id is
    // its rank. Byte-level; two adjacent symbols merge when their concatenation is a token, the
    // lowest rank first and the leftmost on ties; a word that is a token is that token. Every
    // single byte must be a token (else some text could not be encoded).
    static StatusOr<std::unique_ptr<BpeModel>> build_from_ranks(std::vector<std::pair<std::string, int64_t>> ranks,
                                                                const std::string& where);

    // Appends the ids of one pre-tokenized word.
    void encode_word(std::string_view word, std::vector<int32_t>& out) const;

    // One past the largest id.
    int32_t size() const { return static_cast<int32_t>(id_to_token_.size()); }
    // Empty for an id that no token has (a gap in the vocabulary).
    const std::string& token(int32_t id) const { return id_to_token_[static_cast<size_t>(id)]; }
    bool has_id(int32_t id) const { return id >= 0 && id < size() && has_id_[static_cast<size_t>(id)]; }
    std::optional<int32_t> find(std::string_view token) const;
    const BpeOptions& options() const { return options_; }

private:
    BpeModel() = default;
    void merge_symbols(std::vector<int32_t>& ids) const;
    void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;

    BpeOptions options_;
    TokenMap token_to_id_;
    std::vector<std::string> id_to_token_;
    std::vector<bool> has_id_;
    // (left id << 32 | right id) -> (rank << 32 | merged id)
    std::unordered_map<uint64_t, uint64_t> merges_;
    int32_t byte_ids_[256];      // byte-level: id of each byte's character, -1 if absent
    int32_t fallback_ids_[256];  // byte_fallback: id of "<0xXX>", -1 if absent
    std::optional<int32_t> unk_id_;

    // word -> ids; bounded, so a stream of unique words cannot grow it without limit.
    mutable std::mutex cache_mu_;
    mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace moe::tok
