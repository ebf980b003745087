// tiktoken's rank files ("<base64 token bytes> <rank>" per line), as Kimi K2 ships its tokenizer
// (tiktoken.model), and the split patterns such tokenizers keep in Python code.
//
// A tiktoken model is byte-level BPE in which a token's id is its rank and two adjacent symbols
// merge when their concatenation is a token, the lowest rank first (leftmost on ties); a word
// that is itself a token is that token. BpeModel::build_from_ranks builds exactly that.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/status.h"

namespace moe::tok {

// Limits on a rank file, checked before anything is allocated from it.
inline constexpr size_t kMaxTiktokenFileBytes = 64u << 20;
inline constexpr size_t kMaxTiktokenLineBytes = 4096;

// Parses the text of a rank file into (token bytes, rank) pairs, in file order. Refuses bad
// base64, a missing or non-decimal rank, a rank outside [0, kMaxTokenId], a repeated rank or a
// repeated token, an empty token, and more than kMaxVocabEntries lines, naming the line.
StatusOr<std::vector<std::pair<std::string, int64_t>>> parse_tiktoken_ranks(std::string_view text,
                                                                            const std::string& where);

// Kimi K2's split pattern (tokenization_kimi.py's pat_str), rewritten for PCRE2: tiktoken's
// regex engine allows class intersection `[A&&[^B]]`, which PCRE2 spells `(?:(?!B)A)`.
extern const char* const kKimiSplitRegex;

// The split pattern of a tiktoken tokenizer whose Python class is `auto_map_class` (the
// tokenizer_config.json `auto_map.AutoTokenizer` entry, e.g. "tokenization_kimi.TikTokenTokenizer"),
// or an error naming the class and the ones known.
StatusOr<std::string> tiktoken_split_regex(const std::string& auto_map_class, const std::string& where);

}  // namespace moe::tok
