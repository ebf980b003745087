// Pre-tokenizers: split normalized text into words that the BPE model encodes independently
// (tokenizer.json "pre_tokenizer").
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "moe/status.h"
#include "tokenizer/limits.h"

namespace moe::tok {

struct Piece {
    std::string text;
    bool at_input_start = false;  // begins at offset 0 of the user's text (Metaspace "first")
};

class PreTokenizer {
public:
    virtual ~PreTokenizer() = default;
    // Replaces `pieces` by their sub-pieces.
    virtual Status split(std::vector<Piece>& pieces) const = 0;
};

// The regexes byte-level tokenizers split with.
extern const char* const kGpt2SplitRegex;
extern const char* const kQwen2SplitRegex;

struct ParsedPreTokenizer {
    std::unique_ptr<PreTokenizer> pre_tokenizer;
    // A ByteLevel step is present: words reach the model as raw bytes, which it maps through
    // GPT-2's byte table itself (so the pre-tokenizer never builds the mapped strings).
    bool byte_level = false;
};

// `depth`: the Sequence nesting level of `j`, at most kMaxSequenceDepth (limits.h).
StatusOr<ParsedPreTokenizer> parse_pre_tokenizer(const nlohmann::json& j, const std::string& where, int depth = 0);
// Split(regex, Isolated) then byte-level mapping: what GPT-2 / Qwen2 slow tokenizers do.
StatusOr<ParsedPreTokenizer> make_byte_level_regex_pre_tokenizer(const std::string& regex);

}  // namespace moe::tok
