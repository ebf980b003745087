// The template lexer: source text -> tokens, with jinja2's whitespace rules as transformers
// configures them (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False) and the
// `-` / `+` whitespace control marks.
#pragma once

#include <string>
#include <vector>

#include "moe/status.h"

namespace moe::tmpl {

struct Token {
    enum class Kind { kData, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };
    Kind kind;
    std::string text;  // data, name, operator, or the decoded string literal
    int64_t int_value = 0;
    double float_value = 0;
    int line = 1;
};

// kInvalidArgument naming the line on an unterminated tag, comment or string, an unknown
// character, or unbalanced brackets.
StatusOr<std::vector<Token>> tokenize(const std::string& source);

}  // namespace moe::tmpl
