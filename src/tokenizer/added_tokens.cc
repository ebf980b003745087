#include "tokenizer/added_tokens.h"

#include <utf8proc.h>

#include <algorithm>

#include "tokenizer/unicode.h"

namespace moe::tok {
namespace {

// Regex \w with Unicode semantics, as HF's single_word check uses.
bool is_word_char(char32_t cp) {
    if (cp == '_' || is_alphanumeric(cp)) return true;
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC || cat == UTF8PROC_CATEGORY_ME ||
           cat == UTF8PROC_CATEGORY_PC;
}

size_t prev_char_start(std::string_view s, size_t end) {
    size_t b = end - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    return b;
}

}  // namespace

void AddedTokenMatcher::build(const std::vector<const AddedToken*>& tokens, const std::vector<std::string>& patterns) {
    nodes_.assign(1, Node{});
    tokens_ = tokens;
    std::fill(std::begin(first_byte_), std::end(first_byte_), false);
    for (size_t k = 0; k < patterns.size(); ++k) {
        const std::string& p = patterns[k];
        if (p.empty()) continue;
        first_byte_[static_cast<unsigned char>(p[0])] = true;
        int32_t node = 0;
        for (char c : p) {
            const auto b = static_cast<unsigned char>(c);
            int32_t next = child(node, b);
            if (next < 0) {
                next = static_cast<int32_t>(nodes_.size());
                nodes_.push_back(Node{});
                auto& ch = nodes_[static_cast<size_t>(node)].children;
                ch.insert(std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t{-1})), {b, next});
            }
            node = next;
        }
        // The first token listed for a string wins, like a map keyed by content.
        if (nodes_[static_cast<size_t>(node)].token < 0)
            nodes_[static_cast<size_t>(node)].token = static_cast<int32_t>(k);
    }
}

int32_t AddedTokenMatcher::child(int32_t node, unsigned char b) const {
    const auto& ch = nodes_[static_cast<size_t>(node)].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t{-1}));
    return it != ch.end() && it->first == b ? it->second : -1;
}

std::vector<AddedMatch> AddedTokenMatcher::find_all(std::string_view text) const {
    std::vector<AddedMatch> out;
    if (tokens_.empty()) return out;
    size_t prev_end = 0;
    size_t i = 0;
    while (i < text.size()) {
        if (!first_byte_[static_cast<unsigned char>(text[i])]) {
            ++i;
            continue;
        }
        int32_t node = 0, best = -1;
        size_t best_end = 0;
        for (size_t j = i; j < text.size(); ++j) {
            node = child(node, static_cast<unsigned char>(text[j]));
            if (node < 0) break;
            if (nodes_[static_cast<size_t>(node)].token >= 0) {
                best = nodes_[static_cast<size_t>(node)].token;
                best_end = j + 1;
            }
        }
        if (best < 0) {
            ++i;
            continue;
        }
        const AddedToken& tok = *tokens_[static_cast<size_t>(best)];
        size_t begin = i, end = best_end;
        if (tok.single_word) {
            size_t k = prev_char_start(text, std::max<size_t>(begin, 1));
            const bool left_ok = begin == 0 || !is_word_char(next_code_point(text, k));
            size_t r = end;
            const bool right_ok = end == text.size() || !is_word_char(next_code_point(text, r));
            if (!left_ok || !right_ok) {
                i = best_end;  // the automaton resumes after a rejected match, not inside it
                continue;
            }
        }
        if (tok.lstrip) {
            while (begin > prev_end) {
                const size_t b = prev_char_start(text, begin);
                size_t k = b;
                if (!is_whitespace(next_code_point(text, k))) break;
                begin = b;
            }
        }
        if (tok.rstrip) {
            while (end < text.size()) {
                size_t k = end;
                if (!is_whitespace(next_code_point(text, k))) break;
                end = k;
            }
        }
        out.push_back({begin, end, tok.id});
        prev_end = end;
        i = end;
    }
    return out;
}

}  // namespace moe::tok
