#include "tokenizer/tiktoken.h"

#include <fmt/format.h>

#include <array>
#include <unordered_set>

#include "tokenizer/bpe.h"

namespace moe::tok {

// Each alternative of tokenization_kimi.py's pattern, in order. The letter classes exclude Han
// (runs of Han characters are the first alternative); tiktoken writes that exclusion as an
// intersection, PCRE2 as a lookahead in front of the class.
const char* const kKimiSplitRegex =
    R"([\p{Han}]+)"
    R"(|[^\r\n\p{L}\p{N}]?(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])*(?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|[^\r\n\p{L}\p{N}]?(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])+(?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)"
    R"(|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*)"
    R"(|\s*[\r\n]+)"
    R"(|\s+(?!\S))"
    R"(|\s+)";

namespace {

// -1 for a byte outside the standard base64 alphabet.
constexpr std::array<int8_t, 256> make_base64_table() {
    std::array<int8_t, 256> t{};
    for (auto& v : t) v = -1;
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int8_t>(i);
    return t;
}
constexpr std::array<int8_t, 256> kBase64 = make_base64_table();

// Strict base64 (padding required, no whitespace, zero bits after the last symbol).
bool decode_base64(std::string_view in, std::string& out) {
    out.clear();
    if (in.empty() || in.size() % 4 != 0) return false;
    size_t pad = 0;
    if (in.back() == '=') pad = in[in.size() - 2] == '=' ? 2 : 1;
    const size_t symbols = in.size() - pad;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < symbols; ++i) {
        const int8_t v = kBase64[static_cast<unsigned char>(in[i])];
        if (v < 0) return false;
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xFF));
        }
    }
    // Left-over bits must be zero, or two encodings would name one token.
    return bits < 8 && (acc & ((1u << bits) - 1)) == 0;
}

}  // namespace

StatusOr<std::vector<std::pair<std::string, int64_t>>> parse_tiktoken_ranks(std::string_view text,
                                                                            const std::string& where) {
    if (text.size() > kMaxTiktokenFileBytes) {
        return invalid_argument(
            fmt::format("{}: {} bytes is over the limit of {}", where, text.size(), kMaxTiktokenFileBytes));
    }
    std::vector<std::pair<std::string, int64_t>> ranks;
    std::unordered_set<int64_t> seen_ranks;
    std::unordered_set<std::string> seen_tokens;
    size_t pos = 0, line_no = 0;
    std::string token;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string_view::npos) eol = text.size();
        std::string_view line = text.substr(pos, eol - pos);
        pos = eol + 1;
        ++line_no;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.empty()) continue;
        if (line.size() > kMaxTiktokenLineBytes) {
            return invalid_argument(fmt::format("{}:{}: a line of {} bytes is over the limit of {}", where, line_no,
                                                line.size(), kMaxTiktokenLineBytes));
        }
        const size_t sp = line.find(' ');
        if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos) {
            return invalid_argument(fmt::format("{}:{}: expected '<base64 token> <rank>'", where, line_no));
        }
        if (!decode_base64(line.substr(0, sp), token) || token.empty()) {
            return invalid_argument(
                fmt::format("{}:{}: the token is not valid base64 of at least one byte", where, line_no));
        }
        const std::string_view digits = line.substr(sp + 1);
        int64_t rank = 0;
        if (digits.empty() || digits.size() > 9) {
            return invalid_argument(fmt::format("{}:{}: the rank must be 1 to 9 decimal digits", where, line_no));
        }
        for (char c : digits) {
            if (c < '0' || c > '9') {
                return invalid_argument(fmt::format("{}:{}: the rank is not a decimal number", where, line_no));
            }
            rank = rank * 10 + (c - '0');
        }
        if (rank > kMaxTokenId) {
            return invalid_argument(
                fmt::format("{}:{}: rank {} is over the limit of {}", where, line_no, rank, kMaxTokenId));
        }
        if (ranks.size() >= kMaxVocabEntries) {
            return invalid_argument(fmt::format("{}: more than {} tokens", where, kMaxVocabEntries));
        }
        if (!seen_ranks.insert(rank).second) {
            return invalid_argument(fmt::format("{}:{}: rank {} appears twice", where, line_no, rank));
        }
        if (!seen_tokens.insert(token).second) {
            return invalid_argument(fmt::format("{}:{}: the token of rank {} appears twice", where, line_no, rank));
        }
        ranks.emplace_back(token, rank);
    }
    if (ranks.empty()) return invalid_argument(fmt::format("{}: no tokens", where));
    return ranks;
}

StatusOr<std::string> tiktoken_split_regex(const std::string& auto_map_class, const std::string& where) {
    if (auto_map_class.starts_with("tokenization_kimi.")) return std::string(kKimiSplitRegex);
    return unimplemented(fmt::format(
        "{}: the tiktoken tokenizer class '{}' keeps its split pattern in Python code that moeserve does not run; "
        "known classes: tokenization_kimi.TikTokenTokenizer (Kimi K2)",
        where, auto_map_class.empty() ? std::string("(none: no auto_map.AutoTokenizer)") : auto_map_class));
}

}  // namespace moe::tok
