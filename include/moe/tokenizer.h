// Tokenizer: Hugging Face tokenizer.json (or the slow vocab.json + merges.txt pair, or a tiktoken
// rank file as Kimi K2 ships it) to token ids and back, id-exact with Hugging Face `tokenizers`
// (and with `tiktoken` for rank files).
//
// Supported: BPE models, byte-level (GPT-2, GPT-NeoX, Qwen2, Llama-3) and SentencePiece-style
// (byte_fallback, fuse_unk); added tokens with their lstrip/rstrip/single_word/normalized flags;
// the common normalizers, pre-tokenizers, decoders and post-processors. Anything else in a
// tokenizer.json is refused at load with an error naming it, never silently ignored.
//
// A loaded Tokenizer is immutable and safe to use from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/status.h"

namespace moe {

struct TokenizerLoadOptions {
    // For a directory without tokenizer.json: the tokenizer_config.json that names the added
    // tokens and the tokenizer class. Empty: `DIR/tokenizer_config.json`, else the single
    // `DIR/*tokenizer_config.json` if there is exactly one.
    std::string config_file;
};

struct SpecialToken {
    int32_t id = -1;
    std::string content;
};

class Tokenizer {
public:
    // Loads `dir/tokenizer.json`, or `dir/vocab.json` + `dir/merges.txt` (+ tokenizer_config.json),
    // or `dir/tiktoken.model` + tokenizer_config.json (whose auto_map class fixes the split pattern:
    // Kimi K2's tokenization_kimi is known; others are refused by name).
    // `dir` may also name a tokenizer.json file directly.
    static StatusOr<std::unique_ptr<Tokenizer>> load(const std::string& dir, const TokenizerLoadOptions& options = {});
    // Builds from the text of a tokenizer.json (`origin` names it in error messages).
    static StatusOr<std::unique_ptr<Tokenizer>> from_json_string(std::string_view json, const std::string& origin);

    ~Tokenizer();
    Tokenizer(const Tokenizer&) = delete;
    Tokenizer& operator=(const Tokenizer&) = delete;

    // Text must be valid UTF-8 (else kInvalidArgument naming the byte offset). Special tokens
    // written in the text are recognised; `add_special_tokens` applies the post-processor
    // (e.g. BOS for Llama/Mistral), as transformers' `encode(..., add_special_tokens=True)`.
    StatusOr<std::vector<int32_t>> encode(std::string_view text, bool add_special_tokens = false) const;

    // Ids to text, as transformers' `decode(ids, skip_special_tokens=...)` with
    // clean_up_tokenization_spaces=False. An id outside [0, vocab_size()) is an error naming it.
    // Bytes that do not form valid UTF-8 become U+FFFD.
    StatusOr<std::string> decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

    // One past the largest id (model vocabulary plus added tokens).
    int32_t vocab_size() const;
    // The vocabulary string of `id` (added tokens included), or nullopt when out of range.
    std::optional<std::string> id_to_token(int32_t id) const;
    std::optional<int32_t> token_to_id(std::string_view token) const;

    std::optional<int32_t> bos_id() const;
    std::optional<int32_t> eos_id() const;
    bool is_special(int32_t id) const;
    // Added tokens marked special, in id order.
    std::vector<SpecialToken> special_tokens() const;

    struct Impl;
    const Impl& impl() const { return *impl_; }

private:
    explicit Tokenizer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

// Streaming detokenization for one sequence: push ids one at a time, get back the text they
// complete. Text is only emitted once it is complete UTF-8, and the SentencePiece leading-space
// rule is applied as in a full decode, so the concatenation of all deltas plus finish() equals
// tokenizer.decode(all pushed ids). Holds a reference to the tokenizer, which must outlive it.
class IncrementalDetokenizer {
public:
    // `context_ids` (e.g. the prompt) are not emitted; they only give the first pushed ids the
    // left context a full decode of prompt + generation would give them.
    IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = false,
                           std::span<const int32_t> context_ids = {});

    // The new text (possibly empty) that `id` completes. Errors on an out-of-range id, which is
    // then not recorded.
    StatusOr<std::string> push(int32_t id);
    // The text still held back (an incomplete UTF-8 tail, rendered as U+FFFD like decode does).
    StatusOr<std::string> finish();

    // Ids pushed so far (not counting the context).
    size_t num_tokens() const { return ids_.size() - context_size_; }

private:
    const Tokenizer& tokenizer_;
    bool skip_special_;
    std::vector<int32_t> ids_;
    size_t context_size_ = 0;
    size_t prefix_offset_ = 0;  // start of the window re-decoded for left context
    size_t read_offset_ = 0;    // ids before this have had their text emitted
};

}  // namespace moe
