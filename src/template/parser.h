// The template parser: tokens -> statements, with jinja2's grammar and operator precedence for
// the supported subset. Statements outside the subset (extends, include, import, block, ...) fail
// here, naming the statement and its line.
#pragma once

#include <string>
#include <vector>

#include "moe/status.h"
#include "template/ast.h"
#include "template/lexer.h"

namespace moe::tmpl {

// Expressions and statements nest at most this deep (a hostile template of 100k '(' would
// otherwise overflow the parser's and the evaluator's stacks).
inline constexpr int kMaxParseDepth = 128;

// kInvalidArgument with the line and what was expected or unsupported.
StatusOr<StmtList> parse_template(const std::vector<Token>& tokens);

}  // namespace moe::tmpl
