// Added tokens: strings matched verbatim in the text before the model sees it (special tokens
// such as <|im_start|>, and non-special ones such as OLMoE's runs of spaces).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe::tok {

struct AddedToken {
    int32_t id = -1;
    std::string content;
    bool special = false;
    bool lstrip = false;       // the match also swallows whitespace on its left
    bool rstrip = false;       // ... and on its right
    bool single_word = false;  // only matches when not glued to word characters
    bool normalized = false;   // matched in the normalized text rather than the raw text
};

struct AddedMatch {
    size_t begin, end;  // byte range in the text, including stripped whitespace
    int32_t id;
};

// Leftmost-longest matching over a set of patterns with a byte trie. Work per starting byte
// is bounded by the longest pattern, and a first-byte filter skips most positions at once.
class AddedTokenMatcher {
public:
    // `patterns[k]` is the string to find for `tokens[k]` (its content, normalized or not).
    void build(const std::vector<const AddedToken*>& tokens, const std::vector<std::string>& patterns);
    bool empty() const { return tokens_.empty(); }
    std::vector<AddedMatch> find_all(std::string_view text) const;

private:
    struct Node {
        std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
        int32_t token = -1;                                       // index into tokens_ when a pattern ends here
    };
    int32_t child(int32_t node, unsigned char b) const;
    std::vector<Node> nodes_;
    std::vector<const AddedToken*> tokens_;
    bool first_byte_[256] = {};
};

}  // namespace moe::tok
